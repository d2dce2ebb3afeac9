//! The kernel lock (NetBSD's `KERNEL_LOCK`): one recursive lock for code that is not MPSAFE.
//!
//! Threads created without KTHREAD_MPSAFE hold it whenever they run. It is a spinning lock
//! owned by a thread: the owner word names the thread, and the thread's own `biglocks` counts
//! its holds (only the thread itself writes it, so no count is shared between CPUs).
//!
//! # Staying correct across preemption and migration
//!
//! As NetBSD's `kpreempt` does, the scheduler never preempts a thread that holds the kernel
//! lock or is spinning for it (`biglocks != 0` or `kl_wanted`): code under the kernel lock
//! gives up the CPU only where it sleeps, yields or exits. Those voluntary switches release
//! the lock (all holds at once) with IRQs masked just before switching, and the thread takes
//! the same number of holds back when it runs again, after IRQs are unmasked, so a CPU
//! waiting for the kernel lock keeps taking interrupts and IPIs. Each step of taking and
//! dropping the lock is therefore done by a thread that cannot be switched out half-way, and
//! a preemption asked for meanwhile is taken by the last [`kernel_unlock`].
//!
//! A thread spinning for the kernel lock is not "running" for the waiters of an adaptive mutex
//! it owns (`sync::mutex`): the kernel-lock holder may be one of them, and it must go to sleep
//! (releasing the kernel lock) rather than spin for the mutex.
//!
//! Context: thread.

use crate::sched::lwp::Lwp;
use core::sync::atomic::{AtomicPtr, Ordering};

static OWNER: AtomicPtr<Lwp> = AtomicPtr::new(core::ptr::null_mut());

/// Takes the kernel lock (recursively if the current thread holds it). Spins, with IRQs
/// enabled and preemption put off, while another thread holds it. Context: thread.
pub fn kernel_lock() {
    let l = crate::sched::curlwp();
    let n = l.biglocks.load(Ordering::Relaxed);
    if n > 0 {
        l.biglocks.store(n + 1, Ordering::Relaxed);
        return;
    }
    acquire(l, 1);
}

/// Drops one hold of the kernel lock; the last one releases it and takes a preemption that
/// was put off while it was held. Panics if the current thread does not hold it. Context:
/// thread.
pub fn kernel_unlock() {
    let l = crate::sched::curlwp();
    let me = l as *const Lwp as *mut Lwp;
    let n = l.biglocks.load(Ordering::Relaxed);
    assert!(
        n > 0 && OWNER.load(Ordering::Relaxed) == me,
        "kernel_unlock: the kernel lock is not held by this thread ({})",
        l.name()
    );
    if n > 1 {
        l.biglocks.store(n - 1, Ordering::Relaxed);
        return;
    }
    crate::inject::point(crate::inject::Point::KernelLockReleasing);
    // Still counted as held (no preemption) until the owner word is clear.
    OWNER.store(core::ptr::null_mut(), Ordering::Release);
    l.biglocks.store(0, Ordering::Relaxed);
    crate::sched::maybe_preempt();
}

/// Whether the current thread holds the kernel lock. Context: any.
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

/// Before a voluntary switch (sleep, yield, exit), with IRQs masked: releases every hold of
/// thread `l` (the running thread) and returns how many it had, for
/// [`reacquire_after_switch`].
#[inline]
pub(crate) fn release_for_switch(l: &Lwp) -> u32 {
    let n = l.biglocks.load(Ordering::Relaxed);
    if n > 0 {
        OWNER.store(core::ptr::null_mut(), Ordering::Release);
        l.biglocks.store(0, Ordering::Relaxed);
    }
    n
}

/// Recovery only (the test harness abandoning a thread's work): drops whatever part of the
/// kernel lock thread `l` (the running thread) holds, even half-taken.
#[cfg(feature = "ktest")]
pub(crate) fn release_abandoned(l: &Lwp) {
    let me = l as *const Lwp as *mut Lwp;
    let _ = OWNER.compare_exchange(
        me,
        core::ptr::null_mut(),
        Ordering::Release,
        Ordering::Relaxed,
    );
    l.biglocks.store(0, Ordering::Relaxed);
    l.kl_wanted.store(false, Ordering::Relaxed);
}

/// After a voluntary switch, with IRQs as the thread normally runs: takes back the `n` holds
/// [`release_for_switch`] returned (none if 0).
#[inline]
pub(crate) fn reacquire_after_switch(n: u32) {
    if n > 0 {
        acquire(crate::sched::curlwp(), n);
    }
}

/// Takes the lock for `l` (the running thread, holding it not) with `n` holds. While it spins
/// `kl_wanted` is set, which keeps the scheduler from preempting it and mutex waiters from
/// taking it for running.
fn acquire(l: &Lwp, n: u32) {
    let me = l as *const Lwp as *mut Lwp;
    l.kl_wanted.store(true, Ordering::Relaxed);
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
    crate::inject::point(crate::inject::Point::KernelLockAcquired);
    l.biglocks.store(n, Ordering::Relaxed);
    l.kl_wanted.store(false, Ordering::Relaxed);
}
