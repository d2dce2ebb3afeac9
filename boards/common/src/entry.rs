//! The first instructions of every CPU.
//!
//! `_start` (boot CPU): keeps x0 (the device tree address, or 0), drops from EL2 to EL1 if
//! entered at EL2, switches to the boot stack `__boot_stack_top`, zeroes `.bss`
//! (`__bss_start`..`__bss_end`, 8-byte aligned) and calls `board_main(x0)`, which the board
//! defines and which never returns.
//!
//! `board_secondary_entry` (other CPUs, started by PSCI or the spin table): keeps x0 (the
//! kernel's `SecondaryBoot` context), drops to EL1 and branches to the kernel's
//! `kernel_secondary_entry`. It uses no stack: the kernel's trampoline turns the MMU on first.
//!
//! `el2_to_el1`: called with `bl`, clobbers x9 and x10 only. At EL2 it makes EL1 AArch64
//! (HCR_EL2.RW), gives EL1 the physical timer and counter (CNTHCTL_EL2 = 3, CNTVOFF_EL2 = 0),
//! stops trapping FP/SIMD to EL2 (CPTR_EL2), lets EL1 use the GICv3 system registers when the
//! CPU has them (ICC_SRE_EL2.SRE|Enable), sets SCTLR_EL1 to its architectural safe value (MMU
//! and caches off) and returns to the caller at EL1h with DAIF masked. At EL1 it just returns.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x19, x0
    bl      el2_to_el1
    adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  mov     x0, x19
    mov     x29, #0
    mov     x30, #0
    bl      board_main
3:  wfe
    b       3b

    .global board_secondary_entry
board_secondary_entry:
    mov     x19, x0
    bl      el2_to_el1
    mov     x0, x19
    b       kernel_secondary_entry

    .global el2_to_el1
el2_to_el1:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    9f
    mov     x9, #(1 << 31)
    msr     hcr_el2, x9
    mov     x9, #3
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    mov     x9, #0x33ff
    msr     cptr_el2, x9
    msr     hstr_el2, xzr
    mrs     x9, id_aa64pfr0_el1
    ubfx    x9, x9, #24, #4
    cbz     x9, 8f
    mrs     x10, S3_4_C12_C9_5
    mov     x9, #0x9
    orr     x10, x10, x9
    msr     S3_4_C12_C9_5, x10
    isb
8:  mov     x9, #0x0800
    movk    x9, #0x30d0, lsl #16
    msr     sctlr_el1, x9
    mov     x9, #0x3c5
    msr     spsr_el2, x9
    msr     elr_el2, x30
    isb
    eret
9:  ret
"#
);

unsafe extern "C" {
    /// The secondary-CPU entry above; its address goes to PSCI CPU_ON or the spin table.
    pub fn board_secondary_entry() -> !;
}

/// The physical address of [`board_secondary_entry`] (the kernel runs identity mapped).
pub fn secondary_entry_address() -> u64 {
    board_secondary_entry as *const () as u64
}
