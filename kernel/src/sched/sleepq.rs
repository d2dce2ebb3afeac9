//! Sleep queues: where threads wait for a condition (a condition variable, a contended
//! adaptive mutex, a join, a timed pause), and the timeouts that end such waits.
//!
//! Protocol, which rules out lost wakeups: a sleeper masks IRQs, locks the queue, links itself
//! in and marks itself asleep, unlocks and switches away. A waker locks the queue, unlinks
//! sleepers, unlocks and makes them runnable. Whoever unlinks a sleeper (a waker, or the
//! timeout code) records why in `sleep_result` under the queue lock. A thread woken before it
//! finished switching away is simply run again (the scheduler waits for `on_cpu` to clear
//! before running a thread elsewhere).
//!
//! Timeouts live in one list, checked from every CPU's clock tick. The tick holds the list's
//! lock while it locks a sleeper's queue, and a sleeper removes its own entry (taking the same
//! lock) before it returns, so the tick never touches a queue that has gone away. A timeout that
//! fires before its sleeper is linked in leaves `tmo_fired` set, and the sleeper then does not
//! sleep at all; its `check` still runs (it may have released something, as `cv_timedwait`
//! releases the mutex), and the sleep returns `TimedOut`.
//!
//! A sleeper holding the kernel lock gives it up while switched out and takes it back once it
//! runs again with IRQs unmasked (`sync::kernel_lock`).

use super::lwp::Lwp;
use super::{curlwp_ptr, setrunnable, switch_away};
use crate::arch::aarch64 as arch;
use crate::sync::SpinLock;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The waiters of one wait channel, linked through `Lwp::link`.
pub struct SleepQueue {
    waiters: SpinLock<Waiters>,
}

struct Waiters {
    head: *mut Lwp,
    tail: *mut Lwp,
}

// SAFETY: the raw pointers are LWPs, which live until reaped; they are only followed under the
// queue's lock.
unsafe impl Send for Waiters {}

const RESULT_PENDING: u32 = 0;
const RESULT_WOKEN: u32 = 1;
const RESULT_TIMEDOUT: u32 = 2;

/// How a sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A wakeup on the queue.
    Woken,
    /// The timeout expired.
    TimedOut,
}

struct Timeout {
    deadline: u64,
    lwp: *mut Lwp,
    sq: *const SleepQueue,
}

// SAFETY: see the module documentation: entries are only followed under TIMEOUTS' lock, and a
// sleeper removes its entry before its queue or itself can go away.
unsafe impl Send for Timeout {}

static TIMEOUTS: SpinLock<Vec<Timeout>> = SpinLock::new(Vec::new());

/// Heap bytes held by the timeout table (its capacity). Context: any.
pub(crate) fn table_bytes() -> usize {
    TIMEOUTS.lock().capacity() * core::mem::size_of::<Timeout>()
}

/// Why the LWP's last sleep ended (`RESULT_*`), written by whoever unlinked it.
fn result(l: &Lwp) -> &AtomicU32 {
    &l.wake_reason
}

/// Set when its timeout fired before it was linked on the queue.
fn tmo_fired(l: &Lwp) -> &AtomicBool {
    &l.tmo_fired
}

impl Default for SleepQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl SleepQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            waiters: SpinLock::new(Waiters {
                head: core::ptr::null_mut(),
                tail: core::ptr::null_mut(),
            }),
        }
    }

    /// Whether nobody waits (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.waiters.lock().head.is_null()
    }

    /// Puts the current thread to sleep on this queue until a wakeup, or until the counter
    /// reaches `deadline`. `check` runs under the queue lock just before sleeping, always once;
    /// if it returns false the thread does not sleep (the condition it waits for already holds)
    /// and `Woken` is returned. If the timeout fired before the thread got onto the queue, it
    /// does not sleep either and `TimedOut` is returned.
    ///
    /// Context: thread, IPL_NONE, no spin mutex held (asserted by the caller's API).
    pub fn sleep(&self, deadline: Option<u64>, check: impl FnOnce() -> bool) -> Wake {
        let me = curlwp_ptr();
        // SAFETY: curlwp is the running thread, alive while it runs.
        let l = unsafe { &*me };
        result(l).store(RESULT_PENDING, Ordering::Relaxed);
        tmo_fired(l).store(false, Ordering::Relaxed);
        if let Some(deadline) = deadline {
            TIMEOUTS.lock().push(Timeout {
                deadline,
                lwp: me,
                sq: self,
            });
            crate::inject::point(crate::inject::Point::SleepTimeoutArmed);
        }
        let daif = arch::irq_save();
        let mut w = self.waiters.lock();
        // `check` first, always: it is the caller's commitment to sleep (cv_wait releases its
        // mutex in it), which must happen whether or not the timeout already fired.
        let proceed = check();
        let sleeping = proceed && !tmo_fired(l).load(Ordering::Relaxed);
        if sleeping {
            // SAFETY: `link` is owned by the queue lock we hold; the thread is on no other queue.
            unsafe { *l.link.get() = core::ptr::null_mut() };
            if w.tail.is_null() {
                w.head = me;
            } else {
                // SAFETY: the tail is a live LWP linked on this queue (lock held).
                unsafe { *(*w.tail).link.get() = me };
            }
            w.tail = me;
            l.wchan.store(
                self as *const SleepQueue as *mut SleepQueue,
                Ordering::Relaxed,
            );
            l.set_state(super::lwp::LwpState::Sleep);
        }
        drop(w);
        let mut biglocks = 0;
        if sleeping {
            biglocks = crate::sync::kernel_lock::release_for_switch(l);
            // A softint thread blocking in a handler sleeps at its soft level: the CPU goes on
            // at IPL_NONE, and the (bound) thread takes its level back when it resumes.
            let ci = crate::cpu::curcpu();
            let soft = if l.softint_level().is_some() {
                ci.ipl.swap(0, Ordering::Relaxed)
            } else {
                0
            };
            switch_away(false);
            if soft != 0 {
                crate::cpu::curcpu().ipl.store(soft, Ordering::Relaxed);
            }
        }
        arch::irq_restore(daif);
        crate::sync::kernel_lock::reacquire_after_switch(biglocks);
        if deadline.is_some() {
            TIMEOUTS.lock().retain(|t| t.lwp != me);
        }
        l.wchan.store(core::ptr::null_mut(), Ordering::Relaxed);
        if !sleeping {
            return if tmo_fired(l).load(Ordering::Relaxed) {
                Wake::TimedOut
            } else {
                Wake::Woken
            };
        }
        match result(l).load(Ordering::Acquire) {
            RESULT_TIMEDOUT => Wake::TimedOut,
            _ => Wake::Woken,
        }
    }

    /// Unlinks `l` if it is on this queue (lock held). Returns whether it was.
    fn unlink(w: &mut Waiters, l: *mut Lwp) -> bool {
        let mut prev: *mut Lwp = core::ptr::null_mut();
        let mut cur = w.head;
        while !cur.is_null() {
            // SAFETY: linked LWPs are alive and their links are owned by this lock.
            let next = unsafe { *(*cur).link.get() };
            if cur == l {
                if prev.is_null() {
                    w.head = next;
                } else {
                    // SAFETY: as above.
                    unsafe { *(*prev).link.get() = next };
                }
                if w.tail == l {
                    w.tail = prev;
                }
                return true;
            }
            prev = cur;
            cur = next;
        }
        false
    }

    fn pop(w: &mut Waiters) -> *mut Lwp {
        let l = w.head;
        if !l.is_null() {
            // SAFETY: linked LWPs are alive and their links are owned by this lock.
            w.head = unsafe { *(*l).link.get() };
            if w.head.is_null() {
                w.tail = core::ptr::null_mut();
            }
        }
        l
    }

    /// Wakes the longest sleeper. Returns whether there was one. Context: any.
    pub fn wake_one(&self) -> bool {
        crate::inject::point(crate::inject::Point::Waking);
        let l = {
            let mut w = self.waiters.lock();
            let l = Self::pop(&mut w);
            if !l.is_null() {
                // SAFETY: just unlinked under the lock; alive until it runs and returns.
                unsafe { result(&*l).store(RESULT_WOKEN, Ordering::Release) };
            }
            l
        };
        if l.is_null() {
            return false;
        }
        setrunnable(l);
        super::maybe_preempt();
        true
    }

    /// Wakes every sleeper. Returns how many. Context: any.
    pub fn wake_all(&self) -> usize {
        self.wake_all_after(|| {})
    }

    /// Waits until no CPU is inside this queue's lock (takes and drops it). A thread that saw
    /// a condition which [`wake_all_after`](Self::wake_all_after) set under the lock calls it
    /// before freeing the queue's owner. Context: any.
    pub fn barrier(&self) {
        drop(self.waiters.lock());
    }

    /// Runs `f` under the queue's lock, then wakes every sleeper; returns how many. After the
    /// lock is dropped the queue is not touched again, so a thread that sees what `f` did and
    /// then passes [`barrier`](Self::barrier) may free it. Context: any.
    pub fn wake_all_after(&self, f: impl FnOnce()) -> usize {
        crate::inject::point(crate::inject::Point::Waking);
        let mut list = {
            let mut w = self.waiters.lock();
            f();
            let head = w.head;
            w.head = core::ptr::null_mut();
            w.tail = core::ptr::null_mut();
            let mut l = head;
            while !l.is_null() {
                // SAFETY: unlinked under the lock; each stays alive until it runs again.
                unsafe {
                    result(&*l).store(RESULT_WOKEN, Ordering::Release);
                    l = *(*l).link.get();
                }
            }
            head
        };
        let mut n = 0;
        while !list.is_null() {
            // SAFETY: the chain was detached above; read the link before the thread can run
            // and reuse it.
            let next = unsafe { *(*list).link.get() };
            setrunnable(list);
            list = next;
            n += 1;
        }
        if n > 0 {
            super::maybe_preempt();
        }
        n
    }
}

/// Fires expired timeouts. Called from every CPU's clock tick with the counter value.
pub(crate) fn tick(now: u64) {
    let Some(mut timeouts) = TIMEOUTS.try_lock() else {
        return;
    };
    if !timeouts.iter().any(|t| t.deadline <= now) {
        return;
    }
    let mut i = 0;
    while i < timeouts.len() {
        if timeouts[i].deadline > now {
            i += 1;
            continue;
        }
        let t = timeouts.swap_remove(i);
        // SAFETY: the sleeper cannot return (and free its queue or itself) before removing
        // its entry under TIMEOUTS' lock, which we hold.
        let (l, sq) = unsafe { (&*t.lwp, &*t.sq) };
        let found = {
            let mut w = sq.waiters.lock();
            if SleepQueue::unlink(&mut w, t.lwp) {
                result(l).store(RESULT_TIMEDOUT, Ordering::Release);
                true
            } else {
                if result(l).load(Ordering::Relaxed) == RESULT_PENDING {
                    // Not linked in yet: stop it from sleeping.
                    tmo_fired(l).store(true, Ordering::Relaxed);
                }
                false
            }
        };
        if found {
            setrunnable(t.lwp);
        }
    }
}
