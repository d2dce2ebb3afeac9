//! A QEMU guest that xtask keeps running while it inspects it ([`Session`]: QMP and gdbstub on
//! free local ports, console lines as they come, QEMU killed on every way out), and
//! `cargo xtask dump`, which boots a kernel, waits for a console line and has QEMU write an
//! ELF core of the guest's memory through QMP.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::qmp::Qmp;
use crate::board::{Machine, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::qemu::QemuRun;
use crate::workspace::Workspace;
use crate::{image, tools};

/// How long QEMU gets to open its QMP socket.
const STARTUP: Duration = Duration::from_secs(10);

/// How many times a start is retried when QEMU could not bind its ports (another process took
/// one between our probe and QEMU's bind).
const START_TRIES: usize = 3;

/// A free TCP port on 127.0.0.1 (free when probed).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// A running QEMU with QMP and a gdbstub on local ports.
#[derive(Debug)]
pub struct Session {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    log: std::io::BufWriter<File>,
    /// The gdbstub's `host:port`.
    pub gdb_addr: String,
    /// The QMP connection.
    pub qmp: Qmp,
}

impl Session {
    /// Starts `run` with QMP and a gdbstub added, logging the console to `log`.
    pub fn start(run: &QemuRun, log: &Path) -> Result<Self> {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            match Self::try_start(run, log)? {
                Ok(session) => return Ok(session),
                Err(why) => last = why,
            }
        }
        Err(Error::new(format!(
            "QEMU did not start after {START_TRIES} tries: {last}"
        )))
    }

    fn try_start(run: &QemuRun, log: &Path) -> Result<std::result::Result<Self, String>> {
        let (qmp_port, gdb_port) = (free_port()?, free_port()?);
        let qmp_addr = format!("127.0.0.1:{qmp_port}");
        let gdb_addr = format!("127.0.0.1:{gdb_port}");
        let mut cmd = run.command();
        cmd.args(["-qmp", &format!("tcp:{qmp_addr},server=on,wait=off")])
            .args(["-gdb", &format!("tcp:{gdb_addr}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!(
            "xtask: {} -qmp tcp:{qmp_addr},server=on,wait=off -gdb tcp:{gdb_addr}",
            run.display()
        );
        Workspace::create_parent(log)?;
        let log =
            std::io::BufWriter::new(File::create(log).with_context(|| log.display().to_string())?);
        let mut child = cmd.spawn().context("starting QEMU")?;
        let (tx, lines) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                        break;
                    }
                }
            });
        }
        let start = Instant::now();
        let qmp = loop {
            match Qmp::connect(&qmp_addr, super::IO_TIMEOUT) {
                Ok(qmp) => break qmp,
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let said: Vec<String> = lines.try_iter().collect();
                        return Ok(Err(format!(
                            "QEMU exited with {} ({})",
                            crate::proc::describe(status),
                            said.join(" / ")
                        )));
                    }
                    if start.elapsed() > STARTUP {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Ok(Err(e));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        };
        Ok(Ok(Self {
            child,
            lines,
            seen: Vec::new(),
            log,
            gdb_addr,
            qmp,
        }))
    }

    /// Waits until a console line satisfies `done` (returning it), QEMU exits, or `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, done: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let _ = writeln!(self.log, "{line}");
                    self.seen.push(line.clone());
                    if done(&line) {
                        let _ = self.log.flush();
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::new(format!(
                        "no such console line within {} s",
                        timeout.as_secs()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().context("waiting for QEMU")?;
                    return Err(Error::new(format!(
                        "QEMU exited ({}) before the expected console line",
                        crate::proc::describe(status)
                    )));
                }
            }
        }
    }

    /// Every console line so far.
    pub fn lines(&self) -> &[String] {
        &self.seen
    }

    /// Stops the guest and writes an ELF core of its memory to `path`.
    pub fn dump(&mut self, path: &Path) -> Result<()> {
        Workspace::create_parent(path)?;
        let _ = std::fs::remove_file(path);
        self.qmp.stop().map_err(Error::new)?;
        self.qmp.dump(path).map_err(Error::new)
    }

    /// Asks QEMU to quit and waits for it (kills it if it does not go).
    pub fn quit(mut self) {
        let _ = self.qmp.quit();
        self.reap();
    }

    fn reap(&mut self) {
        let _ = self.log.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Whatever happened, QEMU does not outlive us.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Flags of `cargo xtask dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpArgs {
    /// Machine to boot.
    pub machine: Machine,
    /// Build profile.
    pub profile: Profile,
    /// Boot the ktest image.
    pub test: bool,
    /// Extra kernel command line.
    pub append: Option<String>,
    /// The console line (a prefix of it) after which to dump; default per image.
    pub wait_for: Option<String>,
    /// Let the kernel crash (`crash=panic` unless `--append` says `crash=...`), hold it after
    /// the panic (`panic.hold=1`) and dump it then.
    pub on_panic: bool,
    /// Where to write the core (default `target/dumps/dump.core`).
    pub out: Option<PathBuf>,
    /// Time limit for the boot.
    pub timeout: Duration,
    /// `--no-install`: never install a missing QEMU.
    pub no_install: bool,
}

/// The console line after which `cargo xtask dump` takes its core.
pub fn wait_text(args: &DumpArgs) -> String {
    if let Some(text) = &args.wait_for {
        return text.clone();
    }
    if args.on_panic {
        return crate::kvm::dump::HELD_LINE.to_owned();
    }
    let selftest = args
        .append
        .as_deref()
        .is_some_and(|a| a.split_whitespace().any(|w| w == "kvm.selftest=1"));
    if selftest {
        "kvm-selftest ready".to_owned()
    } else if args.test {
        "ktest: running".to_owned()
    } else {
        kernel::monitor::BANNER.to_owned()
    }
}

/// What the kernel prints when `panic.hold=1` keeps a crashed machine for a dump.
pub const HELD_LINE: &str = "held for a crash dump";

/// The kernel command line of a dump run.
pub fn command_line(args: &DumpArgs) -> Option<String> {
    let mut words: Vec<String> = args
        .append
        .as_deref()
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if args.on_panic {
        if !words.iter().any(|w| w.starts_with("crash=")) {
            words.push("crash=panic".into());
        }
        words.push("panic.hold=1".into());
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// `cargo xtask dump`.
pub fn run(ws: &Workspace, args: &DumpArgs) -> Result<ExitCode> {
    tools::ensure_qemu(tools::install_allowed_here(args.no_install))?;
    let variant = if args.test {
        Variant::Ktest
    } else {
        Variant::Default
    };
    let kernel = image::build(ws, args.machine.board, variant, args.profile)?;
    let (default_core, _) = super::default_dump(ws);
    let core = args.out.clone().unwrap_or(default_core);
    let append = command_line(args);
    let run = QemuRun {
        append: append.as_deref(),
        ..QemuRun::new(args.machine, &kernel)
    };
    let log = ws.log_path("dump");
    let mut session = Session::start(&run, &log)?;
    let text = wait_text(args);
    let seen = session
        .wait_for(args.timeout, |line| line.contains(&text))
        .with_context(|| format!("waiting for {text:?} (log: {})", log.display()))?;
    eprintln!("xtask: the kernel said {seen:?}; dumping");
    let started = Instant::now();
    session.dump(&core)?;
    session.quit();
    let elf = core.with_extension("elf");
    std::fs::copy(&kernel, &elf)
        .with_context(|| format!("copying {} to {}", kernel.display(), elf.display()))?;
    eprintln!(
        "xtask: core written in {:.1} s; read it with: cargo xtask kvm --core {} pcpu",
        started.elapsed().as_secs_f64(),
        core.display()
    );
    println!("{}", core.display());
    println!("{}", elf.display());
    Ok(ExitCode::SUCCESS)
}
