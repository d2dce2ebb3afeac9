//! Building kernel images: `cargo build` of a board crate for the kernel target with the
//! variant's feature, then a copy of the ELF to `target/images/<board>-<variant>-<profile>.elf`
//! so that building another variant does not overwrite an image that is being run. The copy
//! goes through the kvm post-link step (`kvm::elf::patch_image`): the embedded symbol table
//! and the build id are written into it; cargo's own output is left as linked.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use crate::args::BuildArgs;
use crate::board::{Board, KERNEL_TARGET, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::workspace::Workspace;
use crate::{proc, tools};

/// ELF `e_machine` value for AArch64.
const EM_AARCH64: u16 = 183;

/// `cargo xtask build`: builds the image and prints its path on stdout.
pub fn run(ws: &Workspace, args: &BuildArgs) -> Result<ExitCode> {
    let image = build(ws, args.board, args.variant, args.profile)?;
    println!("{}", image.display());
    Ok(ExitCode::SUCCESS)
}

/// The arguments of the `cargo build` that produces an image.
pub fn cargo_args(board: Board, variant: Variant, profile: Profile) -> Vec<&'static str> {
    let mut args = vec!["build", "-p", board.package(), "--target", KERNEL_TARGET];
    if profile == Profile::Release {
        args.push("--release");
    }
    if let Some(feature) = variant.feature() {
        args.extend(["--features", feature]);
    }
    args
}

/// Builds an image (cargo's output goes to stderr) and returns the path of its stable copy.
pub fn build(ws: &Workspace, board: Board, variant: Variant, profile: Profile) -> Result<PathBuf> {
    tools::ensure_rust_toolchain(ws)?;
    let args = cargo_args(board, variant, profile);
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = ws
        .cargo()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(proc::stdout_to_stderr()?)
        .status()
        .context("running cargo")?;
    if !status.success() {
        return Err(Error::new(format!(
            "building the {variant} image for {board} failed ({status}); cargo's output is above"
        )));
    }
    let built = ws.built_binary(board, profile);
    check_elf(&built)?;
    let image = ws.image_path(board, variant, profile);
    Workspace::create_parent(&image)?;
    let mut bytes =
        std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let patched = crate::kvm::elf::patch_image(&mut bytes)
        .map_err(|e| Error::new(format!("{}: post-link step: {e}", built.display())))?;
    std::fs::write(&image, &bytes).with_context(|| format!("writing {}", image.display()))?;
    eprintln!(
        "xtask: {}: build id {}, {} symbols embedded",
        image.display(),
        kernel::kvm::error::Hex(&patched.build_id),
        patched.symbols
    );
    Ok(image)
}

/// Checks that `path` is a 64-bit little-endian AArch64 ELF file.
fn check_elf(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    elf_problem(&bytes).map_or(Ok(()), |problem| {
        Err(Error::new(format!("{}: {problem}", path.display())))
    })
}

/// What is wrong with `bytes` as an AArch64 ELF image, if anything.
fn elf_problem(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Some("not an ELF file");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Some("not a 64-bit little-endian ELF file");
    }
    if u16::from_le_bytes([bytes[18], bytes[19]]) != EM_AARCH64 {
        return Some("not an AArch64 ELF file");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_args_per_variant_and_profile() {
        assert_eq!(
            cargo_args(Board::Virt, Variant::Default, Profile::Debug),
            [
                "build",
                "-p",
                "qemu-virt",
                "--target",
                "aarch64-unknown-none-softfloat"
            ]
        );
        assert_eq!(
            cargo_args(Board::Virt, Variant::Ktest, Profile::Release).join(" "),
            "build -p qemu-virt --target aarch64-unknown-none-softfloat --release --features ktest"
        );
        assert_eq!(
            cargo_args(Board::Virt, Variant::Bench, Profile::Debug).join(" "),
            "build -p qemu-virt --target aarch64-unknown-none-softfloat --features bench"
        );
    }

    #[test]
    fn elf_header_checks() {
        let mut header = [0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(elf_problem(&header), None);
        header[18] = 62; // x86-64
        assert_eq!(elf_problem(&header), Some("not an AArch64 ELF file"));
        header[4] = 1;
        assert_eq!(
            elf_problem(&header),
            Some("not a 64-bit little-endian ELF file")
        );
        assert_eq!(elf_problem(b"#!/bin/sh\n"), Some("not an ELF file"));
    }
}
