//! DPCPU: dynamic per-CPU storage, as in FreeBSD's `DPCPU_DEFINE`.
//!
//! [`dpcpu_define!`] puts a variable in the `.dpcpu` linker section. That section is only a
//! template: at boot ([`init`]) every attached CPU gets its own copy of the whole section, and
//! the offset table [`kern_dpcpu_off`] records `copy address - section start` per CPU (also
//! cached in each `CpuInfo::dpcpu_off`). A variable's address on CPU n is therefore its symbol
//! address plus `kern_dpcpu_off[n]` ([`copy_address`]); the kvm reader does the same sum on a
//! crash dump, using the exported section bounds `__dpcpu_start`/`__dpcpu_end` from the linker
//! script and each variable's exported symbol `dpcpu_entry_<name>`.
//!
//! Values must be `Sync`: other CPUs may read a CPU's copy ([`Dpcpu::on_cpu`]), so per-CPU
//! counters are atomics, and anything richer sits behind a lock. Access to "this CPU's copy"
//! ([`Dpcpu::get`]) is only meaningful while the caller cannot migrate to another CPU, which
//! is always true until the scheduler exists, and afterwards needs preemption disabled.

use core::sync::atomic::AtomicU64;

use crate::cpu::MAXCPUS;

/// Exported: DPCPU offset of each CPU (copy address minus `__dpcpu_start`), 0 for CPUs without
/// a copy (FreeBSD's `dpcpu_off`).
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(dpcpu_off))]
#[used]
pub static kern_dpcpu_off: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

/// A per-CPU variable; create it with [`dpcpu_define!`], never directly.
#[repr(transparent)]
pub struct Dpcpu<T> {
    template: T,
}

impl<T: Sync> Dpcpu<T> {
    /// Wraps the template value. Used by [`dpcpu_define!`].
    pub const fn new(template: T) -> Self {
        Self { template }
    }

    /// Address of the template (the symbol address a dump's symbol table shows).
    pub fn template_address(&self) -> u64 {
        &self.template as *const T as u64
    }

    /// CPU `cpu`'s copy.
    ///
    /// Panics if `cpu` has no copy (not attached, or called before [`init`]).
    /// Context: any.
    #[cfg(target_arch = "aarch64")]
    pub fn on_cpu(&'static self, cpu: usize) -> &'static T {
        use core::sync::atomic::Ordering;
        let off = kern_dpcpu_off
            .get(cpu)
            .map(|o| o.load(Ordering::Acquire))
            .unwrap_or(0);
        assert!(off != 0, "Dpcpu::on_cpu: CPU {cpu} has no DPCPU copy");
        // SAFETY: `init` copied the whole template section for this CPU at offset `off`, so
        // the address holds a valid, initialised `T` that lives forever; `T: Sync` makes
        // shared access from any CPU sound.
        unsafe { &*(copy_address(self.template_address(), off) as *const T) }
    }

    /// This CPU's copy. Context: any, while the caller stays on this CPU.
    #[cfg(target_arch = "aarch64")]
    #[inline]
    pub fn get(&'static self) -> &'static T {
        use core::sync::atomic::Ordering;
        let off = crate::cpu::curcpu().dpcpu_off.load(Ordering::Relaxed);
        debug_assert!(off != 0, "Dpcpu::get before percpu::init");
        // SAFETY: as in `on_cpu`; `curcpu().dpcpu_off` was set by `init` for this CPU.
        unsafe { &*(copy_address(self.template_address(), off) as *const T) }
    }
}

/// Defines a DPCPU variable: `dpcpu_define!(pub static NAME: Type = init;)`.
///
/// The value is the template every CPU's copy starts from. The symbol is exported as
/// `dpcpu_entry_NAME` so a debugger or the kvm reader can find it.
#[macro_export]
macro_rules! dpcpu_define {
    ($(#[$m:meta])* $vis:vis static $name:ident : $ty:ty = $init:expr ;) => {
        $(#[$m])*
        #[cfg_attr(target_os = "none", unsafe(link_section = ".dpcpu"))]
        #[unsafe(export_name = concat!($crate::kvm_symbol!(dpcpu_prefix), stringify!($name)))]
        $vis static $name: $crate::percpu::Dpcpu<$ty> = $crate::percpu::Dpcpu::new($init);
    };
}

/// The address of a DPCPU variable's copy: symbol address plus the CPU's offset. Wrapping,
/// because offsets are stored as unsigned differences (FreeBSD's convention).
pub const fn copy_address(symbol: u64, dpcpu_off: u64) -> u64 {
    symbol.wrapping_add(dpcpu_off)
}

/// Whether `addr` lies in the DPCPU template section `[start, end)`.
pub const fn in_section(addr: u64, start: u64, end: u64) -> bool {
    addr >= start && addr < end
}

#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    static __dpcpu_start: u8;
    static __dpcpu_end: u8;
}

/// The bounds of the `.dpcpu` template section.
#[cfg(target_arch = "aarch64")]
pub fn section() -> (u64, u64) {
    // Linker-script symbols: only their addresses are taken, which needs no `unsafe`.
    (
        core::ptr::addr_of!(__dpcpu_start) as u64,
        core::ptr::addr_of!(__dpcpu_end) as u64,
    )
}

/// Gives every attached CPU its copy of the template section and records the offsets.
/// Boot CPU only, after the heap exists and the CPUs are attached, before secondaries start.
#[cfg(target_arch = "aarch64")]
pub fn init() {
    use core::sync::atomic::Ordering;
    let (start, end) = section();
    // Even an empty section gets a (one-line) copy, so every offset is non-zero.
    let size = ((end - start) as usize).max(64);
    let layout = core::alloc::Layout::from_size_align(size, 4096).expect("dpcpu layout");
    for ci in crate::cpu::cpus() {
        // SAFETY: non-zero size; the copy is never freed (it lives as long as the CPU).
        let copy = unsafe { alloc::alloc::alloc_zeroed(layout) };
        assert!(
            !copy.is_null(),
            "percpu::init: out of memory for CPU {}",
            ci.index()
        );
        // SAFETY: source is the linked template section of `end - start` bytes, destination a
        // fresh allocation of at least that size; they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(start as *const u8, copy, (end - start) as usize) };
        let off = (copy as u64).wrapping_sub(start);
        kern_dpcpu_off[ci.index()].store(off, Ordering::Release);
        ci.dpcpu_off.store(off, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_address_adds_the_cpu_offset() {
        assert_eq!(copy_address(0x4020_1000, 0x1000_0000), 0x5020_1000);
    }

    #[test]
    fn copy_address_wraps_like_an_unsigned_difference() {
        // A copy below the template: offset stored as a wrapped negative difference.
        let off = 0x4000_0000u64.wrapping_sub(0x4020_0000);
        assert_eq!(copy_address(0x4020_0010, off), 0x4000_0010);
    }

    #[test]
    fn in_section_is_half_open() {
        assert!(in_section(0x100, 0x100, 0x200));
        assert!(in_section(0x1ff, 0x100, 0x200));
        assert!(!in_section(0x200, 0x100, 0x200));
        assert!(!in_section(0xff, 0x100, 0x200));
    }

    dpcpu_define!(
        static TEST_COUNTER: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(7);
    );

    #[test]
    fn template_keeps_its_initial_value() {
        use core::sync::atomic::Ordering;
        assert_eq!(TEST_COUNTER.template.load(Ordering::Relaxed), 7);
        assert_ne!(TEST_COUNTER.template_address(), 0);
    }
}
