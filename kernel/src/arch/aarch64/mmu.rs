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
//! Cost, which every boot pays (under `-icount` each guest instruction counts): the crate
//! writes an entry for about 75 guest instructions, and mapping the image over RAM's blocks
//! made it split a 1 GiB block and a 2 MiB block entry by entry, while one `map_range` per
//! thread-stack guard page (1024 of them) cost about 775 each, 0.8 M in all. So the crate maps
//! RAM (in blocks) and the devices, and the finer pages are written here, straight into
//! level-3 tables of the pool ([`level3_table`]): the crate's `walk_range` says where the entry
//! that maps a 2 MiB lies, and it lies in [`POOL`], which only this module writes; a level-1 or
//! level-2 block found there is split by filling a pool page with the 512 entries of the next
//! level (the block's attributes, two entries per store) and replacing the block entry with a
//! table entry, with plain stores. Into those tables go the image's pages (text read-only and
//! executable, rodata read-only, data read-write) and the stack region's guard pages (invalid).
//! The crate walks these tables like its own (and maps over them on the fallback paths). What
//! cannot be done that way (memory not mapped by the pool's tables, stack-region ends that are
//! not 2 MiB aligned, slots that do not tile 2 MiB) goes through the crate. The `mmu` tests
//! check every page of the image's 2 MiB blocks and of the stack region.

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
    for &r in ram {
        map(&mut mapping, "RAM", r, VALID | NORMAL | XN)?;
    }
    for &d in devices {
        map(&mut mapping, "device", d, VALID | DEVICE | XN)?;
    }
    // The image: its pages go straight into level-3 tables split from RAM's blocks (see the
    // module doc), or through the crate where that cannot be done.
    let sections = [
        (
            "text",
            image.text,
            VALID | NORMAL | El1Attributes::READ_ONLY,
        ),
        (
            "rodata",
            image.rodata,
            VALID | NORMAL | El1Attributes::READ_ONLY | XN,
        ),
        ("data", image.data, VALID | NORMAL | XN),
    ];
    if !map_pages_direct(&mapping, &sections) {
        for (what, range, attrs) in sections {
            map(&mut mapping, what, range, attrs)?;
        }
    }
    // Guard pages: entries written invalid, so any access faults.
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

/// Maps `slots`' guard pages invalid over the RAM mapping already in `mapping`: straight into
/// level-3 tables where slots tile each 2 MiB, else through the crate page by page.
fn map_guarded_slots(
    mapping: &mut Mapping<PoolTranslation, El1And0>,
    slots: GuardedSlots,
) -> Result<(), MapFailed> {
    let range = slots.range;
    if range.size == 0 {
        return Ok(());
    }
    let per_slot = (slots.slot / PAGE) as usize;
    let guard_pages = (slots.guard / PAGE) as usize;
    let mut chunk = range.start & !(BLOCK_2M - 1);
    while chunk < range.end() {
        let tiled = chunk >= range.start
            && chunk + BLOCK_2M <= range.end()
            && BLOCK_2M.is_multiple_of(slots.slot)
            && (chunk - range.start).is_multiple_of(slots.slot);
        if let Some(table) = tiled.then(|| level3_table(mapping, chunk)).flatten() {
            for slot in (0..ENTRIES).step_by(per_slot) {
                for j in slot..slot + guard_pages {
                    // SAFETY: a level-3 table of the pool (`level3_table`), `ENTRIES` long;
                    // `j` < `ENTRIES` as the slots tile it.
                    unsafe { table.add(j).write_volatile(0) };
                }
            }
        } else {
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

/// Writes the pages of each `(name, range, attributes)` straight into the level-3 tables that
/// map them ([`level3_table`]). Returns false if some 2 MiB of them has no such table (the
/// caller then maps them all through the crate, which rewrites what was written here).
fn map_pages_direct(
    mapping: &Mapping<PoolTranslation, El1And0>,
    sections: &[(&str, PhysRange, El1Attributes)],
) -> bool {
    for &(_, range, attrs) in sections {
        let bits = (attrs | El1Attributes::ACCESSED | El1Attributes::TABLE_OR_PAGE).bits() as u64;
        let mut page = range.start & !(PAGE - 1);
        let end = (range.end() + PAGE - 1) & !(PAGE - 1);
        while page < end {
            let chunk = page & !(BLOCK_2M - 1);
            let Some(table) = level3_table(mapping, chunk) else {
                return false;
            };
            while page < end.min(chunk + BLOCK_2M) {
                // SAFETY: a level-3 table of the pool, `ENTRIES` long; the index is below
                // `ENTRIES` as `page` lies in the 2 MiB at `chunk`.
                unsafe {
                    table
                        .add(((page - chunk) / PAGE) as usize)
                        .write_volatile(page | bits)
                };
                page += PAGE;
            }
        }
    }
    true
}

/// Bits of a descriptor that hold the output address (47:12).
const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;
/// Bit 1 of a descriptor: a table at levels 1 and 2, a page at level 3 (clear in a block).
const TABLE_OR_PAGE: u64 = El1Attributes::TABLE_OR_PAGE.bits() as u64;

/// Bytes one entry maps at `level` (1: 1 GiB, 2: 2 MiB, 3: 4 KiB).
const fn granule(level: usize) -> u64 {
    PAGE << (9 * (3 - level))
}

/// The entry at byte `offset` of the pool.
fn pool_entry(offset: usize) -> *mut u64 {
    // SAFETY: callers pass offsets below the pool's size (`entry_offset`, `take_page`); the
    // pointer is derived from the pool itself.
    unsafe {
        core::ptr::addr_of_mut!(POOL)
            .cast::<u8>()
            .add(offset)
            .cast::<u64>()
    }
}

/// The pool offset of the deepest entry the crate's walk reaches for the page at `addr`, with
/// its level; `None` if the walk fails or the entry is not in the pool.
fn entry_offset(mapping: &Mapping<PoolTranslation, El1And0>, addr: u64) -> Option<(usize, usize)> {
    let mut found = None;
    let probe = MemoryRegion::new(addr as usize, (addr + PAGE) as usize);
    mapping
        .walk_range(&probe, &mut |_, descriptor, level| {
            found = Some((core::ptr::from_ref(descriptor).addr(), level));
            Ok(())
        })
        .ok()?;
    let (address, level) = found?;
    let offset = address.wrapping_sub(core::ptr::addr_of!(POOL).addr());
    (offset < POOL_PAGES * PAGE as usize && offset.is_multiple_of(8)).then_some((offset, level))
}

/// The level-3 table that maps the 2 MiB at `chunk` (aligned), made by splitting the level-1
/// or level-2 block that maps it if need be (each split writes a pool page of 512 entries with
/// the block's attributes, two per store, and replaces the block entry with a table entry);
/// `None` if that memory is not mapped.
fn level3_table(mapping: &Mapping<PoolTranslation, El1And0>, chunk: u64) -> Option<*mut u64> {
    // At most two splits: level 1 to 2, then 2 to 3.
    for _ in 0..3 {
        let (offset, level) = entry_offset(mapping, chunk)?;
        let entry = pool_entry(offset);
        // SAFETY: an entry of the pool (`entry_offset`).
        let bits = unsafe { entry.read_volatile() };
        if bits & VALID.bits() as u64 == 0 {
            return None;
        }
        if level == 3 {
            return Some(pool_entry(offset & !(PAGE as usize - 1)));
        }
        if !(1..3).contains(&level) {
            return None;
        }
        // A block (the walk goes down through tables): split it one level down.
        let base = bits & OUTPUT_ADDRESS & !(granule(level) - 1);
        let attrs = bits & !OUTPUT_ADDRESS & !TABLE_OR_PAGE;
        let attrs = if level + 1 == 3 {
            attrs | TABLE_OR_PAGE
        } else {
            attrs
        };
        let table = take_page();
        let step = granule(level + 1);
        let pairs = table.cast::<u128>();
        let mut value = base | attrs;
        for pair in 0..ENTRIES / 2 {
            let both = u128::from(value) | (u128::from(value + step) << 64);
            // SAFETY: a fresh, page-aligned (so 16-byte aligned) pool page that nothing else
            // references yet (`take_page`); `pair` < `ENTRIES / 2`. Volatile keeps the
            // compiler from replacing the loop with a call.
            unsafe { pairs.add(pair).write_volatile(both) };
            value += 2 * step;
        }
        // SAFETY: the block entry found above, in the pool, which only this module writes;
        // the MMU is off, so no walker holds the old entry.
        unsafe { entry.write_volatile(table as u64 | VALID.bits() as u64 | TABLE_OR_PAGE) };
    }
    None
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

/// Translates `va` with the current map for a kernel read (`at s1e1r`) and reports whether it
/// is mapped. Used by tests of the map's permissions.
pub fn is_readable(va: u64) -> bool {
    let par: u64;
    // SAFETY: address translation instructions only update PAR_EL1.
    unsafe {
        asm!("at s1e1r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par,
             options(nostack))
    };
    par & 1 == 0
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
