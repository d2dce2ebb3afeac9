//! kthread_fpu_enter/exit: nesting, state kept across preemption, registers zeroed on exit,
//! and a trap when FP/SIMD is used outside a section.

use crate::arch::aarch64::context::{self, FpState};
use crate::ktest;
use crate::kthread::*;
use core::sync::atomic::{AtomicU64, Ordering};

fn pattern(seed: u64) -> FpState {
    let mut s = FpState::zero();
    for (i, v) in s.v.iter_mut().enumerate() {
        *v = (u128::from(seed) << 64) | u128::from(seed ^ (i as u64 * 0x9e37_79b9));
    }
    s.fpcr = 0;
    s
}

fn read_regs() -> FpState {
    let mut s = FpState::zero();
    context::fpu_save_to(&mut s);
    s
}

ktest! {
    fn fpu_sections_nest_and_only_the_outermost_exit_disables() {
        let outer = kthread_fpu_enter();
        context::fpu_restore_from(&pattern(1));
        let inner = kthread_fpu_enter();
        // The inner enter must not reset the registers.
        assert_eq!(read_regs().v, pattern(1).v, "inner enter changed the registers");
        kthread_fpu_exit(inner);
        assert_eq!(read_regs().v, pattern(1).v, "inner exit changed the registers");
        kthread_fpu_exit(outer);
        assert!(!crate::sched::curlwp().fpu_on.load(Ordering::Relaxed));
    }
}

ktest! {
    fn outermost_enter_starts_zeroed_and_exit_leaves_zeroed_registers() {
        with_fpu(|| context::fpu_restore_from(&pattern(0xdead_beef)));
        // Peek at the register file without a section (as a later user would find it).
        context::fpu_enable();
        let after = read_regs();
        context::fpu_disable();
        assert!(after.v.iter().all(|&v| v == 0), "registers not zeroed by the outermost exit");
        assert_eq!((after.fpsr, after.fpcr), (0, 0), "FPSR/FPCR not zeroed");
        let fresh = with_fpu(read_regs);
        assert!(fresh.v.iter().all(|&v| v == 0), "enter did not start from zeroed registers");
    }
}

static FPU_BAD: AtomicU64 = AtomicU64::new(0);

fn fpu_worker(seed: usize) {
    let _g = FpuGuard::enter();
    let want = pattern(seed as u64);
    context::fpu_restore_from(&want);
    let ticks = || crate::cpu::curcpu().tick_count.load(Ordering::Relaxed);
    let t0 = ticks();
    let mut switches = crate::sched::curlwp().switches();
    // Spin through several time slices (40 ticks of this CPU) so the two threads preempt each
    // other.
    while ticks() - t0 < 40 {
        if read_regs().v != want.v {
            FPU_BAD.fetch_add(1, Ordering::Relaxed);
        }
        switches = switches.max(crate::sched::curlwp().switches());
    }
    if switches < 2 {
        // Never preempted: the test would prove nothing.
        FPU_BAD.fetch_add(1_000_000, Ordering::Relaxed);
    }
}

ktest! {
    #[timeout_ms(60_000)]
    fn fpu_state_survives_preemption_between_two_threads() {
        FPU_BAD.store(0, Ordering::Relaxed);
        let cpu = crate::cpu::ncpu_online() - 1;
        let mut a = None;
        let mut b = None;
        kthread_create(100, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, Some(cpu), fpu_worker, 0x1111, Some(&mut a),
            format_args!("fpu/a")).expect("create");
        kthread_create(100, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, Some(cpu), fpu_worker, 0x2222, Some(&mut b),
            format_args!("fpu/b")).expect("create");
        kthread_join(a.expect("a"));
        kthread_join(b.expect("b"));
        let bad = FPU_BAD.load(Ordering::Relaxed);
        assert!(bad < 1_000_000, "a thread was never preempted");
        assert_eq!(bad, 0, "FP registers changed under a thread {bad} times");
    }
}

ktest! {
    #[should_panic("outside kthread_fpu_enter/exit in thread ktest/0")]
    fn fp_use_outside_a_section_traps_naming_the_thread() {
        let _ = read_regs();
    }
}

ktest! {
    #[should_panic("kthread_fpu_exit: ktest/0 is not inside kthread_fpu_enter")]
    fn fpu_exit_without_enter_is_caught() {
        let s = kthread_fpu_enter();
        kthread_fpu_exit(s);
        kthread_fpu_exit(s);
    }
}
