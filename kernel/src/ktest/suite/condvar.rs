//! condvar(9): how many waiters `cv_signal` and `cv_broadcast` wake.
//!
//! Each test puts [`WAITERS`] threads to sleep in `cv_wait` and, holding the mutex, counts the
//! ones no longer asleep right after a wakeup call: the woken threads were made runnable
//! before the call returned, and cannot get past the mutex the test still holds, so the count
//! is exact.

use crate::ktest;
use crate::ktest::suite::{sleep_until, spawn_joinable};
use crate::kthread::{KTHREAD_MPSAFE, LwpRef, PRI_NONE, kthread_join};
use crate::sched::lwp::LwpState;
use crate::sync::condvar::KCondvar;
use crate::sync::mutex::KMutex;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Threads waiting on [`CV`] in each test.
const WAITERS: usize = 4;

static CV_LOCK: KMutex = KMutex::adaptive();
static CV: KCondvar = KCondvar::new();
/// Waiters that took [`CV_LOCK`] and are about to `cv_wait` (counted under the lock).
static ENTERED: AtomicUsize = AtomicUsize::new(0);
/// Waiters that returned from `cv_wait`.
static RETURNED: AtomicUsize = AtomicUsize::new(0);

/// One `cv_wait` (no predicate loop: this kernel has no spurious wakeups, and a test that
/// counts wakeups must not hide extra ones), then exit.
fn waiter(_: usize) {
    let _g = CV_LOCK.lock();
    ENTERED.fetch_add(1, Ordering::AcqRel);
    CV.cv_wait(&CV_LOCK);
    RETURNED.fetch_add(1, Ordering::AcqRel);
}

fn asleep(threads: &[LwpRef]) -> usize {
    threads
        .iter()
        .filter(|l| l.lwp().is_some_and(|t| t.state() == LwpState::Sleep))
        .count()
}

/// Starts the waiters and returns once all are asleep on [`CV`], with [`CV_LOCK`] held.
fn start_waiters() -> [LwpRef; WAITERS] {
    ENTERED.store(0, Ordering::Release);
    RETURNED.store(0, Ordering::Release);
    let threads =
        core::array::from_fn(|i| spawn_joinable(waiter, i, PRI_NONE, KTHREAD_MPSAFE, None));
    // Every waiter counted itself under the lock before cv_wait, which links it on the
    // condition variable's queue and only then marks it asleep: with the lock held, ENTERED
    // at WAITERS and all of them asleep means all of them are on the queue.
    let mut seen = (0, 0);
    let all_asleep = sleep_until(5000, || {
        CV_LOCK.mutex_enter();
        seen = (ENTERED.load(Ordering::Acquire), asleep(&threads));
        if seen == (WAITERS, WAITERS) {
            return true;
        }
        CV_LOCK.mutex_exit();
        false
    });
    assert!(
        all_asleep,
        "only {} of {WAITERS} waiters reached cv_wait and {} were asleep after 5 s",
        seen.0, seen.1
    );
    threads
}

/// Releases [`CV_LOCK`], wakes whoever is still waiting (with `cv_broadcast`, repeated in
/// case it wakes too few) and joins every waiter.
fn finish(threads: [LwpRef; WAITERS]) {
    CV_LOCK.mutex_exit();
    let all_returned = sleep_until(5000, || {
        let _g = CV_LOCK.lock();
        CV.cv_broadcast();
        RETURNED.load(Ordering::Acquire) == WAITERS
    });
    assert!(
        all_returned,
        "only {} of {WAITERS} waiters returned from cv_wait after repeated cv_broadcast",
        RETURNED.load(Ordering::Acquire)
    );
    for l in threads {
        kthread_join(l);
    }
}

ktest! {
    fn cv_signal_wakes_exactly_one_waiter() {
        let threads = start_waiters();
        CV.cv_signal();
        let first = WAITERS - asleep(&threads);
        CV.cv_signal();
        let second = WAITERS - asleep(&threads);
        finish(threads);
        assert_eq!(first, 1,
            "cv_signal with {WAITERS} waiters woke {first}; it must wake exactly one");
        assert_eq!(second, 2,
            "a second cv_signal left {second} of {WAITERS} waiters woken; it must wake exactly one more");
    }
}

ktest! {
    fn cv_broadcast_wakes_every_waiter() {
        let threads = start_waiters();
        CV.cv_broadcast();
        let woken = WAITERS - asleep(&threads);
        finish(threads);
        assert_eq!(woken, WAITERS,
            "cv_broadcast with {WAITERS} waiters woke {woken}; it must wake every waiter");
    }
}
