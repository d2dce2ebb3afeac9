//! `condvar(9)`: condition variables used with an adaptive mutex.
//!
//! `cv_wait` links the thread on the condition variable's sleep queue *before* releasing the
//! mutex (under the queue lock), so a `cv_signal` issued by the next holder of the mutex always
//! finds it: no lost wakeups. As in NetBSD, wakeups may be spurious; callers re-check their
//! condition in a loop.
//!
//! Context: `cv_wait`/`cv_timedwait` in thread context at IPL_NONE with the mutex held;
//! `cv_signal`/`cv_broadcast` anywhere (usually with the mutex held).

use super::mutex::KMutex;
use crate::sched::sleepq::{SleepQueue, Wake};

/// A condition variable (`kcondvar_t`).
pub struct KCondvar {
    sleepers: SleepQueue,
}

/// `cv_timedwait` ran out of time (NetBSD's EWOULDBLOCK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl Default for KCondvar {
    fn default() -> Self {
        Self::new()
    }
}

impl KCondvar {
    /// `cv_init`.
    pub const fn new() -> Self {
        Self {
            sleepers: SleepQueue::new(),
        }
    }

    fn wait_inner(&self, m: &KMutex, deadline: Option<u64>, call: &str) -> Wake {
        assert!(
            !m.is_spin(),
            "{call}: only adaptive mutexes are supported with condition variables"
        );
        assert!(
            m.mutex_owned(),
            "{call}: the mutex is not held by this thread"
        );
        super::assert_sleepable(call);
        let wake = self.sleepers.sleep(deadline, || {
            m.mutex_exit();
            true
        });
        m.mutex_enter();
        wake
    }

    /// `cv_wait`: releases `m`, sleeps until signalled, re-acquires `m`.
    pub fn cv_wait(&self, m: &KMutex) {
        let _ = self.wait_inner(m, None, "cv_wait");
    }

    /// `cv_timedwait`: as `cv_wait`, but gives up after `ticks` clock ticks.
    pub fn cv_timedwait(&self, m: &KMutex, ticks: u64) -> Result<(), TimedOut> {
        let deadline = crate::clock::tick_deadline(ticks.max(1));
        match self.wait_inner(m, Some(deadline), "cv_timedwait") {
            Wake::Woken => Ok(()),
            Wake::TimedOut => Err(TimedOut),
        }
    }

    /// `cv_signal`: wakes one waiter, if any.
    pub fn cv_signal(&self) {
        if crate::inject::planted(crate::inject::Bug::DropWakeup) {
            return;
        }
        self.sleepers.wake_one();
    }

    /// `cv_broadcast`: wakes every waiter.
    pub fn cv_broadcast(&self) {
        self.sleepers.wake_all();
    }

    /// `cv_has_waiters`.
    pub fn cv_has_waiters(&self) -> bool {
        !self.sleepers.is_empty()
    }
}
