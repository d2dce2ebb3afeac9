//! `stress NAME [SECONDS]`: runs a stress workload in background threads (one per online CPU,
//! at most 8, unbound and timeshared) until the time is up or Ctrl-C, then stops and joins
//! them and reports exact counts, checked against each other.
//!
//! - `mutex`: each thread increments a shared counter under one adaptive mutex (a plain load
//!   and store, so a broken mutex loses updates) and its own count; the shared counter must
//!   equal the sum of the threads' counts.
//! - `xcall`: each thread issues low-priority broadcast cross calls and waits for each; every
//!   callback is counted, and the total must be calls x online CPUs.

use super::units::count;
use super::{CmdResult, Command, cancelled};
use crate::cpu::ncpu_online;
use crate::kprintln;
use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, KTHREAD_TS, kthread_create, kthread_join};
use crate::sync::mutex::KMutex;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "stress",
    args: "mutex|xcall|torture ...",
    summary: "stress threads, exact counts; Ctrl-C stops",
    detail: "stress mutex|xcall [SECONDS] or stress torture NAME [OPS [SEED]]. mutex: threads increment one counter under an adaptive mutex; the counter must \
             equal the sum of their own counts. xcall: threads broadcast cross calls; the \
             callbacks must number calls x CPUs. SECONDS defaults to 5. torture NAME: one \
             of the torture suites (sched, locks, intr, softint, wq, xcall, all) with OPS \
             operations (default 100000) and a seed (hex, default from the clock), without \
             fault injection; nothing lost, duplicated or leaked.",
    run: stress,
}];

const MAX_THREADS: usize = 8;
const DEFAULT_SECONDS: u64 = 5;

static STOP: AtomicBool = AtomicBool::new(false);
static OPS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static SHARED: AtomicU64 = AtomicU64::new(0);
static LOCK: KMutex = KMutex::adaptive();
static CALLBACKS: AtomicU64 = AtomicU64::new(0);

fn mutex_thread(i: usize) {
    while !STOP.load(Ordering::Relaxed) {
        {
            let _g = LOCK.lock();
            // Load and store, not fetch_add: only the mutex keeps two threads from losing an
            // increment.
            let v = SHARED.load(Ordering::Relaxed);
            SHARED.store(v + 1, Ordering::Relaxed);
        }
        OPS[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn xcall_callback(_: usize, _: usize) {
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
}

fn xcall_thread(i: usize) {
    while !STOP.load(Ordering::Relaxed) {
        let t = crate::xcall::xc_broadcast(0, xcall_callback, 0, 0);
        crate::xcall::xc_wait(t);
        OPS[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn stress(args: &[&str]) -> CmdResult {
    if let ["torture", rest @ ..] = args {
        return torture(rest);
    }
    let usage = || alloc::string::String::from("usage: stress mutex|xcall [SECONDS]");
    let (name, seconds) = match args {
        [name] => (*name, DEFAULT_SECONDS),
        [name, s] => (
            *name,
            s.parse::<u64>()
                .ok()
                .filter(|&s| (1..=86_400).contains(&s))
                .ok_or("SECONDS must be 1-86400")?,
        ),
        _ => return Err(usage()),
    };
    let func: fn(usize) = match name {
        "mutex" => mutex_thread,
        "xcall" => xcall_thread,
        _ => return Err(alloc::format!("no workload `{name}` (mutex, xcall)")),
    };
    let nthreads = ncpu_online().clamp(1, MAX_THREADS);
    STOP.store(false, Ordering::Relaxed);
    SHARED.store(0, Ordering::Relaxed);
    CALLBACKS.store(0, Ordering::Relaxed);
    for o in &OPS {
        o.store(0, Ordering::Relaxed);
    }
    let mut threads = alloc::vec::Vec::new();
    for i in 0..nthreads {
        let mut l = None;
        let r = kthread_create(
            30,
            KTHREAD_MPSAFE | KTHREAD_MUSTJOIN | KTHREAD_TS,
            None,
            func,
            i,
            Some(&mut l),
            format_args!("stress/{name}/{i}"),
        );
        match r {
            Ok(()) => threads.push(l.expect("newlp")),
            Err(e) => {
                STOP.store(true, Ordering::Relaxed);
                for t in threads {
                    kthread_join(t);
                }
                return Err(alloc::format!("kthread_create: {e:?}"));
            }
        }
    }
    kprintln!("stress {name}: {nthreads} threads for {seconds} s (Ctrl-C stops)");
    let hz = crate::clock::hz();
    let start = crate::arch::aarch64::counter();
    let end = start + crate::clock::ms_to_counter(seconds * 1000);
    let mut interrupted = false;
    while crate::arch::aarch64::counter() < end {
        if cancelled() {
            interrupted = true;
            break;
        }
        crate::kthread::kpause((hz / 20).max(1));
    }
    STOP.store(true, Ordering::Relaxed);
    for t in threads {
        kthread_join(t);
    }
    let elapsed = crate::clock::counter_to_ns(crate::arch::aarch64::counter() - start);
    let ops: u64 = OPS.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    kprintln!(
        "stress {name}: {} after {}; {} operations",
        if interrupted { "interrupted" } else { "done" },
        super::units::duration_ns(elapsed),
        count(ops)
    );
    let mut per = alloc::string::String::new();
    for (i, o) in OPS.iter().take(nthreads).enumerate() {
        per.push_str(&alloc::format!(" t{i}={}", o.load(Ordering::Relaxed)));
    }
    kprintln!("  per thread:{per}");
    let (what, got, expected) = match name {
        "mutex" => ("shared counter", SHARED.load(Ordering::Relaxed), ops),
        _ => (
            "callbacks",
            CALLBACKS.load(Ordering::Relaxed),
            ops * ncpu_online() as u64,
        ),
    };
    if got == expected {
        kprintln!("  check: {what} {got} = expected {expected}: ok");
        Ok(())
    } else {
        Err(alloc::format!(
            "check FAILED: {what} {got}, expected {expected}"
        ))
    }
}

/// `stress torture NAME [OPS [SEED]]`: one of the torture suites (`crate::torture`: sched,
/// locks, intr, softint, wq, xcall, all) on every online CPU, without fault injection (its
/// points exist only in the test image; `cargo xtask torture` runs them with it). Ctrl-C stops
/// the workers after their current operation; the counts are checked either way.
fn torture(args: &[&str]) -> CmdResult {
    use crate::torture::{Config, Kind, run};
    let usage =
        || alloc::string::String::from("usage: stress torture NAME [OPS [SEED]] (help stress)");
    let (name, ops, seed) = match args {
        [name] => (*name, None, None),
        [name, ops] => (*name, Some(*ops), None),
        [name, ops, seed] => (*name, Some(*ops), Some(*seed)),
        _ => return Err(usage()),
    };
    let kind = Kind::from_name(name).ok_or_else(usage)?;
    let ops = match ops {
        None => 100_000,
        Some(o) => o
            .parse::<u64>()
            .ok()
            .filter(|&o| o > 0)
            .ok_or("OPS must be a positive number")?,
    };
    let seed = match seed {
        // Any seed will do; the counter makes each run different and it is printed first.
        None => crate::arch::aarch64::counter(),
        Some(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| "SEED must be a hexadecimal number")?,
    };
    let cfg = Config {
        seed,
        ops,
        ms: 0,
        inject: false,
        bug: None,
        cancel: Some(cancelled),
    };
    run(kind, &cfg)
}
