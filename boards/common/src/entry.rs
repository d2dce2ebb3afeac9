//! The first instructions of every CPU.
//!
//! `_start` (boot CPU): keeps x0 (the device tree address, or 0), invalidates the data caches
//! (`dcache_invalidate_set_way`), drops from EL2 to EL1 if entered at EL2, zeroes TPIDR_EL1,
//! switches to the boot stack `__boot_stack_top`, zeroes `.bss`
//! (`__bss_start`..`__bss_end`, 8-byte aligned; 64 bytes per loop with four `stp`, then 8 at
//! a time: `.bss` is 0.6 MiB, most of it the page-table pool, which at 8 bytes per loop took
//! 0.3 M guest instructions per boot and now takes 58 k; `dc zva` cannot be used, as the MMU is
//! off and every access is Device memory) and calls `board_main(x0)`, which the board defines
//! and which never returns.
//!
//! `board_secondary_entry` (other CPUs, started by PSCI or the spin table): keeps x0 (the
//! kernel's `SecondaryBoot` context), drops to EL1, zeroes TPIDR_EL1 and branches to the
//! kernel's `kernel_secondary_entry`. It uses no stack: the kernel's trampoline turns the MMU on
//! first.
//!
//! TPIDR_EL1 is where the kernel finds a CPU's `cpu_info`, and until the kernel sets it the
//! exception vectors and the panic path read 0 as "no `cpu_info` yet". Its reset value is
//! UNKNOWN on hardware (QEMU resets it to 0), and a stale value sends an early fault's
//! vector to load through a wild pointer and fault again, for ever, printing nothing. So both
//! entries zero it. The test image (feature `ktest`) first writes garbage into it at both
//! entries, as hardware may leave it, so that the early-crash checks of `cargo xtask test`
//! fail if the zeroing goes.
//!
//! `dcache_invalidate_set_way`: called with `bl` with x0 = how many cache levels to invalidate,
//! counting from level 1 (clamped to CLIDR_EL1.LoC); clobbers x0-x11. Invalidates (without
//! cleaning) every data or unified cache line of those levels by set/way, then `dsb sy; isb`.
//! For each way it steps the set field down from the top set, two lines per loop (one first when
//! the number of sets is odd), stopping when the operand drops below that way's set-0 value
//! (a signed compare: for way 0 of level 1 that value is 0): three instructions per line (the
//! Cortex-A72 as QEMU models it has 16,896 lines in L1D and L2, about 50 k per boot).
//! The boot CPU runs it over every level before its first store, because the architecture does
//! not promise that caches come out of reset empty and the MMU will later turn them on over
//! memory written with caches off; nothing before the kernel ran with caches on, so no dirty
//! data is lost. A secondary started from the spin table invalidates level 1 only: the shared
//! L2 already holds the boot CPU's live data. (QEMU has no cache model: no effect there.)
//! Assumes the 32-bit CCSIDR_EL1 format (no FEAT_CCIDX), as on the Cortex-A72.
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
    .if {poison}
    movz    x9, #0xdead, lsl #48
    msr     tpidr_el1, x9
    .endif
    mov     x19, x0
    mov     x0, #7
    bl      dcache_invalidate_set_way
    bl      el2_to_el1
    msr     tpidr_el1, xzr
    adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
    sub     x3, x2, x1
    and     x3, x3, #~63
    add     x3, x1, x3
    b       11f
10: stp     xzr, xzr, [x1, #16]
    stp     xzr, xzr, [x1, #32]
    stp     xzr, xzr, [x1, #48]
    stp     xzr, xzr, [x1], #64
11: cmp     x1, x3
    b.lo    10b
    b       13f
12: str     xzr, [x1], #8
13: cmp     x1, x2
    b.lo    12b
    mov     x0, x19
    mov     x29, #0
    mov     x30, #0
    bl      board_main
3:  wfe
    b       3b

    .global board_secondary_entry
board_secondary_entry:
    .if {poison}
    movz    x9, #0xdead, lsl #48
    msr     tpidr_el1, x9
    .endif
    mov     x19, x0
    bl      el2_to_el1
    msr     tpidr_el1, xzr
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

    .global dcache_invalidate_set_way
dcache_invalidate_set_way:
    mrs     x9, clidr_el1
    ubfx    x10, x9, #24, #3
    cmp     x0, x10
    csel    x10, x0, x10, lo
    lsl     x10, x10, #1
    mov     x1, #0
1:  cmp     x1, x10
    b.hs    6f
    add     x2, x1, x1, lsr #1
    lsr     x3, x9, x2
    and     x3, x3, #7
    cmp     x3, #2
    b.lo    5f
    msr     csselr_el1, x1
    isb
    mrs     x3, ccsidr_el1
    and     x4, x3, #7
    add     x4, x4, #4
    ubfx    x5, x3, #3, #10
    clz     w6, w5
    ubfx    x7, x3, #13, #15
    mov     x8, #1
    lsl     x8, x8, x4
    lsl     x7, x7, x4
2:  lsl     x11, x5, x6
    orr     x11, x11, x1
    add     x2, x11, x7
    tst     x3, #(1 << 13)
    b.ne    3f
    dc      isw, x2
    sub     x2, x2, x8
    cmp     x2, x11
    b.lt    4f
3:  dc      isw, x2
    sub     x2, x2, x8
    dc      isw, x2
    sub     x2, x2, x8
    cmp     x2, x11
    b.ge    3b
4:  subs    x5, x5, #1
    b.ge    2b
5:  add     x1, x1, #2
    b       1b
6:  dsb     sy
    isb
    ret
"#,
    poison = const POISON_TPIDR,
);

/// 1 in the test image: the entries write garbage into TPIDR_EL1 before zeroing it (see the
/// module documentation).
const POISON_TPIDR: u32 = if cfg!(feature = "ktest") { 1 } else { 0 };

unsafe extern "C" {
    /// The secondary-CPU entry above; its address goes to PSCI CPU_ON or the spin table.
    pub fn board_secondary_entry() -> !;
}

/// The physical address of [`board_secondary_entry`] (the kernel runs identity mapped).
pub fn secondary_entry_address() -> u64 {
    board_secondary_entry as *const () as u64
}
