//! The secondary-CPU trampoline: the first kernel code a started CPU runs after the board's
//! entry has brought it to EL1.
//!
//! Register contract: entered at EL1 with the MMU and caches off and x0 = the physical address
//! of a [`SecondaryBoot`] whose cache lines were cleaned to the point of coherency. It turns the
//! MMU on *before* touching memory through the stack (with caches off, stores would bypass
//! lines the boot CPU may still hold for that memory), switches to the CPU's stack and calls
//! `kernel_secondary_main(boot)`, which never returns.

use super::mmu::MmuConfig;
use core::arch::global_asm;

/// Everything a starting CPU needs before it can run Rust code. Shared with the assembly
/// below: keep the field offsets in step.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SecondaryBoot {
    /// MMU registers to load (offsets 0..32).
    pub mmu: MmuConfig,
    /// Top of the CPU's stack (offset 32).
    pub stack_top: u64,
    /// Kernel CPU index (offset 40).
    pub cpu_index: u64,
}

global_asm!(
    r#"
    .section .text.secondary, "ax"
    .global kernel_secondary_entry
kernel_secondary_entry:
    ldp     x1, x2, [x0, #0]
    msr     mair_el1, x1
    msr     tcr_el1, x2
    ldr     x1, [x0, #16]
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    ldr     x1, [x0, #24]
    msr     sctlr_el1, x1
    isb
    ldr     x1, [x0, #32]
    mov     sp, x1
    mov     x29, #0
    mov     x30, #0
    bl      kernel_secondary_main
1:  wfe
    b       1b
"#
);

unsafe extern "C" {
    /// The trampoline above. Boards jump here (at EL1) from their secondary entry.
    pub fn kernel_secondary_entry() -> !;
}

/// The starting address the board passes to the firmware for secondary CPUs: it must reach
/// [`kernel_secondary_entry`] at EL1; boards that enter at EL2 drop first, then branch here.
pub fn secondary_entry_address() -> u64 {
    kernel_secondary_entry as *const () as u64
}
