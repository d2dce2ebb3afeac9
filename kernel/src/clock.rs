//! The clock tick: every CPU's EL1 physical timer interrupts HZ times a second (default 100,
//! `hz=N` on the kernel command line changes it). The tick counts in `CpuInfo::tick_count` and
//! drives the scheduler (time slices, SCHED_OTHER priorities, sleep timeouts) and the test
//! harness's watchdog.
//!
//! Each CPU re-arms its timer at its previous deadline plus one interval, not "now plus one
//! interval", so ticks do not drift; if the CPU fell behind by more than an interval (a long
//! stretch with interrupts masked), it skips the missed ticks instead of firing them in a burst.

use crate::arch::aarch64::{counter_frequency, timer};
use crate::cpu::curcpu;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Default ticks per second.
pub const DEFAULT_HZ: u64 = 100;

static HZ: AtomicU64 = AtomicU64::new(DEFAULT_HZ);
/// Counter ticks per clock tick.
static INTERVAL: AtomicU64 = AtomicU64::new(0);

crate::dpcpu_define! {
    /// The counter value at which this CPU's next tick is due.
    static NEXT_TICK: AtomicU64 = AtomicU64::new(0);
}

/// Sets the tick rate. Boot CPU, before any CPU starts its tick. `hz` is clamped to 1..=10000.
pub fn init(hz: u64) {
    let hz = hz.clamp(1, 10_000);
    HZ.store(hz, Ordering::Relaxed);
    INTERVAL.store((counter_frequency() / hz).max(1), Ordering::Relaxed);
}

/// Ticks per second.
pub fn hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}

/// Starts the tick on this CPU by arming its timer (`intr` established the interrupt at
/// IPL_SCHED and enabled it on every CPU).
pub fn start_this_cpu() {
    let deadline = timer::physical_count() + INTERVAL.load(Ordering::Relaxed);
    NEXT_TICK.get().store(deadline, Ordering::Relaxed);
    timer::arm_at(deadline);
}

/// Stops the tick on this CPU (disarms its timer, whose interrupt line then drops). The kvm
/// self-test uses it so that a CPU's `CpuInfo` stands still while a dump is taken; nothing
/// starts the tick again. Context: thread, on the CPU to stop.
pub fn stop_this_cpu() {
    let daif = crate::arch::aarch64::irq_save();
    timer::disable();
    crate::arch::aarch64::irq_restore(daif);
}

/// The timer interrupt handler, at IPL_SCHED.
pub fn tick() {
    let interval = INTERVAL.load(Ordering::Relaxed);
    let now = timer::physical_count();
    let next = NEXT_TICK.get();
    let mut deadline = next.load(Ordering::Relaxed) + interval;
    if deadline <= now {
        deadline = now + interval;
    }
    next.store(deadline, Ordering::Relaxed);
    timer::arm_at(deadline);
    curcpu().tick_count.fetch_add(1, Ordering::Relaxed);
    crate::sched::tick();
    let hook = TICK_HOOK.load(Ordering::Relaxed);
    if hook != 0 {
        // SAFETY: only `set_tick_hook` stores here, from a `fn(u64)`.
        let hook: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(hook) };
        hook(now);
    }
}

/// A function every CPU's tick calls with the counter value, after the scheduler's work (0:
/// none). The test harness's watchdog uses it; the clock does not depend on its user.
static TICK_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook`, which every CPU's clock tick then calls at IPL_SCHED in hard interrupt
/// context with the counter value (it must not block). One hook; a second call replaces it.
/// Context: any.
pub fn set_tick_hook(hook: fn(u64)) {
    TICK_HOOK.store(hook as usize, Ordering::Release);
}

/// The counter value of the `n`-th clock tick from now on this CPU (`n` >= 1): the deadline
/// for "sleep `n` ticks" (NetBSD's timeouts count tick boundaries, so the first one may come
/// sooner than a full tick period).
pub fn tick_deadline(n: u64) -> u64 {
    let interval = INTERVAL.load(Ordering::Relaxed);
    let now = timer::physical_count();
    let next = NEXT_TICK.get().load(Ordering::Relaxed);
    // A tick already due but not yet taken (IRQs were masked) is not a boundary to wait for.
    let first = if next > now { next } else { now + interval };
    first + n.saturating_sub(1) * interval
}

/// Converts counter ticks to nanoseconds.
pub fn counter_to_ns(count: u64) -> u64 {
    let freq = counter_frequency().max(1);
    ((count as u128) * 1_000_000_000 / freq as u128) as u64
}

/// Converts milliseconds to counter ticks.
pub fn ms_to_counter(ms: u64) -> u64 {
    ((ms as u128) * counter_frequency() as u128 / 1000) as u64
}
