//! Synchronisation primitives: [`SpinLock`] (IRQ-masking, for the kernel's own short
//! critical sections), NetBSD's spin and adaptive mutexes ([`mutex::KMutex`]), condition
//! variables ([`condvar::KCondvar`]) and the kernel lock ([`kernel_lock`]).

#[cfg(target_arch = "aarch64")]
pub mod condvar;
#[cfg(target_arch = "aarch64")]
pub mod kernel_lock;
#[cfg(target_arch = "aarch64")]
pub mod mutex;
mod spinlock;

pub use spinlock::{SpinLock, SpinLockGuard};

/// Asserts that the calling thread may sleep: not in a hard interrupt handler, no spin mutex
/// held, IPL_NONE, preemption enabled, and not an idle thread. `call` names the API in the
/// message. Context: thread (the check itself is what says so).
#[cfg(target_arch = "aarch64")]
pub fn assert_sleepable(call: &str) {
    use core::sync::atomic::Ordering;
    // Masked, so that every per-CPU value is read on the CPU we run on.
    let daif = crate::arch::aarch64::irq_save();
    let ci = crate::cpu::curcpu();
    let depth = ci.intr_depth.load(Ordering::Relaxed);
    let held = ci.mtx_count.load(Ordering::Relaxed);
    let ipl = crate::spl::Ipl::from_u8(ci.ipl.load(Ordering::Relaxed) as u8)
        .unwrap_or(crate::spl::IPL_HIGH);
    crate::arch::aarch64::irq_restore(daif);
    assert!(
        depth == 0,
        "{call}: would sleep in a hard interrupt handler"
    );
    assert!(
        held == 0,
        "{call}: would sleep with {held} spin mutex(es) held"
    );
    let l = crate::sched::curlwp();
    // A softint thread may block briefly at its own level (the sleep gives the CPU back at
    // IPL_NONE and the thread raises it again when it resumes).
    let own_soft_level = l.softint_level() == Some(ipl.as_u8());
    assert!(
        ipl == crate::spl::IPL_NONE || own_soft_level,
        "{call}: would sleep at {ipl}; sleeping needs IPL_NONE"
    );
    let nopreempt = l.nopreempt.load(Ordering::Relaxed);
    assert!(
        nopreempt == 0,
        "{call}: would sleep with preemption disabled ({nopreempt} kpreempt_disable without \
         kpreempt_enable)"
    );
    assert!(
        l.class() != crate::sched::lwp::SchedClass::IdleLoop,
        "{call}: the idle thread {} may not sleep",
        l.name()
    );
}
