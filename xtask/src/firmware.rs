//! The Raspberry Pi 4 boot files this repository does not hold: the firmware (`start4.elf`,
//! `fixup4.dat` and its licence, from Debian's `raspi-firmware` package, component
//! non-free-firmware) and the device tree `bcm2711-rpi-4-b.dtb` (GPL-2, from Debian's arm64
//! kernel package `linux-image-<version>-arm64`).
//!
//! They are cached in `target/rpi4/firmware/`. When the cache is incomplete, [`obtain`] fetches
//! both packages with `apt-get download` through a private apt configuration under
//! `target/rpi4/apt/` (Debian's mirror from `/etc/apt/sources.list.d/debian.sources`, suite
//! main + non-free-firmware, architecture arm64), so nothing on the host changes and no root
//! is needed; the packages are unpacked with `dpkg-deb -x` (never installed: raspi-firmware's
//! hook would write /boot/firmware) and deleted after the four files are copied out. The
//! kernel version is whatever Debian's `linux-image-arm64` currently depends on. A user without
//! apt passes `--firmware DIR` holding the files instead; every error says which file is
//! missing and how to supply it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use crate::tools;
use crate::workspace::Workspace;

/// The Pi 4's GPU firmware.
pub const START4: &str = "start4.elf";
/// Its memory-split fixup file.
pub const FIXUP4: &str = "fixup4.dat";
/// The Pi 4 Model B device tree.
pub const DTB: &str = "bcm2711-rpi-4-b.dtb";
/// The firmware's licence, as the image and the cache name it.
pub const LICENCE: &str = "LICENCE.broadcom";
/// Names accepted for the licence in a `--firmware` directory (the second is Debian's name).
const LICENCE_NAMES: &[&str] = &[LICENCE, "copyright"];

/// The packages and where their files are inside them.
const FIRMWARE_PACKAGE: &str = "raspi-firmware";
const FIRMWARE_DIR_IN_PACKAGE: &str = "usr/lib/raspi-firmware";
const LICENCE_IN_PACKAGE: &str = "usr/share/doc/raspi-firmware/copyright";
const KERNEL_METAPACKAGE: &str = "linux-image-arm64";

/// The keyring that signs Debian's archive (from `debian-archive-keyring`).
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The files of a Pi 4 boot partition that come from outside the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// `start4.elf`.
    pub start4: Vec<u8>,
    /// `fixup4.dat`.
    pub fixup4: Vec<u8>,
    /// `bcm2711-rpi-4-b.dtb`.
    pub dtb: Vec<u8>,
    /// The firmware licence (copied into the image as [`LICENCE`]).
    pub licence: Vec<u8>,
}

/// `target/rpi4/firmware`.
pub fn cache_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("rpi4").join("firmware")
}

/// The cached device tree, if `cargo xtask sdcard` fetched one and it looks sound.
pub fn cached_dtb(ws: &Workspace) -> Option<PathBuf> {
    let path = cache_dir(ws).join(DTB);
    check_dtb_file(&path).ok().map(|()| path)
}

/// What is wrong with `bytes` as a device tree: not one (magic), a broken header, or shorter
/// than its header says (truncated).
pub fn dtb_problem(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(magic), Some(total), Some(version)) = (word(0), word(1), word(5)) else {
        return Some(format!(
            "only {} bytes, shorter than a device tree header (40)",
            bytes.len()
        ));
    };
    if bytes.len() < 40 {
        return Some(format!(
            "only {} bytes, shorter than a device tree header (40)",
            bytes.len()
        ));
    }
    if magic != 0xd00d_feed {
        return Some(format!(
            "not a device tree (magic {magic:#010x}, expected 0xd00dfeed)"
        ));
    }
    if version < 16 {
        return Some(format!("device tree version {version}, older than 16"));
    }
    if (total as usize) > bytes.len() {
        return Some(format!(
            "truncated: the header says {total} bytes, the file has {}",
            bytes.len()
        ));
    }
    None
}

/// Checks that the file at `path` is a complete device tree.
pub fn check_dtb_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match dtb_problem(&bytes) {
        None => Ok(()),
        Some(problem) => Err(Error::new(format!("{}: {problem}", path.display()))),
    }
}

/// How to supply the files by hand, for error messages.
fn supply_hint() -> String {
    format!(
        "Supply the files with --firmware DIR, a directory holding {START4} and {FIXUP4} (from \
         Debian's {FIRMWARE_PACKAGE} package, /usr/lib/raspi-firmware/, or the boot/ folder of \
         github.com/raspberrypi/firmware), its licence as {LICENCE} or copyright, and {DTB} \
         (from Debian's {KERNEL_METAPACKAGE} package, /usr/lib/linux-image-*/broadcom/, or the \
         same boot/ folder)."
    )
}

/// Reads the four files from `dir`; the error names every missing or unusable one.
pub fn load_dir(dir: &Path) -> Result<Firmware> {
    if !dir.is_dir() {
        return Err(Error::new(format!(
            "firmware directory {} does not exist. {}",
            dir.display(),
            supply_hint()
        )));
    }
    let mut missing = Vec::new();
    let mut read = |names: &[&str]| -> Option<Vec<u8>> {
        for name in names {
            if let Ok(bytes) = std::fs::read(dir.join(name))
                && !bytes.is_empty()
            {
                return Some(bytes);
            }
        }
        missing.push(names.join(" or "));
        None
    };
    let start4 = read(&[START4]);
    let fixup4 = read(&[FIXUP4]);
    let licence = read(LICENCE_NAMES);
    let dtb = read(&[DTB]);
    let (Some(start4), Some(fixup4), Some(licence), Some(dtb)) = (start4, fixup4, licence, dtb)
    else {
        return Err(Error::new(format!(
            "{} lacks {} (missing or empty). {}",
            dir.display(),
            missing.join(", "),
            supply_hint()
        )));
    };
    if let Some(problem) = dtb_problem(&dtb) {
        return Err(Error::new(format!(
            "{}: {problem}. {}",
            dir.join(DTB).display(),
            supply_hint()
        )));
    }
    Ok(Firmware {
        start4,
        fixup4,
        dtb,
        licence,
    })
}

/// The firmware files: from `explicit` (`--firmware DIR`) if given, else from the cache,
/// fetching them first when the cache is incomplete.
pub fn obtain(ws: &Workspace, explicit: Option<&Path>) -> Result<Firmware> {
    if let Some(dir) = explicit {
        return load_dir(dir);
    }
    let cache = cache_dir(ws);
    if let Ok(firmware) = load_dir(&cache) {
        eprintln!("xtask: firmware from the cache {}", cache.display());
        return Ok(firmware);
    }
    fetch(ws, &cache).map_err(|e| {
        Error::new(format!(
            "could not fetch the Raspberry Pi firmware and device tree: {e}\n{}",
            supply_hint()
        ))
    })?;
    load_dir(&cache)
}

/// The private apt configuration: every `-o` option that keeps apt away from the host's own
/// lists, cache and sources.
fn apt_options(apt: &Path) -> Vec<String> {
    let p = |sub: &str| apt.join(sub).display().to_string();
    vec![
        format!("Dir::Etc::SourceList={}", p("sources.list")),
        format!("Dir::Etc::SourceParts={}", p("sources.list.d")),
        format!("Dir::State={}", p("state")),
        format!("Dir::State::status={}", p("status")),
        format!("Dir::Cache={}", p("cache")),
        "APT::Architecture=arm64".to_owned(),
        "APT::Architectures=arm64".to_owned(),
        "Acquire::Languages=none".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".to_owned(),
        "Debug::NoLocking=1".to_owned(),
    ]
}

/// The one-line sources list: the mirror, the host's Debian release, main + non-free-firmware.
pub fn sources_list(uri: &str, codename: &str) -> String {
    format!("deb [signed-by={DEBIAN_KEYRING}] {uri} {codename} main non-free-firmware\n")
}

/// The versioned kernel package named in `apt-cache depends linux-image-arm64` output.
pub fn kernel_package_from_depends(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        (name.starts_with("linux-image-") && name.ends_with("-arm64") && name != KERNEL_METAPACKAGE)
            .then(|| name.to_owned())
    })
}

/// `VERSION_CODENAME` from `/etc/os-release`.
fn codename(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim().trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
}

/// Runs one apt/dpkg command, with its output on our stderr; the error says what failed.
fn run(program: &str, args: &[String], dir: &Path, what: &str) -> Result<String> {
    // The -o options of the private apt configuration would drown the line: leave them out.
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "-o" && !a.contains("::") && !a.starts_with("APT::"))
        .collect();
    eprintln!("xtask: {program} {}", shown.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("{what}: cannot run {program}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::new(format!(
            "{what}: {program} failed ({}): {}",
            out.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads the two packages through the private apt configuration and copies the four
/// files into `cache`.
fn fetch(ws: &Workspace, cache: &Path) -> Result<()> {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = codename(&os_release)
        .ok_or("this host is not Debian (no VERSION_CODENAME in /etc/os-release)")
        .map_err(Error::new)?;
    let sources = std::fs::read_to_string(tools::DEBIAN_SOURCES).ok();
    let uri = sources
        .as_deref()
        .and_then(tools::debian_uri)
        .unwrap_or_else(|| tools::DEFAULT_DEBIAN_URI.to_owned());
    if !Path::new(DEBIAN_KEYRING).is_file() {
        return Err(Error::new(format!(
            "{DEBIAN_KEYRING} is missing (package debian-archive-keyring)"
        )));
    }
    let apt = ws.target_dir.join("rpi4").join("apt");
    for sub in [
        "sources.list.d",
        "state/lists/partial",
        "cache/archives/partial",
    ] {
        std::fs::create_dir_all(apt.join(sub))
            .with_context(|| format!("creating {}", apt.join(sub).display()))?;
    }
    std::fs::write(apt.join("status"), "").context("writing the apt status file")?;
    std::fs::write(apt.join("sources.list"), sources_list(&uri, &codename))
        .context("writing the apt sources list")?;
    let with_options = |args: &[&str]| -> Vec<String> {
        apt_options(&apt)
            .into_iter()
            .flat_map(|o| ["-o".to_owned(), o])
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    let download = ws.target_dir.join("rpi4").join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .with_context(|| format!("creating {}", download.display()))?;

    run(
        "apt-get",
        &with_options(&["-q", "update"]),
        &download,
        &format!("reading Debian's package lists ({uri} {codename} main non-free-firmware, arm64)"),
    )?;
    let depends = run(
        "apt-cache",
        &with_options(&["depends", KERNEL_METAPACKAGE]),
        &download,
        &format!("finding the kernel package behind {KERNEL_METAPACKAGE}"),
    )?;
    let kernel = kernel_package_from_depends(&depends).ok_or_else(|| {
        Error::new(format!(
            "`apt-cache depends {KERNEL_METAPACKAGE}` named no kernel package:\n{depends}"
        ))
    })?;
    for package in [FIRMWARE_PACKAGE, kernel.as_str()] {
        run(
            "apt-get",
            &with_options(&["-q", "download", package]),
            &download,
            &format!("downloading {package}"),
        )?;
    }
    let debs: Vec<PathBuf> = std::fs::read_dir(&download)
        .context("listing the downloads")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let unpacked = download.join("unpacked");
    for deb in &debs {
        run(
            "dpkg-deb",
            &[
                "-x".to_owned(),
                deb.display().to_string(),
                unpacked.display().to_string(),
            ],
            &download,
            &format!("unpacking {}", deb.display()),
        )?;
    }
    let firmware_dir = unpacked.join(FIRMWARE_DIR_IN_PACKAGE);
    let dtb = std::fs::read_dir(unpacked.join("usr/lib"))
        .context("looking for the kernel's device trees")?
        .filter_map(|e| e.ok().map(|e| e.path().join("broadcom").join(DTB)))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::new(format!("{kernel} holds no broadcom/{DTB}")))?;
    let staged = cache.with_extension("new");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).with_context(|| format!("creating {}", staged.display()))?;
    let copies = [
        (firmware_dir.join(START4), START4),
        (firmware_dir.join(FIXUP4), FIXUP4),
        (unpacked.join(LICENCE_IN_PACKAGE), LICENCE),
        (dtb, DTB),
    ];
    for (from, name) in copies {
        std::fs::copy(&from, staged.join(name))
            .with_context(|| format!("copying {} out of the package", from.display()))?;
    }
    let versions: Vec<String> = debs
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    std::fs::write(staged.join("SOURCE"), versions.join("\n") + "\n")
        .context("writing the cache's SOURCE note")?;
    let _ = std::fs::remove_dir_all(cache);
    std::fs::rename(&staged, cache).with_context(|| format!("filling {}", cache.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!(
        "xtask: cached {START4}, {FIXUP4}, {LICENCE}, {DTB} in {} (from {})",
        cache.display(),
        versions.join(", ")
    );
    Ok(())
}

/// A device tree header claiming `total` bytes, zero-padded to `len` (for tests).
#[cfg(test)]
pub fn fake_dtb(total: u32, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[..4].copy_from_slice(&0xd00d_feedu32.to_be_bytes());
    d[4..8].copy_from_slice(&total.to_be_bytes());
    d[20..24].copy_from_slice(&17u32.to_be_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tree_problems_are_named() {
        assert_eq!(dtb_problem(&fake_dtb(64, 64)), None);
        assert_eq!(
            dtb_problem(&fake_dtb(27386, 4096)).unwrap(),
            "truncated: the header says 27386 bytes, the file has 4096"
        );
        assert!(
            dtb_problem(b"\x7fELF and more bytes than a header has, honestly")
                .unwrap()
                .starts_with("not a device tree (magic 0x7f454c46")
        );
        assert!(dtb_problem(&[0xd0, 0x0d]).unwrap().contains("shorter than"));
        let mut old = fake_dtb(64, 64);
        old[20..24].copy_from_slice(&15u32.to_be_bytes());
        assert!(dtb_problem(&old).unwrap().contains("version 15"));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-firmware-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_firmware_directory_must_hold_every_file() {
        let dir = temp_dir("partial");
        std::fs::write(dir.join(START4), b"start").unwrap();
        std::fs::write(dir.join("copyright"), b"licence").unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("lacks {FIXUP4}, {DTB} (missing or empty)")),
            "{err}"
        );
        assert!(err.contains("--firmware DIR"), "{err}");
        std::fs::write(dir.join(FIXUP4), b"fixup").unwrap();
        std::fs::write(dir.join(DTB), fake_dtb(4096, 100)).unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("truncated: the header says 4096 bytes"),
            "{err}"
        );
        std::fs::write(dir.join(DTB), fake_dtb(100, 100)).unwrap();
        let fw = load_dir(&dir).unwrap();
        assert_eq!(fw.licence, b"licence");
        assert_eq!(fw.start4, b"start");
        let gone = dir.join("nowhere");
        assert!(
            load_dir(&gone)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_kernel_package_is_read_from_apt_cache_depends() {
        let out = "linux-image-arm64\n  Depends: linux-image-6.1.0-50-arm64\n";
        assert_eq!(
            kernel_package_from_depends(out).as_deref(),
            Some("linux-image-6.1.0-50-arm64")
        );
        let signed = "linux-image-arm64\n  Depends: <linux-image-6.12.9-arm64>\n  Recommends: x\n";
        assert_eq!(
            kernel_package_from_depends(signed).as_deref(),
            None,
            "a virtual package in <> is not a downloadable kernel"
        );
        assert_eq!(kernel_package_from_depends("nothing"), None);
    }

    #[test]
    fn sources_and_codename() {
        assert_eq!(
            sources_list("http://mirror.example/debian", "bookworm"),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://mirror.example/debian bookworm main non-free-firmware\n"
        );
        assert_eq!(
            codename("ID=debian\nVERSION_CODENAME=bookworm\n").as_deref(),
            Some("bookworm")
        );
        assert_eq!(codename("ID=arch\n"), None);
    }
}
