//! `cargo xtask flash --device /dev/sdX`: writes the SD card image to a card.
//!
//! Before anything is written the target is checked by [`check_target`], a function of the
//! sysfs tree, `/proc/mounts` and `/proc/swaps` (so tests run it on fake ones): it must be a
//! whole disk, not a partition; neither it nor any of its partitions may be mounted or used as
//! swap; it must not look like a system disk (NVMe, virtio, device-mapper, RAID, loop and
//! optical devices are refused, and so is any disk that is neither removable, nor on USB, nor
//! an SD/MMC slot, or that is larger than 2 TiB, the SDXC limit); it must hold the image.
//! Then its model and size are shown and the user must type `yes`. The device is opened with
//! `O_EXCL`, which Linux refuses for a block device that is mounted or otherwise claimed.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::args::FlashArgs;
use crate::error::{Context, Error, Result};
use crate::sdcard;
use crate::workspace::Workspace;

/// Linux's `O_EXCL` (the same value on x86-64 and AArch64).
const O_EXCL: i32 = 0o200;
/// The largest card accepted: SDXC's limit.
const MAX_CARD_BYTES: u64 = 2 << 40;
/// Name prefixes of block devices that are never SD cards.
const NEVER_CARDS: &[(&str, &str)] = &[
    ("nvme", "an NVMe disk"),
    ("vd", "a virtio disk"),
    ("xvd", "a Xen disk"),
    ("dm-", "a device-mapper volume"),
    ("md", "a RAID array"),
    ("loop", "a loop device"),
    ("sr", "an optical drive"),
    ("zram", "a compressed RAM disk"),
    ("nbd", "a network block device"),
];

/// What sysfs says about a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name (`sdb`).
    pub name: String,
    /// Capacity in bytes.
    pub size: u64,
    /// Vendor and model, as far as sysfs knows them.
    pub model: String,
    /// The `removable` attribute.
    pub removable: bool,
    /// Whether the device hangs off a USB bus.
    pub usb: bool,
    /// Its partitions' kernel names.
    pub partitions: Vec<String>,
}

impl DeviceInfo {
    /// `/dev/sdb: Generic STORAGE DEVICE, 31.9 GB (29.7 GiB), removable, USB`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "/dev/{}: {}, {:.1} GB ({:.1} GiB)",
            self.name,
            if self.model.is_empty() {
                "unknown model"
            } else {
                &self.model
            },
            self.size as f64 / 1e9,
            self.size as f64 / f64::from(1u32 << 30)
        );
        if self.removable {
            text.push_str(", removable");
        }
        if self.usb {
            text.push_str(", USB");
        }
        if !self.partitions.is_empty() {
            text.push_str(&format!(", partitions {}", self.partitions.join(" ")));
        }
        text
    }
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Reads a whole disk's description from `sys_block` (normally `/sys/block`, which lists
/// whole disks only: a partition is not there).
pub fn read_device_info(sys_block: &Path, name: &str) -> Result<DeviceInfo> {
    let dir = sys_block.join(name);
    if !dir.exists() {
        return Err(Error::new(format!(
            "/dev/{name} is not a whole disk (no {}): give the card's disk, e.g. /dev/sdb, \
             not a partition such as /dev/sdb1",
            dir.display()
        )));
    }
    let sectors: u64 = read_trimmed(&dir.join("size")).parse().unwrap_or(0);
    let vendor = read_trimmed(&dir.join("device/vendor"));
    let model = read_trimmed(&dir.join("device/model"));
    let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let mut partitions: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    partitions.sort();
    Ok(DeviceInfo {
        name: name.to_owned(),
        size: sectors * 512,
        model: [vendor, model]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        removable: read_trimmed(&dir.join("removable")) == "1",
        usb: canonical
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(|s| s.starts_with("usb"))),
        partitions,
    })
}

/// The lines of `/proc/mounts` and `/proc/swaps` that use the device or one of its
/// partitions, as `"/dev/sdb1 on /media/card"` or `"/dev/sdb2 as swap"`.
pub fn uses(mounts: &str, swaps: &str, info: &DeviceInfo) -> Vec<String> {
    let ours = |source: &str| {
        source
            .strip_prefix("/dev/")
            .is_some_and(|n| n == info.name || info.partitions.iter().any(|p| p == n))
    };
    let mut found = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(source), Some(target)) = (fields.next(), fields.next())
            && ours(source)
        {
            found.push(format!("{source} on {}", target.replace("\\040", " ")));
        }
    }
    for line in swaps.lines().skip(1) {
        if let Some(source) = line.split_whitespace().next()
            && ours(source)
        {
            found.push(format!("{source} as swap"));
        }
    }
    found
}

/// Why the device must not be written, if it must not.
pub fn refusal(info: &DeviceInfo, in_use: &[String], image_len: u64) -> Option<String> {
    let dev = format!("/dev/{}", info.name);
    if !in_use.is_empty() {
        return Some(format!(
            "{dev} is in use ({}); unmount it first",
            in_use.join(", ")
        ));
    }
    if let Some((_, what)) = NEVER_CARDS.iter().find(|(p, _)| info.name.starts_with(p)) {
        return Some(format!("{dev} is {what}, not an SD card"));
    }
    if !info.removable && !info.usb && !info.name.starts_with("mmcblk") {
        return Some(format!(
            "{dev} looks like a system disk: not removable, not on USB, not an SD/MMC slot"
        ));
    }
    if info.size > MAX_CARD_BYTES {
        return Some(format!(
            "{dev} holds {} GiB, more than any SD card (2 TiB): it looks like a system disk",
            info.size >> 30
        ));
    }
    if info.size == 0 {
        return Some(format!("{dev} has no medium (size 0)"));
    }
    if info.size < image_len {
        return Some(format!(
            "{dev} holds {} bytes, less than the {image_len}-byte image",
            info.size
        ));
    }
    None
}

/// Everything checked before writing: resolves `device` (symlinks such as
/// /dev/disk/by-id/... included) to a kernel name under `/dev`, reads its description under
/// `sys_block`, and refuses it for any [`refusal`] reason. Writes nothing.
pub fn check_target(
    device: &Path,
    resolved: &Path,
    sys_block: &Path,
    mounts: &str,
    swaps: &str,
    image_len: u64,
) -> Result<DeviceInfo> {
    let name = resolved
        .strip_prefix("/dev")
        .ok()
        .and_then(|p| p.to_str())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            Error::new(format!(
                "{} is not a block device under /dev (it resolves to {})",
                device.display(),
                resolved.display()
            ))
        })?;
    let info = read_device_info(sys_block, name)?;
    let in_use = uses(mounts, swaps, &info);
    match refusal(&info, &in_use, image_len) {
        Some(why) => Err(Error::new(format!(
            "refusing to write {}: {why}. Nothing was written.",
            device.display()
        ))),
        None => Ok(info),
    }
}

/// The image to write: `--image FILE`, or one built as `cargo xtask sdcard` builds it.
fn image_bytes(ws: &Workspace, args: &FlashArgs) -> Result<(Vec<u8>, String)> {
    if let Some(path) = &args.image {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((bytes, path.display().to_string()));
    }
    let files = sdcard::gather(ws, args.firmware.as_deref(), false, args.firmware_log)?;
    sdcard::print_config(&files);
    let image = sdcard::build_image(&files)?;
    sdcard::verify_image(&image, &files)?;
    Ok((image, "the SD card image just built".to_owned()))
}

/// `cargo xtask flash`.
pub fn run(ws: &Workspace, args: &FlashArgs) -> Result<ExitCode> {
    let resolved: PathBuf = std::fs::canonicalize(&args.device)
        .with_context(|| format!("{}: no such device", args.device.display()))?;
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    // A first check before the (possibly long) build, the real one after it.
    check_target(
        &args.device,
        &resolved,
        Path::new("/sys/block"),
        &mounts,
        &swaps,
        0,
    )?;
    let (image, what) = image_bytes(ws, args)?;
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let info = check_target(
        &args.device,
        &resolved,
        Path::new("/sys/block"),
        &mounts,
        &swaps,
        image.len() as u64,
    )?;
    eprintln!("{}", info.describe());
    eprint!(
        "Write {what} ({} MiB) to /dev/{}? Everything on the card is lost. Type yes: ",
        image.len() >> 20,
        info.name
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if answer.trim() != "yes" {
        eprintln!("xtask: not confirmed; nothing was written");
        return Ok(ExitCode::FAILURE);
    }
    let dev = Path::new("/dev").join(&info.name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_EXCL)
        .open(&dev)
        .with_context(|| format!("opening {} exclusively (is it mounted?)", dev.display()))?;
    for (i, chunk) in image.chunks(4 << 20).enumerate() {
        file.write_all(chunk)
            .with_context(|| format!("writing {}", dev.display()))?;
        eprint!("\rxtask: {} of {} MiB", (i + 1) * 4, image.len() >> 20);
    }
    file.sync_all()
        .with_context(|| format!("flushing {}", dev.display()))?;
    eprintln!(
        "\nxtask: wrote {} MiB to {}; see docs/rpi4.md for the serial console",
        image.len() >> 20,
        dev.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/block with one disk.
    fn fake_sys(tag: &str, name: &str, sectors: u64, removable: bool, parts: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-flash-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = root.join(name);
        std::fs::create_dir_all(dev.join("device")).unwrap();
        std::fs::write(dev.join("size"), format!("{sectors}\n")).unwrap();
        std::fs::write(dev.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
        std::fs::write(dev.join("device/vendor"), "Generic \n").unwrap();
        std::fs::write(dev.join("device/model"), "STORAGE DEVICE  \n").unwrap();
        for p in parts {
            std::fs::create_dir_all(dev.join(p)).unwrap();
            std::fs::write(dev.join(p).join("partition"), "1\n").unwrap();
        }
        root
    }

    const CARD_SECTORS: u64 = 62_333_952; // a "32 GB" card

    #[test]
    fn a_removable_unmounted_card_is_accepted_and_described() {
        let sys = fake_sys("ok", "sdz", CARD_SECTORS, true, &["sdz1", "sdz2"]);
        let info = check_target(
            Path::new("/dev/disk/by-id/usb-card"),
            Path::new("/dev/sdz"),
            &sys,
            "/dev/sda1 / ext4 rw 0 0\n",
            "Filename Type Size Used Priority\n",
            64 << 20,
        )
        .unwrap();
        assert_eq!(info.partitions, ["sdz1", "sdz2"]);
        assert_eq!(
            info.describe(),
            "/dev/sdz: Generic STORAGE DEVICE, 31.9 GB (29.7 GiB), removable, partitions sdz1 sdz2"
        );
    }

    #[test]
    fn a_mounted_card_is_refused_and_nothing_is_written() {
        let sys = fake_sys("mounted", "sdz", CARD_SECTORS, true, &["sdz1"]);
        let mounts = "/dev/sda1 / ext4 rw 0 0\n/dev/sdz1 /media/my\\040card vfat rw 0 0\n";
        let err = check_target(
            Path::new("/dev/sdz"),
            Path::new("/dev/sdz"),
            &sys,
            mounts,
            "",
            64 << 20,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "refusing to write /dev/sdz: /dev/sdz is in use (/dev/sdz1 on /media/my card); \
             unmount it first. Nothing was written."
        );
        let swaps = "Filename Type Size Used Priority\n/dev/sdz1 partition 1 0 -2\n";
        let info = read_device_info(&sys, "sdz").unwrap();
        assert_eq!(uses("", swaps, &info), ["/dev/sdz1 as swap"]);
    }

    #[test]
    fn system_disks_are_refused() {
        let fixed = fake_sys("fixed", "sdy", CARD_SECTORS, false, &[]);
        let err = check_target(
            Path::new("/dev/sdy"),
            Path::new("/dev/sdy"),
            &fixed,
            "",
            "",
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("looks like a system disk: not removable"),
            "{err}"
        );
        let nvme = fake_sys("nvme", "nvme0n1", CARD_SECTORS, true, &[]);
        let err = check_target(
            Path::new("/dev/nvme0n1"),
            Path::new("/dev/nvme0n1"),
            &nvme,
            "",
            "",
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is an NVMe disk, not an SD card"), "{err}");
        let huge = DeviceInfo {
            name: "sdx".into(),
            size: 4 << 40,
            model: String::new(),
            removable: true,
            usb: true,
            partitions: vec![],
        };
        assert!(
            refusal(&huge, &[], 1)
                .unwrap()
                .contains("more than any SD card")
        );
        // An SD slot wired to the SoC is neither removable nor USB, and is accepted.
        let slot = DeviceInfo {
            name: "mmcblk0".into(),
            size: 32 << 30,
            removable: false,
            usb: false,
            ..huge
        };
        assert_eq!(refusal(&slot, &[], 64 << 20), None);
    }

    #[test]
    fn partitions_small_cards_and_strange_paths_are_refused() {
        let sys = fake_sys("part", "sdz", 1000, true, &["sdz1"]);
        let err = check_target(
            Path::new("/dev/sdz1"),
            Path::new("/dev/sdz1"),
            &sys,
            "",
            "",
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a whole disk"), "{err}");
        let err = check_target(
            Path::new("/dev/sdz"),
            Path::new("/dev/sdz"),
            &sys,
            "",
            "",
            64 << 20,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("less than the 67108864-byte image"), "{err}");
        let err = check_target(
            Path::new("card.img"),
            Path::new("/home/u/card.img"),
            &sys,
            "",
            "",
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a block device under /dev"), "{err}");
        let empty = fake_sys("empty", "sdw", 0, true, &[]);
        let err = check_target(
            Path::new("/dev/sdw"),
            Path::new("/dev/sdw"),
            &empty,
            "",
            "",
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no medium"), "{err}");
    }
}
