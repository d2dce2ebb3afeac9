//! softint(9) figures: from `softint_schedule` to the handler's first line, scheduled from a
//! thread (`softint_local`) and from a hard interrupt handler (`softint_intr`).

use super::{SAMPLES, WARMUP, figures, report};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::softint::{SOFTINT_MPSAFE, SOFTINT_SERIAL, SoftintHandle, softint_establish};
use core::sync::atomic::{AtomicU64, Ordering};

static T0: AtomicU64 = AtomicU64::new(0);
static T1: AtomicU64 = AtomicU64::new(0);
static HANDLE: AtomicU64 = AtomicU64::new(0);

fn first_line(_: usize) {
    T1.store(counter(), Ordering::Release);
}

fn handle() -> SoftintHandle {
    SoftintHandle::from_raw(HANDLE.load(Ordering::Acquire))
}

fn establish() -> SoftintHandle {
    let h = softint_establish(SOFTINT_SERIAL | SOFTINT_MPSAFE, first_line, 0).expect("softint");
    HANDLE.store(h.to_raw(), Ordering::Release);
    h
}

/// `softint_local`: `softint_schedule` from a thread at IPL_NONE (preemption disabled around
/// it, as the call requires) to the handler's first line, on the same CPU.
pub fn softint_local() {
    let h = establish();
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        T1.store(0, Ordering::Relaxed);
        let t0 = counter();
        crate::sched::kpreempt_disable();
        crate::softint::softint_schedule(h);
        crate::sched::kpreempt_enable();
        let t1 = T1.load(Ordering::Acquire);
        if i >= WARMUP && t1 != 0 {
            samples.push(counter_to_ns(t1 - t0));
        }
    }
    crate::softint::softint_disestablish(h);
    report("softint_local", "insns", figures(&mut samples));
}

const SGI_BENCH: u32 = 7;

fn hard(_: usize) -> bool {
    T0.store(counter(), Ordering::Release);
    crate::softint::softint_schedule(handle());
    true
}

/// `softint_intr`: `softint_schedule` in a hard interrupt handler (an SGI to this CPU) to the
/// softint handler's first line.
pub fn softint_intr() {
    let h = establish();
    let irq =
        crate::intr::intr_establish(SGI_BENCH, crate::spl::IPL_VM, 0, hard, 0).expect("SGI 7");
    let me = crate::cpu::curcpu().index();
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        T1.store(0, Ordering::Relaxed);
        crate::platform::platform().send_ipi(crate::platform::IpiTarget::Cpu(me), SGI_BENCH);
        while T1.load(Ordering::Acquire) == 0 {
            crate::arch::aarch64::cpu_relax();
        }
        if i >= WARMUP {
            let t = T1.load(Ordering::Acquire) - T0.load(Ordering::Acquire);
            samples.push(counter_to_ns(t));
        }
    }
    crate::intr::intr_disestablish(irq);
    crate::softint::softint_disestablish(h);
    report("softint_intr", "insns", figures(&mut samples));
}
