//! The machine side of event tracing (`crate::trace`): the routine that writes one record,
//! the restartable sequence that makes it safe at any IPL without masking IRQs, and the
//! patching of trace sites (static keys: each site is a `nop` or a `b` to its out-of-line
//! block).
//!
//! **Writing a record** ([`kern_trace_record`], assembly below, reached by [`record`]): this
//! CPU's ring is found in one load from `CpuInfo::trace_head` (the address of the ring's `head`
//! word, set by `trace::init`), the record goes to slot `head % RING_RECORDS` with two `stp`,
//! and a store-release of `head + 1` publishes it. Thirteen instructions, no stack, no frame.
//!
//! **At any IPL without masking IRQs: a restartable sequence** (NetBSD's `ras(9)`, Linux's
//! rseq). Everything from the routine's first instruction to the store-release of `head` is
//! a window that reads and writes only this CPU's ring and leaves its inputs (`x0`–`x2`)
//! untouched. An interrupt taken inside the window resumes at the routine's start instead
//! ([`ras_restart`], called by the IRQ entry before anything else), so the sequence starts
//! over: it reads TPIDR_EL1 again (the thread may have been preempted and now run on another
//! CPU), `head` again (the handler may have written records of its own, which then come first
//! in the ring with their earlier timestamps) and the counter again. Stores made before the
//! interruption went to slot `head`, which is outside the published window `[head - N, head)`
//! until the release store, and are overwritten. So records are never torn, never lost, and
//! each CPU's timestamps rise in ring order, exactly as with IRQs masked, for three
//! instructions (`mrs daif`, `msr daifset`, `msr daif`) fewer. Synchronous exceptions do not
//! happen inside the window (it touches only a mapped, writable ring) and FIQs are not used.
//!
//! **Ordering of the timestamp:** `isb` before `mrs cntvct_el0`, as in `arch::counter`: the
//! architecture lets counter reads execute early and out of order with each other, so
//! without it two records' timestamps could run backwards on a Cortex-A72.
//!
//! **Patching** ([`patch_text`]): kernel text is mapped read-only (`mmu`), with WXN off. A
//! word of text is written by clearing AP\[2\] of the descriptor that maps it (found by walking
//! the identity-mapped tables from TTBR0_EL1), invalidating this CPU's TLB entry, storing, and
//! restoring the descriptor with a broadcast TLB invalidation; then the line is cleaned to
//! the point of unification and the instruction cache invalidated (`dc cvau`, `dsb ish`,
//! `ic ivau`, `dsb ish`, `isb`). Changing only the permission needs no break-before-make, and
//! `b` and `nop` are among the instructions the architecture allows to be modified while
//! another CPU executes them (it sees the old or the new one). IRQs are masked meanwhile so
//! the write happens on the CPU whose TLB was prepared.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

/// log2 of the bytes of a record (the routine's slot arithmetic; `trace` checks its layout).
pub const RECORD_SHIFT: u32 = 5;
/// log2 of the records in a ring (likewise).
pub const RING_INDEX_BITS: u32 = 11;
/// Bytes from a ring's `head` word to its first record (likewise).
pub const HEAD_TO_RECORDS: usize = 48;

global_asm!(
    r#"
// kern_trace_record: writes one trace record to this CPU's ring.
// In:  x0 = info without its sequence number (kind | aux << 8), x1 = a, x2 = b.
// Out: nothing. Clobbers x3-x7 (x0-x2 are preserved: the restart needs them). Flags,
//      the stack and every other register are preserved; no frame is pushed.
// Requires: TPIDR_EL1 = this CPU's CpuInfo, whose trace_head word holds the address of this
// CPU's ring's head (trace::init). Callable at any IPL, IRQs masked or not.
// Restartable: kern_trace_record .. kern_trace_record_commit (inclusive) is the window of
// ras_restart; it must only read and write this CPU's ring and x3-x7.
    .section .text.kern_trace_record, "ax"
    .balign 16
    .global kern_trace_record
    .type kern_trace_record, %function
kern_trace_record:
    mrs     x3, tpidr_el1
    ldr     x3, [x3, #{trace_head}]         // &ring.head
    ldr     x4, [x3]                        // head
    ubfiz   x5, x4, #{shift}, #{bits}       // (head % N) * record size
    add     x5, x3, x5
    isb                                     // the counter is read after what came before
    mrs     x6, cntvct_el0
    orr     x7, x0, x4, lsl #32             // info | sequence number << 32
    stp     x6, x7, [x5, #{records}]        // ts, info
    stp     x1, x2, [x5, #{records} + 16]   // a, b
    add     x4, x4, #1
    .global kern_trace_record_commit
kern_trace_record_commit:
    stlr    x4, [x3]                        // publish: head + 1
    ret
    .size kern_trace_record, . - kern_trace_record
"#,
    trace_head = const super::cpu_offsets::TRACE_HEAD,
    shift = const RECORD_SHIFT,
    bits = const RING_INDEX_BITS,
    records = const HEAD_TO_RECORDS,
);

unsafe extern "C" {
    static kern_trace_record: u8;
    static kern_trace_record_commit: u8;
}

/// Writes one record (`info` = kind | aux << 8; the routine adds the sequence number) to this
/// CPU's ring through [`kern_trace_record`]. Context: any, any IPL, IRQs masked or not; never
/// blocks. `trace::init` must have run (it sets every CPU's `trace_head`).
#[inline(always)]
pub fn record(info: u64, a: u64, b: u64) {
    // SAFETY: the routine's register contract is declared here (inputs x0-x2 kept, x3-x7 and
    // x30 clobbered, no stack, flags kept); it writes only this CPU's ring, which `trace::init`
    // set up before any site could be enabled.
    unsafe {
        asm!(
            "bl kern_trace_record",
            in("x0") info,
            in("x1") a,
            in("x2") b,
            out("x3") _,
            out("x4") _,
            out("x5") _,
            out("x6") _,
            out("x7") _,
            out("x30") _,
            options(nostack, preserves_flags),
        );
    }
}

/// The restartable sequence's check, for the IRQ entry: an interrupted `pc` inside
/// [`kern_trace_record`]'s window (up to and including its publishing store) becomes the
/// routine's start, so it runs again from the beginning when the interrupted code resumes;
/// any other `pc` is returned as it is. Context: IRQ entry, before the handler runs.
#[inline(always)]
pub fn ras_restart(pc: u64) -> u64 {
    let start = core::ptr::addr_of!(kern_trace_record) as u64;
    let commit = core::ptr::addr_of!(kern_trace_record_commit) as u64;
    let into = pc.wrapping_sub(start);
    if into <= commit - start {
        if into != 0 {
            RESTARTS.fetch_add(1, Ordering::Relaxed);
        }
        start
    } else {
        pc
    }
}

/// How many interrupted records [`ras_restart`] sent back to their start (an interruption at
/// the first instruction, which changes nothing, is not counted). For tests.
pub static RESTARTS: AtomicU64 = AtomicU64::new(0);

/// The window of the restartable sequence: the routine's first instruction and its publishing
/// store (for tests).
pub fn ras_window() -> (u64, u64) {
    (
        core::ptr::addr_of!(kern_trace_record) as u64,
        core::ptr::addr_of!(kern_trace_record_commit) as u64,
    )
}

/// The A64 `nop`.
pub const NOP: u32 = 0xd503_201f;

/// The A64 `b` at `from` to `to` (both 4-byte aligned, within ±128 MiB).
pub const fn branch(from: u64, to: u64) -> u32 {
    let offset = to.wrapping_sub(from) as i64;
    assert!(
        offset % 4 == 0 && offset >= -(1 << 27) && offset < (1 << 27),
        "arch::trace::branch: target out of range"
    );
    0x1400_0000 | ((offset >> 2) as u32 & 0x03ff_ffff)
}

/// Bit of AP\[2\] (read-only) in a stage-1 descriptor.
const AP_READ_ONLY: u64 = 1 << 7;
/// Bits of a descriptor that hold the next table's or the output address.
const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;

/// The descriptor that maps `va` in the kernel's identity map (a level-1 or level-2 block or
/// a level-3 page), by a walk from TTBR0_EL1 (39-bit VA, 4 KiB granule, root at level 1).
fn descriptor(va: u64) -> *mut u64 {
    let ttbr0: u64;
    // SAFETY: reading TTBR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, ttbr0_el1", out(reg) ttbr0, options(nomem, nostack, preserves_flags)) };
    let mut table = ttbr0 & OUTPUT_ADDRESS;
    for level in 1..=3u64 {
        let index = (va >> (12 + 9 * (3 - level))) & 0x1ff;
        let entry = (table + index * 8) as *mut u64;
        // SAFETY: the tables are identity mapped (physical = virtual, `mmu`), and `entry` is
        // inside a table the walk reached through valid table descriptors.
        let bits = unsafe { entry.read_volatile() };
        assert!(
            bits & 1 != 0,
            "arch::trace::patch_text: {va:#x} is not mapped (level {level})"
        );
        if level == 3 || bits & 2 == 0 {
            return entry;
        }
        table = bits & OUTPUT_ADDRESS;
    }
    unreachable!("the walk returns at level 3")
}

/// Writes the instruction `insn` at `addr` in kernel text (mapped read-only) and makes every
/// CPU's instruction fetch see it eventually (see the module doc; other CPUs are only
/// guaranteed to after their next context synchronization: `trace_control::set_mask` sends them a
/// cross call). Context: any; IRQs are masked inside; callers serialize.
///
/// # Safety
///
/// `addr` is a 4-byte aligned word of kernel text that any CPU may be executing, and both the
/// old and the new instruction are `b` or `nop` (the concurrent-modification rule).
pub unsafe fn patch_text(addr: u64, insn: u32) {
    let daif = super::irq_save();
    let desc = descriptor(addr);
    // SAFETY: `desc` is the live descriptor mapping `addr` (identity-mapped table memory).
    // Clearing AP[2] only relaxes the permission of a valid entry (no break-before-make is
    // needed); the local TLB invalidation drops a cached read-only copy so the store below
    // sees the writable one. The store writes one aligned word of text (caller's promise);
    // the descriptor is then restored and every CPU's TLB entry for the page invalidated, and
    // the instruction cache brought up to date. IRQs are masked, so all of it happens on this
    // CPU.
    unsafe {
        let old = desc.read_volatile();
        desc.write_volatile(old & !AP_READ_ONLY);
        asm!(
            "dsb ishst",
            "tlbi vale1, {page}",
            "dsb nsh",
            "isb",
            page = in(reg) addr >> 12,
            options(nostack, preserves_flags)
        );
        (addr as *mut u32).write_volatile(insn);
        desc.write_volatile(old);
        asm!(
            "dsb ishst",
            "tlbi vale1is, {page}",
            "dc cvau, {addr}",
            "dsb ish",
            "ic ivau, {addr}",
            "dsb ish",
            "isb",
            page = in(reg) addr >> 12,
            addr = in(reg) addr,
            options(nostack, preserves_flags)
        );
    }
    super::irq_restore(daif);
}

/// A context synchronization event on this CPU (`isb`): instruction fetches after it see text
/// written before it (with the cache maintenance of [`patch_text`]).
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier only.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}
