//! The kernel lock (NetBSD's `KERNEL_LOCK`): one recursive lock for code that is not MPSAFE.
//!
//! Threads created without KTHREAD_MPSAFE hold it whenever they run: the scheduler releases
//! all of a thread's holds when it switches away from it (sleep or preemption) and takes the
//! same number back when the thread runs again. It is a spinning lock owned by a thread.
//!
//! Context: thread.

use crate::sched::lwp::Lwp;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

static OWNER: AtomicPtr<Lwp> = AtomicPtr::new(core::ptr::null_mut());
static COUNT: AtomicU32 = AtomicU32::new(0);

/// Takes the kernel lock (recursively if the current thread holds it).
pub fn kernel_lock() {
    acquire_count(1);
}

/// Drops one hold of the kernel lock. Panics if the current thread does not hold it.
pub fn kernel_unlock() {
    let me = crate::sched::curlwp_ptr();
    assert!(
        OWNER.load(Ordering::Relaxed) == me,
        "kernel_unlock: the kernel lock is not held by this thread"
    );
    if COUNT.fetch_sub(1, Ordering::Relaxed) == 1 {
        OWNER.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Whether the current thread holds the kernel lock.
pub fn kernel_lock_held() -> bool {
    crate::sched::started() && OWNER.load(Ordering::Relaxed) == crate::sched::curlwp_ptr()
}

/// Whether `l` holds the kernel lock.
pub(crate) fn held_by(l: *mut Lwp) -> bool {
    OWNER.load(Ordering::Relaxed) == l
}

/// The thread holding the kernel lock, if any (a snapshot).
pub fn owner() -> *const Lwp {
    OWNER.load(Ordering::Relaxed)
}

/// Releases every hold of the current thread; returns how many it had.
pub(crate) fn release_all() -> u32 {
    let n = COUNT.swap(0, Ordering::Relaxed);
    OWNER.store(core::ptr::null_mut(), Ordering::Release);
    n
}

/// Takes the kernel lock `n` times for the current thread.
pub(crate) fn acquire_count(n: u32) {
    let me = crate::sched::curlwp_ptr();
    if OWNER.load(Ordering::Relaxed) == me {
        COUNT.fetch_add(n, Ordering::Relaxed);
        return;
    }
    while OWNER
        .compare_exchange_weak(
            core::ptr::null_mut(),
            me,
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_err()
    {
        crate::arch::aarch64::cpu_relax();
    }
    COUNT.store(n, Ordering::Relaxed);
}
