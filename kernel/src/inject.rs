//! Injection points: named places in the kernel's concurrency code where a test can widen a
//! race window (spin, force a preemption, wait for another CPU) so that an interleaving that
//! TCG would hit only by chance happens every time.
//!
//! Compiled only into the test image (feature `ktest`); in every other build [`point`] is an
//! empty inline function. A test arms a point with [`arm`], which installs a hook that runs
//! each time any CPU passes the point, and disarms it with [`disarm`] (or the [`Armed`]
//! guard). Hooks run in whatever context the point is in (documented on each [`Point`]) and
//! must respect it.

/// The places a test can hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Point {
    /// `SleepQueue::sleep`: the timeout is registered, the thread is not yet on the queue.
    /// Thread context, IRQs as the caller had them.
    SleepTimeoutArmed = 0,
    /// `kernel_lock`: the owner word is ours, the hold count not yet recorded. Thread context.
    KernelLockAcquired = 1,
    /// `kernel_unlock`: the last hold is being dropped, the owner word not yet cleared.
    KernelLockReleasing = 2,
    /// The scheduler, just after a KTHREAD_MUSTJOIN thread finished switching out as a zombie
    /// and before its joiner is told. IRQs masked, on the CPU it ran on.
    ZombieSwitchedOut = 3,
    /// `intr` dispatch: an interrupt was acknowledged and its level checked, its handler not yet
    /// marked running. Hard interrupt context (or `splx`), IRQs masked.
    IntrBeforeRunning = 4,
    /// `splraise`, before it touches this CPU's IPL (in code that reads `curcpu()` first and
    /// stores later, this is between the two). Any context.
    SplRaise = 5,
}

const NPOINTS: usize = 6;

#[cfg(feature = "ktest")]
mod imp {
    use super::{NPOINTS, Point};
    use core::sync::atomic::{AtomicUsize, Ordering};

    static HOOKS: [AtomicUsize; NPOINTS] = [const { AtomicUsize::new(0) }; NPOINTS];

    /// Runs the hook armed at `p`, if any. Context: that of the point.
    #[inline(always)]
    pub fn point(p: Point) {
        let h = HOOKS[p as usize].load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: only `arm` stores non-zero values, and they are `fn()` pointers.
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(h) };
            f();
        }
    }

    /// Arms `p` with `hook` (replacing any earlier hook).
    pub fn arm(p: Point, hook: fn()) {
        HOOKS[p as usize].store(hook as usize, Ordering::Release);
    }

    /// Disarms `p`.
    pub fn disarm(p: Point) {
        HOOKS[p as usize].store(0, Ordering::Release);
    }

    /// Disarms every point (the harness does it after each test).
    pub fn disarm_all() {
        for h in &HOOKS {
            h.store(0, Ordering::Release);
        }
    }

    /// Keeps a point armed for a scope.
    #[must_use = "the point is disarmed when the guard is dropped"]
    pub struct Armed(Point);

    impl Armed {
        /// Arms `p` with `hook` until the guard is dropped.
        pub fn new(p: Point, hook: fn()) -> Self {
            arm(p, hook);
            Self(p)
        }
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            disarm(self.0);
        }
    }
}

#[cfg(feature = "ktest")]
pub use imp::*;

/// Does nothing outside the test image.
#[cfg(not(feature = "ktest"))]
#[inline(always)]
pub fn point(_: Point) {
    let _ = NPOINTS;
}
