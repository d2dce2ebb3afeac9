//! Tests of the test harness itself: a failing assertion is caught and reported, and an
//! expected panic passes only with the expected message.

use crate::ktest;

ktest! {
    #[should_panic("deliberate panic 42")]
    fn harness_catches_a_panic_and_checks_its_message() {
        let n = 42;
        panic!("deliberate panic {n}");
    }
}

ktest! {
    #[all_cpus]
    #[should_panic("every cpu panics")]
    fn harness_catches_panics_on_every_cpu_at_once() {
        crate::ktest::all_cpus_barrier();
        panic!("every cpu panics on cpu{}", crate::cpu::curcpu().index());
    }
}

ktest! {
    fn harness_is_usable_after_a_caught_panic() {
        // Runs after the panicking tests above: the console lock and this CPU's state must
        // have survived them.
        crate::kprintln!("      (console still works after caught panics)");
        assert!(!crate::arch::aarch64::irqs_masked(), "IRQs left masked by the recovery path");
    }
}
