//! `softint(9)`: soft interrupts, work that a hard interrupt handler (or a thread) defers to run
//! soon on the same CPU at a soft IPL.
//!
//! # Where handlers run
//!
//! Each CPU has one kernel thread per soft level (`softint/LEVEL/CPU`, bound to the CPU, at
//! the top of the kernel real-time range: SERIAL 223, NET 222, BIO 221, CLOCK 220), NetBSD's
//! softint LWPs. A handler therefore runs with its own `curlwp` (an adaptive mutex it takes is
//! owned by the softint thread, never by the thread it interrupted) and may block briefly.
//! NetBSD/aarch64's "fast softints" borrow the interrupted thread's context instead, which is
//! cheaper (no run-queue round trip) but needs a pinned-thread switch path; this kernel chose
//! the plain threads and pays for them: `softint_local` in `cargo xtask bench` is a wakeup plus
//! a context switch.
//!
//! # Scheduling and dispatch
//!
//! [`softint_schedule`] sets the handle's bit in this CPU's pending mask for its level and, if
//! the mask was empty, wakes that level's thread. The thread outranks every other thread, so it
//! runs at the next preemption point: the end of the hard interrupt that scheduled it, the
//! `splx` that drops the IPL to IPL_NONE, or `kpreempt_enable`. A softint scheduled at or
//! below the current IPL therefore waits for the level to drop; pending levels run highest
//! first because their threads' priorities are ordered. The thread takes the whole mask at
//! once; a handle's bit is cleared just before its handler runs, so a handler may schedule
//! itself again. Each handler runs at its level's IPL (raised by the thread, IPL_NONE in
//! between, so a higher level may preempt between two handlers), with the kernel lock held
//! unless SOFTINT_MPSAFE; afterwards the thread asserts, naming the handler, that it left the
//! IPL as it found it, no spin mutex held, preemption enabled and the kernel lock released.
//!
//! A softint thread that blocks in a handler (an adaptive mutex, a short sleep) goes to sleep
//! at its soft level: the sleep path lowers the CPU's IPL to IPL_NONE for the threads that run
//! meanwhile and the softint thread raises it back to its level when it resumes (it is bound,
//! so it resumes on the same CPU).
//!
//! # Livelock
//!
//! A handler that always schedules itself would keep its thread runnable forever and starve
//! every thread below it. A thread that has found work waiting every time it looked for
//! [`BUSY_LIMIT_MS`] sleeps until the next clock tick (as Linux hands excess softirq work to
//! ksoftirqd after 2 ms), so the other threads of the CPU get the rest of the tick. A thread
//! that catches up (nothing pending) starts a new period, so bursts are not throttled.
//!
//! # Disestablish
//!
//! [`softint_disestablish`] marks the handle dying (further schedules are refused), then waits
//! until no CPU has it pending or running and frees the slot. Handles carry a generation, so a
//! stale handle is caught by name. Counters per CPU and level (scheduled, run) live in DPCPU.

use crate::arch::aarch64 as arch;
use crate::cpu::{CpuInfo, MAXCPUS, cpu_lookup, curcpu};
use crate::kthread::{KTHREAD_MPSAFE, kthread_create};
use crate::sched::sleepq::SleepQueue;
use crate::spl::{IPL_SOFTBIO, IPL_SOFTCLOCK, IPL_SOFTNET, IPL_SOFTSERIAL, Ipl};
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

const FREE: u32 = 0;
const ESTABLISHED: u32 = 1;
const DYING: u32 = 2;

struct Slot {
    state: AtomicU32,
    generation: AtomicU32,
    flags: AtomicU32,
    func: AtomicUsize,
    arg: AtomicUsize,
}

static SLOTS: [Slot; MAX_SOFTINTS] = [const {
    Slot {
        state: AtomicU32::new(FREE),
        generation: AtomicU32::new(0),
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
    /// Per level: the thread of that level sleeps here while nothing is pending.
    wake: [SleepQueue; NLEVELS],
    /// Per level: schedules that set a pending bit on this CPU.
    scheduled: [AtomicU64; NLEVELS],
    /// Per level: handler calls on this CPU.
    run: [AtomicU64; NLEVELS],
    /// Per level: the softint thread (address), 0 before `init`.
    thread: [AtomicU64; NLEVELS],
}

crate::dpcpu_define! {
    /// Soft interrupt state and counters of this CPU.
    pub static SOFTINT: SoftintCpu = SoftintCpu {
        pending: [const { AtomicU64::new(0) }; NLEVELS],
        running: [const { AtomicU32::new(0) }; NLEVELS],
        wake: [const { SleepQueue::new() }; NLEVELS],
        scheduled: [const { AtomicU64::new(0) }; NLEVELS],
        run: [const { AtomicU64::new(0) }; NLEVELS],
        thread: [const { AtomicU64::new(0) }; NLEVELS],
    };
}

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
        s.scheduled[level].load(Ordering::Relaxed),
        s.run[level].load(Ordering::Relaxed),
    )
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
    let _g = TABLE_LOCK.lock();
    let (index, slot) = SLOTS
        .iter()
        .enumerate()
        .find(|(_, s)| s.state.load(Ordering::Acquire) == FREE)?;
    slot.flags.store(flags, Ordering::Relaxed);
    slot.func.store(func as usize, Ordering::Relaxed);
    slot.arg.store(arg, Ordering::Relaxed);
    let generation = slot.generation.fetch_add(1, Ordering::Relaxed) + 1;
    slot.state.store(ESTABLISHED, Ordering::Release);
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
            if s.generation.load(Ordering::Acquire) == h.generation
                && s.state.load(Ordering::Acquire) != FREE =>
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
pub fn softint_schedule(h: SoftintHandle) {
    let daif = arch::irq_save();
    let pinned = !arch::daif_irqs_masked(daif);
    if pinned {
        assert_pinned("softint_schedule");
    }
    post(curcpu(), h, "softint_schedule");
    arch::irq_restore(daif);
    if pinned {
        crate::sched::maybe_preempt();
    }
}

/// `softint_schedule_cpu(h, ci)` (NetBSD 9): as [`softint_schedule`], on CPU `cpu` (an IPI
/// wakes its softint thread if it is another CPU). Context: as `softint_schedule`.
pub fn softint_schedule_cpu(h: SoftintHandle, cpu: usize) {
    let ci = cpu_lookup(cpu).filter(|ci| ci.is_online());
    let Some(ci) = ci else {
        panic!("softint_schedule_cpu: cpu{cpu} is not online");
    };
    let daif = arch::irq_save();
    if !arch::daif_irqs_masked(daif) {
        assert_pinned("softint_schedule_cpu");
    }
    post(ci, h, "softint_schedule_cpu");
    arch::irq_restore(daif);
    crate::sched::maybe_preempt();
}

/// The caller may not move to another CPU: in an interrupt handler, in a softint thread, at a
/// raised IPL or with preemption disabled. IRQs masked.
fn assert_pinned(call: &str) {
    let ci = curcpu();
    let l = crate::sched::curlwp();
    let ok = ci.intr_depth.load(Ordering::Relaxed) != 0
        || ci.ipl.load(Ordering::Relaxed) != 0
        || l.nopreempt.load(Ordering::Relaxed) != 0
        || l.softint_level().is_some();
    assert!(
        ok,
        "{call}: called from a thread with preemption enabled; disable it (kpreempt_disable) \
         or raise the IPL so that the CPU it schedules on is the one it runs on"
    );
}

/// Marks `h` pending on `ci` and wakes that CPU's thread for the level if it was idle.
fn post(ci: &CpuInfo, h: SoftintHandle, call: &str) {
    let slot = slot_of(h, call);
    if slot.state.load(Ordering::Acquire) == DYING {
        return;
    }
    let level = level_of(slot.flags.load(Ordering::Relaxed));
    let s = SOFTINT.on_cpu(ci.index());
    let bit = 1u64 << h.index;
    let before = s.pending[level].fetch_or(bit, Ordering::AcqRel);
    if before & bit != 0 {
        return;
    }
    s.scheduled[level].fetch_add(1, Ordering::Relaxed);
    if before == 0 {
        s.wake[level].wake_one();
    }
}

/// `softint_disestablish(h)`: stops `h` from being scheduled, waits until its handler is
/// neither pending nor running on any CPU, and frees it. Calling it from the handler itself, or
/// with a handle already disestablished, is a named bug. Context: thread, IPL_NONE (it sleeps).
pub fn softint_disestablish(h: SoftintHandle) {
    let slot = slot_of(h, "softint_disestablish");
    let level = level_of(slot.flags.load(Ordering::Relaxed));
    if let Some(l) = crate::sched::curlwp().softint_level()
        && l as usize == level
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
        slot.state
            .compare_exchange(ESTABLISHED, DYING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
        "softint_disestablish: soft interrupt #{} is already being disestablished",
        h.index
    );
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
    slot.state.store(FREE, Ordering::Release);
}

/// The body of a softint thread: `arg` = CPU * NLEVELS + level.
fn softint_thread(arg: usize) {
    let (cpu, level) = (arg / NLEVELS, arg % NLEVELS);
    let l = crate::sched::curlwp();
    l.set_softint_level(level_ipl(level).as_u8());
    let s = SOFTINT.on_cpu(cpu);
    let ipl = level_ipl(level);
    let budget = crate::clock::ms_to_counter(BUSY_LIMIT_MS);
    let mut busy_since = arch::counter();
    loop {
        let caught_up = s.pending[level].load(Ordering::Acquire) == 0;
        let _ = s.wake[level].sleep(None, || s.pending[level].load(Ordering::Acquire) == 0);
        if caught_up {
            // Nothing was waiting when it looked: a new busy period starts now.
            busy_since = arch::counter();
        } else if arch::counter() - busy_since > budget {
            // Livelock guard: work kept coming for too long; let the rest of the CPU run
            // until the next tick.
            crate::kthread::kpause(1);
            busy_since = arch::counter();
            continue;
        }
        let mut batch = s.pending[level].swap(0, Ordering::AcqRel);
        while batch != 0 {
            let index = batch.trailing_zeros() as usize;
            batch &= batch - 1;
            run_one(s, level, ipl, index);
        }
    }
}

/// Runs the handler of slot `index` at `ipl` and checks what it left behind.
fn run_one(s: &SoftintCpu, level: usize, ipl: Ipl, index: usize) {
    let slot = &SLOTS[index];
    if slot.state.load(Ordering::Acquire) == FREE {
        return;
    }
    let flags = slot.flags.load(Ordering::Relaxed);
    let func = slot.func.load(Ordering::Relaxed);
    let arg = slot.arg.load(Ordering::Relaxed);
    if func == 0 {
        return;
    }
    // SAFETY: `func` was stored from a `SoftintFunc` by `softint_establish` and the slot cannot
    // be freed while this CPU has it pending or running (disestablish waits for both).
    let f: SoftintFunc = unsafe { core::mem::transmute::<usize, SoftintFunc>(func) };
    s.running[level].store(index as u32 + 1, Ordering::Release);
    s.run[level].fetch_add(1, Ordering::Relaxed);
    let mpsafe = flags & SOFTINT_MPSAFE != 0;
    let saved = crate::spl::splraise(ipl);
    if !mpsafe {
        crate::sync::kernel_lock::kernel_lock();
    }
    f(arg);
    if !mpsafe {
        crate::sync::kernel_lock::kernel_unlock();
    }
    check_after(index, func, ipl);
    crate::spl::splx(saved);
    s.running[level].store(0, Ordering::Release);
}

/// After a handler: the IPL as it was, no spin mutex, preemption enabled, no kernel lock.
fn check_after(index: usize, func: usize, ipl: Ipl) {
    let daif = arch::irq_save();
    let ci = curcpu();
    let now = ci.ipl.load(Ordering::Relaxed);
    let held = ci.mtx_count.load(Ordering::Relaxed);
    arch::irq_restore(daif);
    let l = crate::sched::curlwp();
    let nopreempt = l.nopreempt.load(Ordering::Relaxed);
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
    assert!(
        !crate::sync::kernel_lock::kernel_lock_held(),
        "softint: {} returned holding the kernel lock",
        name()
    );
}

/// Creates the softint threads of every online CPU. Boot CPU, once all CPUs are up.
pub fn init() {
    for ci in crate::cpu::cpus().filter(|ci| ci.is_online()) {
        let cpu = ci.index();
        for level in 0..NLEVELS {
            let mut lp = None;
            kthread_create(
                (PRI_SOFTSERIAL as usize - (NLEVELS - 1 - level)) as i32,
                KTHREAD_MPSAFE,
                Some(cpu),
                softint_thread,
                cpu * NLEVELS + level,
                Some(&mut lp),
                format_args!("softint/{}/{cpu}", ["clk", "bio", "net", "ser"][level]),
            )
            .expect("softint: cannot create the softint threads");
            if let Some(lwp) = lp.and_then(|r| r.lwp()) {
                SOFTINT.on_cpu(cpu).thread[level].store(lwp as *const _ as u64, Ordering::Release);
            }
        }
    }
}

/// The established handles now (for the monitor and tests). Context: any.
pub fn established_count() -> usize {
    SLOTS
        .iter()
        .filter(|s| s.state.load(Ordering::Acquire) != FREE)
        .count()
}

const _: () = assert!(MAX_SOFTINTS <= 64 && MAXCPUS <= 64);
