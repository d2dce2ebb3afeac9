//! workqueue(9): exact counts on every CPU of a WQ_PERCPU queue, enqueue from a hard interrupt,
//! `workqueue_wait` against a slow callback, the kernel lock, WQ_FPU, create/destroy leaving
//! nothing behind, and misuse (double enqueue, destroy with pending work, wait from the worker).

use crate::arch::aarch64::counter;
use crate::cpu::{MAXCPUS, curcpu, ncpu_online};
use crate::intr::{intr_disestablish, intr_establish};
use crate::ktest;
use crate::ktest::suite::spin_ms;
use crate::ktest::{all_cpus_barrier, wait_until};
use crate::platform::{IpiTarget, platform};
use crate::sched::{kpreempt_disable, kpreempt_enable};
use crate::spl::*;
use crate::workqueue::*;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

// ---- 100,000 works on every CPU of a WQ_PERCPU queue ------------------------------------------

const POOL: usize = 32;
static ITEMS: [[WorkItem<u32>; POOL]; MAXCPUS] = {
    let mut all = [const { [const { WorkItem::new("percpu-work", 0) }; POOL] }; MAXCPUS];
    let mut c = 0;
    while c < MAXCPUS {
        let mut i = 0;
        while i < POOL {
            all[c][i] = WorkItem::new("percpu-work", c as u32);
            i += 1;
        }
        c += 1;
    }
    all
};
static RAN: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static WRONG_CPU: AtomicU64 = AtomicU64::new(0);
static PERCPU_WQ: AtomicPtr<TypedWorkqueue<u32>> = AtomicPtr::new(core::ptr::null_mut());

fn count_on_cpu(item: &'static WorkItem<u32>) {
    let me = curcpu().index();
    if me as u32 != item.data {
        WRONG_CPU.fetch_add(1, Ordering::Relaxed);
    }
    RAN[me].fetch_add(1, Ordering::Relaxed);
}

ktest! {
    #[all_cpus]
    #[timeout_ms(300_000)]
    fn one_hundred_thousand_works_on_a_percpu_queue_each_run_once_on_the_cpu_they_were_queued_on() {
        let me = curcpu().index();
        if me == 0 {
            WRONG_CPU.store(0, Ordering::Relaxed);
            for r in &RAN {
                r.store(0, Ordering::Relaxed);
            }
            let wq = TypedWorkqueue::create("wq-percpu", count_on_cpu, 96, IPL_VM, WQ_MPSAFE | WQ_PERCPU)
                .expect("workqueue_create");
            PERCPU_WQ.store(alloc::boxed::Box::into_raw(alloc::boxed::Box::new(wq)), Ordering::Release);
        }
        all_cpus_barrier();
        // SAFETY: set by cpu0 before the barrier, freed by it after the last one.
        let wq = unsafe { &*PERCPU_WQ.load(Ordering::Acquire) };
        let n = 100_000 / ncpu_online() as u64;
        for i in 0..n as usize {
            let item = &ITEMS[me][i % POOL];
            wq.wait(item);
            wq.enqueue(item, Some(me));
        }
        for item in &ITEMS[me] {
            wq.wait(item);
        }
        assert_eq!(RAN[me].load(Ordering::Acquire), n, "cpu{me}: works run");
        all_cpus_barrier();
        assert_eq!(WRONG_CPU.load(Ordering::Relaxed), 0, "a work ran on another CPU than its own");
        all_cpus_barrier();
        if me == 0 {
            // SAFETY: made by `Box::into_raw` above; every CPU is done with it (barrier).
            let wq = unsafe { alloc::boxed::Box::from_raw(PERCPU_WQ.swap(core::ptr::null_mut(), Ordering::AcqRel)) };
            wq.destroy();
        }
    }
}

// ---- enqueue from a hard interrupt ----------------------------------------------------------

const SGI_WQ: u32 = 7;
static IRQ_ITEM: WorkItem<()> = WorkItem::new("from-irq", ());
static IRQ_WQ: AtomicPtr<TypedWorkqueue<()>> = AtomicPtr::new(core::ptr::null_mut());
static IRQ_RAN: AtomicU32 = AtomicU32::new(0);

fn ran_in_thread(_: &'static WorkItem<()>) {
    let in_thread = !crate::intr::cpu_intr_p() && curipl() == IPL_NONE;
    IRQ_RAN.store(1 + u32::from(in_thread), Ordering::Release);
}

static IRQ_FIRED: AtomicBool = AtomicBool::new(false);

fn enqueue_in_handler(_: usize) -> bool {
    // Once per test run, whatever else sends SGI 7 meanwhile.
    if IRQ_FIRED.swap(true, Ordering::AcqRel) {
        return true;
    }
    // SAFETY: the test keeps the queue alive while the SGI is established.
    let wq = unsafe { &*IRQ_WQ.load(Ordering::Acquire) };
    wq.enqueue(&IRQ_ITEM, None);
    true
}

ktest! {
    fn workqueue_enqueue_from_a_hard_interrupt_handler_runs_the_work_in_thread_context() {
        IRQ_RAN.store(0, Ordering::Relaxed);
        IRQ_FIRED.store(false, Ordering::Relaxed);
        let wq = alloc::boxed::Box::new(
            TypedWorkqueue::create("wq-irq", ran_in_thread, 96, IPL_VM, WQ_MPSAFE).expect("create"),
        );
        IRQ_WQ.store(&*wq as *const _ as *mut _, Ordering::Release);
        let h = intr_establish(SGI_WQ, IPL_VM, 0, enqueue_in_handler, 0).expect("SGI 7");
        platform().send_ipi(IpiTarget::Cpu(curcpu().index()), SGI_WQ);
        // Sleep (not spin) until it ran: on one CPU the worker runs only while this thread
        // sleeps.
        let queued = wait_until(5000, || {
            IRQ_ITEM.work().is_pending() || IRQ_RAN.load(Ordering::Acquire) != 0
        });
        wq.wait(&IRQ_ITEM);
        let ran = queued && IRQ_RAN.load(Ordering::Acquire) != 0;
        intr_disestablish(h);
        IRQ_WQ.store(core::ptr::null_mut(), Ordering::Release);
        wq.destroy();
        assert!(ran, "the work enqueued by the handler never ran");
        assert_eq!(IRQ_RAN.load(Ordering::Acquire), 2, "the work did not run in thread context at IPL_NONE");
    }
}

// ---- workqueue_wait ------------------------------------------------------------------------------

static SLOW_ITEM: WorkItem<()> = WorkItem::new("slow", ());
static SLOW_DONE: AtomicBool = AtomicBool::new(false);

fn slow(_: &'static WorkItem<()>) {
    spin_ms(50);
    SLOW_DONE.store(true, Ordering::Release);
}

ktest! {
    fn workqueue_wait_returns_only_after_the_callback_returned_and_at_once_when_idle() {
        SLOW_DONE.store(false, Ordering::Relaxed);
        let wq = TypedWorkqueue::create("wq-wait", slow, 96, IPL_NONE, WQ_MPSAFE).expect("create");
        wq.wait(&SLOW_ITEM); // never enqueued: returns at once
        wq.enqueue(&SLOW_ITEM, None);
        wq.wait(&SLOW_ITEM);
        assert!(SLOW_DONE.load(Ordering::Acquire), "workqueue_wait returned before the callback did");
        let t0 = counter();
        wq.wait(&SLOW_ITEM); // idle now
        let waited = counter() - t0;
        assert!(waited < crate::clock::ms_to_counter(10), "waiting on an idle work slept");
        wq.destroy();
    }
}

// ---- kernel lock, FPU -----------------------------------------------------------------------------

static HELD: AtomicU32 = AtomicU32::new(0);
static LOCK_ITEM: WorkItem<()> = WorkItem::new("lock-probe", ());

fn note_kernel_lock(_: &'static WorkItem<()>) {
    HELD.store(
        1 + u32::from(crate::sync::kernel_lock::kernel_lock_held()),
        Ordering::Release,
    );
}

ktest! {
    fn kernel_lock_is_held_around_each_work_without_wq_mpsafe_only() {
        for (flags, want) in [(0, 2u32), (WQ_MPSAFE, 1)] {
            HELD.store(0, Ordering::Relaxed);
            let wq = TypedWorkqueue::create("wq-lock", note_kernel_lock, 96, IPL_NONE, flags).expect("create");
            wq.enqueue(&LOCK_ITEM, None);
            wq.wait(&LOCK_ITEM);
            wq.destroy();
            assert_eq!(HELD.load(Ordering::Acquire), want, "flags {flags:#x}");
        }
    }
}

static FPU_ITEMS: [WorkItem<u32>; 2] = [WorkItem::new("fpu-a", 0), WorkItem::new("fpu-b", 1)];
static FPU_SEEN: [AtomicU64; 2] = [const { AtomicU64::new(u64::MAX) }; 2];
static FPU_ON: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

fn fpu_work(item: &'static WorkItem<u32>) {
    use crate::arch::aarch64::context::{self, FpState};
    let i = item.data as usize;
    FPU_ON[i].store(
        crate::sched::curlwp().fpu_on.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let mut s = FpState::zero();
    context::fpu_save_to(&mut s);
    let nonzero = s.v.iter().filter(|&&v| v != 0).count() as u64;
    FPU_SEEN[i].store(nonzero, Ordering::Release);
    // Leave something behind for the next work to (not) see.
    for v in s.v.iter_mut() {
        *v = 0x5555_aaaa_5555_aaaa_5555_aaaa_5555_aaaa;
    }
    context::fpu_restore_from(&s);
}

ktest! {
    fn wq_fpu_works_run_with_fp_enabled_and_each_starts_from_zeroed_registers() {
        let wq = TypedWorkqueue::create("wq-fpu", fpu_work, 96, IPL_NONE, WQ_MPSAFE | WQ_FPU).expect("create");
        for item in &FPU_ITEMS {
            wq.enqueue(item, None);
            wq.wait(item);
        }
        wq.destroy();
        for i in 0..2 {
            assert!(FPU_ON[i].load(Ordering::Relaxed), "work {i} ran without FP enabled");
            assert_eq!(FPU_SEEN[i].load(Ordering::Acquire), 0, "work {i} found non-zero FP registers");
        }
    }
}

// ---- create/destroy leaves nothing behind -----------------------------------------------------------

fn nothing(_: &'static WorkItem<()>) {}
static ONE: WorkItem<()> = WorkItem::new("one", ());

ktest! {
    #[timeout_ms(300_000)]
    fn creating_and_destroying_a_thousand_queues_leaves_heap_and_threads_as_they_were() {
        // Warm up the lists that keep their capacity.
        TypedWorkqueue::create("wq-warm", nothing, 96, IPL_NONE, WQ_MPSAFE | WQ_PERCPU)
            .expect("create")
            .destroy();
        let threads = crate::kthread::thread_count();
        let heap = crate::heap::stats().user;
        for i in 0..1000 {
            let flags = if i % 2 == 0 { WQ_MPSAFE } else { WQ_MPSAFE | WQ_PERCPU };
            let wq = TypedWorkqueue::create("wq-churn", nothing, 96, IPL_VM, flags).expect("create");
            if i % 10 == 0 {
                wq.enqueue(&ONE, None);
                wq.wait(&ONE);
            }
            wq.destroy();
        }
        assert_eq!(crate::kthread::thread_count(), threads, "threads left behind");
        assert_eq!(crate::heap::stats().user, heap, "heap bytes left behind");
    }
}

// ---- misuse --------------------------------------------------------------------------------------------

static TWICE: WorkItem<()> = WorkItem::new("twice", ());

ktest! {
    #[should_panic("workqueue_enqueue(wq-twice, twice): the work is already pending")]
    fn enqueueing_a_pending_work_again_is_caught_naming_queue_and_work() {
        // A per-CPU queue and preemption disabled: this CPU's worker cannot take it meanwhile.
        let wq = TypedWorkqueue::create("wq-twice", nothing, 96, IPL_NONE, WQ_MPSAFE | WQ_PERCPU)
            .expect("create");
        kpreempt_disable();
        wq.enqueue(&TWICE, None);
        wq.enqueue(&TWICE, None);
        kpreempt_enable();
    }
}

static LEFT: WorkItem<()> = WorkItem::new("left", ());

ktest! {
    #[should_panic("workqueue_destroy(wq-pending): 1 work(s) still pending")]
    fn destroying_a_queue_with_pending_work_is_caught() {
        let wq = TypedWorkqueue::create("wq-pending", nothing, 96, IPL_NONE, WQ_MPSAFE | WQ_PERCPU)
            .expect("create");
        kpreempt_disable();
        wq.enqueue(&LEFT, None);
        wq.destroy();
    }
}

static SELF_WAIT: WorkItem<()> = WorkItem::new("self-wait", ());
static SELF_WQ: AtomicPtr<TypedWorkqueue<()>> = AtomicPtr::new(core::ptr::null_mut());

static SELF_WAITING: AtomicBool = AtomicBool::new(false);

fn waits_on_itself(item: &'static WorkItem<()>) {
    // SAFETY: the test leaks the queue, so it outlives this call.
    let wq = unsafe { &*SELF_WQ.load(Ordering::Acquire) };
    SELF_WAITING.store(true, Ordering::Release);
    wq.wait(item);
}

ktest! {
    #[should_panic("workqueue_wait(wq-self, self-wait): called from the queue's own worker")]
    fn workqueue_wait_from_the_queues_own_worker_is_caught() {
        let wq = alloc::boxed::Box::leak(alloc::boxed::Box::new(
            TypedWorkqueue::create("wq-self", waits_on_itself, 96, IPL_NONE, WQ_MPSAFE).expect("create"),
        ));
        SELF_WQ.store(wq as *mut _, Ordering::Release);
        SELF_WAITING.store(false, Ordering::Relaxed);
        wq.enqueue(&SELF_WAIT, None);
        // Sleep so that the worker runs (on one CPU too); it panics, and the harness ends it
        // and records the failure for this test.
        for _ in 0..200 {
            if SELF_WAITING.load(Ordering::Acquire) {
                break;
            }
            crate::kthread::kpause(1);
        }
        crate::kthread::kpause(2);
    }
}
