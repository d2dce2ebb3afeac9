//! workqueue(9) figures: enqueue to the work's first line on this CPU (`wq_local`) and on
//! another (`wq_remote`), enqueue plus `workqueue_wait` (`wq_local_wait`), and the cost per item
//! of 1,000 items queued back to back on one CPU and then waited for (`wq_throughput`).

use super::{SAMPLES, WARMUP, figures, report, report_hundredths};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::workqueue::{TypedWorkqueue, WQ_MPSAFE, WQ_PERCPU, WorkItem};
use core::sync::atomic::{AtomicU64, Ordering};

static T1: AtomicU64 = AtomicU64::new(0);
static ITEM: WorkItem<()> = WorkItem::new("bench", ());
const BATCH: usize = 1000;
static BATCH_ITEMS: [WorkItem<()>; BATCH] = [const { WorkItem::new("batch", ()) }; BATCH];

fn first_line(_: &'static WorkItem<()>) {
    T1.store(counter(), Ordering::Release);
}

fn nothing(_: &'static WorkItem<()>) {}

/// A per-CPU queue whose workers outrank the measuring thread (priority 120 against lwp0's
/// 96), so a wakeup switches to the worker at once, as a driver's queue would.
fn latency_queue() -> TypedWorkqueue<()> {
    TypedWorkqueue::create(
        "bench-wq",
        first_line,
        120,
        crate::spl::IPL_VM,
        WQ_MPSAFE | WQ_PERCPU,
    )
    .expect("workqueue_create")
}

/// `wq_local`, `wq_local_wait` and (with a second CPU) `wq_remote`.
pub fn latencies() {
    let wq = latency_queue();
    let me = crate::cpu::curcpu().index();
    let mut local = alloc::vec::Vec::with_capacity(SAMPLES);
    let mut local_wait = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        T1.store(0, Ordering::Relaxed);
        let t0 = counter();
        wq.enqueue(&ITEM, Some(me));
        let t_first = T1.load(Ordering::Acquire);
        wq.wait(&ITEM);
        let t_done = counter();
        if i >= WARMUP && t_first != 0 {
            local.push(counter_to_ns(t_first - t0));
            local_wait.push(counter_to_ns(t_done - t0));
        }
    }
    report("wq_local", "insns", figures(&mut local));
    report("wq_local_wait", "insns", figures(&mut local_wait));
    if crate::cpu::ncpu_online() > 1 {
        let other = (me + 1) % crate::cpu::ncpu_online();
        let mut remote = alloc::vec::Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            T1.store(0, Ordering::Relaxed);
            let t0 = counter();
            wq.enqueue(&ITEM, Some(other));
            while T1.load(Ordering::Acquire) == 0 {
                crate::arch::aarch64::cpu_relax();
            }
            let t1 = T1.load(Ordering::Acquire);
            wq.wait(&ITEM);
            if i >= WARMUP {
                remote.push(counter_to_ns(t1 - t0));
            }
        }
        report("wq_remote", "insns", figures(&mut remote));
    }
    wq.destroy();
}

/// `wq_throughput`: 1,000 items queued back to back on this CPU (the worker at the caller's
/// priority, so it runs once the caller waits), then waited for; one sample is the time per
/// item, in hundredths of an instruction, over 100 such batches.
pub fn throughput() {
    let wq = TypedWorkqueue::create(
        "bench-tput",
        nothing,
        crate::sched::PRI_KTHREAD,
        crate::spl::IPL_VM,
        WQ_MPSAFE | WQ_PERCPU,
    )
    .expect("workqueue_create");
    let me = crate::cpu::curcpu().index();
    let mut samples = alloc::vec::Vec::with_capacity(100);
    for round in 0..110 {
        let t0 = counter();
        for item in &BATCH_ITEMS {
            wq.enqueue(item, Some(me));
        }
        for item in &BATCH_ITEMS {
            wq.wait(item);
        }
        if round >= 10 {
            samples.push(counter_to_ns(counter() - t0) * 100 / BATCH as u64);
        }
    }
    wq.destroy();
    report_hundredths("wq_throughput", "insns", figures(&mut samples));
}
