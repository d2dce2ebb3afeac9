//! [`SpinLock`]: a test-and-set spin lock from the `spin` crate, with a relax strategy that
//! executes `yield` and with IRQs masked on the holding CPU.
//!
//! Not a ticket lock: under QEMU's multi-threaded TCG more virtual CPUs than host cores run,
//! and a FIFO lock then stalls every waiter behind whichever next-in-line vCPU the host has
//! descheduled (seen: 8 vCPUs on 2 cores hammering the heap made no progress for minutes).
//!
//! Context: any (thread, soft or hard interrupt). Never sleeps. Keep critical sections short.

use core::ops::{Deref, DerefMut};

/// How a waiting CPU spins: `yield`, which under QEMU's `-icount` hands the host thread to the
/// next virtual CPU (the holder), instead of burning virtual time until a kick.
pub struct Relax;

impl spin::RelaxStrategy for Relax {
    #[inline(always)]
    fn relax() {
        #[cfg(target_arch = "aarch64")]
        crate::arch::aarch64::cpu_relax();
        #[cfg(not(target_arch = "aarch64"))]
        core::hint::spin_loop();
    }
}

type Inner<T> = spin::mutex::SpinMutex<T, Relax>;

/// A spin lock that masks IRQs on this CPU while held.
pub struct SpinLock<T: ?Sized> {
    inner: Inner<T>,
}

/// Holds a [`SpinLock`]; unlocks and restores the previous IRQ mask when dropped.
pub struct SpinLockGuard<'a, T: ?Sized> {
    guard: Option<spin::mutex::SpinMutexGuard<'a, T, Relax>>,
    #[cfg(target_arch = "aarch64")]
    daif: u64,
}

impl<T> SpinLock<T> {
    /// Creates an unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            inner: Inner::new(value),
        }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Masks IRQs on this CPU and spins until the lock is ours.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        #[cfg(target_arch = "aarch64")]
        let daif = crate::arch::aarch64::irq_save();
        SpinLockGuard {
            guard: Some(self.inner.lock()),
            #[cfg(target_arch = "aarch64")]
            daif,
        }
    }

    /// Takes the lock if it is free right now, without spinning.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        #[cfg(target_arch = "aarch64")]
        let daif = crate::arch::aarch64::irq_save();
        match self.inner.try_lock() {
            Some(guard) => Some(SpinLockGuard {
                guard: Some(guard),
                #[cfg(target_arch = "aarch64")]
                daif,
            }),
            None => {
                #[cfg(target_arch = "aarch64")]
                crate::arch::aarch64::irq_restore(daif);
                None
            }
        }
    }

    /// Whether some CPU holds the lock (a snapshot, for diagnostics only).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Releases the lock without a guard.
    ///
    /// # Safety
    ///
    /// Only for the panic path, on a lock whose holder will never release it (a CPU that has
    /// been stopped). Any data the holder was changing may be inconsistent.
    pub unsafe fn force_unlock(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.inner.force_unlock() };
    }
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Unlock first, then restore the IRQ mask, so no interrupt runs while we still hold it.
        self.guard = None;
        #[cfg(target_arch = "aarch64")]
        crate::arch::aarch64::irq_restore(self.daif);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let lock = SpinLock::new(5);
        let guard = lock.lock();
        assert!(lock.try_lock().is_none());
        assert!(lock.is_locked());
        drop(guard);
        *lock.try_lock().expect("free after drop") += 1;
        assert_eq!(*lock.lock(), 6);
    }

    #[test]
    fn threads_never_lose_an_increment() {
        let lock = std::sync::Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*lock.lock(), 40_000);
    }
}
