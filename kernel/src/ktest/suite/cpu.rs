//! `cpu_info`: curcpu(), iteration, lookup, and the exported pointer array.

use crate::cpu::{MAXCPUS, cpu_lookup, cpus, curcpu, kern_cpu_info_ptrs, ncpu, ncpu_online};
use crate::ktest;
use crate::ktest::all_cpus_barrier;
use core::sync::atomic::{AtomicU64, Ordering};

static SEEN: AtomicU64 = AtomicU64::new(0);

ktest! {
    #[all_cpus]
    fn curcpu_is_unique_per_cpu_and_matches_mpidr() {
        let ci = curcpu();
        all_cpus_barrier();
        if ci.index() == 0 {
            SEEN.store(0, Ordering::Relaxed);
        }
        all_cpus_barrier();
        let hw = crate::cpu_affinity(crate::arch::aarch64::read_mpidr());
        assert_eq!(ci.mpidr(), hw, "cpu{}: curcpu().mpidr() != MPIDR_EL1", ci.index());
        let bit = 1u64 << ci.index();
        let before = SEEN.fetch_or(bit, Ordering::AcqRel);
        assert_eq!(before & bit, 0, "cpu{}: another CPU also claims this curcpu()", ci.index());
        all_cpus_barrier();
        let seen = SEEN.load(Ordering::Acquire);
        assert_eq!(seen.count_ones() as usize, ncpu_online(), "curcpu() set {seen:#b}");
        assert!(core::ptr::eq(ci, cpu_lookup(ci.index()).expect("own index attached")));
    }
}

ktest! {
    fn cpu_iteration_visits_each_attached_cpu_once_in_index_order() {
        let mut n = 0;
        for (position, ci) in cpus().enumerate() {
            assert_eq!(ci.index(), position);
            assert_eq!(ci.self_addr.load(Ordering::Relaxed), ci as *const _ as u64);
            n += 1;
        }
        assert_eq!(n, ncpu());
        assert!(cpu_lookup(ncpu()).is_none(), "lookup past ncpu() must fail");
        assert!(ncpu() <= MAXCPUS);
    }
}

ktest! {
    fn exported_pointer_array_matches_the_cpus() {
        for (i, slot) in kern_cpu_info_ptrs.iter().enumerate() {
            let ptr = slot.load(Ordering::Relaxed);
            match cpu_lookup(i) {
                Some(ci) => assert_eq!(ptr, ci as *const _ as u64, "kern_cpu_info_ptrs[{i}]"),
                None => assert_eq!(ptr, 0, "kern_cpu_info_ptrs[{i}] set for an absent CPU"),
            }
        }
    }
}

ktest! {
    fn every_attached_cpu_is_online_with_a_distinct_mpidr() {
        for ci in cpus() {
            assert!(ci.is_online(), "cpu{} is {}", ci.index(), ci.state().name());
            for other in cpus().filter(|o| o.index() > ci.index()) {
                assert_ne!(ci.mpidr(), other.mpidr(), "cpu{} and cpu{}", ci.index(), other.index());
            }
        }
    }
}

ktest! {
    #[min_cpus(2)]
    fn starting_a_cpu_that_is_already_on_is_refused() {
        let ci = cpu_lookup(1).expect("cpu1");
        let boot = crate::arch::aarch64::secondary::secondary_entry_address();
        let r = crate::platform::platform().start_cpu(1, ci.mpidr(), boot);
        assert!(r.is_err(), "CPU_ON of an online CPU succeeded");
        assert!(ci.is_online());
    }
}

ktest! {
    fn starting_a_cpu_that_does_not_exist_is_refused() {
        let r = crate::platform::platform().start_cpu(MAXCPUS - 1, 0xff_00ff_ff00, 0);
        assert!(r.is_err(), "CPU_ON of MPIDR 0xff00ffff00 succeeded");
    }
}

/// The `cpu@...` nodes of QEMU's tree, counted with a plain scan of the structure block's
/// tokens, independently of `devtree`.
fn count_cpu_nodes(dtb: &[u8]) -> usize {
    let word = |at: usize| {
        dtb.get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) as usize
    };
    let (start, end) = (word(8), word(8) + word(36));
    let (mut at, mut count) = (start, 0);
    while at < end {
        match word(at) {
            1 => {
                let name = dtb.get(at + 4..end).unwrap_or(&[]);
                let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                count += usize::from(name.starts_with(b"cpu@"));
                at += 4 + (len + 1).next_multiple_of(4);
            }
            3 => at += 12 + word(at + 4).next_multiple_of(4),
            _ => at += 4,
        }
    }
    count
}

ktest! {
    fn cpus_beyond_maxcpus_are_counted_and_left_offline() {
        // Count the cpu nodes with a plain token scan, independently of `devtree::parse`,
        // then check the kernel kept min(count, MAXCPUS) and reported the rest.
        let info = crate::bootinfo::system_info();
        let in_tree = count_cpu_nodes(crate::bootinfo::device_tree());
        assert_eq!(info.cpus().len() + info.cpus_ignored, in_tree);
        assert_eq!(ncpu(), in_tree.min(MAXCPUS), "{in_tree} CPUs in the tree");
        assert_eq!(info.cpus_ignored, in_tree.saturating_sub(MAXCPUS));
        for (i, slot) in kern_cpu_info_ptrs.iter().enumerate().skip(ncpu()) {
            assert_eq!(slot.load(Ordering::Relaxed), 0, "slot {i} filled");
        }
    }
}
