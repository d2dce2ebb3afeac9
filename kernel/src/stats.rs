//! Machine-wide operations on per-CPU statistics.
//!
//! Per-CPU counters that only their own CPU writes (interrupt counts, soft interrupt
//! counters) are updated with plain loads and stores, which is what makes them cheap; the
//! price is that another CPU may not write them. Resetting them is therefore done by each CPU
//! on itself, in one cross call (the kind of per-CPU state change xcall(9) is for): a
//! low-priority one, so it runs in a thread, which no soft interrupt of that CPU can be in the
//! middle of (a softint borrows the CPU until it returns or blocks), at IPL_SOFTSERIAL so none
//! starts meanwhile. (A hard interrupt updates its count with IRQs masked: one store of zero
//! lands before or after it, never inside.)

/// Zeroes the interrupt counts and soft interrupt counters of every online CPU; returns when
/// every CPU has done so. Context: thread, IPL_NONE, may sleep (an `xc_broadcast` + wait).
pub fn reset_cpu_counters() {
    crate::xcall::xc_broadcast_with(0, |_| {
        let _s = crate::spl::SplGuard::raise(crate::spl::IPL_SOFTSERIAL);
        crate::intr::reset_this_cpu_counts();
        crate::softint::reset_this_cpu_counters();
    });
}

/// Empties every online CPU's trace ring (`trace::clear_this_cpu` on each, in one cross call);
/// returns when all are empty. Context: thread, IPL_NONE, may sleep. Events recorded while the
/// call is in flight may survive on CPUs that had not yet cleared.
pub fn trace_clear() {
    crate::xcall::xc_broadcast_with(0, |_| crate::trace::clear_this_cpu());
}
