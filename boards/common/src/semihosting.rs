//! Leaving QEMU with an exit status through Arm semihosting (`SYS_EXIT` with
//! `ADP_Stopped_ApplicationExit`). QEMU must run with `-semihosting-config enable=on`, which
//! `cargo xtask` always passes; without it the `hlt` is an undefined instruction.

/// `SYS_EXIT` (AArch64 takes a pointer to a two-word parameter block).
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the second word is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Asks the debugger/emulator to exit with `code`. Returns only if nothing acted on it.
pub fn exit(code: i32) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    // SAFETY: the semihosting call reads the two-word block, which lives on our stack for the
    // duration of the instruction; it writes only x0.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack),
        )
    };
}
