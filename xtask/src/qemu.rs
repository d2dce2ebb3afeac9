//! The QEMU command line for each board (one function, shared by `qemu`, `test`, `bench` and
//! `gdb`), and `cargo xtask qemu`, which boots an image interactively.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use crate::args::{QemuArgs, Script};
use crate::board::{Board, Machine, Variant};
use crate::error::{Context, Error, Result};
use crate::workspace::Workspace;
use crate::{firmware, image, tools};

/// The fixed start date of the emulated real-time clock, so runs are reproducible.
const RTC_BASE: &str = "2025-01-01T00:00:00";

/// QEMU's deterministic-time setting: one virtual nanosecond per instruction, no sleeping.
const ICOUNT: &str = "shift=0,align=off,sleep=off";

/// What the rpi4 board needs on its command line to leave QEMU with a status.
pub const RPI4_SEMIHOSTING: &str = "exit=semihosting";

/// The TCP port QEMU's gdb stub listens on with `-s`.
pub const GDB_PORT: u16 = 1234;

/// One QEMU invocation.
#[derive(Debug, Clone, Copy)]
pub struct QemuRun<'a> {
    /// The emulated machine.
    pub machine: Machine,
    /// The kernel to boot (ELF for virt, the raw `kernel8.img` for rpi4).
    pub kernel: &'a Path,
    /// The device tree to pass with `-dtb` (rpi4 only: QEMU makes none for raspi4b; without
    /// one the board uses its built-in defaults).
    pub dtb: Option<&'a Path>,
    /// Deterministic virtual time (`-icount`).
    pub icount: bool,
    /// Start halted with a gdb stub (`-s -S`).
    pub gdb: bool,
    /// Run with a gdb stub (`-s`), for `cargo xtask kvm --live`.
    pub gdbstub: bool,
    /// The kernel command line (`-append`), if any.
    pub append: Option<&'a str>,
    /// Guest RAM (`-m`), default 1G.
    pub memory: Option<&'a str>,
    /// A disk image attached as a virtio-blk device (virt only).
    pub disk: Option<&'a Path>,
}

impl<'a> QemuRun<'a> {
    /// A plain run of `kernel` on `machine`: no icount, no gdb, no command line.
    pub fn new(machine: Machine, kernel: &'a Path) -> Self {
        Self {
            machine,
            kernel,
            dtb: None,
            icount: false,
            gdb: false,
            gdbstub: false,
            append: None,
            memory: None,
            disk: None,
        }
    }

    /// The arguments after `qemu-system-aarch64`.
    pub fn args(&self) -> Vec<OsString> {
        let m = self.machine;
        let mut args: Vec<OsString> = match m.board {
            Board::Virt => [
                "-M".to_owned(),
                format!("virt,gic-version={},dtb-randomness=off", m.gic),
                "-cpu".to_owned(),
                "cortex-a72".to_owned(),
                "-smp".to_owned(),
                m.smp.to_string(),
                "-m".to_owned(),
                self.memory.unwrap_or("1G").to_owned(),
                "-nographic".to_owned(),
                "-no-reboot".to_owned(),
                "-semihosting-config".to_owned(),
                "enable=on,target=native".to_owned(),
                "-rtc".to_owned(),
                format!("base={RTC_BASE},clock=vm"),
            ]
            .into_iter()
            .map(OsString::from)
            .collect(),
            // raspi4b: 4 cores, 2 GiB, the GIC-400; its PL011 (UART0) is the first serial port.
            Board::Rpi4 => [
                "-M",
                "raspi4b",
                "-nographic",
                "-no-reboot",
                "-semihosting-config",
                "enable=on,target=native",
            ]
            .into_iter()
            .map(OsString::from)
            .collect(),
        };
        if m.gic_security {
            // The BCM2711's GIC-400: Security Extensions and five priority bits (GIC-400 TRM).
            // Booting the kernel directly, QEMU then resets every interrupt into group 1 as the
            // firmware's armstub does, and the kernel runs non-secure.
            args.extend(
                [
                    "-global",
                    "arm_gic.has-security-extensions=on",
                    "-global",
                    "arm_gic.num-priority-bits=5",
                ]
                .map(OsString::from),
            );
        }
        args.push("-kernel".into());
        args.push(self.kernel.into());
        if let Some(dtb) = self.dtb {
            args.extend(["-dtb".into(), dtb.into()]);
        }
        if let (Board::Virt, Some(disk)) = (m.board, self.disk) {
            args.extend(crate::disk::qemu_args(disk).into_iter().map(OsString::from));
        }
        if self.icount {
            args.extend(["-icount".into(), ICOUNT.into()]);
        }
        if self.gdb {
            args.extend(["-s".into(), "-S".into()]);
        } else if self.gdbstub {
            args.push("-s".into());
        }
        let append = match (self.machine.board, self.append) {
            // The Pi board leaves through semihosting only when told to: on real hardware the
            // `hlt` would trap. QEMU puts this in /chosen/bootargs, or in the ATAGs without -dtb.
            (Board::Rpi4, Some(extra)) => Some(format!("{RPI4_SEMIHOSTING} {extra}")),
            (Board::Rpi4, None) => Some(RPI4_SEMIHOSTING.to_owned()),
            (Board::Virt, extra) => extra.map(str::to_owned),
        };
        if let Some(append) = append {
            args.extend(["-append".into(), append.into()]);
        }
        args
    }

    /// The full command, ready to spawn.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(tools::QEMU);
        cmd.args(self.args());
        cmd
    }

    /// The command as a shell-like string, for progress messages.
    pub fn display(&self) -> String {
        std::iter::once(tools::QEMU.to_owned())
            .chain(self.args().iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `cargo xtask qemu`: builds the default (or ktest) image and boots it with the terminal
/// attached; exits with QEMU's status.
pub fn run(ws: &Workspace, args: &QemuArgs) -> Result<ExitCode> {
    tools::ensure_qemu(tools::install_allowed_here(args.no_install))?;
    let variant = if args.test {
        Variant::Ktest
    } else {
        Variant::Default
    };
    let kernel = image::boot_image(ws, args.machine.board, variant, args.profile)?;
    let dtb = rpi4_dtb(ws, args.machine.board, args.dtb.as_deref())?;
    let disk = match (&args.disk, args.machine.board) {
        (Some(path), Board::Virt) => {
            std::fs::metadata(path).with_context(|| format!("--disk {}", path.display()))?;
            Some(path.clone())
        }
        (Some(_), _) => return Err(Error::new("--disk is for --board virt only")),
        (None, Board::Virt) => Some(crate::disk::scratch(ws, "qemu-default")?),
        (None, _) => None,
    };
    let run = QemuRun {
        disk: disk.as_deref(),
        icount: args.icount,
        gdb: args.gdb,
        gdbstub: args.gdbstub,
        append: args.append.as_deref(),
        dtb: dtb.as_deref(),
        ..QemuRun::new(args.machine, &kernel)
    };
    eprintln!("xtask: {}", run.display());
    if args.gdb {
        eprintln!(
            "xtask: QEMU waits for a debugger: gdb-multiarch {} -ex 'target remote :{GDB_PORT}'",
            kernel.display()
        );
    }
    if args.gdbstub {
        eprintln!(
            "xtask: gdbstub on :{GDB_PORT}; read the guest with: cargo xtask kvm --live --kernel {} pcpu",
            kernel.display()
        );
    }
    // A raw image's ELF (for the symbols) sits beside it.
    let elf = kernel.with_extension("elf");
    if let Some(script) = &args.script {
        let lines = match script {
            Script::Commands(text) => crate::console::script_lines(text, true),
            Script::File(path) => crate::console::script_lines(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading the script {}", path.display()))?,
                false,
            ),
        };
        let log = ws.log_path(&format!(
            "{}-script",
            args.machine.log_stem(Variant::Default)
        ));
        return run_script(&run, &lines, &log, &elf);
    }
    eprintln!("xtask: quit QEMU with Ctrl-A x");
    let status = crate::console::relay(&mut run.command(), &elf)?;
    Ok(exit_code(status))
}

/// How long a scripted session waits for the first prompt.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long it waits for the prompt after each command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long it waits for QEMU to exit after the last command.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands after which no prompt comes back.
const FINAL_COMMANDS: &[&str] = &["poweroff", "reboot", "panic"];

/// Boots `run`, types each of `lines` at the monitor's prompt as soon as it appears (the
/// console shown as it goes, logged to `log`), then `poweroff` unless the script ended the
/// machine itself; QEMU's exit status, or an error naming the line that got no prompt back.
fn run_script(run: &QemuRun, lines: &[String], log: &Path, elf: &Path) -> Result<ExitCode> {
    let mut session = crate::console::Session::start(&mut run.command(), log, elf, true)?;
    session.wait_prompts(1, BOOT_TIMEOUT)?;
    let mut ended = false;
    for line in lines {
        let word = line.split_whitespace().next().unwrap_or("");
        if FINAL_COMMANDS.contains(&word) {
            session.send(format!("{line}\r").as_bytes())?;
            ended = true;
            break;
        }
        session.run(line, COMMAND_TIMEOUT)?;
    }
    if !ended {
        session.send(b"poweroff\r")?;
    }
    match session.finish(EXIT_TIMEOUT)? {
        Some(status) => {
            println!();
            eprintln!("xtask: script done; QEMU {}", crate::proc::describe(status));
            Ok(exit_code(status))
        }
        None => Err(Error::new(format!(
            "QEMU did not exit within {} s after the script (log: {})",
            EXIT_TIMEOUT.as_secs(),
            log.display()
        ))),
    }
}

/// The device tree for an rpi4 run: `--dtb FILE` if given (checked first), else the cached
/// Debian one if `cargo xtask sdcard` fetched it, else none (the board's built-in defaults).
/// Other boards take none.
pub fn rpi4_dtb(ws: &Workspace, board: Board, explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if board != Board::Rpi4 {
        if explicit.is_some() {
            return Err(Error::new(format!(
                "--dtb is for --board rpi4 only (QEMU makes {board}'s device tree itself)"
            )));
        }
        return Ok(None);
    }
    if let Some(path) = explicit {
        firmware::check_dtb_file(path)?;
        eprintln!("xtask: rpi4: device tree {}", path.display());
        return Ok(Some(path.to_owned()));
    }
    match firmware::cached_dtb(ws) {
        Some(path) => {
            eprintln!("xtask: rpi4: cached device tree {}", path.display());
            Ok(Some(path))
        }
        None => {
            eprintln!(
                "xtask: rpi4: no device tree cached, the board uses its built-in defaults \
                 (`cargo xtask sdcard` fetches Debian's bcm2711-rpi-4-b.dtb)"
            );
            Ok(None)
        }
    }
}

/// Passes a child's exit status on as ours (128 + signal number when it was killed).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Gic;

    fn joined(run: &QemuRun) -> String {
        run.args()
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn virt_command_line() {
        let kernel = Path::new("/t/images/virt-ktest-release.elf");
        let run = QemuRun::new(Machine::virt(Gic::V3, 4), kernel);
        assert_eq!(
            joined(&run),
            "-M virt,gic-version=3,dtb-randomness=off -cpu cortex-a72 -smp 4 -m 1G -nographic \
             -no-reboot -semihosting-config enable=on,target=native \
             -rtc base=2025-01-01T00:00:00,clock=vm -kernel /t/images/virt-ktest-release.elf"
        );
    }

    #[test]
    fn icount_gdb_and_append_are_added() {
        let kernel = Path::new("k.elf");
        let run = QemuRun {
            icount: true,
            gdb: true,
            append: Some("ktest.filter=sched"),
            ..QemuRun::new(Machine::virt(Gic::V2, 8), kernel)
        };
        let line = joined(&run);
        assert!(line.starts_with("-M virt,gic-version=2,dtb-randomness=off "));
        assert!(line.contains(" -smp 8 "));
        assert!(line.ends_with(
            "-kernel k.elf -icount shift=0,align=off,sleep=off -s -S -append ktest.filter=sched"
        ));
        assert!(run.display().starts_with("qemu-system-aarch64 -M virt,"));
    }

    #[test]
    fn rpi4_command_line() {
        let kernel = Path::new("/t/images/rpi4-ktest-release.img");
        let run = QemuRun::new(Machine::rpi4(), kernel);
        assert_eq!(
            joined(&run),
            "-M raspi4b -nographic -no-reboot -semihosting-config enable=on,target=native \
             -kernel /t/images/rpi4-ktest-release.img -append exit=semihosting"
        );
        let dtb = Path::new("/c/bcm2711-rpi-4-b.dtb");
        let run = QemuRun {
            dtb: Some(dtb),
            append: Some("ktest.filter=spl"),
            ..run
        };
        assert!(joined(&run).ends_with(
            "-kernel /t/images/rpi4-ktest-release.img -dtb /c/bcm2711-rpi-4-b.dtb \
             -append exit=semihosting ktest.filter=spl"
        ));
    }

    #[test]
    fn rpi4_gic_security_command_line() {
        let kernel = Path::new("k.img");
        let run = QemuRun::new(Machine::rpi4_gic_security(), kernel);
        assert_eq!(
            joined(&run),
            "-M raspi4b -nographic -no-reboot -semihosting-config enable=on,target=native \
             -global arm_gic.has-security-extensions=on -global arm_gic.num-priority-bits=5 \
             -kernel k.img -append exit=semihosting"
        );
    }

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        // Killed by SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }
}
