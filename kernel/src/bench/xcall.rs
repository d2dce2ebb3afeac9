//! xcall(9) figures: a call to another CPU plus `xc_wait` (`xc_unicast_high`,
//! `xc_unicast_low`), a call to every CPU plus `xc_wait` (`xc_broadcast_high`,
//! `xc_broadcast_low`), and every CPU broadcasting high-priority calls at once
//! (`xc_concurrent_broadcast`, per call).

use super::{SAMPLES, WARMUP, figures, report};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::xcall::{XC_HIGHPRI, xc_broadcast, xc_unicast, xc_wait};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

fn nothing(_: usize, _: usize) {}

/// Times `op` (a call and its wait) `SAMPLES` times after `WARMUP` rounds.
fn time(mut op: impl FnMut()) -> super::Figures {
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t0 = counter();
        op();
        let t1 = counter();
        if i >= WARMUP {
            samples.push(counter_to_ns(t1 - t0));
        }
    }
    figures(&mut samples)
}

/// The unicast and broadcast figures, from the boot CPU.
pub fn latencies() {
    let n = crate::cpu::ncpu_online();
    if n > 1 {
        let other = (crate::cpu::curcpu().index() + 1) % n;
        for (name, flags) in [("xc_unicast_high", XC_HIGHPRI), ("xc_unicast_low", 0)] {
            let f = time(|| xc_wait(xc_unicast(flags, nothing, 0, 0, other)));
            report(name, "insns", f);
        }
    }
    for (name, flags) in [("xc_broadcast_high", XC_HIGHPRI), ("xc_broadcast_low", 0)] {
        let f = time(|| xc_wait(xc_broadcast(flags, nothing, 0, 0)));
        report(name, "insns", f);
    }
}

const ROUNDS: usize = 200;
static STARTED: AtomicU32 = AtomicU32::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);
static GO: AtomicU32 = AtomicU32::new(0);
static T_END: AtomicU64 = AtomicU64::new(0);
static T_START: AtomicU64 = AtomicU64::new(0);
static ARRIVED: AtomicU32 = AtomicU32::new(0);

/// One CPU's part of the concurrent figure: `ROUNDS` high-priority broadcasts, each waited.
fn broadcaster(_: usize) {
    STARTED.fetch_add(1, Ordering::AcqRel);
    // Sleeping, not spinning: the thread bound to the starter's CPU outranks the starter.
    while GO.load(Ordering::Acquire) == 0 {
        crate::kthread::kpause(1);
    }
    // Each thread wakes at its own CPU's tick: line them up, then start together.
    let n = crate::cpu::ncpu_online() as u32;
    if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == n {
        T_START.store(counter(), Ordering::Release);
    }
    while ARRIVED.load(Ordering::Acquire) < n {
        crate::arch::aarch64::cpu_relax();
    }
    for _ in 0..ROUNDS {
        xc_wait(xc_broadcast(XC_HIGHPRI, nothing, 0, 0));
    }
    if FINISHED.fetch_add(1, Ordering::AcqRel) + 1 == crate::cpu::ncpu_online() as u32 {
        T_END.store(counter(), Ordering::Release);
    }
}

/// `xc_concurrent_broadcast`: every CPU (a bound thread each) broadcasting high-priority
/// calls at once; the figure is the elapsed time (all lined up to the last finish) per call of
/// all CPUs' calls, one sample per run of `ROUNDS` calls on each CPU.
pub fn concurrent() {
    let n = crate::cpu::ncpu_online();
    let mut samples = alloc::vec::Vec::new();
    for _ in 0..5 {
        STARTED.store(0, Ordering::Relaxed);
        FINISHED.store(0, Ordering::Relaxed);
        GO.store(0, Ordering::Relaxed);
        ARRIVED.store(0, Ordering::Relaxed);
        let mut threads = alloc::vec::Vec::new();
        for cpu in 0..n {
            let mut l = None;
            crate::kthread::kthread_create(
                150,
                crate::kthread::KTHREAD_MPSAFE | crate::kthread::KTHREAD_MUSTJOIN,
                Some(cpu),
                broadcaster,
                cpu,
                Some(&mut l),
                format_args!("xcb/{cpu}"),
            )
            .expect("kthread_create");
            threads.push(l.expect("lwp"));
        }
        while STARTED.load(Ordering::Acquire) < n as u32 {
            crate::kthread::kpause(1);
        }
        GO.store(1, Ordering::Release);
        for t in threads {
            crate::kthread::kthread_join(t);
        }
        let (t0, t1) = (
            T_START.load(Ordering::Acquire),
            T_END.load(Ordering::Acquire),
        );
        samples.push(counter_to_ns(t1 - t0) / (ROUNDS * n) as u64);
    }
    report("xc_concurrent_broadcast", "insns", figures(&mut samples));
}
