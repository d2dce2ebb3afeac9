//! Kernel thread stacks, each with an unmapped guard page below it.
//!
//! At boot a region of RAM is set aside for stacks and cut into fixed slots of [`SLOT_SIZE`]
//! bytes; the lowest page of each slot is left unmapped in the kernel map (the MMU code maps
//! those pages invalid before the MMU is turned on), so running off the bottom of a stack
//! faults on the guard page instead of silently overwriting the stack below. The fault handler
//! recognises such a fault (`guard_slot`) and reports "stack overflow in thread NAME".
//!
//! Fixed slots keep the page tables static (no map changes when threads come and go) and make
//! allocation a pop from a free list.
//!
//! Who takes slots: CPU 0's idle thread at boot (the secondary CPUs' idle threads run on their
//! boot stacks), then only `kthread_create`. `kthread::init` counts the slots left after the
//! idle thread took its own and caps the thread limit there, so a create within the limit
//! always finds a slot; anything new that takes slots must be accounted for there.

use crate::platform::PhysRange;
use crate::sync::SpinLock;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes per slot: one guard page and the stack above it.
pub const SLOT_SIZE: u64 = 32 * 1024;
/// The unmapped page at the bottom of every slot.
pub const GUARD_SIZE: u64 = 4096;
/// Usable stack bytes per thread.
pub const STACK_SIZE: u64 = SLOT_SIZE - GUARD_SIZE;
/// Slots set aside at boot, at most: fewer on a small machine ([`reserve`]). CPU 0's idle
/// thread takes one; the rest bound the number of kernel threads.
pub const MAX_SLOTS: usize = 1024;

static REGION_START: AtomicU64 = AtomicU64::new(0);
static SLOTS: AtomicUsize = AtomicUsize::new(0);
static FREE: SpinLock<Vec<u32>> = SpinLock::new(Vec::new());

/// A stack slot owned by one thread.
#[derive(Debug, PartialEq, Eq)]
pub struct StackSlot {
    index: u32,
}

impl StackSlot {
    /// Lowest usable address (just above the guard page).
    pub fn base(&self) -> u64 {
        REGION_START.load(Ordering::Relaxed) + u64::from(self.index) * SLOT_SIZE + GUARD_SIZE
    }

    /// One past the highest usable address (the initial stack pointer).
    pub fn top(&self) -> u64 {
        self.base() + STACK_SIZE
    }
}

/// Chooses the stack region: `MAX_SLOTS` slots (fewer on a small machine: an eighth of the
/// largest RAM range), slot aligned, as high as it fits in the largest RAM range (then in the
/// others) without overlapping anything in `avoid`: the image, the device tree and every range
/// it reserves, the board's reserved ranges (a firmware may put its tree or its own data at
/// the top of RAM). With no room for that many, half as many, and so on. Boot CPU, before the
/// MMU and the heap are set up; the caller keeps the heap out of the returned range and has
/// the MMU leave the lowest [`GUARD_SIZE`] bytes of every [`SLOT_SIZE`] unmapped.
pub fn reserve(ram: &[PhysRange], avoid: &[PhysRange]) -> Option<PhysRange> {
    let largest = ram.iter().max_by_key(|r| r.size)?;
    let mut slots = MAX_SLOTS.min((largest.size / 8 / SLOT_SIZE) as usize);
    while slots > 0 {
        let size = slots as u64 * SLOT_SIZE;
        let others = ram.iter().filter(|r| !core::ptr::eq(*r, largest));
        if let Some(region) = core::iter::once(largest)
            .chain(others)
            .find_map(|r| r.highest_free(size, SLOT_SIZE, avoid))
        {
            REGION_START.store(region.start, Ordering::Relaxed);
            SLOTS.store(slots, Ordering::Relaxed);
            return Some(region);
        }
        slots /= 2;
    }
    None
}

/// How many slots the region holds (0 before [`reserve`] or on a machine too small for one).
pub fn slot_count() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// The lowest address of slot `index` (its guard page).
pub fn slot_start(index: usize) -> u64 {
    REGION_START.load(Ordering::Relaxed) + index as u64 * SLOT_SIZE
}

/// Fills the free list. Boot CPU, once the heap exists.
pub fn init() {
    let n = SLOTS.load(Ordering::Relaxed) as u32;
    let mut free = FREE.lock();
    free.extend((0..n).rev());
}

/// Takes a free slot, or `None` when all are in use.
pub fn alloc() -> Option<StackSlot> {
    FREE.lock().pop().map(|index| StackSlot { index })
}

/// Returns a slot.
pub fn free(slot: StackSlot) {
    FREE.lock().push(slot.index);
}

/// Heap bytes held by the free-slot list (its capacity). Context: any.
pub(crate) fn table_bytes() -> usize {
    FREE.lock().capacity() * core::mem::size_of::<u32>()
}

/// Slots currently free.
pub fn free_count() -> usize {
    FREE.lock().len()
}

/// If `addr` lies in some slot's guard page, that slot's index.
pub fn guard_slot(addr: u64) -> Option<usize> {
    let start = REGION_START.load(Ordering::Relaxed);
    let slots = SLOTS.load(Ordering::Relaxed) as u64;
    if addr < start || addr >= start + slots * SLOT_SIZE {
        return None;
    }
    let offset = addr - start;
    (offset % SLOT_SIZE < GUARD_SIZE).then_some((offset / SLOT_SIZE) as usize)
}

/// The index of a slot.
pub fn index_of(slot: &StackSlot) -> usize {
    slot.index as usize
}
