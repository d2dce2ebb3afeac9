//! Building kernel images: `cargo build` of a board crate for the kernel target with the
//! variant's feature, then a copy of the ELF to `target/images/<board>-<variant>-<profile>.elf`
//! so that building another variant does not overwrite an image that is being run. The copy
//! goes through the kvm post-link step (`kvm::elf::patch_image`): the embedded symbol table
//! and the build id are written into it; cargo's own output is left as linked. Boards that
//! boot a raw binary (rpi4's `kernel8.img`) also get `<board>-<variant>-<profile>.img`: the
//! patched ELF's loadable segments laid out from the lowest load address, as `llvm-objcopy -O binary`
//! does (read here directly from the program headers, so no external tool is needed).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use crate::args::BuildArgs;
use crate::board::{Board, KERNEL_TARGET, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::workspace::Workspace;
use crate::{proc, tools};

/// ELF `e_machine` value for AArch64.
const EM_AARCH64: u16 = 183;

/// `cargo xtask build`: builds the image and prints its path on stdout (for rpi4 the raw
/// `kernel8.img` contents, next to the ELF file).
pub fn run(ws: &Workspace, args: &BuildArgs) -> Result<ExitCode> {
    let image = boot_image(ws, args.board, args.variant, args.profile)?;
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
    build_with(ws, board, variant, profile, None)
}

/// As [`build`], with one more feature of the board crate (`notrace`), whose image is copied
/// to `<board>-<variant>-<feature>-<profile>.elf` instead.
pub fn build_with(
    ws: &Workspace,
    board: Board,
    variant: Variant,
    profile: Profile,
    extra_feature: Option<&'static str>,
) -> Result<PathBuf> {
    tools::ensure_rust_toolchain(ws)?;
    let mut args = cargo_args(board, variant, profile);
    if let Some(feature) = extra_feature {
        args.extend(["--features", feature]);
    }
    if crate::progress::bar_active() {
        // `Compiling ...` lines would tear `cargo xtask test`'s progress bar; errors still show.
        args.push("--quiet");
    }
    crate::progress::eprintln(&format!("xtask: cargo {}", args.join(" ")));
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
    let mut image = ws.image_path(board, variant, profile);
    if let Some(feature) = extra_feature {
        image.set_file_name(format!(
            "{board}-{variant}-{feature}-{}.elf",
            profile.dir_name()
        ));
    }
    Workspace::create_parent(&image)?;
    let mut bytes =
        std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let patched = crate::kvm::elf::patch_image(&mut bytes)
        .map_err(|e| Error::new(format!("{}: post-link step: {e}", built.display())))?;
    std::fs::write(&image, &bytes).with_context(|| format!("writing {}", image.display()))?;
    crate::progress::eprintln(&format!(
        "xtask: {}: build id {}, {} symbols embedded",
        image.display(),
        kernel::kvm::error::Hex(&patched.build_id),
        patched.symbols
    ));
    Ok(image)
}

/// Builds an image and returns what QEMU boots: the raw binary for boards that need one
/// ([`Board::boots_raw_image`]), the ELF file otherwise.
pub fn boot_image(
    ws: &Workspace,
    board: Board,
    variant: Variant,
    profile: Profile,
) -> Result<PathBuf> {
    let elf = build(ws, board, variant, profile)?;
    if !board.boots_raw_image() {
        return Ok(elf);
    }
    let raw = elf.with_extension("img");
    write_raw_image(&elf, &raw)?;
    Ok(raw)
}

/// Writes the raw binary of the ELF file `elf` to `raw`.
pub fn write_raw_image(elf: &Path, raw: &Path) -> Result<()> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let image = raw_image(&bytes).map_err(|e| Error::new(format!("{}: {e}", elf.display())))?;
    std::fs::write(raw, image).with_context(|| format!("writing {}", raw.display()))
}

/// The largest raw image accepted (a kernel is far smaller; this catches segments placed far
/// apart, which would make a huge file).
const MAX_RAW_IMAGE: u64 = 64 << 20;

/// The raw binary of an ELF64 little-endian image: the file contents of every `PT_LOAD`
/// segment, placed at its physical address minus the lowest one, gaps zero-filled. Segments
/// without file contents (`.bss`, stacks) add nothing.
pub fn raw_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(problem) = elf_problem(elf) {
        return Err(problem.to_owned());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let truncated = || "truncated ELF program header table".to_owned();
    let phoff = u64_at(0x20).ok_or_else(truncated)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(truncated)? as usize;
    let phnum = u16_at(0x38).ok_or_else(truncated)? as usize;
    const PT_LOAD: u32 = 1;
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph).ok_or_else(truncated)? != PT_LOAD {
            continue;
        }
        let offset = u64_at(ph + 8).ok_or_else(truncated)?;
        let paddr = u64_at(ph + 24).ok_or_else(truncated)?;
        let filesz = u64_at(ph + 32).ok_or_else(truncated)?;
        if filesz > 0 {
            segments.push((paddr, offset, filesz));
        }
    }
    let base = segments
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or("no loadable segment with contents")?;
    let end = segments.iter().map(|s| s.0 + s.2).max().unwrap_or(base);
    if end - base > MAX_RAW_IMAGE {
        return Err(format!(
            "loadable segments span {:#x}..{end:#x}, more than {} MiB",
            base,
            MAX_RAW_IMAGE >> 20
        ));
    }
    let mut image = vec![0u8; (end - base) as usize];
    for (paddr, offset, filesz) in segments {
        let data = elf
            .get(offset as usize..(offset + filesz) as usize)
            .ok_or("a segment lies outside the file")?;
        let at = (paddr - base) as usize;
        image[at..at + data.len()].copy_from_slice(data);
    }
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

    /// An AArch64 ELF file with the given `(paddr, contents, memsz)` PT_LOAD segments and
    /// one PT_NOTE.
    fn elf_with(segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64usize;
        let phnum = segments.len() + 1;
        let mut data_off = phoff + 56 * phnum;
        let mut elf = vec![0u8; data_off];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut payload = Vec::new();
        for (i, (paddr, contents, memsz)) in segments.iter().enumerate() {
            let ph = phoff + 56 * i;
            elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            elf[ph + 8..ph + 16].copy_from_slice(&(data_off as u64).to_le_bytes());
            elf[ph + 16..ph + 24].copy_from_slice(&(paddr + 0x1000).to_le_bytes()); // vaddr
            elf[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            elf[ph + 32..ph + 40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
            elf[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
            payload.extend_from_slice(contents);
            data_off += contents.len();
        }
        let note = phoff + 56 * segments.len();
        elf[note..note + 4].copy_from_slice(&4u32.to_le_bytes());
        elf.extend(payload);
        elf
    }

    #[test]
    fn raw_image_places_segments_by_physical_address() {
        let elf = elf_with(&[
            (0x8_1000, b"rodata", 6),
            (0x8_0000, b"text", 4),
            (0x8_2000, b"", 0x4000), // bss: nothing in the file
        ]);
        let image = raw_image(&elf).unwrap();
        assert_eq!(image.len(), 0x1006);
        assert_eq!(&image[..4], b"text");
        assert!(image[4..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&image[0x1000..], b"rodata");
    }

    #[test]
    fn raw_image_refuses_what_it_cannot_lay_out() {
        assert_eq!(
            raw_image(&elf_with(&[(0x8_0000, b"", 16)])),
            Err("no loadable segment with contents".to_owned())
        );
        let far = raw_image(&elf_with(&[(0x8_0000, b"a", 1), (0x4000_0000, b"b", 1)]));
        assert!(far.unwrap_err().contains("more than 64 MiB"));
        let mut cut = elf_with(&[(0x8_0000, b"text", 4)]);
        cut.truncate(100);
        assert_eq!(
            raw_image(&cut),
            Err("truncated ELF program header table".to_owned())
        );
        assert_eq!(raw_image(b"MZ"), Err("not an ELF file".to_owned()));
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
