//! The clock tick runs on every CPU.

use crate::cpu::curcpu;
use crate::ktest;
use crate::ktest::wait_until;
use core::sync::atomic::Ordering;

ktest! {
    #[all_cpus]
    fn ticks_advance_on_every_cpu() {
        let ci = curcpu();
        let start = ci.tick_count.load(Ordering::Relaxed);
        let advanced = wait_until(2000, || ci.tick_count.load(Ordering::Relaxed) >= start + 5);
        assert!(
            advanced,
            "cpu{}: tick count stuck at {} (started at {start})",
            ci.index(),
            ci.tick_count.load(Ordering::Relaxed)
        );
    }
}
