//! `kthread(9)`: kernel threads, and kernel FP/SIMD sections.
//!
//! `kthread_create(pri, flags, ci, func, arg, newlp, name)` creates a thread that runs
//! `func(arg)`; errors come back as [`KthreadError`] (EAGAIN past the thread limit, ENOMEM when
//! memory runs out), misuse is an assertion naming the rule. A KTHREAD_IDLE thread is created
//! not runnable and started with [`kthread_start`]. Without KTHREAD_MPSAFE the kernel lock is
//! held whenever the thread runs. A KTHREAD_MUSTJOIN thread's [`kthread_exit`] waits (as a
//! zombie) for exactly one [`kthread_join`], which returns the exit code and frees it; other
//! threads are freed by the scheduler as soon as they have switched away for the last time.
//!
//! The thread limit is honest: every kernel thread needs one of the fixed stack slots
//! (`sched::stack`), so at boot, once the idle threads have taken theirs, [`init`] makes the
//! limit the smaller of the configured one (`kthread.max=N`, default `stack::MAX_SLOTS`) and
//! the slots left, and says so on the console when `kthread.max` asked for more. A thread is
//! counted from before it takes its slot until after it has given it back, so a create that
//! passes the limit check always finds a free slot: running out of threads is EAGAIN, as the
//! manual says, and ENOMEM is left for running out of memory.
//!
//! `kthread_fpu_enter`/`kthread_fpu_exit` bracket FP/SIMD use (the kernel is otherwise
//! soft-float and FP/SIMD traps): only in kernel threads, nesting, the outermost enter enables
//! FP/SIMD with zeroed registers and a zero FPCR, the outermost exit zeroes every register,
//! FPSR and FPCR and disables FP/SIMD again. The scheduler saves and restores the registers of
//! a thread preempted inside a section. Functions that want SIMD are written with
//! `#[target_feature(enable = "neon")]` and called only inside a section.

use crate::arch::aarch64::{self as arch, context};
use crate::cpu::cpu_lookup;
use crate::sched::lwp::{Lwp, LwpState, SchedClass};
use crate::sched::{self, stack};
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Create the thread not runnable (NetBSD's LSIDL); start it with [`kthread_start`].
pub const KTHREAD_IDLE: u32 = 0x01;
/// The thread does its own locking: no kernel lock around it.
pub const KTHREAD_MPSAFE: u32 = 0x02;
/// The thread services interrupts (requires KTHREAD_MPSAFE).
pub const KTHREAD_INTR: u32 = 0x04;
/// Timeshared (SCHED_OTHER) instead of SCHED_RR.
pub const KTHREAD_TS: u32 = 0x08;
/// The thread must be joined: `kthread_exit` waits for `kthread_join`.
pub const KTHREAD_MUSTJOIN: u32 = 0x10;

/// "Pick the default priority": PRI_KTHREAD for SCHED_RR, 63 for KTHREAD_TS.
pub const PRI_NONE: i32 = -1;

/// Why `kthread_create` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KthreadError {
    /// EAGAIN: the limit on kernel threads would be exceeded.
    Again,
    /// ENOMEM: no memory for the thread.
    NoMem,
}

/// A created thread, for [`kthread_join`] and [`kthread_start`] (NetBSD's `lwp_t *`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LwpRef {
    ptr: *mut Lwp,
    id: u64,
}

// SAFETY: a handle; every use checks the thread is still registered with the same id.
unsafe impl Send for LwpRef {}
// SAFETY: as above.
unsafe impl Sync for LwpRef {}

impl LwpRef {
    /// The thread, if it still exists.
    fn get(&self) -> Option<&'static Lwp> {
        sched::lwp_list_contains(self.ptr, self.id).then(|| {
            // SAFETY: registered with the same id, so it is the thread this handle names and it
            // is alive.
            unsafe { &*self.ptr }
        })
    }

    /// The thread's unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The thread, while it exists (for tests and diagnostics).
    pub fn lwp(&self) -> Option<&'static Lwp> {
        self.get()
    }
}

/// Kernel threads created and not yet freed (each holds, or is about to hold, a stack slot).
static THREADS: AtomicUsize = AtomicUsize::new(0);
/// The limit on `THREADS`; never more than `CAPACITY`.
static LIMIT: AtomicUsize = AtomicUsize::new(stack::MAX_SLOTS);
/// Stack slots kernel threads can have: all slots but those of the idle threads. Set by [`init`].
static CAPACITY: AtomicUsize = AtomicUsize::new(stack::MAX_SLOTS);

/// Fixes the thread limit once the idle threads have their stack slots: the smaller of
/// `requested` (`kthread.max=N` from the command line; default `stack::MAX_SLOTS`) and the
/// slots left for kernel threads. A `requested` limit above that is clamped, with a console
/// message. Boot CPU, after `sched::init_boot_cpu`, before any other
/// thread takes a stack slot.
pub fn init(requested: Option<usize>) {
    // Slots free now, plus any that kernel threads already hold (none at boot).
    let capacity = stack::free_count() + thread_count();
    CAPACITY.store(capacity, Ordering::Relaxed);
    let wanted = requested.unwrap_or(stack::MAX_SLOTS);
    if requested.is_some() && wanted > capacity {
        crate::kprintln!(
            "kthread: kthread.max={wanted} is more than the {capacity} stack slots left for \
             kernel threads; the limit is {capacity}"
        );
    }
    set_thread_limit(wanted);
}

/// Sets the limit on kernel threads to `n`, clamped to the stack slots kernel threads can have
/// (see [`init`]); returns the limit now in force. A limit below [`thread_count`] refuses new
/// threads until enough have exited.
pub fn set_thread_limit(n: usize) -> usize {
    let limit = n.min(CAPACITY.load(Ordering::Relaxed));
    LIMIT.store(limit, Ordering::Relaxed);
    limit
}

/// The limit on kernel threads: `kthread_create` past it fails with [`KthreadError::Again`].
pub fn thread_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Kernel threads that exist now (created and not yet freed).
pub fn thread_count() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Called when a kernel thread's memory is freed.
pub(crate) fn thread_freed() {
    THREADS.fetch_sub(1, Ordering::Relaxed);
}

/// `kthread_create`: creates a kernel thread running `func(arg)` named by `name`.
///
/// `pri` is a priority 0..=223 or [`PRI_NONE`]; `ci` binds the thread to that CPU for life;
/// `newlp` receives the thread (required with KTHREAD_MUSTJOIN). Context: thread (it may
/// allocate). Errors: [`KthreadError::Again`] past the limit ([`thread_limit`]),
/// [`KthreadError::NoMem`] when there is no memory for the thread.
#[allow(
    clippy::too_many_arguments,
    reason = "NetBSD's kthread_create signature"
)]
pub fn kthread_create(
    pri: i32,
    flags: u32,
    ci: Option<usize>,
    func: fn(usize),
    arg: usize,
    newlp: Option<&mut Option<LwpRef>>,
    name: fmt::Arguments<'_>,
) -> Result<(), KthreadError> {
    assert!(
        flags & KTHREAD_INTR == 0 || flags & KTHREAD_MPSAFE != 0,
        "kthread_create: KTHREAD_INTR requires KTHREAD_MPSAFE"
    );
    assert!(
        flags & KTHREAD_MUSTJOIN == 0 || newlp.is_some(),
        "kthread_create: KTHREAD_MUSTJOIN requires newlp"
    );
    if let Some(c) = ci {
        assert!(
            cpu_lookup(c).is_some_and(|ci| ci.is_online()),
            "kthread_create: cannot bind to cpu{c}, which is not online"
        );
    }
    let (class, pri) = if flags & KTHREAD_TS != 0 {
        (
            SchedClass::Other,
            if pri == PRI_NONE {
                sched::PRI_TS_DEFAULT as i32
            } else {
                pri
            },
        )
    } else {
        (
            SchedClass::Rr,
            if pri == PRI_NONE {
                sched::PRI_KTHREAD as i32
            } else {
                pri
            },
        )
    };
    assert!(
        (0..=sched::PRI_MAX as i32).contains(&pri),
        "kthread_create: priority {pri} is outside 0..={}",
        sched::PRI_MAX
    );
    if THREADS.fetch_add(1, Ordering::Relaxed) >= LIMIT.load(Ordering::Relaxed) {
        THREADS.fetch_sub(1, Ordering::Relaxed);
        return Err(KthreadError::Again);
    }
    // Cannot fail while the limit is at most CAPACITY (see the module documentation); kept as
    // ENOMEM rather than a panic in case something else ever takes slots.
    let Some(slot) = stack::alloc() else {
        THREADS.fetch_sub(1, Ordering::Relaxed);
        return Err(KthreadError::NoMem);
    };
    if crate::inject::fail(crate::inject::Site::KthreadCreate) {
        // An injected ENOMEM (test image only): give back what was taken.
        stack::free(slot);
        THREADS.fetch_sub(1, Ordering::Relaxed);
        return Err(KthreadError::NoMem);
    }
    let l = sched::lwp_alloc(Lwp::new(
        sched::next_id(),
        name,
        class,
        pri as u32,
        flags,
        ci,
        func,
        arg,
        Some(slot),
    ));
    if l.is_null() {
        // The slot went into the Lwp that could not be allocated; it was dropped with it.
        THREADS.fetch_sub(1, Ordering::Relaxed);
        return Err(KthreadError::NoMem);
    }
    // SAFETY: freshly allocated, not yet runnable.
    let ll = unsafe { &*l };
    sched::lwp_prepare(ll);
    if let Some(out) = newlp {
        *out = Some(LwpRef { ptr: l, id: ll.id });
    }
    if flags & KTHREAD_IDLE == 0 {
        sched::setrunnable(l);
        sched::maybe_preempt();
    }
    Ok(())
}

/// Starts a thread created with KTHREAD_IDLE. Context: thread.
pub fn kthread_start(l: LwpRef) {
    let lwp = l.get().expect("kthread_start: no such thread");
    assert!(
        lwp.state() == LwpState::Idle,
        "kthread_start: thread {} is not a KTHREAD_IDLE thread waiting to start",
        lwp.name()
    );
    sched::setrunnable(l.ptr);
    sched::maybe_preempt();
}

/// `kthread_exit`: ends the calling kernel thread with exit code `ecode`. A KTHREAD_MUSTJOIN
/// thread stays a zombie until joined; others are freed once switched away. The kernel lock is
/// released if held. Context: the thread itself, at IPL_NONE, no spin mutex held, preemption
/// enabled (each asserted: the next thread on this CPU would inherit them).
pub fn kthread_exit(ecode: i32) -> ! {
    let l = sched::curlwp();
    assert!(
        l.stack.is_some() && l.class != SchedClass::IdleLoop,
        "kthread_exit: called by {}, which is not a kernel thread",
        l.name()
    );
    sched::assert_may_switch("kthread_exit");
    if l.fpu_on.load(Ordering::Relaxed) {
        // Leaving inside an FPU section: leave no state behind.
        let daif = arch::irq_save();
        context::fpu_zero_all();
        context::fpu_disable();
        l.fpu_on.store(false, Ordering::Relaxed);
        arch::irq_restore(daif);
    }
    l.exit_code.store(ecode, Ordering::Relaxed);
    crate::trace::event!(crate::trace::Kind::ThreadExit, l.id, ecode as u64);
    arch::irq_disable();
    crate::sync::kernel_lock::release_for_switch(l);
    l.set_state(LwpState::Zombie);
    sched::switch_away(false);
    unreachable!("a zombie thread was switched back to");
}

/// Called by the scheduler once a MUSTJOIN thread has exited and switched away for good:
/// runs `release` (which clears `on_cpu`) under the join queue's lock and wakes the joiner.
/// After it returns the scheduler does not touch `l` again (see [`kthread_join`]).
pub(crate) fn exited(l: &Lwp, release: impl FnOnce()) {
    l.join_sq.wake_all_after(release);
}

/// `kthread_join`: waits for thread `l` (created with KTHREAD_MUSTJOIN) to exit, frees it and
/// returns its exit code. May be called once per thread. Context: thread, IPL_NONE.
pub fn kthread_join(l: LwpRef) -> i32 {
    let Some(lwp) = l.get() else {
        panic!(
            "kthread_join: thread #{} does not exist (already joined, or exited without \
             KTHREAD_MUSTJOIN)",
            l.id
        )
    };
    assert!(
        lwp.flags & KTHREAD_MUSTJOIN != 0,
        "kthread_join: thread {} was not created with KTHREAD_MUSTJOIN",
        lwp.name()
    );
    assert!(
        !lwp.join_claimed.swap(true, Ordering::AcqRel),
        "kthread_join: thread {} is already being joined",
        lwp.name()
    );
    crate::sync::assert_sleepable("kthread_join");
    let done = || lwp.state() == LwpState::Zombie && !lwp.on_cpu.load(Ordering::Acquire);
    while !done() {
        lwp.join_sq.sleep(None, || !done());
    }
    // `on_cpu` was cleared under the join queue's lock by the CPU that switched the thread out
    // (`exited`); once that CPU has dropped the lock it no longer touches the thread.
    lwp.join_sq.barrier();
    let code = lwp.exit_code.load(Ordering::Relaxed);
    // SAFETY: the thread exited, no CPU runs it (on_cpu clear), and this was its one join.
    unsafe { sched::lwp_free(l.ptr) };
    code
}

/// The cookie of [`kthread_fpu_enter`]: whether FP/SIMD was already allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "pass it to kthread_fpu_exit"]
pub struct FpuCookie(bool);

/// `kthread_fpu_enter`: allows FP/SIMD in the calling kernel thread until the matching
/// [`kthread_fpu_exit`]. Nests; the outermost enter starts from zeroed registers and FPCR.
/// Context: kernel thread only (not interrupt or softint context, not the idle thread).
pub fn kthread_fpu_enter() -> FpuCookie {
    assert!(
        !crate::intr::cpu_intr_p(),
        "kthread_fpu_enter: called from a hard interrupt handler; only kernel threads may use \
         FP/SIMD"
    );
    let l = sched::curlwp();
    assert!(
        l.stack.is_some() && l.class != SchedClass::IdleLoop,
        "kthread_fpu_enter: {} is not a kernel thread; only kernel threads may use FP/SIMD",
        l.name()
    );
    let was = l.fpu_on.load(Ordering::Relaxed);
    if !was {
        // Masked so that a preemption cannot see the flag without FP enabled.
        let daif = arch::irq_save();
        context::fpu_enable();
        context::fpu_zero_all();
        l.fpu_on.store(true, Ordering::Relaxed);
        arch::irq_restore(daif);
    }
    FpuCookie(was)
}

/// `kthread_fpu_exit`: ends the section `s` came from; the outermost exit zeroes every FP/SIMD
/// register, FPSR and FPCR and disables FP/SIMD. Context: the same kernel thread.
pub fn kthread_fpu_exit(s: FpuCookie) {
    let l = sched::curlwp();
    assert!(
        l.fpu_on.load(Ordering::Relaxed),
        "kthread_fpu_exit: {} is not inside kthread_fpu_enter",
        l.name()
    );
    if !s.0 {
        let daif = arch::irq_save();
        context::fpu_zero_all();
        context::fpu_disable();
        l.fpu_on.store(false, Ordering::Relaxed);
        arch::irq_restore(daif);
    }
}

/// An FP/SIMD section for a scope: `let _fpu = FpuGuard::enter();`.
#[must_use = "FP/SIMD is allowed only while the guard lives"]
pub struct FpuGuard {
    cookie: FpuCookie,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl FpuGuard {
    /// `kthread_fpu_enter` until dropped.
    pub fn enter() -> Self {
        Self {
            cookie: kthread_fpu_enter(),
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for FpuGuard {
    fn drop(&mut self) {
        kthread_fpu_exit(self.cookie);
    }
}

/// Runs `f` inside an FP/SIMD section.
pub fn with_fpu<R>(f: impl FnOnce() -> R) -> R {
    let _g = FpuGuard::enter();
    f()
}

/// `kpause`: sleeps until the `ticks`-th clock tick from now (at least one). Context: thread,
/// IPL_NONE, no spin mutex held.
pub fn kpause(ticks: u64) {
    crate::sync::assert_sleepable("kpause");
    let deadline = crate::clock::tick_deadline(ticks.max(1));
    let sq = sched::sleepq::SleepQueue::new();
    while arch::counter() < deadline {
        let _ = sq.sleep(Some(deadline), || true);
    }
}
