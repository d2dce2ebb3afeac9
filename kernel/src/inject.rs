//! Injection points: named places in the kernel's concurrency code where a test can widen a
//! race window (spin, force a preemption, wait for another CPU) so that an interleaving that
//! TCG would hit only by chance happens every time; failure sites, where a test can make an
//! allocation fail; and planted bugs, test-only switches that break one operation on purpose
//! so that a torture (`crate::torture`) can show it notices.
//!
//! Compiled only into the test image (feature `ktest`); in every other build [`point`] is an
//! empty inline function and [`fail`] and [`planted`] return false. A test arms a point with
//! [`arm`], which installs a hook that runs each time any CPU passes the point, and disarms it
//! with [`disarm`] (or the [`Armed`] guard). Hooks run in whatever context the point is in
//! (documented on each [`Point`]) and must respect it.

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
    /// `mutex_exit`, before the mutex is released (adaptive: thread context; spin: at the
    /// mutex's IPL, IRQs as the caller had them).
    MutexReleasing = 6,
    /// Between marking work pending for another CPU and sending it the IPI
    /// (`softint_schedule_cpu`, and xcall's kick of its targets). IRQs masked in softint;
    /// thread context in xcall.
    IpiSending = 7,
    /// `SleepQueue::wake_one` and `wake_all`, before a sleeper is taken off the queue. Any
    /// context.
    Waking = 8,
    /// `mutex_exit` of the last spin mutex this CPU holds: its count is 0, the saved IPL not
    /// yet restored (where an interrupt taking a spin mutex of its own saves its IPL). At the
    /// mutex's IPL, IRQs as the caller had them.
    SpinCountDropped = 9,
}

const NPOINTS: usize = 10;

/// Every point, in discriminant order.
pub const POINTS: [Point; NPOINTS] = [
    Point::SleepTimeoutArmed,
    Point::KernelLockAcquired,
    Point::KernelLockReleasing,
    Point::ZombieSwitchedOut,
    Point::IntrBeforeRunning,
    Point::SplRaise,
    Point::MutexReleasing,
    Point::IpiSending,
    Point::Waking,
    Point::SpinCountDropped,
];

/// The places where an allocation can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Site {
    /// `kthread_create`, after the thread's stack slot is taken: returns ENOMEM
    /// (`KthreadError::NoMem`) and gives the slot and the thread count back. Thread context.
    /// `workqueue_create` fails through it (a worker that cannot be made).
    KthreadCreate = 0,
    /// `softint_establish`, before a table slot is taken: returns `None`. Thread context.
    SoftintEstablish = 1,
}

/// The planted bugs: each, once armed with [`plant`], breaks exactly one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Bug {
    /// `cv_signal` wakes nobody once.
    DropWakeup = 0,
    /// The interrupt dispatcher does not end (EOI) one interrupt at IPL_VM.
    SkipEoi = 1,
    /// `xc_wait` counts a call that no target has finished for done (and returns at once);
    /// `xc_barrier` and the `_with` calls are left alone.
    XcallDoneEarly = 2,
}

const NBUGS: usize = 3;

#[cfg(feature = "ktest")]
mod imp {
    use super::{Bug, NBUGS, NPOINTS, Point, Site};
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    static HOOKS: [AtomicUsize; NPOINTS] = [const { AtomicUsize::new(0) }; NPOINTS];
    /// The failure hook: a `fn(Site) -> bool`, 0 = none.
    static FAIL_HOOK: AtomicUsize = AtomicUsize::new(0);
    /// Per bug: how many more passes before it strikes (0 = not armed).
    static BUGS: [AtomicU64; NBUGS] = [const { AtomicU64::new(0) }; NBUGS];

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

    /// Disarms every point, the failure hook and every planted bug (the harness does it after
    /// each test).
    pub fn disarm_all() {
        for h in &HOOKS {
            h.store(0, Ordering::Release);
        }
        FAIL_HOOK.store(0, Ordering::Release);
        for b in &BUGS {
            b.store(0, Ordering::Release);
        }
    }

    /// Whether the allocation at `site` should fail this time: asks the hook armed with
    /// [`arm_failures`], if any. Context: that of the site.
    #[inline(always)]
    pub fn fail(site: Site) -> bool {
        let h = FAIL_HOOK.load(Ordering::Acquire);
        if h == 0 {
            return false;
        }
        // SAFETY: only `arm_failures` stores non-zero values, and they are `fn(Site) -> bool`.
        let f: fn(Site) -> bool = unsafe { core::mem::transmute::<usize, fn(Site) -> bool>(h) };
        f(site)
    }

    /// Makes `hook` decide, at every failure site, whether the allocation fails.
    pub fn arm_failures(hook: fn(Site) -> bool) {
        FAIL_HOOK.store(hook as usize, Ordering::Release);
    }

    /// Stops injecting failures.
    pub fn disarm_failures() {
        FAIL_HOOK.store(0, Ordering::Release);
    }

    /// Arms `bug` to strike on the `after`-th pass (1 = the next) through its place, once.
    pub fn plant(bug: Bug, after: u64) {
        BUGS[bug as usize].store(after.max(1), Ordering::Release);
    }

    /// Whether `bug` strikes on this pass (true exactly once per [`plant`]). Context: any.
    #[inline(always)]
    pub fn planted(bug: Bug) -> bool {
        let b = &BUGS[bug as usize];
        let mut n = b.load(Ordering::Relaxed);
        while n != 0 {
            match b.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return n == 1,
                Err(now) => n = now,
            }
        }
        false
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
    let _ = (NPOINTS, NBUGS, POINTS);
}

/// Never fails outside the test image.
#[cfg(not(feature = "ktest"))]
#[inline(always)]
pub fn fail(_: Site) -> bool {
    false
}

/// No bug is planted outside the test image.
#[cfg(not(feature = "ktest"))]
#[inline(always)]
pub fn planted(_: Bug) -> bool {
    false
}
