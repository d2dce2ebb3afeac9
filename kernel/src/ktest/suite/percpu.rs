//! DPCPU: each CPU's copy is its own, and the offset table describes where the copies are.

use crate::cpu::{cpus, curcpu};
use crate::ktest;
use crate::ktest::all_cpus_barrier;
use crate::percpu::{kern_dpcpu_off, section};
use core::sync::atomic::{AtomicU64, Ordering};

crate::dpcpu_define! {
    static TEST_BUMPS: AtomicU64 = AtomicU64::new(1000);
}

/// How many times CPU `i` bumps its counter.
fn bumps(cpu: usize) -> u64 {
    (cpu as u64 + 1) * 1000 + 7
}

ktest! {
    #[all_cpus]
    fn dpcpu_copies_are_independent_per_cpu() {
        let me = curcpu().index();
        let mine = TEST_BUMPS.get();
        all_cpus_barrier();
        mine.store(0, Ordering::Relaxed);
        all_cpus_barrier();
        for _ in 0..bumps(me) {
            mine.fetch_add(1, Ordering::Relaxed);
        }
        all_cpus_barrier();
        for ci in cpus().filter(|c| c.is_online()) {
            let value = TEST_BUMPS.on_cpu(ci.index()).load(Ordering::Relaxed);
            assert_eq!(value, bumps(ci.index()), "cpu{me} reads cpu{}'s copy", ci.index());
        }
        assert!(core::ptr::eq(mine, TEST_BUMPS.on_cpu(me)), "get() is not on_cpu(me)");
        // SAFETY: the template is a static `AtomicU64` in the DPCPU section.
        let template = unsafe { &*(TEST_BUMPS.template_address() as *const AtomicU64) };
        assert_eq!(template.load(Ordering::Relaxed), 1000, "the template was written");
    }
}

ktest! {
    fn dpcpu_offsets_are_published_and_copies_do_not_overlap() {
        let (start, end) = section();
        let size = end - start;
        assert!(size > 0, "the DPCPU section is empty");
        for ci in cpus() {
            let off = kern_dpcpu_off[ci.index()].load(Ordering::Relaxed);
            assert_ne!(off, 0, "cpu{} has no DPCPU copy", ci.index());
            assert_eq!(off, ci.dpcpu_off.load(Ordering::Relaxed), "cpu{}", ci.index());
            let copy = start.wrapping_add(off);
            for other in cpus().filter(|o| o.index() > ci.index()) {
                let other_copy =
                    start.wrapping_add(kern_dpcpu_off[other.index()].load(Ordering::Relaxed));
                assert!(
                    copy + size <= other_copy || other_copy + size <= copy,
                    "copies of cpu{} and cpu{} overlap",
                    ci.index(),
                    other.index()
                );
            }
        }
        assert!(crate::percpu::in_section(TEST_BUMPS.template_address(), start, end));
    }
}
