//! `cargo xtask test`: the host unit tests (`cargo test` on the host crates), then the in-kernel
//! test image on every QEMU configuration of [`TEST_MATRIX`], one after the other. Ends with a
//! line `<passed> passed, <failed> failed` (and `, <skipped> skipped` when any were) that adds
//! up everything.
//!
//! After the matrix, the fatal-path checks ([`CRASH_CHECKS`]), the pre-MMU check of each
//! board's image (`premmu.rs`: no exclusive reachable before the MMU is on), the damaged device
//! trees (`badtree`: QEMU's tree with one fault, booted with `-dtb`), the monitor sessions
//! (`monitor`: the default image's `kdb> ` driven through the console) and the kvm end-to-end
//! check (`kvm::selftest`: a core and a live read of a 4-CPU guest compared with the kernel's
//! own report, bad input, and a fuzz pass on the real artifacts) each add their tests; so do
//! the torture checks (`torture::checks`: one seed replayed gives the same log, and each
//! planted bug is caught), also with `--filter torture`.
//!
//! The kernel prints one line per test and then a summary line that is exactly
//! `N passed, N failed` (optionally followed by `, N skipped`); the last such line counts. QEMU's
//! exit status must be 0 when all tests passed.

use std::fmt;
use std::ops::AddAssign;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::args::TestArgs;
use crate::board::{Board, Gic, Machine, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::proc::{self, Ending};
use crate::qemu::QemuRun;
use crate::workspace::Workspace;
use crate::{firmware, image, mtools, progress, sdcard, tools};

/// The QEMU configurations the in-kernel tests run on, in this order.
pub const TEST_MATRIX: &[Machine] = &[
    Machine::virt(Gic::V3, 4),
    Machine::virt(Gic::V2, 4),
    Machine::virt(Gic::V3, 1),
    Machine::virt(Gic::V3, 8),
    // One more CPU than the kernel's MAXCPUS (64): the extra one must be reported and left
    // offline while the rest pass the tests of [`WIDE_FILTER`].
    Machine::virt(Gic::V3, 65),
    // QEMU raspi4b without a device tree: the board's built-in defaults (see [`rpi4_extras`]
    // for the runs with Debian's device tree and from the SD card image).
    Machine::rpi4(),
    // The GIC-400 as on the board: Security Extensions, five priority bits, the kernel in the
    // non-secure view with every interrupt in group 1 (QEMU's default GIC-400 has neither).
    Machine::rpi4_gic_security(),
];

/// Machines with more CPUs than this run only the tests [`WIDE_FILTER`] selects: 64 TCG vCPUs
/// on a 2-core CI host take about a second of host time per second of guest time each, so the
/// whole suite there would take most of an hour.
pub const WIDE_SMP: u32 = 8;

/// The tests a machine above [`WIDE_SMP`] CPUs runs (a `ktest.filter` list): those whose
/// subject is the CPU count itself — attaching and numbering CPUs, DPCPU copies, IPIs,
/// per-CPU softints, cross calls to every CPU, and the kvm reader's walk of every CPU.
pub const WIDE_FILTER: &str = "cpu::,percpu::,ipi::,softint::,xcall::,kvm::";

/// The `ktest.filter` a machine of the test matrix runs with: the user's `--filter` if given,
/// else [`WIDE_FILTER`] above [`WIDE_SMP`] CPUs, else none (every test).
pub fn matrix_filter(machine: &Machine, user: Option<&str>) -> Option<String> {
    match user {
        Some(f) => Some(f.to_string()),
        None if machine.smp > WIDE_SMP => Some(WIDE_FILTER.to_string()),
        None => None,
    }
}

/// One fatal-path check: the test image crashes on purpose (`crash=KIND` on the kernel command
/// line) and must print lines containing each of `expected` and leave QEMU with status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashCheck {
    /// Where it runs.
    pub machine: Machine,
    /// The `crash=` value.
    pub kind: &'static str,
    /// Fragments that must each appear in some output line.
    pub expected: &'static [&'static str],
}

/// Fatal-path checks, one test each. `data-abort` and `panic` crash after boot and must also
/// halt the other CPUs. `early-panic` and `early-fault` crash before the MMU is on, in a test
/// image whose entry code leaves garbage in TPIDR_EL1 as hardware may (`board-common`'s
/// `entry.rs`): the early paths (`kernel/src/early.rs`) must still print, and on the Pi the
/// board's first line must come before anything else.
pub const CRASH_CHECKS: &[CrashCheck] = &[
    CrashCheck {
        machine: Machine::virt(Gic::V3, 4),
        kind: "data-abort",
        expected: &[
            "FAULT on cpu0: data abort: translation fault, level 1, on read",
            "FAR 0x0000001000000000",
            "backtrace:",
            "other CPUs halted: 3 of 3",
        ],
    },
    CrashCheck {
        machine: Machine::virt(Gic::V3, 4),
        kind: "panic",
        expected: &[
            "panic on cpu0: crash requested on the command line",
            "backtrace:",
            "other CPUs halted: 3 of 3",
        ],
    },
    CrashCheck {
        machine: Machine::rpi4(),
        kind: "early-panic",
        expected: &[
            "rpi4: kernel8.img started; device tree address x0 = 0x",
            "panic before the MMU is on: crash requested on the command line (crash=early-panic)",
            "backtrace:",
        ],
    },
    CrashCheck {
        machine: Machine::rpi4(),
        kind: "early-fault",
        expected: &[
            "rpi4: kernel8.img started; device tree address x0 = 0x",
            "FAULT before the MMU is on: unknown reason (undefined instruction)",
            "ELR 0x",
            "backtrace:",
        ],
    },
    CrashCheck {
        machine: Machine::virt(Gic::V3, 4),
        kind: "early-panic",
        expected: &[
            "panic before the MMU is on: crash requested on the command line (crash=early-panic)",
            "backtrace:",
        ],
    },
    CrashCheck {
        machine: Machine::virt(Gic::V3, 4),
        kind: "early-fault",
        expected: &[
            "FAULT before the MMU is on: unknown reason (undefined instruction)",
            "ELR 0x",
            "backtrace:",
        ],
    },
];

/// Workspace packages that only build for the kernel target, left out of the host tests.
pub const HOST_TEST_EXCLUDES: &[&str] = &["qemu-virt"];

/// How a kernel output line worth showing without `--verbose` begins (a failed test, a panic
/// that no test caught), or what it contains (the watchdog). Reports of faults that tests
/// provoke on purpose are not among them.
const FAILURE_PREFIXES: &[&str] = &["FAIL", "panic on cpu"];
const FAILURE_MARKERS: &[&str] = &["watchdog"];

/// How many lines of a failed run's log to show without `--verbose`.
const TAIL_LINES: usize = 20;

/// Test counts of one run, or of everything added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (or runs that went wrong).
    pub failed: u64,
    /// Tests that were skipped (reported only when non-zero).
    pub skipped: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// The outcome of one step (host tests or one QEMU configuration) after judging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The counts, with at least one failure if anything went wrong.
    pub counts: Counts,
    /// Why the step failed beyond what the counts say, if it did.
    pub note: Option<String>,
}

/// Prints a step's result line (above the progress bar) and records it for the summary.
pub fn report(label: &str, verdict: &Verdict, elapsed: Option<Duration>) {
    progress::record(label, verdict, elapsed);
    progress::println(&result_line(label, verdict, elapsed));
}

/// How many steps (result lines) a passing run has: the host tests, the matrix, the three rpi4
/// extras, and without a filter the crash checks, the pre-MMU check of each board, the
/// bad-tree boots, the monitor sessions and the kvm self-test's parts. The bar's length; it grows if a run has more.
pub fn planned_steps(filtered: bool) -> u64 {
    let mut steps = 1 + TEST_MATRIX.len() + 3;
    if !filtered {
        steps += CRASH_CHECKS.len()
            + Board::ALL.len()
            + crate::badtree::DAMAGES.len()
            + crate::monitor::MONITOR_MATRIX.len()
            + crate::kvm::selftest::PARTS
            + crate::torture::CHECKS;
    }
    steps as u64
}

/// `cargo xtask test`.
pub fn run(ws: &Workspace, args: &TestArgs) -> Result<ExitCode> {
    let allowed = tools::install_allowed_here(args.no_install);
    tools::ensure_qemu(allowed)?;
    // mtools only reads the SD card image back a second time: without it that check is skipped.
    let mtools = !args.monitor_only
        && match tools::ensure(tools::Tool::Mtools, allowed) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("xtask: {e}; the SD card image's mtools read-back will be skipped");
                false
            }
        };
    let mut total = Counts::default();
    if args.monitor_only {
        progress::begin(crate::monitor::MONITOR_MATRIX.len() as u64, args.verbose);
        total += crate::monitor::run(ws, args.timeout, args.verbose)?;
        return Ok(conclude(total));
    }
    progress::begin(planned_steps(args.filter.is_some()), args.verbose);

    let started = Instant::now();
    let host = host_tests(ws, args.verbose)?;
    report("host", &host, Some(started.elapsed()));
    total += host.counts;

    let append = args.filter.as_ref().map(|f| format!("ktest.filter={f}"));
    let mut images: Vec<(Board, Option<PathBuf>)> = Vec::new();
    for machine in TEST_MATRIX {
        let board = machine.board;
        let kernel = match images.iter().find(|(b, _)| *b == board) {
            Some((_, kernel)) => kernel.clone(),
            None => {
                progress::status(&format!("building the {board} test image"));
                let kernel = match image::boot_image(ws, board, Variant::Ktest, Profile::Release) {
                    Ok(kernel) => Some(kernel),
                    Err(e) => {
                        let verdict = Verdict {
                            counts: Counts {
                                failed: 1,
                                ..Counts::default()
                            },
                            note: Some(e.to_string()),
                        };
                        report(&format!("{board} ktest build"), &verdict, None);
                        total += verdict.counts;
                        None
                    }
                };
                images.push((board, kernel.clone()));
                kernel
            }
        };
        let Some(kernel) = kernel else { continue };
        let filter =
            matrix_filter(machine, args.filter.as_deref()).map(|f| format!("ktest.filter={f}"));
        // The virtio-blk tests write to the disk: every configuration starts from a fresh one.
        let disk = match board {
            Board::Virt => Some(crate::disk::scratch(ws, "ktest")?),
            _ => None,
        };
        let run = QemuRun {
            append: filter.as_deref(),
            disk: disk.as_deref(),
            ..QemuRun::new(*machine, &kernel)
        };
        let label = machine.label();
        let verdict = run_config(ws, &run, &label, &machine.log_stem(Variant::Ktest), args)?;
        total += verdict.counts;
    }

    if let Some((_, Some(kernel))) = images.iter().find(|(b, _)| *b == Board::Rpi4) {
        total += rpi4_extras(ws, kernel, append.as_deref(), args, mtools)?;
    }

    if args.filter.is_none() {
        for check in CRASH_CHECKS {
            let board = check.machine.board;
            if let Some((_, Some(kernel))) = images.iter().find(|(b, _)| *b == board) {
                total += crash_check(ws, kernel, check, args)?.counts;
            }
        }
    }

    if args.filter.is_none() {
        for (board, kernel) in &images {
            if let Some(kernel) = kernel {
                total += premmu_check(*board, kernel, args.verbose).counts;
            }
        }
    }

    if args.filter.is_none()
        && let Some((_, Some(kernel))) = images.iter().find(|(b, _)| *b == Board::Virt)
    {
        total += crate::badtree::run(ws, kernel, args.timeout, args.verbose)?;
        total += crate::monitor::run(ws, args.timeout, args.verbose)?;
        let verdict = crate::kvm::selftest::run(ws, kernel, args.timeout, args.verbose)?;
        total += verdict.counts;
    }

    // The torture checks: replay and planted bugs (with `--filter torture` too).
    if args.filter.as_deref().is_none_or(|f| f.contains("torture"))
        && let Some((_, Some(kernel))) = images.iter().find(|(b, _)| *b == Board::Virt)
    {
        total += crate::torture::checks(ws, kernel, args.timeout, args.verbose)?;
    }

    Ok(conclude(total))
}

/// Ends a run: the summary table, then `N passed, N failed` (with `, N skipped` when
/// something was skipped) alone on the last line, which CI reads; failure if anything failed.
fn conclude(total: Counts) -> ExitCode {
    let rows = progress::finish();
    println!();
    print!("{}", progress::summary_table(&rows));
    println!("{total}");
    if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `cargo test` on the host crates, showing its output only on failure (or `--verbose`).
fn host_tests(ws: &Workspace, verbose: bool) -> Result<Verdict> {
    progress::running("host unit tests");
    let mut cmd = ws.cargo();
    cmd.args(["test", "--workspace"]);
    for package in HOST_TEST_EXCLUDES {
        cmd.args(["--exclude", package]);
    }
    // The output of passing tests too, for the fuzzers' seeds.
    cmd.args(["--", "--show-output"]);
    progress::eprintln(&format!(
        "xtask: host unit tests: cargo test --workspace --exclude {}",
        HOST_TEST_EXCLUDES.join(" --exclude ")
    ));
    // Under the progress bar cargo's `Compiling`/`Running` lines (stderr) would tear it: they
    // are kept and shown only when something failed.
    let bar = progress::bar_active();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if bar {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .output()
        .context("running cargo test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if bar && !out.status.success() {
        progress::eprintln(String::from_utf8_lossy(&out.stderr).trim_end());
    }
    for line in stdout.lines().filter(|l| is_fuzz_summary(l)) {
        progress::eprintln(&format!("xtask: {line}"));
    }
    let verdict = judge_host(out.status, sum_cargo_results(&stdout));
    if verbose || verdict.counts.failed > 0 {
        progress::eprintln(stdout.trim_end());
    }
    Ok(verdict)
}

/// Whether a host test's output line is a fuzzer's summary (`dtb fuzz: seed 0x...: ...`), which
/// `cargo xtask test` shows so that every run's seed is on record.
pub fn is_fuzz_summary(line: &str) -> bool {
    line.split_once(" fuzz: seed 0x")
        .is_some_and(|(what, _)| !what.contains(' '))
}

/// Runs the ktest image on one machine and prints its result line (`label`), logging to
/// `target/logs/<log_stem>.log`.
fn run_config(
    ws: &Workspace,
    run: &QemuRun,
    label: &str,
    log_stem: &str,
    args: &TestArgs,
) -> Result<Verdict> {
    let log = ws.log_path(log_stem);
    progress::running(label);
    progress::eprintln(&format!("xtask: {label}: {}", run.display()));
    let verbose = args.verbose;
    let captured = proc::run_captured(&mut run.command(), &log, args.timeout, |line| {
        if verbose {
            println!("{line}");
        } else if is_failure_line(line) {
            progress::println(&format!("[{label}] {line}"));
        }
    })?;
    let summary = last_summary(&captured.lines);
    let verdict = judge_kernel(summary, captured.ending, args.timeout);
    if verdict.counts.failed > 0 && !verbose {
        let skip = captured.lines.len().saturating_sub(TAIL_LINES);
        progress::println(&format!("[{label}] last lines of {}:", log.display()));
        // Backtrace addresses get function names from the ELF that ran (a raw image's ELF
        // sits beside it).
        let symbols = crate::symbolize::Symbols::load(&run.kernel.with_extension("elf"));
        for line in &captured.lines[skip..] {
            let line = match &symbols {
                Some(s) => s.annotate(line),
                None => line.clone(),
            };
            progress::println(&format!("[{label}]   {line}"));
        }
    }
    report(label, &verdict, Some(captured.elapsed));
    Ok(verdict)
}

/// The tests the rpi4 runs beyond the matrix's run (a `ktest.filter` list): those whose subject
/// is what a different device tree or boot medium could change (CPUs, DPCPU, the clock, the
/// memory map and heap, interrupts and IPIs); the same image ran everything in the matrix.
pub const BOOT_PATH_FILTER: &str = "cpu::,percpu::,clock::,mmu::,heap::,ipi::,spl::";

/// The rpi4 runs beyond the matrix's no-device-tree one (each the [`BOOT_PATH_FILTER`] tests,
/// or the user's `--filter`):
///
/// - `rpi4 gic2 smp4 dtb`: the test image with Debian's `bcm2711-rpi-4-b.dtb` (which QEMU
///   patches, leaving NOP tokens) when `cargo xtask sdcard` has cached it; skipped otherwise,
///   so that the test needs no 60 MB download.
/// - `rpi4 sdcard image`: the SD card image with the test kernel, built twice (the bytes must
///   be equal) and read back (partition table, FAT32, every file; kernel8.img's arm64 Image
///   header and config.txt's settings); the firmware is the cached one, or placeholder files
///   when there is none. With mtools installed, `mdir`/`mcopy` read it back too (skipped
///   otherwise).
/// - `rpi4 sdcard boot`: the kernel8.img read back from that image, booted on raspi4b (with
///   the image's device tree when it is the real one).
fn rpi4_extras(
    ws: &Workspace,
    kernel: &Path,
    append: Option<&str>,
    args: &TestArgs,
    mtools: bool,
) -> Result<Counts> {
    let mut total = Counts::default();
    let boot_path = format!("ktest.filter={BOOT_PATH_FILTER}");
    let append = Some(append.unwrap_or(&boot_path));
    let machine = Machine::rpi4();
    let label = format!("{} dtb", machine.label());
    match firmware::cached_dtb(ws) {
        Some(dtb) => {
            let run = QemuRun {
                append,
                dtb: Some(&dtb),
                ..QemuRun::new(machine, kernel)
            };
            let stem = format!("{}-dtb", machine.log_stem(Variant::Ktest));
            total += run_config(ws, &run, &label, &stem, args)?.counts;
        }
        None => {
            progress::running(&label);
            let verdict = Verdict {
                counts: Counts {
                    skipped: 1,
                    ..Counts::default()
                },
                note: Some(format!(
                    "no cached {} (`cargo xtask sdcard` fetches it)",
                    firmware::DTB
                )),
            };
            report(&label, &verdict, None);
            total += verdict.counts;
        }
    }

    progress::running("rpi4 sdcard image");
    let (verdict, booted) = sdcard_image_checks(ws, kernel, mtools);
    report("rpi4 sdcard image", &verdict, None);
    total += verdict.counts;
    if let Some((kernel8, dtb)) = booted {
        let run = QemuRun {
            append,
            dtb: dtb.as_deref(),
            ..QemuRun::new(machine, &kernel8)
        };
        let stem = format!("{}-sdcard", machine.log_stem(Variant::Ktest));
        total += run_config(ws, &run, "rpi4 sdcard boot", &stem, args)?.counts;
    }
    Ok(total)
}

/// Builds and checks the test SD card image (see [`rpi4_extras`]); returns the verdict and,
/// when the image read back, the paths of its kernel8.img and (real firmware only) its DTB.
fn sdcard_image_checks(
    ws: &Workspace,
    kernel: &Path,
    mtools: bool,
) -> (Verdict, Option<(PathBuf, Option<PathBuf>)>) {
    let mut counts = Counts::default();
    let mut notes = Vec::new();
    let mut check = |ok: Result<()>, counts: &mut Counts| match ok {
        Ok(()) => counts.passed += 1,
        Err(e) => {
            counts.failed += 1;
            notes.push(e.to_string());
        }
    };
    let cached = firmware::load_dir(&firmware::cache_dir(ws)).ok();
    let real = cached.is_some();
    let firmware = cached.unwrap_or_else(placeholder_firmware);
    let built = std::fs::read(kernel)
        .with_context(|| format!("reading {}", kernel.display()))
        .and_then(|kernel8| {
            let files = sdcard::boot_files(kernel8, firmware, false);
            let first = sdcard::build_image(&files)?;
            Ok((files, first))
        });
    let mut booted = None;
    match built {
        Err(e) => check(Err(e), &mut counts),
        Ok((files, image)) => {
            let again = sdcard::build_image(&files);
            check(
                again.and_then(|second| {
                    if second == image {
                        Ok(())
                    } else {
                        Err(Error::new("two builds of the SD card image differ"))
                    }
                }),
                &mut counts,
            );
            let path = ws.target_dir.join("rpi4").join("sdcard-ktest.img");
            let written = Workspace::create_parent(&path).and_then(|()| {
                std::fs::write(&path, &image).with_context(|| format!("writing {}", path.display()))
            });
            check(written, &mut counts);
            check(sdcard::verify_image(&image, &files), &mut counts);
            // What the firmware will read: kernel8.img's arm64 Image header and every line of
            // config.txt, from the FAT partition as read back.
            let back = sdcard::read_image(&image);
            let read_back = |name: &str| -> Result<Vec<u8>> {
                let back = back.as_ref().map_err(|e| Error::new(e.to_string()))?;
                back.files
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| Error::new(format!("{name} missing from the image")))
            };
            check(
                read_back(sdcard::KERNEL).and_then(|k| sdcard::check_kernel_header(&k)),
                &mut counts,
            );
            check(
                read_back(sdcard::CONFIG)
                    .and_then(|c| sdcard::check_config(&String::from_utf8_lossy(&c), false)),
                &mut counts,
            );
            if mtools {
                check(mtools::verify(&path, &files), &mut counts);
            } else {
                counts.skipped += 1;
                notes.push("mtools not installed: its read-back skipped".to_owned());
            }
            booted = extract_boot_files(ws, &image, real).ok();
        }
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (Verdict { counts, note }, booted)
}

/// Stand-ins for the firmware when none is cached: the image checks need files, not real ones.
fn placeholder_firmware() -> firmware::Firmware {
    firmware::Firmware {
        start4: b"placeholder start4.elf: run `cargo xtask sdcard` for the real one\n".repeat(100),
        fixup4: b"placeholder fixup4.dat\n".to_vec(),
        dtb: b"placeholder, not a device tree\n".to_vec(),
        licence: b"placeholder licence\n".to_vec(),
    }
}

/// Reads kernel8.img (and, with real firmware, the DTB) back out of `image` into
/// `target/images/` for booting.
fn extract_boot_files(
    ws: &Workspace,
    image: &[u8],
    real_dtb: bool,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let back = sdcard::read_image(image)?;
    let find = |name: &str| {
        back.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| Error::new(format!("{name} missing from the image")))
    };
    let kernel8 = ws.target_dir.join("images").join("rpi4-sdcard-kernel8.img");
    Workspace::create_parent(&kernel8)?;
    std::fs::write(&kernel8, find(sdcard::KERNEL)?)
        .with_context(|| format!("writing {}", kernel8.display()))?;
    let dtb = if real_dtb {
        let path = ws.target_dir.join("images").join("rpi4-sdcard.dtb");
        std::fs::write(&path, find(firmware::DTB)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    Ok((kernel8, dtb))
}

/// Boots `kernel` with `crash=KIND` as `check` says, and judges the fatal path.
fn crash_check(
    ws: &Workspace,
    kernel: &Path,
    check: &CrashCheck,
    args: &TestArgs,
) -> Result<Verdict> {
    let append = format!("crash={}", check.kind);
    let machine = check.machine;
    let run = QemuRun {
        append: Some(&append),
        ..QemuRun::new(machine, kernel)
    };
    let label = format!("{} crash={}", machine.label(), check.kind);
    let log = ws.log_path(&format!(
        "{}-crash-{}",
        machine.log_stem(Variant::Ktest),
        check.kind
    ));
    progress::running(&label);
    progress::eprintln(&format!("xtask: {label}: {}", run.display()));
    let verbose = args.verbose;
    let captured = proc::run_captured(&mut run.command(), &log, args.timeout, |line| {
        if verbose {
            println!("{line}");
        }
    })?;
    let verdict = judge_crash(
        &captured.lines,
        captured.ending,
        check.expected,
        args.timeout,
    );
    report(&label, &verdict, Some(captured.elapsed));
    Ok(verdict)
}

/// The pre-MMU check (`premmu.rs`) of `board`'s test image (`kernel`, or the ELF beside it):
/// one test, failed with the functions and instructions named when any exclusive is reachable
/// before the MMU is on, or when the check cannot run. `verbose` lists the functions reached.
fn premmu_check(board: Board, kernel: &Path, verbose: bool) -> Verdict {
    let elf = kernel.with_extension("elf");
    let label = format!("{board} pre-MMU code");
    progress::running(&label);
    let (counts, note) = match crate::premmu::check_file(&elf) {
        Ok(report) if report.violations.is_empty() => {
            progress::eprintln(&format!(
                "xtask: {label}: {} functions, {} instructions reachable before the MMU is on; \
                 no exclusives",
                report.functions.len(),
                report.instructions
            ));
            if verbose {
                for name in &report.functions {
                    println!("  {name}");
                }
            }
            (1, None)
        }
        Ok(report) => (
            0,
            Some(format!(
                "exclusives before the MMU is on: {}",
                crate::premmu::describe(&report.violations)
            )),
        ),
        Err(e) => (0, Some(e.to_string())),
    };
    let verdict = Verdict {
        counts: Counts {
            passed: counts,
            failed: 1 - counts,
            skipped: 0,
        },
        note,
    };
    report(&label, &verdict, None);
    verdict
}

/// Judges a deliberate crash: QEMU must exit with status 1 and every expected line fragment
/// must appear in the output.
pub fn judge_crash<S: AsRef<str>>(
    lines: &[S],
    ending: Ending,
    expected: &[&str],
    timeout: Duration,
) -> Verdict {
    let missing = expected
        .iter()
        .find(|e| !lines.iter().any(|l| l.as_ref().contains(*e)));
    let note = match (ending, missing) {
        (Ending::TimedOut, _) => Some(format!("timeout after {} s", timeout.as_secs())),
        (Ending::Exited(status), _) if status.code() != Some(1) => Some(format!(
            "QEMU exited with {}, expected status 1",
            proc::describe(status)
        )),
        (_, Some(line)) => Some(format!("no output line contains {line:?}")),
        _ => None,
    };
    let failed = u64::from(note.is_some());
    Verdict {
        counts: Counts {
            passed: 1 - failed,
            failed,
            skipped: 0,
        },
        note,
    }
}

/// Whether a kernel output line looks like a failure worth echoing without `--verbose`.
pub fn is_failure_line(line: &str) -> bool {
    FAILURE_PREFIXES.iter().any(|p| line.starts_with(p))
        || FAILURE_MARKERS.iter().any(|m| line.contains(m))
}

/// Parses a kernel summary line: exactly `N passed, N failed` or `N passed, N failed, N skipped`
/// (surrounding whitespace is ignored).
pub fn parse_summary(line: &str) -> Option<Counts> {
    let parts: Vec<&str> = line.trim().split(", ").collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let count = |part: &str, word: &str| -> Option<u64> {
        let (n, w) = part.split_once(' ')?;
        if w != word || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    };
    Some(Counts {
        passed: count(parts[0], "passed")?,
        failed: count(parts[1], "failed")?,
        skipped: match parts.get(2) {
            Some(part) => count(part, "skipped")?,
            None => 0,
        },
    })
}

/// The last summary line in a kernel's output.
pub fn last_summary<S: AsRef<str>>(lines: &[S]) -> Option<Counts> {
    lines.iter().rev().find_map(|l| parse_summary(l.as_ref()))
}

/// Parses libtest's `test result: ok. N passed; M failed; ...` line.
pub fn parse_cargo_result(line: &str) -> Option<Counts> {
    let (_, rest) = line.split_once("test result: ")?;
    let (_status, rest) = rest.split_once(". ")?;
    let (mut passed, mut failed) = (None, None);
    for part in rest.split(';') {
        let Some((n, word)) = part.trim().split_once(' ') else {
            continue;
        };
        match word {
            "passed" => passed = n.parse().ok(),
            "failed" => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some(Counts {
        passed: passed?,
        failed: failed?,
        skipped: 0,
    })
}

/// Adds up every `test result:` line of `cargo test`'s output; `None` if there is none.
pub fn sum_cargo_results(output: &str) -> Option<Counts> {
    output
        .lines()
        .filter_map(parse_cargo_result)
        .fold(None, |sum, c| {
            let mut sum = sum.unwrap_or_default();
            sum += c;
            Some(sum)
        })
}

/// Judges the host tests: a failing `cargo test` counts at least one failure.
pub fn judge_host(status: ExitStatus, counts: Option<Counts>) -> Verdict {
    match (status.success(), counts) {
        (true, Some(counts)) => Verdict { counts, note: None },
        (true, None) => Verdict {
            counts: Counts::default(),
            note: None,
        },
        (false, None) => Verdict {
            counts: Counts {
                failed: 1,
                ..Counts::default()
            },
            note: Some(format!(
                "cargo test failed ({}) and printed no test results",
                proc::describe(status)
            )),
        },
        (false, Some(mut counts)) if counts.failed == 0 => {
            counts.failed = 1;
            Verdict {
                counts,
                note: Some(format!(
                    "cargo test failed ({}) although no test failed",
                    proc::describe(status)
                )),
            }
        }
        (false, Some(counts)) => Verdict { counts, note: None },
    }
}

/// Judges one kernel run: a timeout, a non-zero exit or a missing summary line each count at
/// least one failure.
pub fn judge_kernel(summary: Option<Counts>, ending: Ending, timeout: Duration) -> Verdict {
    let mut counts = summary.unwrap_or_default();
    let note = match ending {
        Ending::TimedOut => Some(format!("timeout after {} s", timeout.as_secs())),
        Ending::Exited(status) => match summary {
            None => Some(format!(
                "QEMU exited with {} and no summary line was printed",
                proc::describe(status)
            )),
            Some(s) if !status.success() && s.failed == 0 => Some(format!(
                "the summary says 0 failed but QEMU exited with {}",
                proc::describe(status)
            )),
            Some(_) => None,
        },
    };
    if note.is_some() {
        counts.failed = counts.failed.max(1);
    }
    Verdict { counts, note }
}

/// A result line such as `virt gic3 smp4: 42 passed, 0 failed (12.3 s)`.
pub fn result_line(label: &str, verdict: &Verdict, elapsed: Option<Duration>) -> String {
    let mut line = format!("{label}: {}", verdict.counts);
    if let Some(elapsed) = elapsed {
        line.push_str(&format!(" ({:.1} s)", elapsed.as_secs_f64()));
    }
    if let Some(note) = &verdict.note {
        line.push_str(" - ");
        line.push_str(note);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn crash_passes_only_with_status_1_and_every_expected_line() {
        let t = Duration::from_secs(9);
        let lines = ["FAULT on cpu0: data abort", "backtrace:"];
        let want: &[&str] = &["data abort", "backtrace:"];
        assert_eq!(
            judge_crash(&lines, Ending::Exited(exited(1)), want, t)
                .counts
                .passed,
            1
        );
        let v = judge_crash(&lines, Ending::Exited(exited(0)), want, t);
        assert_eq!(v.counts.failed, 1);
        assert!(v.note.unwrap().contains("expected status 1"));
        let v = judge_crash(&lines[..1], Ending::Exited(exited(1)), want, t);
        assert!(v.note.unwrap().contains("backtrace:"));
        assert_eq!(
            judge_crash(&lines, Ending::TimedOut, want, t).counts.failed,
            1
        );
    }

    fn counts(passed: u64, failed: u64, skipped: u64) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
        }
    }

    #[test]
    fn summary_lines() {
        assert_eq!(parse_summary("42 passed, 0 failed"), Some(counts(42, 0, 0)));
        assert_eq!(
            parse_summary("3 passed, 2 failed, 1 skipped"),
            Some(counts(3, 2, 1))
        );
        assert_eq!(parse_summary("0 passed, 0 failed\r"), Some(counts(0, 0, 0)));
        assert_eq!(parse_summary("test foo: 3 passed, 0 failed"), None);
        assert_eq!(parse_summary("3 passed; 0 failed"), None);
        assert_eq!(parse_summary("3 passed, 0 failed, 1 ignored"), None);
        assert_eq!(parse_summary("3 passed, 0 failed, 1 skipped, 2 more"), None);
        assert_eq!(parse_summary("-3 passed, 0 failed"), None);
        assert_eq!(parse_summary("passed, failed"), None);
        assert_eq!(parse_summary("3 passed, 0 failed (1.2 s)"), None);
    }

    #[test]
    fn the_last_summary_counts() {
        let lines = [
            "boot",
            "1 passed, 0 failed",
            "test x ... FAIL",
            "5 passed, 1 failed, 2 skipped",
            "bye",
        ];
        assert_eq!(last_summary(&lines), Some(counts(5, 1, 2)));
        assert_eq!(last_summary(&["no summary here"]), None);
    }

    #[test]
    fn cargo_result_lines() {
        assert_eq!(
            parse_cargo_result(
                "test result: ok. 17 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; \
                 finished in 0.01s"
            ),
            Some(counts(17, 0, 0))
        );
        assert_eq!(
            parse_cargo_result("test result: FAILED. 4 passed; 2 failed; 0 ignored"),
            Some(counts(4, 2, 0))
        );
        assert_eq!(parse_cargo_result("running 17 tests"), None);
        assert_eq!(parse_cargo_result("test result: ok. nothing"), None);
    }

    #[test]
    fn cargo_results_are_summed() {
        let out = "\nrunning 3 tests\ntest a ... ok\n\n\
            test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
            running 0 tests\n\
            test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
            test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(sum_cargo_results(out), Some(counts(8, 1, 0)));
        assert_eq!(sum_cargo_results("error[E0425]: cannot find value"), None);
    }

    #[test]
    fn host_judgement() {
        assert_eq!(
            judge_host(exited(0), Some(counts(9, 0, 0))).counts,
            counts(9, 0, 0)
        );
        let broken = judge_host(exited(101), None);
        assert_eq!(broken.counts, counts(0, 1, 0));
        assert!(broken.note.unwrap().contains("printed no test results"));
        assert_eq!(
            judge_host(exited(101), Some(counts(9, 2, 0))),
            Verdict {
                counts: counts(9, 2, 0),
                note: None
            }
        );
        assert_eq!(
            judge_host(exited(101), Some(counts(9, 0, 0))).counts,
            counts(9, 1, 0)
        );
    }

    #[test]
    fn kernel_judgement() {
        let limit = Duration::from_secs(300);
        let ok = judge_kernel(Some(counts(42, 0, 1)), Ending::Exited(exited(0)), limit);
        assert_eq!(
            ok,
            Verdict {
                counts: counts(42, 0, 1),
                note: None
            }
        );

        let failed = judge_kernel(Some(counts(40, 2, 0)), Ending::Exited(exited(1)), limit);
        assert_eq!(
            failed,
            Verdict {
                counts: counts(40, 2, 0),
                note: None
            }
        );

        let liar = judge_kernel(Some(counts(42, 0, 0)), Ending::Exited(exited(1)), limit);
        assert_eq!(liar.counts, counts(42, 1, 0));
        assert_eq!(
            liar.note.as_deref(),
            Some("the summary says 0 failed but QEMU exited with status 1")
        );

        let silent = judge_kernel(None, Ending::Exited(exited(0)), limit);
        assert_eq!(silent.counts, counts(0, 1, 0));
        assert!(silent.note.unwrap().contains("no summary line"));

        let hung = judge_kernel(Some(counts(3, 0, 0)), Ending::TimedOut, limit);
        assert_eq!(hung.counts, counts(3, 1, 0));
        assert_eq!(hung.note.as_deref(), Some("timeout after 300 s"));
    }

    #[test]
    fn result_lines() {
        let v = Verdict {
            counts: counts(42, 0, 0),
            note: None,
        };
        assert_eq!(
            result_line("virt gic3 smp4", &v, Some(Duration::from_millis(12_340))),
            "virt gic3 smp4: 42 passed, 0 failed (12.3 s)"
        );
        assert_eq!(result_line("host", &v, None), "host: 42 passed, 0 failed");
        let v = Verdict {
            counts: counts(1, 1, 2),
            note: Some("timeout after 5 s".into()),
        };
        assert_eq!(
            result_line("virt gic2 smp4", &v, Some(Duration::from_secs(5))),
            "virt gic2 smp4: 1 passed, 1 failed, 2 skipped (5.0 s) - timeout after 5 s"
        );
    }

    #[test]
    fn fuzz_summaries_are_recognised() {
        assert!(is_fuzz_summary(
            "dtb fuzz: seed 0x1f: 2000 inputs in 3.0 s, 9 accepted, 1991 refused, 0 failures"
        ));
        assert!(is_fuzz_summary("kvm fuzz: seed 0xabc: 1 inputs"));
        assert!(!is_fuzz_summary("test fuzz::x ... ok"));
        assert!(!is_fuzz_summary("some other fuzz: seed 0x1"));
    }

    #[test]
    fn failure_lines() {
        assert!(is_failure_line("FAIL  sched::yield: cpu1: lost"));
        assert!(is_failure_line("panic on cpu0: oops"));
        assert!(is_failure_line("      cpu2: watchdog: stuck"));
        assert!(!is_failure_line(
            "ok    harness::harness_catches_a_panic (0 ms)"
        ));
        assert!(!is_failure_line(
            "FAULT on cpu0: data abort (caught by a test)"
        ));
        assert!(!is_failure_line("40 passed, 0 failed"));
    }

    #[test]
    fn crash_checks_cover_both_early_paths_on_both_boards() {
        for board in [Board::Virt, Board::Rpi4] {
            for kind in ["early-panic", "early-fault"] {
                assert!(
                    CRASH_CHECKS
                        .iter()
                        .any(|c| c.machine.board == board && c.kind == kind),
                    "{board} {kind}"
                );
            }
        }
        for c in CRASH_CHECKS {
            assert!(
                c.machine.validate().is_ok() && !c.expected.is_empty(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn matrix_is_valid() {
        assert_eq!(TEST_MATRIX[0], Machine::virt(Gic::V3, 4));
        let wide = Machine::virt(Gic::V3, 65);
        assert!(TEST_MATRIX.contains(&wide));
        assert_eq!(matrix_filter(&wide, None).as_deref(), Some(WIDE_FILTER));
        assert_eq!(
            matrix_filter(&wide, Some("xcall")).as_deref(),
            Some("xcall")
        );
        assert_eq!(matrix_filter(&Machine::virt(Gic::V3, 8), None), None);
        assert!(TEST_MATRIX.contains(&Machine::rpi4()));
        assert!(TEST_MATRIX.contains(&Machine::rpi4_gic_security()));
        for m in TEST_MATRIX {
            assert!(m.validate().is_ok(), "{m:?}");
        }
    }
}
