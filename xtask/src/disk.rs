//! Disk images for the virtio-blk device of QEMU virt: `cargo xtask qemu --disk FILE` attaches
//! FILE; without it, and for every virt test and bench run, a freshly generated image.
//!
//! The generated image has [`SECTORS`] sectors, each starting with `sector N\n` (N in decimal)
//! and filled with the byte `N % 251`, so a read of any sector can be recognised by eye
//! (`blk read`) and by the kernel's tests.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::workspace::Workspace;

/// Sectors in a generated image: 8 MiB.
pub const SECTORS: u64 = 16384;
/// Bytes per sector.
pub const SECTOR_SIZE: usize = 512;

/// The contents of sector `n` of a generated image.
pub fn sector_pattern(n: u64) -> [u8; SECTOR_SIZE] {
    let mut s = [(n % 251) as u8; SECTOR_SIZE];
    let head = format!("sector {n}\n");
    s[..head.len()].copy_from_slice(head.as_bytes());
    s
}

/// Writes a fresh generated image to `path` (replacing what was there).
pub fn generate(path: &Path) -> Result<()> {
    Workspace::create_parent(path)?;
    let mut bytes = Vec::with_capacity(SECTORS as usize * SECTOR_SIZE);
    for n in 0..SECTORS {
        bytes.extend_from_slice(&sector_pattern(n));
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A freshly generated image under `target/disks/NAME.img` (tests write to it, so every run
/// starts from the same contents).
pub fn scratch(ws: &Workspace, name: &str) -> Result<PathBuf> {
    let path = ws.target_dir.join("disks").join(format!("{name}.img"));
    generate(&path)?;
    Ok(path)
}

/// The QEMU arguments that attach `image` as a virtio-blk device on virtio-mmio (raw format,
/// host page cache bypassed is not asked for: the same options as the Linux peer's runs).
pub fn qemu_args(image: &Path) -> Vec<String> {
    vec![
        "-drive".to_owned(),
        format!("file={},if=none,format=raw,id=vd0", image.display()),
        "-device".to_owned(),
        "virtio-blk-device,drive=vd0".to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sector_names_itself_and_is_filled() {
        let s = sector_pattern(1234);
        assert!(s.starts_with(b"sector 1234\n"));
        assert!(s[12..].iter().all(|&b| b == (1234 % 251) as u8));
    }

    #[test]
    fn drive_arguments() {
        assert_eq!(
            qemu_args(Path::new("/t/d.img")).join(" "),
            "-drive file=/t/d.img,if=none,format=raw,id=vd0 -device virtio-blk-device,drive=vd0"
        );
    }
}
