//! The light-weight process (LWP): NetBSD's name for a thread. Every kernel thread, the boot
//! CPU's first thread (`lwp0`, "main") and each CPU's idle thread is an [`Lwp`].
//!
//! An `Lwp` lives on the heap at a fixed address from creation until it is reaped. Its fields
//! are atomics or are only touched under the lock that owns them (the run queue or sleep queue
//! it is linked on, via `link`; its saved context by the CPU switching it).

use super::stack::StackSlot;
use crate::arch::aarch64::context::{Context, FpState};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// `Lwp::magic` of a live thread; a freed one reads 0.
pub const LWP_MAGIC: u64 = 0x6c77_705f_6c69_7665;

/// Longest thread name kept (NetBSD's MAXCOMLEN is 16; we keep a little more).
pub const MAXCOMLEN: usize = 24;

/// The state of an LWP (NetBSD's LSIDL, LSRUN, LSONPROC, LSSLEEP, LSZOMB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum LwpState {
    /// Created with KTHREAD_IDLE and not started yet.
    Idle = 0,
    /// Runnable, on a run queue.
    Run = 1,
    /// Running on a CPU.
    Onproc = 2,
    /// Asleep on a sleep queue.
    Sleep = 3,
    /// Exited, waiting to be joined or reaped.
    Zombie = 4,
}

impl LwpState {
    fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Idle,
            1 => Self::Run,
            2 => Self::Onproc,
            3 => Self::Sleep,
            _ => Self::Zombie,
        }
    }

    /// Short name for thread lists.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Run => "run",
            Self::Onproc => "onproc",
            Self::Sleep => "sleep",
            Self::Zombie => "zombie",
        }
    }
}

/// Scheduling class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedClass {
    /// SCHED_RR: fixed priority, round robin among equals.
    Rr,
    /// SCHED_OTHER: timeshared, priority lowered by CPU use and raised by sleeping.
    Other,
    /// The per-CPU idle thread: runs only when nothing else can.
    IdleLoop,
}

impl SchedClass {
    /// Name for thread lists.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "RR",
            Self::Other => "OTHER",
            Self::IdleLoop => "IDLE",
        }
    }
}

/// Why a sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WakeReason {
    /// Woken by a wakeup on its sleep queue.
    Woken = 0,
    /// Its timeout expired first.
    TimedOut = 1,
}

/// A thread.
pub struct Lwp {
    /// [`LWP_MAGIC`] while the thread exists; cleared when it is freed, so code that may touch
    /// a thread after its end can check.
    pub(crate) magic: u64,
    pub(crate) ctx: UnsafeCell<Context>,
    pub(crate) fp: UnsafeCell<FpState>,
    name: [u8; MAXCOMLEN],
    name_len: usize,
    /// Unique id, for lists and diagnostics.
    pub id: u64,
    pub(crate) state: AtomicU32,
    pub(crate) class: SchedClass,
    /// Priority given at creation (the fixed priority for SCHED_RR).
    pub(crate) base_pri: u32,
    /// Current priority (0..=223; higher runs first).
    pub(crate) pri: AtomicU32,
    pub(crate) flags: u32,
    /// CPU the thread is bound to, if any.
    pub(crate) bound: Option<usize>,
    /// CPU whose run queue holds it, or where it last ran.
    pub(crate) cpu: AtomicU32,
    /// True from the moment a CPU switches to it until that CPU has fully switched away.
    pub(crate) on_cpu: AtomicBool,
    /// Ticks left in the SCHED_RR time slice.
    pub(crate) slice: AtomicU32,
    /// Recent CPU use (SCHED_OTHER).
    pub(crate) estcpu: AtomicU32,
    /// Counter value when it last went to sleep (SCHED_OTHER priority recovery).
    pub(crate) slept_at: AtomicU64,
    /// Link in the run queue or sleep queue it is on (owned by that queue's lock).
    pub(crate) link: UnsafeCell<*mut Lwp>,
    /// The sleep queue it sleeps on, or null.
    pub(crate) wchan: AtomicPtr<super::sleepq::SleepQueue>,
    pub(crate) wake_reason: AtomicU32,
    pub(crate) func: fn(usize),
    pub(crate) arg: usize,
    pub(crate) stack: Option<StackSlot>,
    pub(crate) exit_code: AtomicI32,
    /// A joiner claimed it (kthread_join may be called once).
    pub(crate) join_claimed: AtomicBool,
    /// Its sleep timeout fired before it was linked on the sleep queue (see `sleepq`).
    pub(crate) tmo_fired: AtomicBool,
    /// Holds of the kernel lock by this thread (0 = none). Written only by the thread itself;
    /// kept as a local across a switch, during which the lock is released.
    pub(crate) biglocks: AtomicU32,
    /// The thread is spinning for the kernel lock: not preemptible, and not "running" for an
    /// adaptive mutex's waiters (it may be waiting for one of them).
    pub(crate) kl_wanted: AtomicBool,
    /// For a softint thread, the IPL of its level (1..=4); 0 for every other thread.
    pub(crate) softint_ipl: AtomicU32,
    /// For a softint thread running a fast dispatch: the thread it borrowed the CPU from
    /// (NetBSD's `l_switchto`), resumed as soon as the softint thread blocks; null otherwise.
    pub(crate) switchto: AtomicPtr<Lwp>,
    /// The IPL the borrowed-from thread ran at, restored when it resumes.
    pub(crate) switchto_ipl: AtomicU32,
    /// The CPU's spin-mutex count and saved IPL (`mtx_count`, `mtx_oldspl`) of the
    /// borrowed-from thread, put back when it resumes; the softint counts its own from zero.
    pub(crate) switchto_mtx: AtomicU64,
    /// Inside a kthread_fpu_enter section (FP/SIMD enabled for this thread).
    pub(crate) fpu_on: AtomicBool,
    /// Preemption disabled while non-zero (`kpreempt_disable`).
    pub(crate) nopreempt: AtomicU32,
    /// Times this thread was switched to.
    pub(crate) ncsw: AtomicU64,
    /// Clock ticks during which it was running.
    pub(crate) rticks: AtomicU64,
    /// Where a joiner waits for this thread to exit.
    pub(crate) join_sq: super::sleepq::SleepQueue,
}

// SAFETY: the `UnsafeCell` fields are only accessed under the protocols documented on them
// (the context by the CPU switching the thread, which `on_cpu` makes exclusive; `link` under
// the owning queue's lock); everything else is atomic.
unsafe impl Sync for Lwp {}
// SAFETY: as above; an `Lwp` is handed between CPUs by the scheduler.
unsafe impl Send for Lwp {}

impl Lwp {
    /// A new thread structure (not yet on any queue).
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors kthread_create's parameters"
    )]
    pub(crate) fn new(
        id: u64,
        name: fmt::Arguments<'_>,
        class: SchedClass,
        pri: u32,
        flags: u32,
        bound: Option<usize>,
        func: fn(usize),
        arg: usize,
        stack: Option<StackSlot>,
    ) -> Self {
        let mut buf = NameBuf {
            bytes: [0; MAXCOMLEN],
            len: 0,
        };
        let _ = fmt::write(&mut buf, name);
        Self {
            magic: 0,
            ctx: UnsafeCell::new(Context::default()),
            fp: UnsafeCell::new(FpState::zero()),
            name: buf.bytes,
            name_len: buf.len,
            id,
            state: AtomicU32::new(LwpState::Idle as u32),
            class,
            base_pri: pri,
            pri: AtomicU32::new(pri),
            flags,
            bound,
            cpu: AtomicU32::new(bound.unwrap_or(0) as u32),
            on_cpu: AtomicBool::new(false),
            slice: AtomicU32::new(super::RR_SLICE_TICKS),
            estcpu: AtomicU32::new(0),
            slept_at: AtomicU64::new(0),
            link: UnsafeCell::new(core::ptr::null_mut()),
            wchan: AtomicPtr::new(core::ptr::null_mut()),
            wake_reason: AtomicU32::new(WakeReason::Woken as u32),
            func,
            arg,
            stack,
            exit_code: AtomicI32::new(0),
            join_claimed: AtomicBool::new(false),
            tmo_fired: AtomicBool::new(false),
            biglocks: AtomicU32::new(0),
            kl_wanted: AtomicBool::new(false),
            softint_ipl: AtomicU32::new(0),
            switchto: AtomicPtr::new(core::ptr::null_mut()),
            switchto_ipl: AtomicU32::new(0),
            switchto_mtx: AtomicU64::new(0),
            fpu_on: AtomicBool::new(false),
            nopreempt: AtomicU32::new(0),
            ncsw: AtomicU64::new(0),
            rticks: AtomicU64::new(0),
            join_sq: super::sleepq::SleepQueue::new(),
        }
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Current state.
    pub fn state(&self) -> LwpState {
        LwpState::from_raw(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: LwpState) {
        self.state.store(s as u32, Ordering::Release);
    }

    /// Current priority.
    pub fn pri(&self) -> u32 {
        self.pri.load(Ordering::Relaxed)
    }

    /// Scheduling class.
    pub fn class(&self) -> SchedClass {
        self.class
    }

    /// The CPU it is bound to.
    pub fn bound_cpu(&self) -> Option<usize> {
        self.bound
    }

    /// The CPU it must run on now: the one it is bound to, or, while it has a soft interrupt
    /// level (a thread running a soft interrupt's work inline, `softint::run_inline`, which may
    /// block there), the CPU it runs on. The level changes only while the thread runs, so the
    /// answer is stable while the thread sleeps or waits on a run queue.
    #[inline(always)]
    pub(crate) fn pinned_cpu(&self) -> Option<usize> {
        match self.bound {
            Some(b) => Some(b),
            None if self.softint_ipl.load(Ordering::Relaxed) != 0 => Some(self.cpu()),
            None => None,
        }
    }

    /// The CPU it runs on or last ran on.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed) as usize
    }

    /// The KTHREAD_* flags it was created with.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Times a CPU switched to it.
    pub fn switches(&self) -> u64 {
        self.ncsw.load(Ordering::Relaxed)
    }

    /// Clock ticks during which it was running.
    pub fn run_ticks(&self) -> u64 {
        self.rticks.load(Ordering::Relaxed)
    }

    /// The stack's bounds `[base, top)`, if it has its own stack slot.
    pub fn stack_bounds(&self) -> Option<(u64, u64)> {
        self.stack.as_ref().map(|s| (s.base(), s.top()))
    }

    /// For a softint thread, the IPL of its level (as a number, 1..=4).
    pub fn softint_level(&self) -> Option<u8> {
        match self.softint_ipl.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as u8),
        }
    }

    /// Marks the running thread as the softint thread of the level with IPL `ipl`.
    pub(crate) fn set_softint_level(&self, ipl: u8) {
        self.softint_ipl.store(u32::from(ipl), Ordering::Relaxed);
    }

    /// The stack slot index, if any.
    pub fn stack_index(&self) -> Option<usize> {
        self.stack.as_ref().map(super::stack::index_of)
    }
}

struct NameBuf {
    bytes: [u8; MAXCOMLEN],
    len: usize,
}

impl fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let mut tmp = [0u8; 4];
            let b = ch.encode_utf8(&mut tmp).as_bytes();
            if self.len + b.len() > MAXCOMLEN {
                return Ok(());
            }
            self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
        Ok(())
    }
}
