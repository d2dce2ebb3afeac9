//! `cargo xtask sdcard`: a flashable Raspberry Pi 4 SD card image, built in memory in Rust
//! (`mbrman` for the partition table, `fatfs` for the file system), so it needs no root, no
//! loop device and no host tools, and gives the same bytes on every build.
//!
//! Layout: a 64 MiB image (a power of two, as QEMU's SD card model requires); an MBR with disk
//! signature "rpi4" and one bootable partition of type 0x0c (FAT32, LBA) from sector 2048
//! (1 MiB) to the end; FAT32 with a fixed volume ID and label, every file in the root directory
//! (fatfs 0.3.6 writes broken `.`/`..` entries in subdirectories) with the timestamp
//! 2025-01-01 00:00, written in name order. The files: `config.txt` ([`config_settings`]:
//! 64-bit, `kernel8.img` loaded at 0x80000 as it is linked, UART on with its clock pinned,
//! the GIC-400, and with `--firmware-log` the firmware's messages), `kernel8.img`,
//! `start4.elf`, `fixup4.dat`, `LICENCE.broadcom` and `bcm2711-rpi-4-b.dtb` (see
//! `firmware.rs`).
//!
//! `--boot-dir DIR` writes the same files into a directory (the FAT partition of a card the
//! user already has) instead of an image. [`read_image`] reads an image back without trusting
//! the writer: the MBR is decoded by hand, the file system through `fatfs`.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::board::{Board, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::firmware::{self, Firmware};
use crate::image;
use crate::workspace::Workspace;

/// Size of the whole image.
pub const IMAGE_SIZE: usize = 64 << 20;
/// Bytes per sector.
pub const SECTOR: usize = 512;
/// First sector of the boot partition (1 MiB, the usual alignment).
pub const PARTITION_START: u32 = 2048;
/// MBR partition type: FAT32 with LBA addressing.
pub const FAT32_LBA: u8 = 0x0c;
/// MBR boot flag of the active partition.
pub const BOOTABLE: u8 = 0x80;
/// The MBR's disk signature (fixed, for reproducible images).
const DISK_SIGNATURE: [u8; 4] = *b"rpi4";
/// The FAT volume ID (fixed, for reproducible images).
const VOLUME_ID: u32 = 0x2025_0101;
/// The FAT volume label.
const VOLUME_LABEL: [u8; 11] = *b"RPI4-BOOT  ";
/// The kernel's file name, as config.txt names it.
pub const KERNEL: &str = "kernel8.img";
/// The firmware's configuration file.
pub const CONFIG: &str = "config.txt";

/// The settings `config.txt` holds, one `key=value` line each, in order: 64-bit mode,
/// `kernel8.img` loaded at 0x80000 where `boards/rpi4/link.ld` links it (also its arm64
/// header's text_offset), the UART enabled (the kernel then moves GPIO14/15 from the mini UART
/// to the PL011 itself), the PL011's clock pinned to the 48 MHz the kernel's divisors assume
/// (`rpi4::layout::UART_CLOCK_HZ`), and the GIC-400 (not the legacy interrupt controller)
/// asked for explicitly: the firmware chooses it by default only when it loads a device tree.
/// With `firmware_log`, `uart_2ndstage=1` as well: the firmware then reports on the serial
/// console what it loaded where, so a silent first boot shows which stage is silent.
pub fn config_settings(firmware_log: bool) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("arm_64bit", "1".to_owned()),
        ("kernel", KERNEL.to_owned()),
        (
            "kernel_address",
            format!("{:#x}", rpi4::layout::LOAD_ADDRESS),
        ),
        ("enable_uart", "1".to_owned()),
        ("init_uart_clock", rpi4::layout::UART_CLOCK_HZ.to_string()),
        ("enable_gic", "1".to_owned()),
    ];
    if firmware_log {
        settings.push(("uart_2ndstage", "1".to_owned()));
    }
    settings
}

/// The firmware configuration file: [`config_settings`] with a comment above each.
pub fn config_txt(firmware_log: bool) -> String {
    let mut text = String::from(
        "# Raspberry Pi 4 boot configuration, written by `cargo xtask sdcard`.\n\
         # See docs/rpi4.md in the kernel's repository (first boot).\n",
    );
    for (key, value) in config_settings(firmware_log) {
        // Lines stay within 80 columns (the config.txt documentation warns of an 80-character
        // line limit).
        let why = match key {
            "arm_64bit" => "Start the cores in AArch64.",
            "kernel" => "The kernel image on this partition.",
            "kernel_address" => {
                "Where boards/rpi4/link.ld links the image (its header's text_offset)."
            }
            "enable_uart" => "The serial console on header pins 8 (TX) and 10 (RX).",
            "init_uart_clock" => "The PL011's clock, which the kernel's baud divisors assume.",
            "enable_gic" => "The GIC-400, not the legacy interrupt controller.",
            "uart_2ndstage" => "The firmware's own messages on the serial console.",
            _ => "",
        };
        text.push_str(&format!("# {why}\n{key}={value}\n"));
    }
    if !firmware_log {
        text.push_str(
            "# `cargo xtask sdcard --firmware-log` adds uart_2ndstage=1: the firmware's own\n\
             # messages on the serial console.\n",
        );
    }
    text
}

/// Checks that `text` (a `config.txt`) holds every line of [`config_settings`].
pub fn check_config(text: &str, firmware_log: bool) -> Result<()> {
    let missing: Vec<String> = config_settings(firmware_log)
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .filter(|line| !text.lines().any(|l| l.trim() == line))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!("{CONFIG} lacks {}", missing.join(", "))))
    }
}

/// The arm64 Image header's magic ("ARM\x64") at offset 0x38.
pub const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

/// Checks that `kernel8` starts with the arm64 Image header the firmware and QEMU read: a `b`
/// instruction first, text_offset 0x80000 at 0x08, an image size at 0x10 no smaller than the
/// file, and the magic "ARM\x64" at 0x38 (Linux's `Documentation/arch/arm64/booting.rst`).
pub fn check_kernel_header(kernel8: &[u8]) -> Result<()> {
    let header = kernel8
        .get(..64)
        .ok_or_else(|| Error::new(format!("{KERNEL} is shorter than the 64-byte header")))?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let quad = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    let mut problems = Vec::new();
    if word(0) & 0xfc00_0000 != 0x1400_0000 {
        problems.push(format!("the first word {:#010x} is not a branch", word(0)));
    }
    let text_offset = quad(8);
    if text_offset != rpi4::layout::LOAD_ADDRESS {
        problems.push(format!(
            "text_offset {text_offset:#x}, not {:#x}",
            rpi4::layout::LOAD_ADDRESS
        ));
    }
    let image_size = quad(16);
    if image_size < kernel8.len() as u64 {
        problems.push(format!(
            "image size {image_size:#x} is smaller than the file ({:#x} bytes)",
            kernel8.len()
        ));
    }
    if &header[0x38..0x3c] != IMAGE_MAGIC {
        problems.push(format!(
            "magic {:02x?} at 0x38, not \"ARM\\x64\"",
            &header[0x38..0x3c]
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{KERNEL} has no valid arm64 Image header: {}",
            problems.join("; ")
        )))
    }
}

/// One file of the boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Its name in the root directory.
    pub name: &'static str,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// The boot partition's files, in name order (`firmware_log`: see [`config_settings`]).
pub fn boot_files(kernel8: Vec<u8>, firmware: Firmware, firmware_log: bool) -> Vec<BootFile> {
    let mut files = vec![
        BootFile {
            name: CONFIG,
            bytes: config_txt(firmware_log).into_bytes(),
        },
        BootFile {
            name: KERNEL,
            bytes: kernel8,
        },
        BootFile {
            name: firmware::START4,
            bytes: firmware.start4,
        },
        BootFile {
            name: firmware::FIXUP4,
            bytes: firmware.fixup4,
        },
        BootFile {
            name: firmware::LICENCE,
            bytes: firmware.licence,
        },
        BootFile {
            name: firmware::DTB,
            bytes: firmware.dtb,
        },
    ];
    files.sort_by_key(|f| f.name);
    files
}

/// The fixed time stamped on every file.
#[derive(Debug)]
struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 2025,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// Builds the SD card image holding `files`.
pub fn build_image(files: &[BootFile]) -> Result<Vec<u8>> {
    let partition_start = PARTITION_START as usize * SECTOR;
    let payload: usize = files.iter().map(|f| f.bytes.len()).sum();
    // Leave room for the FATs (about 1 MiB here) and cluster rounding.
    if payload > IMAGE_SIZE - partition_start - (4 << 20) {
        return Err(Error::new(format!(
            "the boot files take {} bytes, too many for a {} MiB image",
            payload,
            IMAGE_SIZE >> 20
        )));
    }
    let mut image = vec![0u8; IMAGE_SIZE];
    {
        let mut disk = Cursor::new(&mut image[..]);
        let mut mbr = mbrman::MBR::new_from(&mut disk, SECTOR as u32, DISK_SIGNATURE)
            .context("creating the partition table")?;
        mbr[1] = mbrman::MBRPartitionEntry {
            boot: BOOTABLE,
            first_chs: mbrman::CHS::empty(),
            sys: FAT32_LBA,
            last_chs: mbrman::CHS::empty(),
            starting_lba: PARTITION_START,
            sectors: (IMAGE_SIZE / SECTOR) as u32 - PARTITION_START,
        };
        mbr.write_into(&mut disk)
            .context("writing the partition table")?;
    }
    let partition = &mut image[partition_start..];
    fatfs::format_volume(
        Cursor::new(&mut partition[..]),
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_sector(SECTOR as u16)
            .volume_id(VOLUME_ID)
            .volume_label(VOLUME_LABEL),
    )
    .context("formatting the FAT32 partition")?;
    let fs = fatfs::FileSystem::new(
        Cursor::new(&mut partition[..]),
        fatfs::FsOptions::new().time_provider(&FIXED_TIME),
    )
    .context("opening the new FAT32 partition")?;
    {
        let root = fs.root_dir();
        for file in files {
            let mut f = root
                .create_file(file.name)
                .with_context(|| format!("creating {}", file.name))?;
            f.truncate()
                .with_context(|| format!("emptying {}", file.name))?;
            f.write_all(&file.bytes)
                .with_context(|| format!("writing {}", file.name))?;
            f.flush()
                .with_context(|| format!("writing {}", file.name))?;
        }
    }
    fs.unmount().context("closing the FAT32 partition")?;
    Ok(image)
}

/// An image as read back by [`read_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Boot flag of partition 1.
    pub boot_flag: u8,
    /// Type of partition 1.
    pub partition_type: u8,
    /// First sector of partition 1.
    pub start: u32,
    /// Sectors of partition 1.
    pub sectors: u32,
    /// Whether partitions 2-4 are empty.
    pub others_empty: bool,
    /// The file system type fatfs detected.
    pub fat_type: fatfs::FatType,
    /// The root directory's files (name, contents), in directory order.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Reads an image back: the MBR by hand (signature, the four entries), then the first
/// partition's FAT file system and every file of its root directory.
pub fn read_image(image: &[u8]) -> Result<ReadBack> {
    let mbr = image
        .get(..SECTOR)
        .ok_or_else(|| Error::new("the image is shorter than one sector"))?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(Error::new("no MBR boot signature 55 aa"));
    }
    let entry = |i: usize| &mbr[0x1be + 16 * i..0x1be + 16 * (i + 1)];
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let first = entry(0);
    let (start, sectors) = (le32(&first[8..12]), le32(&first[12..16]));
    let from = start as usize * SECTOR;
    let to = from + sectors as usize * SECTOR;
    let partition = image.get(from..to).ok_or_else(|| {
        Error::new(format!(
            "partition 1 (sectors {start}..{}) lies outside the {}-byte image",
            u64::from(start) + u64::from(sectors),
            image.len()
        ))
    })?;
    let fs = fatfs::FileSystem::new(Cursor::new(partition.to_vec()), fatfs::FsOptions::new())
        .context("opening partition 1 as FAT")?;
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.context("reading the root directory")?;
        if entry.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .to_file()
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", entry.file_name()))?;
        files.push((entry.file_name(), bytes));
    }
    Ok(ReadBack {
        boot_flag: first[0],
        partition_type: first[4],
        start,
        sectors,
        others_empty: (1..4).all(|i| entry(i).iter().all(|&b| b == 0)),
        fat_type: fs.fat_type(),
        files,
    })
}

/// Checks that `image` holds exactly `files` in a bootable FAT32 partition from sector 2048.
pub fn verify_image(image: &[u8], files: &[BootFile]) -> Result<()> {
    let back = read_image(image)?;
    let mut problems = Vec::new();
    if back.boot_flag != BOOTABLE {
        problems.push(format!("boot flag {:#04x}, not 0x80", back.boot_flag));
    }
    if back.partition_type != FAT32_LBA {
        problems.push(format!(
            "partition type {:#04x}, not 0x0c",
            back.partition_type
        ));
    }
    if back.start != PARTITION_START {
        problems.push(format!("partition starts at sector {}", back.start));
    }
    if !back.others_empty {
        problems.push("partitions 2-4 are not empty".to_owned());
    }
    if back.fat_type != fatfs::FatType::Fat32 {
        problems.push(format!("file system {:?}, not FAT32", back.fat_type));
    }
    for file in files {
        match back.files.iter().find(|(name, _)| name == file.name) {
            None => problems.push(format!("{} is missing", file.name)),
            Some((_, bytes)) if *bytes != file.bytes => problems.push(format!(
                "{} differs ({} bytes read, {} written)",
                file.name,
                bytes.len(),
                file.bytes.len()
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &back.files {
        if !files.iter().any(|f| f.name == name) {
            problems.push(format!("unexpected file {name}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the image read back wrong: {}",
            problems.join("; ")
        )))
    }
}

/// Flags of `cargo xtask sdcard`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdcardArgs {
    /// Where to write the image (default `target/rpi4/sdcard.img`).
    pub out: Option<PathBuf>,
    /// Write the files into this directory instead of an image.
    pub boot_dir: Option<PathBuf>,
    /// Take the firmware and device tree from this directory instead of fetching them.
    pub firmware: Option<PathBuf>,
    /// Put the in-kernel test image on the card instead of the normal kernel.
    pub test: bool,
    /// Add `uart_2ndstage=1` to config.txt (the firmware's messages on the serial console).
    pub firmware_log: bool,
}

/// The default image path.
pub fn default_image_path(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("rpi4").join("sdcard.img")
}

/// The boot files: the kernel (the test image with `test`) built in release mode, the
/// firmware, and config.txt (`firmware_log`: see [`config_settings`]).
pub fn gather(
    ws: &Workspace,
    firmware_dir: Option<&Path>,
    test: bool,
    firmware_log: bool,
) -> Result<Vec<BootFile>> {
    // Firmware first: when it is missing, say so before a long build.
    let firmware = firmware::obtain(ws, firmware_dir)?;
    let variant = if test {
        Variant::Ktest
    } else {
        Variant::Default
    };
    let raw = image::boot_image(ws, Board::Rpi4, variant, Profile::Release)?;
    let kernel8 = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    Ok(boot_files(kernel8, firmware, firmware_log))
}

/// Prints the settings of the config.txt among `files`, so the user sees what the firmware
/// will be told.
pub fn print_config(files: &[BootFile]) {
    let Some(config) = files.iter().find(|f| f.name == CONFIG) else {
        return;
    };
    eprintln!("xtask: {CONFIG}:");
    for line in String::from_utf8_lossy(&config.bytes).lines() {
        if !line.starts_with('#') && !line.trim().is_empty() {
            eprintln!("xtask:   {line}");
        }
    }
}

/// Writes `bytes` to `path` through a temporary file, so a failed write leaves no half file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    Workspace::create_parent(path)?;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `cargo xtask sdcard`.
pub fn run(ws: &Workspace, args: &SdcardArgs) -> Result<ExitCode> {
    if args.out.is_some() && args.boot_dir.is_some() {
        return Err(Error::new(
            "--out and --boot-dir exclude each other: an image, or the files for a card you \
             already have",
        ));
    }
    if let Some(dir) = &args.boot_dir
        && !dir.is_dir()
    {
        return Err(Error::new(format!(
            "--boot-dir {}: not a directory (mount the card's FAT partition and name its \
             mount point)",
            dir.display()
        )));
    }
    let files = gather(ws, args.firmware.as_deref(), args.test, args.firmware_log)?;
    if let Some(dir) = &args.boot_dir {
        for file in &files {
            let path = dir.join(file.name);
            std::fs::write(&path, &file.bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{} ({} bytes)", path.display(), file.bytes.len());
        }
        print_config(&files);
        eprintln!(
            "xtask: wrote {} files to {}; the card must have a FAT partition the Pi boots from",
            files.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let image = build_image(&files)?;
    verify_image(&image, &files)?;
    let out = args.out.clone().unwrap_or_else(|| default_image_path(ws));
    write_atomically(&out, &image)?;
    for file in &files {
        eprintln!("xtask:   {:<22} {:>9} bytes", file.name, file.bytes.len());
    }
    print_config(&files);
    eprintln!(
        "xtask: {} MiB image, MBR with one bootable FAT32 partition from sector {PARTITION_START}; \
         read back and checked. Write it with `cargo xtask flash --device /dev/sdX`.",
        IMAGE_SIZE >> 20
    );
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_files() -> Vec<BootFile> {
        let firmware = Firmware {
            start4: (0..300_000u32).map(|i| (i * 7) as u8).collect(),
            fixup4: b"fixup".repeat(1000),
            dtb: firmware::fake_dtb(4096, 4096),
            licence: b"Copyright (c) Broadcom; redistribution in binary form...".to_vec(),
        };
        let kernel8 = (0..700_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        boot_files(kernel8, firmware, false)
    }

    #[test]
    fn the_image_reads_back_with_every_file_intact() {
        let files = fake_files();
        let image = build_image(&files).unwrap();
        assert_eq!(image.len(), 64 << 20);
        let back = read_image(&image).unwrap();
        assert_eq!(back.boot_flag, 0x80);
        assert_eq!(back.partition_type, 0x0c);
        assert_eq!(back.start, 2048);
        assert_eq!(back.sectors, (64 << 20) / 512 - 2048);
        assert!(back.others_empty);
        assert_eq!(back.fat_type, fatfs::FatType::Fat32);
        let names: Vec<&str> = back.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "LICENCE.broadcom",
                "bcm2711-rpi-4-b.dtb",
                "config.txt",
                "fixup4.dat",
                "kernel8.img",
                "start4.elf"
            ]
        );
        for file in &files {
            let (_, bytes) = back.files.iter().find(|(n, _)| n == file.name).unwrap();
            assert!(*bytes == file.bytes, "{} differs", file.name);
        }
        verify_image(&image, &files).unwrap();
        // The MBR's signature bytes where the format puts them.
        assert_eq!(&image[440..444], b"rpi4");
    }

    #[test]
    fn two_builds_give_the_same_bytes() {
        let files = fake_files();
        assert!(build_image(&files).unwrap() == build_image(&files).unwrap());
    }

    #[test]
    fn verification_notices_a_damaged_file_or_table() {
        let files = fake_files();
        let image = build_image(&files).unwrap();
        let mut other = files.clone();
        other[4].bytes[1000] ^= 1; // kernel8.img
        let err = verify_image(&image, &other).unwrap_err().to_string();
        assert!(err.contains("kernel8.img differs"), "{err}");
        let mut inactive = image.clone();
        inactive[0x1be] = 0;
        let err = verify_image(&inactive, &files).unwrap_err().to_string();
        assert!(err.contains("boot flag 0x00"), "{err}");
        let mut unsigned = image;
        unsigned[511] = 0;
        assert!(read_image(&unsigned).is_err());
    }

    #[test]
    fn config_txt_pins_what_the_kernel_assumes() {
        let config = config_txt(false);
        for line in [
            "arm_64bit=1",
            "kernel=kernel8.img",
            "kernel_address=0x80000",
            "enable_uart=1",
            "init_uart_clock=48000000",
            "enable_gic=1",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} missing");
        }
        assert!(!config.lines().any(|l| l.starts_with("uart_2ndstage")));
        check_config(&config, false).unwrap();
        // The link address in the board's linker script is the same.
        let link =
            std::fs::read_to_string(Workspace::locate().root.join("boards/rpi4/link.ld")).unwrap();
        assert!(link.contains(". = 0x80000;"));
    }

    #[test]
    fn config_lines_fit_80_columns() {
        for firmware_log in [false, true] {
            for line in config_txt(firmware_log).lines() {
                assert!(line.len() <= 80, "{line:?}");
            }
        }
    }

    #[test]
    fn the_firmware_log_flag_adds_uart_2ndstage() {
        let config = config_txt(true);
        assert!(config.lines().any(|l| l == "uart_2ndstage=1"));
        check_config(&config, true).unwrap();
        let err = check_config(&config_txt(false), true).unwrap_err();
        assert!(err.to_string().contains("uart_2ndstage=1"), "{err}");
    }

    #[test]
    fn a_config_without_a_setting_is_refused() {
        let config = config_txt(false).replace("init_uart_clock=48000000\n", "");
        let err = check_config(&config, false).unwrap_err().to_string();
        assert_eq!(err, "config.txt lacks init_uart_clock=48000000");
        let commented = config_txt(false).replace("enable_gic=1", "#enable_gic=1");
        assert!(check_config(&commented, false).is_err());
    }

    /// A kernel8.img-like file: the header as `boards/rpi4/link.ld` writes it, then code.
    fn kernel_with_header(len: usize) -> Vec<u8> {
        let mut k = vec![0u8; len];
        k[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
        k[8..16].copy_from_slice(&0x80000u64.to_le_bytes());
        k[16..24].copy_from_slice(&(len as u64 + 0x1000).to_le_bytes());
        k[24..32].copy_from_slice(&2u64.to_le_bytes());
        k[0x38..0x3c].copy_from_slice(b"ARM\x64");
        k
    }

    #[test]
    fn the_image_header_is_checked_field_by_field() {
        check_kernel_header(&kernel_with_header(4096)).unwrap();
        let broken = |at: usize, byte: u8| {
            let mut k = kernel_with_header(4096);
            k[at] = byte;
            check_kernel_header(&k).unwrap_err().to_string()
        };
        assert!(broken(3, 0x00).contains("not a branch"));
        assert!(broken(10, 0x20).contains("text_offset 0x200000"));
        assert!(broken(0x3b, 0x65).contains("magic"));
        let mut short_size = kernel_with_header(4096);
        short_size[16..24].copy_from_slice(&16u64.to_le_bytes());
        assert!(
            check_kernel_header(&short_size)
                .unwrap_err()
                .to_string()
                .contains("smaller than the file")
        );
        assert!(check_kernel_header(&[0x10, 0, 0, 0x14]).is_err());
    }

    #[test]
    fn oversized_contents_are_refused() {
        let mut files = fake_files();
        files[0].bytes = vec![0; 62 << 20];
        assert!(
            build_image(&files)
                .unwrap_err()
                .to_string()
                .contains("too many for a 64 MiB image")
        );
    }
}
