//! Where things are: the workspace root, the `cargo` to run, and the directories under `target/`
//! that xtask writes (kernel images and QEMU logs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::{Board, KERNEL_TARGET, Profile, Variant};
use crate::error::{Context, Result};

/// The cargo workspace xtask belongs to.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root (the directory holding the top-level `Cargo.toml`).
    pub root: PathBuf,
    /// The cargo executable: `$CARGO` if set (as it is under `cargo run`), else `cargo`.
    pub cargo: OsString,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Finds the workspace from this crate's manifest directory (its parent).
    pub fn locate() -> Self {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(manifest_dir);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir().unwrap_or_default().join(dir)
                }
            }
            _ => root.join("target"),
        };
        Self {
            root,
            cargo,
            target_dir,
        }
    }

    /// A `cargo` command that runs in the workspace root.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root);
        cmd
    }

    /// Where cargo leaves the board binary for a profile.
    pub fn built_binary(&self, board: Board, profile: Profile) -> PathBuf {
        self.target_dir
            .join(KERNEL_TARGET)
            .join(profile.dir_name())
            .join(board.package())
    }

    /// The stable copy of a built image: `target/images/<board>-<variant>-<profile>.elf`.
    pub fn image_path(&self, board: Board, variant: Variant, profile: Profile) -> PathBuf {
        self.target_dir
            .join("images")
            .join(format!("{board}-{variant}-{}.elf", profile.dir_name()))
    }

    /// The log file for one QEMU run: `target/logs/<stem>.log`.
    pub fn log_path(&self, stem: &str) -> PathBuf {
        self.target_dir.join("logs").join(format!("{stem}.log"))
    }

    /// Creates the parent directory of `path` if needed.
    pub fn create_parent(path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Workspace {
        Workspace {
            root: PathBuf::from("/ws"),
            cargo: "cargo".into(),
            target_dir: PathBuf::from("/ws/target"),
        }
    }

    #[test]
    fn paths_follow_the_conventions() {
        let ws = fake();
        assert_eq!(
            ws.built_binary(Board::Virt, Profile::Release),
            Path::new("/ws/target/aarch64-unknown-none-softfloat/release/qemu-virt")
        );
        assert_eq!(
            ws.image_path(Board::Virt, Variant::Ktest, Profile::Release),
            Path::new("/ws/target/images/virt-ktest-release.elf")
        );
        assert_eq!(
            ws.image_path(Board::Virt, Variant::Default, Profile::Debug),
            Path::new("/ws/target/images/virt-default-debug.elf")
        );
        assert_eq!(
            ws.log_path("virt-gic3-smp4-ktest"),
            Path::new("/ws/target/logs/virt-gic3-smp4-ktest.log")
        );
    }

    #[test]
    fn locate_finds_this_workspace() {
        let ws = Workspace::locate();
        assert!(ws.root.join("Cargo.toml").is_file());
        assert!(ws.root.join("xtask").join("Cargo.toml").is_file());
    }
}
