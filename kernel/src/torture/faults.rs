//! Seeded fault injection for the tortures: hooks on every injection point
//! (`crate::inject::Point`) that, at random, spin a little (a delay where a race window is),
//! preempt the running thread where an interrupt could, or send a spurious Nop IPI to a random
//! CPU; and a failure hook that makes `kthread_create` and `softint_establish` fail at a fixed
//! rate. Each CPU draws from its own generator (seeded from the run's seed), advanced with
//! IRQs masked, so the choices depend only on the seed and the order of events on that CPU.

// Outside the test image the injection points do not exist: the hooks are built but never
// armed (`run` refuses injection there).
#![cfg_attr(not(feature = "ktest"), allow(dead_code, unused_imports))]

use super::Rng;
use crate::cpu::{MAXCPUS, curcpu};
use crate::inject::{POINTS, Point, Site};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Per CPU: the generator's state.
static STATE: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
/// Per CPU: the driver is creating its own threads (not to be failed).
static EXEMPT: [AtomicBool; MAXCPUS] = [const { AtomicBool::new(false) }; MAXCPUS];
static DELAYS: AtomicU64 = AtomicU64::new(0);
static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Odds, out of 1024 passes, of each fault.
const DELAY_IN_1024: u64 = 24;
const PREEMPT_IN_1024: u64 = 8;
const SPURIOUS_IN_1024: u64 = 2;
/// Odds, out of 1024 calls, that an allocation fails.
const FAIL_IN_1024: u64 = 64;

/// Draws from this CPU's generator (any context).
fn draw(n: u64) -> (usize, u64) {
    let daif = crate::arch::aarch64::irq_save();
    let cpu = curcpu().index();
    let mut r = Rng::new(STATE[cpu].load(Ordering::Relaxed));
    let v = r.below(n);
    STATE[cpu].store(r.0, Ordering::Relaxed);
    crate::arch::aarch64::irq_restore(daif);
    (cpu, v)
}

/// The hook on the points inside the scheduler's and the spl's own paths: maybe a delay.
fn hook_delay() {
    let (_, v) = draw(1024);
    if v < DELAY_IN_1024 {
        DELAYS.fetch_add(1, Ordering::Relaxed);
        super::relax(1 + v % 4);
    }
}

/// The hook on the points outside them (a mutex release, a wakeup, an IPI about to be sent):
/// maybe a delay, maybe a preemption (where one is allowed), maybe a spurious interrupt.
fn hook() {
    let (_, v) = draw(1024);
    if v < DELAY_IN_1024 {
        DELAYS.fetch_add(1, Ordering::Relaxed);
        super::relax(1 + v % 4);
    } else if v < DELAY_IN_1024 + PREEMPT_IN_1024 {
        // Only where an interrupt could preempt: IRQs unmasked (checked by
        // `inject_preemption`), IPL_NONE, outside interrupt handlers (checked by the
        // scheduler's preemption point).
        if !crate::arch::aarch64::irqs_masked() {
            PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "ktest")]
            crate::sched::inject_preemption();
        }
    } else if v < DELAY_IN_1024 + PREEMPT_IN_1024 + SPURIOUS_IN_1024 {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        let n = super::nonline();
        let target = super::online().nth((v as usize) % n as usize).unwrap_or(0);
        crate::intr::ipi_send(target, crate::intr::Ipi::Nop);
    }
}

/// The failure hook.
fn fail(_site: Site) -> bool {
    let (cpu, v) = draw(1024);
    if EXEMPT[cpu].load(Ordering::Relaxed) {
        return false;
    }
    let f = v < FAIL_IN_1024;
    if f {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    f
}

/// Arms every injection point and the failure sites, seeding each CPU's generator from `seed`.
pub(super) fn arm(seed: u64) {
    let mut r = Rng::new(seed);
    for s in &STATE {
        s.store(r.next_u64(), Ordering::Relaxed);
    }
    for c in [&DELAYS, &PREEMPTIONS, &SPURIOUS, &FAILURES] {
        c.store(0, Ordering::Relaxed);
    }
    // The points exist only in the test image; `run` refuses injection elsewhere.
    #[cfg(feature = "ktest")]
    {
        for p in POINTS {
            let full = matches!(p, Point::MutexReleasing | Point::Waking | Point::IpiSending);
            crate::inject::arm(p, if full { hook } else { hook_delay });
        }
        crate::inject::arm_failures(fail);
    }
}

/// Disarms everything [`arm`] armed.
pub(super) fn disarm() {
    #[cfg(feature = "ktest")]
    {
        for p in POINTS {
            crate::inject::disarm(p);
        }
        crate::inject::disarm_failures();
    }
}

/// Exempts (or not) this CPU's allocations from failure: the driver's own threads. The caller
/// is a thread that is not preempted in between (it sets and clears around one call).
pub(super) fn exempt(on: bool) {
    crate::sched::kpreempt_disable();
    EXEMPT[curcpu().index()].store(on, Ordering::Relaxed);
    crate::sched::kpreempt_enable();
}

/// The injection counts, for the run's summary.
pub(super) fn counts() -> alloc::string::String {
    alloc::format!(
        "{} delays, {} preemptions, {} spurious interrupts, {} allocation failures",
        DELAYS.load(Ordering::Relaxed),
        PREEMPTIONS.load(Ordering::Relaxed),
        SPURIOUS.load(Ordering::Relaxed),
        FAILURES.load(Ordering::Relaxed)
    )
}
