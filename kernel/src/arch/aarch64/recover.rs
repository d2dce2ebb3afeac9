//! Recovery points: run a function so that a panic or fault inside it can abandon it and
//! return to the caller, like C's `setjmp`/`longjmp`. The test harness uses this so that a
//! failed assertion or an expected fault ends one test, not the test run.
//!
//! Abandoning a function skips its destructors: memory it allocated leaks and a lock it held
//! stays held. That is acceptable for a failed test, and the reason nothing else uses this.

use core::arch::global_asm;

/// The callee-saved state at [`call_with_recovery`]: x19..x30, SP and DAIF.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RecoveryPoint {
    regs: [u64; 14],
}

impl RecoveryPoint {
    /// An unused recovery point.
    pub const fn new() -> Self {
        Self { regs: [0; 14] }
    }
}

global_asm!(concat!(
    r#"
    .section .text.recover, "ax"
    .global recovery_call
// x0 = &mut RecoveryPoint, x1 = function, x2 = its argument. Returns 0 after the function
// returned normally, 1 when `recovery_resume` came back here instead.
recovery_call:
"#,
    callee_saved_store!("x0"),
    r#"    mov     x3, sp
    mrs     x4, daif
    stp     x3, x4, [x0, #96]
    stp     x29, x30, [sp, #-16]!
    mov     x29, sp
    mov     x0, x2
    blr     x1
    ldp     x29, x30, [sp], #16
    mov     x0, #0
    ret

    .global recovery_resume
// x0 = &RecoveryPoint. Does not return: resumes `recovery_call`'s caller with x0 = 1.
recovery_resume:
"#,
    callee_saved_load!("x0"),
    r#"    ldp     x3, x4, [x0, #96]
    mov     sp, x3
    msr     daif, x4
    mov     x0, #1
    ret
"#,
));

unsafe extern "C" {
    fn recovery_call(point: *mut RecoveryPoint, f: extern "C" fn(usize), arg: usize) -> u64;
    fn recovery_resume(point: *const RecoveryPoint) -> !;
}

/// Calls `f(arg)`. Returns `true` if it returned normally, `false` if [`resume`] was called
/// on `point` while `f` was running (from a panic or an exception handler on this CPU).
///
/// # Safety
///
/// `point` must stay valid until this returns. Anything `f` owned when abandoned is leaked.
pub unsafe fn call_with_recovery(
    point: *mut RecoveryPoint,
    f: extern "C" fn(usize),
    arg: usize,
) -> bool {
    // SAFETY: `recovery_call` saves the callee-saved registers into `point` (valid per the
    // caller) and calls `f` with the standard calling convention.
    unsafe { recovery_call(point, f, arg) == 0 }
}

/// Abandons the code running since [`call_with_recovery`] and makes that call return `false`.
///
/// # Safety
///
/// Must be called on the same CPU and stack as the matching `call_with_recovery`, while it is
/// still active (the stack below its frame is discarded).
pub unsafe fn resume(point: *const RecoveryPoint) -> ! {
    // SAFETY: per the caller, `point` holds the state of an active `recovery_call` frame on
    // this stack.
    unsafe { recovery_resume(point) }
}
