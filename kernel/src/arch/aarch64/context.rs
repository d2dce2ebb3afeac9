//! Thread context switching and the FP/SIMD register file.
//!
//! [`cpu_switchto`] saves the callee-saved registers, the frame pointer, the link register
//! and the stack pointer of the running thread into its [`Context`] and loads another's; a
//! thread therefore always resumes inside `cpu_switchto` (or, the first time, at the entry
//! point its context was made with). Caller-saved registers need no saving: `cpu_switchto` is
//! an ordinary function call for the compiler. The kernel is soft-float, so FP/SIMD registers
//! are only live inside `kthread_fpu_enter`/`exit` sections; the scheduler saves and restores
//! them with [`fpu_save`]/[`fpu_restore`] for threads inside such a section only.
//!
//! Register contracts are in the comment above each assembly routine.

use core::arch::global_asm;

/// Callee-saved state of a switched-out thread. Layout shared with the assembly below.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Context {
    /// x19..x28.
    pub x19_28: [u64; 10],
    /// Frame pointer (x29).
    pub fp: u64,
    /// Where the thread resumes (x30).
    pub lr: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Padding to 16 bytes.
    pub _pad: u64,
}

impl Context {
    /// A context that starts at `entry(prev)` on the stack whose top is `stack_top`; `entry`
    /// receives (in x0) the thread that ran on this CPU before.
    pub fn new(entry: extern "C" fn(usize) -> !, stack_top: u64) -> Self {
        Self {
            x19_28: [0; 10],
            fp: 0,
            lr: entry as usize as u64,
            sp: stack_top & !0xf,
            _pad: 0,
        }
    }
}

/// Saved FP/SIMD state: v0..v31, FPSR, FPCR.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct FpState {
    /// The 32 vector registers.
    pub v: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

impl FpState {
    /// All zero.
    pub const fn zero() -> Self {
        Self {
            v: [0; 32],
            fpsr: 0,
            fpcr: 0,
        }
    }
}

/// Assembly text storing x19..x30 at `[base, #0]`..`[base, #88]`: the callee-saved block of a
/// [`Context`] (and of a recovery point), shared by every routine that saves one.
#[rustfmt::skip]
macro_rules! callee_saved_store {
    ($base:literal) => {
        concat!(
            "    stp     x19, x20, [", $base, ", #0]\n",
            "    stp     x21, x22, [", $base, ", #16]\n",
            "    stp     x23, x24, [", $base, ", #32]\n",
            "    stp     x25, x26, [", $base, ", #48]\n",
            "    stp     x27, x28, [", $base, ", #64]\n",
            "    stp     x29, x30, [", $base, ", #80]\n",
        )
    };
}

/// Assembly text loading x19..x30 from `[base, #0]`..`[base, #88]`, the inverse of
/// [`callee_saved_store`].
#[rustfmt::skip]
macro_rules! callee_saved_load {
    ($base:literal) => {
        concat!(
            "    ldp     x19, x20, [", $base, ", #0]\n",
            "    ldp     x21, x22, [", $base, ", #16]\n",
            "    ldp     x23, x24, [", $base, ", #32]\n",
            "    ldp     x25, x26, [", $base, ", #48]\n",
            "    ldp     x27, x28, [", $base, ", #64]\n",
            "    ldp     x29, x30, [", $base, ", #80]\n",
        )
    };
}

global_asm!(concat!(
    r#"
    .section .text.context, "ax"
    .arch armv8-a+simd

// x0 = &mut Context of the running thread, x1 = &Context of the next one, x2 = value the next
// thread finds in x0 when it resumes (the previous thread). Returns (in the next thread).
    .global cpu_switchto
cpu_switchto:
"#,
    callee_saved_store!("x0"),
    r#"    mov     x9, sp
    str     x9, [x0, #96]
"#,
    callee_saved_load!("x1"),
    r#"    ldr     x9, [x1, #96]
    mov     sp, x9
    mov     x0, x2
    ret

// Fast soft interrupts (softint.rs): the running thread lends the CPU to a softint thread
// without a run-queue round trip. x0 = &mut Context of the running thread (saved exactly as
// cpu_switchto saves it, so the scheduler can resume it with cpu_switchto), x1 = top of the
// softint thread's stack, x2 = argument, x3 = entry function (x0 = argument, returns a word).
// If the entry returns, the saved context is loaded back and its result returned (0 by
// convention); if the softint thread blocks instead, the scheduler resumes the saved context
// with cpu_switchto, which "returns" from here with the softint thread's Lwp in x0.
    .global softint_switchto
softint_switchto:
"#,
    callee_saved_store!("x0"),
    r#"    mov     x9, sp
    str     x9, [x0, #96]
    mov     x19, x0
    mov     sp, x1
    mov     x29, #0
    mov     x0, x2
    blr     x3
    mov     x1, x19
"#,
    callee_saved_load!("x1"),
    r#"    ldr     x9, [x1, #96]
    mov     sp, x9
    ret

// x0 = &Context saved by softint_switchto or cpu_switchto, x1 = value to return there.
// Abandons the current stack and resumes that context (the test harness ending a handler that
// panicked).
    .global context_resume
context_resume:
"#,
    callee_saved_load!("x0"),
    r#"    ldr     x9, [x0, #96]
    mov     sp, x9
    mov     x0, x1
    ret

// x0 = &mut FpState. FP must be enabled. Clobbers x1, x2.
    .global fpu_save
fpu_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpsr
    mrs     x2, fpcr
    add     x0, x0, #512
    stp     x1, x2, [x0]
    ret

// x0 = &FpState. FP must be enabled. Clobbers x1, x2.
    .global fpu_restore
fpu_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x0, x0, #512
    ldp     x1, x2, [x0]
    msr     fpsr, x1
    msr     fpcr, x2
    ret

// Zeroes v0..v31, FPSR and FPCR. FP must be enabled.
    .global fpu_zero
fpu_zero:
    movi    v0.2d, #0
    movi    v1.2d, #0
    movi    v2.2d, #0
    movi    v3.2d, #0
    movi    v4.2d, #0
    movi    v5.2d, #0
    movi    v6.2d, #0
    movi    v7.2d, #0
    movi    v8.2d, #0
    movi    v9.2d, #0
    movi    v10.2d, #0
    movi    v11.2d, #0
    movi    v12.2d, #0
    movi    v13.2d, #0
    movi    v14.2d, #0
    movi    v15.2d, #0
    movi    v16.2d, #0
    movi    v17.2d, #0
    movi    v18.2d, #0
    movi    v19.2d, #0
    movi    v20.2d, #0
    movi    v21.2d, #0
    movi    v22.2d, #0
    movi    v23.2d, #0
    movi    v24.2d, #0
    movi    v25.2d, #0
    movi    v26.2d, #0
    movi    v27.2d, #0
    movi    v28.2d, #0
    movi    v29.2d, #0
    movi    v30.2d, #0
    movi    v31.2d, #0
    msr     fpsr, xzr
    msr     fpcr, xzr
    ret
"#,
));

unsafe extern "C" {
    fn cpu_switchto(from: *mut Context, to: *const Context, prev: usize) -> usize;
    fn softint_switchto(
        from: *mut Context,
        stack_top: u64,
        arg: usize,
        entry: extern "C" fn(usize) -> usize,
    ) -> usize;
    fn context_resume(to: *const Context, ret: usize) -> !;
    fn fpu_save(state: *mut FpState);
    fn fpu_restore(state: *const FpState);
    fn fpu_zero();
}

/// Switches from the thread whose context is `from` to the one whose context is `to`.
/// Returns, in the thread that eventually switches back to `from`, the `prev` value that
/// thread passed.
///
/// # Safety
///
/// IRQs masked; `from` is the running thread's context; `to` holds a context saved by this
/// function or made by [`Context::new`] whose stack is valid, and no other CPU runs it.
pub unsafe fn switch(from: *mut Context, to: *const Context, prev: usize) -> usize {
    // SAFETY: forwarded to the caller.
    unsafe { cpu_switchto(from, to, prev) }
}

/// Lends the CPU from the running thread (context `from`) to `entry(arg)` on the stack whose
/// top is `stack_top`, without a scheduler pass: the fast soft interrupt switch. Returns
/// `entry`'s result if it returns, or, if the borrowing thread blocked and the scheduler
/// resumed `from` with [`switch`], the `prev` value that switch passed (the borrower).
///
/// # Safety
///
/// IRQs masked; `from` is the running thread's context; `stack_top` is 16-byte aligned and
/// the stack below it valid, unused and owned by the borrowing thread, which returns or
/// blocks (never exits) with IRQs masked.
pub unsafe fn lend_cpu(
    from: *mut Context,
    stack_top: u64,
    arg: usize,
    entry: extern "C" fn(usize) -> usize,
) -> usize {
    // SAFETY: forwarded to the caller.
    unsafe { softint_switchto(from, stack_top, arg, entry) }
}

/// Abandons the current stack and resumes the context `to` (saved by [`lend_cpu`] or
/// [`switch`]) as if its call returned `ret`.
///
/// # Safety
///
/// IRQs masked; `to` is a saved context of a thread that no CPU runs and whose stack is
/// intact, and nothing on the current stack is needed again.
pub unsafe fn resume(to: *const Context, ret: usize) -> ! {
    // SAFETY: forwarded to the caller.
    unsafe { context_resume(to, ret) }
}

/// Enables FP/SIMD at EL1 (CPACR_EL1.FPEN = 0b11).
pub fn fpu_enable() {
    // SAFETY: toggles FP access for this CPU only.
    unsafe {
        core::arch::asm!(
            "mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 20)", "msr cpacr_el1, {t}", "isb",
            t = out(reg) _, options(nostack)
        )
    };
}

/// Disables FP/SIMD at EL1: any FP/SIMD instruction traps (exception class 0x07).
pub fn fpu_disable() {
    // SAFETY: toggles FP access for this CPU only.
    unsafe {
        core::arch::asm!(
            "mrs {t}, cpacr_el1", "bic {t}, {t}, #(3 << 20)", "msr cpacr_el1, {t}", "isb",
            t = out(reg) _, options(nostack)
        )
    };
}

/// Saves the FP/SIMD registers into `state`. FP must be enabled.
pub fn fpu_save_to(state: &mut FpState) {
    // SAFETY: writes exactly `size_of::<FpState>()` bytes into `state`.
    unsafe { fpu_save(state) };
}

/// Loads the FP/SIMD registers from `state`. FP must be enabled.
pub fn fpu_restore_from(state: &FpState) {
    // SAFETY: reads `state`; only FP registers change.
    unsafe { fpu_restore(state) };
}

/// Zeroes all FP/SIMD registers, FPSR and FPCR. FP must be enabled.
pub fn fpu_zero_all() {
    // SAFETY: only FP registers change.
    unsafe { fpu_zero() };
}
