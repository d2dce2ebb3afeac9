//! softint(9): order of levels, blocking by the IPL, idempotent scheduling, remote CPUs, exact
//! counts under an interrupt storm, disestablish waiting for a running handler, the kernel
//! lock, the livelock guard, blocking handlers, and misuse.

use crate::arch::aarch64 as arch;
use crate::cpu::{MAXCPUS, curcpu, ncpu_online};
use crate::intr::{intr_disestablish, intr_establish};
use crate::ktest;
use crate::ktest::suite::{spawn_joinable, spin_ms};
use crate::ktest::{all_cpus_barrier, wait_until};
use crate::kthread::*;
use crate::platform::{IpiTarget, platform};
use crate::sched::{kpreempt_disable, kpreempt_enable};
use crate::softint::*;
use crate::spl::*;
use crate::sync::mutex::KMutex;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

static LOG: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
static LOG_LEN: AtomicUsize = AtomicUsize::new(0);

fn log_level(level: usize) {
    let i = LOG_LEN.fetch_add(1, Ordering::AcqRel);
    if let Some(slot) = LOG.get(i) {
        slot.store(level as u32 + 1, Ordering::Release);
    }
}

fn est(flags: u32, f: SoftintFunc, arg: usize) -> SoftintHandle {
    softint_establish(flags | SOFTINT_MPSAFE, f, arg).expect("softint table full")
}

ktest! {
    fn pending_softints_run_serial_then_net_then_bio_then_clock_each_at_its_ipl() {
        static SEEN_IPL: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
        fn h(level: usize) {
            SEEN_IPL[level].store(u32::from(curipl().as_u8()), Ordering::Relaxed);
            log_level(level);
        }
        LOG_LEN.store(0, Ordering::Relaxed);
        let levels = [SOFTINT_CLOCK, SOFTINT_BIO, SOFTINT_NET, SOFTINT_SERIAL];
        let hs: [SoftintHandle; 4] = core::array::from_fn(|i| est(levels[i], h, i));
        let s = splsoftserial();
        for h in hs {
            softint_schedule(h);
        }
        assert_eq!(LOG_LEN.load(Ordering::Acquire), 0, "a softint ran at IPL_SOFTSERIAL");
        splx(s);
        assert!(wait_until(2000, || LOG_LEN.load(Ordering::Acquire) == 4), "not all four ran");
        let order: [u32; 4] = core::array::from_fn(|i| LOG[i].load(Ordering::Acquire));
        assert_eq!(order, [4, 3, 2, 1], "expected SERIAL, NET, BIO, CLOCK (4 3 2 1)");
        for (i, want) in [1u32, 2, 3, 4].iter().enumerate() {
            assert_eq!(SEEN_IPL[i].load(Ordering::Relaxed), *want, "level {i} ran at the wrong IPL");
        }
        for h in hs {
            softint_disestablish(h);
        }
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fn count(_: usize) {
    RUNS.fetch_add(1, Ordering::AcqRel);
}

ktest! {
    fn softint_scheduled_at_ipl_softnet_runs_only_once_splx_drops_below_it() {
        RUNS.store(0, Ordering::Relaxed);
        let h = est(SOFTINT_NET, count, 0);
        let s = splsoftnet();
        softint_schedule(h);
        spin_ms(30);
        assert_eq!(RUNS.load(Ordering::Acquire), 0, "ran while the IPL blocked it");
        splx(s);
        assert_eq!(RUNS.load(Ordering::Acquire), 1, "did not run as splx lowered the IPL");
        softint_disestablish(h);
    }
}

ktest! {
    fn softint_scheduled_twice_while_pending_runs_once() {
        RUNS.store(0, Ordering::Relaxed);
        let h = est(SOFTINT_BIO, count, 0);
        let s = splsoftbio();
        softint_schedule(h);
        softint_schedule(h);
        splx(s);
        assert!(wait_until(2000, || RUNS.load(Ordering::Acquire) >= 1), "never ran");
        spin_ms(20);
        assert_eq!(RUNS.load(Ordering::Acquire), 1, "two schedules while pending ran twice");
        softint_disestablish(h);
    }
}

static WHERE: [AtomicU32; MAXCPUS] = [const { AtomicU32::new(u32::MAX) }; MAXCPUS];

fn record_cpu(slot: usize) {
    WHERE[slot].store(curcpu().index() as u32, Ordering::Release);
}

ktest! {
    fn softint_schedule_cpu_runs_the_handler_on_the_named_cpu() {
        // In batches of BATCH CPUs: one handle per CPU at once would fill the softint table
        // (MAX_SOFTINTS = 64, some of them taken by the system) at 64 CPUs.
        const BATCH: usize = 8;
        let n = ncpu_online();
        for first in (0..n).step_by(BATCH) {
            let cpus = first..(first + BATCH).min(n);
            let mut hs: [Option<SoftintHandle>; BATCH] = [None; BATCH];
            for (i, c) in cpus.clone().enumerate() {
                hs[i] = Some(est(SOFTINT_SERIAL | SOFTINT_RCPU, record_cpu, c));
            }
            for (i, c) in cpus.clone().enumerate() {
                let h = hs[i].expect("established above");
                WHERE[c].store(u32::MAX, Ordering::Relaxed);
                kpreempt_disable();
                softint_schedule_cpu(h, c);
                kpreempt_enable();
            }
            for c in cpus {
                let ran_on = &WHERE[c];
                assert!(
                    wait_until(2000, || ran_on.load(Ordering::Acquire) != u32::MAX),
                    "the softint for cpu{c} never ran"
                );
                assert_eq!(ran_on.load(Ordering::Acquire), c as u32, "ran on the wrong CPU");
            }
            for h in hs.into_iter().flatten() {
                softint_disestablish(h);
            }
        }
    }
}

// ---- exact counts under an interrupt storm ----------------------------------------------

const SGI_SOFT: u32 = 7;
static STORM_H: AtomicU64 = AtomicU64::new(0);
static HARD: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static SOFT: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

fn sgi_schedules(_: usize) -> bool {
    HARD[curcpu().index()].fetch_add(1, Ordering::Relaxed);
    softint_schedule(SoftintHandle::from_raw(STORM_H.load(Ordering::Acquire)));
    true
}

fn soft_counts(_: usize) {
    SOFT[curcpu().index()].fetch_add(1, Ordering::Relaxed);
}

static STORM_IRQ: crate::sync::SpinLock<Option<crate::intr::IntrHandle>> =
    crate::sync::SpinLock::new(None);

fn setup_storm() {
    let h = est(SOFTINT_NET, soft_counts, 0);
    STORM_H.store(h.to_raw(), Ordering::Release);
    for (hard, soft) in HARD.iter().zip(&SOFT) {
        hard.store(0, Ordering::Relaxed);
        soft.store(0, Ordering::Relaxed);
    }
    *STORM_IRQ.lock() = Some(intr_establish(SGI_SOFT, IPL_VM, 0, sgi_schedules, 0).expect("SGI 7"));
}

fn teardown_storm() {
    if let Some(irq) = STORM_IRQ.lock().take() {
        intr_disestablish(irq);
    }
    softint_disestablish(SoftintHandle::from_raw(STORM_H.load(Ordering::Acquire)));
}

ktest! {
    #[all_cpus]
    #[timeout_ms(300_000)]
    fn one_hundred_thousand_schedules_from_interrupts_on_all_cpus_run_exactly_as_counted() {
        let me = curcpu().index();
        let per_cpu = 100_000 / ncpu_online() as u64;
        if me == 0 {
            setup_storm();
        }
        all_cpus_barrier();
        let (sched0, run0) = counters(me, 2);
        for i in 0..per_cpu {
            platform().send_ipi(IpiTarget::Cpu(me), SGI_SOFT);
            // Now and then let the softint thread run between interrupts.
            if i % 64 == 0 {
                crate::sched::yield_now();
            }
        }
        assert!(wait_until(30_000, || HARD[me].load(Ordering::Acquire) >= per_cpu), "SGIs lost");
        let settled = wait_until(30_000, || {
            let (s, r) = counters(me, 2);
            s - sched0 == r - run0
        });
        let (s, r) = counters(me, 2);
        assert!(settled, "cpu{me}: {} schedules took effect but {} runs", s - sched0, r - run0);
        all_cpus_barrier();
        let hard = HARD[me].load(Ordering::Acquire);
        let soft = SOFT[me].load(Ordering::Acquire);
        assert_eq!(hard, per_cpu, "cpu{me}: SGIs handled");
        assert_eq!(soft, r - run0, "cpu{me}: handler calls differ from the run counter");
        assert!(soft >= 1 && soft <= hard, "cpu{me}: {soft} runs for {hard} schedules");
        all_cpus_barrier();
        if me == 0 {
            teardown_storm();
        }
    }
}

// ---- disestablish against a running handler ------------------------------------------------

static SLOW_STARTED: AtomicBool = AtomicBool::new(false);
static SLOW_DONE: AtomicBool = AtomicBool::new(false);

fn slow(_: usize) {
    SLOW_STARTED.store(true, Ordering::Release);
    spin_ms(50);
    SLOW_DONE.store(true, Ordering::Release);
}

ktest! {
    #[min_cpus(2)]
    fn softint_disestablish_waits_for_the_handler_running_on_another_cpu() {
        SLOW_STARTED.store(false, Ordering::Relaxed);
        SLOW_DONE.store(false, Ordering::Relaxed);
        let h = est(SOFTINT_CLOCK, slow, 0);
        kpreempt_disable();
        softint_schedule_cpu(h, 1);
        kpreempt_enable();
        assert!(wait_until(2000, || SLOW_STARTED.load(Ordering::Acquire)), "never started");
        softint_disestablish(h);
        assert!(SLOW_DONE.load(Ordering::Acquire), "disestablish returned while the handler ran");
    }
}

// ---- the kernel lock ------------------------------------------------------------------------

static HELD: AtomicU32 = AtomicU32::new(0);

fn note_kernel_lock(_: usize) {
    HELD.store(
        1 + u32::from(crate::sync::kernel_lock::kernel_lock_held()),
        Ordering::Release,
    );
}

ktest! {
    fn kernel_lock_is_held_around_a_handler_without_softint_mpsafe_only() {
        for (flags, want) in [(SOFTINT_NET, 2u32), (SOFTINT_NET | SOFTINT_MPSAFE, 1)] {
            HELD.store(0, Ordering::Relaxed);
            let h = softint_establish(flags, note_kernel_lock, 0).expect("table");
            kpreempt_disable();
            softint_schedule(h);
            kpreempt_enable();
            assert!(wait_until(2000, || HELD.load(Ordering::Acquire) != 0), "never ran");
            assert_eq!(HELD.load(Ordering::Acquire), want, "flags {flags:#x}: kernel lock held = {}", want == 2);
            softint_disestablish(h);
        }
    }
}

// ---- livelock guard -------------------------------------------------------------------------

static AGAIN_STOP: AtomicBool = AtomicBool::new(false);
static AGAIN_RUNS: AtomicU64 = AtomicU64::new(0);
static AGAIN_H: AtomicU64 = AtomicU64::new(0);
static PROGRESS: AtomicU64 = AtomicU64::new(0);

fn reschedules_itself(_: usize) {
    AGAIN_RUNS.fetch_add(1, Ordering::Relaxed);
    if !AGAIN_STOP.load(Ordering::Acquire) {
        softint_schedule(SoftintHandle::from_raw(AGAIN_H.load(Ordering::Acquire)));
    }
}

fn makes_progress(_: usize) {
    while !AGAIN_STOP.load(Ordering::Acquire) && !crate::ktest::aborted() {
        PROGRESS.fetch_add(1, Ordering::Relaxed);
        arch::cpu_relax();
    }
}

ktest! {
    #[min_cpus(2)]
    #[timeout_ms(60_000)]
    fn a_handler_that_always_reschedules_itself_does_not_starve_a_thread_on_its_cpu() {
        AGAIN_STOP.store(false, Ordering::Relaxed);
        AGAIN_RUNS.store(0, Ordering::Relaxed);
        PROGRESS.store(0, Ordering::Relaxed);
        let h = est(SOFTINT_SERIAL, reschedules_itself, 0);
        AGAIN_H.store(h.to_raw(), Ordering::Release);
        let t = spawn_joinable(makes_progress, 0, PRI_NONE, KTHREAD_MPSAFE, Some(1));
        kpreempt_disable();
        softint_schedule_cpu(h, 1);
        kpreempt_enable();
        let runs_before = AGAIN_RUNS.load(Ordering::Relaxed);
        spin_ms(20);
        let p0 = PROGRESS.load(Ordering::Acquire);
        let progressed = wait_until(5000, || {
            PROGRESS.load(Ordering::Acquire) > p0 + 1000
                && AGAIN_RUNS.load(Ordering::Relaxed) > runs_before + 100
        });
        AGAIN_STOP.store(true, Ordering::Release);
        kthread_join(t);
        softint_disestablish(h);
        assert!(progressed, "a thread on cpu1 made no progress beside a self-rescheduling softint");
        assert!(AGAIN_RUNS.load(Ordering::Relaxed) > runs_before + 100, "the handler hardly ran");
    }
}

// ---- a handler that blocks --------------------------------------------------------------------

static BLOCK_M: KMutex = KMutex::adaptive();
static BLOCK_IPL: AtomicU32 = AtomicU32::new(0);

fn takes_mutex(_: usize) {
    BLOCK_M.mutex_enter();
    BLOCK_IPL.store(u32::from(curipl().as_u8()) + 1, Ordering::Release);
    BLOCK_M.mutex_exit();
}

ktest! {
    fn a_handler_may_block_on_an_adaptive_mutex_and_gets_its_ipl_back() {
        BLOCK_IPL.store(0, Ordering::Relaxed);
        let h = est(SOFTINT_BIO, takes_mutex, 0);
        BLOCK_M.mutex_enter();
        kpreempt_disable();
        softint_schedule(h);
        kpreempt_enable();
        // The handler is now asleep on the mutex; this thread runs at IPL_NONE meanwhile.
        spin_ms(20);
        assert_eq!(curipl(), IPL_NONE, "the blocked softint left the CPU at a soft level");
        assert_eq!(BLOCK_IPL.load(Ordering::Acquire), 0, "the handler got a held mutex");
        BLOCK_M.mutex_exit();
        assert!(wait_until(2000, || BLOCK_IPL.load(Ordering::Acquire) != 0), "never finished");
        assert_eq!(BLOCK_IPL.load(Ordering::Acquire), u32::from(IPL_SOFTBIO.as_u8()) + 1, "IPL after blocking");
        softint_disestablish(h);
    }
}

// ---- the table and misuse ---------------------------------------------------------------------

fn nothing(_: usize) {}

ktest! {
    fn softint_establish_returns_none_when_the_table_is_full() {
        let before = established_count();
        let mut made = alloc::vec::Vec::new();
        while let Some(h) = softint_establish(SOFTINT_CLOCK | SOFTINT_MPSAFE, nothing, 0) {
            made.push(h);
            assert!(made.len() <= MAX_SOFTINTS, "more handles than the table holds");
        }
        assert_eq!(made.len(), MAX_SOFTINTS - before, "table refused before it was full");
        for h in made {
            softint_disestablish(h);
        }
        assert_eq!(established_count(), before);
    }
}

ktest! {
    #[should_panic("softint_disestablish: soft interrupt handle #")]
    fn softint_disestablish_of_a_freed_handle_is_caught() {
        let h = est(SOFTINT_CLOCK, nothing, 0);
        softint_disestablish(h);
        softint_disestablish(h);
    }
}

ktest! {
    #[should_panic("softint_schedule: called from a thread with preemption enabled")]
    fn softint_schedule_from_a_preemptible_thread_is_caught() {
        // The context is checked before the handle, so no slot is needed (none is leaked).
        softint_schedule(SoftintHandle::from_raw(u64::MAX));
    }
}

ktest! {
    fn softint_scheduled_from_a_thread_below_its_level_runs_before_softint_schedule_returns() {
        RUNS.store(0, Ordering::Relaxed);
        let h = est(SOFTINT_SERIAL, count, 0);
        for (raise, ran) in [(IPL_NONE, 1), (IPL_SOFTNET, 2), (IPL_SOFTSERIAL, 2)] {
            let s = splraise(raise);
            kpreempt_disable();
            softint_schedule(h);
            let now = RUNS.load(Ordering::Acquire);
            kpreempt_enable();
            splx(s);
            let after = RUNS.load(Ordering::Acquire);
            if raise < IPL_SOFTSERIAL {
                assert_eq!(now, ran, "at {raise}: not run inside softint_schedule");
            } else {
                assert_eq!((now, after), (ran, ran + 1), "at {raise}: ran while blocked, or not at splx");
            }
        }
        assert_eq!(curipl(), IPL_NONE);
        softint_disestablish(h);
    }
}

static SELF_H: AtomicU64 = AtomicU64::new(0);
static SELF_ENTERED: AtomicBool = AtomicBool::new(false);

fn disestablishes_itself(_: usize) {
    SELF_ENTERED.store(true, Ordering::Release);
    softint_disestablish(SoftintHandle::from_raw(SELF_H.load(Ordering::Acquire)));
}

ktest! {
    #[should_panic("softint_disestablish: called from the handler of #")]
    fn softint_disestablish_from_its_own_handler_is_caught() {
        SELF_ENTERED.store(false, Ordering::Relaxed);
        let h = est(SOFTINT_NET, disestablishes_itself, 0);
        SELF_H.store(h.to_raw(), Ordering::Release);
        kpreempt_disable();
        softint_schedule(h);
        kpreempt_enable();
        assert!(wait_until(2000, || SELF_ENTERED.load(Ordering::Acquire)), "never ran");
        // The handler was ended by the harness; the handle is still established.
        softint_disestablish(h);
    }
}

// ---- what the interrupted thread holds ---------------------------------------------------------

static KL_HELD_IN_HANDLER: AtomicU32 = AtomicU32::new(0);

fn needs_kernel_lock(_: usize) {
    KL_HELD_IN_HANDLER.store(
        1 + u32::from(crate::sync::kernel_lock::kernel_lock_held()),
        Ordering::Release,
    );
}

ktest! {
    fn a_handler_without_mpsafe_over_a_thread_holding_the_kernel_lock_runs_once_it_lets_go() {
        // Without stepping aside, the handler would spin on this CPU for a lock that the
        // thread it interrupted holds: a hang.
        KL_HELD_IN_HANDLER.store(0, Ordering::Relaxed);
        let h = softint_establish(SOFTINT_NET, needs_kernel_lock, 0).expect("table");
        crate::sync::kernel_lock::kernel_lock();
        kpreempt_disable();
        softint_schedule(h);
        kpreempt_enable();
        spin_ms(5);
        let during = KL_HELD_IN_HANDLER.load(Ordering::Acquire);
        crate::sync::kernel_lock::kernel_unlock();
        assert_eq!(during, 0, "the handler ran while this thread held the kernel lock");
        assert!(wait_until(2000, || KL_HELD_IN_HANDLER.load(Ordering::Acquire) != 0), "never ran");
        assert_eq!(KL_HELD_IN_HANDLER.load(Ordering::Acquire), 2, "ran without the kernel lock");
        softint_disestablish(h);
    }
}

static LOW_SPIN: KMutex = KMutex::spin(IPL_SOFTCLOCK);
static VM_SPIN: KMutex = KMutex::spin(IPL_VM);
static NESTED_DONE: AtomicU32 = AtomicU32::new(0);

fn takes_a_spin_mutex_then_sleeps(sleep: usize) {
    VM_SPIN.mutex_enter();
    VM_SPIN.mutex_exit();
    if sleep != 0 {
        // Blocks at IPL_SOFTSERIAL over a thread holding a spin mutex at IPL_SOFTCLOCK: the
        // thread gets its CPU back with its count and level.
        crate::kthread::kpause(1);
    }
    NESTED_DONE.store(curipl().as_u8() as u32 + 1, Ordering::Release);
}

ktest! {
    fn a_handler_over_a_thread_holding_a_spin_mutex_counts_its_own_and_may_block() {
        for sleep in [0usize, 1] {
            NESTED_DONE.store(0, Ordering::Relaxed);
            let h = est(SOFTINT_SERIAL, takes_a_spin_mutex_then_sleeps, sleep);
            LOW_SPIN.mutex_enter();
            let held = curcpu().mtx_count.load(Ordering::Relaxed);
            softint_schedule(h);
            // Back here: the handler returned (sleep = 0) or blocked (sleep = 1).
            assert_eq!(curipl(), IPL_SOFTCLOCK, "sleep {sleep}: the IPL of the interrupted thread");
            assert_eq!(curcpu().mtx_count.load(Ordering::Relaxed), held, "sleep {sleep}: its spin-mutex count");
            LOW_SPIN.mutex_exit();
            assert_eq!(curipl(), IPL_NONE, "sleep {sleep}: mutex_exit restored the level");
            assert!(wait_until(2000, || NESTED_DONE.load(Ordering::Acquire) != 0), "sleep {sleep}: never finished");
            assert_eq!(NESTED_DONE.load(Ordering::Acquire), u32::from(IPL_SOFTSERIAL.as_u8()) + 1);
            softint_disestablish(h);
        }
    }
}
