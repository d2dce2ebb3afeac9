//! The exception vector table and the trap frame.
//!
//! Every exception saves all general-purpose registers, the interrupted stack pointer, ELR,
//! SPSR, ESR and FAR into a [`TrapFrame`] on the current stack and calls
//! `kernel_exception(frame, kind)` (in `crate::fault` / `crate::intr`), then restores the frame
//! (the handler may have changed ELR or registers) and returns with `eret`.
//!
//! Register contract of the assembly: on entry nothing is assumed; `x0` and `x1` are saved by
//! the 128-byte vector stub itself (it has room for four instructions before branching), the
//! rest by `exception_common`.
//!
//! IRQs taken in the kernel (once the MMU is on) take a shorter path, `irq_common`: the
//! handler is Rust code called by the procedure-call standard, which preserves x19..x28, and
//! nothing reads an IRQ's frame (it is not handed to Rust; only ELR is, as the resume
//! address), so only the registers a call may clobber (x0..x18, x29, x30), ELR and SPSR are
//! saved, and the stack pointer is restored by adding the frame's size back. The frame keeps
//! the [`TrapFrame`] offsets for what it holds. Before the MMU is on, an IRQ takes the full
//! path to the early exception reporter.

use core::arch::global_asm;

/// What kind of exception a vector entry took, passed to the Rust handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ExceptionKind {
    /// Synchronous exception from EL1 using SP_EL0 (never used by this kernel).
    SyncSp0 = 0,
    /// IRQ from EL1 using SP_EL0.
    IrqSp0 = 1,
    /// FIQ from EL1 using SP_EL0.
    FiqSp0 = 2,
    /// SError from EL1 using SP_EL0.
    SErrorSp0 = 3,
    /// Synchronous exception from the kernel (EL1, SP_EL1): faults, breakpoints, SVC.
    Sync = 4,
    /// IRQ taken in the kernel.
    Irq = 5,
    /// FIQ taken in the kernel.
    Fiq = 6,
    /// SError taken in the kernel.
    SError = 7,
    /// Any exception from a lower exception level (no user space exists yet).
    Lower = 8,
}

impl ExceptionKind {
    /// Decodes the value the vector stubs pass.
    pub fn from_raw(raw: u64) -> Self {
        match raw {
            0 => Self::SyncSp0,
            1 => Self::IrqSp0,
            2 => Self::FiqSp0,
            3 => Self::SErrorSp0,
            4 => Self::Sync,
            5 => Self::Irq,
            6 => Self::Fiq,
            7 => Self::SError,
            _ => Self::Lower,
        }
    }
}

/// Registers saved on exception entry. Layout shared with the assembly below.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The stack pointer at the time of the exception.
    pub sp: u64,
    /// Exception link register: where execution resumes.
    pub elr: u64,
    /// Saved program status (DAIF, EL, condition flags) of the interrupted code.
    pub spsr: u64,
    /// Exception syndrome register.
    pub esr: u64,
    /// Fault address register (valid for aborts).
    pub far: u64,
}

/// Size of [`TrapFrame`] in bytes, as the assembly uses it.
pub const TRAP_FRAME_SIZE: usize = 288;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == TRAP_FRAME_SIZE);

global_asm!(
    r#"
// x2..x17 to and from their TrapFrame slots (both the full and the IRQ path keep them).
.macro SAVE_X2_X17
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
.endm

.macro LOAD_X2_X17
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
.endm

.macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #288
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       exception_common
.endm

// Synchronous exceptions from the kernel move to the CPU's exception stack
// (CpuInfo::exc_stack_top, offset 136), so that a fault caused by a stack overflow can still be
// reported; a nested one (already on that stack) stays where it is. Until the CPU has a
// cpu_info and an exception stack, the current stack is used. TPIDRRO_EL0 and SP_EL0 serve as
// scratch registers: there is no user space.
.macro VECTOR_SYNC_SWITCH kind
    .balign 0x80
    msr     tpidrro_el0, x1
    msr     sp_el0, x0
    mov     x1, sp
    mrs     x0, tpidr_el1
    cbz     x0, 1f
    ldr     x0, [x0, #136]
    cbz     x0, 1f
    sub     x0, x0, x1
    cmp     x0, #0x4000
    b.lo    1f
    add     x0, x0, x1
    mov     sp, x0
1:  sub     sp, sp, #288
    str     x1, [sp, #248]
    mrs     x0, sp_el0
    mrs     x1, tpidrro_el0
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       exception_common_sp_saved
.endm

// IRQ from the kernel (EL1, SP_EL1): x0/x1 saved, x0 = kind 5 for the full path.
.macro VECTOR_IRQ
    .balign 0x80
    sub     sp, sp, #288
    stp     x0, x1, [sp, #0]
    mov     x0, #5
    b       irq_common
.endm

    .section .text.vectors, "ax"
    .balign 2048
    .global kernel_vectors
kernel_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR_SYNC_SWITCH 4
    VECTOR_IRQ
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 8

// x0 = 5 (the kind); x0/x1 of the interrupted code are at [sp, #0].
irq_common:
    mrs     x1, sctlr_el1
    tbz     x1, #0, exception_common
    SAVE_X2_X17
    str     x18, [sp, #144]
    stp     x29, x30, [sp, #232]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #256]
    // End the handler's frame-pointer chain here, as exception_common does.
    mov     x29, #0
    bl      kernel_irq                  // returns the resume address (a trace record
    ldr     x1, [sp, #264]              // interrupted mid-way starts over)
    msr     elr_el1, x0
    msr     spsr_el1, x1
    LOAD_X2_X17
    ldr     x18, [sp, #144]
    ldp     x29, x30, [sp, #232]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #288
    eret

// x0 = kind; x0/x1 of the interrupted code are at [sp, #0].
exception_common:
    // The interrupted SP (x1 is already saved, so it is free as a scratch register).
    add     x1, sp, #288
    str     x1, [sp, #248]

// Here the interrupted SP is at [sp, #248] (the synchronous vector stores it itself).
exception_common_sp_saved:
    SAVE_X2_X17
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #256]
    mrs     x2, esr_el1
    mrs     x3, far_el1
    stp     x2, x3, [sp, #272]
    // End the handler's frame-pointer chain here; the fault report walks on from the saved x29.
    mov     x29, #0
    mov     x1, x0
    mov     x0, sp
    bl      kernel_exception
    ldp     x2, x3, [sp, #256]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    LOAD_X2_X17
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    // Back to the interrupted stack pointer (which may be another stack), then x0/x1.
    mov     x0, sp
    ldr     x1, [x0, #248]
    mov     sp, x1
    ldp     x0, x1, [x0, #0]
    eret
"#
);

unsafe extern "C" {
    static kernel_vectors: u8;
}

/// Points VBAR_EL1 at the kernel's vector table (*this CPU*).
pub fn install() {
    // `kernel_vectors` is the 2 KiB-aligned table defined above; taking its address does not
    // read it.
    let base = core::ptr::addr_of!(kernel_vectors) as u64;
    // SAFETY: the table is complete and stays mapped executable for the kernel's lifetime.
    unsafe { core::arch::asm!("msr vbar_el1, {}", "isb", in(reg) base, options(nostack)) };
}
