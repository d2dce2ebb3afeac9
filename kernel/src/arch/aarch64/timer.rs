//! The EL1 physical generic timer (CNTP_*), which drives the clock tick on every CPU.
//! Each CPU has its own copy of these registers; all functions act on *this CPU*.

use core::arch::asm;

/// Reads the physical counter (CNTPCT_EL0).
#[inline(always)]
pub fn physical_count() -> u64 {
    let value: u64;
    // SAFETY: reading the counter has no side effect.
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nomem, nostack)) };
    value
}

/// Arms the timer to fire when the physical counter reaches `deadline`, and enables it with
/// its interrupt unmasked.
#[inline(always)]
pub fn arm_at(deadline: u64) {
    // SAFETY: programming this CPU's own timer; CTL = ENABLE, IMASK clear.
    unsafe {
        asm!(
            "msr cntp_cval_el0, {cval}",
            "msr cntp_ctl_el0, {ctl}",
            "isb",
            cval = in(reg) deadline,
            ctl = in(reg) 1u64,
            options(nomem, nostack),
        )
    };
}

/// Stops the timer (its interrupt line drops).
pub fn disable() {
    // SAFETY: programming this CPU's own timer.
    unsafe { asm!("msr cntp_ctl_el0, xzr", "isb", options(nomem, nostack)) };
}
