//! Detection and installation of the host tools xtask drives: the Rust target and
//! `llvm-tools` (added through rustup when missing), and `qemu-system-aarch64` (>= 9.0),
//! mtools and `gdb-multiarch`, each installed with apt-get on Debian and Ubuntu when the
//! command that needs it finds it missing or too old (unless `--no-install` or
//! `XTASK_NO_INSTALL=1`). What to install is decided from text (`--version` output,
//! `/etc/os-release`, the apt sources), so the decisions are host-tested without running apt.

use std::fmt;
use std::io::{ErrorKind, IsTerminal, Write};
use std::process::{Command, ExitCode, Stdio};

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

/// The environment variable that, set to anything but empty or `0`, turns automatic installs
/// off as `--no-install` does.
pub const NO_INSTALL_ENV: &str = "XTASK_NO_INSTALL";

/// Whether xtask may install a missing tool: not with `--no-install`, nor with
/// [`NO_INSTALL_ENV`] set to anything but empty or `0`.
pub fn install_allowed(no_install_flag: bool, env: Option<&str>) -> bool {
    !no_install_flag && env.is_none_or(|v| v.is_empty() || v == "0")
}

/// The same, reading [`NO_INSTALL_ENV`] from the environment.
pub fn install_allowed_here(no_install_flag: bool) -> bool {
    let env = std::env::var(NO_INSTALL_ENV).ok();
    install_allowed(no_install_flag, env.as_deref())
}

/// A host tool xtask can check for and install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-aarch64` >= [`MIN_QEMU`] (Debian package `qemu-system-arm`).
    Qemu,
    /// GNU mtools (`mdir`, `mcopy`): the second reader of the SD card image in `test`.
    Mtools,
    /// `gdb-multiarch`, for `cargo xtask gdb`.
    Gdb,
}

impl Tool {
    /// Every tool, in the order `doctor` lists them.
    pub const ALL: [Tool; 3] = [Tool::Qemu, Tool::Mtools, Tool::Gdb];

    /// The program that is run to find the tool and its version.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Qemu => QEMU,
            Tool::Mtools => "mdir",
            Tool::Gdb => GDB,
        }
    }

    /// The argument that makes [`Tool::program`] print its version.
    fn version_flag(self) -> &'static str {
        match self {
            Tool::Mtools => "-V",
            Tool::Qemu | Tool::Gdb => "--version",
        }
    }

    /// The Debian and Ubuntu package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-arm",
            Tool::Mtools => "mtools",
            Tool::Gdb => "gdb-multiarch",
        }
    }

    /// Which commands need it, for messages and `doctor`.
    pub fn needed_by(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu, test, bench, gdb and dump",
            Tool::Mtools => "test (the SD card image's second reader; skipped without)",
            Tool::Gdb => "gdb",
        }
    }
}

/// What was found of a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Not on `PATH` (or could not be run).
    Missing,
    /// Present, but older than required.
    TooOld(QemuVersion),
    /// Present and new enough; the first line of its version output.
    Present(String),
    /// Present, but its version could not be read (the output's first line).
    Unreadable(String),
}

impl Found {
    /// Whether the tool can be used as it is.
    pub fn usable(&self) -> bool {
        matches!(self, Found::Present(_))
    }
}

/// Judges a tool from its version output (`None`: the program could not be run).
pub fn judge(tool: Tool, version_output: Option<&str>) -> Found {
    let Some(output) = version_output else {
        return Found::Missing;
    };
    let first = output.lines().next().unwrap_or("").trim().to_owned();
    match tool {
        Tool::Qemu => match parse_qemu_version(output) {
            Some(v) if v >= MIN_QEMU => Found::Present(v.to_string()),
            Some(v) => Found::TooOld(v),
            None => Found::Unreadable(first),
        },
        Tool::Mtools | Tool::Gdb => Found::Present(first),
    }
}

/// Runs the tool's version command and judges what it printed.
pub fn detect(tool: Tool) -> Found {
    let out = Command::new(tool.program())
        .arg(tool.version_flag())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(out) => judge(tool, Some(&String::from_utf8_lossy(&out.stdout))),
        Err(_) => judge(tool, None),
    }
}

/// What is wrong with a tool, in words: `qemu-system-aarch64 was not found`.
pub fn describe(tool: Tool, found: &Found) -> String {
    let program = tool.program();
    match found {
        Found::Missing => format!("{program} was not found"),
        Found::TooOld(v) => format!("{program} is version {v}, older than {MIN_QEMU}"),
        Found::Unreadable(line) => format!("could not read the version of {program} from `{line}`"),
        Found::Present(v) => format!("{program} is present ({v})"),
    }
}

/// The facts about this machine that decide how (and whether) a tool can be installed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// `/etc/os-release`, if readable.
    pub os_release: Option<String>,
    /// `/etc/apt/sources.list.d/debian.sources`, if readable (for the mirror's address).
    pub debian_sources: Option<String>,
    /// Whether some apt source already names `bookworm-backports`.
    pub has_backports: bool,
    /// Running as root.
    pub root: bool,
    /// `sudo` is installed.
    pub sudo: bool,
    /// `sudo -n true` works (no password needed).
    pub sudo_without_password: bool,
    /// Standard input is a terminal (so sudo can ask for a password).
    pub interactive: bool,
}

/// Where the bookworm-backports source is written.
pub const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

impl Host {
    /// Reads the facts from this machine.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut has_backports = ["/etc/apt/sources.list"]
            .iter()
            .filter_map(|p| read(p))
            .any(|t| t.contains("bookworm-backports"));
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            for entry in dir.flatten() {
                if std::fs::read_to_string(entry.path())
                    .is_ok_and(|t| t.contains("bookworm-backports"))
                {
                    has_backports = true;
                }
            }
        }
        let quiet = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let sudo = quiet("sudo", &["--version"]).is_ok();
        Self {
            os_release: read("/etc/os-release"),
            debian_sources: read(DEBIAN_SOURCES),
            has_backports,
            root: Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
            sudo,
            sudo_without_password: sudo
                && quiet("sudo", &["-n", "true"]).is_ok_and(|s| s.success()),
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// A field of `/etc/os-release` (`ID`, `VERSION_CODENAME`, ...), unquoted.
    pub fn os_field(&self, name: &str) -> Option<String> {
        self.os_release.as_deref()?.lines().find_map(|l| {
            let value = l.trim().strip_prefix(name)?.strip_prefix('=')?;
            Some(value.trim_matches('"').to_owned())
        })
    }

    /// The system's name for messages (`PRETTY_NAME`).
    pub fn name(&self) -> String {
        self.os_field("PRETTY_NAME")
            .unwrap_or_else(|| "this system".to_owned())
    }

    /// Whether this is Debian or Ubuntu (or a system that says it is like them): apt-get and
    /// the Debian package names.
    fn apt_based(&self) -> bool {
        let like = |v: Option<String>| {
            v.is_some_and(|v| v.split_whitespace().any(|w| w == "debian" || w == "ubuntu"))
        };
        like(self.os_field("ID")) || like(self.os_field("ID_LIKE"))
    }
}

/// One command of an install, as printed and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Text fed to its standard input (a file written with `tee`).
    pub stdin: Option<String>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv.join(" "))?;
        if let Some(text) = &self.stdin {
            write!(f, " >/dev/null <<'EOF'\n{text}EOF")?;
        }
        Ok(())
    }
}

/// The install commands for `tool` on `host`, or why there are none (the message says what to
/// do instead).
pub fn plan_install(tool: Tool, host: &Host) -> std::result::Result<Vec<Step>, String> {
    let name = host.name();
    if !host.apt_based() {
        return Err(format!(
            "{name} is not Debian or Ubuntu, so xtask cannot install {} itself: install {} with \
             the system's package manager (Fedora: `dnf install {}`; Arch: `pacman -S {}`; \
             macOS: `brew install {}`){}",
            tool.program(),
            tool.program(),
            fedora_package(tool),
            arch_package(tool),
            brew_package(tool),
            if tool == Tool::Qemu {
                format!(", version {}.{} or later", MIN_QEMU.major, MIN_QEMU.minor)
            } else {
                String::new()
            }
        ));
    }
    let codename = host.os_field("VERSION_CODENAME").unwrap_or_default();
    let ubuntu = host.os_field("ID").as_deref() == Some("ubuntu");
    if tool == Tool::Qemu && ubuntu {
        let version = host.os_field("VERSION_ID").unwrap_or_default();
        if ubuntu_release_before(&version, 24, 10) {
            return Err(format!(
                "{name} packages a QEMU older than {}.{} (Ubuntu 24.10 is the first with 9.0): \
                 use Ubuntu 24.10 or later, or build QEMU {}.{} or later from source",
                MIN_QEMU.major, MIN_QEMU.minor, MIN_QEMU.major, MIN_QEMU.minor
            ));
        }
    }
    let sudo: Vec<String> = if host.root {
        Vec::new()
    } else if !host.sudo {
        return Err(format!(
            "installing {} needs root, and this user is not root and sudo is not installed: run \
             as root `apt-get install {}`{}",
            tool.package(),
            tool.package(),
            if tool == Tool::Qemu && codename == "bookworm" {
                " from bookworm-backports (see docs/fresh-debian.md)"
            } else {
                ""
            }
        ));
    } else if host.interactive {
        vec!["sudo".into()]
    } else if host.sudo_without_password {
        vec!["sudo".into(), "-n".into()]
    } else {
        return Err(format!(
            "installing {} needs root: this run is not interactive and sudo wants a password; \
             run `sudo apt-get install {}` once by hand, or run this command in a terminal",
            tool.package(),
            tool.package()
        ));
    };
    let cmd = |args: &[&str]| Step {
        argv: sudo
            .iter()
            .cloned()
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect(),
        stdin: None,
    };
    let mut steps = Vec::new();
    let backports = tool == Tool::Qemu && codename == "bookworm";
    if backports && !host.has_backports {
        let uri = host
            .debian_sources
            .as_deref()
            .and_then(debian_uri)
            .unwrap_or_else(|| DEFAULT_DEBIAN_URI.to_owned());
        steps.push(Step {
            stdin: Some(format!(
                "Types: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )),
            ..cmd(&["tee", BACKPORTS_SOURCES])
        });
    }
    steps.push(cmd(&["apt-get", "update", "-q"]));
    let mut install = vec![
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
    ];
    if backports {
        install.extend(["-t", "bookworm-backports"]);
    }
    install.push(tool.package());
    steps.push(cmd(&install));
    Ok(steps)
}

/// Whether an Ubuntu `VERSION_ID` (`24.04`) is older than `major.minor`; unreadable versions
/// count as new (apt then installs what it has and the version is checked afterwards).
fn ubuntu_release_before(version_id: &str, major: u32, minor: u32) -> bool {
    let mut parts = version_id.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) < (major, minor),
        _ => false,
    }
}

fn fedora_package(tool: Tool) -> &'static str {
    match tool {
        Tool::Qemu => "qemu-system-aarch64",
        Tool::Mtools => "mtools",
        Tool::Gdb => "gdb",
    }
}

fn arch_package(tool: Tool) -> &'static str {
    match tool {
        Tool::Qemu => "qemu-system-aarch64",
        Tool::Mtools => "mtools",
        Tool::Gdb => "gdb",
    }
}

fn brew_package(tool: Tool) -> &'static str {
    match tool {
        Tool::Qemu => "qemu",
        Tool::Mtools => "mtools",
        Tool::Gdb => "gdb",
    }
}

/// Makes sure `tool` is usable: returns what was found when it is; otherwise installs it when
/// `allowed` (printing each command on stderr) and checks again. The error says what is
/// missing and what to do.
pub fn ensure(tool: Tool, allowed: bool) -> Result<String> {
    let found = detect(tool);
    if let Found::Present(v) = found {
        return Ok(v);
    }
    let what = describe(tool, &found);
    let host = Host::probe();
    let plan = plan_install(tool, &host);
    if !allowed {
        let how = match &plan {
            Ok(steps) => format!(
                "these commands would install it:\n\n{}",
                steps
                    .iter()
                    .map(|s| format!("    {s}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(why) => why.clone(),
        };
        return Err(Error::new(format!(
            "{what} (needed by cargo xtask {}); installing is turned off (--no-install or \
             {NO_INSTALL_ENV}); {how}",
            tool.needed_by()
        )));
    }
    let steps = plan.map_err(|why| Error::new(format!("{what}; {why}")))?;
    eprintln!("xtask: {what}; installing {}:", tool.package());
    for step in &steps {
        run_step(step)?;
    }
    match detect(tool) {
        Found::Present(v) => {
            eprintln!("xtask: {} installed ({v})", tool.program());
            Ok(v)
        }
        other => Err(Error::new(format!(
            "after installing {}: {}",
            tool.package(),
            describe(tool, &other)
        ))),
    }
}

/// Prints and runs one install step; its output goes to stderr.
fn run_step(step: &Step) -> Result<()> {
    eprintln!("xtask: $ {step}");
    let (program, args) = step
        .argv
        .split_first()
        .ok_or_else(|| Error::new("an empty install step"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if step.stdin.is_some() {
            Stdio::null()
        } else {
            proc::stdout_to_stderr()?
        })
        .spawn()
        .map_err(|e| Error::new(format!("running `{}`: {e}", step.argv.join(" "))))?;
    if let (Some(text), Some(mut stdin)) = (&step.stdin, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::new(format!("writing to `{}`: {e}", step.argv.join(" "))))?;
    }
    let status = child
        .wait()
        .map_err(|e| Error::new(format!("waiting for `{}`: {e}", step.argv.join(" "))))?;
    if !status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({})",
            step.argv.join(" "),
            proc::describe(status)
        )));
    }
    Ok(())
}

/// `qemu-system-aarch64` >= [`MIN_QEMU`], installed when missing and `allowed`.
pub fn ensure_qemu(allowed: bool) -> Result<QemuVersion> {
    let v = ensure(Tool::Qemu, allowed)?;
    parse_qemu_version(&format!("QEMU emulator version {v}"))
        .ok_or_else(|| Error::new(format!("unreadable QEMU version `{v}`")))
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

/// `cargo xtask doctor`: what is present, missing or too old, and how each missing tool gets
/// installed. Exits 1 when something every run needs (the Rust target, QEMU) is missing.
pub fn doctor(ws: &Workspace) -> Result<ExitCode> {
    let host = Host::probe();
    println!("system:  {}", host.name());
    let who = if host.root {
        "root: xtask installs missing tools with apt-get".to_owned()
    } else if host.sudo {
        "not root: xtask installs missing tools through sudo".to_owned()
    } else {
        "not root and no sudo: missing tools must be installed by root".to_owned()
    };
    println!("user:    {who}");
    let allowed = install_allowed_here(false);
    if !allowed {
        println!("install: turned off ({NO_INSTALL_ENV} is set)");
    }
    println!();
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut needed_missing = false;
    match rustup_plan(ws) {
        Ok(None) => rows.push([
            "rustup".into(),
            "missing".into(),
            "-".into(),
            "the kernel target and llvm-tools are not checked".into(),
        ]),
        Ok(Some(plan)) => {
            for (what, step) in [
                (KERNEL_TARGET, RustupStep::AddTarget(KERNEL_TARGET)),
                (LLVM_TOOLS, RustupStep::AddComponent(LLVM_TOOLS)),
            ] {
                let missing = plan.contains(&step);
                rows.push([
                    what.into(),
                    if missing { "missing" } else { "ok" }.into(),
                    "-".into(),
                    if missing {
                        format!("every build adds it: rustup {}", step.args().join(" "))
                    } else {
                        "every build".into()
                    },
                ]);
            }
        }
        Err(e) => rows.push(["rustup".into(), "error".into(), "-".into(), e.to_string()]),
    }
    for tool in Tool::ALL {
        let found = detect(tool);
        let (status, version) = match &found {
            Found::Present(v) => ("ok", v.clone()),
            Found::Missing => ("missing", "-".to_owned()),
            Found::TooOld(v) => ("too old", v.to_string()),
            Found::Unreadable(line) => ("unreadable", line.clone()),
        };
        let mut used = tool.needed_by().to_owned();
        if !found.usable() {
            needed_missing |= tool == Tool::Qemu;
            used = match plan_install(tool, &host) {
                Ok(steps) => format!(
                    "{used}; installed when needed: {}",
                    steps.last().map(ToString::to_string).unwrap_or_default()
                ),
                Err(why) => format!("{used}; {why}"),
            };
        }
        let name = match tool {
            Tool::Mtools => "mtools (mdir)".to_owned(),
            _ => tool.program().to_owned(),
        };
        rows.push([name, status.into(), version, used]);
    }
    print!(
        "{}",
        crate::table::render(&["tool", "status", "version", "needed by"], &rows)
    );
    Ok(if needed_missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What rustup would add (`None` without rustup).
fn rustup_plan(ws: &Workspace) -> Result<Option<Vec<RustupStep>>> {
    let rustup = |args: &[&str]| -> Result<Option<String>> {
        match Command::new("rustup")
            .args(args)
            .current_dir(&ws.root)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::new(format!(
                "running `rustup {}`: {e}",
                args.join(" ")
            ))),
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        }
    };
    let Some(targets) = rustup(&["target", "list", "--installed"])? else {
        return Ok(None);
    };
    let components = rustup(&["component", "list", "--installed"])?.unwrap_or_default();
    Ok(Some(plan_rustup(&targets, &components)))
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

    fn host(os_release: &str) -> Host {
        Host {
            os_release: Some(os_release.to_owned()),
            debian_sources: Some(SOURCES.to_owned()),
            root: true,
            ..Host::default()
        }
    }

    const BOOKWORM: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n\
                            VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";
    const TRIXIE: &str = "ID=debian\nVERSION_CODENAME=trixie\n";
    const NOBLE: &str = "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nID=ubuntu\nID_LIKE=debian\n\
                         VERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n";
    const PLUCKY: &str = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"25.04\"\n";

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn detection_missing_too_old_new_enough() {
        assert_eq!(judge(Tool::Qemu, None), Found::Missing);
        assert_eq!(
            judge(
                Tool::Qemu,
                Some("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)\n")
            ),
            Found::TooOld(QemuVersion {
                major: 7,
                minor: 2,
                patch: 15
            })
        );
        assert_eq!(
            judge(
                Tool::Qemu,
                Some("QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)")
            ),
            Found::TooOld(QemuVersion {
                major: 8,
                minor: 2,
                patch: 2
            })
        );
        let ok = judge(
            Tool::Qemu,
            Some("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"),
        );
        assert_eq!(ok, Found::Present("10.0.2".into()));
        assert!(ok.usable());
        assert_eq!(
            judge(Tool::Qemu, Some("QEMU emulator version 9.0.0")),
            Found::Present("9.0.0".into())
        );
        assert_eq!(
            judge(Tool::Qemu, Some("qemu says hello\n")),
            Found::Unreadable("qemu says hello".into())
        );
        assert!(!judge(Tool::Qemu, Some("")).usable());
        assert_eq!(
            judge(
                Tool::Mtools,
                Some("mdir (GNU mtools) 4.0.43\nconfiguration...")
            ),
            Found::Present("mdir (GNU mtools) 4.0.43".into())
        );
        assert_eq!(judge(Tool::Gdb, None), Found::Missing);
        assert_eq!(
            describe(
                Tool::Qemu,
                &Found::TooOld(QemuVersion {
                    major: 7,
                    minor: 2,
                    patch: 15
                })
            ),
            "qemu-system-aarch64 is version 7.2.15, older than 9.0.0"
        );
    }

    #[test]
    fn install_is_turned_off_by_the_flag_or_the_environment() {
        assert!(install_allowed(false, None));
        assert!(install_allowed(false, Some("")));
        assert!(install_allowed(false, Some("0")));
        assert!(!install_allowed(true, None));
        assert!(!install_allowed(false, Some("1")));
        assert!(!install_allowed(false, Some("yes")));
    }

    #[test]
    fn bookworm_as_root_adds_backports_with_the_configured_mirror() {
        let steps = plan_install(Tool::Qemu, &host(BOOKWORM)).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'EOF'\n\
                 Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\n\
                 Components: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\nEOF",
                "apt-get update -q",
                "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports \
                 qemu-system-arm",
            ]
        );
        // Already configured: no new source file.
        let configured = Host {
            has_backports: true,
            ..host(BOOKWORM)
        };
        assert_eq!(plan_install(Tool::Qemu, &configured).unwrap().len(), 2);
        // Without debian.sources, the default mirror.
        let bare = Host {
            debian_sources: None,
            ..host(BOOKWORM)
        };
        let text = lines(&plan_install(Tool::Qemu, &bare).unwrap()).join("\n");
        assert!(
            text.contains("URIs: http://deb.debian.org/debian\n"),
            "{text}"
        );
    }

    #[test]
    fn backports_only_for_qemu_on_bookworm() {
        assert_eq!(
            lines(&plan_install(Tool::Mtools, &host(BOOKWORM)).unwrap()),
            [
                "apt-get update -q",
                "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mtools"
            ]
        );
        assert_eq!(
            lines(&plan_install(Tool::Qemu, &host(TRIXIE)).unwrap())[1],
            "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-arm"
        );
        assert_eq!(
            lines(&plan_install(Tool::Gdb, &host(PLUCKY)).unwrap())[1],
            "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb-multiarch"
        );
    }

    #[test]
    fn sudo_when_not_root() {
        let interactive = Host {
            root: false,
            sudo: true,
            interactive: true,
            ..host(TRIXIE)
        };
        assert_eq!(
            lines(&plan_install(Tool::Gdb, &interactive).unwrap()),
            [
                "sudo apt-get update -q",
                "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb-multiarch"
            ]
        );
        let batch = Host {
            interactive: false,
            sudo_without_password: true,
            ..interactive.clone()
        };
        assert_eq!(
            lines(&plan_install(Tool::Qemu, &batch).unwrap())[0],
            "sudo -n apt-get update -q"
        );
        let cannot = Host {
            sudo_without_password: false,
            ..batch
        };
        let why = plan_install(Tool::Qemu, &cannot).unwrap_err();
        assert!(
            why.contains("not interactive and sudo wants a password"),
            "{why}"
        );
        let no_sudo = Host {
            root: false,
            ..host(BOOKWORM)
        };
        let why = plan_install(Tool::Qemu, &no_sudo).unwrap_err();
        assert!(why.contains("sudo is not installed"), "{why}");
        assert!(why.contains("bookworm-backports"), "{why}");
    }

    #[test]
    fn other_systems_are_told_what_to_do() {
        let why = plan_install(
            Tool::Qemu,
            &host("PRETTY_NAME=\"Fedora Linux 41\"\nID=fedora\n"),
        )
        .unwrap_err();
        assert!(
            why.starts_with("Fedora Linux 41 is not Debian or Ubuntu"),
            "{why}"
        );
        assert!(why.contains("dnf install qemu-system-aarch64"), "{why}");
        assert!(why.contains("version 9.0 or later"), "{why}");
        let why = plan_install(Tool::Gdb, &Host::default()).unwrap_err();
        assert!(why.starts_with("this system is not Debian"), "{why}");
        // Ubuntu before 24.10 packages QEMU 8.2.
        let why = plan_install(Tool::Qemu, &host(NOBLE)).unwrap_err();
        assert!(
            why.contains("Ubuntu 24.04.1 LTS packages a QEMU older than 9.0"),
            "{why}"
        );
        assert!(plan_install(Tool::Mtools, &host(NOBLE)).is_ok());
        assert!(plan_install(Tool::Qemu, &host(PLUCKY)).is_ok());
        // Debian derivatives count as Debian.
        assert!(
            plan_install(
                Tool::Gdb,
                &host("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n")
            )
            .is_ok()
        );
    }

    #[test]
    fn debian_uri_skips_the_security_stanza() {
        assert_eq!(
            debian_uri(SOURCES).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_uri(
                "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
            ),
            None
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
