//! The kernel's identity map and turning the MMU on.
//!
//! Built with `aarch64-paging` on a 39-bit address space (root level 1, 4 KiB granule):
//! RAM is normal write-back cacheable memory, device ranges are Device-nGnRE, and the kernel
//! image is split by section: text read-only and executable, rodata read-only, data, bss,
//! stacks and the heap read-write and never executable.
//!
//! The page tables come from a static pool rather than the heap: the boot CPU builds them
//! before the heap exists, and while the MMU is still off, where exclusive loads and stores
//! (which every lock uses) are not guaranteed to work on real Cortex-A72 hardware. The pool is a
//! bump allocator; tables are never freed because the map lives as long as the kernel. It lies
//! in `.noinit`, which the entry code does not zero: a page is zeroed (or filled) when handed out.
//!
//! Secondary CPUs reuse the same tables: [`MmuConfig`] carries MAIR/TCR/TTBR0/SCTLR to the
//! trampoline in `secondary.rs`, which turns the MMU on before touching the stack.
//!
//! Cost (under `-icount`, where every guest instruction counts at boot): the crate writes an
//! entry for about 75 guest instructions. So the image is mapped first and RAM around it
//! (mapping RAM first made the crate split a 1 GiB and a 2 MiB block entry by entry only to
//! overwrite the image's entries), and the stack region is not built through it at all.
//!
//! The thread-stack region ([`GuardedSlots`]: one unmapped guard page at the bottom of every
//! 32 KiB slot, 1024 slots) is the one part not built through `aarch64-paging`'s `map_range`:
//! a call per guard page cost about 775 guest instructions each (a walk from the root, block
//! splits through the generic path), 0.8 M at every boot. Instead, for each 2 MiB of the region
//! the crate has mapped as a level-2 block (RAM is mapped before it, so it has), a pool page is
//! filled with the 512 level-3 entries in one loop (guard pages invalid, the rest mapped as RAM
//! is) and the block entry is replaced by a table entry pointing to it, with a plain store: the
//! crate's `walk_range` says where that entry is, and it lies in [`POOL`], which only this
//! module writes. This is the last change to the map before it is forgotten, so the crate never
//! sees the table it did not make. Any 2 MiB not mapped that way (the region's ends when they
//! are not 2 MiB aligned, RAM mapped with a 1 GiB block, slots that do not tile 2 MiB) takes
//! the generic path, page by page.

use crate::platform::PhysRange;
use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use core::arch::asm;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// MAIR_EL1: attribute 0 = Device-nGnRE, 1 = Normal write-back read/write-allocate.
const MAIR: u64 = 0x04 | (0xff << 8);
const DEVICE: El1Attributes = El1Attributes::ATTRIBUTE_INDEX_0;
const NORMAL: El1Attributes =
    El1Attributes::ATTRIBUTE_INDEX_1.union(El1Attributes::INNER_SHAREABLE);
/// Never executable, at EL1 or EL0.
const XN: El1Attributes = El1Attributes::PXN.union(El1Attributes::UXN);

/// Number of 4 KiB pages reserved for page tables.
const POOL_PAGES: usize = 128;

#[repr(C, align(4096))]
struct Pool([[u8; 4096]; POOL_PAGES]);

/// The page-table pool. Only [`PoolTranslation`] touches it, on the boot CPU, before SMP. It
/// lives in the linker script's `.noinit` section, which the entry code does not zero: of its
/// 512 KiB a boot uses a few dozen pages, so each page is zeroed (or filled) when handed out
/// instead, which saves about 40 k guest instructions per boot.
#[unsafe(link_section = ".noinit.page_tables")]
static mut POOL: MaybeUninit<Pool> = MaybeUninit::uninit();
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// The next unused pool page, contents undefined: the caller writes all of it.
fn take_page() -> *mut [u64; ENTRIES] {
    // A load and a store, not `fetch_add`: this runs with the MMU off, where exclusives are not
    // reliable on real hardware, and only ever on the boot CPU before SMP.
    let index = POOL_USED.load(Ordering::Relaxed);
    POOL_USED.store(index + 1, Ordering::Relaxed);
    assert!(
        index < POOL_PAGES,
        "mmu: page-table pool exhausted ({POOL_PAGES} pages); raise POOL_PAGES"
    );
    // SAFETY: in bounds (checked above); each index is handed out once, so this page has no
    // other user; the pool is a static, lives forever and is never freed.
    unsafe {
        core::ptr::addr_of_mut!(POOL)
            .cast::<[u64; ENTRIES]>()
            .add(index)
    }
}

/// Hands out zeroed pages from [`POOL`]. Identity mapped, so physical = virtual.
struct PoolTranslation;

impl Translation<El1Attributes> for PoolTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El1Attributes>>, PhysicalAddress) {
        let page = take_page();
        // SAFETY: a page of the pool nobody else uses (`take_page`); plain stores, so fine with
        // the MMU off.
        unsafe { page.write_bytes(0, 1) };
        let ptr = NonNull::new(page.cast::<PageTable<El1Attributes>>()).expect("static address");
        (ptr, PhysicalAddress(page as usize))
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<El1Attributes>>) {
        // Tables of the kernel map are never freed: the map lives as long as the kernel.
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El1Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<El1Attributes>).expect("page table at address 0")
    }
}

/// The section boundaries of the kernel image, from the board's linker script.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of `.text` (executable, read-only).
    pub text: PhysRange,
    /// Read-only data.
    pub rodata: PhysRange,
    /// Everything from `.data` to the end of the image (read-write, never executable).
    pub data: PhysRange,
}

/// The values a CPU needs to turn the MMU on with the kernel map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmuConfig {
    /// MAIR_EL1.
    pub mair: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1 (root table address, ASID 0).
    pub ttbr0: u64,
    /// SCTLR_EL1 with M, C and I set.
    pub sctlr: u64,
}

/// Errors building the kernel map.
#[derive(Debug)]
pub struct MapFailed(pub &'static str, pub PhysRange);

fn map(
    mapping: &mut Mapping<PoolTranslation, El1And0>,
    what: &'static str,
    range: PhysRange,
    attrs: El1Attributes,
) -> Result<(), MapFailed> {
    if range.size == 0 {
        return Ok(());
    }
    let start = range.start & !0xfff;
    let end = (range.end() + 0xfff) & !0xfff;
    let region = MemoryRegion::new(start as usize, end as usize);
    mapping
        .map_range(
            &region,
            PhysicalAddress(start as usize),
            attrs | El1Attributes::ACCESSED,
            Constraints::empty(),
        )
        .map_err(|_| MapFailed(what, range))
}

const VALID: El1Attributes = El1Attributes::VALID;

/// The parts of `range` below and above `hole` (empty ranges where there is none).
fn around(range: PhysRange, hole: PhysRange) -> [PhysRange; 2] {
    let below_end = hole.start.clamp(range.start, range.end());
    let above_start = hole.end().clamp(range.start, range.end());
    [
        PhysRange {
            start: range.start,
            size: below_end - range.start,
        },
        PhysRange {
            start: above_start,
            size: range.end() - above_start,
        },
    ]
}

/// Builds the kernel identity map, turns the MMU and caches on (*this CPU*, the boot CPU) and
/// returns the configuration secondaries copy.
///
/// # Safety
///
/// Call once, on the boot CPU, with the MMU off, before anything else uses [`POOL`]. The
/// guard pages of `stacks` are left unmapped (the rest of it is mapped as RAM; it must lie in
/// `ram`). `ram` must cover the kernel image and the stack in use, and `devices` every MMIO
/// range the kernel touches afterwards, or the next access faults.
pub unsafe fn enable(
    ram: &[PhysRange],
    image: &ImageLayout,
    devices: &[PhysRange],
    stacks: GuardedSlots,
) -> Result<MmuConfig, MapFailed> {
    let mut mapping =
        Mapping::with_asid_and_va_range(PoolTranslation, 0, 1, El1And0, VaRange::Lower);
    // The image first, then RAM around it. (RAM first and the image over it made the crate
    // split a 1 GiB block and a 2 MiB block into 512 entries each, only to overwrite the
    // image's; this way each entry is written once.)
    map(
        &mut mapping,
        "text",
        image.text,
        VALID | NORMAL | El1Attributes::READ_ONLY,
    )?;
    map(
        &mut mapping,
        "rodata",
        image.rodata,
        VALID | NORMAL | El1Attributes::READ_ONLY | XN,
    )?;
    map(&mut mapping, "data", image.data, VALID | NORMAL | XN)?;
    let whole_image = PhysRange {
        start: image.text.start,
        size: image.data.end() - image.text.start,
    };
    for &r in ram {
        for piece in around(r, whole_image) {
            map(&mut mapping, "RAM", piece, VALID | NORMAL | XN)?;
        }
    }
    for &d in devices {
        map(&mut mapping, "device", d, VALID | DEVICE | XN)?;
    }
    // Guard pages: entries written invalid, so any access faults. Last: see the module doc.
    map_guarded_slots(&mut mapping, stacks)?;

    let config = MmuConfig {
        mair: MAIR,
        tcr: tcr_value(),
        ttbr0: mapping.root_address().0 as u64,
        sctlr: sctlr_with_mmu(),
    };
    // The map must outlive every CPU's use of it: it lives as long as the kernel.
    core::mem::forget(mapping);
    // SAFETY: the map covers the running code, its stack and data (caller's promise), so
    // execution continues at the same addresses once translation is on.
    unsafe { turn_on(&config) };
    Ok(config)
}

/// A range of RAM cut into equal slots whose lowest bytes stay unmapped: the thread stacks and
/// their guard pages (`sched::stack`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardedSlots {
    /// The whole range: page aligned, a whole number of slots (empty: nothing to do).
    pub range: PhysRange,
    /// Bytes per slot, a multiple of 4 KiB.
    pub slot: u64,
    /// Bytes at the bottom of each slot left unmapped, a multiple of 4 KiB below `slot`.
    pub guard: u64,
}

impl GuardedSlots {
    /// Whether the page at `addr` (inside the range) is a guard page.
    fn is_guard(&self, addr: u64) -> bool {
        (addr - self.range.start) % self.slot < self.guard
    }
}

const PAGE: u64 = 4096;
/// Bytes one level-2 entry maps.
const BLOCK_2M: u64 = 2 << 20;
/// Entries per table.
const ENTRIES: usize = 512;

/// Maps `slots`' guard pages invalid over the RAM mapping already in `mapping` (see the module
/// doc for the fast path). Boot CPU, MMU off, last change before the map is forgotten.
fn map_guarded_slots(
    mapping: &mut Mapping<PoolTranslation, El1And0>,
    slots: GuardedSlots,
) -> Result<(), MapFailed> {
    let range = slots.range;
    if range.size == 0 {
        return Ok(());
    }
    let mut chunk = range.start & !(BLOCK_2M - 1);
    while chunk < range.end() {
        // The fast path needs slots that tile the 2 MiB exactly.
        let whole = chunk >= range.start
            && chunk + BLOCK_2M <= range.end()
            && BLOCK_2M.is_multiple_of(slots.slot)
            && (chunk - range.start).is_multiple_of(slots.slot);
        if !(whole && replace_block_with_pages(mapping, chunk, slots)) {
            // The generic path: each guard page of this 2 MiB that lies in the range.
            let mut page = chunk.max(range.start);
            while page < (chunk + BLOCK_2M).min(range.end()) {
                if slots.is_guard(page) {
                    let guard = PhysRange {
                        start: page,
                        size: PAGE,
                    };
                    map(mapping, "guard page", guard, NORMAL | XN)?;
                }
                page += PAGE;
            }
        }
        chunk += BLOCK_2M;
    }
    Ok(())
}

/// If the 2 MiB at `chunk` (aligned, inside `slots.range`) is mapped by a level-2 block entry
/// with the RAM attributes, replaces that entry with a table of 4 KiB pages that leaves the
/// guard pages unmapped, and returns true; otherwise changes nothing and returns false.
fn replace_block_with_pages(
    mapping: &Mapping<PoolTranslation, El1And0>,
    chunk: u64,
    slots: GuardedSlots,
) -> bool {
    let ram = VALID | NORMAL | XN | El1Attributes::ACCESSED;
    let mut entry_address = None;
    let probe = MemoryRegion::new(chunk as usize, (chunk + PAGE) as usize);
    let walked = mapping.walk_range(&probe, &mut |_, descriptor, level| {
        if level == 2
            && descriptor.is_valid()
            && !descriptor.is_table_or_page()
            && descriptor.flags() == ram
            && descriptor.output_address().0 as u64 == chunk
        {
            entry_address = Some(core::ptr::from_ref(descriptor).addr());
        }
        Ok(())
    });
    let Some(entry_address) = entry_address.filter(|_| walked.is_ok()) else {
        return false;
    };
    let pool_start = core::ptr::addr_of!(POOL).addr();
    let offset = entry_address.wrapping_sub(pool_start);
    if offset >= POOL_PAGES * PAGE as usize || offset % 8 != 0 {
        return false;
    }
    let table = take_page().cast::<u64>();
    let table_address = table as u64;
    let page_bits = (ram | El1Attributes::TABLE_OR_PAGE).bits() as u64;
    // Slot by slot (the caller checked that slots tile the 2 MiB): invalid entries for the
    // guard, then the stack's pages. Volatile stores keep the compiler from turning the short
    // runs into `memset` calls.
    let per_slot = (slots.slot / PAGE) as usize;
    let guard_pages = (slots.guard / PAGE) as usize;
    let mut value = chunk | page_bits;
    let mut slot = 0;
    while slot < ENTRIES {
        for j in slot..slot + guard_pages {
            // SAFETY: `table` is a fresh, page-aligned pool page of `ENTRIES` entries that
            // nothing else references yet (`take_page`); `j` < `ENTRIES` as slots tile it.
            unsafe { table.add(j).write_volatile(0) };
        }
        value += slots.guard;
        for j in slot + guard_pages..slot + per_slot {
            // SAFETY: as above.
            unsafe { table.add(j).write_volatile(value) };
            value += PAGE;
        }
        slot += per_slot;
    }
    let table_bits = (VALID | El1Attributes::TABLE_OR_PAGE).bits() as u64;
    // SAFETY: the entry lies in the pool (checked above), which only this module writes, and
    // is 8-byte aligned; the MMU is off, so no walker caches the old block entry. The pointer
    // is derived from the pool itself, not from the crate's shared reference.
    unsafe {
        let entry = core::ptr::addr_of_mut!(POOL)
            .cast::<u8>()
            .add(offset)
            .cast::<u64>();
        entry.write_volatile(table_address | table_bits);
    }
    true
}

/// TCR_EL1: 39-bit VA for TTBR0 (T0SZ = 25), 4 KiB granule, inner-shareable write-back walks,
/// TTBR1 walks disabled (EPD1), physical address size from ID_AA64MMFR0_EL1.PARange.
fn tcr_value() -> u64 {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effect.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack)) };
    let ips = (mmfr0 & 0xf).min(5);
    let t0sz = 25;
    let irgn0 = 1 << 8;
    let orgn0 = 1 << 10;
    let sh0 = 3 << 12;
    let epd1 = 1 << 23;
    t0sz | irgn0 | orgn0 | sh0 | epd1 | (ips << 32)
}

/// The current SCTLR_EL1 with the MMU (M), data cache (C) and instruction cache (I) enabled,
/// alignment checking (A) off and write-implies-execute-never (WXN) off.
fn sctlr_with_mmu() -> u64 {
    let sctlr: u64;
    // SAFETY: reading SCTLR_EL1 has no side effect.
    unsafe { asm!("mrs {}, sctlr_el1", out(reg) sctlr, options(nomem, nostack)) };
    (sctlr | 1 | (1 << 2) | (1 << 12)) & !((1 << 1) | (1 << 19))
}

/// Loads the translation registers and turns the MMU on (*this CPU*).
///
/// # Safety
///
/// `config` must describe a valid map that identity-maps the code that is running.
pub unsafe fn turn_on(config: &MmuConfig) {
    // SAFETY: per the caller, the tables identity-map this code, so the instruction after the
    // SCTLR write is fetched from the same address through the new map.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "tlbi vmalle1",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) config.mair,
            tcr = in(reg) config.tcr,
            ttbr0 = in(reg) config.ttbr0,
            sctlr = in(reg) config.sctlr,
            options(nostack),
        )
    };
}

/// Translates `va` with the current map for a kernel write (`at s1e1w`) and reports whether it
/// is mapped writable. Used by tests of the map's permissions.
pub fn is_writable(va: u64) -> bool {
    let par: u64;
    // SAFETY: address translation instructions only update PAR_EL1.
    unsafe {
        asm!("at s1e1w, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par,
             options(nostack))
    };
    par & 1 == 0
}
