//! The `xcall` torture, after scftorture: every CPU at once issues cross calls, unicast and
//! broadcast, low priority and high priority at each soft level, in batches of one class
//! waited for with one `xc_wait` on the last ticket, plus `xc_barrier`s.
//!
//! Counts: each worker knows how many callbacks its calls must produce (1 per unicast, one per
//! online CPU per broadcast); every callback adds one to its caller's "done" count and checks
//! it runs on the CPU it was sent to. After each `xc_wait` the caller's done count must equal
//! what it asked for: fewer means the wait returned early (or a call was lost), more means a
//! callback ran twice.

use super::{Failure, Rng, expect_eq, this_cpu};
use crate::cpu::{MAXCPUS, curcpu};
use crate::spl::{IPL_SOFTBIO, IPL_SOFTCLOCK, IPL_SOFTNET};
use crate::xcall::{XC_HIGHPRI, XC_HIGHPRI_IPL, xc_barrier, xc_broadcast, xc_unicast, xc_wait};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

static ASKED: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static DONE: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static RAN_ON: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static CALLS: AtomicU64 = AtomicU64::new(0);
static BROADCASTS: AtomicU64 = AtomicU64::new(0);
static BARRIERS: AtomicU64 = AtomicU64::new(0);
static WAITS: AtomicU64 = AtomicU64::new(0);

/// Any CPU.
const ANY: usize = usize::MAX;

/// The callback: `caller` is the worker's CPU, `target` where it must run (or [`ANY`]).
fn callback(caller: usize, target: usize) {
    let me = curcpu().index();
    if target != ANY && target != me {
        super::report(|| format!("xcall: a unicast to cpu{target} ran on cpu{me}"));
    }
    RAN_ON[me].fetch_add(1, Ordering::Relaxed);
    DONE[caller].fetch_add(1, Ordering::AcqRel);
}

pub(super) fn setup() -> Result<(), Failure> {
    for c in 0..MAXCPUS {
        ASKED[c].store(0, Ordering::Relaxed);
        DONE[c].store(0, Ordering::Relaxed);
        RAN_ON[c].store(0, Ordering::Relaxed);
    }
    for c in [&CALLS, &BROADCASTS, &BARRIERS, &WAITS] {
        c.store(0, Ordering::Relaxed);
    }
    Ok(())
}

fn class(rng: &mut Rng) -> u32 {
    match rng.below(6) {
        0 | 1 => 0,
        2 => XC_HIGHPRI,
        3 => XC_HIGHPRI_IPL(IPL_SOFTNET),
        4 => XC_HIGHPRI_IPL(IPL_SOFTBIO),
        _ => XC_HIGHPRI_IPL(IPL_SOFTCLOCK),
    }
}

pub(super) fn op(rng: &mut Rng) {
    let me = this_cpu(); // the worker is bound
    if rng.chance(1, 8) {
        let flags = class(rng);
        xc_barrier(flags);
        BARRIERS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let flags = class(rng);
    let n = 1 + rng.below(4);
    let mut last = 0;
    for _ in 0..n {
        if rng.chance(1, 3) {
            ASKED[me].fetch_add(super::nonline(), Ordering::Relaxed);
            BROADCASTS.fetch_add(1, Ordering::Relaxed);
            last = xc_broadcast(flags, callback, me, ANY);
        } else {
            let target = super::random_cpu(rng);
            ASKED[me].fetch_add(1, Ordering::Relaxed);
            last = xc_unicast(flags, callback, me, target, target);
        }
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
    xc_wait(last);
    WAITS.fetch_add(1, Ordering::Relaxed);
    let (asked, done) = (
        ASKED[me].load(Ordering::Relaxed),
        DONE[me].load(Ordering::Acquire),
    );
    if done != asked {
        super::report(|| {
            format!(
                "xcall: cpu{me}: after xc_wait({last:#x}) {done} callbacks had run, {asked} \
                 expected ({})",
                if done < asked {
                    "the wait returned early"
                } else {
                    "duplicated"
                }
            )
        });
    }
}

pub(super) fn check_now() -> Result<(), Failure> {
    for c in super::online() {
        let (asked, done) = (
            ASKED[c].load(Ordering::Relaxed),
            DONE[c].load(Ordering::Relaxed),
        );
        if done > asked {
            return Err(format!(
                "xcall: cpu{c}'s calls: {done} callbacks, {asked} asked (duplicated)"
            ));
        }
    }
    Ok(())
}

pub(super) fn finish() -> Result<(), Failure> {
    let asked: u64 = super::sum(&ASKED);
    expect_eq("xcall: callbacks run", super::sum(&DONE), asked)?;
    expect_eq("xcall: callbacks run, by CPU", super::sum(&RAN_ON), asked)
}

pub(super) fn counts() -> String {
    format!(
        "{} calls ({} broadcasts), {} callbacks, {} waits, {} barriers",
        CALLS.load(Ordering::Relaxed),
        BROADCASTS.load(Ordering::Relaxed),
        super::sum(&DONE),
        WAITS.load(Ordering::Relaxed),
        BARRIERS.load(Ordering::Relaxed)
    )
}
