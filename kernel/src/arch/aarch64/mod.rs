//! AArch64: exception vectors, MMU, the generic timer, the secondary-CPU trampoline, the
//! recovery points the test harness uses, and small named wrappers around single instructions
//! and system registers, so the rest of the kernel never writes assembly.

pub mod backtrace;
// `macro_use`: its callee-saved assembly macros serve `recover`, declared after it.
#[macro_use]
pub mod context;
pub mod esr;
pub mod linker;
pub mod mmu;
pub mod nopreempt;
pub mod pmu;
pub mod recover;
pub mod secondary;
pub mod timer;
pub mod trace;
pub mod vectors;

/// Offsets in the kernel's per-CPU structure (`crate::cpu::CpuInfo`, which TPIDR_EL1 points
/// to) of the words this module's assembly reads and writes. The structure is defined in the
/// layer above, which asserts at compile time that its layout puts these fields here; so the
/// assembly's contract is written in this module and the dependency points downward.
pub mod cpu_offsets {
    /// `CpuInfo::ipl`: the CPU's interrupt priority level (`nopreempt`'s spl windows).
    pub const IPL: usize = 24;
    /// `CpuInfo::ipending`: the word right after `ipl`, read last in a lowering window.
    pub const IPENDING: usize = 28;
    /// `CpuInfo::trace_head`: the address of the CPU's trace ring's `head` (`trace`).
    pub const TRACE_HEAD: usize = 168;
}

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

/// `dsb ishst`: every store this CPU made so far is complete (visible in the inner shareable
/// domain) before any later instruction, including a system-register write, takes effect.
/// Needed before writing ICC_SGI1R_EL1: a system-register write is not a memory access, so a
/// `dmb` would not order the earlier stores before the IPI it raises (Arm ARM, "Ordering of
/// memory accesses" and the GICv3 architecture's note on SGI generation; Linux's GICv3 driver
/// issues the same barrier in `gic_ipi_send_mask`).
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a barrier; no other effect.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// `dmb ishst`: earlier stores are observed before later stores, including a store to
/// memory-mapped I/O (GICv2's GICD_SGIR), by every CPU of the inner shareable domain.
#[inline(always)]
pub fn dmb_ishst() {
    // SAFETY: a barrier; no other effect.
    unsafe { asm!("dmb ishst", options(nostack, preserves_flags)) };
}

/// `dsb sy`: completes the read of ICC_IAR1_EL1 (a system register) before any later load, so
/// an IPI's handler sees the data its sender wrote before sending it (Linux: `gic_read_iar`).
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier; no other effect.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Writes ICC_EOIR1_EL1: ends Group 1 interrupt `intid` at the GICv3 CPU interface (priority
/// drop and deactivation, EOImode 0). Hand-written rather than through `arm-gic`'s
/// `GicCpuInterface::end_interrupt`, which revalidates the INTID and builds the register value
/// field by field (about 40 instructions on every interrupt's way out, a sixth of the
/// `softint_intr` budget); the INTID here is the one ICC_IAR1_EL1 returned.
#[inline(always)]
pub fn write_icc_eoir1(intid: u32) {
    // SAFETY: ends an interrupt this CPU acknowledged; no memory is touched.
    unsafe {
        asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(intid), options(nostack, preserves_flags))
    };
}

/// Writes ICC_SGI1R_EL1: sends a Group 1 SGI (`value` as the GICv3 architecture lays the
/// register out: target list, affinities, range selector, INTID). Hand-written rather than
/// through `arm-gic`'s `GicCpuInterface::send_sgi`, which validates and assembles the value
/// field by field on every IPI (about 25 instructions of the cross-call path); the board
/// computes the value from a CPU's MPIDR. The caller orders its earlier stores (`dsb ishst`).
#[inline(always)]
pub fn write_icc_sgi1r(value: u64) {
    // SAFETY: raises an SGI; no memory is touched.
    unsafe {
        asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack, preserves_flags))
    };
}

/// `dmb ish`: orders an earlier load (GICv2's read of GICC_IAR, a memory-mapped register)
/// before later loads and stores (Linux: the `smp_rmb` after the IAR read in `gic_handle_irq`).
#[inline(always)]
pub fn dmb_ish() {
    // SAFETY: a barrier; no other effect.
    unsafe { asm!("dmb ish", options(nostack, preserves_flags)) };
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

/// Whether a DAIF value returned by [`irq_save`] has IRQs masked.
#[inline(always)]
pub const fn daif_irqs_masked(daif: u64) -> bool {
    daif & (1 << 7) != 0
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

/// Whether this CPU runs with its MMU on (SCTLR_EL1.M). While it is off every data access is
/// to Device memory, where load/store-exclusive instructions may never succeed (the Raspberry
/// Pi 4), so the panic and fault paths take their early forms (`crate::early`).
#[inline(always)]
pub fn mmu_enabled() -> bool {
    let sctlr: u64;
    // SAFETY: reading SCTLR_EL1 has no side effect.
    unsafe { asm!("mrs {}, sctlr_el1", out(reg) sctlr, options(nomem, nostack, preserves_flags)) };
    sctlr & 1 != 0
}

/// Reads TPIDR_EL1, which holds this CPU's `cpu_info` pointer once the CPU is set up (the
/// entry code zeroes it first: its reset value is UNKNOWN).
#[inline(always)]
pub fn read_tpidr() -> u64 {
    TPIDR_EL1.get()
}

/// Writes TPIDR_EL1.
#[inline(always)]
pub fn write_tpidr(value: u64) {
    TPIDR_EL1.set(value);
}

/// Reads TPIDR_EL0, which holds the running thread (`curlwp`) once the scheduler runs on this
/// CPU, 0 before. It is a per-thread value: the context switch writes it (with IRQs masked)
/// together with the switch itself, so a thread reading it always reads itself, even if it was
/// preempted and moved to another CPU a moment before. (There is no user space, so EL0's
/// thread register is free; NetBSD/aarch64 keeps curlwp in a thread register the same way.)
#[inline(always)]
pub fn read_curlwp() -> u64 {
    let value: u64;
    // SAFETY: reading TPIDR_EL0 has no side effect.
    unsafe { asm!("mrs {}, tpidr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes TPIDR_EL0 (the running thread). Only the scheduler's switch path and CPU start-up.
#[inline(always)]
pub fn write_curlwp(value: u64) {
    // SAFETY: TPIDR_EL0 is a software thread register with no hardware effect.
    unsafe { asm!("msr tpidr_el0, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
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

/// Executes a permanently undefined instruction (`udf #0`): the CPU takes a synchronous
/// exception of class "unknown reason". Used to test the fault paths on purpose
/// (`crash=early-fault`).
#[inline(never)]
pub fn undefined_instruction() {
    // SAFETY: `udf` raises an exception, which the kernel's vectors handle; it touches no
    // memory.
    unsafe { asm!("udf #0", options(nomem, nostack)) };
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
