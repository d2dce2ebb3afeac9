//! Synchronisation primitives. For now: [`SpinLock`], a spin lock that masks
//! IRQs on the local CPU while held, so an interrupt handler on the same CPU can never spin on
//! a lock its own CPU holds. Later issues add spin mutexes with an IPL, adaptive mutexes,
//! condition variables and the kernel lock here.

mod spinlock;

pub use spinlock::{SpinLock, SpinLockGuard};
