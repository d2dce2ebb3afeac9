//! Mutexes, condition variables and the kernel lock: exact counts under contention, no lost
//! wakeups, and the rules of the API.

use crate::cpu::ncpu_online;
use crate::ktest;
use crate::ktest::suite::{sleep_until, spawn_joinable};

fn spawn(func: fn(usize), arg: usize, flags: u32) -> LwpRef {
    spawn_joinable(func, arg, PRI_NONE, flags, None)
}
use crate::kthread::*;
use crate::sync::condvar::KCondvar;
use crate::sync::kernel_lock::{kernel_lock, kernel_lock_held, kernel_unlock};
use crate::sync::mutex::KMutex;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A counter protected only by `LOCK` (a plain, non-atomic read-modify-write).
struct Shared(UnsafeCell<u64>);
// SAFETY: only accessed with LOCK held.
unsafe impl Sync for Shared {}

static LOCK: KMutex = KMutex::adaptive();
static COUNTER: Shared = Shared(UnsafeCell::new(0));
const INCREMENTS: u64 = 100_000;

fn increment(_: usize) {
    for _ in 0..INCREMENTS {
        let _g = LOCK.lock();
        // SAFETY: LOCK is held.
        unsafe {
            let v = core::ptr::read_volatile(COUNTER.0.get());
            core::ptr::write_volatile(COUNTER.0.get(), v + 1);
        }
    }
}

ktest! {
    #[timeout_ms(300_000)]
    fn adaptive_mutex_loses_no_increment_under_contention() {
        {
            let _g = LOCK.lock();
            // SAFETY: LOCK is held.
            unsafe { *COUNTER.0.get() = 0 };
        }
        let n = ncpu_online().clamp(2, 4);
        let mut threads = [None; 4];
        for (i, slot) in threads.iter_mut().enumerate().take(n) {
            *slot = Some(spawn(increment, i, KTHREAD_MPSAFE));
        }
        for l in threads.into_iter().flatten() {
            kthread_join(l);
        }
        let _g = LOCK.lock();
        // SAFETY: LOCK is held.
        let total = unsafe { *COUNTER.0.get() };
        assert_eq!(total, n as u64 * INCREMENTS, "{n} threads x {INCREMENTS} increments");
    }
}

/// A bounded buffer of 4 slots under BUF_LOCK, with two condition variables.
static BUF_LOCK: KMutex = KMutex::adaptive();
static NOT_EMPTY: KCondvar = KCondvar::new();
static NOT_FULL: KCondvar = KCondvar::new();
struct Ring(UnsafeCell<([u64; 4], usize, usize)>);
// SAFETY: only accessed with BUF_LOCK held.
unsafe impl Sync for Ring {}
static RING: Ring = Ring(UnsafeCell::new(([0; 4], 0, 0)));
static CONSUMED_SUM: AtomicU64 = AtomicU64::new(0);
static CONSUMED_N: AtomicU64 = AtomicU64::new(0);
const ITEMS: u64 = 20_000;

fn producer(id: usize) {
    for i in 0..ITEMS {
        let _g = BUF_LOCK.lock();
        // The count is re-read after every wait: no reference is held across cv_wait, which
        // releases the lock.
        // SAFETY: BUF_LOCK is held for every access to RING.
        while unsafe { (*RING.0.get()).2 } == 4 {
            NOT_FULL.cv_wait(&BUF_LOCK);
        }
        // SAFETY: BUF_LOCK is held for every access to RING.
        let ring = unsafe { &mut *RING.0.get() };
        ring.0[(ring.1 + ring.2) % 4] = (id as u64) * ITEMS + i + 1;
        ring.2 += 1;
        NOT_EMPTY.cv_signal();
    }
}

fn consumer(_: usize) {
    for _ in 0..ITEMS {
        let _g = BUF_LOCK.lock();
        // SAFETY: BUF_LOCK is held for every access to RING.
        while unsafe { (*RING.0.get()).2 } == 0 {
            NOT_EMPTY.cv_wait(&BUF_LOCK);
        }
        // SAFETY: BUF_LOCK is held for every access to RING.
        let ring = unsafe { &mut *RING.0.get() };
        let v = ring.0[ring.1];
        ring.1 = (ring.1 + 1) % 4;
        ring.2 -= 1;
        NOT_FULL.cv_signal();
        CONSUMED_SUM.fetch_add(v, Ordering::Relaxed);
        CONSUMED_N.fetch_add(1, Ordering::Relaxed);
    }
}

ktest! {
    #[timeout_ms(300_000)]
    fn producers_and_consumers_with_cv_wait_lose_no_wakeup() {
        CONSUMED_SUM.store(0, Ordering::Relaxed);
        CONSUMED_N.store(0, Ordering::Relaxed);
        let threads = [
            spawn(producer, 0, KTHREAD_MPSAFE),
            spawn(producer, 1, KTHREAD_MPSAFE),
            spawn(consumer, 2, KTHREAD_MPSAFE),
            spawn(consumer, 3, KTHREAD_MPSAFE),
        ];
        for l in threads {
            kthread_join(l);
        }
        let n = 2 * ITEMS;
        // Items are 1..=2*ITEMS exactly once each.
        assert_eq!(CONSUMED_N.load(Ordering::Relaxed), n);
        assert_eq!(CONSUMED_SUM.load(Ordering::Relaxed), n * (n + 1) / 2, "an item was lost or doubled");
    }
}

static HANDOFF: KMutex = KMutex::adaptive();
static CONTENDER_GOT_IT: AtomicBool = AtomicBool::new(false);

fn contend(_: usize) {
    HANDOFF.mutex_enter();
    CONTENDER_GOT_IT.store(true, Ordering::Release);
    HANDOFF.mutex_exit();
}

ktest! {
    fn mutex_exit_wakes_the_thread_sleeping_on_the_mutex() {
        CONTENDER_GOT_IT.store(false, Ordering::Release);
        HANDOFF.mutex_enter();
        let b = spawn(contend, 0, KTHREAD_MPSAFE);
        // The contender spins while we run and sleeps once we are off the CPU (we sleep a tick
        // at a time here); its only sleep is on HANDOFF.
        let asleep = sleep_until(5000, || {
            b.lwp().is_some_and(|t| t.state() == crate::sched::lwp::LwpState::Sleep)
        });
        if !asleep {
            HANDOFF.mutex_exit();
            kthread_join(b);
            panic!("the contender never went to sleep on the held mutex");
        }
        assert!(!CONTENDER_GOT_IT.load(Ordering::Acquire), "the contender entered a held mutex");
        HANDOFF.mutex_exit();
        // Not joined on failure: the contender would sleep forever.
        assert!(sleep_until(2000, || CONTENDER_GOT_IT.load(Ordering::Acquire)),
            "mutex_exit did not wake the thread sleeping on the mutex (not acquired after 2 s)");
        kthread_join(b);
    }
}

ktest! {
    fn cv_timedwait_times_out_when_nobody_signals() {
        let cv = KCondvar::new();
        let m = KMutex::adaptive();
        let _g = m.lock();
        let t0 = crate::arch::aarch64::counter();
        assert!(cv.cv_timedwait(&m, 3).is_err(), "cv_timedwait returned without a signal");
        let ticks = (crate::arch::aarch64::counter() - t0)
            / (crate::arch::aarch64::counter_frequency() / crate::clock::hz());
        assert!(ticks >= 2, "timed out after {ticks} ticks, asked for 3");
        assert!(m.mutex_owned(), "the mutex was not re-acquired");
    }
}

static HELD_WHILE_RUNNING: AtomicU64 = AtomicU64::new(0);
/// Set by the non-MPSAFE thread while its body runs (between waking and sleeping).
static BODY_RUNNING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static NOT_HELD_WHILE_RUNNING: AtomicU64 = AtomicU64::new(0);

fn non_mpsafe(_: usize) {
    for i in 0..50 {
        BODY_RUNNING.store(true, Ordering::SeqCst);
        if kernel_lock_held() {
            HELD_WHILE_RUNNING.fetch_add(1, Ordering::Relaxed);
        } else {
            NOT_HELD_WHILE_RUNNING.fetch_add(1, Ordering::Relaxed);
        }
        BODY_RUNNING.store(false, Ordering::SeqCst);
        if i % 2 == 0 {
            crate::kthread::kpause(1);
        } else {
            crate::sched::yield_now();
        }
    }
}

ktest! {
    #[timeout_ms(60_000)]
    fn non_mpsafe_thread_holds_the_kernel_lock_exactly_while_running() {
        HELD_WHILE_RUNNING.store(0, Ordering::Relaxed);
        NOT_HELD_WHILE_RUNNING.store(0, Ordering::Relaxed);
        let l = spawn(non_mpsafe, 0, 0);
        // Taking the kernel lock here is only possible while the thread does not hold it;
        // if it kept it while asleep, this would hang (and the watchdog would say so).
        let mut taken = 0;
        while l.lwp().is_some_and(|t| t.state() != crate::sched::lwp::LwpState::Zombie) && taken < 200 {
            kernel_lock();
            assert!(!BODY_RUNNING.load(Ordering::SeqCst),
                "the non-MPSAFE thread's body runs while we hold the kernel lock");
            kernel_unlock();
            taken += 1;
            crate::kthread::kpause(1);
        }
        kthread_join(l);
        assert_eq!(NOT_HELD_WHILE_RUNNING.load(Ordering::Relaxed), 0, "ran without the kernel lock");
        assert_eq!(HELD_WHILE_RUNNING.load(Ordering::Relaxed), 50);
        assert!(taken > 0);
        assert!(!kernel_lock_held());
    }
}

ktest! {
    fn spin_mutex_raises_the_ipl_and_restores_it_in_any_release_order() {
        use crate::spl::{IPL_NONE, IPL_SCHED, IPL_VM, curipl};
        let a = KMutex::spin(IPL_VM);
        let b = KMutex::spin(IPL_SCHED);
        a.mutex_enter();
        assert_eq!(curipl(), IPL_VM);
        b.mutex_enter();
        assert_eq!(curipl(), IPL_SCHED);
        a.mutex_exit();
        assert_eq!(curipl(), IPL_SCHED, "released out of order: still holding b");
        b.mutex_exit();
        assert_eq!(curipl(), IPL_NONE);
        assert!(a.mutex_tryenter());
        assert!(!b.mutex_owned());
        a.mutex_exit();
    }
}

ktest! {
    #[should_panic("does not own this adaptive mutex")]
    fn mutex_exit_by_a_non_owner_is_caught() {
        let m = KMutex::adaptive();
        m.mutex_exit();
    }
}

ktest! {
    #[should_panic("locking against myself")]
    fn recursive_enter_of_an_adaptive_mutex_is_caught() {
        let m = KMutex::adaptive();
        m.mutex_enter();
        m.mutex_enter();
    }
}

ktest! {
    #[should_panic("locking against myself: cpu")]
    fn recursive_enter_of_a_spin_mutex_is_caught() {
        let m = KMutex::spin(crate::spl::IPL_VM);
        m.mutex_enter();
        m.mutex_enter();
    }
}

ktest! {
    #[should_panic("kpause: would sleep with 1 spin mutex(es) held")]
    fn sleeping_with_a_spin_mutex_held_is_caught() {
        let m = KMutex::spin(crate::spl::IPL_VM);
        m.mutex_enter();
        crate::kthread::kpause(1);
    }
}

ktest! {
    #[should_panic("kpause: would sleep at IPL_VM")]
    fn sleeping_at_a_raised_ipl_is_caught() {
        let _s = crate::spl::splvm();
        crate::kthread::kpause(1);
    }
}

static SPIN_OUTER: KMutex = KMutex::spin(crate::spl::IPL_VM);
static SPIN_INNER: KMutex = KMutex::spin(crate::spl::IPL_SCHED);
/// The CPU the test runs on, plus one (0: none): the hook acts only there.
static SPIN_TEST_CPU: AtomicU64 = AtomicU64::new(0);

/// What an interrupt handler at IPL_SCHED that takes a spin mutex does, run in the window
/// after the test's last spin mutex dropped the CPU's count and before its saved IPL is
/// restored: it saves *its* IPL in the CPU's slot.
fn interrupt_takes_a_spin_mutex() {
    if SPIN_TEST_CPU.load(Ordering::Acquire) != crate::cpu::curcpu().index() as u64 + 1 {
        return;
    }
    // Once: the inner mutex's own release passes the point too.
    SPIN_TEST_CPU.store(0, Ordering::Release);
    let s = crate::spl::splraise(crate::spl::IPL_SCHED);
    SPIN_INNER.mutex_enter();
    SPIN_INNER.mutex_exit();
    crate::spl::splx(s);
}

// The last spin-mutex release restores the IPL saved when the first was taken, even when
// an interrupt takes and releases a spin mutex of its own between the count dropping and
// the restore (NetBSD's MUTEX_SPIN_SPLRESTORE reads the saved IPL before the count drops;
// reading it after left the thread at the interrupt's IPL).
ktest! {
    fn spin_exit_restores_its_saved_ipl_when_an_interrupt_takes_a_spin_mutex_in_between() {
        use crate::inject::{Point, arm, disarm};
        crate::sched::kpreempt_disable();
        SPIN_TEST_CPU.store(crate::cpu::curcpu().index() as u64 + 1, Ordering::Release);
        arm(Point::SpinCountDropped, interrupt_takes_a_spin_mutex);
        SPIN_OUTER.mutex_enter();
        SPIN_OUTER.mutex_exit();
        disarm(Point::SpinCountDropped);
        let hit = SPIN_TEST_CPU.swap(0, Ordering::AcqRel) == 0;
        let ipl = crate::spl::curipl();
        if ipl != crate::spl::IPL_NONE {
            crate::spl::splx(crate::spl::IPL_NONE);
        }
        crate::sched::kpreempt_enable();
        assert!(hit, "the injection point after the count drop was not reached");
        assert!(
            ipl == crate::spl::IPL_NONE,
            "mutex_exit left the thread at {ipl:?}, not IPL_NONE: it restored the IPL the \
             interrupt's spin mutex saved"
        );
    }
}
