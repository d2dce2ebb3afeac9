//! Machine-wide operations on per-CPU statistics.
//!
//! Per-CPU counters that only their own CPU writes (interrupt counts, soft interrupt
//! counters) are updated with plain loads and stores, which is what makes them cheap; the
//! price is that another CPU may not write them. Resetting them is therefore done by each CPU
//! on itself, in one high-priority cross call (the kind of per-CPU state change xcall(9) is
//! for).

/// Zeroes the interrupt counts and soft interrupt counters of every online CPU; returns when
/// every CPU has done so. Context: thread, IPL_NONE, may sleep (an `xc_broadcast` + wait).
pub fn reset_cpu_counters() {
    crate::xcall::xc_broadcast_with(crate::xcall::XC_HIGHPRI, |_| {
        crate::intr::reset_this_cpu_counts();
        crate::softint::reset_this_cpu_counters();
    });
}
