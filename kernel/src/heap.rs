//! The kernel heap: a buddy allocator (`buddy_system_allocator::Heap`) over the RAM the device
//! tree reports, minus the kernel image, the device tree and reserved ranges.
//!
//! The allocator sits behind this kernel's [`SpinLock`] rather than the crate's `LockedHeap`,
//! for two reasons: the lock masks IRQs (so an allocation from an interrupt handler cannot
//! deadlock against the thread it interrupted), and its spin loop uses `yield`, which keeps
//! `-icount` runs honest. [`stats`] reads the allocator's own accounting, which tests compare
//! before and after concurrent work to prove nothing leaked or was freed twice.
//!
//! Context: thread or interrupt, not at IPL_HIGH (NetBSD's rule: no allocation there).

use crate::platform::PhysRange;
use crate::sync::SpinLock;
use buddy_system_allocator::Heap;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

/// Allocator orders: blocks up to 2^31 bytes.
const ORDER: usize = 32;

/// The global allocator.
pub struct KernelHeap {
    heap: SpinLock<Heap<ORDER>>,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    heap: SpinLock::new(Heap::empty()),
};

// SAFETY: `alloc` returns blocks of at least `layout.size()` bytes aligned to
// `layout.align()` from memory only the heap owns, or null; `dealloc` returns them. The spin
// lock serialises all access to the allocator state.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.heap
            .lock()
            .alloc(layout)
            .map(NonNull::as_ptr)
            .unwrap_or(core::ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else { return };
        // SAFETY: the caller (GlobalAlloc contract) passes a block this allocator returned
        // for the same layout.
        unsafe { self.heap.lock().dealloc(ptr, layout) };
    }
}

/// The allocator's accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed to the allocator.
    pub total: usize,
    /// Bytes requested by live allocations.
    pub user: usize,
    /// Bytes reserved for live allocations (rounded up to buddy blocks).
    pub actual: usize,
}

/// A snapshot of the allocator's accounting. Context: thread or interrupt.
pub fn stats() -> HeapStats {
    let heap = HEAP.heap.lock();
    HeapStats {
        total: heap.stats_total_bytes(),
        user: heap.stats_alloc_user(),
        actual: heap.stats_alloc_actual(),
    }
}

/// Subtracts `hole` from `range`, returning up to two pieces.
fn subtract(range: PhysRange, hole: PhysRange) -> [Option<PhysRange>; 2] {
    if hole.size == 0 || hole.end() <= range.start || hole.start >= range.end() {
        return [Some(range), None];
    }
    let below = (hole.start > range.start).then(|| PhysRange {
        start: range.start,
        size: hole.start - range.start,
    });
    let above = (hole.end() < range.end()).then(|| PhysRange {
        start: hole.end(),
        size: range.end() - hole.end(),
    });
    [below, above]
}

/// Gives the allocator every part of `ram` not covered by `holes`. Boot CPU, once, with the
/// MMU on (the allocator's lock needs working exclusives). Returns the bytes added.
///
/// # Safety
///
/// `ram` must be RAM mapped read-write, and `holes` must cover everything in it that is in use
/// (the kernel image, its stacks, the device tree, the page tables).
pub unsafe fn init(ram: &[PhysRange], holes: &[PhysRange]) -> usize {
    const MAX_PIECES: usize = 32;
    let mut pieces = [None::<PhysRange>; MAX_PIECES];
    let mut count = 0;
    for &r in ram {
        if count < MAX_PIECES {
            pieces[count] = Some(r);
            count += 1;
        }
    }
    for &hole in holes {
        let mut next = [None::<PhysRange>; MAX_PIECES];
        let mut n = 0;
        for piece in pieces[..count].iter().flatten() {
            for part in subtract(*piece, hole).into_iter().flatten() {
                if n < MAX_PIECES {
                    next[n] = Some(part);
                    n += 1;
                }
            }
        }
        pieces = next;
        count = n;
    }
    let mut heap = HEAP.heap.lock();
    let mut added = 0;
    for piece in pieces[..count].iter().flatten() {
        // Keep the allocator's blocks page aligned.
        let start = (piece.start + 0xfff) & !0xfff;
        let end = piece.end() & !0xfff;
        if end > start {
            // SAFETY: the caller guarantees this RAM is mapped and unused.
            unsafe { heap.add_to_heap(start as usize, end as usize) };
            added += (end - start) as usize;
        }
    }
    added
}
