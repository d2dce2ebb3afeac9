//! The `softint` torture: four soft interrupts (one per level, one of them not MPSAFE)
//! scheduled from threads on their own CPU, from threads for other CPUs, from hard interrupt
//! handlers (an SGI asks the receiving CPU to schedule them) and from their own handlers
//! (self-rescheduling); and short-lived ones established, scheduled on other CPUs and
//! disestablished at once.
//!
//! Counts, exact although a schedule of a pending soft interrupt merges with it: whoever
//! schedules adds one to that CPU's "owed" count for the handle first; the handler takes the
//! whole count. After the run every owed count is 0 and served = scheduled. A handler never
//! runs twice at once on one CPU, and a disestablished one never runs again.

use super::{Failure, Rng, expect_eq, sum, this_cpu, wait_for};
use crate::cpu::{MAXCPUS, curcpu};
use crate::platform::{IpiTarget, platform};
use crate::softint::{
    SOFTINT_BIO, SOFTINT_CLOCK, SOFTINT_MPSAFE, SOFTINT_NET, SOFTINT_SERIAL, SoftintHandle,
    softint_disestablish, softint_establish, softint_schedule, softint_schedule_cpu,
};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const NH: usize = 4;
const FLAGS: [u32; NH] = [
    SOFTINT_CLOCK,
    SOFTINT_BIO | SOFTINT_MPSAFE,
    SOFTINT_NET | SOFTINT_MPSAFE,
    SOFTINT_SERIAL | SOFTINT_MPSAFE,
];
/// The SGI whose handler schedules what `REQ` asks for.
const SGI: u32 = 12;

static HANDLES: [AtomicU64; NH] = [const { AtomicU64::new(0) }; NH];
static OWED: [[AtomicU64; MAXCPUS]; NH] = [const { [const { AtomicU64::new(0) }; MAXCPUS] }; NH];
static LEFT: [[AtomicU64; MAXCPUS]; NH] = [const { [const { AtomicU64::new(0) }; MAXCPUS] }; NH];
static RUNNING: [[AtomicBool; MAXCPUS]; NH] =
    [const { [const { AtomicBool::new(false) }; MAXCPUS] }; NH];
static SCHEDULED: [AtomicU64; NH] = [const { AtomicU64::new(0) }; NH];
static SERVED: [AtomicU64; NH] = [const { AtomicU64::new(0) }; NH];
static RUNS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: handles an interrupt is asked to schedule there (bit per handle).
static REQ: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static REQ_SERVED: AtomicU64 = AtomicU64::new(0);
/// Short-lived handles: per worker CPU, the sequence number last disestablished.
static TMP_DEAD: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static TMP_SEQ: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static TMP_MADE: AtomicU64 = AtomicU64::new(0);
static TMP_RUNS: AtomicU64 = AtomicU64::new(0);
static TMP_FAILED: AtomicU64 = AtomicU64::new(0);

fn handle(h: usize) -> SoftintHandle {
    SoftintHandle::from_raw(HANDLES[h].load(Ordering::Acquire))
}

fn handler(h: usize) {
    let cpu = curcpu().index();
    if RUNNING[h][cpu].swap(true, Ordering::AcqRel) {
        super::report(|| format!("softint: handler {h} entered twice at once on cpu{cpu}"));
    }
    let owed = OWED[h][cpu].swap(0, Ordering::AcqRel);
    SERVED[h].fetch_add(owed, Ordering::Relaxed);
    RUNS.fetch_add(1, Ordering::Relaxed);
    let left = LEFT[h][cpu].load(Ordering::Relaxed);
    if left > 0 {
        // Only this CPU's handler of `h` and its workers (pinned, with IRQs masked below)
        // touch LEFT[h][cpu]; the swap-free update is fine under that rule.
        LEFT[h][cpu].store(left - 1, Ordering::Relaxed);
        OWED[h][cpu].fetch_add(1, Ordering::AcqRel);
        SCHEDULED[h].fetch_add(1, Ordering::Relaxed);
        softint_schedule(handle(h));
    }
    RUNNING[h][cpu].store(false, Ordering::Release);
}

fn sgi_handler(_: usize) -> bool {
    let cpu = curcpu().index();
    let mut bits = REQ[cpu].swap(0, Ordering::AcqRel);
    while bits != 0 {
        let h = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        OWED[h][cpu].fetch_add(1, Ordering::AcqRel);
        SCHEDULED[h].fetch_add(1, Ordering::Relaxed);
        REQ_SERVED.fetch_add(1, Ordering::Relaxed);
        softint_schedule(handle(h));
    }
    true
}

fn tmp_handler(token: usize) {
    let cpu = token >> 40;
    let seq = (token & ((1 << 40) - 1)) as u64;
    if TMP_DEAD[cpu].load(Ordering::Acquire) >= seq {
        super::report(|| {
            format!("softint: short-lived handle {cpu}.{seq} ran after it was disestablished")
        });
    }
    TMP_RUNS.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn setup() -> Result<(), Failure> {
    for h in 0..NH {
        for c in 0..MAXCPUS {
            OWED[h][c].store(0, Ordering::Relaxed);
            LEFT[h][c].store(0, Ordering::Relaxed);
        }
        SCHEDULED[h].store(0, Ordering::Relaxed);
        SERVED[h].store(0, Ordering::Relaxed);
    }
    for c in 0..MAXCPUS {
        REQ[c].store(0, Ordering::Relaxed);
        TMP_DEAD[c].store(0, Ordering::Relaxed);
        TMP_SEQ[c].store(0, Ordering::Relaxed);
    }
    for c in [
        &RUNS,
        &REQUESTS,
        &REQ_SERVED,
        &TMP_MADE,
        &TMP_RUNS,
        &TMP_FAILED,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    super::ensure_sgi(SGI, crate::spl::IPL_VM, sgi_handler, 0)
        .map_err(|e| format!("softint: {e}"))?;
    for (h, &flags) in FLAGS.iter().enumerate() {
        let made = softint_establish(flags, handler, h)
            .ok_or_else(|| String::from("softint: the table is full"))?;
        HANDLES[h].store(made.to_raw(), Ordering::Release);
    }
    Ok(())
}

/// Establishes a soft interrupt, schedules it here and on other CPUs, disestablishes it at
/// once (while it may be pending or running), and checks it never runs afterwards.
fn short_lived(rng: &mut Rng) {
    let me = this_cpu(); // the worker is bound
    let seq = TMP_SEQ[me].fetch_add(1, Ordering::Relaxed) + 1;
    let flags = FLAGS[rng.below(NH as u64) as usize] | SOFTINT_MPSAFE;
    let Some(h) = softint_establish(flags, tmp_handler, (me << 40) | seq as usize) else {
        TMP_FAILED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TMP_MADE.fetch_add(1, Ordering::Relaxed);
    for _ in 0..1 + rng.below(3) {
        let t = super::random_cpu(rng);
        crate::sched::kpreempt_disable();
        softint_schedule_cpu(h, t);
        crate::sched::kpreempt_enable();
    }
    if rng.chance(1, 2) {
        super::relax(rng.below(8));
    }
    softint_disestablish(h);
    TMP_DEAD[me].store(seq, Ordering::Release);
}

pub(super) fn op(rng: &mut Rng) {
    let h = rng.below(NH as u64) as usize;
    match rng.below(9) {
        0..=2 => {
            crate::sched::kpreempt_disable();
            let me = this_cpu();
            OWED[h][me].fetch_add(1, Ordering::AcqRel);
            SCHEDULED[h].fetch_add(1, Ordering::Relaxed);
            softint_schedule(handle(h));
            crate::sched::kpreempt_enable();
        }
        3 | 4 => {
            let t = super::random_cpu(rng);
            crate::sched::kpreempt_disable();
            OWED[h][t].fetch_add(1, Ordering::AcqRel);
            SCHEDULED[h].fetch_add(1, Ordering::Relaxed);
            softint_schedule_cpu(handle(h), t);
            crate::sched::kpreempt_enable();
        }
        5 | 6 => {
            let t = super::random_cpu(rng);
            let bit = 1u64 << h;
            if REQ[t].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                REQUESTS.fetch_add(1, Ordering::Relaxed);
            }
            platform().send_ipi(IpiTarget::Cpu(t), SGI);
        }
        7 => {
            // Self-rescheduling: the handler schedules itself LEFT more times.
            let n = 1 + rng.below(4);
            let daif = crate::arch::aarch64::irq_save();
            let me = curcpu().index();
            // With IRQs masked the handler cannot run here meanwhile.
            LEFT[h][me].store(LEFT[h][me].load(Ordering::Relaxed) + n, Ordering::Relaxed);
            OWED[h][me].fetch_add(1, Ordering::AcqRel);
            SCHEDULED[h].fetch_add(1, Ordering::Relaxed);
            crate::arch::aarch64::irq_restore(daif);
            crate::sched::kpreempt_disable();
            softint_schedule(handle(h));
            crate::sched::kpreempt_enable();
        }
        _ => short_lived(rng),
    }
}

fn outstanding() -> u64 {
    OWED.iter().map(|a| sum(a)).sum::<u64>()
        + LEFT.iter().map(|a| sum(a)).sum::<u64>()
        + REQ
            .iter()
            .map(|r| u64::from(r.load(Ordering::Relaxed) != 0))
            .sum::<u64>()
}

pub(super) fn check_now() -> Result<(), Failure> {
    for h in 0..NH {
        let served = SERVED[h].load(Ordering::Relaxed);
        let scheduled = SCHEDULED[h].load(Ordering::Relaxed);
        if served > scheduled {
            return Err(format!(
                "softint: handle {h}: {served} served, only {scheduled} scheduled (duplicated)"
            ));
        }
    }
    Ok(())
}

pub(super) fn finish() -> Result<(), Failure> {
    let _ = wait_for(super::DRAIN_MS, || outstanding() == 0);
    for h in 0..NH {
        for c in super::online() {
            let o = OWED[h][c].load(Ordering::Acquire);
            if o != 0 {
                return Err(format!(
                    "softint: handle {h} on cpu{c}: {o} schedule(s) never served (lost)"
                ));
            }
        }
        expect_eq(
            &format!("softint: handle {h} served"),
            SERVED[h].load(Ordering::Relaxed),
            SCHEDULED[h].load(Ordering::Relaxed),
        )?;
    }
    expect_eq(
        "softint: interrupt requests served",
        REQ_SERVED.load(Ordering::Relaxed),
        REQUESTS.load(Ordering::Relaxed),
    )
}

pub(super) fn teardown() {
    for h in 0..NH {
        softint_disestablish(handle(h));
    }
}

pub(super) fn counts() -> String {
    format!(
        "{} scheduled, {} served, {} handler runs, {} from interrupts, {} short-lived ({} \
         runs, {} establish failures)",
        SCHEDULED
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<u64>(),
        SERVED
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<u64>(),
        RUNS.load(Ordering::Relaxed),
        REQ_SERVED.load(Ordering::Relaxed),
        TMP_MADE.load(Ordering::Relaxed),
        TMP_RUNS.load(Ordering::Relaxed),
        TMP_FAILED.load(Ordering::Relaxed)
    )
}
