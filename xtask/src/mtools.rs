//! A second, independent reader for the SD card image: GNU mtools (`mdir`, `mcopy`; Debian
//! package `mtools`), which shares no code with the `fatfs` crate that wrote the image. Used by
//! `cargo xtask test`, which installs mtools when it is missing (see `tools::Tool::Mtools`).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::sdcard::{BootFile, PARTITION_START, SECTOR};

/// mtools' name for the partition inside `image`: `IMAGE@@OFFSET`.
fn drive(image: &Path) -> String {
    format!("{}@@{}", image.display(), PARTITION_START as usize * SECTOR)
}

fn mtool(program: &str, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        // Do not insist on DOS disk geometry in the boot sector.
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Lists the root directory of the image's partition with `mdir` and reads every file with
/// `mcopy`, comparing with `files`; the root must hold exactly those files.
pub fn verify(image: &Path, files: &[BootFile]) -> Result<()> {
    let drive = drive(image);
    let listing = mtool("mdir", &["-b", "-i", &drive, "::"])?;
    let mut names: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .map(|l| l.trim().trim_start_matches("::/").to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.name.to_owned()).collect();
    expected.sort();
    if names != expected {
        return Err(Error::new(format!(
            "mdir lists {names:?}, expected {expected:?}"
        )));
    }
    for file in files {
        let bytes = mtool(
            "mcopy",
            &["-n", "-i", &drive, &format!("::{}", file.name), "-"],
        )?;
        if bytes != file.bytes {
            return Err(Error::new(format!(
                "mcopy reads {} as {} bytes that differ from the {} written",
                file.name,
                bytes.len(),
                file.bytes.len()
            )));
        }
    }
    Ok(())
}
