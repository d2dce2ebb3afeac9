//! `bench [NAME]`: small benchmarks run in the running kernel, timed with the system counter
//! (wall-clock, so figures vary from run to run; the bench image under icount gives the
//! reproducible ones). Each prints the median, minimum and maximum of its samples per
//! operation. The monitor does not use the bench image's code (the kernel's layering keeps
//! everything above `bench` out of it); these measure the same primitives the simple way.
//!
//! - `spl`: `splraise(IPL_VM)` + `splx`, batches of 1,000.
//! - `mutex`: uncontended adaptive `mutex_enter` + `mutex_exit`, batches of 1,000.
//! - `softint`: `softint_schedule` from a thread (preemption disabled) to its handler's first
//!   line, on this CPU.
//! - `xc`: a low-priority `xc_unicast` to the next CPU and `xc_wait`.
//! - `kthread`: `kthread_create` + `kthread_join` of a thread that returns at once.

use super::units::duration_ns;
use super::{CmdResult, Command, cancelled};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::kprintln;
use crate::sync::mutex::KMutex;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "bench",
    args: "[NAME]",
    summary: "time primitives here (median/min/max per op)",
    detail: "NAME: spl, mutex, softint, xc or kthread; without one every benchmark runs. \
             Wall-clock figures from the system counter; they vary between runs. Ctrl-C \
             stops between samples.",
    run: bench,
}];

/// Samples in nanoseconds per operation, or why there are none.
type Samples = Result<Vec<u64>, &'static str>;

/// One benchmark: its name, what one operation is, and the function that samples it.
type Bench = (&'static str, &'static str, fn() -> Samples);

const BENCHES: &[Bench] = &[
    ("spl", "splraise(IPL_VM) + splx", spl),
    ("mutex", "mutex_enter + mutex_exit, uncontended", mutex),
    ("softint", "softint_schedule to handler, same CPU", softint),
    ("xc", "xc_unicast (low) to the next CPU + xc_wait", xc),
    ("kthread", "kthread_create + kthread_join", kthread),
];

const BATCH: u64 = 1_000;
const SAMPLES: usize = 100;

fn bench(args: &[&str]) -> CmdResult {
    let chosen: Vec<_> = match args {
        [] => BENCHES.iter().collect(),
        [name] => {
            let b = BENCHES.iter().find(|b| b.0 == *name).ok_or_else(|| {
                alloc::format!("no benchmark `{name}` (spl, mutex, softint, xc, kthread)")
            })?;
            alloc::vec![b]
        }
        _ => return Err("usage: bench [NAME]".into()),
    };
    kprintln!("NAME     WHAT                                         MEDIAN     MIN     MAX");
    for (name, what, run) in chosen {
        let mut ns = run().map_err(|why| alloc::format!("{name}: {why}"))?;
        ns.sort_unstable();
        let (min, med, max) = (ns[0], ns[ns.len() / 2], ns[ns.len() - 1]);
        kprintln!(
            "{name:<8} {what:<42} {:>9} {:>7} {:>7}",
            duration_ns(med),
            duration_ns(min),
            duration_ns(max)
        );
    }
    kprintln!("per operation, {SAMPLES} samples each (spl and mutex: batches of {BATCH})");
    Ok(())
}

/// `SAMPLES` samples of `f` in nanoseconds per operation (`per` operations per call).
fn sample(per: u64, mut f: impl FnMut()) -> Samples {
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        if cancelled() {
            return Err("interrupted");
        }
        let t0 = counter();
        f();
        let t1 = counter();
        out.push(counter_to_ns(t1 - t0) / per);
    }
    Ok(out)
}

fn spl() -> Samples {
    sample(BATCH, || {
        for _ in 0..BATCH {
            let s = crate::spl::splraise(crate::spl::IPL_VM);
            crate::spl::splx(core::hint::black_box(s));
        }
    })
}

fn mutex() -> Samples {
    static M: KMutex = KMutex::adaptive();
    sample(BATCH, || {
        for _ in 0..BATCH {
            M.mutex_enter();
            M.mutex_exit();
        }
    })
}

/// Counter value in the softint handler's first line.
static SOFTINT_AT: AtomicU64 = AtomicU64::new(0);

fn softint_handler(_: usize) {
    SOFTINT_AT.store(counter(), Ordering::Relaxed);
}

fn softint() -> Samples {
    use crate::softint::{SOFTINT_MPSAFE, SOFTINT_SERIAL, softint_establish, softint_schedule};
    let h = softint_establish(SOFTINT_SERIAL | SOFTINT_MPSAFE, softint_handler, 0)
        .ok_or("the soft interrupt table is full")?;
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        if cancelled() {
            break;
        }
        SOFTINT_AT.store(0, Ordering::Relaxed);
        crate::sched::kpreempt_disable();
        let t0 = counter();
        softint_schedule(h);
        crate::sched::kpreempt_enable();
        // Below IPL_SOFTSERIAL with IRQs unmasked, the handler ran inside the call.
        let at = SOFTINT_AT.load(Ordering::Relaxed);
        out.push(counter_to_ns(at.saturating_sub(t0)));
    }
    crate::softint::softint_disestablish(h);
    if out.len() == SAMPLES {
        Ok(out)
    } else {
        Err("interrupted")
    }
}

fn xc_noop(_: usize, _: usize) {}

fn xc() -> Samples {
    let me = crate::cpu::curcpu().index();
    let target = crate::cpu::cpus()
        .map(|ci| ci.index())
        .filter(|&c| crate::cpu::cpu_lookup(c).is_some_and(|ci| ci.is_online()))
        .find(|&c| c != me)
        .unwrap_or(me);
    sample(1, || {
        let t = crate::xcall::xc_unicast(0, xc_noop, 0, 0, target);
        crate::xcall::xc_wait(t);
    })
}

fn nothing(_: usize) {}

fn kthread() -> Samples {
    use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, kthread_create, kthread_join};
    let mut failed = false;
    let out = sample(1, || {
        let mut l = None;
        match kthread_create(
            crate::sched::PRI_KTHREAD as i32,
            KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
            None,
            nothing,
            0,
            Some(&mut l),
            format_args!("kdb/bench"),
        ) {
            Ok(()) => {
                kthread_join(l.expect("newlp"));
            }
            Err(_) => failed = true,
        }
    });
    if failed {
        Err("kthread_create failed")
    } else {
        out
    }
}
