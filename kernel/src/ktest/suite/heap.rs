//! The kernel heap under concurrent use keeps exact accounting and never hands out the same
//! memory twice.

use crate::cpu::curcpu;
use crate::heap::stats;
use crate::kprintln;
use crate::ktest;
use crate::ktest::all_cpus_barrier;
use crate::ktest::suite::{Lcg, seed};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

static SEED: AtomicU64 = AtomicU64::new(0);
static BEFORE_USER: AtomicU64 = AtomicU64::new(0);
static BEFORE_ACTUAL: AtomicU64 = AtomicU64::new(0);

ktest! {
    #[all_cpus]
    #[timeout_ms(120_000)]
    fn heap_alloc_and_free_from_all_cpus_at_once_keeps_exact_accounting() {
        let me = curcpu().index();
        all_cpus_barrier();
        if me == 0 {
            let s = seed();
            kprintln!("      heap stress seed {s:#x} (replay with ktest.seed={s:x})");
            SEED.store(s, Ordering::Relaxed);
            let st = stats();
            BEFORE_USER.store(st.user as u64, Ordering::Relaxed);
            BEFORE_ACTUAL.store(st.actual as u64, Ordering::Relaxed);
        }
        all_cpus_barrier();
        let mut rng = Lcg::new(SEED.load(Ordering::Relaxed) ^ ((me as u64 + 1) << 32));
        let mut live: Vec<(Vec<u8>, u8)> = Vec::with_capacity(32);
        for i in 0..3000u32 {
            if live.len() < 32 && (live.is_empty() || !rng.next().is_multiple_of(3)) {
                let size = 1 + (rng.next() as usize % 4096) * if rng.next().is_multiple_of(16) { 64 } else { 1 };
                let tag = (rng.next() as u8) | 1;
                let block = alloc::vec![tag; size];
                live.push((block, tag));
            } else {
                let at = rng.next() as usize % live.len();
                let (block, tag) = live.swap_remove(at);
                assert!(
                    block.iter().all(|&b| b == tag),
                    "cpu{me}: iteration {i}: a {}-byte block was overwritten", block.len()
                );
            }
        }
        for (block, tag) in live.drain(..) {
            assert!(block.iter().all(|&b| b == tag), "cpu{me}: a live block was overwritten");
        }
        drop(live);
        all_cpus_barrier();
        if me == 0 {
            let st = stats();
            assert_eq!(st.user as u64, BEFORE_USER.load(Ordering::Relaxed), "user bytes differ");
            assert_eq!(st.actual as u64, BEFORE_ACTUAL.load(Ordering::Relaxed), "actual bytes differ");
        }
    }
}

ktest! {
    fn heap_accounting_follows_one_allocation() {
        let before = stats();
        let block: Vec<u8> = core::hint::black_box(Vec::with_capacity(1000));
        let during = stats();
        assert_eq!(during.user, before.user + 1000);
        assert!(during.actual >= before.actual + 1024);
        drop(block);
        assert_eq!(stats(), before);
    }
}
