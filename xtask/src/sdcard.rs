//! `cargo xtask sdcard`: a flashable Raspberry Pi 4 SD card image, built in memory in Rust
//! (`mbrman` for the partition table, `fatfs` for the file system), so it needs no root, no
//! loop device and no host tools, and gives the same bytes on every build.
//!
//! Layout: a 64 MiB image (a power of two, as QEMU's SD card model requires); an MBR with disk
//! signature "rpi4" and one bootable partition of type 0x0c (FAT32, LBA) from sector 2048
//! (1 MiB) to the end; FAT32 with a fixed volume ID and label, every file in the root directory
//! (fatfs 0.3.6 writes broken `.`/`..` entries in subdirectories) with the timestamp
//! 2025-01-01 00:00, written in name order. The files: `config.txt` (64-bit, UART on,
//! `kernel8.img` loaded at 0x80000 as it is linked), `kernel8.img`, `start4.elf`,
//! `fixup4.dat`, `LICENCE.broadcom` and `bcm2711-rpi-4-b.dtb` (see `firmware.rs`).
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

/// The firmware configuration: 64-bit mode, the UART enabled (on real hardware the kernel then
/// moves GPIO14/15 from the mini UART to the PL011 itself), `kernel8.img` loaded at 0x80000
/// where `boards/rpi4/link.ld` links it.
pub fn config_txt() -> String {
    format!(
        "# Raspberry Pi 4 boot configuration, written by `cargo xtask sdcard`.\n\
         # See docs/rpi4.md in the kernel's repository.\n\
         arm_64bit=1\n\
         kernel={KERNEL}\n\
         # Where boards/rpi4/link.ld links the image (also its arm64 header's text_offset).\n\
         kernel_address=0x80000\n\
         enable_uart=1\n\
         # Uncomment to see the firmware's own messages on the serial console.\n\
         #uart_2ndstage=1\n"
    )
}

/// One file of the boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Its name in the root directory.
    pub name: &'static str,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// The boot partition's files, in name order.
pub fn boot_files(kernel8: Vec<u8>, firmware: Firmware) -> Vec<BootFile> {
    let mut files = vec![
        BootFile {
            name: CONFIG,
            bytes: config_txt().into_bytes(),
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
}

/// The default image path.
pub fn default_image_path(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("rpi4").join("sdcard.img")
}

/// The boot files for `args`: the kernel built in release mode and the firmware.
pub fn gather(ws: &Workspace, firmware_dir: Option<&Path>, test: bool) -> Result<Vec<BootFile>> {
    // Firmware first: when it is missing, say so before a long build.
    let firmware = firmware::obtain(ws, firmware_dir)?;
    let variant = if test {
        Variant::Ktest
    } else {
        Variant::Default
    };
    let raw = image::boot_image(ws, Board::Rpi4, variant, Profile::Release)?;
    let kernel8 = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    Ok(boot_files(kernel8, firmware))
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
    let files = gather(ws, args.firmware.as_deref(), args.test)?;
    if let Some(dir) = &args.boot_dir {
        for file in &files {
            let path = dir.join(file.name);
            std::fs::write(&path, &file.bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{} ({} bytes)", path.display(), file.bytes.len());
        }
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
        boot_files(kernel8, firmware)
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
    fn config_txt_asks_for_64_bits_the_uart_and_the_link_address() {
        let config = config_txt();
        for line in [
            "arm_64bit=1",
            "kernel=kernel8.img",
            "kernel_address=0x80000",
            "enable_uart=1",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} missing");
        }
        // The link address in the board's linker script is the same.
        let link =
            std::fs::read_to_string(Workspace::locate().root.join("boards/rpi4/link.ld")).unwrap();
        assert!(link.contains(". = 0x80000;"));
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
