//! The names of the symbols the kernel exports for outside readers, defined once.
//!
//! The kernel's statics take their link names from [`kvm_symbol!`](crate::kvm_symbol) (as
//! `#[unsafe(export_name = kvm_symbol!(...))]`), and the reader looks them up through the
//! constants below, which expand the same macro: a renamed symbol changes both sides at once.
//! `cargo xtask` checks after every link that each name in [`REQUIRED`] is in the image.
//!
//! Two of them are filled in by `cargo xtask` after linking, so they live here: the build id
//! ([`kern_build_id`]) and the embedded symbol table ([`kern_kvm_symtab`], see
//! [`symtab`](super::symtab)). Both have non-zero initial values so that they are stored in
//! the image file (`.data`), where the post-link step can patch them, rather than in `.bss`.

use core::cell::UnsafeCell;

use super::symtab::{SYMTAB_BYTES, SymtabImage};

/// The link name of an exported kernel symbol, as a string literal (usable in attributes).
#[macro_export]
macro_rules! kvm_symbol {
    (maxcpus) => {
        "kern_maxcpus"
    };
    (ncpu) => {
        "kern_ncpu"
    };
    (cpu_info_ptrs) => {
        "kern_cpu_info_ptrs"
    };
    (cpuinfo_layout) => {
        "kern_cpuinfo_layout"
    };
    (cpuinfo_size) => {
        "kern_cpuinfo_size"
    };
    (dpcpu_off) => {
        "kern_dpcpu_off"
    };
    (build_id) => {
        "kern_build_id"
    };
    (symtab) => {
        "kern_kvm_symtab"
    };
    (dpcpu_start) => {
        "__dpcpu_start"
    };
    (dpcpu_end) => {
        "__dpcpu_end"
    };
    (dpcpu_prefix) => {
        "dpcpu_entry_"
    };
}

/// `u32`: the largest CPU count the kernel supports.
pub const MAXCPUS: &str = kvm_symbol!(maxcpus);
/// `u32`: CPUs attached.
pub const NCPU: &str = kvm_symbol!(ncpu);
/// `[u64; maxcpus]`: CPU index to `CpuInfo` address, 0 if absent.
pub const CPU_INFO_PTRS: &str = kvm_symbol!(cpu_info_ptrs);
/// `u32`: the `CpuInfo` layout version.
pub const CPUINFO_LAYOUT: &str = kvm_symbol!(cpuinfo_layout);
/// `u32`: `size_of::<CpuInfo>()`.
pub const CPUINFO_SIZE: &str = kvm_symbol!(cpuinfo_size);
/// `[u64; maxcpus]`: DPCPU offsets, 0 if no copy.
pub const DPCPU_OFF: &str = kvm_symbol!(dpcpu_off);
/// `[u8; 16]`: the build id, filled in by `cargo xtask` after linking.
pub const BUILD_ID: &str = kvm_symbol!(build_id);
/// The embedded symbol table, filled in by `cargo xtask` after linking.
pub const SYMTAB: &str = kvm_symbol!(symtab);
/// Start of the DPCPU template section (linker script).
pub const DPCPU_START: &str = kvm_symbol!(dpcpu_start);
/// End of the DPCPU template section (linker script).
pub const DPCPU_END: &str = kvm_symbol!(dpcpu_end);
/// Prefix of every DPCPU variable's symbol (`dpcpu_entry_<NAME>`, FreeBSD's `pcpu_entry_`).
pub const DPCPU_PREFIX: &str = kvm_symbol!(dpcpu_prefix);

/// Every symbol a kernel image must export for the reader to work.
pub const REQUIRED: &[&str] = &[
    MAXCPUS,
    NCPU,
    CPU_INFO_PTRS,
    CPUINFO_LAYOUT,
    CPUINFO_SIZE,
    DPCPU_OFF,
    BUILD_ID,
    SYMTAB,
    DPCPU_START,
    DPCPU_END,
];

/// Whether `name` belongs in the embedded symbol table: the exported `kern_*` symbols, the
/// DPCPU section bounds and every DPCPU variable.
pub fn embeddable(name: &str) -> bool {
    name.starts_with("kern_")
        || name == DPCPU_START
        || name == DPCPU_END
        || name.starts_with(DPCPU_PREFIX)
}

/// Length of the build id in bytes.
pub const BUILD_ID_LEN: usize = 16;

/// The build id's value in an image that `cargo xtask` has not patched.
pub const BUILD_ID_UNPATCHED: [u8; BUILD_ID_LEN] = *b"unpatched-build!";

/// A value patched into the image file after linking: the program never writes it, but its
/// content is not the initialiser the compiler saw, so it is read with volatile loads (never
/// constant-folded).
#[repr(transparent)]
pub struct Patched<T>(UnsafeCell<T>);

// SAFETY: the kernel never writes a `Patched` value; every access is a read.
unsafe impl<T: Sync> Sync for Patched<T> {}

impl<T: Copy> Patched<T> {
    /// The initial value, to be replaced in the image file.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// The value as stored in memory.
    pub fn get(&self) -> T {
        // SAFETY: the cell is valid for reads for the life of the program and nobody writes it
        // at run time; a volatile read sees what the post-link step stored.
        unsafe { core::ptr::read_volatile(self.0.get()) }
    }

    /// The value as stored in memory, by reference (for large values such as the symbol
    /// table, which would not fit a thread stack several times over). The cell is an exported,
    /// interior-mutable static, so the compiler cannot assume its initial value.
    pub fn get_ref(&self) -> &T {
        // SAFETY: as in `get`: valid for reads forever, never written at run time.
        unsafe { &*self.0.get() }
    }

    /// Address of the value.
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

/// Exported: the build id (16 bytes), a hash of the image's loadable bytes computed and stored
/// by `cargo xtask` after linking. The reader compares the kernel ELF's copy with the one in
/// the dump or guest memory, so a dump is never read with the wrong kernel.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = kvm_symbol!(build_id))]
#[used]
pub static kern_build_id: Patched<[u8; BUILD_ID_LEN]> = Patched::new(BUILD_ID_UNPATCHED);

/// Exported: the embedded symbol table (see [`symtab`](super::symtab)), filled by `cargo xtask`
/// after linking so that the kernel can run `nlist` on itself.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = kvm_symbol!(symtab))]
#[used]
pub static kern_kvm_symtab: Patched<SymtabImage> = Patched::new(SymtabImage::EMPTY);

/// This kernel's build id, as patched into the image.
pub fn build_id() -> [u8; BUILD_ID_LEN] {
    kern_build_id.get()
}

/// The embedded symbol table's bytes, as patched into the image.
pub fn symtab_bytes() -> &'static [u8; SYMTAB_BYTES] {
    &kern_kvm_symtab.get_ref().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(CPU_INFO_PTRS, "kern_cpu_info_ptrs");
        assert_eq!(DPCPU_PREFIX, "dpcpu_entry_");
        assert!(REQUIRED.iter().all(|n| embeddable(n)));
        assert!(!embeddable("kernel_main"));
        assert!(embeddable("dpcpu_entry_NEXT_TICK"));
    }

    #[test]
    fn unpatched_values_are_not_zero_so_they_live_in_data() {
        assert!(BUILD_ID_UNPATCHED.iter().any(|&b| b != 0));
        assert!(symtab_bytes().iter().any(|&b| b != 0));
        assert_eq!(build_id(), BUILD_ID_UNPATCHED);
    }
}
