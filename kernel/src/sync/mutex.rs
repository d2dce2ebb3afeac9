//! `mutex(9)`: spin mutexes and adaptive mutexes, with `mutex_enter`/`mutex_exit` and an RAII
//! guard beside them.
//!
//! - A *spin* mutex (`MUTEX_SPIN`, or `MUTEX_DEFAULT` with an IPL above IPL_NONE) raises the
//!   IPL to its level while held, and spins for the lock. The first spin mutex a CPU takes
//!   remembers the IPL to go back to; the last one released restores it (NetBSD's per-CPU
//!   `mtx_count`/`mtx_oldspl`), so spin mutexes may be released in any order. Context: any;
//!   the holder may not sleep.
//! - An *adaptive* mutex (`MUTEX_DEFAULT` at IPL_NONE) is owned by a thread. A contender spins
//!   while the owner is running on a CPU and sleeps otherwise. The owner word holds the owning
//!   thread's address and, in bit 0, "there are sleepers": a sleeper sets that bit under the
//!   mutex's sleep-queue lock, so the owner's release (which must then take the slow path and
//!   wake them) cannot miss it. Context: thread (a contended enter sleeps).
//!
//! Misuse is caught: recursive enter, exit by a non-owner, and sleeping while holding a spin
//! mutex or at a raised IPL (checked by every sleeping primitive).

use crate::cpu::curcpu;
use crate::sched::sleepq::SleepQueue;
use crate::sched::{self, lwp::LwpState};
use crate::spl::{IPL_NONE, IPL_SOFTCLOCK, Ipl, splraise, splx};
use core::sync::atomic::{AtomicUsize, Ordering, compiler_fence};

/// Mutex kinds, as `mutex_init` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexType {
    /// Adaptive at IPL_NONE, spin above.
    Default,
    /// Adaptive (IPL must be IPL_NONE).
    Adaptive,
    /// Spin, raising the IPL to the given level (at least IPL_SOFTCLOCK, which also keeps the
    /// holder from being preempted).
    Spin,
}

const WAITERS: usize = 1;
/// Tag in a spin mutex's owner word: the rest is the CPU index + 1.
const SPIN_OWNER: usize = 1 << 63;
const ADAPTIVE: u32 = u32::MAX;

/// A kernel mutex (`kmutex_t`).
pub struct KMutex {
    owner: AtomicUsize,
    /// The spin level, or `ADAPTIVE`.
    ipl: u32,
    sleepers: SleepQueue,
}

impl KMutex {
    /// `mutex_init(mtx, type, ipl)`.
    pub const fn new(kind: MutexType, ipl: Ipl) -> Self {
        let spin = match kind {
            MutexType::Default => ipl.as_u8() > IPL_NONE.as_u8(),
            MutexType::Adaptive => false,
            MutexType::Spin => true,
        };
        let level = if ipl.as_u8() < IPL_SOFTCLOCK.as_u8() {
            IPL_SOFTCLOCK
        } else {
            ipl
        };
        Self {
            owner: AtomicUsize::new(0),
            ipl: if spin { level.as_u8() as u32 } else { ADAPTIVE },
            sleepers: SleepQueue::new(),
        }
    }

    /// An adaptive mutex.
    pub const fn adaptive() -> Self {
        Self::new(MutexType::Adaptive, IPL_NONE)
    }

    /// A spin mutex at `ipl`.
    pub const fn spin(ipl: Ipl) -> Self {
        Self::new(MutexType::Spin, ipl)
    }

    /// Whether this is a spin mutex.
    pub fn is_spin(&self) -> bool {
        self.ipl != ADAPTIVE
    }

    /// `mutex_enter`: acquires the mutex. Context: see the module documentation.
    #[inline]
    pub fn mutex_enter(&self) {
        if self.ipl == ADAPTIVE {
            let me = sched::curlwp_ptr() as usize;
            if self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            self.adaptive_enter_slow(me);
        } else {
            self.spin_enter();
        }
    }

    /// `mutex_exit`: releases the mutex. Panics if the caller does not own it.
    #[inline]
    pub fn mutex_exit(&self) {
        crate::inject::point(crate::inject::Point::MutexReleasing);
        if self.ipl == ADAPTIVE {
            let me = sched::curlwp_ptr() as usize;
            if self
                .owner
                .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            self.adaptive_exit_slow(me);
        } else {
            self.spin_exit();
        }
    }

    /// `mutex_tryenter`: acquires the mutex if it is free; never spins or sleeps.
    pub fn mutex_tryenter(&self) -> bool {
        if self.ipl == ADAPTIVE {
            let me = sched::curlwp_ptr() as usize;
            self.owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        } else {
            let s = splraise(Ipl::from_u8(self.ipl as u8).unwrap_or(IPL_SOFTCLOCK));
            let ci = curcpu();
            let tag = SPIN_OWNER | (ci.index() + 1);
            if self
                .owner
                .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                if ci.mtx_count.fetch_add(1, Ordering::Relaxed) == 0 {
                    ci.mtx_oldspl.store(u32::from(s.as_u8()), Ordering::Relaxed);
                }
                true
            } else {
                splx(s);
                false
            }
        }
    }

    /// `mutex_owned`: whether the current thread (adaptive) or CPU (spin) holds it.
    pub fn mutex_owned(&self) -> bool {
        let o = self.owner.load(Ordering::Relaxed);
        if self.ipl == ADAPTIVE {
            o & !WAITERS == sched::curlwp_ptr() as usize
        } else {
            o == SPIN_OWNER | (curcpu().index() + 1)
        }
    }

    /// Acquires the mutex and returns a guard that releases it when dropped.
    #[inline]
    pub fn lock(&self) -> KMutexGuard<'_> {
        self.mutex_enter();
        KMutexGuard {
            mutex: self,
            _not_send: core::marker::PhantomData,
        }
    }

    #[cold]
    fn adaptive_enter_slow(&self, me: usize) {
        // Before any spinning: a handler that spins for a thread it interrupted, or for one
        // that waits for this CPU, would never get the mutex.
        assert!(
            !crate::intr::cpu_intr_p(),
            "mutex_enter: an adaptive mutex may not be taken in a hard interrupt handler (use \
             a spin mutex at the handler's IPL)"
        );
        loop {
            let o = self.owner.load(Ordering::Relaxed);
            if o == 0 {
                if self
                    .owner
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            assert!(
                o & !WAITERS != me,
                "mutex_enter: locking against myself: {} already holds this adaptive mutex",
                sched::curlwp().name()
            );
            // Spin while the owner runs on a CPU: it will probably release soon. An owner that
            // is spinning for the kernel lock does not count: we may hold that lock. Nor does
            // one whose CPU a soft interrupt has borrowed (it is not that CPU's curlwp): it
            // cannot run before the softint returns or blocks, and the softint may be us.
            // (The owner is read without a reference count; a stale read only makes us spin or
            // sleep once more, and LWP memory stays mapped.)
            // SAFETY: see above; only atomics are read.
            let owner_running = unsafe {
                let ol = (o & !WAITERS) as *const crate::sched::lwp::Lwp;
                (*ol).on_cpu.load(Ordering::Relaxed)
                    && (*ol).state() == LwpState::Onproc
                    && !(*ol).kl_wanted.load(Ordering::Relaxed)
                    && crate::cpu::cpu_lookup((*ol).cpu())
                        .is_some_and(|ci| ci.curlwp.load(Ordering::Relaxed) == ol as u64)
            };
            if owner_running {
                crate::arch::aarch64::cpu_relax();
                continue;
            }
            super::assert_sleepable("mutex_enter");
            self.sleepers.sleep(None, || {
                let o = self.owner.load(Ordering::Relaxed);
                o != 0
                    && self
                        .owner
                        .compare_exchange(o, o | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
            });
        }
    }

    #[cold]
    fn adaptive_exit_slow(&self, me: usize) {
        let o = self.owner.load(Ordering::Relaxed);
        assert!(
            o & !WAITERS == me,
            "mutex_exit: {} does not own this adaptive mutex (owner {:#x})",
            sched::curlwp().name(),
            o & !WAITERS
        );
        self.owner.store(0, Ordering::Release);
        self.sleepers.wake_all();
    }

    fn spin_enter(&self) {
        let s = splraise(Ipl::from_u8(self.ipl as u8).unwrap_or(IPL_SOFTCLOCK));
        let ci = curcpu();
        let tag = SPIN_OWNER | (ci.index() + 1);
        if ci.mtx_count.fetch_add(1, Ordering::Relaxed) == 0 {
            ci.mtx_oldspl.store(u32::from(s.as_u8()), Ordering::Relaxed);
        }
        loop {
            match self
                .owner
                .compare_exchange_weak(0, tag, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(o) if o == tag => {
                    panic!(
                        "mutex_enter: locking against myself: cpu{} already holds this spin mutex",
                        ci.index()
                    )
                }
                Err(_) => crate::arch::aarch64::cpu_relax(),
            }
        }
    }

    fn spin_exit(&self) {
        let ci = curcpu();
        let tag = SPIN_OWNER | (ci.index() + 1);
        let o = self.owner.load(Ordering::Relaxed);
        assert!(
            o == tag,
            "mutex_exit: cpu{} does not own this spin mutex (owner word {o:#x})",
            ci.index()
        );
        self.owner.store(0, Ordering::Release);
        // The saved IPL is read while this CPU still counts this mutex (NetBSD's
        // MUTEX_SPIN_SPLRESTORE order): once the count is 0, an interrupt above the mutex's
        // level that takes a spin mutex of its own stores *its* IPL there, and a read after
        // the decrement would restore that one (seen: a softint left at IPL_VM, and a later
        // `splx(IPL_VM)` from IPL_SOFTBIO panicking, under the virtio-blk benchmark).
        let old = ci.mtx_oldspl.load(Ordering::Relaxed) as u8;
        compiler_fence(Ordering::SeqCst);
        if ci.mtx_count.fetch_sub(1, Ordering::Relaxed) == 1 {
            crate::inject::point(crate::inject::Point::SpinCountDropped);
            splx(Ipl::from_u8(old).unwrap_or(IPL_NONE));
        }
    }
}

/// Holds a [`KMutex`]; releases it when dropped.
#[must_use = "the mutex is released as soon as the guard is dropped"]
pub struct KMutexGuard<'a> {
    mutex: &'a KMutex,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl KMutexGuard<'_> {
    /// The mutex held.
    pub fn mutex(&self) -> &KMutex {
        self.mutex
    }
}

impl Drop for KMutexGuard<'_> {
    fn drop(&mut self) {
        self.mutex.mutex_exit();
    }
}
