//! AArch64: exception vectors, MMU, the generic timer, the secondary-CPU trampoline, the
//! recovery points the test harness uses, and small named wrappers around single instructions
//! and system registers, so the rest of the kernel never writes assembly.

pub mod backtrace;
pub mod context;
pub mod mmu;
pub mod recover;
pub mod secondary;
pub mod timer;
pub mod vectors;

use aarch64_cpu::registers::{DAIF, MPIDR_EL1, Readable, TPIDR_EL1, Writeable};
use core::arch::asm;

/// Hints that this CPU is spinning (`yield`). Under QEMU's `-icount` a `yield` hands the host
/// thread to the next virtual CPU; `core::hint::spin_loop` emits `isb`, which does not.
#[inline(always)]
pub fn cpu_relax() {
    // SAFETY: `yield` is a hint with no architectural side effect.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an event or interrupt (`wfe`). Returns at the next `sev`, interrupt or spurious
/// wake-up; callers re-check their condition.
#[inline(always)]
pub fn wait_for_event() {
    // SAFETY: `wfe` only suspends execution until an event; it has no memory effect.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Signals an event to every CPU (`sev`), waking those in [`wait_for_event`]. The `dsb`
/// before it makes earlier stores visible before the wake-up.
#[inline(always)]
pub fn send_event() {
    // SAFETY: barrier plus event hint; no memory is modified.
    unsafe { asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Waits for an interrupt (`wfi`). Wakes even when interrupts are masked.
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only suspends execution until an interrupt is pending.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Masks IRQs on this CPU and returns the previous DAIF value for [`irq_restore`].
#[inline(always)]
pub fn irq_save() -> u64 {
    let daif = DAIF.get();
    // SAFETY: masking IRQs on the local CPU cannot break memory safety.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
    daif
}

/// Restores the DAIF value returned by [`irq_save`].
#[inline(always)]
pub fn irq_restore(daif: u64) {
    DAIF.set(daif);
}

/// Unmasks IRQs on this CPU.
#[inline(always)]
pub fn irq_enable() {
    // SAFETY: unmasking IRQs; the vectors are installed before anyone calls this.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack, preserves_flags)) };
}

/// Masks IRQs on this CPU.
#[inline(always)]
pub fn irq_disable() {
    // SAFETY: masking IRQs on the local CPU cannot break memory safety.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
}

/// Whether IRQs are masked on this CPU.
#[inline(always)]
pub fn irqs_masked() -> bool {
    DAIF.get() & (1 << 7) != 0
}

/// This CPU's MPIDR_EL1 with the RES1 bit 31 and the MT/U bits as the hardware reports them.
#[inline(always)]
pub fn read_mpidr() -> u64 {
    MPIDR_EL1.get()
}

/// Reads TPIDR_EL1, which holds this CPU's `cpu_info` pointer once the CPU is set up.
#[inline(always)]
pub fn read_tpidr() -> u64 {
    TPIDR_EL1.get()
}

/// Writes TPIDR_EL1.
#[inline(always)]
pub fn write_tpidr(value: u64) {
    TPIDR_EL1.set(value);
}

/// Reads the virtual counter (CNTVCT_EL0). Under `-icount` it advances with guest instructions.
#[inline(always)]
pub fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading the counter has no side effect; `isb` keeps it from being read early.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack)) };
    value
}

/// The counter frequency in Hz (CNTFRQ_EL0), as set by firmware or QEMU.
#[inline(always)]
pub fn counter_frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effect.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack)) };
    value
}

/// The current exception level (1 for the kernel after the board's entry code).
#[inline(always)]
pub fn current_el() -> u64 {
    let value: u64;
    // SAFETY: reading CurrentEL has no side effect.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) value, options(nomem, nostack)) };
    (value >> 2) & 3
}

/// Reads the frame pointer (x29) of the caller, for backtraces.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let value: u64;
    // SAFETY: copies a register.
    unsafe { asm!("mov {}, x29", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Cleans the data cache lines covering `[addr, addr + len)` to the point of coherency, so a
/// CPU that runs with its MMU and caches off (a secondary CPU being started) sees the data.
pub fn clean_dcache_range(addr: u64, len: u64) {
    const LINE: u64 = 64;
    let mut line = addr & !(LINE - 1);
    while line < addr + len {
        // SAFETY: cache maintenance by address on memory the kernel owns; no data changes.
        unsafe { asm!("dc cvac, {}", in(reg) line, options(nostack, preserves_flags)) };
        line += LINE;
    }
    // SAFETY: barrier only.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
