//! The monitor sessions of `cargo xtask test`: the default image booted on each machine of
//! [`MONITOR_MATRIX`], every monitor command typed at its prompt through the console
//! (`console::Session`), and what each printed checked for content: `cpus` lists exactly the
//! online CPUs, `ps` the idle threads and the monitor, `intr` a console interrupt count and
//! byte count that grew by exactly what was typed, an unknown command one line of error,
//! Ctrl-C stops a running `stress`, a 10,000-character paste arrives whole or with the drop
//! counter saying exactly how much is missing, and `poweroff` leaves QEMU with status 0.
//! Each check is one test in the totals.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::board::{Board, Gic, Machine, Profile, Variant};
use crate::console::{PROMPT, Session};
use crate::error::Result;
use crate::image;
use crate::progress;
use crate::qemu::QemuRun;
use crate::test::{Counts, Verdict, report};
use crate::workspace::Workspace;

/// The machines the monitor sessions run on.
pub const MONITOR_MATRIX: &[Machine] = &[
    Machine::virt(Gic::V3, 4),
    Machine::virt(Gic::V2, 4),
    Machine::rpi4(),
];

/// Every command `help` must list.
const COMMANDS: &[&str] = &[
    "help", "cpus", "spl", "ps", "kthread", "intr", "softint", "wq", "xc", "wqprobe", "kvm",
    "dpcpu", "stress", "trace", "bench", "blk", "panic", "reboot", "poweroff",
];

/// Lines typed between two `intr` to see the console counters grow.
const TYPED_LINES: usize = 5;

/// The paste: lines of this many bytes (with the Return), this many lines.
const PASTE_LINE: usize = 100;
const PASTE_LINES: usize = 100;

/// Time limits: boot to the first prompt, one command.
const BOOT: Duration = Duration::from_secs(120);
const COMMAND: Duration = Duration::from_secs(120);
/// How long the paste's 100 prompts may take before the session looks at the drop counter.
const PASTE_WAIT: Duration = Duration::from_secs(60);

/// The outcome of one named check.
type Check = (&'static str, std::result::Result<(), String>);

/// Runs the sessions; prints one line per check (`ok`/`FAIL`) and returns the counts.
pub fn run(ws: &Workspace, timeout: Duration, verbose: bool) -> Result<Counts> {
    let mut counts = Counts::default();
    for machine in MONITOR_MATRIX {
        let label = format!("{} monitor", machine.label());
        progress::running(&label);
        progress::status(&format!("{label}: building the default image"));
        let kernel = match image::boot_image(ws, machine.board, Variant::Default, Profile::Release)
        {
            Ok(k) => k,
            Err(e) => {
                progress::println(&format!("FAIL  [{label}] build: {e}"));
                let verdict = Verdict {
                    counts: Counts {
                        failed: 1,
                        ..Counts::default()
                    },
                    note: Some("build failed".to_owned()),
                };
                report(&label, &verdict, None);
                counts += verdict.counts;
                continue;
            }
        };
        progress::status(&label);
        let log = ws.log_path(&format!("{}-monitor", machine.log_stem(Variant::Default)));
        progress::eprintln(&format!("xtask: {label}: log {}", log.display()));
        let started = Instant::now();
        let checks = session(machine, &kernel, &log, timeout, verbose);
        let mut mine = Counts::default();
        for (name, result) in &checks {
            match result {
                Ok(()) => {
                    mine.passed += 1;
                    if verbose {
                        println!("ok    [{label}] {name}");
                    }
                }
                Err(why) => {
                    mine.failed += 1;
                    progress::println(&format!("FAIL  [{label}] {name}: {why}"));
                }
            }
        }
        let verdict = Verdict {
            counts: mine,
            note: None,
        };
        report(&label, &verdict, Some(started.elapsed()));
        counts += mine;
    }
    Ok(counts)
}

/// One session on `machine`: every check, in order. A session that breaks off (no prompt,
/// QEMU gone) fails the check it was in and every one after it.
fn session(
    machine: &Machine,
    kernel: &Path,
    log: &Path,
    timeout: Duration,
    verbose: bool,
) -> Vec<Check> {
    // virt gets a freshly generated disk (sector N starts with `sector N`) for `blk`.
    let disk = log.with_extension("img");
    let disk =
        (machine.board == Board::Virt && crate::disk::generate(&disk).is_ok()).then_some(disk);
    let run = QemuRun {
        disk: disk.as_deref(),
        ..QemuRun::new(*machine, kernel)
    };
    let elf = kernel.with_extension("elf");
    let mut checks: Vec<Check> = Vec::new();
    let mut s = match Session::start(&mut run.command(), log, &elf, verbose)
        .and_then(|mut s| s.wait_prompts(1, BOOT.min(timeout)).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            checks.push(("boot to the prompt", Err(e.to_string())));
            return checks;
        }
    };
    checks.push(("boot to the prompt", Ok(())));
    let smp = machine.smp as usize;
    let steps: &[(&'static str, Step)] = &[
        ("help lists every command", help),
        ("cpus lists exactly the online CPUs", cpus),
        ("ps shows the idle threads and the monitor", ps),
        ("intr counts the typed lines and bytes", intr_counts),
        ("an unknown command gives one line of error", unknown),
        (
            "kernel output never lands inside the typed line",
            interleave,
        ),
        ("up arrow recalls the last line", history),
        ("spl lists the levels and every CPU", spl),
        ("softint lists its levels per CPU and the handlers", softint),
        ("wqprobe runs a work on each CPU and wq counts it", wq),
        ("xc reaches the CPUs asked for", xc),
        ("kvm pcpu reads every CPU through the kvm reader", kvm),
        ("dpcpu reads a DPCPU variable through the kvm reader", dpcpu),
        ("stress mutex counts add up", stress),
        (
            "stress torture runs a torture suite to its verdict",
            torture,
        ),
        ("trace shows one broadcast's runs on every CPU", trace),
        ("bench runs every benchmark with units", bench),
        (
            "blk reads a sector of the disk (virt) or says there is none",
            blk,
        ),
        ("Ctrl-C stops a running stress", ctrl_c),
        ("a 10,000-character paste loses nothing uncounted", paste),
    ];
    let mut broken: Option<String> = None;
    for (name, step) in steps {
        if let Some(why) = &broken {
            checks.push((name, Err(format!("not run: {why}"))));
            continue;
        }
        match step(&mut s, smp) {
            Ok(r) => checks.push((name, r)),
            Err(e) => {
                broken = Some(e.to_string());
                checks.push((name, Err(e.to_string())));
            }
        }
    }
    let off = if broken.is_some() {
        Err("not run: the session broke off".to_owned())
    } else {
        poweroff(s)
    };
    checks.push(("poweroff leaves QEMU with status 0", off));
    checks
}

/// A step: drives the session (an `Err` breaks it off) and judges what it saw.
type Step = fn(&mut Session, usize) -> Result<std::result::Result<(), String>>;

fn help(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("help", COMMAND)?;
    Ok(check_help(&out))
}

fn cpus(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("cpus", COMMAND)?;
    Ok(check_cpus(&out, smp))
}

fn ps(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("ps", COMMAND)?;
    Ok(check_ps(&out, smp))
}

fn intr_counts(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let before = s.run("intr", COMMAND)?;
    let mut typed = 0;
    for i in 0..TYPED_LINES {
        let line = format!("# typed line {i}");
        typed += line.len() + 1;
        s.run(&line, COMMAND)?;
    }
    typed += "intr\r".len();
    let after = s.run("intr", COMMAND)?;
    Ok(check_intr_growth(&before, &after, TYPED_LINES + 1, typed))
}

fn unknown(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("frobnicate now", COMMAND)?;
    let lines: Vec<&str> = out.lines().collect();
    Ok(
        if lines == ["kdb: unknown command `frobnicate`; type help"] {
            Ok(())
        } else {
            Err(format!("expected one error line, got {lines:?}"))
        },
    )
}

/// Threads that print while a half-typed line is on the screen (`kthread spawn`): each of their lines must
/// replace the erased input line (`\r`, ESC `[K`) and be followed by the prompt and the typed
/// text drawn again; the line typed on afterwards must run as typed.
fn interleave(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    const THREADS: usize = 3;
    // From the prompt on, which the console has just printed.
    let start = s.position().saturating_sub(PROMPT.len());
    // `cp` goes in with the command, so it waits in the ring and is on the screen as soon as
    // the next prompt is: the threads print a second after they start.
    s.send(format!("kthread spawn {THREADS} 1000\rcp").as_bytes())?;
    // The prompt with `cp` echoed, then each message ends with both drawn again.
    s.wait_count_since(start, "\r\nkdb> cp", THREADS + 1, COMMAND)?;
    let during = s.output_since(start);
    if !during.contains(&format!("kthread: {THREADS} threads started")) {
        return Ok(Err(format!("kthread spawn: {during:?}")));
    }
    s.skip_to_end();
    s.send(b"us\r")?;
    s.wait_prompts(1, COMMAND)?;
    let after = s.output_since(start);
    Ok(check_interleave(&during, THREADS).and_then(|()| {
        if after.contains("CPUs online") {
            Ok(())
        } else {
            Err(format!("`cp` + `us` did not run cpus: {after:?}"))
        }
    }))
}

fn check_interleave(raw: &str, threads: usize) -> std::result::Result<(), String> {
    for i in 0..threads {
        let msg = format!("kthread demo/{i}: ran on cpu");
        let at = raw
            .find(&msg)
            .ok_or_else(|| format!("no line from demo/{i}"))?;
        if !raw[..at].ends_with("kdb> cp\r\x1b[K") {
            return Err(format!(
                "demo/{i}'s line does not replace the erased input line: {:?}",
                &raw[at.saturating_sub(20)..at]
            ));
        }
        let line_end = at + raw[at..].find("\r\n").ok_or("unterminated message")?;
        if !raw[line_end..].starts_with("\r\nkdb> cp") {
            return Err(format!(
                "the prompt and `cp` are not drawn again after demo/{i}'s line: {:?}",
                &raw[line_end..(line_end + 20).min(raw.len())]
            ));
        }
    }
    Ok(())
}

fn history(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    s.run("xc 0", COMMAND)?;
    // ESC [ A: the terminal's Up key; the monitor redraws the line as `xc 0` and runs it.
    let out = s.run("\x1b[A", COMMAND)?;
    Ok(
        if out.contains("xc unicast to cpu0 (low): 1 callbacks, on cpu0") {
            Ok(())
        } else {
            Err(format!("Up + Return did not run `xc 0` again: {out:?}"))
        },
    )
}

fn spl(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("spl", COMMAND)?;
    let levels = [
        "IPL_NONE",
        "IPL_SOFTCLOCK",
        "IPL_SOFTBIO",
        "IPL_SOFTNET",
        "IPL_SOFTSERIAL",
        "IPL_VM",
        "IPL_SCHED",
        "IPL_HIGH",
    ];
    for (n, name) in levels.iter().enumerate() {
        if !out.lines().any(|l| {
            l.split_whitespace()
                .take(2)
                .eq([n.to_string().as_str(), name])
        }) {
            return Ok(Err(format!("no row `{n} {name}`")));
        }
    }
    let cpu_rows = rows_after(&out, "CPU IPL")
        .iter()
        .filter(|r| r.first().is_some_and(|w| w.parse::<usize>().is_ok()))
        .count();
    Ok(if cpu_rows == smp {
        Ok(())
    } else {
        Err(format!("{cpu_rows} CPU rows, expected {smp}"))
    })
}

fn softint(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("softint", COMMAND)?;
    let serial_rows = out
        .lines()
        .filter(|l| l.starts_with("SERIAL  IPL_SOFTSERIAL"))
        .count();
    if serial_rows != smp {
        return Ok(Err(format!("{serial_rows} SERIAL rows, expected {smp}")));
    }
    // The console's own softint has run at least once per typed line on some CPU.
    let serial_run: u64 = out
        .lines()
        .filter(|l| l.starts_with("SERIAL"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum();
    if serial_run == 0 {
        return Ok(Err("no SOFTINT_SERIAL handler ever ran".into()));
    }
    let handles = rows_after(&out, "SLOT LEVEL")
        .iter()
        .filter(|r| r.first().is_some_and(|w| w.parse::<usize>().is_ok()))
        .filter(|r| r.get(1) != Some(&"established"))
        .count();
    Ok(
        if out.contains(&format!("{handles} established of 64")) && handles >= 2 {
            Ok(())
        } else {
            Err(format!(
                "{handles} handler rows do not match the count line"
            ))
        },
    )
}

fn wq(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let probe = s.run("wqprobe", COMMAND)?;
    for c in 0..smp {
        if !probe.contains(&format!("wq kdb cpu{c}: work ran on cpu{c};")) {
            return Ok(Err(format!(
                "the work for cpu{c} did not run there: {probe:?}"
            )));
        }
    }
    let out = s.run("wq", COMMAND)?;
    let row = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.first() == Some(&"kdb"));
    let want = smp.to_string();
    Ok(match row {
        Some(r)
            if r.len() == 8
                && r[1] == "MPSAFE,PERCPU"
                && r[4] == want
                && r[5] == "0"
                && r[6] == want
                && r[7] == want =>
        {
            Ok(())
        }
        other => Err(format!(
            "expected `kdb MPSAFE,PERCPU .. {smp} queues, 0 pending, {smp} enqueued, {smp} run`, \
             got {other:?}"
        )),
    })
}

fn xc(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let last = smp - 1;
    let one = s.run(&format!("xc {last} high"), COMMAND)?;
    if !one.contains(&format!(
        "xc unicast to cpu{last} (high): 1 callbacks, on cpu{last};"
    )) {
        return Ok(Err(format!("unicast: {one:?}")));
    }
    let all = s.run("xc all", COMMAND)?;
    let everywhere = (0..smp)
        .map(|c| format!("cpu{c}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(
        if all.contains(&format!(
            "xc broadcast (low): {smp} callbacks, on {everywhere};"
        )) {
            Ok(())
        } else {
            Err(format!("broadcast: {all:?}"))
        },
    )
}

fn blk(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let stat = s.run("blk stat", COMMAND)?;
    let read = s.run("blk read 5", COMMAND)?;
    let disk = stat.contains(&format!("{} sectors", crate::disk::SECTORS));
    let none = stat.contains("kdb: blk: no disk attached");
    // The dump's text column of the first row: `sector 5` and the fill byte 5.
    let sector = read
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("000: 73 65 63 74 6f 72 20 35") && l.contains("sector 5"));
    Ok(match (disk, none) {
        (true, false) if sector => Ok(()),
        (false, true) if read.contains("kdb: blk: no disk attached") => Ok(()),
        _ => Err(format!("blk stat: {stat:?}; blk read 5: {read:?}")),
    })
}

fn kvm(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("kvm pcpu", COMMAND)?;
    let rows = rows_after(&out, "CPU CPU_INFO");
    let indices: Vec<usize> = rows
        .iter()
        .filter_map(|r| r.first()?.parse().ok())
        .collect();
    let maxcpu = out
        .lines()
        .find_map(|l| l.strip_prefix("kvm_getmaxcpu: ")?.parse::<usize>().ok());
    if maxcpu.is_none_or(|m| m < smp) {
        return Ok(Err(format!(
            "kvm_getmaxcpu missing or below {smp}: {out:?}"
        )));
    }
    // State 2 = online, in every row.
    let online = rows.iter().filter(|r| r.get(2) == Some(&"2")).count();
    Ok(
        if indices == (0..smp).collect::<Vec<_>>() && online == smp {
            Ok(())
        } else {
            Err(format!(
                "rows for CPUs {indices:?} ({online} online), expected 0..{smp}"
            ))
        },
    )
}

fn trace(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    s.run("trace off", COMMAND)?;
    s.run("trace clear", COMMAND)?;
    let on = s.run("trace on xcall", COMMAND)?;
    if !on.contains("trace: on (xcall)") {
        return Ok(Err(format!("trace on xcall: {on:?}")));
    }
    s.run("xc all high", COMMAND)?;
    s.run("trace off", COMMAND)?;
    let out = s.run("trace show 100", COMMAND)?;
    let count = |cpu: Option<usize>, kind: &str| {
        out.lines()
            .filter(|l| {
                l.split_whitespace().nth(2) == Some(kind)
                    && cpu.is_none_or(|c| l.starts_with(&format!("[{c:03}]")))
            })
            .count()
    };
    let mut problems = Vec::new();
    for (kind, want) in [("xcall_issue", 1), ("xcall_done", 1)] {
        if count(None, kind) != want {
            problems.push(format!("{} {kind}, expected {want}", count(None, kind)));
        }
    }
    for cpu in 0..smp {
        for kind in ["xcall_run", "xcall_run_done"] {
            if count(Some(cpu), kind) != 1 {
                problems.push(format!(
                    "cpu{cpu}: {} {kind}, expected 1",
                    count(Some(cpu), kind)
                ));
            }
        }
    }
    Ok(if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {out:?}", problems.join(", ")))
    })
}

fn dpcpu(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let list = s.run("dpcpu", COMMAND)?;
    if !list.lines().any(|l| l.trim() == "INTR_COUNT") {
        return Ok(Err(format!("INTR_COUNT not listed: {list:?}")));
    }
    let last = smp - 1;
    let out = s.run(&format!("dpcpu SOFTINT {last} 8"), COMMAND)?;
    Ok(
        if out.contains(&format!("SOFTINT on cpu{last} at 0x")) && out.contains("as u64: ") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        },
    )
}

fn stress(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("stress mutex 1", COMMAND)?;
    Ok(check_stress(&out, "mutex", false))
}

fn torture(s: &mut Session, smp: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("stress torture xcall 2000 5eed", COMMAND)?;
    Ok(check_torture(&out, smp))
}

/// `stress torture xcall 2000 5eed`: the seed it was given first, every CPU, the 2,000
/// operations counted, and the verdict.
fn check_torture(out: &str, smp: usize) -> std::result::Result<(), String> {
    let expected = [
        "torture xcall: seed 0x5eed".to_string(),
        format!("torture xcall: {smp} CPUs, 2000 ops, injection off"),
        "torture xcall: operations: xcall 2000, total 2000".to_string(),
        "torture xcall: passed: 0 lost, 0 duplicated, 0 leaked".to_string(),
    ];
    for e in &expected {
        if !out.lines().any(|l| l.starts_with(e.as_str())) {
            return Err(format!("no line starting `{e}` in:\n{out}"));
        }
    }
    Ok(())
}

fn bench(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let out = s.run("bench", COMMAND)?;
    Ok(check_bench(&out))
}

fn check_bench(out: &str) -> std::result::Result<(), String> {
    let rows = rows_after(out, "NAME     WHAT");
    let names: Vec<&str> = rows.iter().filter_map(|r| r.first().copied()).collect();
    let expected = ["spl", "mutex", "softint", "xc", "kthread", "per"];
    if names != expected {
        return Err(format!("rows {names:?}, expected {expected:?}"));
    }
    // Median, min and max, each a number and a unit: the last six words of a row.
    for r in &rows[..5] {
        let figures = &r[r.len() - 6..];
        let ok = figures.chunks(2).all(|f| {
            f[0].parse::<f64>().is_ok_and(|v| v > 0.0) && ["ns", "us", "ms", "s"].contains(&f[1])
        });
        if !ok {
            return Err(format!("`{}`: figures {figures:?}", r[0]));
        }
    }
    Ok(())
}

fn ctrl_c(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let start = std::time::Instant::now();
    s.send(b"stress xcall 600\r")?;
    s.wait_for("(Ctrl-C stops)", COMMAND)?;
    s.send(b"\x03")?;
    s.wait_prompts(1, COMMAND)?;
    let out = s.run("intr", COMMAND)?;
    let waited = start.elapsed();
    let all = s.output().replace("\r\n", "\n");
    let stress_out = all
        .rsplit_once("stress xcall 600\n")
        .map_or("", |(_, rest)| rest);
    if let Err(e) = check_stress(stress_out, "xcall", true) {
        return Ok(Err(e));
    }
    Ok(if waited > Duration::from_secs(300) {
        Err(format!(
            "the prompt came back only after {} s",
            waited.as_secs()
        ))
    } else if !out.contains(", 1 Ctrl-C cancels") {
        Err(format!("intr does not count the Ctrl-C: {out:?}"))
    } else {
        Ok(())
    })
}

fn paste(s: &mut Session, _: usize) -> Result<std::result::Result<(), String>> {
    let before = s.run("intr", COMMAND)?;
    let lines = paste_lines();
    let text: String = lines.iter().map(|l| format!("{l}\r")).collect();
    assert_eq!(text.len(), PASTE_LINE * PASTE_LINES);
    // All at once, as fast as QEMU's chardev takes it.
    s.send(text.as_bytes())?;
    // A full ring drops bytes (counted, and allowed): a dropped Return means fewer prompts.
    // Then Ctrl-U ends whatever partial line is left, and the counters judge.
    let mut extra = 0;
    if s.wait_prompts(PASTE_LINES, PASTE_WAIT).is_err() {
        s.send(b"\x15")?;
        extra += 1;
        std::thread::sleep(Duration::from_secs(1));
        s.skip_to_end();
    }
    let after = s.run("intr", COMMAND)?;
    let echoed = s_output_since_boot(s);
    Ok(check_paste(&before, &after, &lines, &echoed, extra))
}

fn s_output_since_boot(s: &Session) -> String {
    s.output().replace("\r\n", "\n")
}

fn poweroff(mut s: Session) -> std::result::Result<(), String> {
    s.send(b"poweroff\r").map_err(|e| e.to_string())?;
    match s.finish(Duration::from_secs(30)) {
        Ok(Some(status)) if status.code() == Some(0) => Ok(()),
        Ok(Some(status)) => Err(format!("QEMU {}", crate::proc::describe(status))),
        Ok(None) => Err("QEMU did not exit within 30 s".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The pasted lines: comments (`#`), numbered, with varied text, each `PASTE_LINE - 1` bytes
/// (the Return makes `PASTE_LINE`).
fn paste_lines() -> Vec<String> {
    (0..PASTE_LINES)
        .map(|i| {
            let mut line = format!("# paste {i:03} ");
            let mut x = (i as u32).wrapping_mul(2_654_435_761) | 1;
            while line.len() < PASTE_LINE - 1 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                line.push((b'a' + (x % 26) as u8) as char);
            }
            line
        })
        .collect()
}

/// The rows (split into words) after the header line starting with `header`, up to the
/// first empty line.
fn rows_after<'a>(out: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with(header.trim_start()))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn check_help(out: &str) -> std::result::Result<(), String> {
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&&str> = COMMANDS.iter().filter(|c| !listed.contains(c)).collect();
    if !missing.is_empty() {
        return Err(format!("help does not list {missing:?}"));
    }
    if let Some(long) = out.lines().find(|l| l.chars().count() > 80) {
        return Err(format!("a help line is wider than 80 columns: {long:?}"));
    }
    Ok(())
}

fn check_cpus(out: &str, smp: usize) -> std::result::Result<(), String> {
    if let Some(long) = out.lines().find(|l| l.chars().count() > 80) {
        return Err(format!("a line is wider than 80 columns: {long:?}"));
    }
    let rows = rows_after(out, "CPU STATE");
    let cpus: Vec<(usize, &str)> = rows
        .iter()
        .filter(|r| r.len() == 10)
        .filter_map(|r| Some((r.first()?.parse().ok()?, *r.get(1)?)))
        .collect();
    let expected: Vec<(usize, &str)> = (0..smp).map(|c| (c, "online")).collect();
    if cpus != expected {
        return Err(format!("rows {cpus:?}, expected CPUs 0..{smp} online"));
    }
    // Plausible counts: every CPU took clock ticks.
    for r in rows.iter().filter(|r| r.len() == 10) {
        if r[6] == "0" {
            return Err(format!("cpu{} took no clock tick: {r:?}", r[0]));
        }
    }
    if !out.contains(&format!("{smp} of {smp} CPUs online")) {
        return Err("no `N of N CPUs online` line".into());
    }
    Ok(())
}

fn check_ps(out: &str, smp: usize) -> std::result::Result<(), String> {
    let rows = rows_after(out, "  ID NAME");
    let find = |name: &str| rows.iter().find(|r| r.get(1) == Some(&name));
    for c in 0..smp {
        match find(&format!("idle/{c}")) {
            Some(r)
                if r.get(5) == Some(&"IDLE") && r.get(7) == Some(&format!("cpu{c}").as_str()) => {}
            other => return Err(format!("idle/{c}: {other:?}")),
        }
        if find(&format!("xcall/{c}")).is_none() {
            return Err(format!("no xcall/{c} thread"));
        }
    }
    match find("monitor") {
        // The monitor runs `ps` itself.
        Some(r) if r.get(2) == Some(&"onproc") && r.get(4) == Some(&"150") => Ok(()),
        other => Err(format!("monitor: {other:?}")),
    }
}

/// (interrupts of the console row's TOTAL, bytes received, dropped, read) from `intr`.
fn console_counts(out: &str) -> Option<(u64, u64, u64, u64)> {
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.contains(" console rx "))?
        .split_whitespace()
        .collect();
    let interrupts = row.last()?.parse().ok()?;
    let line = out.lines().find(|l| l.starts_with("console rx: irq"))?;
    let number_before = |what: &str| -> Option<u64> {
        let (head, _) = line.split_once(what)?;
        head.split_whitespace().last()?.parse().ok()
    };
    Some((
        interrupts,
        number_before(" bytes received")?,
        number_before(" dropped")?,
        number_before(" read")?,
    ))
}

fn check_intr_growth(
    before: &str,
    after: &str,
    lines: usize,
    bytes: usize,
) -> std::result::Result<(), String> {
    let (Some(b), Some(a)) = (console_counts(before), console_counts(after)) else {
        return Err(format!("no console counters in `intr`: {after:?}"));
    };
    let (irqs, got, dropped, read) = (a.0 - b.0, a.1 - b.1, a.2 - b.2, a.3 - b.3);
    if got != bytes as u64 || dropped != 0 || read != got {
        return Err(format!(
            "{bytes} bytes typed: {got} received, {dropped} dropped, {read} read"
        ));
    }
    // Each line was typed after the previous prompt: at least one interrupt each, and no
    // interrupt without a byte.
    if irqs < lines as u64 || irqs > got {
        return Err(format!(
            "{irqs} console interrupts for {lines} lines of {got} bytes"
        ));
    }
    Ok(())
}

fn check_stress(out: &str, name: &str, interrupted: bool) -> std::result::Result<(), String> {
    let word = if interrupted { "interrupted" } else { "done" };
    if !out.contains(&format!("stress {name}: {word} after")) {
        return Err(format!("not `{word}`: {out:?}"));
    }
    if !out
        .lines()
        .any(|l| l.trim_start().starts_with("check: ") && l.ends_with(": ok"))
    {
        return Err(format!("the counts do not add up: {out:?}"));
    }
    Ok(())
}

fn check_paste(
    before: &str,
    after: &str,
    lines: &[String],
    echoed: &str,
    extra: u64,
) -> std::result::Result<(), String> {
    let (Some(b), Some(a)) = (console_counts(before), console_counts(after)) else {
        return Err("no console counters in `intr`".into());
    };
    let sent = (PASTE_LINE * PASTE_LINES + "intr\r".len()) as u64 + extra;
    let (got, dropped, read) = (a.1 - b.1, a.2 - b.2, a.3 - b.3);
    if got != sent {
        return Err(format!("{sent} bytes sent, {got} received from the UART"));
    }
    if read + dropped != got {
        return Err(format!(
            "{got} received but {read} read + {dropped} dropped: {} unaccounted",
            got as i64 - (read + dropped) as i64
        ));
    }
    eprintln!("xtask: paste of {sent} bytes: {read} read by the monitor, {dropped} dropped");
    if dropped == 0 {
        let prompt_lines: Vec<&str> = echoed
            .lines()
            .filter_map(|l| l.strip_prefix(PROMPT))
            .collect();
        if let Some(missing) = lines.iter().find(|l| !prompt_lines.contains(&l.as_str())) {
            return Err(format!(
                "nothing dropped, yet `{missing}` was not echoed whole"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUS: &str = "\
CPU STATE    MPIDR    IPL THREAD           INTR  TICKS   IPIS    CSW IDLE
  0 online   0x0        0 idle/0             22     19      0      3  53%
  1 online   0x1        0 monitor            25     22      3      5  45%
4 of 4 CPUs online; IPL as a number (spl lists them); HZ 100
";

    #[test]
    fn cpus_must_list_exactly_the_online_cpus() {
        assert!(check_cpus(CPUS, 2).is_err(), "the footer says 4 of 4");
        let two = CPUS.replace("4 of 4", "2 of 2");
        assert_eq!(check_cpus(&two, 2), Ok(()));
        assert!(
            check_cpus(&two, 3)
                .unwrap_err()
                .contains("expected CPUs 0..3")
        );
        let offline = two.replace("  1 online ", "  1 offline");
        assert!(check_cpus(&offline, 2).is_err());
    }

    #[test]
    fn torture_check_wants_the_seed_the_cpus_the_counts_and_the_verdict() {
        let good = "torture xcall: seed 0x5eed\n\
                    torture xcall: 4 CPUs, 2000 ops, injection off, 22 of 1023 threads in use\n\
                    torture xcall: operations: xcall 2000, total 2000\n\
                    torture xcall: passed: 0 lost, 0 duplicated, 0 leaked\n";
        assert_eq!(check_torture(good, 4), Ok(()));
        assert!(check_torture(good, 8).is_err(), "8 CPUs asked, 4 ran");
        let failed = good.replace("passed: 0 lost", "FAILED (seed 0x5eed): lost 1");
        assert!(check_torture(&failed, 4).is_err());
        let short = good.replace("total 2000", "total 1999");
        assert!(check_torture(&short, 4).is_err());
    }

    const INTR: &str = "\
 IRQ NAME         IPL            cpu0    TOTAL
  33 console rx   IPL_VM            5        5
console rx: irq 33, 18 bytes received, 0 dropped (ring full), 18 read, 0 queued (ring 4096 bytes)
";

    #[test]
    fn console_growth_must_match_what_was_typed() {
        assert_eq!(console_counts(INTR), Some((5, 18, 0, 18)));
        let after = INTR
            .replace("5        5", "5       11")
            .replace("18 bytes", "48 bytes")
            .replace("18 read", "48 read");
        assert_eq!(check_intr_growth(INTR, &after, 6, 30), Ok(()));
        assert!(
            check_intr_growth(INTR, &after, 6, 31).is_err(),
            "one byte short"
        );
        assert!(
            check_intr_growth(INTR, &after, 7, 30).is_err(),
            "fewer interrupts than lines"
        );
    }

    #[test]
    fn the_paste_is_exactly_ten_thousand_bytes_of_distinct_lines() {
        let lines = paste_lines();
        assert_eq!(lines.len(), PASTE_LINES);
        assert!(
            lines
                .iter()
                .all(|l| l.len() == PASTE_LINE - 1 && l.starts_with('#'))
        );
        let mut unique = lines.clone();
        unique.dedup();
        assert_eq!(unique.len(), lines.len());
    }

    #[test]
    fn help_must_list_every_command_within_80_columns() {
        let all: String = COMMANDS.iter().map(|c| format!("  {c:<29} x\n")).collect();
        assert_eq!(check_help(&all), Ok(()));
        assert!(check_help(&all.replace("  xc ", "  yc ")).is_err());
        assert!(check_help(&format!("{all}{}\n", "y".repeat(81))).is_err());
    }

    #[test]
    fn ps_needs_the_idle_threads_and_the_monitor() {
        let out = "\
  ID NAME                 STATE  WCHAN        PRI CLASS  CPU BIND      TIME
   2 idle/0               onproc -              - IDLE     0 cpu0      0 ns
  22 xcall/0              sleep  0x4037a140   127 RR       0 cpu0   10.0 ms
  26 monitor              onproc -            150 RR       0 -       130 ms
";
        assert_eq!(check_ps(out, 1), Ok(()));
        assert!(check_ps(out, 2).unwrap_err().contains("idle/1"));
        assert!(check_ps(&out.replace("monitor ", "monitr  "), 1).is_err());
    }

    #[test]
    fn bench_rows_need_positive_figures_with_units() {
        let out = "\
NAME     WHAT                                         MEDIAN     MIN     MAX
spl      splraise(IPL_VM) + splx                       282 ns  277 ns  830 ns
mutex    mutex_enter + mutex_exit, uncontended         446 ns  440 ns  711 ns
softint  softint_schedule to handler, same CPU        4.40 us 4.30 us  469 us
xc       xc_unicast (low) to the next CPU + xc_wait   98.4 us 82.7 us  724 us
kthread  kthread_create + kthread_join                 114 us 82.7 us 1.38 ms
per operation, 100 samples each (spl and mutex: batches of 1000)
";
        assert_eq!(check_bench(out), Ok(()));
        assert!(check_bench(&out.replace("277 ns", "0 ns")).is_err());
        assert!(
            check_bench(&out.replace("kthread  kthread_create", "kthrd    kthread_create"))
                .is_err()
        );
    }

    #[test]
    fn messages_must_replace_the_input_line_and_redraw_it() {
        let good = "cp\r\x1b[Kkthread demo/0: ran on cpu1, woke after 300 ms\r\nkdb> cp\r\x1b[K\
                    kthread demo/1: ran on cpu0, woke after 300 ms\r\nkdb> cp";
        assert_eq!(check_interleave(&format!("kdb> {good}"), 2), Ok(()));
        let mid_line = "kdb> cpkthread demo/0: ran on cpu1, woke after 300 ms\r\nkdb> cp";
        assert!(check_interleave(mid_line, 1).is_err());
        let lost = "kdb> cp\r\x1b[Kkthread demo/0: ran on cpu1, woke after 300 ms\r\n";
        assert!(check_interleave(lost, 1).is_err());
    }

    #[test]
    fn matrix_has_both_gics_and_the_pi() {
        assert!(
            MONITOR_MATRIX
                .iter()
                .any(|m| m.board == crate::board::Board::Rpi4)
        );
        assert!(MONITOR_MATRIX.contains(&Machine::virt(Gic::V2, 4)));
        assert!(MONITOR_MATRIX.contains(&Machine::virt(Gic::V3, 4)));
    }
}
