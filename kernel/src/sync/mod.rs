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
/// held, IPL_NONE, and not an idle thread. `call` names the API in the message.
#[cfg(target_arch = "aarch64")]
pub fn assert_sleepable(call: &str) {
    use core::sync::atomic::Ordering;
    let ci = crate::cpu::curcpu();
    assert!(
        ci.intr_depth.load(Ordering::Relaxed) == 0,
        "{call}: would sleep in a hard interrupt handler"
    );
    let held = ci.mtx_count.load(Ordering::Relaxed);
    assert!(
        held == 0,
        "{call}: would sleep with {held} spin mutex(es) held"
    );
    let ipl = crate::spl::curipl();
    assert!(
        ipl == crate::spl::IPL_NONE,
        "{call}: would sleep at {ipl}; sleeping needs IPL_NONE"
    );
    let l = crate::sched::curlwp();
    assert!(
        l.class() != crate::sched::lwp::SchedClass::IdleLoop,
        "{call}: the idle thread {} may not sleep",
        l.name()
    );
}
