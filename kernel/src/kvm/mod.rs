//! kvm: FreeBSD libkvm's per-CPU API (`kvm_getmaxcpu`, `kvm_getpcpu`, `kvm_dpcpu_setcpu`,
//! `kvm_nlist`, `kvm_read`, `kvm_geterr`) over any [`Source`] of kernel memory and symbols.
//!
//! One code path reads a crash dump, a live QEMU guest (both sources live in xtask, on the
//! host) and the running kernel itself ([`local`]). The reader finds everything through the
//! exported symbols of [`symbols`]: `kern_maxcpus`, the CPU-to-`CpuInfo` pointer array
//! `kern_cpu_info_ptrs`, the DPCPU offsets `kern_dpcpu_off` and the section bounds
//! `__dpcpu_start`/`__dpcpu_end`. It decodes `CpuInfo` with the kernel's own definition
//! ([`CpuInfoSnapshot`]), and [`Kvm::open`] refuses a memory image whose build id differs from
//! the kernel ELF's, or whose `CpuInfo` layout version or size differs from this reader's, so
//! a mismatched kernel and dump are reported rather than misread.
//!
//! DPCPU (as in FreeBSD): a DPCPU variable's symbol is the address of its template in the
//! `.dpcpu` section; CPU n's copy is at that address plus `kern_dpcpu_off[n]`. The handle has a
//! "current CPU" (0 unless [`Kvm::dpcpu_setcpu`] chose another), and [`Kvm::nlist`] returns
//! every symbol inside the section already moved to that CPU's copy. A name that is not a
//! symbol is retried with the `dpcpu_entry_` prefix, so `nlist(["NEXT_TICK"])` works.
//!
//! Caching (the manual's CACHING section): `getmaxcpu` and `getpcpu` read `kern_maxcpus` and
//! the pointer array once and reuse them. Calling the C-style [`kvm_getmaxcpu`] or
//! [`kvm_getpcpu`] with no handle (`kd == NULL` in C) clears the cache of every handle: it bumps
//! a global generation number and each handle refills its cache when it sees a new one.
//! [`Kvm::clear_cache`] clears one handle's. The `CpuInfo` contents themselves are read afresh
//! on every call.
//!
//! Every failure is returned as a [`KvmError`] and also kept as text for [`Kvm::geterr`]; no
//! input, however broken, makes the reader panic.

pub mod error;
pub mod source;
pub mod symbols;
pub mod symtab;
pub mod trace;

#[cfg(target_arch = "aarch64")]
pub mod local;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::{CPUINFO_LAYOUT_VERSION, CpuInfoSnapshot};
use crate::percpu::{copy_address, find_copy_fault, in_section};
pub use error::KvmError;
pub use source::{Source, SymbolSection};
use symbols::{BUILD_ID_LEN, BUILD_ID_UNPATCHED};

/// The largest `kern_maxcpus` the reader believes; anything above is garbage.
pub const MAXCPU_LIMIT: u32 = 4096;

/// Generation of every handle's per-CPU cache; bumping it clears them all.
static CACHE_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Clears the per-CPU cache of every handle (what `kvm_getpcpu(NULL, ...)` does).
pub fn clear_all_caches() {
    CACHE_GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// What `getmaxcpu`/`getpcpu` cache.
#[derive(Debug)]
struct PcpuCache {
    generation: u64,
    maxcpu: u32,
    ptrs: Vec<u64>,
}

/// DPCPU state of a handle (FreeBSD's `kd->dpcpu_*`).
#[derive(Debug)]
struct DpcpuState {
    start: u64,
    end: u64,
    off: Vec<u64>,
    curcpu: u32,
    curoff: u64,
}

/// An open kernel: a [`Source`] plus the reader's caches and last error (FreeBSD's `kvm_t`).
#[derive(Debug)]
pub struct Kvm<S> {
    source: S,
    build_id: [u8; BUILD_ID_LEN],
    cache: Option<PcpuCache>,
    dpcpu: Option<DpcpuState>,
    error: String,
}

impl<S: Source> Kvm<S> {
    /// Opens `source`: checks that its memory holds the build the symbols describe and a
    /// `CpuInfo` layout this reader knows.
    pub fn open(mut source: S) -> Result<Self, KvmError> {
        let addr = require_sized(&mut source, symbols::BUILD_ID, BUILD_ID_LEN as u64)?;
        let mut memory = [0u8; BUILD_ID_LEN];
        source
            .read(addr, &mut memory)
            .map_err(|e| in_dump(symbols::BUILD_ID, e))?;
        if memory == BUILD_ID_UNPATCHED {
            return Err(KvmError::BuildIdUnset);
        }
        if let Some(image) = source.image_build_id()?
            && image != memory
        {
            return Err(KvmError::BuildIdMismatch { image, memory });
        }
        let layout = read_u32(&mut source, symbols::CPUINFO_LAYOUT)?;
        if layout != CPUINFO_LAYOUT_VERSION {
            return Err(KvmError::LayoutMismatch {
                found: layout,
                expected: CPUINFO_LAYOUT_VERSION,
            });
        }
        let size = read_u32(&mut source, symbols::CPUINFO_SIZE)?;
        if size as usize != CpuInfoSnapshot::SIZE {
            return Err(KvmError::SizeMismatch {
                found: size,
                expected: CpuInfoSnapshot::SIZE as u32,
            });
        }
        Ok(Self {
            source,
            build_id: memory,
            cache: None,
            dpcpu: None,
            error: String::new(),
        })
    }

    /// The build id of the kernel in memory.
    pub fn build_id(&self) -> [u8; BUILD_ID_LEN] {
        self.build_id
    }

    /// The source, e.g. to release it.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Closes the handle and gives the source back.
    pub fn into_source(self) -> S {
        self.source
    }

    /// The last error as text (`kvm_geterr`); empty if nothing failed yet.
    pub fn geterr(&self) -> &str {
        &self.error
    }

    /// Remembers a failure for [`Self::geterr`] and passes the result on.
    fn record<T>(&mut self, result: Result<T, KvmError>) -> Result<T, KvmError> {
        if let Err(e) = &result {
            self.error = e.to_string();
        }
        result
    }

    /// Forgets this handle's cached `kern_maxcpus` and pointer array.
    pub fn clear_cache(&mut self) {
        self.cache = None;
    }

    /// The cache, filled (again) if it is empty or another handle-less call cleared it.
    fn pcpu_cache(&mut self) -> Result<&PcpuCache, KvmError> {
        let generation = CACHE_GENERATION.load(Ordering::Acquire);
        if self
            .cache
            .as_ref()
            .is_none_or(|c| c.generation != generation)
        {
            self.cache = None;
            let maxcpu = read_u32(&mut self.source, symbols::MAXCPUS)?;
            if maxcpu == 0 || maxcpu > MAXCPU_LIMIT {
                return Err(KvmError::Implausible {
                    what: symbols::MAXCPUS,
                    value: maxcpu.into(),
                });
            }
            // The arrays are `[u64; MAXCPUS]` and kern_maxcpus is MAXCPUS: a count that
            // disagrees with the arrays the ELF declares would read past them.
            for array in [symbols::CPU_INFO_PTRS, symbols::DPCPU_OFF] {
                if let Some(size) = self.source.symbol_size(array)
                    && size != 0
                    && size != 8 * u64::from(maxcpu)
                {
                    return Err(KvmError::Inconsistent(format!(
                        "{} = {maxcpu} in memory, but {array} has {} entries ({size} bytes) in \
                         {}",
                        symbols::MAXCPUS,
                        size / 8,
                        self.source.symbol_origin()
                    )));
                }
            }
            let addr = require(&mut self.source, symbols::CPU_INFO_PTRS)?;
            let ptrs = read_u64_array(&mut self.source, addr, maxcpu as usize)
                .map_err(|e| in_dump(symbols::CPU_INFO_PTRS, e))?;
            check_attach_order(&ptrs)?;
            self.cache = Some(PcpuCache {
                generation,
                maxcpu,
                ptrs,
            });
        }
        match &self.cache {
            Some(cache) => Ok(cache),
            None => Err(KvmError::Inconsistent("per-CPU cache not filled".into())),
        }
    }

    /// The maximum number of CPUs the kernel supports (`kvm_getmaxcpu`).
    pub fn getmaxcpu(&mut self) -> Result<u32, KvmError> {
        let result = self.pcpu_cache().map(|c| c.maxcpu);
        self.record(result)
    }

    /// A copy of CPU `cpu`'s `CpuInfo` (`kvm_getpcpu`); `None` if the CPU is not active (the
    /// kernel never attached it); an error if `cpu` is out of range or the memory is not a
    /// `CpuInfo` of that CPU.
    pub fn getpcpu(&mut self, cpu: usize) -> Result<Option<CpuInfoSnapshot>, KvmError> {
        let result = self.getpcpu_signed(cpu as i64);
        self.record(result)
    }

    fn getpcpu_signed(&mut self, cpu: i64) -> Result<Option<CpuInfoSnapshot>, KvmError> {
        let cache = self.pcpu_cache()?;
        let maxcpu = cache.maxcpu;
        let ptr = match usize::try_from(cpu).ok().and_then(|i| cache.ptrs.get(i)) {
            Some(&ptr) => ptr,
            None => return Err(KvmError::CpuTooBig { cpu, maxcpu }),
        };
        if ptr == 0 {
            return Ok(None);
        }
        let mut bytes = [0u8; CpuInfoSnapshot::SIZE];
        self.source.read(ptr, &mut bytes).map_err(|e| {
            in_dump(
                &format!(
                    "the CpuInfo of CPU {cpu} ({}[{cpu}])",
                    symbols::CPU_INFO_PTRS
                ),
                e,
            )
        })?;
        let snap = CpuInfoSnapshot::from_bytes(&bytes)
            .ok_or_else(|| KvmError::Inconsistent("short CpuInfo".into()))?;
        if snap.self_addr != ptr || i64::from(snap.index) != cpu {
            return Err(KvmError::Inconsistent(format!(
                "the CpuInfo of CPU {cpu} at {ptr:#x} says it is CPU {} at {:#x} (wrong kernel \
                 or corrupt memory?)",
                snap.index, snap.self_addr
            )));
        }
        // Its DPCPU offset is also in the offset table: the two must agree.
        let table = require(&mut self.source, symbols::DPCPU_OFF)?;
        let slot = table.wrapping_add(8 * cpu as u64);
        let off = read_u64_array(&mut self.source, slot, 1)
            .map_err(|e| in_dump(symbols::DPCPU_OFF, e))?[0];
        if off != snap.dpcpu_off {
            return Err(KvmError::Inconsistent(format!(
                "CPU {cpu}: its CpuInfo says dpcpu_off = {:#x}, but {}[{cpu}] = {off:#x}",
                snap.dpcpu_off,
                symbols::DPCPU_OFF
            )));
        }
        Ok(Some(snap))
    }

    /// Reads the DPCPU symbols and offsets once (FreeBSD's `_kvm_dpcpu_init`) and selects
    /// CPU 0.
    fn dpcpu_init(&mut self) -> Result<&mut DpcpuState, KvmError> {
        if self.dpcpu.is_none() {
            let origin = self.source.symbol_origin().to_string();
            let mut bound = |name: &str| -> Result<u64, KvmError> {
                self.source.symbol(name)?.ok_or_else(|| {
                    KvmError::NotInitialised(format!("symbol {name} not found in {origin}"))
                })
            };
            let start = bound(symbols::DPCPU_START)?;
            let end = bound(symbols::DPCPU_END)?;
            check_dpcpu_bounds(&mut self.source, start, end)?;
            let maxcpu = self.pcpu_cache()?.maxcpu;
            let addr = require(&mut self.source, symbols::DPCPU_OFF)?;
            let off = read_u64_array(&mut self.source, addr, maxcpu as usize)
                .map_err(|e| in_dump(symbols::DPCPU_OFF, e))?;
            if off.iter().all(|&o| o == 0) {
                return Err(KvmError::NotInitialised(
                    "every offset in kern_dpcpu_off is zero (the kernel had not set DPCPU up)"
                        .into(),
                ));
            }
            // The kernel's own boot check: distinct offsets, copies that overlap neither each
            // other nor the template.
            let present: Vec<(usize, u64)> = off
                .iter()
                .enumerate()
                .filter(|&(_, &o)| o != 0)
                .map(|(cpu, &o)| (cpu, o))
                .collect();
            if let Some(fault) = find_copy_fault(&present, start, end - start) {
                return Err(KvmError::Inconsistent(format!(
                    "{}: {fault}",
                    symbols::DPCPU_OFF
                )));
            }
            // The template and every copy lie in memory the source holds (their first and last
            // bytes, at least): bounds from a broken symbol table would not.
            let mut byte = [0u8; 1];
            let mut holds = |source: &mut S, what: &str, first: u64, last: u64| {
                for addr in [first, last] {
                    source.read(addr, &mut byte).map_err(|e| {
                        KvmError::Inconsistent(format!(
                            "{what} ({first:#x}..={last:#x}) is not in memory: {e}"
                        ))
                    })?;
                }
                Ok::<(), KvmError>(())
            };
            holds(
                &mut self.source,
                "the DPCPU section (__dpcpu_start..__dpcpu_end)",
                start,
                end - 1,
            )?;
            for &(cpu, o) in &present {
                holds(
                    &mut self.source,
                    &format!("the DPCPU copy of CPU {cpu}"),
                    copy_address(start, o),
                    copy_address(end - 1, o),
                )?;
            }
            let curoff = off[0];
            self.dpcpu = Some(DpcpuState {
                start,
                end,
                off,
                curcpu: 0,
                curoff,
            });
        }
        match &mut self.dpcpu {
            Some(state) => Ok(state),
            None => Err(KvmError::NotInitialised("DPCPU state lost".into())),
        }
    }

    /// Selects the CPU whose DPCPU copies [`Self::nlist`] returns (`kvm_dpcpu_setcpu`).
    /// Errors: "CPU n too big", "CPU n not found" (no copy), "DPCPU not initialised".
    pub fn dpcpu_setcpu(&mut self, cpu: u32) -> Result<(), KvmError> {
        let result = self.dpcpu_setcpu_inner(cpu);
        self.record(result)
    }

    fn dpcpu_setcpu_inner(&mut self, cpu: u32) -> Result<(), KvmError> {
        let state = self.dpcpu_init()?;
        let off = match state.off.get(cpu as usize) {
            Some(&off) => off,
            None => {
                return Err(KvmError::CpuTooBig {
                    cpu: cpu.into(),
                    maxcpu: state.off.len() as u32,
                });
            }
        };
        if off == 0 {
            return Err(KvmError::CpuNotFound { cpu });
        }
        state.curcpu = cpu;
        state.curoff = off;
        Ok(())
    }

    /// The CPU selected for DPCPU, once DPCPU is initialised.
    pub fn dpcpu_curcpu(&self) -> Option<u32> {
        self.dpcpu.as_ref().map(|d| d.curcpu)
    }

    /// The DPCPU section bounds `[start, end)` and every CPU's offset, initialising DPCPU.
    pub fn dpcpu_layout(&mut self) -> Result<(u64, u64, Vec<u64>), KvmError> {
        let result = self.dpcpu_init().map(|d| (d.start, d.end, d.off.clone()));
        self.record(result)
    }

    /// Symbol addresses (`kvm_nlist`): `None` for a name that is neither a symbol nor a DPCPU
    /// variable; a symbol inside the DPCPU section comes back moved to the current CPU's copy.
    pub fn nlist(&mut self, names: &[&str]) -> Result<Vec<Option<u64>>, KvmError> {
        let result = names.iter().map(|name| self.nlist_one(name)).collect();
        self.record(result)
    }

    fn nlist_one(&mut self, name: &str) -> Result<Option<u64>, KvmError> {
        match self.lookup(name)? {
            Some(addr) => {
                let size = self.symbol_size(name).unwrap_or(0);
                self.dpcpu_validaddr(name, addr, size).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The symbol `name`, else `dpcpu_entry_<name>`, unadjusted.
    fn lookup(&mut self, name: &str) -> Result<Option<u64>, KvmError> {
        match self.source.symbol(name)? {
            Some(addr) => Ok(Some(addr)),
            None => self
                .source
                .symbol(&format!("{}{name}", symbols::DPCPU_PREFIX)),
        }
    }

    /// FreeBSD's `_kvm_dpcpu_validaddr`: a template address becomes the current CPU's copy.
    /// A DPCPU variable of `size` bytes must end inside the section.
    fn dpcpu_validaddr(&mut self, name: &str, addr: u64, size: u64) -> Result<u64, KvmError> {
        let start = self.source.symbol(symbols::DPCPU_START)?;
        let end = self.source.symbol(symbols::DPCPU_END)?;
        if let (Some(start), Some(end)) = (start, end) {
            check_dpcpu_bounds(&mut self.source, start, end)?;
        }
        match (start, end) {
            (Some(start), Some(end)) if in_section(addr, start, end) => {
                let state = self.dpcpu_init()?;
                let curoff = state.curoff;
                check_in_dpcpu(name, addr, size, state.end)?;
                Ok(copy_address(addr, curoff))
            }
            _ => Ok(addr),
        }
    }

    /// The size the symbol table records for `name` (or `dpcpu_entry_<name>`), if any.
    pub fn symbol_size(&mut self, name: &str) -> Option<u64> {
        self.source.symbol_size(name).or_else(|| {
            self.source
                .symbol_size(&format!("{}{name}", symbols::DPCPU_PREFIX))
        })
    }

    /// Reads kernel memory (`kvm_read`).
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        let result = self.source.read(addr, buf);
        self.record(result)
    }

    /// Reads `len` bytes of the DPCPU variable `name` on CPU `cpu` (selecting that CPU):
    /// returns the copy's address and its bytes.
    pub fn read_dpcpu(
        &mut self,
        name: &str,
        cpu: u32,
        len: usize,
    ) -> Result<(u64, Vec<u8>), KvmError> {
        let result = self.read_dpcpu_inner(name, cpu, len);
        self.record(result)
    }

    fn read_dpcpu_inner(
        &mut self,
        name: &str,
        cpu: u32,
        len: usize,
    ) -> Result<(u64, Vec<u8>), KvmError> {
        self.dpcpu_setcpu_inner(cpu)?;
        let template = self.lookup(name)?.ok_or_else(|| KvmError::SymbolNotFound {
            name: name.into(),
            origin: self.source.symbol_origin().into(),
        })?;
        let size = self.symbol_size(name).unwrap_or(0);
        let state = self.dpcpu_init()?;
        if !in_section(template, state.start, state.end) {
            return Err(KvmError::Inconsistent(format!(
                "{name} is not a DPCPU variable ({template:#x} is not in the DPCPU section \
                 {:#x}..{:#x})",
                state.start, state.end
            )));
        }
        check_in_dpcpu(name, template, size, state.end)?;
        check_in_dpcpu(name, template, len as u64, state.end)?;
        let addr = copy_address(template, state.curoff);
        let mut bytes = vec![0u8; len];
        self.source.read(addr, &mut bytes)?;
        Ok((addr, bytes))
    }
}

/// The address of a symbol the reader cannot work without, checked against the section the
/// symbol table puts it in.
fn require<S: Source>(source: &mut S, name: &str) -> Result<u64, KvmError> {
    let addr = source
        .symbol(name)?
        .ok_or_else(|| KvmError::SymbolNotFound {
            name: name.into(),
            origin: source.symbol_origin().into(),
        })?;
    let size = source.symbol_size(name).unwrap_or(0);
    check_in_section(source, name, addr, size)?;
    Ok(addr)
}

/// [`require`] for a symbol the reader reads `len` bytes of: the symbol table, when it records
/// a size, must record that one.
fn require_sized<S: Source>(source: &mut S, name: &str, len: u64) -> Result<u64, KvmError> {
    let addr = require(source, name)?;
    match source.symbol_size(name) {
        Some(size) if size != 0 && size != len => Err(KvmError::Inconsistent(format!(
            "symbol {name} is {size} bytes in {}, the reader reads {len}",
            source.symbol_origin()
        ))),
        _ => Ok(addr),
    }
}

/// Whether `size` bytes at `addr` (symbol `name`) lie inside the symbol's section, when the
/// symbol table says which section that is.
fn check_in_section<S: Source>(
    source: &mut S,
    name: &str,
    addr: u64,
    size: u64,
) -> Result<(), KvmError> {
    if let Some(section) = source.symbol_section(name)
        && (addr < section.start || addr.checked_add(size).is_none_or(|e| e > section.end))
    {
        return Err(KvmError::Inconsistent(format!(
            "symbol {name} ({addr:#x}, {size} bytes) lies outside its section {} \
             ({:#x}..{:#x}) in {}",
            section.name,
            section.start,
            section.end,
            source.symbol_origin()
        )));
    }
    Ok(())
}

/// Whether the DPCPU section bounds make sense: `end` above `start`, both in one section of the
/// ELF (the linker script puts them at the start and the end of `.dpcpu`).
fn check_dpcpu_bounds<S: Source>(source: &mut S, start: u64, end: u64) -> Result<(), KvmError> {
    if end <= start {
        return Err(KvmError::Inconsistent(format!(
            "{} ({end:#x}) is not above {} ({start:#x}) in {}",
            symbols::DPCPU_END,
            symbols::DPCPU_START,
            source.symbol_origin()
        )));
    }
    check_in_section(source, symbols::DPCPU_START, start, 0)?;
    check_in_section(source, symbols::DPCPU_END, end, 0)?;
    if let (Some(a), Some(b)) = (
        source.symbol_section(symbols::DPCPU_START),
        source.symbol_section(symbols::DPCPU_END),
    ) && a != b
    {
        return Err(KvmError::Inconsistent(format!(
            "{} is in section {} but {} in {} ({})",
            symbols::DPCPU_START,
            a.name,
            symbols::DPCPU_END,
            b.name,
            source.symbol_origin()
        )));
    }
    Ok(())
}

/// Whether a DPCPU variable `name` of `size` bytes at template address `addr` ends inside the
/// DPCPU section (at or before `end`).
fn check_in_dpcpu(name: &str, addr: u64, size: u64, end: u64) -> Result<(), KvmError> {
    if addr.checked_add(size).is_none_or(|e| e > end) {
        return Err(KvmError::Inconsistent(format!(
            "{name}: {size} bytes at {addr:#x} run past {} ({end:#x})",
            symbols::DPCPU_END
        )));
    }
    Ok(())
}

/// An address outside the dump, said of `what` (a symbol, a CPU's structure), so the message
/// names what was being read.
fn in_dump(what: &str, e: KvmError) -> KvmError {
    match e {
        KvmError::OutsideDump { .. } => KvmError::Inconsistent(format!("{what}: {e}")),
        other => other,
    }
}

fn read_u32<S: Source>(source: &mut S, name: &str) -> Result<u32, KvmError> {
    let addr = require_sized(source, name, 4)?;
    let mut b = [0u8; 4];
    source.read(addr, &mut b).map_err(|e| in_dump(name, e))?;
    Ok(u32::from_le_bytes(b))
}

/// The kernel attaches its CPUs in order, the boot CPU first (`cpu::attach`): in the pointer
/// array the attached CPUs are a prefix that starts at CPU 0. An array without CPU 0, or with a
/// CPU attached after one that is not, is not this kernel's array (a wrong address, or corrupt
/// memory), and every answer read through it would be garbage.
fn check_attach_order(ptrs: &[u64]) -> Result<(), KvmError> {
    let attached = ptrs.iter().take_while(|&&p| p != 0).count();
    if attached == 0 {
        return Err(KvmError::Inconsistent(format!(
            "{}[0] is 0: the boot CPU is always attached first (not this kernel's array, or              corrupt memory)",
            symbols::CPU_INFO_PTRS
        )));
    }
    if let Some(cpu) = ptrs[attached..].iter().position(|&p| p != 0) {
        return Err(KvmError::Inconsistent(format!(
            "{}[{}] is set but {}[{attached}] is 0: CPUs are attached in order (not this              kernel's array, or corrupt memory)",
            symbols::CPU_INFO_PTRS,
            attached + cpu,
            symbols::CPU_INFO_PTRS
        )));
    }
    Ok(())
}

fn read_u64_array<S: Source>(source: &mut S, addr: u64, n: usize) -> Result<Vec<u64>, KvmError> {
    let mut bytes = vec![0u8; n * 8];
    source.read(addr, &mut bytes)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| crate::le::u64_at(c, 0))
        .collect())
}

/// What the C-style [`kvm_getpcpu`] returns: a buffer, `NULL`, or the manual's `(void *)-1`.
#[derive(Debug, PartialEq, Eq)]
pub enum PcpuReturn {
    /// A fresh copy of the CPU's `CpuInfo` (the manual's allocated buffer).
    Pcpu(Box<CpuInfoSnapshot>),
    /// The CPU is not active, or the call cleared the cache (`kd == NULL`).
    Null,
    /// An error; the message is in [`kvm_geterr`].
    Error,
}

/// `kvm_getmaxcpu(kd)`: the maximum CPU count, or -1 on error. With no handle (`kd == NULL`)
/// it clears every handle's cache and returns 0.
pub fn kvm_getmaxcpu<S: Source>(kd: Option<&mut Kvm<S>>) -> i32 {
    match kd {
        None => {
            clear_all_caches();
            0
        }
        Some(kd) => kd.getmaxcpu().map_or(-1, |n| n as i32),
    }
}

/// `kvm_getpcpu(kd, cpu)`: a copy of the CPU's `CpuInfo`, `Null` if the CPU is not active,
/// `Error` on error (a negative or too big `cpu` included). With no handle it clears every
/// handle's cache and returns `Null`.
pub fn kvm_getpcpu<S: Source>(kd: Option<&mut Kvm<S>>, cpu: i32) -> PcpuReturn {
    match kd {
        None => {
            clear_all_caches();
            PcpuReturn::Null
        }
        Some(kd) => {
            let result = kd.getpcpu_signed(cpu.into());
            match kd.record(result) {
                Ok(Some(snap)) => PcpuReturn::Pcpu(Box::new(snap)),
                Ok(None) => PcpuReturn::Null,
                Err(_) => PcpuReturn::Error,
            }
        }
    }
}

/// `kvm_dpcpu_setcpu(kd, cpu)`: 0 on success, -1 on error.
pub fn kvm_dpcpu_setcpu<S: Source>(kd: &mut Kvm<S>, cpu: u32) -> i32 {
    kd.dpcpu_setcpu(cpu).map_or(-1, |()| 0)
}

/// `kvm_geterr(kd)`: the last error message.
pub fn kvm_geterr<S: Source>(kd: &Kvm<S>) -> &str {
    kd.geterr()
}
