//! `softint(9)`: soft interrupts, work that a hard interrupt handler (or a thread) defers to run
//! soon on the same CPU at a soft IPL.
//!
//! # Where handlers run
//!
//! Each CPU has one softint LWP per soft level (`softint/LEVEL/CPU`, bound to the CPU, SERIAL
//! 223, NET 222, BIO 221, CLOCK 220), NetBSD's softint LWPs: a handler runs with its own
//! `curlwp` (an adaptive mutex it takes is owned by the softint LWP, never by the thread it
//! interrupted) and may block briefly.
//!
//! Dispatch is NetBSD/aarch64's "fast softints": the softint LWP borrows the CPU from the
//! running thread without a run-queue pass (`dispatch`): the running thread's context is
//! saved (`arch::context::lend_cpu`), the softint LWP starts afresh at the top of its stack at
//! the level's IPL, and when it is done the borrowed-from thread, which never left the CPU, goes
//! on where it was. If a handler blocks, the scheduler gives the CPU straight back to the
//! borrowed-from thread (`sched::give_back`) and the softint LWP finishes later as an ordinary
//! bound thread, then parks. The cost is one callee-saved context save per dispatch and a
//! stack per CPU and level; what it saves is a wakeup and a scheduler switch each way.
//!
//! # Scheduling and dispatch
//!
//! [`softint_schedule`] sets the handle's bit in this CPU's pending mask for its level. Outside
//! a hard interrupt handler, below the level, with IRQs unmasked, it dispatches at once, as an
//! interrupt there would. Otherwise it flags the level in `CpuInfo::ipending`, so the `splx`
//! that drops below the level (the `spl` lower hook) or the end of the outermost hard interrupt
//! dispatches it, highest level first. A dispatch runs the level's mask bit by bit; a handle
//! shows as running before its pending bit is cleared, just before its handler runs, so a
//! handler may schedule itself again and `softint_disestablish` never loses sight of it. Each handler
//! runs at its level's IPL with the kernel lock held unless SOFTINT_MPSAFE; afterwards the LWP
//! asserts, naming the handler, that it left the IPL as it found it, no spin mutex held,
//! preemption enabled and the kernel lock released.
//!
//! # Livelock
//!
//! A handler that always schedules itself would keep its level running forever and starve
//! every thread on the CPU. A dispatch that has found work waiting for [`BUSY_LIMIT_MS`] since
//! its second batch sleeps until the next clock tick (as Linux hands excess softirq work to
//! ksoftirqd after 2 ms): the borrowed-from thread resumes and the other threads of the CPU get
//! the rest of the tick. A dispatch that catches up (nothing pending) ends, so bursts are not
//! throttled.
//!
//! # Disestablish
//!
//! [`softint_disestablish`] marks the handle dying (further schedules are refused), then waits
//! until no CPU has it pending or running and frees the slot. Handles carry a generation, so a
//! stale handle is caught by name. Counters per CPU and level (scheduled, run) live in DPCPU.

use crate::arch::aarch64::{self as arch, context};
use crate::cpu::{CpuInfo, MAXCPUS, cpu_lookup, curcpu};
use crate::kthread::{KTHREAD_IDLE, KTHREAD_MPSAFE, kthread_create};
use crate::sched::lwp::{Lwp, LwpState};
use crate::spl::{IPL_SOFTBIO, IPL_SOFTCLOCK, IPL_SOFTNET, IPL_SOFTSERIAL, Ipl};
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Level: soft clock (callouts), IPL_SOFTCLOCK.
pub const SOFTINT_CLOCK: u32 = 0x0000;
/// Level: soft block I/O, IPL_SOFTBIO.
pub const SOFTINT_BIO: u32 = 0x1000;
/// Level: soft network, IPL_SOFTNET.
pub const SOFTINT_NET: u32 = 0x2000;
/// Level: soft serial, IPL_SOFTSERIAL (the highest).
pub const SOFTINT_SERIAL: u32 = 0x3000;
/// The level bits of the flags.
pub const SOFTINT_LVLMASK: u32 = 0xf000;
/// The handler does its own locking: no kernel lock around it.
pub const SOFTINT_MPSAFE: u32 = 0x0100;
/// The handler is meant to be scheduled on remote CPUs too (`softint_schedule_cpu`).
pub const SOFTINT_RCPU: u32 = 0x0200;

/// The number of soft levels.
pub const NLEVELS: usize = 4;
/// Handles the table holds (one bit each in a CPU's per-level pending mask).
pub const MAX_SOFTINTS: usize = 64;
/// How long a softint thread may keep finding work without ever catching up before it lets the
/// other threads of its CPU run until the next tick (Linux's softirq limit is 2 ms too).
pub const BUSY_LIMIT_MS: u64 = 2;
/// Thread priority of the SOFTINT_SERIAL threads (NetBSD's PRI_SOFTSERIAL); the lower levels
/// are one step below each.
pub const PRI_SOFTSERIAL: u32 = 223;

/// A handler: called with its argument at its level's IPL in its CPU's softint thread.
pub type SoftintFunc = fn(usize);

/// An established soft interrupt (NetBSD's `void *` cookie), valid on every CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftintHandle {
    index: u32,
    generation: u32,
}

impl SoftintHandle {
    /// The handle as one word (to keep it in an atomic, as drivers keep NetBSD's cookie).
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// A handle from [`to_raw`](Self::to_raw). Any value is accepted here; one that names no
    /// established soft interrupt is caught by name when it is used.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

const FREE: u64 = 0;
const ESTABLISHED: u64 = 1;
const DYING: u64 = 2;

/// A slot's generation (high half) and state (low half) in one word, so a schedule checks a
/// handle with one load.
const fn stamp(generation: u32, state: u64) -> u64 {
    (generation as u64) << 32 | state
}

struct Slot {
    stamp: AtomicU64,
    flags: AtomicU32,
    func: AtomicUsize,
    arg: AtomicUsize,
}

static SLOTS: [Slot; MAX_SOFTINTS] = [const {
    Slot {
        stamp: AtomicU64::new(FREE),
        flags: AtomicU32::new(0),
        func: AtomicUsize::new(0),
        arg: AtomicUsize::new(0),
    }
}; MAX_SOFTINTS];

/// Serialises establish and the freeing half of disestablish.
static TABLE_LOCK: SpinLock<()> = SpinLock::new(());

/// One CPU's soft interrupt state.
pub struct SoftintCpu {
    /// Per level: the handles pending on this CPU (bit = slot index).
    pending: [AtomicU64; NLEVELS],
    /// Per level: slot index + 1 of the handler running now, 0 = none.
    running: [AtomicU32; NLEVELS],
    /// Per level: the level's thread is in use (running a dispatch, or blocked or runnable
    /// after blocking in one); while it is, that thread itself runs what becomes pending.
    busy: [AtomicBool; NLEVELS],
    /// Per level: schedules on this CPU by this CPU that set a pending bit (written only here).
    scheduled: [AtomicU64; NLEVELS],
    /// Per level: the same, by other CPUs (`softint_schedule_cpu`).
    scheduled_remote: [AtomicU64; NLEVELS],
    /// Per level: handler calls on this CPU.
    run: [AtomicU64; NLEVELS],
    /// Per level: the softint thread (address), 0 before `init`.
    thread: [AtomicU64; NLEVELS],
    /// Per level: the top of that thread's stack, where every dispatch starts afresh.
    stack_top: [AtomicU64; NLEVELS],
}

crate::dpcpu_define! {
    /// Soft interrupt state and counters of this CPU.
    pub static SOFTINT: SoftintCpu = SoftintCpu {
        pending: [const { AtomicU64::new(0) }; NLEVELS],
        running: [const { AtomicU32::new(0) }; NLEVELS],
        busy: [const { AtomicBool::new(false) }; NLEVELS],
        scheduled: [const { AtomicU64::new(0) }; NLEVELS],
        scheduled_remote: [const { AtomicU64::new(0) }; NLEVELS],
        run: [const { AtomicU64::new(0) }; NLEVELS],
        thread: [const { AtomicU64::new(0) }; NLEVELS],
        stack_top: [const { AtomicU64::new(0) }; NLEVELS],
    };
}

/// [`BUSY_LIMIT_MS`] in counter ticks, computed once by `init` (the conversion divides in
/// 128 bits, too slow for the end of every dispatch).
static BUSY_BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);

/// Slots established without SOFTINT_MPSAFE (bit = slot index).
static NOT_MPSAFE: AtomicU64 = AtomicU64::new(0);

/// The IPL of level `level` (0 = CLOCK .. 3 = SERIAL).
pub const fn level_ipl(level: usize) -> Ipl {
    match level {
        0 => IPL_SOFTCLOCK,
        1 => IPL_SOFTBIO,
        2 => IPL_SOFTNET,
        _ => IPL_SOFTSERIAL,
    }
}

/// The level (0..4) of `flags`.
const fn level_of(flags: u32) -> usize {
    ((flags & SOFTINT_LVLMASK) >> 12) as usize
}

/// Counters of CPU `cpu` at level `level` (0 = CLOCK .. 3 = SERIAL): (scheduled, run).
/// Context: any.
pub fn counters(cpu: usize, level: usize) -> (u64, u64) {
    if cpu_lookup(cpu).is_none() || level >= NLEVELS {
        return (0, 0);
    }
    let s = SOFTINT.on_cpu(cpu);
    (
        s.scheduled[level].load(Ordering::Relaxed)
            + s.scheduled_remote[level].load(Ordering::Relaxed),
        s.run[level].load(Ordering::Relaxed),
    )
}

/// Zeroes this CPU's soft interrupt counters (`counters`). Only this CPU's softints write most
/// of them, without atomic read-modify-writes, so another CPU must not, nor a softint that
/// could interrupt one of those increments: `stats::reset_cpu_counters` runs this on every CPU
/// in a thread at IPL_SOFTSERIAL. Context: thread at IPL_SOFTSERIAL, on the CPU whose counters
/// are reset.
pub fn reset_this_cpu_counters() {
    let s = SOFTINT.get();
    for level in 0..NLEVELS {
        s.scheduled[level].store(0, Ordering::Relaxed);
        s.scheduled_remote[level].store(0, Ordering::Relaxed);
        s.run[level].store(0, Ordering::Relaxed);
    }
}

/// `softint_establish(flags, func, arg)`: makes a soft interrupt at the level in `flags`
/// (SOFTINT_CLOCK, _BIO, _NET or _SERIAL, with SOFTINT_MPSAFE and SOFTINT_RCPU), valid on every
/// CPU. Returns `None` when the table is full. Context: thread.
pub fn softint_establish(flags: u32, func: SoftintFunc, arg: usize) -> Option<SoftintHandle> {
    let known = SOFTINT_LVLMASK | SOFTINT_MPSAFE | SOFTINT_RCPU;
    assert!(
        flags & !known == 0 && level_of(flags) < NLEVELS,
        "softint_establish: bad flags {flags:#x} (a level SOFTINT_CLOCK/BIO/NET/SERIAL, \
         SOFTINT_MPSAFE, SOFTINT_RCPU)"
    );
    if crate::inject::fail(crate::inject::Site::SoftintEstablish) {
        return None;
    }
    let _g = TABLE_LOCK.lock();
    let (index, slot) = SLOTS
        .iter()
        .enumerate()
        .find(|(_, s)| s.stamp.load(Ordering::Acquire) as u32 as u64 == FREE)?;
    slot.flags.store(flags, Ordering::Relaxed);
    slot.func.store(func as usize, Ordering::Relaxed);
    slot.arg.store(arg, Ordering::Relaxed);
    let generation = (slot.stamp.load(Ordering::Relaxed) >> 32) as u32 + 1;
    if flags & SOFTINT_MPSAFE == 0 {
        NOT_MPSAFE.fetch_or(1 << index, Ordering::Relaxed);
    } else {
        NOT_MPSAFE.fetch_and(!(1 << index), Ordering::Relaxed);
    }
    slot.stamp
        .store(stamp(generation, ESTABLISHED), Ordering::Release);
    Some(SoftintHandle {
        index: index as u32,
        generation,
    })
}

/// The slot of `h`, checked: a handle that was disestablished (or never made) is a named bug.
fn slot_of(h: SoftintHandle, call: &str) -> &'static Slot {
    let slot = SLOTS.get(h.index as usize);
    match slot {
        Some(s)
            if s.stamp.load(Ordering::Acquire) == stamp(h.generation, ESTABLISHED)
                || s.stamp.load(Ordering::Acquire) == stamp(h.generation, DYING) =>
        {
            s
        }
        _ => panic!(
            "{call}: soft interrupt handle #{}.{} is not established (disestablished already, \
             or never made)",
            h.index, h.generation
        ),
    }
}

/// `softint_schedule(h)`: makes `h`'s handler run soon on this CPU. Idempotent while it is
/// pending here. Context: a hard interrupt handler, a softint handler, or thread context with
/// preemption disabled or the IPL raised (so that "this CPU" stays this CPU). Never blocks.
///
/// Called at an IPL below the handler's level outside a hard interrupt handler, it runs the
/// handler before it returns, as an interrupt arriving there would; otherwise the handler runs
/// when the IPL drops below its level (`splx`, the end of the hard interrupt).
pub fn softint_schedule(h: SoftintHandle) {
    let daif = arch::irq_save();
    let ci = curcpu();
    crate::trace::event_with!(crate::trace::Kind::SoftintSchedule, || {
        (0, h.index.into(), ci.index() as u64)
    });
    if ci.intr_depth.load(Ordering::Relaxed) != 0 {
        // In a hard interrupt handler: its interrupt exit runs what the IPL allows.
        if let Some(level) = mark_pending(SOFTINT.get(), h, "softint_schedule", false) {
            flag(ci, level);
        }
        arch::irq_restore(daif);
        return;
    }
    schedule_here(ci, h, daif);
}

/// `softint_schedule` outside hard interrupt handlers, IRQs masked (`daif` as the caller had
/// them): runs the handler at once if the IPL allows it and IRQs were unmasked.
#[inline(never)]
fn schedule_here(ci: &CpuInfo, h: SoftintHandle, daif: u64) {
    let unmasked = !arch::daif_irqs_masked(daif);
    if unmasked && !pinned(ci) {
        not_pinned("softint_schedule");
    }
    let mut direct = false;
    if let Some(level) = mark_pending(SOFTINT.get(), h, "softint_schedule", false) {
        direct = unmasked && ci.ipl.load(Ordering::Relaxed) < u32::from(level_ipl(level).as_u8());
        if !(direct && dispatch(ci, level)) {
            flag(ci, level);
        }
        if direct && ci.ipending.load(Ordering::Relaxed) & crate::spl::SOFT_LEVELS != 0 {
            // What the handler scheduled at other levels and the level now allows.
            run_pending_soft(ci, Ipl::from_word(ci.ipl.load(Ordering::Relaxed)));
        }
    }
    arch::irq_restore(daif);
    if direct {
        // A thread the handler woke may preempt this one (in a hard interrupt, the interrupt
        // exit looks; at a raised IPL, `splx`).
        crate::sched::maybe_preempt();
    }
}

/// `softint_schedule_cpu(h, ci)` (NetBSD 9): as [`softint_schedule`], on CPU `cpu` (an IPI
/// makes that CPU look at its pending soft interrupts if it is another CPU). Context: as
/// `softint_schedule` when `cpu` is this CPU; for another CPU, any context but the caller need
/// not be pinned.
pub fn softint_schedule_cpu(h: SoftintHandle, cpu: usize) {
    let target = cpu_lookup(cpu).filter(|ci| ci.is_online());
    let Some(target) = target else {
        panic!("softint_schedule_cpu: cpu{cpu} is not online");
    };
    let daif = arch::irq_save();
    if core::ptr::eq(target, curcpu()) {
        // This CPU: the caller must stay on it (asserted there).
        arch::irq_restore(daif);
        return softint_schedule(h);
    }
    crate::trace::event!(
        crate::trace::Kind::SoftintSchedule,
        h.index.into(),
        cpu as u64,
    );
    // Another CPU, named by index: where the caller runs does not matter (had it moved onto
    // `cpu` since, the IPI to itself would run it at the interrupt's exit).
    if let Some(level) = mark_pending(SOFTINT.on_cpu(cpu), h, "softint_schedule_cpu", true)
        && flag(target, level)
    {
        crate::inject::point(crate::inject::Point::IpiSending);
        // The Xcall IPI's interrupt exit runs what is pending at levels the CPU does not
        // block.
        crate::intr::ipi_send(cpu, crate::intr::Ipi::Xcall);
    }
    arch::irq_restore(daif);
}

/// As [`softint_schedule_cpu`] for every online CPU but this one, with one broadcast IPI
/// instead of one per CPU. Context: as `softint_schedule`, the caller pinned to its CPU.
pub fn softint_schedule_others(h: SoftintHandle) {
    let daif = arch::irq_save();
    let me = curcpu();
    crate::trace::event!(
        crate::trace::Kind::SoftintSchedule,
        h.index.into(),
        u64::MAX,
    );
    let mut tell = false;
    if let Some((level, bit)) = handle_level(h, "softint_schedule_others") {
        let mut others = crate::cpu::online_cpus() & !(1u64 << me.index());
        while others != 0 {
            let cpu = others.trailing_zeros() as usize;
            others &= others - 1;
            if set_pending(SOFTINT.on_cpu(cpu), level, bit, true)
                && let Some(ci) = cpu_lookup(cpu)
            {
                tell |= flag(ci, level);
            }
        }
    }
    if tell {
        crate::intr::ipi_broadcast(crate::intr::Ipi::Xcall);
    }
    arch::irq_restore(daif);
}

/// Whether the caller stays on this CPU: in an interrupt handler, in a softint thread, at a
/// raised IPL or with preemption disabled. IRQs masked.
#[inline(always)]
fn pinned(ci: &CpuInfo) -> bool {
    let l = crate::sched::curlwp();
    ci.intr_depth.load(Ordering::Relaxed) != 0
        || ci.ipl.load(Ordering::Relaxed) != 0
        || l.nopreempt.load(Ordering::Relaxed) != 0
        || l.softint_level().is_some()
}

#[cold]
#[inline(never)]
fn not_pinned(call: &str) -> ! {
    panic!(
        "{call}: called from a thread with preemption enabled; disable it (kpreempt_disable) \
         or raise the IPL so that the CPU it schedules on is the one it runs on"
    )
}

/// Sets `h`'s pending bit in `s` (some CPU's state). Returns its level if the bit was newly
/// set, `None` if it was pending already or `h` is being disestablished.
#[inline(always)]
fn mark_pending(
    s: &SoftintCpu,
    h: SoftintHandle,
    call: &'static str,
    remote: bool,
) -> Option<usize> {
    let (level, bit) = handle_level(h, call)?;
    set_pending(s, level, bit, remote).then_some(level)
}

/// The level of `h` and its bit in a pending mask, `None` if `h` is being disestablished (a
/// handle that names no established soft interrupt is a named bug).
#[inline(always)]
fn handle_level(h: SoftintHandle, call: &'static str) -> Option<(usize, u64)> {
    let index = h.index as usize;
    let Some(slot) = SLOTS.get(index) else {
        bad_handle(h, call)
    };
    let now = slot.stamp.load(Ordering::Acquire);
    if now != stamp(h.generation, ESTABLISHED) {
        if now == stamp(h.generation, DYING) {
            return None;
        }
        bad_handle(h, call);
    }
    let level = level_of(slot.flags.load(Ordering::Relaxed)) & (NLEVELS - 1);
    Some((level, 1u64 << index))
}

/// Sets `bit` in `s`'s pending mask of `level` and counts the schedule; returns whether it was
/// newly set.
#[inline(always)]
fn set_pending(s: &SoftintCpu, level: usize, bit: u64, remote: bool) -> bool {
    if s.pending[level].fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return false;
    }
    if remote {
        s.scheduled_remote[level].fetch_add(1, Ordering::Relaxed);
    } else {
        // IRQs masked and only this CPU writes it.
        let n = &s.scheduled[level];
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    true
}

/// Flags `level` in `ci`'s `ipending`, so its next `splx` or interrupt exit below the level
/// runs it. Returns whether the flag was newly set (the CPU may need telling).
#[inline(always)]
fn flag(ci: &CpuInfo, level: usize) -> bool {
    let soft = 1u32 << level_ipl(level).as_u8();
    ci.ipending.fetch_or(soft, Ordering::AcqRel) & soft == 0
}

#[cold]
#[inline(never)]
fn bad_handle(h: SoftintHandle, call: &str) -> ! {
    panic!(
        "{call}: soft interrupt handle #{}.{} is not established (disestablished already, or \
         never made)",
        h.index, h.generation
    )
}

/// `softint_disestablish(h)`: stops `h` from being scheduled, waits until its handler is
/// neither pending nor running on any CPU, and frees it. Calling it from the handler itself, or
/// with a handle already disestablished, is a named bug. Context: thread, IPL_NONE (it sleeps).
pub fn softint_disestablish(h: SoftintHandle) {
    let slot = slot_of(h, "softint_disestablish");
    let level = level_of(slot.flags.load(Ordering::Relaxed));
    if let Some(ipl) = crate::sched::curlwp().softint_level()
        && ipl == level_ipl(level).as_u8()
        && SOFTINT.get().running[level].load(Ordering::Acquire) == h.index + 1
    {
        panic!(
            "softint_disestablish: called from the handler of #{} itself; it would wait for \
             itself",
            h.index
        );
    }
    crate::sync::assert_sleepable("softint_disestablish");
    assert!(
        slot.stamp
            .compare_exchange(
                stamp(h.generation, ESTABLISHED),
                stamp(h.generation, DYING),
                Ordering::AcqRel,
                Ordering::Acquire
            )
            .is_ok(),
        "softint_disestablish: soft interrupt #{} is already being disestablished",
        h.index
    );
    // Every CPU passes through the level once (NetBSD's xc_barrier at the handler's level):
    // a handler that was running anywhere has returned. What was pending at the same moment may
    // still run after the barrier's own softint (a batch runs in slot order), so the per-CPU
    // state is checked after it too; that loop seldom turns.
    let hook = BARRIER_HOOK.load(Ordering::Acquire);
    if hook != 0 {
        // SAFETY: only `set_barrier_hook` stores here, from a `fn(Ipl)`.
        let hook = unsafe { core::mem::transmute::<usize, fn(Ipl)>(hook) };
        hook(level_ipl(level));
    }
    let bit = 1u64 << h.index;
    let busy = || {
        crate::cpu::cpus().any(|ci| {
            let s = SOFTINT.on_cpu(ci.index());
            s.pending[level].load(Ordering::Acquire) & bit != 0
                || s.running[level].load(Ordering::Acquire) == h.index + 1
        })
    };
    while busy() {
        crate::kthread::kpause(1);
    }
    let _g = TABLE_LOCK.lock();
    slot.func.store(0, Ordering::Relaxed);
    slot.arg.store(0, Ordering::Relaxed);
    slot.stamp
        .store(stamp(h.generation, FREE), Ordering::Release);
}

/// Runs the soft interrupts pending on this CPU at levels above `s`, highest first. IRQs
/// masked, outside hard interrupt handlers, with the IPL at `s` and the caller able to take
/// an interrupt here (IRQs were unmasked where it came from).
#[inline(always)]
fn run_pending_soft(ci: &CpuInfo, s: Ipl) {
    loop {
        let p = ci.ipending.load(Ordering::Relaxed) & s.unblocked_mask() & crate::spl::SOFT_LEVELS;
        if p == 0 {
            return;
        }
        let ipl = 31 - p.leading_zeros();
        ci.ipending.fetch_and(!(1 << ipl), Ordering::AcqRel);
        if !dispatch(ci, ipl as usize - 1) {
            ci.ipending.fetch_or(1 << ipl, Ordering::AcqRel);
            return;
        }
    }
}

/// The `spl` lower hook (also what an interrupt exit calls): runs pending soft interrupts
/// unblocked by the drop to `s`, unless the code that lowered the IPL had IRQs masked (then
/// the next interrupt exit or `splx` does).
fn lower_hook(s: Ipl, masked: bool) {
    // (In a hard interrupt handler `s` is at least the handler's level, a hardware one, so
    // no soft level is unblocked and nothing runs. `spl` calls it unmasked only.)
    debug_assert!(!masked, "softint: lower hook called for a masked lowering");
    run_pending_soft(curcpu(), s);
}

/// Runs level `level`'s pending handlers in its softint thread, which borrows the CPU from
/// the running thread (NetBSD's fast softints): no run-queue pass, no scheduler decision, the
/// running thread's context saved and the softint thread entered at the top of its stack.
/// Returns false (the caller flags the level) if the running thread cannot lend the CPU now.
/// IRQs masked; the IPL is below the level.
#[inline(always)]
fn dispatch(ci: &CpuInfo, level: usize) -> bool {
    let level = level & (NLEVELS - 1);
    let s = SOFTINT.get();
    let sl = s.thread[level].load(Ordering::Relaxed) as *mut Lwp;
    if sl.is_null() || s.busy[level].load(Ordering::Relaxed) {
        // Not made yet (`init` looks at what is pending), or busy: the busy thread runs what
        // is pending before it parks.
        return true;
    }
    let pinned = crate::sched::curlwp_ptr();
    // SAFETY: the running thread is live while it runs.
    let pl = unsafe { &*pinned };
    // Callers come from code that had IRQs unmasked, and a thread changes its own state only
    // with IRQs masked (sleep, exit, switch): it is running, not half-way through a switch.
    debug_assert!(
        pl.state() == LwpState::Onproc,
        "softint: dispatch over thread {} in state {:?}",
        pl.name(),
        pl.state()
    );
    // SAFETY: softint threads are never freed.
    let l = unsafe { &*sl };
    s.busy[level].store(true, Ordering::Relaxed);
    l.switchto.store(pinned, Ordering::Relaxed);
    l.switchto_ipl
        .store(ci.ipl.load(Ordering::Relaxed), Ordering::Relaxed);
    if ci.mtx_count.load(Ordering::Relaxed) != 0 {
        lend_spin_mutexes(ci, l);
    }
    ci.ipl
        .store(u32::from(level_ipl(level).as_u8()), Ordering::Relaxed);
    l.on_cpu.store(true, Ordering::Relaxed);
    l.set_state(LwpState::Onproc);
    crate::sched::set_curlwp_borrowed(ci, sl);
    let top = s.stack_top[level].load(Ordering::Relaxed);
    // The argument: this CPU's state (aligned) with the level in its low bits.
    let arg = s as *const SoftintCpu as usize | level;
    // SAFETY: IRQs masked; the context is the running thread's; the softint thread's stack is
    // unused while it is not busy (its top is aligned by `init`), and `softint_main` returns
    // or blocks with IRQs masked.
    let prev = unsafe { context::lend_cpu(pl.ctx.get(), top, arg, softint_main) };
    if prev != 0 {
        // The softint thread blocked and the scheduler handed the CPU back (`give_back`).
        crate::sched::finish_borrowed_switch(prev as *mut Lwp);
    }
    true
}

/// The borrowed-from thread holds spin mutexes (at an IPL below the softint's level): keep its
/// count and saved IPL in the softint thread (`switchto_mtx`, put back when it resumes) and
/// let the softint count its own from zero. IRQs masked.
#[cold]
#[inline(never)]
fn lend_spin_mutexes(ci: &CpuInfo, l: &Lwp) {
    let held = ci.mtx_count.swap(0, Ordering::Relaxed);
    let oldspl = ci.mtx_oldspl.load(Ordering::Relaxed);
    l.switchto_mtx
        .store(u64::from(held) | u64::from(oldspl) << 32, Ordering::Relaxed);
}

/// The softint thread of level `level` (this CPU's): runs batches of pending handlers until
/// none is pending, then parks. Entered with IRQs masked, at the level's IPL, from
/// [`dispatch`] (borrowing the CPU) each time afresh at the top of its stack.
extern "C" fn softint_main(arg: usize) -> usize {
    let level = arg & (NLEVELS - 1);
    // SAFETY: `dispatch` passes this CPU's `SOFTINT` (a static per-CPU copy) with the level in
    // the low bits, which its alignment leaves free.
    let s = unsafe { &*((arg & !(NLEVELS - 1)) as *const SoftintCpu) };
    // A snapshot: each bit is cleared by `run_one`, only once the handle shows as running.
    let batch = s.pending[level].load(Ordering::Acquire);
    if batch != 0 && batch & ((batch - 1) | NOT_MPSAFE.load(Ordering::Relaxed)) == 0 {
        // The common case, kept short: one MPSAFE handler, and usually nothing more after it
        // (then no livelock clock is started: the guard counts from the second batch).
        arch::irq_enable();
        run_one::<false>(s, level, batch.trailing_zeros() as usize);
        arch::irq_disable();
        let more = take_pending(s, level);
        if more == 0 {
            return park(s, level);
        }
        return softint_loop(s, level, more, true);
    }
    softint_loop(s, level, batch, false)
}

/// The rest of a dispatch: runs `batch`, then whatever became pending meanwhile, until
/// nothing is, then parks. IRQs masked. `second`: a first batch already ran and `batch` is
/// what became pending during it (the livelock guard's clock starts now).
#[inline(never)]
fn softint_loop(s: &SoftintCpu, level: usize, mut batch: u64, second: bool) -> usize {
    let mut since = 0;
    if second {
        since = livelock_guard(since);
    }
    while batch != 0 {
        if batch & NOT_MPSAFE.load(Ordering::Relaxed) != 0 && borrowed_kernel_lock() {
            step_aside(level);
        } else {
            arch::irq_enable();
            while batch != 0 {
                let index = batch.trailing_zeros() as usize;
                batch &= batch - 1;
                run_one::<true>(s, level, index);
            }
            since = livelock_guard(since);
            arch::irq_disable();
        }
        batch = take_pending(s, level);
    }
    park(s, level)
}

/// Clears the level's flag in `ipending` and takes what is pending at it. IRQs masked.
///
/// The read-modify-write is skipped when the flag is not set: a flag set after that look
/// was set by a schedule whose pending bit is either seen by the load below (and run) or
/// not (and then that schedule found the flag clear and sent the IPI that runs it).
#[inline(always)]
fn take_pending(s: &SoftintCpu, level: usize) -> u64 {
    let soft = 1u32 << level_ipl(level).as_u8();
    let ipending = &curcpu().ipending;
    if ipending.load(Ordering::Relaxed) & soft != 0 {
        ipending.fetch_and(!soft, Ordering::Relaxed);
    }
    s.pending[level].load(Ordering::Acquire)
}

/// A handler that needs the kernel lock, over a thread that holds or is taking it on this
/// CPU: the softint thread gives the CPU back and runs as an ordinary (bound, highest
/// priority) thread instead, once that thread lets go of the lock. IRQs masked; returns, so
/// masked, in the thread.
#[cold]
#[inline(never)]
fn step_aside(level: usize) {
    // The batch is still pending (bits are cleared only as their handlers start).
    crate::sched::switch_away(true);
    curcpu()
        .ipl
        .store(u32::from(level_ipl(level).as_u8()), Ordering::Relaxed);
}

/// Livelock guard, after each batch: a dispatch that has found work waiting for
/// [`BUSY_LIMIT_MS`] since its second batch lets the rest of the CPU run until the next tick
/// (the thread it borrowed from resumes meanwhile). `since` is 0 after the first batch.
#[inline(never)]
fn livelock_guard(since: u64) -> u64 {
    let now = arch::counter();
    if since == 0 {
        return now;
    }
    if now.wrapping_sub(since) > BUSY_BUDGET.load(Ordering::Relaxed) {
        crate::kthread::kpause(1);
        return arch::counter();
    }
    since
}

/// Whether the thread the running softint thread borrowed from (or one below it) holds or is
/// taking the kernel lock: a non-MPSAFE handler would spin for it on this CPU for ever.
#[cold]
fn borrowed_kernel_lock() -> bool {
    let mut p = crate::sched::curlwp().switchto.load(Ordering::Relaxed);
    while !p.is_null() {
        // SAFETY: a borrowed-from thread cannot go away while it is borrowed.
        let l = unsafe { &*p };
        if l.biglocks.load(Ordering::Relaxed) != 0 || l.kl_wanted.load(Ordering::Relaxed) {
            return true;
        }
        p = l.switchto.load(Ordering::Relaxed);
    }
    false
}

/// The end of a dispatch, nothing pending, IRQs masked. A softint thread that still borrows
/// the CPU gives it back to the thread it borrowed it from: returns 0, and `lend_cpu` loads
/// that thread's context. One that blocked meanwhile (now an ordinary thread) switches away
/// for good: its next dispatch starts afresh at the top of its stack.
#[inline(always)]
fn park(s: &SoftintCpu, level: usize) -> usize {
    let ci = curcpu();
    let me = crate::sched::curlwp();
    // `switchto` and `switchto_mtx` of a softint thread are written only on its CPU with
    // IRQs masked (here, `dispatch`, the scheduler's give-back): plain loads and stores.
    let borrowed = me.switchto.load(Ordering::Relaxed);
    if borrowed.is_null() {
        park_for_good(s, level, me);
    }
    me.switchto.store(core::ptr::null_mut(), Ordering::Relaxed);
    me.set_state(LwpState::Idle);
    let mtx = me.switchto_mtx.load(Ordering::Relaxed);
    if mtx != 0 {
        me.switchto_mtx.store(0, Ordering::Relaxed);
        ci.mtx_count.store(mtx as u32, Ordering::Relaxed);
        ci.mtx_oldspl.store((mtx >> 32) as u32, Ordering::Relaxed);
    }
    ci.ipl
        .store(me.switchto_ipl.load(Ordering::Relaxed), Ordering::Relaxed);
    crate::sched::set_curlwp_borrowed(ci, borrowed);
    // Nothing touches this thread's stack or context until the next dispatch on this CPU,
    // which cannot come before IRQs are unmasked in the resumed thread.
    me.on_cpu.store(false, Ordering::Release);
    s.busy[level].store(false, Ordering::Relaxed);
    0
}

/// [`park`] for a softint thread that blocked during the dispatch (an ordinary thread now):
/// it switches away for good.
#[cold]
#[inline(never)]
fn park_for_good(s: &SoftintCpu, level: usize, me: &Lwp) -> ! {
    me.set_state(LwpState::Idle);
    curcpu().ipl.store(0, Ordering::Relaxed);
    s.busy[level].store(false, Ordering::Relaxed);
    crate::sched::switch_away(false);
    unreachable!("softint: a parked softint thread was switched back to");
}

/// Runs `f` at once in the calling thread as work of the soft level with IPL `ipl` on CPU
/// `cpu`, as that level's softint thread would run a handler there: at `ipl` (hard
/// interrupts still come in), excluded from that level's handlers on this CPU, with the
/// thread marked as in a soft interrupt (`softint_level`), so it may block briefly at its
/// level as a handler may, and stays on this CPU until `f` returns even if it blocks (the
/// scheduler counts it as bound). What became pending at the level meanwhile runs when the
/// IPL drops back to IPL_NONE, before this returns.
///
/// This is how a high-priority cross call runs the caller's own share ("the caller runs it
/// locally"): no softint thread is entered, so no context is saved and restored. While the
/// thread is blocked inside `f` it waits at its own priority, not the softint thread's.
///
/// Returns false, without running `f`, if the caller is not on CPU `cpu`, the level's softint
/// thread is in use on this CPU (a handler of the level is running or blocked: `f` would
/// overtake it), or the caller is not a thread at IPL_NONE with IRQs unmasked outside soft
/// interrupts; then the caller schedules the work the ordinary way. Context: thread, IPL_NONE.
/// Blocks only if `f` does.
#[inline(always)]
pub fn run_inline(ipl: Ipl, cpu: usize, f: impl FnOnce()) -> bool {
    debug_assert!(
        ipl.is_soft(),
        "softint: run_inline at {ipl}, not a soft level"
    );
    let level = (ipl.as_u8() as usize).wrapping_sub(1) & (NLEVELS - 1);
    let daif = arch::irq_save();
    let ci = curcpu();
    let s = SOFTINT.get();
    let l = crate::sched::curlwp();
    if arch::daif_irqs_masked(daif)
        || ci.index() != cpu
        || ci.ipl.load(Ordering::Relaxed) != 0
        || ci.intr_depth.load(Ordering::Relaxed) != 0
        || l.softint_level().is_some()
        || s.busy[level].load(Ordering::Relaxed)
        || s.thread[level].load(Ordering::Relaxed) == 0
    {
        arch::irq_restore(daif);
        return false;
    }
    // IRQs masked: nothing can dispatch the level here between the check and the claim.
    s.busy[level].store(true, Ordering::Relaxed);
    l.set_softint_level(ipl.as_u8());
    ci.ipl.store(u32::from(ipl.as_u8()), Ordering::Relaxed);
    arch::irq_restore(daif);
    f();
    arch::irq_disable();
    // The same CPU: the thread was pinned to it while it had the level.
    let ci = curcpu();
    let now = ci.ipl.load(Ordering::Relaxed);
    if now != u32::from(ipl.as_u8()) {
        inline_ipl_changed(ipl, now);
    }
    end_inline(ci, s, l, level);
    arch::irq_restore(daif);
    // Back to IPL_NONE: what became pending at the level meanwhile (and anything below it)
    // runs now, and so does a preemption asked for meanwhile.
    crate::spl::splx(crate::spl::IPL_NONE);
    true
}

/// The end of [`run_inline`] (also its test-harness recovery): the thread is an ordinary one
/// again and the level is free; if anything became pending at the level meanwhile (a dispatch
/// that found the level busy left it for the busy thread, which is this one), it is flagged
/// for the coming drop of the IPL. IRQs masked.
#[inline(always)]
fn end_inline(ci: &CpuInfo, s: &SoftintCpu, l: &Lwp, level: usize) {
    l.set_softint_level(0);
    s.busy[level].store(false, Ordering::Relaxed);
    if s.pending[level].load(Ordering::Acquire) != 0 {
        flag(ci, level);
    }
}

#[cold]
#[inline(never)]
fn inline_ipl_changed(ipl: Ipl, now: u32) -> ! {
    panic!(
        "softint: work run inline at {ipl} returned at {} (an spl raise or lower was not undone)",
        Ipl::from_u8(now as u8).unwrap_or(crate::spl::IPL_HIGH)
    )
}

/// Test-harness recovery: the running thread was abandoned inside [`run_inline`] (its work
/// panicked or faulted): the level is given back and the thread is an ordinary one again.
/// Returns false, doing nothing, if the thread was not running work inline (a softint
/// thread's own handler is ended by [`abandon_handler`] instead). The harness puts the IPL
/// back itself.
pub fn abandon_inline() -> bool {
    let l = crate::sched::curlwp();
    let Some(ipl) = l.softint_level() else {
        return false;
    };
    let level = (ipl as usize - 1) & (NLEVELS - 1);
    let s = SOFTINT.get();
    if s.thread[level].load(Ordering::Relaxed) == l as *const Lwp as u64 {
        return false;
    }
    let daif = arch::irq_save();
    end_inline(curcpu(), s, l, level);
    arch::irq_restore(daif);
    true
}

/// Test-harness recovery: the handler running in the current softint thread panicked or
/// faulted. Ends the dispatch as if the handler had returned (the rest of the level stays
/// pending for the next one) and gives the CPU back. Never returns.
pub fn abandon_handler() -> ! {
    arch::irq_disable();
    let me = crate::sched::curlwp();
    let level = match me.softint_level() {
        Some(ipl) => ipl as usize - 1,
        None => panic!("softint: abandon_handler called outside a softint thread"),
    };
    let s = SOFTINT.get();
    let ci = curcpu();
    s.running[level].store(0, Ordering::Release);
    ci.mtx_count.store(0, Ordering::Relaxed);
    me.nopreempt.store(0, Ordering::Relaxed);
    if s.pending[level].load(Ordering::Acquire) != 0 {
        ci.ipending
            .fetch_or(1 << level_ipl(level).as_u8(), Ordering::Relaxed);
    }
    let borrowed = me.switchto.load(Ordering::Relaxed);
    park(s, level);
    // SAFETY: IRQs masked; `park` gave the CPU back to `borrowed`, whose context `lend_cpu`
    // saved; this stack is abandoned (the next dispatch starts at its top).
    unsafe { context::resume((*borrowed).ctx.get(), 0) }
}

/// Runs the handler of slot `index` (at the level's IPL, where the softint thread runs) and
/// checks what it left behind.
#[inline(always)]
fn run_one<const MAY_LOCK: bool>(s: &SoftintCpu, level: usize, index: usize) {
    let slot = &SLOTS[index];
    let bit = 1u64 << index;
    // The handle shows as running before its pending bit goes, so `softint_disestablish`, which
    // waits while either shows on any CPU, never sees it in neither state until the handler has
    // returned. (Clearing the bit just before the call lets the handler schedule itself.)
    s.running[level].store(index as u32 + 1, Ordering::Release);
    s.pending[level].fetch_and(!bit, Ordering::AcqRel);
    // A pending bit always names an established slot (disestablish waits for it to clear);
    // func is 0 only while a slot is free.
    let func = slot.func.load(Ordering::Acquire);
    if func == 0 {
        s.running[level].store(0, Ordering::Release);
        return;
    }
    let arg = slot.arg.load(Ordering::Relaxed);
    // SAFETY: `func` was stored from a `SoftintFunc` by `softint_establish` and the slot cannot
    // be freed while this CPU has it pending or running (disestablish waits for both).
    let f: SoftintFunc = unsafe { core::mem::transmute::<usize, SoftintFunc>(func) };
    // Only this CPU's softint thread of this level writes it.
    s.run[level].store(s.run[level].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    // Without MAY_LOCK the caller knows the handler is MPSAFE.
    let mpsafe = !MAY_LOCK || slot.flags.load(Ordering::Relaxed) & SOFTINT_MPSAFE != 0;
    if !mpsafe {
        crate::sync::kernel_lock::kernel_lock();
    }
    crate::trace::event!(crate::trace::Kind::SoftintRun, index as u64, level as u64);
    f(arg);
    crate::trace::event!(crate::trace::Kind::SoftintDone, index as u64, level as u64);
    if !mpsafe {
        crate::sync::kernel_lock::kernel_unlock();
    }
    check_after(index, func, level_ipl(level));
    s.running[level].store(0, Ordering::Release);
}

/// After a handler: the IPL as it was, no spin mutex, preemption enabled, no kernel lock. The
/// softint thread is bound to its CPU, so `curcpu()` cannot go stale here and the fields are
/// read without masking IRQs; the messages are built only when a rule is broken.
#[inline(always)]
fn check_after(index: usize, func: usize, ipl: Ipl) {
    let ci = curcpu();
    let now = ci.ipl.load(Ordering::Relaxed);
    let held = ci.mtx_count.load(Ordering::Relaxed);
    let nopreempt = crate::sched::curlwp().nopreempt.load(Ordering::Relaxed);
    if u32::from(ipl.as_u8()) != now
        || held != 0
        || nopreempt != 0
        // (`kernel_lock_held` without its "scheduler started" test: a softint thread runs.)
        || crate::sync::kernel_lock::held_by(crate::sched::curlwp_ptr())
    {
        handler_misbehaved(index, func, ipl, now, held, nopreempt);
    }
}

#[cold]
#[inline(never)]
fn handler_misbehaved(index: usize, func: usize, ipl: Ipl, now: u32, held: u32, nopreempt: u32) {
    let name = || alloc::format!("soft interrupt #{index} (handler at {func:#x})");
    assert!(
        u32::from(ipl.as_u8()) == now,
        "softint: {} returned at IPL {now}, entered at {ipl}",
        name()
    );
    assert!(
        held == 0,
        "softint: {} returned holding {held} spin mutex(es)",
        name()
    );
    assert!(
        nopreempt == 0,
        "softint: {} returned with preemption disabled",
        name()
    );
    panic!("softint: {} returned holding the kernel lock", name());
}

/// Creates the softint threads of every online CPU and installs the `spl` lower hook. Boot
/// CPU, once all CPUs are up. Soft interrupts scheduled before this run at the first
/// interrupt exit or `splx` after it.
pub fn init() {
    BUSY_BUDGET.store(
        crate::clock::ms_to_counter(BUSY_LIMIT_MS),
        Ordering::Relaxed,
    );
    for ci in crate::cpu::cpus().filter(|ci| ci.is_online()) {
        let cpu = ci.index();
        for level in 0..NLEVELS {
            let mut lp = None;
            // Created KTHREAD_IDLE and never started: the thread only ever runs from
            // `dispatch`, on the stack and with the Lwp made here.
            kthread_create(
                (PRI_SOFTSERIAL as usize - (NLEVELS - 1 - level)) as i32,
                KTHREAD_MPSAFE | KTHREAD_IDLE,
                Some(cpu),
                never_started,
                level,
                Some(&mut lp),
                format_args!("softint/{}/{cpu}", ["clk", "bio", "net", "ser"][level]),
            )
            .expect("softint: cannot create the softint threads");
            let lwp = lp
                .and_then(|r| r.lwp())
                .expect("softint: a new thread has an Lwp");
            lwp.set_softint_level(level_ipl(level).as_u8());
            let top = lwp.stack_bounds().expect("softint: a thread has a stack").1;
            let s = SOFTINT.on_cpu(cpu);
            s.stack_top[level].store(top & !0xf, Ordering::Relaxed);
            s.thread[level].store(lwp as *const _ as u64, Ordering::Release);
            if s.pending[level].load(Ordering::Acquire) != 0 {
                ci.ipending
                    .fetch_or(1 << level_ipl(level).as_u8(), Ordering::Relaxed);
            }
        }
    }
    crate::spl::set_lower_hook(lower_hook);
}

fn never_started(_: usize) {
    unreachable!("softint: a softint thread was started as an ordinary thread");
}

/// How `softint_disestablish` waits for every CPU to pass through a level: `xcall` installs
/// `xc_barrier` at that level (kept as a hook so this module does not depend on the one above
/// it). 0 = none (polling only).
static BARRIER_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the barrier `softint_disestablish` uses (once; `xcall::init` does). Boot CPU.
pub fn set_barrier_hook(hook: fn(Ipl)) {
    let _ = BARRIER_HOOK.compare_exchange(0, hook as usize, Ordering::AcqRel, Ordering::Relaxed);
}

/// One established soft interrupt, as [`established`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftintInfo {
    /// Slot index (the handle's bit in the pending masks).
    pub index: usize,
    /// Level, 0 = CLOCK .. 3 = SERIAL.
    pub level: usize,
    /// The flags given to `softint_establish`.
    pub flags: u32,
    /// The handler's address (the monitor's console names it).
    pub func: usize,
    /// Whether it is being disestablished.
    pub dying: bool,
}

/// The established soft interrupts now, by slot (a snapshot; for the monitor).
/// Context: thread (it allocates).
pub fn established() -> alloc::vec::Vec<SoftintInfo> {
    SLOTS
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| {
            let state = slot.stamp.load(Ordering::Acquire) as u32 as u64;
            if state == FREE {
                return None;
            }
            let flags = slot.flags.load(Ordering::Relaxed);
            Some(SoftintInfo {
                index,
                level: level_of(flags),
                flags,
                func: slot.func.load(Ordering::Relaxed),
                dying: state == DYING,
            })
        })
        .collect()
}

/// The established handles now (for the monitor and tests). Context: any.
pub fn established_count() -> usize {
    SLOTS
        .iter()
        .filter(|s| s.stamp.load(Ordering::Acquire) as u32 as u64 != FREE)
        .count()
}

const _: () = assert!(MAX_SOFTINTS <= 64 && MAXCPUS <= 64);
const _: () = assert!(core::mem::align_of::<SoftintCpu>() >= NLEVELS);
