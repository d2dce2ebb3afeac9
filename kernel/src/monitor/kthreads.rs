//! `kthread spawn N [MS]`: starts N detached kernel threads (kthread(9) without
//! KTHREAD_MUSTJOIN, freed when they end) that each sleep MS milliseconds, then print one
//! line saying where they ran and end. The command returns at once, so the lines arrive while
//! the prompt is shown: they show the console keeping kernel output and the line being typed
//! apart (the typed text is drawn again below them).

use super::{CmdResult, Command};
use crate::kprintln;
use crate::kthread::{KTHREAD_MPSAFE, kthread_create};
use core::sync::atomic::{AtomicU64, Ordering};

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "kthread",
    args: "spawn N [MS]",
    summary: "N threads that print a line after MS ms and end",
    detail: "N is 1-64, MS 0-60000 (default 0). The threads are unbound and detached; each \
             prints `kthread demo/I: ran on cpuC, woke after T` when it runs.",
    run: kthread,
}];

/// Milliseconds the demo threads sleep (set before they start).
static SLEEP_MS: AtomicU64 = AtomicU64::new(0);

fn demo(i: usize) {
    let t0 = crate::arch::aarch64::counter();
    let ms = SLEEP_MS.load(Ordering::Relaxed);
    if ms > 0 {
        let ticks = (ms * crate::clock::hz()).div_ceil(1000);
        crate::kthread::kpause(ticks);
    }
    let waited = crate::clock::counter_to_ns(crate::arch::aarch64::counter() - t0);
    kprintln!(
        "kthread demo/{i}: ran on cpu{}, woke after {}",
        crate::cpu::curcpu().index(),
        super::units::duration_ns(waited)
    );
}

fn kthread(args: &[&str]) -> CmdResult {
    let usage = || alloc::string::String::from("usage: kthread spawn N [MS]");
    let (n, ms) = match args {
        ["spawn", n] => (*n, "0"),
        ["spawn", n, ms] => (*n, *ms),
        _ => return Err(usage()),
    };
    let n: usize = n
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or("N must be 1-64")?;
    let ms: u64 = ms
        .parse()
        .ok()
        .filter(|ms| *ms <= 60_000)
        .ok_or("MS must be 0-60000")?;
    SLEEP_MS.store(ms, Ordering::Relaxed);
    for i in 0..n {
        kthread_create(
            crate::sched::PRI_KTHREAD as i32,
            KTHREAD_MPSAFE,
            None,
            demo,
            i,
            None,
            format_args!("demo/{i}"),
        )
        .map_err(|e| alloc::format!("kthread_create: {e:?} after {i} threads"))?;
    }
    kprintln!("kthread: {n} threads started; each prints a line after {ms} ms");
    Ok(())
}
