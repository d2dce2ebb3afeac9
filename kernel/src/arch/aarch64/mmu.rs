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
//! bump allocator; tables are never freed because the map lives as long as the kernel.
//!
//! Secondary CPUs reuse the same tables: [`MmuConfig`] carries MAIR/TCR/TTBR0/SCTLR to the
//! trampoline in `secondary.rs`, which turns the MMU on before touching the stack.

use crate::platform::PhysRange;
use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use core::arch::asm;
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

/// The page-table pool. Only [`PoolTranslation`] touches it, on the boot CPU, before SMP.
static mut POOL: Pool = Pool([[0; 4096]; POOL_PAGES]);
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// Hands out zeroed pages from [`POOL`]. Identity mapped, so physical = virtual.
struct PoolTranslation;

impl Translation<El1Attributes> for PoolTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El1Attributes>>, PhysicalAddress) {
        // A load and a store, not `fetch_add`: this runs with the MMU off, where exclusives
        // are not reliable on real hardware, and only ever on the boot CPU before SMP.
        let index = POOL_USED.load(Ordering::Relaxed);
        POOL_USED.store(index + 1, Ordering::Relaxed);
        assert!(
            index < POOL_PAGES,
            "mmu: page-table pool exhausted ({POOL_PAGES} pages); raise POOL_PAGES"
        );
        // SAFETY: each index is handed out once, so this page has no other user; the pool is
        // a static and lives forever. The pages start zeroed (bss) and are never freed.
        let page = unsafe { core::ptr::addr_of_mut!(POOL.0[index]) };
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
/// pages `guard_pages` reports are left unmapped. `ram`
/// must cover the kernel image and the stack in use, and `devices` every MMIO range the kernel
/// touches afterwards, or the next access faults.
pub unsafe fn enable(
    ram: &[PhysRange],
    image: &ImageLayout,
    devices: &[PhysRange],
    guard_pages: impl FnOnce(&mut dyn FnMut(PhysRange)),
) -> Result<MmuConfig, MapFailed> {
    let mut mapping =
        Mapping::with_asid_and_va_range(PoolTranslation, 0, 1, El1And0, VaRange::Lower);
    for &r in ram {
        map(&mut mapping, "RAM", r, VALID | NORMAL | XN)?;
    }
    for &d in devices {
        map(&mut mapping, "device", d, VALID | DEVICE | XN)?;
    }
    // The image last: these split the RAM blocks into pages with tighter permissions.
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
    // Guard pages: entries written invalid, so any access faults.
    let mut result = Ok(());
    guard_pages(&mut |page| {
        if result.is_ok() {
            result = map(&mut mapping, "guard page", page, NORMAL | XN);
        }
    });
    result?;

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
