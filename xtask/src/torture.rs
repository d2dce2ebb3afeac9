//! `cargo xtask torture`: the torture suites of the test image (`kernel/src/torture/`), one
//! QEMU run per torture, always under `-icount` so that a seed replays a run exactly; and the
//! torture checks `cargo xtask test` adds after its matrix: two runs with one seed must print
//! the same log and a third with another seed a different one, and each planted bug must make
//! its torture fail with the seed printed.
//!
//! The kernel command line carries everything: `ktest.filter=torture::NAME` selects the
//! torture's test, `torture.seed=HEX`, `torture.ops=N` or `torture.ms=N`, `torture.inject=0|1`
//! and `torture.bug=KIND` configure it, and `ktest.timeout_ms` lifts the harness's watchdog
//! above the run's own time limit (the torture's stall detector reports a hang by itself).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::args::{Budget, PlantedBug, TortureArgs};
use crate::board::{Board, Gic, Machine, Profile, Variant};
use crate::error::Result;
use crate::proc::{self, Ending};
use crate::qemu::QemuRun;
use crate::test::{Counts, Verdict, last_summary, result_line};
use crate::workspace::Workspace;
use crate::{image, tools};

/// What one torture run is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The torture (`sched`, ..., `all`).
    pub name: &'a str,
    /// The seed.
    pub seed: u64,
    /// Operations or virtual minutes.
    pub budget: Budget,
    /// Fault injection on.
    pub inject: bool,
    /// A planted bug, if any.
    pub bug: Option<PlantedBug>,
    /// The host-side time limit (the kernel's watchdog is set a little above it).
    pub timeout: Duration,
}

impl Plan<'_> {
    /// The kernel command line for this run.
    pub fn append(&self) -> String {
        let budget = match self.budget {
            Budget::Ops(n) => format!("torture.ops={n}"),
            Budget::Minutes(m) => format!("torture.ops=0 torture.ms={}", m * 60_000),
        };
        let mut line = format!(
            "ktest.filter=torture::{} torture.seed={:x} {budget} torture.inject={} \
             ktest.timeout_ms={}",
            self.name,
            self.seed,
            u8::from(self.inject),
            // Virtual time runs slower than wall time under -icount with several CPUs; the
            // host's limit stops a hang first. A budget in virtual minutes gets its own
            // length on top.
            self.timeout.as_millis() as u64
                + match self.budget {
                    Budget::Minutes(m) => m * 60_000,
                    Budget::Ops(_) => 0,
                }
        );
        if let Some(bug) = self.bug {
            line.push_str(&format!(" torture.bug={}", bug.name()));
        }
        line
    }

    /// The command that repeats this run.
    pub fn replay_command(&self, machine: Machine) -> String {
        let budget = match self.budget {
            Budget::Ops(n) => format!("--ops {n}"),
            Budget::Minutes(m) => format!("--minutes {m}"),
        };
        let mut cmd = format!(
            "cargo xtask torture {} --smp {} --gic {} {budget} --replay {:x}",
            self.name, machine.smp, machine.gic, self.seed
        );
        if !self.inject {
            cmd.push_str(" --no-inject");
        }
        if let Some(bug) = self.bug {
            cmd.push_str(&format!(" --bug {}", bug.name()));
        }
        cmd
    }
}

/// Judges a torture run that must pass: its seed line came first among the torture's lines,
/// it printed its verdict `passed`, the harness counted 1 passed and 0 failed and QEMU exited
/// with status 0. Returns why not.
pub fn judge_pass<S: AsRef<str>>(lines: &[S], ending: Ending, name: &str) -> Option<String> {
    if let Some(problem) = seed_first(lines, name) {
        return Some(problem);
    }
    let passed = format!("torture {name}: passed:");
    if !lines.iter().any(|l| l.as_ref().starts_with(&passed)) {
        let failed = lines
            .iter()
            .map(|l| l.as_ref())
            .find(|l| l.starts_with(&format!("torture {name}: FAILED")) || l.starts_with("FAIL"));
        return Some(match failed {
            Some(l) => l.to_owned(),
            None => format!("no line `{passed} ...`"),
        });
    }
    let summary = last_summary(lines);
    if summary.map(|c| (c.passed, c.failed)) != Some((1, 0)) {
        return Some(format!(
            "the harness counted {summary:?}, expected 1 passed, 0 failed"
        ));
    }
    match ending {
        Ending::Exited(status) if status.success() => None,
        Ending::Exited(status) => Some(format!("QEMU exited with {}", proc::describe(status))),
        Ending::TimedOut => Some(String::from("timed out")),
    }
}

/// Judges a run with a planted bug, which must fail: the seed printed first, a failure line
/// (the torture's `FAILED (seed ...)`, or the harness's `FAIL` when the bug stopped the CPU the
/// torture's driver ran on) and QEMU's status 1. Returns why not.
pub fn judge_planted<S: AsRef<str>>(lines: &[S], ending: Ending, name: &str) -> Option<String> {
    if let Some(problem) = seed_first(lines, name) {
        return Some(problem);
    }
    if lines
        .iter()
        .any(|l| l.as_ref().starts_with(&format!("torture {name}: passed:")))
    {
        return Some(String::from("the torture passed with the bug planted"));
    }
    let failed = lines.iter().any(|l| {
        l.as_ref()
            .starts_with(&format!("torture {name}: FAILED (seed 0x"))
            || l.as_ref().starts_with(&format!("FAIL  torture::{name}"))
    });
    if !failed {
        return Some(String::from("no failure line"));
    }
    match ending {
        Ending::Exited(status) if status.code() == Some(1) => None,
        Ending::Exited(status) => Some(format!(
            "QEMU exited with {}, expected status 1",
            proc::describe(status)
        )),
        Ending::TimedOut => Some(String::from("timed out")),
    }
}

/// Checks that the first line about the torture is its seed.
fn seed_first<S: AsRef<str>>(lines: &[S], name: &str) -> Option<String> {
    let prefix = format!("torture {name}: ");
    let first = lines
        .iter()
        .map(|l| l.as_ref())
        .find(|l| l.starts_with(&prefix));
    match first {
        Some(l) if l.starts_with(&format!("{prefix}seed 0x")) => None,
        Some(l) => Some(format!("the first torture line is not the seed: {l:?}")),
        None => Some(format!(
            "the torture printed nothing (no line `{prefix}...`)"
        )),
    }
}

/// Whether two logs are the same, line by line; else the first line that differs (1-based).
pub fn first_difference<S: AsRef<str>>(a: &[S], b: &[S]) -> Option<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .find(|&i| a.get(i).map(|l| l.as_ref()) != b.get(i).map(|l| l.as_ref()))
        .map(|i| i + 1)
}

/// One captured torture run.
struct Ran {
    lines: Vec<String>,
    ending: Ending,
    elapsed: Duration,
}

/// Boots `kernel` on `machine` under `-icount` with `plan`, logging to `log_stem`.
fn boot(
    ws: &Workspace,
    kernel: &Path,
    machine: Machine,
    plan: &Plan,
    log_stem: &str,
    echo: impl Fn(&str),
) -> Result<Ran> {
    let append = plan.append();
    let run = QemuRun {
        icount: true,
        append: Some(&append),
        ..QemuRun::new(machine, kernel)
    };
    crate::progress::running(&format!("torture {}", plan.name));
    crate::progress::eprintln(&format!("xtask: torture {}: {}", plan.name, run.display()));
    let log = ws.log_path(log_stem);
    let captured = proc::run_captured(&mut run.command(), &log, plan.timeout, |l| echo(l))?;
    Ok(Ran {
        lines: captured.lines,
        ending: captured.ending,
        elapsed: captured.elapsed,
    })
}

/// A seed from the host clock.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos & 0xffff_ffff_ffff
}

/// `cargo xtask torture`.
pub fn run(ws: &Workspace, args: &TortureArgs) -> Result<ExitCode> {
    tools::ensure_qemu(tools::install_allowed_here(false))?;
    let kernel = image::boot_image(ws, Board::Virt, Variant::Ktest, Profile::Release)?;
    let seed = args.seed.unwrap_or_else(clock_seed);
    println!("torture: seed {seed:#x}");
    let machine = args.machine;
    let mut failed = 0;
    for &name in &args.names {
        let plan = Plan {
            name,
            seed,
            budget: args.budget,
            inject: args.inject,
            bug: args.bug,
            timeout: args.timeout,
        };
        let label = format!("torture {name} {}", machine.label());
        let verbose = args.verbose;
        let prefix = format!("torture {name}: ");
        let ran = boot(
            ws,
            &kernel,
            machine,
            &plan,
            &format!("torture-{name}-{}", machine.log_stem(Variant::Ktest)),
            |l| {
                if verbose || l.starts_with(&prefix) || crate::test::is_failure_line(l) {
                    println!("{l}");
                }
            },
        )?;
        let problem = match args.bug {
            None => judge_pass(&ran.lines, ran.ending, name),
            Some(_) => judge_planted(&ran.lines, ran.ending, name),
        };
        let verdict = verdict(problem.clone());
        println!("{}", result_line(&label, &verdict, Some(ran.elapsed)));
        if problem.is_some() {
            failed += 1;
            println!("torture: replay with: {}", plan.replay_command(machine));
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verdict(problem: Option<String>) -> Verdict {
    let failed = u64::from(problem.is_some());
    Verdict {
        counts: Counts {
            passed: 1 - failed,
            failed,
            skipped: 0,
        },
        note: problem,
    }
}

/// The machine of the checks `cargo xtask test` runs.
const CHECK_MACHINE: Machine = Machine::virt(Gic::V3, 4);
/// Their budget: a few seconds each.
const CHECK_OPS: u64 = 3_000;
/// Their seed (fixed, so a failure is replayed by running the test again).
const CHECK_SEED: u64 = 0x5eed_0015;

/// How many tests [`checks`] adds: two for the replay, one per planted bug.
pub const CHECKS: usize = 2 + PLANTED.len();

/// Each planted bug and the torture that must catch it.
pub const PLANTED: &[(&str, PlantedBug)] = &[
    ("locks", PlantedBug::Wakeup),
    ("intr", PlantedBug::Eoi),
    ("xcall", PlantedBug::Xcall),
];

/// The torture checks of `cargo xtask test`: same seed, same log (and another seed, another
/// log), then each planted bug caught. Returns the counts (one test each).
pub fn checks(ws: &Workspace, kernel: &Path, timeout: Duration, verbose: bool) -> Result<Counts> {
    let mut total = Counts::default();
    let plan = |name, seed, bug| Plan {
        name,
        seed,
        budget: Budget::Ops(CHECK_OPS),
        inject: true,
        bug,
        timeout,
    };
    let echo = |l: &str| {
        if verbose {
            println!("{l}");
        }
    };
    let stem = CHECK_MACHINE.log_stem(Variant::Ktest);
    let mut runs = Vec::new();
    for (i, seed) in [CHECK_SEED, CHECK_SEED, CHECK_SEED + 1]
        .into_iter()
        .enumerate()
    {
        let p = plan("all", seed, None);
        runs.push(boot(
            ws,
            kernel,
            CHECK_MACHINE,
            &p,
            &format!("torture-replay{i}-{stem}"),
            echo,
        )?);
    }
    let problem = judge_pass(&runs[0].lines, runs[0].ending, "all")
        .or_else(|| judge_pass(&runs[1].lines, runs[1].ending, "all"))
        .or_else(|| {
            first_difference(&runs[0].lines, &runs[1].lines)
                .map(|n| format!("two runs with seed {CHECK_SEED:#x} differ at line {n}"))
        });
    let v = verdict(problem);
    crate::test::report(
        &format!("torture all {}: same seed, same log", CHECK_MACHINE.label()),
        &v,
        Some(runs[0].elapsed + runs[1].elapsed),
    );
    total += v.counts;
    let problem = judge_pass(&runs[2].lines, runs[2].ending, "all").or_else(|| {
        first_difference(&runs[0].lines, &runs[2].lines)
            .is_none()
            .then(|| String::from("runs with different seeds printed the same log"))
    });
    let v = verdict(problem);
    println!(
        "{}",
        result_line(
            &format!(
                "torture all {}: another seed, another log",
                CHECK_MACHINE.label()
            ),
            &v,
            Some(runs[2].elapsed)
        )
    );
    total += v.counts;
    for &(name, bug) in PLANTED {
        let p = plan(name, CHECK_SEED, Some(bug));
        let ran = boot(
            ws,
            kernel,
            CHECK_MACHINE,
            &p,
            &format!("torture-bug-{}-{stem}", bug.name()),
            echo,
        )?;
        let v = verdict(judge_planted(&ran.lines, ran.ending, name));
        crate::test::report(
            &format!(
                "torture {name} {} with planted bug {}: caught",
                CHECK_MACHINE.label(),
                bug.name()
            ),
            &v,
            Some(ran.elapsed),
        );
        total += v.counts;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn exited(code: i32) -> Ending {
        Ending::Exited(ExitStatus::from_raw(code << 8))
    }

    const PASSING: &[&str] = &[
        "ktest: running 1 of 300 tests on 8 CPUs",
        "torture all: seed 0x5eed",
        "torture all: 8 CPUs, 1000 ops, injection on",
        "torture all: passed: 0 lost, 0 duplicated, 0 leaked",
        "ok    torture::all (100 ms)",
        "1 passed, 0 failed",
    ];

    #[test]
    fn a_passing_run_needs_the_seed_first_the_verdict_and_status_0() {
        assert_eq!(judge_pass(PASSING, exited(0), "all"), None);
        assert!(judge_pass(PASSING, exited(1), "all").is_some());
        assert!(judge_pass(PASSING, Ending::TimedOut, "all").is_some());
        let mut no_seed = PASSING.to_vec();
        no_seed.remove(1);
        assert!(judge_pass(&no_seed, exited(0), "all").is_some_and(|p| p.contains("not the seed")));
        let failed = [
            "torture locks: seed 0x1",
            "torture locks: FAILED (seed 0x1): stalled",
            "FAIL  torture::locks: ...",
            "0 passed, 1 failed",
        ];
        assert!(judge_pass(&failed, exited(1), "locks").is_some_and(|p| p.contains("FAILED")));
    }

    #[test]
    fn a_planted_bug_must_fail_with_the_seed_printed_and_status_1() {
        let caught = [
            "torture intr: seed 0x5eed0015",
            "torture intr: FAILED (seed 0x5eed0015): intr: ... lost",
            "FAIL  torture::intr: cpu0: ...",
            "0 passed, 1 failed",
        ];
        assert_eq!(judge_planted(&caught, exited(1), "intr"), None);
        assert!(judge_planted(&caught, exited(0), "intr").is_some());
        // The watchdog's line is enough when the torture's driver was stopped.
        let watchdog = [
            "torture intr: seed 0x5eed0015",
            "FAIL  torture::intr: watchdog: not finished after 60000 ms",
        ];
        assert_eq!(judge_planted(&watchdog, exited(1), "intr"), None);
        let missed = [
            "torture intr: seed 0x5eed0015",
            "torture intr: passed: 0 lost, 0 duplicated, 0 leaked",
            "1 passed, 0 failed",
        ];
        assert!(judge_planted(&missed, exited(0), "intr").is_some());
        assert!(judge_planted(&caught[1..], exited(1), "intr").is_some());
    }

    #[test]
    fn logs_compare_line_by_line() {
        assert_eq!(first_difference(&["a", "b"], &["a", "b"]), None);
        assert_eq!(first_difference(&["a", "b"], &["a", "c"]), Some(2));
        assert_eq!(first_difference(&["a"], &["a", "b"]), Some(2));
    }

    #[test]
    fn the_command_line_carries_the_plan() {
        let plan = Plan {
            name: "wq",
            seed: 0xabc,
            budget: Budget::Ops(500),
            inject: false,
            bug: Some(PlantedBug::Eoi),
            timeout: Duration::from_secs(60),
        };
        let line = plan.append();
        for word in [
            "ktest.filter=torture::wq",
            "torture.seed=abc",
            "torture.ops=500",
            "torture.inject=0",
            "torture.bug=eoi",
            "ktest.timeout_ms=60000",
        ] {
            assert!(
                line.split(' ').any(|w| w == word),
                "{word} missing from {line}"
            );
        }
        let minutes = Plan {
            budget: Budget::Minutes(2),
            ..plan
        };
        assert!(minutes.append().contains("torture.ops=0 torture.ms=120000"));
        assert_eq!(
            plan.replay_command(Machine::virt(Gic::V2, 8)),
            "cargo xtask torture wq --smp 8 --gic 2 --ops 500 --replay abc --no-inject --bug eoi"
        );
    }
}
