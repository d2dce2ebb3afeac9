//! The `locks` torture: adaptive and spin mutexes guarding plain counters, the kernel lock
//! (nested), spin mutexes taken inside raised-IPL sections, `cv_timedwait` that must time out,
//! and condition-variable round trips with one partner thread per CPU.
//!
//! Counts: each guarded counter equals its shadow (incremented atomically inside the same
//! critical section), checked under the lock at intervals and at the end, so a broken mutual
//! exclusion shows as a lost increment; every round-trip request is served exactly once by the
//! partner (a lost wakeup stalls the round trip, which the driver reports); every timed wait
//! with no signaller times out.

use super::{Failure, Rng, expect_eq, relax};
use crate::cpu::MAXCPUS;
use crate::kthread::LwpRef;
use crate::spl::{IPL_HIGH, IPL_SCHED, IPL_SOFTNET, IPL_VM, Ipl};
use crate::sync::condvar::KCondvar;
use crate::sync::mutex::KMutex;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A plain counter guarded by a lock, with an atomic shadow bumped inside the same section.
struct Guarded {
    value: UnsafeCell<u64>,
    shadow: AtomicU64,
}

// SAFETY: `value` is only touched with its lock held.
unsafe impl Sync for Guarded {}

impl Guarded {
    const fn new() -> Self {
        Self {
            value: UnsafeCell::new(0),
            shadow: AtomicU64::new(0),
        }
    }

    /// A non-atomic increment with a window in the middle. The lock must be held.
    fn bump(&self, window: u64) {
        // SAFETY: the caller holds the lock that guards `value`.
        let v = unsafe { core::ptr::read_volatile(self.value.get()) };
        relax(window);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.value.get(), v + 1) };
        self.shadow.fetch_add(1, Ordering::Relaxed);
    }

    /// `value - shadow` (0 when nothing was lost). The lock must be held.
    fn diff(&self) -> (u64, u64) {
        // SAFETY: the caller holds the lock.
        let v = unsafe { core::ptr::read_volatile(self.value.get()) };
        (v, self.shadow.load(Ordering::Relaxed))
    }

    fn reset(&self) {
        // SAFETY: called in setup, before any worker runs.
        unsafe { core::ptr::write_volatile(self.value.get(), 0) };
        self.shadow.store(0, Ordering::Relaxed);
    }
}

const NADAPTIVE: usize = 4;
static ADAPTIVE: [KMutex; NADAPTIVE] = [const { KMutex::adaptive() }; NADAPTIVE];
static ADAPTIVE_DATA: [Guarded; NADAPTIVE] = [const { Guarded::new() }; NADAPTIVE];
static SPIN: [KMutex; 3] = [
    KMutex::spin(IPL_SOFTNET),
    KMutex::spin(IPL_VM),
    KMutex::spin(IPL_SCHED),
];
static SPIN_DATA: [Guarded; 3] = [const { Guarded::new() }; 3];
static BIGLOCK_DATA: Guarded = Guarded::new();

/// One CPU's round-trip box: the worker of that CPU asks, the partner answers.
struct PingPong {
    m: KMutex,
    ask: KCondvar,
    answer: KCondvar,
    /// Requests made and answered, under `m`.
    asked: UnsafeCell<u64>,
    answered: UnsafeCell<u64>,
    stop: AtomicBool,
}

// SAFETY: the cells are only touched with `m` held.
unsafe impl Sync for PingPong {}

static BOXES: [PingPong; MAXCPUS] = [const {
    PingPong {
        m: KMutex::adaptive(),
        ask: KCondvar::new(),
        answer: KCondvar::new(),
        asked: UnsafeCell::new(0),
        answered: UnsafeCell::new(0),
        stop: AtomicBool::new(false),
    }
}; MAXCPUS];
static NOBODY: KCondvar = KCondvar::new();
static NOBODY_M: KMutex = KMutex::adaptive();

static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
static SERVED: AtomicU64 = AtomicU64::new(0);
static TIMEDWAITS: AtomicU64 = AtomicU64::new(0);
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static TRYFAILS: AtomicU64 = AtomicU64::new(0);
static PARTNERS: crate::sync::SpinLock<Vec<LwpRef>> = crate::sync::SpinLock::new(Vec::new());

/// The partner of CPU `cpu`'s box: answers every request, until told to stop.
fn partner(cpu: usize) {
    let b = &BOXES[cpu];
    b.m.mutex_enter();
    loop {
        // SAFETY: `m` is held.
        while unsafe { *b.asked.get() == *b.answered.get() } && !b.stop.load(Ordering::Acquire) {
            b.ask.cv_wait(&b.m);
        }
        // SAFETY: `m` is held.
        let (asked, answered) = unsafe { (*b.asked.get(), *b.answered.get()) };
        if asked == answered {
            break; // told to stop, nothing left
        }
        if asked != answered + 1 {
            super::report(|| {
                format!("locks: box {cpu}: {asked} asked, {answered} answered (one at a time)")
            });
        }
        // SAFETY: `m` is held.
        unsafe { *b.answered.get() = asked };
        SERVED.fetch_add(asked - answered, Ordering::Relaxed);
        if asked % 2 == 0 {
            b.answer.cv_broadcast();
        } else {
            b.answer.cv_signal();
        }
    }
    b.m.mutex_exit();
}

pub(super) fn setup() -> Result<(), Failure> {
    for g in ADAPTIVE_DATA.iter().chain(SPIN_DATA.iter()) {
        g.reset();
    }
    BIGLOCK_DATA.reset();
    for c in [&ROUND_TRIPS, &SERVED, &TIMEDWAITS, &TIMEOUTS, &TRYFAILS] {
        c.store(0, Ordering::Relaxed);
    }
    let mut partners = Vec::new();
    for cpu in super::online() {
        let b = &BOXES[cpu];
        b.m.mutex_enter();
        // SAFETY: `m` is held.
        unsafe {
            *b.asked.get() = 0;
            *b.answered.get() = 0;
        }
        b.stop.store(false, Ordering::Relaxed);
        b.m.mutex_exit();
        partners.push(super::spawn_helper(partner, cpu, None)?);
    }
    *PARTNERS.lock() = partners;
    Ok(())
}

/// A round trip through this CPU's box (the worker is bound, so the box is its own).
fn round_trip(rng: &mut Rng) {
    let b = &BOXES[super::this_cpu()];
    b.m.mutex_enter();
    // SAFETY: `m` is held.
    let want = unsafe {
        *b.asked.get() += 1;
        *b.asked.get()
    };
    b.ask.cv_signal();
    if rng.chance(1, 4) {
        relax(rng.below(4));
    }
    // SAFETY: `m` is held.
    while unsafe { *b.answered.get() } < want {
        b.answer.cv_wait(&b.m);
    }
    b.m.mutex_exit();
    ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn op(rng: &mut Rng) {
    match rng.below(10) {
        0..=2 => {
            let i = rng.below(NADAPTIVE as u64) as usize;
            if rng.chance(1, 4) {
                if !ADAPTIVE[i].mutex_tryenter() {
                    TRYFAILS.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            } else {
                ADAPTIVE[i].mutex_enter();
            }
            ADAPTIVE_DATA[i].bump(rng.below(4));
            if rng.chance(1, 8) {
                crate::sched::yield_now(); // sleepers and spinners pile up behind
            }
            ADAPTIVE[i].mutex_exit();
        }
        3 | 4 => {
            let i = rng.below(3) as usize;
            let _g = SPIN[i].lock();
            SPIN_DATA[i].bump(rng.below(3));
        }
        5 => {
            crate::sync::kernel_lock::kernel_lock();
            if rng.chance(1, 2) {
                crate::sync::kernel_lock::kernel_lock();
                BIGLOCK_DATA.bump(rng.below(3));
                crate::sync::kernel_lock::kernel_unlock();
            } else {
                BIGLOCK_DATA.bump(rng.below(3));
            }
            if rng.chance(1, 8) {
                crate::sched::yield_now(); // gives the kernel lock up while away
            }
            crate::sync::kernel_lock::kernel_unlock();
        }
        6 => {
            // spl nesting: a raised section, a spin mutex at or above it inside, an adaptive
            // mutex outside.
            let i = rng.below(NADAPTIVE as u64) as usize;
            ADAPTIVE[i].mutex_enter();
            let levels: [Ipl; 3] = [IPL_SOFTNET, IPL_VM, IPL_SCHED];
            let l = rng.below(3) as usize;
            let s = crate::spl::splraise(levels[l]);
            {
                let j = l + rng.below((3 - l) as u64) as usize;
                let _g = SPIN[j].lock();
                SPIN_DATA[j].bump(1);
            }
            let inner = crate::spl::splraise(IPL_HIGH);
            crate::spl::splx(inner);
            let now = crate::spl::curipl();
            crate::spl::splx(s);
            if now != levels[l].max(s) {
                super::report(|| format!("locks: after a nested splx the IPL is {now}"));
            }
            ADAPTIVE_DATA[i].bump(0);
            ADAPTIVE[i].mutex_exit();
        }
        7 | 8 => round_trip(rng),
        _ => {
            NOBODY_M.mutex_enter();
            TIMEDWAITS.fetch_add(1, Ordering::Relaxed);
            if NOBODY.cv_timedwait(&NOBODY_M, 1).is_err() {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            }
            NOBODY_M.mutex_exit();
        }
    }
}

fn check_guarded(what: &str, m: &KMutex, g: &Guarded) -> Result<(), Failure> {
    let (v, shadow) = {
        let _l = m.lock();
        g.diff()
    };
    expect_eq(what, v, shadow)
}

pub(super) fn check_now() -> Result<(), Failure> {
    for i in 0..NADAPTIVE {
        check_guarded(
            &format!("locks: adaptive mutex {i}'s counter"),
            &ADAPTIVE[i],
            &ADAPTIVE_DATA[i],
        )?;
    }
    for i in 0..3 {
        check_guarded(
            &format!("locks: spin mutex {i}'s counter"),
            &SPIN[i],
            &SPIN_DATA[i],
        )?;
    }
    crate::sync::kernel_lock::kernel_lock();
    let (v, shadow) = BIGLOCK_DATA.diff();
    crate::sync::kernel_lock::kernel_unlock();
    expect_eq("locks: the kernel lock's counter", v, shadow)
}

pub(super) fn finish() -> Result<(), Failure> {
    check_now()?;
    expect_eq(
        "locks: round trips answered",
        SERVED.load(Ordering::Relaxed),
        ROUND_TRIPS.load(Ordering::Relaxed),
    )?;
    expect_eq(
        "locks: timed waits with no signaller that timed out",
        TIMEOUTS.load(Ordering::Relaxed),
        TIMEDWAITS.load(Ordering::Relaxed),
    )
}

pub(super) fn teardown() {
    for cpu in super::online() {
        let b = &BOXES[cpu];
        b.m.mutex_enter();
        b.stop.store(true, Ordering::Release);
        b.ask.cv_broadcast();
        b.m.mutex_exit();
    }
    let partners = core::mem::take(&mut *PARTNERS.lock());
    for l in partners {
        crate::kthread::kthread_join(l);
    }
}

pub(super) fn counts() -> String {
    let adaptive: u64 = ADAPTIVE_DATA
        .iter()
        .map(|g| g.shadow.load(Ordering::Relaxed))
        .sum();
    let spin: u64 = SPIN_DATA
        .iter()
        .map(|g| g.shadow.load(Ordering::Relaxed))
        .sum();
    format!(
        "{adaptive} adaptive sections ({} tryenter misses), {spin} spin sections, {} kernel-lock \
         sections, {} round trips ({} answered), {} timed waits ({} timed out)",
        TRYFAILS.load(Ordering::Relaxed),
        BIGLOCK_DATA.shadow.load(Ordering::Relaxed),
        ROUND_TRIPS.load(Ordering::Relaxed),
        SERVED.load(Ordering::Relaxed),
        TIMEDWAITS.load(Ordering::Relaxed),
        TIMEOUTS.load(Ordering::Relaxed)
    )
}
