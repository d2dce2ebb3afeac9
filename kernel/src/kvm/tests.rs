//! Host tests of the reader over an in-memory fake kernel: DPCPU address arithmetic, symbol
//! lookup, the checks of `open`, the error messages and the cache behaviour.

use super::*;
use crate::cpu::{CpuInfoSnapshot, MAXCPUS};
use alloc::string::String;
use alloc::vec::Vec;

const BUILD_ID: [u8; 16] = [0x11; 16];
const PTRS: u64 = 0x1100;
const OFFS: u64 = 0x1200;
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
        f.put(0x1000, &[0; 0x400]);
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
        f.sym("kern_other", 0x1300);
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
        0x4000
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
    assert_eq!(
        kd.getpcpu(16),
        Err(KvmError::CpuTooBig {
            cpu: 16,
            maxcpu: 16
        })
    );
    assert_eq!(kd.geterr(), "CPU 16 too big (maxcpu 16)");
    assert_eq!(kvm_getpcpu(Some(&mut kd), -1), PcpuReturn::Error);
    assert_eq!(kvm_geterr(&kd), "CPU -1 too big (maxcpu 16)");
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
        kd.getpcpu(1),
        Err(KvmError::OutsideDump {
            addr: 0xdead_0000,
            len: 192
        })
    );
    assert_eq!(
        kd.geterr(),
        "address 0xdead0000 (192 bytes) outside the dump"
    );
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
            Some(0x1300),
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
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 16), -1);
    assert_eq!(kd.geterr(), "CPU 16 too big (maxcpu 16)");
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
    assert_eq!(kd.nlist(&["kern_other"]), Ok(alloc::vec![Some(0x1300)]));

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
    kd.source_mut().put(ci2.self_addr, &ci2.to_bytes());
    assert_eq!(kd.getpcpu(2), Ok(None));
    assert_eq!(kd.getmaxcpu(), Ok(16));
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
    assert_eq!(kvm_getmaxcpu(Some(&mut kd)), 16);
    assert_eq!(kd.source_mut().ptr_reads(), 3);

    // And clear_cache clears this handle's only.
    kd.clear_cache();
    assert!(matches!(kvm_getpcpu(Some(&mut kd), 1), PcpuReturn::Pcpu(b) if *b == changed));
    assert_eq!(kd.source_mut().ptr_reads(), 4);
}

#[test]
fn c_style_wrappers_use_the_manual_return_values() {
    let mut kd = open(Fake::kernel(3));
    assert_eq!(kvm_getmaxcpu(Some(&mut kd)), 16);
    assert_eq!(
        kvm_getpcpu(Some(&mut kd), 2),
        PcpuReturn::Pcpu(alloc::boxed::Box::new(Fake::cpu_info(2)))
    );
    assert_eq!(kvm_getpcpu(Some(&mut kd), 3), PcpuReturn::Null);
    assert_eq!(kvm_getpcpu(Some(&mut kd), 16), PcpuReturn::Error);
    assert_eq!(kvm_dpcpu_setcpu(&mut kd, 1), 0);
    assert_eq!(
        kd.geterr(),
        "CPU 16 too big (maxcpu 16)",
        "success leaves the last error"
    );
}
