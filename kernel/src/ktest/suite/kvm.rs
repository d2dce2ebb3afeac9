//! kvm over the running kernel: the reader, fed by the in-kernel source, gives the answers the
//! kernel's own structures give.

use crate::cpu::{MAXCPUS, cpus, ncpu};
use crate::ktest;
use crate::ktest::kvm_selftest::{COUNTER_NAME, KVM_SELFTEST_COUNTER};
use crate::kvm::local::LocalSource;
use crate::kvm::{
    Kvm, KvmError, PcpuReturn, kvm_dpcpu_setcpu, kvm_getmaxcpu, kvm_getpcpu, symbols,
};
use core::sync::atomic::Ordering;

fn open() -> Kvm<LocalSource> {
    match Kvm::open(LocalSource::new()) {
        Ok(kd) => kd,
        Err(e) => panic!("Kvm::open on the running kernel: {e}"),
    }
}

ktest! {
    fn kvm_build_id_and_symbol_table_were_filled_in_after_linking() {
        assert_ne!(symbols::build_id(), symbols::BUILD_ID_UNPATCHED, "build id not patched");
        let mut kd = open();
        let addrs = kd.nlist(&[symbols::MAXCPUS, symbols::CPU_INFO_PTRS, "no_such_symbol"]).unwrap();
        assert_eq!(addrs[0], Some(core::ptr::addr_of!(crate::cpu::kern_maxcpus) as u64));
        assert_eq!(addrs[1], Some(crate::cpu::kern_cpu_info_ptrs.as_ptr() as u64));
        assert_eq!(addrs[2], None);
    }
}

ktest! {
    fn kvm_getpcpu_on_the_running_kernel_matches_each_cpu_info() {
        let mut kd = open();
        assert_eq!(kvm_getmaxcpu(Some(&mut kd)), MAXCPUS as i32);
        for ci in cpus() {
            let read = kd.getpcpu(ci.index()).unwrap().expect("attached CPU reads as active");
            let own = ci.snapshot();
            // Identity fields are stable; counters only grow between the two reads.
            assert_eq!(
                (read.self_addr, read.index, read.mpidr, read.dpcpu_off, read.stack_base, read.stack_size),
                (own.self_addr, own.index, own.mpidr, own.dpcpu_off, own.stack_base, own.stack_size),
                "cpu{}", ci.index()
            );
            assert!(read.tick_count <= ci.snapshot().tick_count, "cpu{} ticks", ci.index());
        }
        for cpu in ncpu()..MAXCPUS {
            assert_eq!(kd.getpcpu(cpu), Ok(None), "cpu{cpu} is not attached");
        }
        assert_eq!(kvm_getpcpu(Some(&mut kd), MAXCPUS as i32), PcpuReturn::Error);
        assert_eq!(kd.geterr(), alloc::format!("CPU {MAXCPUS} too big (maxcpu {MAXCPUS})"));
    }
}

ktest! {
    fn kvm_dpcpu_nlist_follows_the_selected_cpu() {
        let mut kd = open();
        for ci in cpus() {
            let cpu = ci.index();
            assert_eq!(kvm_dpcpu_setcpu(&mut kd, cpu as u32), 0, "{}", kd.geterr());
            let own = KVM_SELFTEST_COUNTER.on_cpu(cpu);
            own.store(0x5eed_0000 + cpu as u64, Ordering::Relaxed);
            let addr = kd.nlist(&[COUNTER_NAME]).unwrap()[0];
            assert_eq!(addr, Some(own as *const _ as u64), "cpu{cpu}");
            let (_, bytes) = kd.read_dpcpu(COUNTER_NAME, cpu as u32, 8).unwrap();
            assert_eq!(bytes, (0x5eed_0000 + cpu as u64).to_le_bytes(), "cpu{cpu}");
            own.store(0, Ordering::Relaxed);
        }
        assert_eq!(kvm_dpcpu_setcpu(&mut kd, MAXCPUS as u32), -1);
        assert_eq!(kd.geterr(), alloc::format!("CPU {MAXCPUS} too big (maxcpu {MAXCPUS})"));
        if ncpu() < MAXCPUS {
            assert_eq!(kd.dpcpu_setcpu(ncpu() as u32), Err(KvmError::CpuNotFound { cpu: ncpu() as u32 }));
        }
    }
}

ktest! {
    fn kvm_local_source_refuses_addresses_outside_ram() {
        let mut kd = open();
        let mut buf = [0u8; 8];
        assert_eq!(
            kd.read(0x10_0000_0000, &mut buf),
            Err(KvmError::OutsideDump { addr: 0x10_0000_0000, len: 8 })
        );
        assert_eq!(kd.geterr(), "address 0x1000000000 (8 bytes) outside the dump");
        assert!(kd.read(u64::MAX - 3, &mut buf).is_err(), "a range that wraps");
        let device = crate::platform::platform().device_ranges()[0].start;
        assert!(kd.read(device, &mut buf).is_err(), "device memory at {device:#x}");
    }
}
