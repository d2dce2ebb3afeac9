//! Frame-pointer backtraces. The kernel is built with `-C force-frame-pointers=yes`, so every
//! function keeps a frame record `{previous x29, return address}` at x29.

/// Walks the frame-record chain starting at frame pointer `fp`, calling `visit` with each
/// return address, at most `max` times. The walk stops at a null, misaligned or non-increasing
/// frame pointer, or one outside `[stack_lo, stack_hi)` when bounds are given, so a corrupt
/// chain ends the trace instead of faulting.
pub fn walk(fp: u64, stack_bounds: Option<(u64, u64)>, max: usize, mut visit: impl FnMut(u64)) {
    let mut fp = fp;
    for _ in 0..max {
        if fp == 0 || !fp.is_multiple_of(16) {
            return;
        }
        if let Some((lo, hi)) = stack_bounds
            && (fp < lo || fp + 16 > hi)
        {
            return;
        }
        // SAFETY: `fp` is 16-byte aligned and, when bounds are known, inside the stack; frame
        // records are two words written by function prologues.
        let (next, lr) = unsafe {
            let rec = fp as *const u64;
            (rec.read_volatile(), rec.add(1).read_volatile())
        };
        if lr == 0 {
            return;
        }
        visit(lr);
        if next <= fp {
            return;
        }
        fp = next;
    }
}
