//! Host tests of the reader over an in-memory fake kernel: DPCPU address arithmetic, symbol
//! lookup, the checks of `open`, the error messages and the cache behaviour.

use super::*;
use crate::cpu::{CpuInfoSnapshot, MAXCPUS};
use alloc::string::String;
use alloc::vec::Vec;

const BUILD_ID: [u8; 16] = [0x11; 16];
const PTRS: u64 = 0x1100;
const OFFS: u64 = 0x1300;
const CPU_INFO: u64 = 0x2000;
const DPCPU_START: u64 = 0x8000;
const DPCPU_END: u64 = 0x8040;
const COUNTER: u64 = 0x8000;
const OTHER: u64 = 0x8008;

/// A fake kernel: memory regions, a symbol table, and a log of reads.
#[derive(Default)]
struct Fake {
    regions: Vec<(u64, Vec<u8>)>,
    symbols: Vec<(String, u64)>,
    /// Symbol sizes, as an ELF records them (none by default, like the embedded table).
    sizes: Vec<(String, u64)>,
    /// Symbol sections, as an ELF records them (none by default).
    sections: Vec<(String, SymbolSection)>,
    image_build_id: Option<[u8; 16]>,
    reads: Vec<(u64, usize)>,
}

impl Fake {
    fn put(&mut self, addr: u64, bytes: &[u8]) {
        for (start, data) in &mut self.regions {
            if addr >= *start && addr + bytes.len() as u64 <= *start + data.len() as u64 {
                let at = (addr - *start) as usize;
                data[at..at + bytes.len()].copy_from_slice(bytes);
                return;
            }
        }
        self.regions.push((addr, bytes.to_vec()));
    }

    fn sym(&mut self, name: &str, addr: u64) {
        self.symbols.push((name.into(), addr));
    }

    fn cpu_info(cpu: u32) -> CpuInfoSnapshot {
        let addr = CPU_INFO + u64::from(cpu) * CpuInfoSnapshot::SIZE as u64;
        CpuInfoSnapshot {
            self_addr: addr,
            index: cpu,
            state: 2,
            mpidr: 0x8000_0000 | u64::from(cpu),
            ipl: cpu % 3,
            tick_count: 1000 + u64::from(cpu),
            dpcpu_off: copy_of(cpu).wrapping_sub(DPCPU_START),
            ..CpuInfoSnapshot::default()
        }
    }

    /// A kernel with `ncpu` attached CPUs out of MAXCPUS, each with a DPCPU copy holding
    /// COUNTER = 100 + cpu.
    fn kernel(ncpu: u32) -> Self {
        let mut f = Self {
            image_build_id: Some(BUILD_ID),
            ..Self::default()
        };
        f.put(0x1000, &[0; 0x800]);
        f.put(0x1000, &BUILD_ID);
        f.put(0x1010, &CPUINFO_LAYOUT_VERSION.to_le_bytes());
        f.put(0x1014, &(CpuInfoSnapshot::SIZE as u32).to_le_bytes());
        f.put(0x1018, &(MAXCPUS as u32).to_le_bytes());
        f.put(0x101c, &ncpu.to_le_bytes());
        f.sym(symbols::BUILD_ID, 0x1000);
        f.sym(symbols::CPUINFO_LAYOUT, 0x1010);
        f.sym(symbols::CPUINFO_SIZE, 0x1014);
        f.sym(symbols::MAXCPUS, 0x1018);
        f.sym(symbols::NCPU, 0x101c);
        f.sym(symbols::CPU_INFO_PTRS, PTRS);
        f.sym(symbols::DPCPU_OFF, OFFS);
        f.sym("kern_other", 0x1600);
        f.sym(symbols::DPCPU_START, DPCPU_START);
        f.sym(symbols::DPCPU_END, DPCPU_END);
        f.sym("dpcpu_entry_COUNTER", COUNTER);
        f.sym("dpcpu_entry_OTHER", OTHER);
        f.put(CPU_INFO, &[0; CpuInfoSnapshot::SIZE * MAXCPUS]);
        f.put(DPCPU_START, &[0; (DPCPU_END - DPCPU_START) as usize]);
        for cpu in 0..ncpu {
            let ci = Self::cpu_info(cpu);
            f.put(PTRS + 8 * u64::from(cpu), &ci.self_addr.to_le_bytes());
            f.put(OFFS + 8 * u64::from(cpu), &ci.dpcpu_off.to_le_bytes());
            f.put(ci.self_addr, &ci.to_bytes());
            let mut copy = [0u8; 0x40];
            copy[..8].copy_from_slice(&(100 + u64::from(cpu)).to_le_bytes());
            f.put(copy_of(cpu), &copy);
        }
        f
    }

    fn ptr_reads(&self) -> usize {
        self.reads.iter().filter(|(a, _)| *a == PTRS).count()
    }
}

/// Where CPU `cpu`'s DPCPU copy lives: CPU 0's below the template (a wrapped offset).
fn copy_of(cpu: u32) -> u64 {
    if cpu == 0 {
        0x6000
    } else {
        0x10000 + u64::from(cpu) * 0x1000
    }
}

impl Source for Fake {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        self.reads.push((addr, buf.len()));
        for (start, data) in &self.regions {
            let end = *start + data.len() as u64;
            if addr >= *start
                && addr
                    .checked_add(buf.len() as u64)
                    .is_some_and(|last| last <= end)
            {
                let at = (addr - *start) as usize;
                buf.copy_from_slice(&data[at..at + buf.len()]);
                return Ok(());
            }
        }
        Err(KvmError::OutsideDump {
            addr,
            len: buf.len(),
        })
    }

    fn symbol(&mut self, name: &str) -> Result<Option<u64>, KvmError> {
        Ok(self
            .symbols
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a))
    }

    fn symbol_size(&mut self, name: &str) -> Option<u64> {
        self.sizes.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    fn symbol_section(&mut self, name: &str) -> Option<SymbolSection> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    fn symbol_origin(&self) -> &str {
        "the fake"
    }

    fn image_build_id(&mut self) -> Result<Option<[u8; 16]>, KvmError> {
        Ok(self.image_build_id)
    }
}

fn open(f: Fake) -> Kvm<Fake> {
    match Kvm::open(f) {
        Ok(kd) => kd,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn open_err(f: Fake) -> String {
    match Kvm::open(f) {
        Ok(_) => panic!("open should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn getmaxcpu_and_getpcpu_read_the_exported_structures() {
    let mut kd = open(Fake::kernel(4));
    assert_eq!(kd.getmaxcpu(), Ok(MAXCPUS as u32));
    for cpu in 0..4 {
        assert_eq!(kd.getpcpu(cpu as usize), Ok(Some(Fake::cpu_info(cpu))));
    }
    assert_eq!(kd.getpcpu(4), Ok(None), "an inactive CPU is None");
    assert_eq!(kd.getpcpu(15), Ok(None));
    assert_eq!(kd.build_id(), BUILD_ID);
}

#[test]
fn a_cpu_out_of_range_is_an_error_with_a_message() {
    let mut kd = open(Fake::kernel(4));
    let max = MAXCPUS as u32;
    assert_eq!(
        kd.getpcpu(MAXCPUS),
        Err(KvmError::CpuTooBig {
            cpu: MAXCPUS as i64,
            maxcpu: max
        })
    );
    assert_eq!(kd.geterr(), format!("CPU {max} too big (maxcpu {max})"));
    assert_eq!(kvm_getpcpu(Some(&mut kd), -1), PcpuReturn::Error);
    assert_eq!(kvm_geterr(&kd), format!("CPU -1 too big (maxcpu {max})"));
}

#[test]
fn open_rejects_another_build_an_unpatched_image_and_other_layouts() {
    let mut f = Fake::kernel(2);
    f.image_build_id = Some([0x22; 16]);
    assert!(open_err(f).starts_with("build id mismatch: the kernel ELF is 2222"));

    let mut f = Fake::kernel(2);
    f.put(0x1000, &symbols::BUILD_ID_UNPATCHED);
    assert!(open_err(f).contains("never filled in"));

    let mut f = Fake::kernel(2);
    f.put(0x1010, &(CPUINFO_LAYOUT_VERSION + 1).to_le_bytes());
    assert_eq!(
        open_err(f),
        alloc::format!(
            "CpuInfo layout version {} in the kernel, this reader knows version {}",
            CPUINFO_LAYOUT_VERSION + 1,
            CPUINFO_LAYOUT_VERSION
        )
    );

    let mut f = Fake::kernel(2);
    f.put(0x1014, &128u32.to_le_bytes());
    assert_eq!(
        open_err(f),
        "CpuInfo is 128 bytes in the kernel, 192 bytes in this reader"
    );

    let mut f = Fake::kernel(2);
    f.symbols.retain(|(n, _)| n != symbols::CPUINFO_SIZE);
    assert_eq!(
        open_err(f),
        "symbol kern_cpuinfo_size not found in the fake"
    );

    // No separate image (the running kernel): only the memory's id is checked.
    let mut f = Fake::kernel(2);
    f.image_build_id = None;
    assert!(Kvm::open(f).is_ok());
}

#[test]
fn missing_symbols_and_garbage_are_reported_not_misread() {
    let mut f = Fake::kernel(2);
    f.symbols.retain(|(n, _)| n != symbols::CPU_INFO_PTRS);
    let mut kd = open(f);
    assert_eq!(kvm_getmaxcpu(Some(&mut kd)), -1);
    assert_eq!(
        kd.geterr(),
        "symbol kern_cpu_info_ptrs not found in the fake"
    );

    let mut f = Fake::kernel(2);
    f.put(0x1018, &0u32.to_le_bytes());
    let mut kd = open(f);
    assert!(
        kd.getmaxcpu()
            .unwrap_err()
            .to_string()
            .contains("kern_maxcpus = 0x0 is not plausible")
    );

    let mut f = Fake::kernel(2);
    // CPU 1's pointer now leads to CPU 0's structure.
    f.put(PTRS + 8, &CPU_INFO.to_le_bytes());
    let mut kd = open(f);
    assert!(
        kd.getpcpu(1)
            .unwrap_err()
            .to_string()
            .contains("says it is CPU 0")
    );

    let mut f = Fake::kernel(2);
    f.put(PTRS + 8, &0xdead_0000u64.to_le_bytes());
    let mut kd = open(f);
    assert_eq!(
        kd.getpcpu(1).unwrap_err().to_string(),
        "the CpuInfo of CPU 1 (kern_cpu_info_ptrs[1]): address 0xdead0000 (192 bytes) outside \
         the dump"
    );
    assert!(kd.geterr().ends_with("outside the dump"));
}

#[test]
fn nlist_moves_dpcpu_symbols_to_the_selected_cpu() {
    let mut kd = open(Fake::kernel(4));
    // Default CPU 0, whose copy lies below the template (offset wraps).
    assert_eq!(
        kd.nlist(&[
            "dpcpu_entry_COUNTER",
            "COUNTER",
            "OTHER",
            "kern_other",
            "nope"
        ]),
        Ok(alloc::vec![
            Some(copy_of(0)),
            Some(copy_of(0)),
            Some(copy_of(0) + 8),
            Some(0x1600),
            None
        ])
    );
    assert_eq!(kd.dpcpu_curcpu(), Some(0));
    for cpu in 1..4 {
        assert_eq!(kd.dpcpu_setcpu(cpu), Ok(()));
        assert_eq!(kd.nlist(&["COUNTER"]), Ok(alloc::vec![Some(copy_of(cpu))]));
        let (addr, bytes) = kd.read_dpcpu("COUNTER", cpu, 8).unwrap();
        assert_eq!(addr, copy_of(cpu));
        assert_eq!(bytes, (100 + u64::from(cpu)).to_le_bytes());
    }
    // The section bounds: start is inside (moved), end is not.
    assert_eq!(
        kd.nlist(&[symbols::DPCPU_START, symbols::DPCPU_END]),
        Ok(alloc::vec![Some(copy_of(3)), Some(DPCPU_END)])
    );
}

#[test]
fn dpcpu_setcpu_errors_follow_the_manual() {
    let mut kd = open(Fake::kernel(4));
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, MAXCPUS as u32), -1);
    assert_eq!(
        kd.geterr(),
        format!("CPU {MAXCPUS} too big (maxcpu {MAXCPUS})")
    );
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 5), -1);
    assert_eq!(kd.geterr(), "CPU 5 not found (it has no DPCPU copy)");
    assert_eq!(kd.dpcpu_curcpu(), Some(0), "a failed setcpu keeps the CPU");
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 2), 0);
    assert_eq!(kd.dpcpu_curcpu(), Some(2));

    let mut f = Fake::kernel(4);
    f.put(OFFS, &[0u8; 8 * MAXCPUS]);
    let mut kd = open(f);
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 0), -1);
    assert!(
        kd.geterr()
            .starts_with("DPCPU not initialised: every offset")
    );
    assert!(
        kd.nlist(&["COUNTER"]).is_err(),
        "a DPCPU symbol cannot be resolved"
    );
    assert_eq!(kd.nlist(&["kern_other"]), Ok(alloc::vec![Some(0x1600)]));

    let mut f = Fake::kernel(4);
    f.symbols.retain(|(n, _)| n != symbols::DPCPU_START);
    let mut kd = open(f);
    assert_eq!(
        kd.dpcpu_setcpu(1).unwrap_err().to_string(),
        "DPCPU not initialised: symbol __dpcpu_start not found in the fake"
    );
    assert!(kd.read_dpcpu("kern_other", 1, 8).is_err());
}

#[test]
fn read_dpcpu_refuses_a_variable_outside_the_section() {
    let mut kd = open(Fake::kernel(2));
    let e = kd.read_dpcpu("kern_other", 1, 8).unwrap_err().to_string();
    assert!(e.contains("kern_other is not a DPCPU variable"), "{e}");
    let e = kd.read_dpcpu("missing", 1, 8).unwrap_err().to_string();
    assert_eq!(e, "symbol missing not found in the fake");
}

/// The only test that clears the global cache, so no other test can see a stale value
/// refreshed underneath it.
#[test]
fn the_cache_holds_until_cleared_by_a_call_without_a_handle() {
    let mut kd = open(Fake::kernel(2));
    assert_eq!(kd.getpcpu(1), Ok(Some(Fake::cpu_info(1))));
    assert_eq!(kd.source_mut().ptr_reads(), 1);
    // The kernel attaches CPU 2 after the first look: the cached pointer array hides it...
    let ci2 = Fake::cpu_info(2);
    kd.source_mut().put(PTRS + 16, &ci2.self_addr.to_le_bytes());
    kd.source_mut().put(OFFS + 16, &ci2.dpcpu_off.to_le_bytes());
    kd.source_mut().put(ci2.self_addr, &ci2.to_bytes());
    assert_eq!(kd.getpcpu(2), Ok(None));
    assert_eq!(kd.getmaxcpu(), Ok(MAXCPUS as u32));
    assert_eq!(
        kd.source_mut().ptr_reads(),
        1,
        "the pointer array is read once"
    );
    // ...but a CpuInfo's contents are read afresh on every call.
    let mut changed = Fake::cpu_info(1);
    changed.tick_count = 5555;
    kd.source_mut().put(changed.self_addr, &changed.to_bytes());
    assert_eq!(kd.getpcpu(1), Ok(Some(changed)));

    // kd == NULL clears it, for every handle.
    assert_eq!(kvm_getpcpu::<Fake>(None, 0), PcpuReturn::Null);
    assert_eq!(kd.getpcpu(2), Ok(Some(ci2)));
    assert_eq!(kd.source_mut().ptr_reads(), 2);
    assert_eq!(kvm_getmaxcpu::<Fake>(None), 0);
    assert_eq!(kvm_getmaxcpu(Some(&mut kd)), MAXCPUS as i32);
    assert_eq!(kd.source_mut().ptr_reads(), 3);

    // And clear_cache clears this handle's only.
    kd.clear_cache();
    assert!(matches!(kvm_getpcpu(Some(&mut kd), 1), PcpuReturn::Pcpu(b) if *b == changed));
    assert_eq!(kd.source_mut().ptr_reads(), 4);
}

#[test]
fn c_style_wrappers_use_the_manual_return_values() {
    let mut kd = open(Fake::kernel(3));
    assert_eq!(kvm_getmaxcpu(Some(&mut kd)), MAXCPUS as i32);
    assert_eq!(
        kvm_getpcpu(Some(&mut kd), 2),
        PcpuReturn::Pcpu(alloc::boxed::Box::new(Fake::cpu_info(2)))
    );
    assert_eq!(kvm_getpcpu(Some(&mut kd), 3), PcpuReturn::Null);
    assert_eq!(
        kvm_getpcpu(Some(&mut kd), MAXCPUS as i32),
        PcpuReturn::Error
    );
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 1), 0);
    assert_eq!(
        kd.geterr(),
        format!("CPU {MAXCPUS} too big (maxcpu {MAXCPUS})"),
        "success leaves the last error"
    );
}

// ---- Issue #19: what a dump says is checked against what the ELF declares. ----

impl Fake {
    /// The sizes and sections an ELF of this kernel would declare.
    fn with_elf_facts(mut self) -> Self {
        let data = SymbolSection {
            name: ".data".into(),
            start: 0x1000,
            end: 0x1800,
        };
        let dpcpu = SymbolSection {
            name: ".dpcpu".into(),
            start: DPCPU_START,
            end: DPCPU_END,
        };
        for (name, size) in [
            (symbols::BUILD_ID, 16),
            (symbols::CPUINFO_LAYOUT, 4),
            (symbols::CPUINFO_SIZE, 4),
            (symbols::MAXCPUS, 4),
            (symbols::NCPU, 4),
            (symbols::CPU_INFO_PTRS, 8 * MAXCPUS as u64),
            (symbols::DPCPU_OFF, 8 * MAXCPUS as u64),
        ] {
            self.sizes.push((name.into(), size));
            self.sections.push((name.into(), data.clone()));
        }
        for (name, size) in [
            (symbols::DPCPU_START, 0),
            (symbols::DPCPU_END, 0),
            ("dpcpu_entry_COUNTER", 8),
            ("dpcpu_entry_OTHER", 8),
        ] {
            self.sizes.push((name.into(), size));
            self.sections.push((name.into(), dpcpu.clone()));
        }
        self
    }
}

fn err(r: Result<impl core::fmt::Debug, KvmError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn elf_facts_of_a_sound_kernel_change_no_answer() {
    let mut kd = open(Fake::kernel(4).with_elf_facts());
    assert_eq!(kd.getmaxcpu(), Ok(MAXCPUS as u32));
    assert_eq!(kd.getpcpu(3), Ok(Some(Fake::cpu_info(3))));
    assert_eq!(kd.read_dpcpu("COUNTER", 2, 8).unwrap().0, copy_of(2));
    assert_eq!(kd.nlist(&["OTHER"]), Ok(alloc::vec![Some(copy_of(2) + 8)]));
}

#[test]
fn kern_maxcpus_beyond_the_arrays_the_elf_declares_is_refused() {
    // A core that says MAXCPUS + 8 while the ELF's arrays hold MAXCPUS: CPUs past MAXCPUS
    // would read whatever follows the arrays.
    let big = MAXCPUS + 8;
    let mut f = Fake::kernel(4).with_elf_facts();
    f.put(0x1018, &(big as u32).to_le_bytes());
    let mut kd = open(f);
    let expected = format!(
        "kern_maxcpus = {big} in memory, but kern_cpu_info_ptrs has {MAXCPUS} entries ({} \
         bytes) in the fake",
        8 * MAXCPUS
    );
    assert_eq!(err(kd.getmaxcpu()), expected);
    assert_eq!(
        err(kd.getpcpu(MAXCPUS + 4)),
        expected,
        "not an unrelated 'outside the dump'"
    );
    // Without sizes (the running kernel's embedded table) the limit is MAXCPU_LIMIT.
    let mut f = Fake::kernel(4);
    f.put(0x1018, &(big as u32).to_le_bytes());
    // (The four attached CPUs' pointers stay; the rest of the longer array reads as 0.)
    f.put(PTRS + 8 * 4, &[0; 8 * (MAXCPUS + 8 - 4)]);
    assert_eq!(open(f).getmaxcpu(), Ok(big as u32));
}

#[test]
fn a_pointer_array_without_the_boot_cpu_or_with_a_gap_is_refused() {
    // No CPU attached: the boot CPU always is, so this is not the kernel's array.
    let mut f = Fake::kernel(4);
    f.put(PTRS, &[0; 8 * 4]);
    let e = err(open(f).getmaxcpu());
    assert!(e.contains("kern_cpu_info_ptrs[0] is 0"), "{e}");
    // CPU 2 attached after CPU 1 was not: CPUs are attached in order.
    let mut f = Fake::kernel(4);
    f.put(PTRS + 8, &[0; 8]);
    let mut kd = open(f);
    let e = err(kd.getpcpu(0));
    assert!(
        e.contains("kern_cpu_info_ptrs[2] is set but kern_cpu_info_ptrs[1] is 0"),
        "{e}"
    );
    assert!(
        !kd.geterr().is_empty(),
        "the refusal is recorded for kvm_geterr"
    );
}

#[test]
fn dpcpu_bounds_that_are_empty_or_outside_their_section_are_refused() {
    for end in [u64::MAX, DPCPU_START] {
        let mut f = Fake::kernel(4).with_elf_facts();
        f.symbols.retain(|(n, _)| n != symbols::DPCPU_END);
        f.sym(symbols::DPCPU_END, end);
        let mut kd = open(f);
        let e = err(kd.nlist(&["COUNTER"]));
        assert!(e.contains("__dpcpu_end"), "{e}");
        assert_eq!(err(kd.dpcpu_setcpu(1)), e);
    }
    // Inside, but not where its section is.
    let mut f = Fake::kernel(4).with_elf_facts();
    f.symbols.retain(|(n, _)| n != symbols::DPCPU_END);
    f.sym(symbols::DPCPU_END, DPCPU_END + 0x100);
    let e = err(open(f).nlist(&["COUNTER"]));
    assert_eq!(
        e,
        "symbol __dpcpu_end (0x8140, 0 bytes) lies outside its section .dpcpu (0x8000..0x8040) \
         in the fake"
    );
}

#[test]
fn a_symbol_outside_its_section_is_refused() {
    let mut f = Fake::kernel(2).with_elf_facts();
    f.symbols.retain(|(n, _)| n != symbols::CPU_INFO_PTRS);
    f.sym(symbols::CPU_INFO_PTRS, 0x17c0);
    let e = err(open(f).getmaxcpu());
    let want = format!(
        "symbol kern_cpu_info_ptrs (0x17c0, {} bytes) lies outside its section",
        8 * MAXCPUS
    );
    assert!(e.starts_with(&want), "{e}");
}

#[test]
fn a_cpu_whose_dpcpu_off_disagrees_with_the_table_is_refused() {
    let mut f = Fake::kernel(4);
    f.put(OFFS + 8 * 2, &0x7_0000u64.to_le_bytes());
    let mut kd = open(f);
    assert_eq!(
        err(kd.getpcpu(2)),
        alloc::format!(
            "CPU 2: its CpuInfo says dpcpu_off = {:#x}, but kern_dpcpu_off[2] = 0x70000",
            Fake::cpu_info(2).dpcpu_off
        )
    );
    assert_eq!(kd.getpcpu(1), Ok(Some(Fake::cpu_info(1))));
}

#[test]
fn cpus_sharing_a_dpcpu_offset_are_refused() {
    let mut f = Fake::kernel(4);
    let off1 = Fake::cpu_info(1).dpcpu_off;
    f.put(OFFS + 8 * 3, &off1.to_le_bytes());
    let mut kd = open(f);
    let e = err(kd.dpcpu_setcpu(0));
    assert_eq!(
        e,
        alloc::format!(
            "kern_dpcpu_off: cpu1 and cpu3 share one DPCPU copy (both at offset {off1:#x})"
        )
    );
    // Copies that overlap without being equal.
    let mut f = Fake::kernel(4);
    f.put(OFFS + 8 * 3, &(off1 + 8).to_le_bytes());
    assert!(err(open(f).nlist(&["COUNTER"])).contains("overlap"));
}

#[test]
fn a_dpcpu_variable_that_runs_past_the_section_is_refused() {
    let mut f = Fake::kernel(4).with_elf_facts();
    f.sizes.retain(|(n, _)| n != "dpcpu_entry_OTHER");
    f.sizes.push(("dpcpu_entry_OTHER".into(), 0x100));
    let mut kd = open(f);
    let expected = "OTHER: 256 bytes at 0x8008 run past __dpcpu_end (0x8040)";
    assert_eq!(err(kd.nlist(&["OTHER"])), expected);
    assert_eq!(err(kd.read_dpcpu("OTHER", 1, 8)), expected);
    // A read longer than the section from a sound variable.
    let mut kd = open(Fake::kernel(4).with_elf_facts());
    assert_eq!(
        err(kd.read_dpcpu("COUNTER", 1, 0x48)),
        "COUNTER: 72 bytes at 0x8000 run past __dpcpu_end (0x8040)"
    );
    assert!(kd.read_dpcpu("COUNTER", 1, 0x40).is_ok());
}
