//! `cargo xtask trace`: the kernel's trace rings (`kernel::trace`), read with the kvm reader
//! (`Kvm::trace`, the same code the kernel runs on itself) from an ELF core or a live guest,
//! written as Chrome/Perfetto trace-event JSON or printed as `trace-cmd report`-style lines.
//!
//! The JSON (the "JSON Object Format" of the trace-event format, which ui.perfetto.dev and
//! chrome://tracing open as they are): process 1 "cpus" has one track per CPU (tid = CPU) with
//! complete slices (`ph: X`) for hard interrupts, soft interrupts, works and cross-call runs,
//! and instants (`ph: i`) for the rest; process 2 "threads" has one track per CPU with the run
//! span of every thread (named from the thread-name table); each cross call gets a flow arrow
//! (`ph: s` at its issue, `ph: f` at each run). Slices come from begin/end pairs matched per
//! CPU; a begin whose end is not in the ring (the trace stopped inside it) ends at the CPU's
//! last record, an end whose begin was overwritten is dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kernel::kvm::trace::{CpuTrace, Event, TraceDump};
use kernel::trace::{Kind, SwitchReason};
use serde_json::{Value, json};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kernel::kvm::{Kvm, KvmError, Source};

use super::dump::Session;
use super::{KvmJob, Target};
use crate::board::{Gic, Machine, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::qemu::QemuRun;
use crate::workspace::Workspace;

/// Microseconds from counter ticks.
fn us(dump: &TraceDump, ts: u64) -> f64 {
    ts as f64 * 1e6 / dump.freq as f64
}

/// A thread's label: its name from the table, else `#id`.
fn thread_label(dump: &TraceDump, id: u64) -> String {
    match dump.name_of(id) {
        Some(name) => format!("{name}#{id}"),
        None => format!("#{id}"),
    }
}

/// The begin/end pairs that make slices: (begin kind, end kind, slice name prefix, category).
const SLICES: [(Kind, Kind, &str, &str); 4] = [
    (Kind::IntrEntry, Kind::IntrExit, "irq", "intr"),
    (Kind::SoftintRun, Kind::SoftintDone, "softint", "softint"),
    (Kind::WorkRun, Kind::WorkDone, "work", "work"),
    (Kind::XcallRun, Kind::XcallRunDone, "xcall", "xcall"),
];

fn slice_name(prefix: &str, e: &Event) -> String {
    match e.kind {
        Kind::IntrEntry => format!("{prefix} {} (ipl {})", e.a, e.b),
        Kind::SoftintRun => format!("{prefix} {} (level {})", e.a, e.b),
        Kind::WorkRun => format!("{prefix} {:#x}", e.a),
        _ => format!("{prefix} {:#x}", e.a),
    }
}

/// The arguments of an event, by name, as the JSON `args` and the text line show them.
fn args_of(dump: &TraceDump, e: &Event) -> Vec<(&'static str, String)> {
    let cpu_or_all = |v: u64| {
        if v == u64::MAX {
            "all".to_string()
        } else {
            v.to_string()
        }
    };
    match e.kind {
        Kind::IntrEntry | Kind::IntrExit | Kind::SplDeferred => {
            vec![("irq", e.a.to_string()), ("ipl", e.b.to_string())]
        }
        Kind::SoftintSchedule => vec![("handle", e.a.to_string()), ("cpu", cpu_or_all(e.b))],
        Kind::SoftintRun | Kind::SoftintDone => {
            vec![("handle", e.a.to_string()), ("level", e.b.to_string())]
        }
        Kind::Switch => vec![
            ("prev", thread_label(dump, e.a)),
            ("next", thread_label(dump, e.b)),
            ("reason", SwitchReason::name(e.aux).to_string()),
        ],
        Kind::ThreadCreate => vec![
            ("thread", thread_label(dump, e.a)),
            ("bound", cpu_or_all(e.b)),
        ],
        Kind::ThreadExit => vec![
            ("thread", thread_label(dump, e.a)),
            ("code", e.b.to_string()),
        ],
        Kind::WorkEnqueue => vec![("work", format!("{:#x}", e.a)), ("cpu", cpu_or_all(e.b))],
        Kind::WorkRun | Kind::WorkDone => vec![("work", format!("{:#x}", e.a))],
        Kind::XcallIssue => vec![
            ("ticket", format!("{:#x}", e.a)),
            ("targets", format!("{:#x}", e.b)),
        ],
        Kind::XcallRun | Kind::XcallRunDone | Kind::XcallDone => {
            vec![("ticket", format!("{:#x}", e.a))]
        }
        Kind::IpiSend => vec![("ipi", e.a.to_string()), ("cpu", cpu_or_all(e.b))],
        Kind::IpiReceive => vec![("ipi", e.a.to_string())],
        Kind::IdleEnter | Kind::IdleExit => vec![],
    }
}

/// The trace as Chrome/Perfetto trace-event JSON.
pub fn to_json(dump: &TraceDump) -> Value {
    let mut events = Vec::new();
    let meta = |pid: u32, tid: Option<u32>, name: &str, value: String| {
        let mut m = json!({"ph": "M", "pid": pid, "tid": tid.unwrap_or(0), "ts": 0, "name": name,
                           "args": {"name": value}});
        if name == "thread_sort_index" {
            m["args"] = json!({"sort_index": tid.unwrap_or(0)});
        }
        m
    };
    events.push(meta(1, None, "process_name", "cpus".into()));
    events.push(meta(2, None, "process_name", "threads".into()));
    for c in &dump.cpus {
        events.push(meta(1, Some(c.cpu), "thread_name", format!("cpu{}", c.cpu)));
        events.push(meta(
            2,
            Some(c.cpu),
            "thread_name",
            format!("cpu{} threads", c.cpu),
        ));
        events.push(meta(1, Some(c.cpu), "thread_sort_index", String::new()));
        events.push(meta(2, Some(c.cpu), "thread_sort_index", String::new()));
        cpu_events(dump, c, &mut events);
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "metadata": {
            "source": "cargo xtask trace",
            "counter_frequency_hz": dump.freq,
            "lost": dump.cpus.iter().map(|c| json!({"cpu": c.cpu, "lost": c.lost})).collect::<Vec<_>>(),
        }
    })
}

fn args_json(dump: &TraceDump, e: &Event) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in args_of(dump, e) {
        m.insert(k.into(), Value::String(v));
    }
    m.insert("seq".into(), json!(e.seq));
    Value::Object(m)
}

fn cpu_events(dump: &TraceDump, c: &CpuTrace, out: &mut Vec<Value>) {
    let end_ts = c.events.last().map_or(0, |e| e.ts);
    let cpu = c.cpu;
    // Open slices per (begin kind, a): begin event (a stack per key: handlers may nest).
    let mut open: BTreeMap<(u8, u64), Vec<Event>> = BTreeMap::new();
    let mut running: Option<(u64, u64)> = None; // (thread, since)
    let complete = |out: &mut Vec<Value>,
                    pid: u32,
                    name: String,
                    cat: &str,
                    b: &Event,
                    end: u64,
                    args: Value| {
        out.push(json!({
            "ph": "X", "pid": pid, "tid": cpu, "name": name, "cat": cat,
            "ts": us(dump, b.ts), "dur": us(dump, end.saturating_sub(b.ts)), "args": args,
        }));
    };
    for e in &c.events {
        if let Some((_, _, prefix, _)) = SLICES.iter().find(|s| s.0 == e.kind) {
            let _ = prefix;
            open.entry((e.kind as u8, e.a)).or_default().push(*e);
            continue;
        }
        if let Some((begin, _, prefix, cat)) = SLICES.iter().find(|s| s.1 == e.kind) {
            if let Some(b) = open.get_mut(&(*begin as u8, e.a)).and_then(Vec::pop) {
                complete(
                    out,
                    1,
                    slice_name(prefix, &b),
                    cat,
                    &b,
                    e.ts,
                    args_json(dump, &b),
                );
                if b.kind == Kind::XcallRun {
                    out.push(json!({"ph": "f", "bp": "e", "pid": 1, "tid": cpu, "cat": "xcall",
                                    "name": "xcall", "id": flow_id(b.a, cpu), "ts": us(dump, b.ts)}));
                }
            }
            continue;
        }
        match e.kind {
            Kind::Switch => {
                if let Some((thread, since)) = running {
                    out.push(json!({
                        "ph": "X", "pid": 2, "tid": cpu, "name": thread_label(dump, thread),
                        "cat": "thread", "ts": us(dump, since), "dur": us(dump, e.ts - since),
                        "args": {"switched_out": SwitchReason::name(e.aux)},
                    }));
                }
                running = Some((e.b, e.ts));
            }
            Kind::XcallIssue => {
                let mut targets = e.b;
                complete(out, 1, format!("xcall issue {:#x}", e.a), "xcall", e, e.ts, args_json(dump, e));
                while targets != 0 {
                    let t = targets.trailing_zeros();
                    targets &= targets - 1;
                    out.push(json!({"ph": "s", "pid": 1, "tid": cpu, "cat": "xcall", "name": "xcall",
                                    "id": flow_id(e.a, t), "ts": us(dump, e.ts)}));
                }
            }
            _ => out.push(json!({
                "ph": "i", "s": "t", "pid": 1, "tid": cpu, "name": e.kind.name(), "cat": e.kind.name(),
                "ts": us(dump, e.ts), "args": args_json(dump, e),
            })),
        }
    }
    // What was still open when the trace stopped ends at the CPU's last record.
    for (key, stack) in open {
        for b in stack {
            if let Some((_, _, prefix, cat)) = SLICES.iter().find(|s| s.0 as u8 == key.0) {
                complete(
                    out,
                    1,
                    slice_name(prefix, &b),
                    cat,
                    &b,
                    end_ts,
                    args_json(dump, &b),
                );
            }
        }
    }
    if let Some((thread, since)) = running {
        out.push(json!({
            "ph": "X", "pid": 2, "tid": cpu, "name": thread_label(dump, thread), "cat": "thread",
            "ts": us(dump, since), "dur": us(dump, end_ts - since), "args": {"running_at_end": true},
        }));
    }
}

/// A flow's id: the ticket and the target CPU (one arrow per target).
fn flow_id(ticket: u64, cpu: u32) -> String {
    format!("{ticket:#x}/{cpu}")
}

/// Checks `json` against the trace-event format as far as this tool uses it: a `traceEvents`
/// array whose every record has `ph`, `ts`, `pid` and `tid` of the right types, known phases,
/// `dur` ≥ 0 on complete events, B/E balanced per track, and every flow end with a start.
/// Returns the problems (empty: valid).
pub fn validate(json: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(events) = json["traceEvents"].as_array() else {
        return vec!["no traceEvents array".into()];
    };
    let mut depth: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut starts = std::collections::BTreeSet::new();
    let mut finishes = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let ph = e["ph"].as_str();
        if ph.is_none() || !e["ts"].is_number() || !e["pid"].is_u64() || !e["tid"].is_u64() {
            problems.push(format!("event {i}: needs ph, ts, pid and tid: {e}"));
            continue;
        }
        let track = (
            e["pid"].as_u64().unwrap_or(0),
            e["tid"].as_u64().unwrap_or(0),
        );
        match ph.unwrap_or("") {
            "X" => {
                if e["dur"].as_f64().is_none_or(|d| d < 0.0) {
                    problems.push(format!("event {i}: complete event without a dur ≥ 0"));
                }
            }
            "B" => *depth.entry(track).or_default() += 1,
            "E" => {
                let d = depth.entry(track).or_default();
                *d -= 1;
                if *d < 0 {
                    problems.push(format!("event {i}: E without B on {track:?}"));
                }
            }
            "s" => {
                starts.insert(e["id"].to_string());
            }
            "f" => finishes.push((i, e["id"].to_string())),
            "i" | "M" => {}
            other => problems.push(format!("event {i}: unknown phase {other}")),
        }
    }
    for (track, d) in depth {
        if d > 0 {
            problems.push(format!("track {track:?}: {d} B without E"));
        }
    }
    for (i, id) in finishes {
        if !starts.contains(&id) {
            problems.push(format!("event {i}: flow end {id} without a start"));
        }
    }
    problems
}

/// The trace as text lines, one per record, ordered by time (like `trace-cmd report`):
/// `  <thread> [cpu] seconds: kind: args`.
pub fn to_text(dump: &TraceDump) -> String {
    let mut lines: Vec<(u64, u32, u64, String)> = Vec::new();
    let mut out = String::new();
    for c in &dump.cpus {
        if c.lost != 0 {
            let _ = writeln!(
                out,
                "# cpu{}: {} records lost (the ring wrapped)",
                c.cpu, c.lost
            );
        }
        // Before the CPU's first switch in the ring, the thread that switch leaves was running.
        let mut running: Option<u64> = c
            .events
            .iter()
            .find(|e| e.kind == Kind::Switch)
            .map(|e| e.a)
            .filter(|&a| a != 0);
        for e in &c.events {
            let who = match running {
                Some(id) => thread_label(dump, id),
                None => "<unknown>".into(),
            };
            let args: Vec<String> = args_of(dump, e)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let line = format!(
                "{who:>20} [{:03}] {:>14.6}: {:<16} {}",
                c.cpu,
                e.ts as f64 / dump.freq as f64,
                format!("{}:", e.kind.name()),
                args.join(" ")
            );
            lines.push((e.ts, c.cpu, e.seq, line));
            if e.kind == Kind::Switch {
                running = Some(e.b);
            }
        }
    }
    lines.sort();
    for (_, _, _, line) in lines {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Events per kind and CPU (for summaries and tests).
pub fn counts(dump: &TraceDump) -> BTreeMap<(u32, &'static str), usize> {
    let mut m = BTreeMap::new();
    for c in &dump.cpus {
        for e in &c.events {
            *m.entry((c.cpu, e.kind.name())).or_default() += 1;
        }
    }
    m
}

/// Flags of `cargo xtask trace`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceArgs {
    /// Where to read: a core or a live guest (default: `target/dumps/dump.core`).
    pub target: Option<Target>,
    /// The kernel ELF (default: beside the core, or the default debug image for `--live`).
    pub kernel: Option<PathBuf>,
    /// Write the JSON here.
    pub out: Option<PathBuf>,
    /// Print the text report.
    pub text: bool,
    /// Draw the per-CPU timeline as SVG here.
    pub svg: Option<PathBuf>,
    /// Boot the test image, run this named workload traced, and read it (live).
    pub run: Option<String>,
    /// CPUs for `--run`.
    pub smp: u32,
    /// Time limit for `--run`'s boot and workload.
    pub timeout: Duration,
}

/// The workloads `--run` knows (the kernel's `trace_workload::run_named`).
pub const WORKLOADS: &[&str] = &["known", "stress"];

/// What the kernel prints when a `trace.run=` workload is done and tracing is off.
pub const RUN_READY: &str = "trace-run ready";

/// Reads the trace with the kvm reader from `target`, with the symbols of `kernel`.
pub fn read_trace(target: &Target, kernel: &Path) -> std::result::Result<TraceDump, String> {
    struct ReadTrace;
    impl KvmJob for ReadTrace {
        type Output = TraceDump;
        fn run<S: Source>(self, kd: &mut Kvm<S>) -> std::result::Result<TraceDump, KvmError> {
            kd.trace()
        }
    }
    super::open_target(target, kernel, ReadTrace)
}

/// Boots the test image with `trace.run=NAME`, waits until the workload is done, and reads
/// the trace live; returns it with the kernel ELF.
fn run_workload(ws: &Workspace, args: &TraceArgs, name: &str) -> Result<(TraceDump, PathBuf)> {
    crate::tools::ensure_qemu(crate::tools::install_allowed_here(false))?;
    let kernel = crate::image::build(
        ws,
        crate::board::Board::Virt,
        Variant::Ktest,
        Profile::Debug,
    )?;
    let append = format!("trace.run={name}");
    let run = QemuRun {
        append: Some(&append),
        ..QemuRun::new(Machine::virt(Gic::V3, args.smp), &kernel)
    };
    let log = ws.log_path("trace-run");
    let mut session = Session::start(&run, &log)?;
    let seen = session
        .wait_for(args.timeout, |l| {
            l.starts_with(RUN_READY) || l.starts_with("panic on cpu")
        })
        .with_context(|| format!("waiting for {RUN_READY:?} (log: {})", log.display()))?;
    if !seen.starts_with(RUN_READY) {
        return Err(Error::new(format!(
            "the kernel said {seen:?} (log: {})",
            log.display()
        )));
    }
    let dump = read_trace(&Target::Live(session.gdb_addr.clone()), &kernel).map_err(Error::new);
    session.quit();
    Ok((dump?, kernel))
}

/// `cargo xtask trace`.
pub fn run(ws: &Workspace, args: &TraceArgs) -> Result<ExitCode> {
    let dump = match &args.run {
        Some(name) => run_workload(ws, args, name)?.0,
        None => {
            let (target, kernel) =
                super::target_and_kernel(ws, args.target.as_ref(), args.kernel.as_ref());
            read_trace(&target, &kernel).map_err(Error::new)?
        }
    };
    for c in &dump.cpus {
        eprintln!(
            "xtask: cpu{}: {} records{}",
            c.cpu,
            c.events.len(),
            if c.lost != 0 {
                format!(", {} lost (the ring wrapped)", c.lost)
            } else {
                String::new()
            }
        );
    }
    if args.text {
        print!("{}", to_text(&dump));
    }
    if let Some(out) = &args.out {
        let json = to_json(&dump);
        let problems = validate(&json);
        if !problems.is_empty() {
            return Err(Error::new(format!(
                "the JSON does not validate: {}",
                problems.join("; ")
            )));
        }
        std::fs::write(out, serde_json::to_string(&json).unwrap_or_default())
            .with_context(|| out.display().to_string())?;
        eprintln!(
            "xtask: wrote {} (open it in ui.perfetto.dev or chrome://tracing)",
            out.display()
        );
    }
    if let Some(svg) = &args.svg {
        super::trace_svg::render(&dump, svg).map_err(Error::new)?;
        eprintln!("xtask: wrote {}", svg.display());
    }
    if !args.text && args.out.is_none() && args.svg.is_none() {
        for ((cpu, kind), n) in counts(&dump) {
            println!("cpu{cpu} {kind} {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event with no aux byte (also for `trace_svg`'s tests).
    pub(crate) fn ev(seq: u64, ts: u64, kind: Kind, a: u64, b: u64) -> Event {
        Event {
            seq,
            ts,
            kind,
            aux: 0,
            a,
            b,
        }
    }

    fn sample() -> TraceDump {
        let cpu0 = vec![
            ev(0, 100, Kind::Switch, 0, 1),
            ev(1, 110, Kind::XcallIssue, 0x8000_0001, 0b10),
            ev(2, 120, Kind::IntrEntry, 27, 6),
            ev(3, 130, Kind::IntrExit, 27, 6),
            ev(4, 140, Kind::WorkDone, 0x1000, 0), // its begin was lost
            ev(5, 150, Kind::SoftintRun, 3, 1),    // still running at the end
            ev(6, 160, Kind::Switch, 1, 2),
        ];
        let cpu1 = vec![
            ev(0, 115, Kind::XcallRun, 0x8000_0001, 0),
            ev(1, 118, Kind::XcallRunDone, 0x8000_0001, 0),
            ev(2, 119, Kind::XcallDone, 0x8000_0001, 0),
        ];
        TraceDump {
            freq: 1_000_000,
            mask: 0,
            cpus: vec![
                CpuTrace {
                    cpu: 0,
                    head: 7,
                    lost: 0,
                    events: cpu0,
                },
                CpuTrace {
                    cpu: 1,
                    head: 3,
                    lost: 0,
                    events: cpu1,
                },
            ],
            names: vec![(1, "main".into()), (2, "idle/0".into())],
        }
    }

    #[test]
    fn the_json_is_valid_trace_event_format_with_slices_spans_and_flows() {
        let j = to_json(&sample());
        assert_eq!(validate(&j), Vec::<String>::new());
        let evs = j["traceEvents"].as_array().unwrap();
        let named = |n: &str| evs.iter().filter(|e| e["name"] == n).count();
        assert_eq!(named("irq 27 (ipl 6)"), 1);
        assert_eq!(
            named("softint 3 (level 1)"),
            1,
            "an open slice ends at the last record"
        );
        assert_eq!(named("main#1"), 1, "thread span");
        assert_eq!(named("idle/0#2"), 1, "running at the end");
        assert_eq!(evs.iter().filter(|e| e["ph"] == "s").count(), 1);
        assert_eq!(evs.iter().filter(|e| e["ph"] == "f").count(), 1);
        assert!(
            evs.iter().all(|e| e["name"] != "work 0x1000"),
            "an end without begin is dropped"
        );
        let irq = evs.iter().find(|e| e["name"] == "irq 27 (ipl 6)").unwrap();
        assert_eq!(irq["ts"].as_f64(), Some(120.0));
        assert_eq!(irq["dur"].as_f64(), Some(10.0));
    }

    #[test]
    fn validation_finds_missing_fields_unbalanced_slices_and_lone_flow_ends() {
        let j = json!({"traceEvents": [
            {"ph": "B", "ts": 1, "pid": 1, "tid": 0},
            {"ph": "E", "ts": 2, "pid": 1, "tid": 1},
            {"ph": "i", "ts": 2, "pid": 1},
            {"ph": "f", "ts": 3, "pid": 1, "tid": 0, "id": "x"},
        ]});
        let p = validate(&j);
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn text_lines_are_in_time_order_and_name_the_running_thread() {
        let t = to_text(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 10);
        assert!(
            lines[1].contains("[000]") && lines[1].contains("xcall_issue:"),
            "{t}"
        );
        assert!(
            lines[2].contains("[001]") && lines[2].contains("xcall_run:"),
            "{t}"
        );
        assert!(lines[5].trim_start().starts_with("main#1 [000]"), "{t}");
        assert!(
            lines[9].contains("prev=main#1 next=idle/0#2 reason=preempt"),
            "{t}"
        );
    }
}
