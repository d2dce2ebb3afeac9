//! The scheduler: per-CPU run queues, SCHED_RR and SCHED_OTHER, preemption, idle threads and
//! migration of unbound threads to idle CPUs.
//!
//! - Priorities 0..=223, higher first (NetBSD's ranges: kernel threads 96-127, kernel
//!   real-time 192-223). Each CPU has a [`runq::RunQueue`] under its own lock.
//! - SCHED_RR threads keep their priority and share the CPU with equals in time slices of
//!   [`RR_SLICE_TICKS`] ticks. SCHED_OTHER (KTHREAD_TS) threads lose priority as they use the CPU
//!   (`estcpu`, one step per [`TS_TICKS_PER_STEP`] ticks) and win it back while they sleep.
//! - Preemption: a wakeup of a thread with a higher priority than the one running on the target
//!   CPU asks that CPU to reschedule (a Sched IPI if it is another CPU); so does the tick when a
//!   time slice ends. The switch happens on the way out of the outermost interrupt, or when the
//!   IPL drops to IPL_NONE, never while preemption is disabled (`kpreempt_disable`) or at a raised
//!   IPL.
//! - Placement: a thread that becomes runnable goes to its bound CPU, else to the CPU it last
//!   ran on if that is idle, else to any idle CPU, else back where it was. An idle CPU also
//!   steals unbound threads from the other CPUs' queues. Bound threads never run elsewhere:
//!   every switch asserts it. A thread running soft-interrupt work inline
//!   (`softint::run_inline`) counts as bound to its CPU until it is done, even if it blocks.
//! - Switching: [`switch_away`] picks the next thread and calls `cpu_switchto`. A thread's
//!   `on_cpu` flag stays set until the CPU that ran it has completely switched away
//!   (`switch_finish`, run by whichever thread comes next), and a CPU about to run a thread waits
//!   for that flag, so a thread woken while still switching out never runs on two CPUs.

pub mod lwp;
mod runq;
pub mod sleepq;
pub mod stack;

use crate::arch::aarch64::{self as arch, context};
use crate::cpu::{CpuInfo, MAXCPUS, cpu_lookup, cpus, curcpu};
use crate::sync::SpinLock;
use crate::sync::kernel_lock;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use lwp::{Lwp, LwpState, SchedClass};
use runq::RunQueue;

/// Number of priority levels.
pub const NPRI: usize = 224;
/// Highest priority.
pub const PRI_MAX: u32 = (NPRI - 1) as u32;
/// Default priority of SCHED_RR kernel threads (NetBSD's PRI_KTHREAD).
pub const PRI_KTHREAD: u32 = 96;
/// Default priority of timeshared (KTHREAD_TS) kernel threads.
pub const PRI_TS_DEFAULT: u32 = 63;
/// Start of the kernel real-time range.
pub const PRI_KERNEL_RT: u32 = 192;
/// Ticks in a SCHED_RR time slice (100 ms at HZ = 100).
pub const RR_SLICE_TICKS: u32 = 10;
/// Ticks of CPU use that cost a SCHED_OTHER thread one priority step.
pub const TS_TICKS_PER_STEP: u32 = 2;

/// `ipending` flag: this CPU should reschedule when the IPL drops to IPL_NONE.
pub const PENDING_RESCHED: u32 = 1 << 29;

static RUNQUEUES: [SpinLock<RunQueue>; MAXCPUS] =
    [const { SpinLock::new(RunQueue::new()) }; MAXCPUS];

/// Every LWP, for thread lists (the monitor, tests, kvm).
static ALL_LWPS: SpinLock<Vec<usize>> = SpinLock::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Heap bytes held by the scheduler's growable tables (the thread list, the sleep timeouts,
/// the free stack slots): they keep the capacity their peak use needed, so a leak check on
/// the heap subtracts them. Context: thread or interrupt.
pub fn table_bytes() -> usize {
    let lwps = ALL_LWPS.lock().capacity() * core::mem::size_of::<usize>();
    lwps + sleepq::table_bytes() + stack::table_bytes()
}

/// The running thread (`curlwp`), from the per-thread register the switch sets
/// (`arch::read_curlwp`): never another thread's, even across a preemption and migration.
/// Context: any (in an interrupt handler, the interrupted thread).
#[inline]
pub fn curlwp_ptr() -> *mut Lwp {
    arch::read_curlwp() as *mut Lwp
}

/// The running thread. Context: any, once the scheduler runs on this CPU.
#[inline]
pub fn curlwp() -> &'static Lwp {
    // SAFETY: the register is set before a CPU first runs thread code and always points at
    // the live running LWP (the running one cannot be reaped).
    unsafe { &*curlwp_ptr() }
}

/// Whether the scheduler runs on this CPU yet.
pub fn started() -> bool {
    arch::read_tpidr() != 0 && arch::read_curlwp() != 0
}

/// Makes `l` the running thread of this CPU in both places that name it: the per-thread
/// register and `CpuInfo::curlwp` (which other CPUs and the kvm reader read), with its
/// priority in `CpuInfo::curpri`. IRQs masked.
fn set_curlwp(ci: &CpuInfo, l: *mut Lwp) {
    crate::trace::event_with!(crate::trace::Kind::Switch, || trace_switch(ci, l));
    let pri = if l == idle_of(ci) {
        IDLE_PRI
    } else {
        // SAFETY: callers pass the live LWP about to run here.
        unsafe { (*l).pri() }
    };
    ci.curpri.store(pri, Ordering::Relaxed);
    ci.curlwp.store(l as u64, Ordering::Release);
    arch::write_curlwp(l as u64);
}

/// The arguments of a switch trace event from this CPU's running thread to `l`: (reason, from
/// id, to id). IRQs masked; only called while switch tracing is on.
#[inline(always)]
fn trace_switch(ci: &CpuInfo, l: *mut Lwp) -> (u8, u64, u64) {
    use crate::trace::SwitchReason as R;
    let old = ci.curlwp.load(Ordering::Relaxed) as *mut Lwp;
    // SAFETY: `l` is the live LWP about to run here; `old` (if any) is the one running here
    // until the switch, live until this CPU lets it go.
    let (new, old_l) = unsafe { (&*l, old.as_ref()) };
    let Some(o) = old_l else {
        return (R::Start as u8, 0, new.id);
    };
    let reason = if old == idle_of(ci) {
        R::Idle
    } else if new.softint_ipl.load(Ordering::Relaxed) != 0
        && !new.switchto.load(Ordering::Relaxed).is_null()
    {
        R::SoftintLend
    } else {
        match o.state() {
            LwpState::Run => R::Preempt,
            LwpState::Sleep => R::Sleep,
            LwpState::Zombie => R::Exit,
            LwpState::Idle => R::SoftintReturn,
            _ => R::Preempt,
        }
    };
    (reason as u8, o.id, new.id)
}

/// `CpuInfo::curpri` while the idle thread runs: below every thread priority.
pub const IDLE_PRI: u32 = u32::MAX;

fn idle_of(ci: &CpuInfo) -> *mut Lwp {
    ci.idlelwp.load(Ordering::Relaxed) as *mut Lwp
}

/// Allocates a new LWP and registers it. Returns null if memory is short.
pub(crate) fn lwp_alloc(mut l: Lwp) -> *mut Lwp {
    let layout = core::alloc::Layout::new::<Lwp>();
    // SAFETY: non-zero-sized layout.
    let p = unsafe { alloc::alloc::alloc(layout) } as *mut Lwp;
    if p.is_null() {
        if let Some(slot) = l.stack.take() {
            stack::free(slot);
        }
        return p;
    }
    l.magic = lwp::LWP_MAGIC;
    // SAFETY: fresh allocation of the right layout.
    unsafe { p.write(l) };
    // SAFETY: just written; the fields read are immutable.
    let (id, name, bound) = unsafe { ((*p).id, (*p).name(), (*p).bound) };
    crate::trace::name_thread(id, name);
    crate::trace::event!(
        crate::trace::Kind::ThreadCreate,
        id,
        bound.map_or(u64::MAX, |c| c as u64),
    );
    ALL_LWPS.lock().push(p as usize);
    p
}

/// A new unique LWP id.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Unregisters and frees an LWP that will never run again (its stack too).
///
/// # Safety
///
/// `l` must be an exited LWP that no CPU runs (`on_cpu` clear) and nothing references.
pub(crate) unsafe fn lwp_free(l: *mut Lwp) {
    ALL_LWPS.lock().retain(|&p| p != l as usize);
    // SAFETY: per the caller, `l` is still a valid LWP here; `id` is immutable.
    crate::trace::name_gone(unsafe { (*l).id });
    // SAFETY: per the caller, `l` came from `lwp_alloc` and is unused.
    let lwp = unsafe { l.read() };
    if let Some(slot) = lwp.stack {
        stack::free(slot);
        crate::kthread::thread_freed();
    }
    // Poison: a use after free then reads a zero magic (checked where a thread is touched
    // after it may have gone) and null links. The test image zeroes the whole structure.
    // SAFETY: `l` is ours until the deallocation below; the field write needs no drop.
    unsafe { core::ptr::addr_of_mut!((*l).magic).write(0) };
    #[cfg(feature = "ktest")]
    // SAFETY: as above; all-zero bytes, written before the memory goes back to the heap.
    unsafe {
        core::ptr::write_bytes(l as *mut u8, 0, core::mem::size_of::<Lwp>())
    };
    // SAFETY: as above; the value was moved out with `read`.
    unsafe { alloc::alloc::dealloc(l as *mut u8, core::alloc::Layout::new::<Lwp>()) };
}

/// A snapshot of one thread, for thread lists.
#[derive(Clone, Debug)]
pub struct LwpInfo {
    /// Unique id.
    pub id: u64,
    /// Name.
    pub name: alloc::string::String,
    /// State.
    pub state: LwpState,
    /// Current priority.
    pub pri: u32,
    /// Class.
    pub class: SchedClass,
    /// CPU it runs on or last ran on.
    pub cpu: usize,
    /// CPU it is bound to.
    pub bound: Option<usize>,
    /// Address of the thread (what `CpuInfo::curlwp` holds while it runs).
    pub addr: usize,
    /// Address of the sleep queue it sleeps on (its wait channel), 0 if none.
    pub wchan: usize,
    /// Clock ticks it was running on a CPU.
    pub run_ticks: u64,
}

/// Snapshots every thread. Context: thread.
///
/// Each thread is read while the list lock is held: a thread is unregistered (under that
/// lock) before it is freed, so none can go away while it is being read.
pub fn lwp_list() -> Vec<LwpInfo> {
    let all = ALL_LWPS.lock();
    all.iter()
        .map(|&p| {
            // SAFETY: registered LWPs are alive while the list lock is held; the fields read
            // are atomics or immutable.
            let l = unsafe { &*(p as *const Lwp) };
            LwpInfo {
                id: l.id,
                name: l.name().into(),
                state: l.state(),
                pri: l.pri(),
                class: l.class,
                cpu: l.cpu(),
                bound: l.bound,
                addr: p,
                wchan: l.wchan.load(Ordering::Relaxed) as usize,
                run_ticks: l.run_ticks(),
            }
        })
        .collect()
}

/// Whether `l` is a registered LWP with id `id` (guards handles against reuse).
pub(crate) fn lwp_list_contains(l: *mut Lwp, id: u64) -> bool {
    ALL_LWPS.lock().iter().any(|&p| {
        // SAFETY: registered LWPs are alive while the list lock is held.
        p == l as usize && unsafe { (*l).id } == id
    })
}

/// Number of registered LWPs (threads, lwp0 and idle threads).
pub fn lwp_count() -> usize {
    ALL_LWPS.lock().len()
}

fn cpu_is_idle(ci: &CpuInfo) -> bool {
    ci.curlwp.load(Ordering::Relaxed) == ci.idlelwp.load(Ordering::Relaxed)
        && RUNQUEUES[ci.index()].lock().count == 0
}

fn choose_cpu(l: &Lwp) -> usize {
    if let Some(b) = l.pinned_cpu() {
        return b;
    }
    let last = l.cpu();
    if let Some(ci) = cpu_lookup(last)
        && ci.is_online()
        && cpu_is_idle(ci)
    {
        return last;
    }
    if let Some(ci) = cpus().find(|ci| ci.is_online() && cpu_is_idle(ci)) {
        return ci.index();
    }
    match cpu_lookup(last) {
        Some(ci) if ci.is_online() => last,
        _ => curcpu().index(),
    }
}

/// Makes a sleeping, new or preempted thread runnable on a suitable CPU and asks that CPU to
/// reschedule if the thread should run before what runs there now. Context: any.
pub(crate) fn setrunnable(l: *mut Lwp) {
    // SAFETY: callers pass live LWPs that are on no queue and not running.
    let ll = unsafe { &*l };
    assert!(
        ll.magic == lwp::LWP_MAGIC,
        "setrunnable: {l:p} is not a live thread (freed, or never created)"
    );
    if ll.class == SchedClass::Other {
        ts_recover(ll);
    }
    let target = choose_cpu(ll);
    {
        let mut rq = RUNQUEUES[target].lock();
        ll.cpu.store(target as u32, Ordering::Relaxed);
        ll.set_state(LwpState::Run);
        rq.push_back(l);
        note_unbound(target, &rq);
    }
    let Some(tci) = cpu_lookup(target) else {
        return;
    };
    // The running thread's priority as its CPU published it: the thread itself may exit and be
    // freed at any moment, so it is not dereferenced here.
    let running_pri = match tci.curpri.load(Ordering::Relaxed) {
        IDLE_PRI => -1,
        p => i64::from(p),
    };
    if i64::from(ll.pri()) > running_pri {
        request_resched(tci);
    }
}

/// Asks CPU `ci` to reschedule: locally through `ipending`, remotely with a Sched IPI (which
/// also wakes an idle CPU, and sets the flag in that CPU's `ipending`). Context: any.
pub(crate) fn request_resched(ci: &CpuInfo) {
    ci.resched.store(1, Ordering::Release);
    if core::ptr::eq(ci, curcpu()) {
        ci.ipending.fetch_or(PENDING_RESCHED, Ordering::Relaxed);
    } else {
        crate::intr::ipi_send(ci.index(), crate::intr::Ipi::Sched);
    }
}

/// SCHED_OTHER: priority from recent CPU use.
fn ts_update_pri(l: &Lwp) {
    let steps = l.estcpu.load(Ordering::Relaxed) / TS_TICKS_PER_STEP;
    l.pri
        .store(l.base_pri.saturating_sub(steps), Ordering::Relaxed);
}

/// SCHED_OTHER: a thread that slept gets its priority back, half its recent use per
/// ten ticks of sleep (at least one halving).
fn ts_recover(l: &Lwp) {
    let slept = arch::counter().saturating_sub(l.slept_at.load(Ordering::Relaxed));
    let per_tick = (arch::counter_frequency() / crate::clock::hz()).max(1);
    let halvings = (slept / per_tick / 10 + 1).min(31) as u32;
    let e = l.estcpu.load(Ordering::Relaxed) >> halvings;
    l.estcpu.store(e, Ordering::Relaxed);
    ts_update_pri(l);
}

/// Switches this CPU to the best runnable thread. With `requeue`, the current thread stays
/// runnable (a preemption or yield); otherwise it has already been put to sleep, made a
/// zombie, or is the idle thread. IRQs must be masked. Returns when the current thread runs
/// again (or at once if it is still the best choice).
pub(crate) fn switch_away(requeue: bool) {
    debug_assert!(arch::irqs_masked(), "switch_away with IRQs unmasked");
    let ci = curcpu();
    let me = ci.index();
    let cur = curlwp_ptr();
    // SAFETY: the running LWP is live.
    let curl = unsafe { &*cur };
    let borrowed = curl.switchto.load(Ordering::Relaxed);
    if !borrowed.is_null() {
        give_back(ci, cur, borrowed, requeue);
        return;
    }
    let idle = idle_of(ci);
    if curl.class == SchedClass::Other && curl.state() == LwpState::Sleep {
        curl.slept_at.store(arch::counter(), Ordering::Relaxed);
    }
    // Clear the request before looking: a wakeup that lands after the look sets it again.
    ci.resched.store(0, Ordering::Relaxed);
    ci.ipending.fetch_and(!PENDING_RESCHED, Ordering::Relaxed);
    let picked = {
        let mut rq = RUNQUEUES[me].lock();
        if requeue && cur != idle {
            curl.set_state(LwpState::Run);
            rq.push_back(cur);
        }
        let picked = rq.pop_highest(cur);
        note_unbound(me, &rq);
        picked
    };
    let next = picked.or_else(|| steal(me)).unwrap_or(idle);
    if next == cur {
        curl.set_state(LwpState::Onproc);
        return;
    }
    // SAFETY: `next` came off a run queue (or is this CPU's idle thread): live, not running.
    let nl = unsafe { &*next };
    if let Some(b) = nl.pinned_cpu() {
        assert!(
            b == me,
            "sched: thread {} is bound to cpu{b} but was about to run on cpu{me}",
            nl.name()
        );
    }
    nl.cpu.store(me as u32, Ordering::Relaxed);
    nl.set_state(LwpState::Onproc);
    while nl.on_cpu.load(Ordering::Acquire) {
        arch::cpu_relax();
    }
    nl.on_cpu.store(true, Ordering::Relaxed);
    nl.ncsw.fetch_add(1, Ordering::Relaxed);
    ci.ctxsw_count.fetch_add(1, Ordering::Relaxed);
    assert!(
        !kernel_lock::held_by(cur),
        "sched: thread {} switches away holding the kernel lock (it is released by the \
         voluntary switch paths and never preempted while held)",
        curl.name()
    );
    set_curlwp(ci, next);
    if curl.fpu_on.load(Ordering::Relaxed) {
        // SAFETY: `fp` belongs to the running thread.
        context::fpu_save_to(unsafe { &mut *curl.fp.get() });
        context::fpu_disable();
    }
    // SAFETY: IRQs masked; `cur` is running here and `next` runs nowhere (on_cpu was clear);
    // both contexts belong to live LWPs.
    let prev = unsafe { context::switch(curl.ctx.get(), nl.ctx.get(), cur as usize) };
    switch_finish(prev as *mut Lwp);
}

/// A softint thread running in a borrowed context (`switchto`) blocks or steps aside: the
/// thread it borrowed the CPU from resumes at once, at its own IPL and with its spin-mutex
/// count, without a run-queue pass
/// (NetBSD's `l_switchto`). From then on the softint thread is an ordinary bound thread: with
/// `requeue` it goes on this CPU's run queue and asks for a reschedule, so it preempts the
/// resumed thread as soon as that thread allows it. IRQs masked.
fn give_back(ci: &CpuInfo, cur: *mut Lwp, borrowed: *mut Lwp, requeue: bool) {
    // SAFETY: the running LWP is live.
    let curl = unsafe { &*cur };
    curl.switchto
        .store(core::ptr::null_mut(), Ordering::Relaxed);
    let mtx = curl.switchto_mtx.swap(0, Ordering::Relaxed);
    if mtx != 0 {
        ci.mtx_count.store(mtx as u32, Ordering::Relaxed);
        ci.mtx_oldspl.store((mtx >> 32) as u32, Ordering::Relaxed);
    }
    if requeue {
        curl.set_state(LwpState::Run);
        let mut rq = RUNQUEUES[ci.index()].lock();
        rq.push_back(cur);
        note_unbound(ci.index(), &rq);
        drop(rq);
        request_resched(ci);
    }
    curl.ncsw.fetch_add(1, Ordering::Relaxed);
    ci.ipl
        .store(curl.switchto_ipl.load(Ordering::Relaxed), Ordering::Relaxed);
    // The borrowed-from thread never stopped being on this CPU (`on_cpu` stayed set): it only
    // gets its CPU back. `curpri` was never changed.
    set_curlwp_borrowed(ci, borrowed);
    // SAFETY: IRQs masked; the borrowed-from thread's context was saved by `lend_cpu` on this
    // CPU and no other CPU runs that thread; the softint thread's context is its own. (Its FP
    // registers were never saved: a softint does not use FP, so they are still live.)
    let prev = unsafe { context::switch(curl.ctx.get(), (*borrowed).ctx.get(), cur as usize) };
    // Resumed later as an ordinary thread, by an ordinary switch.
    switch_finish(prev as *mut Lwp);
}

/// The fast-softint switch's half of [`set_curlwp`]: names `l` as this CPU's running thread
/// without touching `curpri`, which keeps the borrowed-from thread's priority (so a wakeup
/// compares against the thread that resumes when the softint is done). IRQs masked.
#[inline(always)]
pub(crate) fn set_curlwp_borrowed(ci: &CpuInfo, l: *mut Lwp) {
    crate::trace::event_with!(crate::trace::Kind::Switch, || trace_switch(ci, l));
    ci.curlwp.store(l as u64, Ordering::Release);
    arch::write_curlwp(l as u64);
}

/// The resumed half of a [`give_back`], run by the borrowed-from thread where its
/// `arch::context::lend_cpu` returned: lets the softint thread go. (Unlike `switch_finish` it
/// restores no FP state: the resumed thread's FP registers were never saved.) IRQs masked.
pub(crate) fn finish_borrowed_switch(prev: *mut Lwp) {
    // SAFETY: `prev` is the softint thread that just gave this CPU back; it is live (softint
    // threads never exit). Its context is saved, so another switch may now pick it.
    unsafe { (*prev).on_cpu.store(false, Ordering::Release) };
}

/// Runs on the new thread right after a switch (IRQs masked): releases the previous thread to
/// other CPUs, disposes of it if it exited, and restores the new thread's FP state. (A thread
/// that gave up the kernel lock to switch takes it back itself, after IRQs are unmasked.)
/// Inline, with the exited thread's case out of line: it is on every switch's path.
#[inline(always)]
fn switch_finish(prev: *mut Lwp) {
    // SAFETY: `prev` is the LWP this CPU just switched away from; it cannot be freed before
    // `on_cpu` is cleared below.
    let pl = unsafe { &*prev };
    if pl.state() == LwpState::Zombie {
        switch_finish_zombie(prev);
    } else {
        pl.on_cpu.store(false, Ordering::Release);
    }
    let l = curlwp();
    if l.fpu_on.load(Ordering::Relaxed) {
        context::fpu_enable();
        // SAFETY: `fp` belongs to the running thread.
        context::fpu_restore_from(unsafe { &*l.fp.get() });
    }
}

/// [`switch_finish`] for a previous thread that exited.
#[inline(never)]
fn switch_finish_zombie(prev: *mut Lwp) {
    // SAFETY: as in `switch_finish`.
    let pl = unsafe { &*prev };
    if pl.flags & crate::kthread::KTHREAD_MUSTJOIN != 0 {
        // The joiner frees the thread as soon as it sees `on_cpu` clear, so the flag is
        // cleared under the join queue's lock and the joiner waits for that lock before
        // freeing (`kthread_join`): after the unlock this CPU never touches `pl` again.
        assert!(
            pl.magic == lwp::LWP_MAGIC,
            "sched: exited thread {prev:p} was freed before it finished switching out"
        );
        crate::kthread::exited(pl, || {
            pl.on_cpu.store(false, Ordering::Release);
            crate::inject::point(crate::inject::Point::ZombieSwitchedOut);
        });
    } else {
        pl.on_cpu.store(false, Ordering::Release);
        // SAFETY: an exited, non-joinable thread that no CPU runs any more.
        unsafe { lwp_free(prev) };
    }
}

/// Takes an unbound runnable thread from another CPU's queue.
fn steal(me: usize) -> Option<*mut Lwp> {
    // Candidates from the hint, starting after this CPU so that thieves spread out.
    let mask = STEALABLE.load(Ordering::Relaxed) & !(1u64 << me);
    let after = mask & (!0u64).checked_shl(me as u32 + 1).unwrap_or(0);
    let before = mask & !after;
    for mut set in [after, before] {
        while set != 0 {
            let c = set.trailing_zeros() as usize;
            set &= set - 1;
            if let Some(mut rq) = RUNQUEUES[c].try_lock()
                && let Some(l) = rq.pop_unbound()
            {
                note_unbound(c, &rq);
                return Some(l);
            }
        }
    }
    None
}

/// One bit per CPU whose run queue held unbound threads when it last changed (each bit written
/// under that queue's lock), so an idle CPU learns whether there is work to steal with one load
/// instead of a walk over every CPU (which made each return to idle cost O(ncpu), and a
/// broadcast to every CPU O(ncpu²)). A stale bit costs one empty `steal` or a look at the
/// next interrupt, as a locked read that raced with a change would.
static STEALABLE: AtomicU64 = AtomicU64::new(0);

const _: () = assert!(MAXCPUS <= 64, "STEALABLE has one bit per CPU in a u64");

/// Publishes whether queue `cpu` holds unbound threads (its lock held by the caller, which
/// makes this the only writer of the CPU's bit: the load-then-update cannot race).
#[inline]
fn note_unbound(cpu: usize, rq: &RunQueue) {
    let bit = 1u64 << cpu;
    let has = rq.unbound > 0;
    if (STEALABLE.load(Ordering::Relaxed) & bit != 0) != has {
        if has {
            STEALABLE.fetch_or(bit, Ordering::Relaxed);
        } else {
            STEALABLE.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// Whether CPU `me`'s idle loop has something to run: its own queue, or unbound threads on
/// another CPU's. IRQs masked.
fn work_available(me: usize) -> bool {
    if RUNQUEUES[me].lock().count > 0 {
        return true;
    }
    STEALABLE.load(Ordering::Relaxed) & !(1u64 << me) != 0
}

/// The entry of every new thread (`Context::new`): finishes the switch, takes the kernel lock
/// for threads that are not MPSAFE, enables IRQs and calls the thread's function.
extern "C" fn lwp_trampoline(prev: usize) -> ! {
    switch_finish(prev as *mut Lwp);
    let l = curlwp();
    arch::irq_enable();
    if l.flags & crate::kthread::KTHREAD_MPSAFE == 0 {
        // With IRQs unmasked: a thread waiting for the kernel lock still takes IPIs.
        kernel_lock::kernel_lock();
    }
    (l.func)(l.arg);
    crate::kthread::kthread_exit(0)
}

/// Prepares `l`'s context to start at its function on its own stack.
pub(crate) fn lwp_prepare(l: &Lwp) {
    let top = l
        .stack
        .as_ref()
        .map(|s| s.top())
        .expect("a new thread has a stack");
    // SAFETY: the LWP is not running yet; its context is ours to write.
    unsafe { *l.ctx.get() = context::Context::new(lwp_trampoline, top) };
}

/// Preemption point: switches if a reschedule is wanted and allowed here. Called on the way
/// out of the outermost interrupt and when the IPL drops to IPL_NONE, with IRQs masked.
///
/// Not allowed: with preemption disabled, in an interrupt handler, at a raised IPL, in the
/// idle thread, and (as NetBSD's `kpreempt`) while the thread holds or is waiting for the
/// kernel lock: code under the kernel lock is switched only where it sleeps or yields, and the
/// last `kernel_unlock` takes the preemption that was put off.
pub(crate) fn preempt_if_wanted() {
    if !started() {
        return;
    }
    let ci = curcpu();
    if ci.resched.load(Ordering::Acquire) == 0 {
        return;
    }
    let l = curlwp();
    if l.nopreempt.load(Ordering::Relaxed) != 0
        || l.biglocks.load(Ordering::Relaxed) != 0
        || l.kl_wanted.load(Ordering::Relaxed)
        || ci.intr_depth.load(Ordering::Relaxed) != 0
        || ci.ipl.load(Ordering::Relaxed) != 0
        || core::ptr::eq(l, idle_of(ci))
        || l.state() != LwpState::Onproc
    {
        return;
    }
    switch_away(true);
}

/// After waking threads from thread context: switch now if one of them should preempt us.
pub(crate) fn maybe_preempt() {
    if !started() || arch::irqs_masked() {
        return;
    }
    let daif = arch::irq_save();
    preempt_if_wanted();
    arch::irq_restore(daif);
}

/// Test support: does what an interrupt asking this CPU to reschedule would do if it arrived
/// right here (a preemption, where one is allowed). Context: thread.
#[cfg(feature = "ktest")]
pub(crate) fn inject_preemption() {
    let daif = arch::irq_save();
    if !arch::daif_irqs_masked(daif) {
        request_resched(curcpu());
        preempt_if_wanted();
    }
    arch::irq_restore(daif);
}

/// Gives the CPU to another runnable thread of equal or higher priority, if any. A thread
/// holding the kernel lock gives it up while switched out and takes it back after. Context:
/// thread, IPL_NONE, no spin mutex held, preemption enabled (each asserted).
pub fn yield_now() {
    let l = curlwp();
    let daif = arch::irq_save();
    check_may_switch("yield_now", l);
    let held = kernel_lock::release_for_switch(l);
    switch_away(true);
    arch::irq_restore(daif);
    kernel_lock::reacquire_after_switch(held);
}

/// Asserts that the calling thread may give up the CPU: not in a hard interrupt handler,
/// IPL_NONE, no spin mutex held, preemption enabled, not the idle thread. Anything else would
/// leak a raised IPL, a held spin lock or a disabled preemption to the next thread on this CPU.
/// `call` names the API in the message. Context: thread.
pub fn assert_may_switch(call: &str) {
    let daif = arch::irq_save();
    check_may_switch(call, curlwp());
    arch::irq_restore(daif);
}

/// [`assert_may_switch`] for the running thread `l`, with IRQs masked (so the per-CPU values
/// read are this CPU's).
#[inline(always)]
fn check_may_switch(call: &str, l: &Lwp) {
    let ci = curcpu();
    let depth = ci.intr_depth.load(Ordering::Relaxed);
    let ipl = ci.ipl.load(Ordering::Relaxed);
    let held = ci.mtx_count.load(Ordering::Relaxed);
    let nopreempt = l.nopreempt.load(Ordering::Relaxed);
    if (depth | ipl | held | nopreempt) != 0 || l.class == SchedClass::IdleLoop {
        may_not_switch(call, l, depth, ipl, held, nopreempt);
    }
}

#[cold]
#[inline(never)]
fn may_not_switch(call: &str, l: &Lwp, depth: u32, ipl: u32, held: u32, nopreempt: u32) -> ! {
    assert!(
        depth == 0,
        "{call}: called from a hard interrupt handler; it switches threads and needs thread context"
    );
    assert!(
        held == 0,
        "{call}: called with {held} spin mutex(es) held; release them before switching threads"
    );
    assert!(
        ipl == 0,
        "{call}: called at {:?}; switching threads needs IPL_NONE",
        crate::spl::Ipl::from_u8(ipl as u8).unwrap_or(crate::spl::IPL_HIGH)
    );
    assert!(
        nopreempt == 0,
        "{call}: called with preemption disabled ({nopreempt} kpreempt_disable without \
         kpreempt_enable)"
    );
    panic!("{call}: called by the idle thread {}", l.name());
}

/// Disables preemption of the current thread (nests). Context: thread.
pub fn kpreempt_disable() {
    curlwp().nopreempt.fetch_add(1, Ordering::Relaxed);
}

/// Re-enables preemption; reschedules if one was requested meanwhile. Context: thread.
pub fn kpreempt_enable() {
    let l = curlwp();
    let before = l.nopreempt.fetch_sub(1, Ordering::Relaxed);
    assert!(before > 0, "kpreempt_enable: preemption was not disabled");
    if before == 1 {
        // Masked, so that the CPU whose request is checked is the one we run on.
        let daif = arch::irq_save();
        if !arch::daif_irqs_masked(daif) {
            preempt_if_wanted();
        }
        arch::irq_restore(daif);
    }
}

/// Called from the clock tick (IPL_SCHED) on every CPU.
pub(crate) fn tick() {
    if !started() {
        return;
    }
    let ci = curcpu();
    let cur = curlwp_ptr();
    // SAFETY: the running LWP is live.
    let l = unsafe { &*cur };
    if cur == idle_of(ci) {
        ci.idle_ticks.fetch_add(1, Ordering::Relaxed);
    } else {
        l.rticks.fetch_add(1, Ordering::Relaxed);
        let top = RUNQUEUES[ci.index()].lock().max_pri();
        match l.class {
            SchedClass::Rr => {
                if l.slice.fetch_sub(1, Ordering::Relaxed) <= 1 {
                    l.slice.store(RR_SLICE_TICKS, Ordering::Relaxed);
                    if top.is_some_and(|p| p >= l.pri()) {
                        request_resched(ci);
                    }
                }
            }
            SchedClass::Other => {
                let e = l.estcpu.load(Ordering::Relaxed);
                if e < l.base_pri * TS_TICKS_PER_STEP {
                    l.estcpu.store(e + 1, Ordering::Relaxed);
                }
                ts_update_pri(l);
                ci.curpri.store(l.pri(), Ordering::Relaxed);
                if top.is_some_and(|p| p >= l.pri()) && l.slice.fetch_sub(1, Ordering::Relaxed) <= 1
                {
                    l.slice.store(RR_SLICE_TICKS, Ordering::Relaxed);
                    request_resched(ci);
                }
            }
            SchedClass::IdleLoop => {}
        }
        if top.is_some_and(|p| p > l.pri()) {
            request_resched(ci);
        }
    }
    sleepq::tick(arch::counter());
}

/// What an otherwise idle CPU runs: switches to runnable work (its own queue first, then
/// stolen), else sleeps in `wfi` with IRQs masked between the check and the `wfi`, so a wakeup
/// IPI is never slept through (a pending interrupt ends `wfi` even while masked). Woken, it
/// handles the interrupt through the idle hook (`intr`'s dispatcher, called as the vector
/// would call it, IRQs still masked), which spares the exception's entry and return; without
/// a hook the interrupt is taken when IRQs are unmasked.
pub fn idle_loop() -> ! {
    let me = curcpu().index();
    loop {
        arch::irq_disable();
        if work_available(me) {
            switch_away(false);
        } else {
            crate::trace::event!(crate::trace::Kind::IdleEnter, 0, 0);
            arch::wait_for_interrupt();
            crate::trace::event!(crate::trace::Kind::IdleExit, 0, 0);
            let hook = IDLE_INTR_HOOK.load(Ordering::Acquire);
            if hook != 0 {
                // SAFETY: only `set_idle_intr_hook` stores here, from a `fn()`.
                let hook = unsafe { core::mem::transmute::<usize, fn()>(hook) };
                hook();
            }
        }
        arch::irq_enable();
    }
}

/// The interrupt dispatcher an idle CPU calls after `wfi` (0 = none yet). Kept as a hook
/// so that this module does not depend on `intr`, above it.
static IDLE_INTR_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the dispatcher idle CPUs call, IRQs masked, when `wfi` returns (once; `intr::init`
/// does): it must handle what is pending as the IRQ vector would, and may switch threads.
/// Boot CPU.
pub fn set_idle_intr_hook(hook: fn()) {
    let _ = IDLE_INTR_HOOK.compare_exchange(0, hook as usize, Ordering::AcqRel, Ordering::Relaxed);
}

extern "C" fn idle_entry(prev: usize) -> ! {
    switch_finish(prev as *mut Lwp);
    idle_loop()
}

fn noop(_: usize) {}

/// Makes the boot CPU's running context `lwp0` ("main", SCHED_RR at PRI_KTHREAD, bound to CPU 0)
/// and creates CPU 0's idle thread. Boot CPU, after the heap and the stack slots exist.
pub fn init_boot_cpu() {
    let ci = curcpu();
    let lwp0 = lwp_alloc(Lwp::new(
        next_id(),
        format_args!("main"),
        SchedClass::Rr,
        PRI_KTHREAD,
        crate::kthread::KTHREAD_MPSAFE,
        Some(0),
        noop,
        0,
        None,
    ));
    assert!(!lwp0.is_null(), "sched: no memory for lwp0");
    // SAFETY: freshly allocated, not yet visible to any other CPU.
    unsafe {
        (*lwp0).set_state(LwpState::Onproc);
        (*lwp0).on_cpu.store(true, Ordering::Relaxed);
    }
    ci.idlelwp
        .store(make_idle(0, true) as u64, Ordering::Release);
    set_curlwp(ci, lwp0);
}

/// An idle thread for `cpu`: with its own stack slot, starting in the idle loop, or (for a
/// secondary CPU, which turns its boot context into its idle thread) without one.
fn make_idle(cpu: usize, own_stack: bool) -> *mut Lwp {
    let slot = own_stack.then(|| stack::alloc().expect("sched: no stack slot for an idle thread"));
    let l = lwp_alloc(Lwp::new(
        next_id(),
        format_args!("idle/{cpu}"),
        SchedClass::IdleLoop,
        0,
        crate::kthread::KTHREAD_MPSAFE,
        Some(cpu),
        noop,
        0,
        slot,
    ));
    assert!(!l.is_null(), "sched: no memory for an idle thread");
    // SAFETY: freshly allocated and not running.
    let ll = unsafe { &*l };
    if let Some(top) = ll.stack.as_ref().map(|s| s.top()) {
        // SAFETY: not running yet; the context is ours to write.
        unsafe { *ll.ctx.get() = context::Context::new(idle_entry, top) };
    }
    l
}

/// Makes a secondary CPU's running context its idle thread and enters the idle loop.
pub fn start_secondary() -> ! {
    let ci = curcpu();
    let l = make_idle(ci.index(), false);
    // SAFETY: not yet visible to any other CPU.
    unsafe {
        (*l).set_state(LwpState::Onproc);
        (*l).on_cpu.store(true, Ordering::Relaxed);
    }
    ci.idlelwp.store(l as u64, Ordering::Release);
    set_curlwp(ci, l);
    arch::irq_enable();
    idle_loop()
}
