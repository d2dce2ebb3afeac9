//! Per-CPU read-modify-writes that a preemption must not split, and the table of their
//! instruction windows.
//!
//! `splraise` and `splx` at IPL_NONE read `curcpu()` (TPIDR_EL1), then read and write that
//! CPU's `ipl`. A thread preempted between the read of TPIDR_EL1 and the store, and resumed on
//! another CPU, would store into the first CPU's `ipl` (leaving that CPU at a raised level and
//! its own critical section unprotected). Masking IRQs around the three instructions would
//! cost a DAIF read and two writes on every call. Instead each such sequence is one inline
//! assembly block that records its first and past-the-end addresses in the `.nopreempt`
//! section (one pair per inlined copy); the interrupt return path asks [`in_window`] before
//! preempting and leaves a thread interrupted inside a window alone. The fast path pays
//! nothing; the scan happens only when a preemption is wanted.
//!
//! A refused preemption is not lost: every reschedule request also sets `PENDING_RESCHED` in
//! the CPU's `ipending`, and a lowering sequence reads `ipending` as the last instruction of its
//! window, so it sees the request and takes the slow path, which preempts. A raising sequence
//! leaves the IPL raised, and the `splx` that lowers it again sees the request the same way.

use super::cpu_offsets::{IPENDING, IPL};
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

const _: () = assert!(IPENDING == IPL + 4, "ipl and ipending are adjacent words");

/// One window: `[start, end)` instruction addresses.
#[repr(C)]
struct Window {
    start: u64,
    end: u64,
}

unsafe extern "C" {
    static __nopreempt_start: u8;
    static __nopreempt_end: u8;
}

fn windows() -> &'static [Window] {
    // SAFETY: the linker script collects exactly the 16-byte `.quad start, end` pairs emitted
    // by the assembly blocks below between these two symbols (8-byte aligned), so the range is
    // an array of `Window`s that lives as long as the kernel image.
    unsafe {
        let start = core::ptr::addr_of!(__nopreempt_start) as *const Window;
        let end = core::ptr::addr_of!(__nopreempt_end) as *const Window;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// Whether `pc` (an interrupted thread's ELR) lies inside a window that must not be split by
/// a preemption. Context: interrupt return path, IRQs masked.
///
/// The linker keeps the windows in the order it placed their code, which is address order in
/// practice but not promised: the first call checks the order once, and a sorted table is
/// searched by bisection (windows never overlap, so only the last one starting at or below
/// `pc` can hold it), an unsorted one linearly.
pub fn in_window(pc: u64) -> bool {
    let w = windows();
    if sorted(w) {
        let i = w.partition_point(|x| x.start <= pc);
        i > 0 && pc < w[i - 1].end
    } else {
        w.iter().any(|w| pc >= w.start && pc < w.end)
    }
}

/// Whether the window table is in address order: 0 not known yet, 1 sorted, 2 not.
static SORTED: AtomicU8 = AtomicU8::new(0);

fn sorted(w: &[Window]) -> bool {
    match SORTED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = w.windows(2).all(|p| p[0].end <= p[1].start);
            SORTED.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The number of registered windows (for tests).
pub fn window_count() -> usize {
    windows().len()
}

/// Raises this CPU's IPL word to `new` if it is below, returning the previous value; one
/// window from the read of TPIDR_EL1 to the store.
///
/// Register contract: `ci` and `old` are scratch outputs; flags are clobbered.
#[inline(always)]
pub fn cpl_raise(new: u32) -> u32 {
    let old: u32;
    // SAFETY: TPIDR_EL1 holds this CPU's `CpuInfo` (set before any spl call); the block reads
    // and writes only its `ipl` word, which belongs to this CPU, and records its own address
    // range in `.nopreempt`.
    unsafe {
        asm!(
            "1: mrs {ci}, tpidr_el1",
            "ldr {old:w}, [{ci}, #{ipl}]",
            "cmp {old:w}, {new:w}",
            "csel {v:w}, {old:w}, {new:w}, hs",
            "str {v:w}, [{ci}, #{ipl}]",
            "2:",
            ".pushsection .nopreempt, \"a\"",
            ".balign 8",
            ".quad 1b, 2b",
            ".popsection",
            ci = out(reg) _,
            old = out(reg) old,
            v = out(reg) _,
            new = in(reg) new,
            ipl = const IPL,
            options(nostack),
        );
    }
    old
}

/// Stores `new` as this CPU's IPL word and returns `(previous IPL, ipending)` read in the same
/// window (the `ipending` load is the window's last instruction, so a reschedule request that
/// was refused inside the window is seen here).
///
/// Register contract: `ci` is a scratch output; flags are preserved.
#[inline(always)]
pub fn cpl_lower(new: u32) -> (u32, u32) {
    let old: u32;
    let pending: u32;
    // SAFETY: as in `cpl_raise`: only this CPU's `ipl` and `ipending` words are touched.
    unsafe {
        asm!(
            "1: mrs {ci}, tpidr_el1",
            "ldr {old:w}, [{ci}, #{ipl}]",
            "str {new:w}, [{ci}, #{ipl}]",
            "ldr {pending:w}, [{ci}, #{ipending}]",
            "2:",
            ".pushsection .nopreempt, \"a\"",
            ".balign 8",
            ".quad 1b, 2b",
            ".popsection",
            ci = out(reg) _,
            old = out(reg) old,
            pending = out(reg) pending,
            new = in(reg) new,
            ipl = const IPL,
            ipending = const IPENDING,
            options(nostack, preserves_flags),
        );
    }
    (old, pending)
}
