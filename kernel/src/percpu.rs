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
//! Because a CPU that silently shares another's copy only shows up later as a hang, the copies
//! are checked before anything depends on them: [`check_copies`] on the boot CPU right after
//! [`init`] (every attached CPU has a copy of its own, none overlapping another), and
//! [`check_this_cpu`] on each CPU as it comes online (its `curcpu()` has its own offset). Both
//! panic with a message naming the CPUs.
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

/// Bytes in each CPU's copy of a template section of `section_size` bytes (an empty section
/// still gets a line, so that every offset is non-zero).
pub const fn copy_size(section_size: u64) -> u64 {
    if section_size > 64 { section_size } else { 64 }
}

/// What is wrong with a set of DPCPU copies (see [`find_copy_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFault {
    /// The CPU has no copy: offset 0, which would make it use the template.
    NoCopy {
        /// The CPU.
        cpu: usize,
    },
    /// Two CPUs have the same offset: one copy for both.
    Shared {
        /// The first CPU.
        a: usize,
        /// The second CPU.
        b: usize,
        /// Their offset.
        off: u64,
    },
    /// The copies of two CPUs overlap.
    Overlap {
        /// The first CPU.
        a: usize,
        /// Start of its copy.
        a_start: u64,
        /// The second CPU.
        b: usize,
        /// Start of its copy.
        b_start: u64,
        /// Bytes in each copy.
        size: u64,
    },
    /// A CPU's copy overlaps the template section itself.
    OverlapsTemplate {
        /// The CPU.
        cpu: usize,
        /// Start of its copy.
        start: u64,
    },
}

impl core::fmt::Display for CopyFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            CopyFault::NoCopy { cpu } => write!(f, "cpu{cpu} has no DPCPU copy (offset 0)"),
            CopyFault::Shared { a, b, off } => {
                write!(
                    f,
                    "cpu{a} and cpu{b} share one DPCPU copy (both at offset {off:#x})"
                )
            }
            CopyFault::Overlap {
                a,
                a_start,
                b,
                b_start,
                size,
            } => write!(
                f,
                "the DPCPU copies of cpu{a} ({a_start:#x}..{:#x}) and cpu{b} ({b_start:#x}..{:#x}) \
                 overlap",
                a_start.wrapping_add(size),
                b_start.wrapping_add(size)
            ),
            CopyFault::OverlapsTemplate { cpu, start } => write!(
                f,
                "the DPCPU copy of cpu{cpu} (at {start:#x}) overlaps the template section"
            ),
        }
    }
}

/// Checks a set of copies: `offsets` holds `(cpu, offset)` for each CPU that should have one,
/// of a template section at `start` of `section_size` bytes. Every offset must be non-zero and
/// distinct, and the copies (each [`copy_size`] bytes) must overlap neither each other nor the
/// template. Returns the first fault found.
pub fn find_copy_fault(
    offsets: &[(usize, u64)],
    start: u64,
    section_size: u64,
) -> Option<CopyFault> {
    let size = copy_size(section_size);
    let overlaps = |a: u64, b: u64| a < b.wrapping_add(size) && b < a.wrapping_add(size);
    for (i, &(a, a_off)) in offsets.iter().enumerate() {
        if a_off == 0 {
            return Some(CopyFault::NoCopy { cpu: a });
        }
        let a_start = copy_address(start, a_off);
        if overlaps(a_start, start) {
            return Some(CopyFault::OverlapsTemplate {
                cpu: a,
                start: a_start,
            });
        }
        for &(b, b_off) in &offsets[..i] {
            if b_off == a_off {
                return Some(CopyFault::Shared {
                    a: b,
                    b: a,
                    off: a_off,
                });
            }
            let b_start = copy_address(start, b_off);
            if overlaps(a_start, b_start) {
                return Some(CopyFault::Overlap {
                    a: b,
                    a_start: b_start,
                    b: a,
                    b_start: a_start,
                    size,
                });
            }
        }
    }
    None
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
    let size = copy_size(end - start) as usize;
    let layout = core::alloc::Layout::from_size_align(size, 4096).expect("dpcpu layout");
    let template = (end - start) as usize;
    for ci in crate::cpu::cpus() {
        // Not `alloc_zeroed`: the copy overwrites the template's bytes, only the rest (an empty
        // section's line) needs zeroing.
        // SAFETY: non-zero size; the copy is never freed (it lives as long as the CPU).
        let copy = unsafe { alloc::alloc::alloc(layout) };
        assert!(
            !copy.is_null(),
            "percpu::init: out of memory for CPU {}",
            ci.index()
        );
        // SAFETY: source is the linked template section of `template` bytes, destination a
        // fresh allocation of `size` >= `template` bytes; they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(start as *const u8, copy, template);
            core::ptr::write_bytes(copy.add(template), 0, size - template);
        }
        let off = (copy as u64).wrapping_sub(start);
        kern_dpcpu_off[ci.index()].store(off, Ordering::Release);
        ci.dpcpu_off.store(off, Ordering::Release);
    }
}

/// Checks what [`init`] did, before anything depends on it: every attached CPU has a non-zero
/// offset of its own in [`kern_dpcpu_off`], the same in its `CpuInfo::dpcpu_off`, and no copy
/// overlaps another or the template. Panics naming the CPUs otherwise. Boot CPU, right after
/// [`init`].
#[cfg(target_arch = "aarch64")]
pub fn check_copies() {
    use core::sync::atomic::Ordering;
    let mut offsets = [(0usize, 0u64); MAXCPUS];
    let mut n = 0;
    for ci in crate::cpu::cpus() {
        let cpu = ci.index();
        let off = kern_dpcpu_off[cpu].load(Ordering::Acquire);
        let cached = ci.dpcpu_off.load(Ordering::Acquire);
        assert!(
            cached == off,
            "percpu: cpu{cpu}'s cpu_info has DPCPU offset {cached:#x}, but kern_dpcpu_off[{cpu}] \
             is {off:#x}"
        );
        offsets[n] = (cpu, off);
        n += 1;
    }
    let (start, end) = section();
    if let Some(fault) = find_copy_fault(&offsets[..n], start, end - start) {
        panic!("percpu: {fault}");
    }
}

/// Checks, on a CPU coming online, that `curcpu()` has the DPCPU offset [`init`] recorded for
/// CPU `index` (the CPU this code was started as), and that it is non-zero. Panics naming the
/// CPU otherwise. Context: that CPU, right after `cpu::set_curcpu`.
#[cfg(target_arch = "aarch64")]
pub fn check_this_cpu(index: usize) {
    use core::sync::atomic::Ordering;
    let ci = crate::cpu::curcpu();
    let off = ci.dpcpu_off.load(Ordering::Acquire);
    let expected = kern_dpcpu_off
        .get(index)
        .map_or(0, |o| o.load(Ordering::Acquire));
    assert!(
        off != 0 && off == expected,
        "percpu: cpu{index} came online with DPCPU offset {off:#x} (curcpu() is cpu{}), but \
         kern_dpcpu_off[{index}] is {expected:#x}",
        ci.index()
    );
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

    const START: u64 = 0x4020_0000;

    #[test]
    fn distinct_copies_far_apart_pass_the_check() {
        let offsets = [(0, 0x1000_0000), (1, 0x1001_0000), (2, 0x1002_0000)];
        assert_eq!(find_copy_fault(&offsets, START, 0x1000), None);
    }

    #[test]
    fn a_cpu_without_a_copy_is_named() {
        let offsets = [(0, 0x1000_0000), (1, 0)];
        let fault = find_copy_fault(&offsets, START, 0x1000);
        assert_eq!(fault, Some(CopyFault::NoCopy { cpu: 1 }));
        assert_eq!(
            fault.unwrap().to_string(),
            "cpu1 has no DPCPU copy (offset 0)"
        );
    }

    #[test]
    fn cpus_sharing_one_copy_are_named() {
        let offsets = [(0, 0x1000_0000), (1, 0x1001_0000), (2, 0x1000_0000)];
        let fault = find_copy_fault(&offsets, START, 0x1000).unwrap();
        assert_eq!(
            fault,
            CopyFault::Shared {
                a: 0,
                b: 2,
                off: 0x1000_0000
            }
        );
        assert_eq!(
            fault.to_string(),
            "cpu0 and cpu2 share one DPCPU copy (both at offset 0x10000000)"
        );
    }

    #[test]
    fn overlapping_copies_are_named() {
        // Copies 0x800 apart, each 0x1000 long.
        let offsets = [(0, 0x1000_0000), (1, 0x1000_0800)];
        let fault = find_copy_fault(&offsets, START, 0x1000).unwrap();
        assert!(
            matches!(fault, CopyFault::Overlap { a: 0, b: 1, .. }),
            "{fault:?}"
        );
        assert_eq!(
            fault.to_string(),
            "the DPCPU copies of cpu0 (0x50200000..0x50201000) and cpu1 (0x50200800..0x50201800) \
             overlap"
        );
        // Adjacent is fine.
        let offsets = [(0, 0x1000_0000), (1, 0x1000_1000)];
        assert_eq!(find_copy_fault(&offsets, START, 0x1000), None);
    }

    #[test]
    fn a_copy_below_the_template_is_checked_with_wrapping_offsets() {
        let below = 0x4000_0000u64.wrapping_sub(START);
        let offsets = [(0, below), (1, below.wrapping_add(0x10))];
        assert!(matches!(
            find_copy_fault(&offsets, START, 0x100),
            Some(CopyFault::Overlap { a: 0, b: 1, .. })
        ));
        let overlapping_template = (START + 0x20).wrapping_sub(START);
        assert_eq!(
            find_copy_fault(&[(3, overlapping_template)], START, 0x100),
            Some(CopyFault::OverlapsTemplate {
                cpu: 3,
                start: START + 0x20
            })
        );
    }

    #[test]
    fn an_empty_section_still_gets_a_line_per_copy() {
        assert_eq!(copy_size(0), 64);
        assert_eq!(copy_size(0x1000), 0x1000);
        // Two empty copies 32 bytes apart overlap.
        let offsets = [(0, 0x1000_0000), (1, 0x1000_0020)];
        assert!(find_copy_fault(&offsets, START, 0).is_some());
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
