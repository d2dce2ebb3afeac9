//! Detection of the host tools xtask drives: the Rust target and `llvm-tools` (added through
//! rustup when missing), `qemu-system-aarch64` (>= 9.0, never installed from here) and
//! `gdb-multiarch`.

use std::fmt;
use std::io::ErrorKind;
use std::process::{Command, Stdio};

use crate::board::KERNEL_TARGET;
use crate::error::{Error, Result};
use crate::proc;
use crate::workspace::Workspace;

/// The QEMU executable for every AArch64 board.
pub const QEMU: &str = "qemu-system-aarch64";

/// The debugger used by `cargo xtask gdb`.
pub const GDB: &str = "gdb-multiarch";

/// The oldest QEMU release xtask accepts.
pub const MIN_QEMU: QemuVersion = QemuVersion {
    major: 9,
    minor: 0,
    patch: 0,
};

/// The rustup component that must be installed (any line starting with it counts).
const LLVM_TOOLS: &str = "llvm-tools";

/// Where Debian keeps its main deb822 source list.
pub const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// The Debian mirror to use when [`DEBIAN_SOURCES`] names none.
pub const DEFAULT_DEBIAN_URI: &str = "http://deb.debian.org/debian";

/// A rustup command needed before the kernel can be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RustupStep {
    /// `rustup target add <target>`.
    AddTarget(&'static str),
    /// `rustup component add <component>`.
    AddComponent(&'static str),
}

impl RustupStep {
    /// The rustup arguments for this step.
    pub fn args(&self) -> [&'static str; 3] {
        match self {
            RustupStep::AddTarget(t) => ["target", "add", t],
            RustupStep::AddComponent(c) => ["component", "add", c],
        }
    }
}

/// Decides what to install from the output of `rustup target list --installed` and
/// `rustup component list --installed`.
pub fn plan_rustup(installed_targets: &str, installed_components: &str) -> Vec<RustupStep> {
    let mut steps = Vec::new();
    if !installed_targets.lines().any(|l| l.trim() == KERNEL_TARGET) {
        steps.push(RustupStep::AddTarget(KERNEL_TARGET));
    }
    if !installed_components
        .lines()
        .any(|l| l.trim_start().starts_with(LLVM_TOOLS))
    {
        steps.push(RustupStep::AddComponent(LLVM_TOOLS));
    }
    steps
}

/// Makes sure the workspace toolchain has the kernel target and `llvm-tools`, running rustup
/// (in the workspace, so `rust-toolchain.toml` applies) when it does not. Without rustup this
/// prints a note and carries on.
pub fn ensure_rust_toolchain(ws: &Workspace) -> Result<()> {
    let rustup = |args: &[&str]| -> Result<Option<String>> {
        let out = Command::new("rustup")
            .args(args)
            .current_dir(&ws.root)
            .stdin(Stdio::null())
            .output();
        match out {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::new(format!(
                "running `rustup {}`: {e}",
                args.join(" ")
            ))),
            Ok(out) if !out.status.success() => Err(Error::new(format!(
                "`rustup {}` failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))),
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        }
    };
    let Some(targets) = rustup(&["target", "list", "--installed"])? else {
        eprintln!(
            "xtask: rustup not found; assuming the toolchain has {KERNEL_TARGET} and {LLVM_TOOLS}"
        );
        return Ok(());
    };
    let components = rustup(&["component", "list", "--installed"])?.unwrap_or_default();
    for step in plan_rustup(&targets, &components) {
        let args = step.args();
        eprintln!("xtask: rustup {}", args.join(" "));
        let status = Command::new("rustup")
            .args(args)
            .current_dir(&ws.root)
            .stdin(Stdio::null())
            .stdout(proc::stdout_to_stderr()?)
            .status()
            .map_err(|e| Error::new(format!("running `rustup {}`: {e}", args.join(" "))))?;
        if !status.success() {
            return Err(Error::new(format!(
                "`rustup {}` failed ({status})",
                args.join(" ")
            )));
        }
    }
    Ok(())
}

/// A QEMU release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level (0 when absent).
    pub patch: u32,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Reads the version from the first line of `qemu-system-aarch64 --version`, e.g.
/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`.
pub fn parse_qemu_version(output: &str) -> Option<QemuVersion> {
    let first = output.lines().next()?;
    let rest = first.trim().strip_prefix("QEMU emulator version ")?;
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.');
    let mut next = |required: bool| -> Option<u32> {
        match parts.next() {
            Some(p) => {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            }
            None if required => None,
            None => Some(0),
        }
    };
    Some(QemuVersion {
        major: next(true)?,
        minor: next(true)?,
        patch: next(false)?,
    })
}

/// Checks that `qemu-system-aarch64` exists and is at least [`MIN_QEMU`]; otherwise the error
/// says how to install a recent one.
pub fn check_qemu() -> Result<QemuVersion> {
    let found = match Command::new(QEMU)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Err(e) if e.kind() == ErrorKind::NotFound => format!("{QEMU} was not found"),
        Err(e) => format!("{QEMU} could not be run: {e}"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            match parse_qemu_version(&text) {
                Some(v) if v >= MIN_QEMU => return Ok(v),
                Some(v) => format!("{QEMU} is version {v}, older than {MIN_QEMU}"),
                None => format!(
                    "could not read the version of {QEMU} from `{}`",
                    text.lines().next().unwrap_or("").trim()
                ),
            }
        }
    };
    let os_release = std::fs::read_to_string("/etc/os-release").ok();
    let sources = std::fs::read_to_string(DEBIAN_SOURCES).ok();
    Err(Error::new(format!(
        "{found}.\n{}",
        install_hint(os_release.as_deref(), sources.as_deref())
    )))
}

/// How to install QEMU >= 9.0: on Debian bookworm from bookworm-backports (using the mirror
/// already configured in `debian.sources`), elsewhere a generic sentence.
pub fn install_hint(os_release: Option<&str>, debian_sources: Option<&str>) -> String {
    let is_bookworm = os_release.is_some_and(|text| {
        text.lines()
            .any(|l| l.trim() == "VERSION_CODENAME=bookworm")
    });
    if !is_bookworm {
        return format!(
            "Install QEMU >= {}.{} ({QEMU}).",
            MIN_QEMU.major, MIN_QEMU.minor
        );
    }
    let uri = debian_sources
        .and_then(debian_uri)
        .unwrap_or_else(|| DEFAULT_DEBIAN_URI.to_owned());
    format!(
        "On Debian bookworm, install QEMU >= {}.{} from bookworm-backports (as root):\n\
         \n\
         cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'\n\
         Types: deb\n\
         URIs: {uri}\n\
         Suites: bookworm-backports\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
         EOF\n\
         apt-get update\n\
         apt-get install -y -t bookworm-backports qemu-system-arm",
        MIN_QEMU.major, MIN_QEMU.minor
    )
}

/// The `URIs:` of the first deb822 stanza in `debian.sources` whose suites include `bookworm`
/// itself (not `bookworm-security`, which lives on another host).
pub fn debian_uri(sources: &str) -> Option<String> {
    for stanza in sources.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let main_suite =
            field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s == "bookworm"));
        if main_suite && let Some(uri) = field("URIs").and_then(|u| u.split_whitespace().next()) {
            return Some(uri.to_owned());
        }
    }
    None
}

/// Checks that `gdb-multiarch` can be run.
pub fn check_gdb() -> Result<()> {
    match Command::new(GDB)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(format!(
            "{GDB} was not found; install it with `apt-get install gdb-multiarch`"
        ))),
        Err(e) => Err(Error::new(format!("{GDB} could not be run: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version_from_debian_backports() {
        let out = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                   Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
        let v = parse_qemu_version(out).unwrap();
        assert_eq!(
            v,
            QemuVersion {
                major: 10,
                minor: 0,
                patch: 2
            }
        );
        assert!(v >= MIN_QEMU);
    }

    #[test]
    fn qemu_version_variants() {
        let old = parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)")
            .unwrap();
        assert_eq!(old.to_string(), "7.2.15");
        assert!(old < MIN_QEMU);
        let two = parse_qemu_version("QEMU emulator version 9.0\n").unwrap();
        assert_eq!(two.to_string(), "9.0.0");
        assert!(two >= MIN_QEMU);
        let rc = parse_qemu_version("QEMU emulator version 9.1.50-rc0").unwrap();
        assert_eq!(rc.to_string(), "9.1.50");
        assert!(
            parse_qemu_version("QEMU emulator version 8.2.2").unwrap()
                < parse_qemu_version("QEMU emulator version 8.10.0").unwrap()
        );
    }

    #[test]
    fn qemu_version_garbage() {
        assert_eq!(parse_qemu_version(""), None);
        assert_eq!(parse_qemu_version("qemu-img version 9.0.0"), None);
        assert_eq!(parse_qemu_version("QEMU emulator version x.y"), None);
        // The version must be on the first line.
        assert_eq!(parse_qemu_version("\nQEMU emulator version 9.0.0"), None);
    }

    const SOURCES: &str = "Types: deb\n\
        # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://mirror.example/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb\n\
        URIs: http://deb.debian.org/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n";

    #[test]
    fn bookworm_hint_uses_the_configured_mirror() {
        let hint = install_hint(
            Some("ID=debian\nVERSION_CODENAME=bookworm\n"),
            Some(SOURCES),
        );
        assert!(
            hint.contains("URIs: http://mirror.example/debian\n"),
            "{hint}"
        );
        assert!(hint.contains("Suites: bookworm-backports\n"));
        assert!(hint.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"));
        assert!(hint.contains("/etc/apt/sources.list.d/"));
        assert!(hint.contains("apt-get update\n"));
        assert!(hint.ends_with("apt-get install -y -t bookworm-backports qemu-system-arm"));
    }

    #[test]
    fn bookworm_hint_without_sources_uses_deb_debian_org() {
        let hint = install_hint(Some("VERSION_CODENAME=bookworm"), None);
        assert!(hint.contains("URIs: http://deb.debian.org/debian\n"));
    }

    #[test]
    fn other_systems_get_a_generic_hint() {
        assert_eq!(
            install_hint(Some("ID=fedora\n"), None),
            "Install QEMU >= 9.0 (qemu-system-aarch64)."
        );
        assert_eq!(
            install_hint(None, Some(SOURCES)),
            "Install QEMU >= 9.0 (qemu-system-aarch64)."
        );
    }

    #[test]
    fn rustup_plan() {
        let targets = "aarch64-unknown-none-softfloat\nx86_64-unknown-linux-gnu\n";
        let components = "cargo-x86_64-unknown-linux-gnu\nllvm-tools-x86_64-unknown-linux-gnu\n";
        assert_eq!(plan_rustup(targets, components), vec![]);
        assert_eq!(
            plan_rustup(
                "x86_64-unknown-linux-gnu\naarch64-unknown-none\n",
                "rustc-x86_64\n"
            ),
            vec![
                RustupStep::AddTarget("aarch64-unknown-none-softfloat"),
                RustupStep::AddComponent("llvm-tools"),
            ]
        );
        assert_eq!(
            RustupStep::AddTarget(KERNEL_TARGET).args(),
            ["target", "add", "aarch64-unknown-none-softfloat"]
        );
        // The older component name also counts.
        assert_eq!(
            plan_rustup(targets, "llvm-tools-preview-x86_64-unknown-linux-gnu"),
            vec![]
        );
    }
}
