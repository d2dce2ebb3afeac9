//! The scheduler: priority order, round robin, timesharing, binding, spreading over idle CPUs,
//! and preemption by a higher-priority wakeup.

use crate::cpu::{MAXCPUS, curcpu, ncpu_online};
use crate::ktest;
use crate::ktest::suite::spawn_joinable;

fn spawn(func: fn(usize), arg: usize, pri: i32, flags: u32, cpu: Option<usize>) -> LwpRef {
    spawn_joinable(func, arg, pri, flags | KTHREAD_MPSAFE, cpu)
}
use crate::kthread::*;
use crate::sched::curlwp;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The CPU the test's threads are bound to: the last online one (CPU 0 on one CPU).
fn victim_cpu() -> usize {
    ncpu_online() - 1
}

static ORDER: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static ORDER_LEN: AtomicUsize = AtomicUsize::new(0);

fn record_pri(pri: usize) {
    let i = ORDER_LEN.fetch_add(1, Ordering::AcqRel);
    ORDER[i].store(pri as u64, Ordering::Release);
}

ktest! {
    fn runnable_rr_threads_run_in_strict_priority_order() {
        ORDER_LEN.store(0, Ordering::Release);
        let cpu = curcpu().index();
        let pris = [100usize, 140, 120, 96, 130];
        let threads: [LwpRef; 5] =
            core::array::from_fn(|i| spawn(record_pri, pris[i], pris[i] as i32, KTHREAD_IDLE, Some(cpu)));
        // Start them all before any can run: this test thread (priority 200) keeps the CPU
        // until it sleeps in kthread_join.
        for l in threads {
            kthread_start(l);
        }
        for l in threads {
            kthread_join(l);
        }
        let order: [u64; 5] = core::array::from_fn(|i| ORDER[i].load(Ordering::Acquire));
        assert_eq!(order, [140, 130, 120, 100, 96], "run order");
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

fn spin_until_stop(_: usize) {
    while !STOP.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

ktest! {
    #[timeout_ms(120_000)]
    fn equal_priority_rr_threads_share_the_cpu_within_ten_percent() {
        STOP.store(false, Ordering::Release);
        let cpu = victim_cpu();
        let threads: [LwpRef; 3] = core::array::from_fn(|i| spawn(spin_until_stop, i, 100, 0, Some(cpu)));
        // Until the three have run 900 ticks between them (about 30 slices each), counted in
        // ticks they ran, not in time passed: a busy host that stalls the virtual CPU skips
        // ticks, which would leave fewer slices in a fixed pause.
        let run = |i: usize| threads[i].lwp().expect("alive").run_ticks();
        while (0..3).map(run).sum::<u64>() < 900 {
            crate::kthread::kpause(10);
        }
        let ticks: [u64; 3] = core::array::from_fn(run);
        STOP.store(true, Ordering::Release);
        for l in threads {
            kthread_join(l);
        }
        let total: u64 = ticks.iter().sum();
        for (i, t) in ticks.iter().enumerate() {
            let share = t * 1000 / total;
            assert!((300..=366).contains(&share), "thread {i} got {share}/1000 of the CPU: {ticks:?}");
        }
    }
}

static LATE: AtomicU64 = AtomicU64::new(0);

/// This CPU's tick count: a clock that does not run ahead when the host stalls the virtual CPU
/// (missed ticks are skipped, not replayed), so scheduling delays measured in it are not
/// inflated by a busy host.
fn ticks_here() -> u64 {
    curcpu().tick_count.load(Ordering::Relaxed)
}

fn ts_sleeper(_: usize) {
    let mut worst = 0;
    for _ in 0..50 {
        let t0 = ticks_here();
        crate::kthread::kpause(1);
        // One tick boundary is the pause itself; anything beyond is waiting for the CPU.
        worst = worst.max((ticks_here() - t0).saturating_sub(1));
    }
    LATE.store(worst, Ordering::Release);
}

ktest! {
    #[timeout_ms(60_000)]
    fn timeshared_spinner_yields_to_a_timeshared_sleeper() {
        STOP.store(false, Ordering::Release);
        let cpu = victim_cpu();
        let spinner = spawn(spin_until_stop, 0, PRI_NONE, KTHREAD_TS, Some(cpu));
        // Let the spinner use the CPU (and lose priority) first.
        crate::kthread::kpause(20);
        let sleeper = spawn(ts_sleeper, 1, PRI_NONE, KTHREAD_TS, Some(cpu));
        kthread_join(sleeper);
        STOP.store(true, Ordering::Release);
        kthread_join(spinner);
        let worst = LATE.load(Ordering::Acquire);
        // With equal fixed priorities the sleeper would wait for the spinner's time slice
        // (10 ticks); as a timesharing thread that sleeps it must get the CPU at each wakeup.
        assert!(worst <= 2, "the sleeper woke up to {worst} ticks late behind the spinner");
    }
}

static BOUND_BAD: AtomicU64 = AtomicU64::new(0);

fn check_binding(cpu: usize) {
    for i in 0..200 {
        if curcpu().index() != cpu {
            BOUND_BAD.fetch_add(1, Ordering::AcqRel);
        }
        if i % 2 == 0 {
            crate::sched::yield_now();
        } else {
            crate::kthread::kpause(1);
        }
    }
}

ktest! {
    #[timeout_ms(60_000)]
    fn bound_threads_never_run_on_another_cpu() {
        BOUND_BAD.store(0, Ordering::Release);
        let n = ncpu_online();
        let mut threads = [None; MAXCPUS];
        for (cpu, slot) in threads.iter_mut().enumerate().take(n) {
            *slot = Some(spawn(check_binding, cpu, 100, 0, Some(cpu)));
        }
        for l in threads.into_iter().flatten() {
            kthread_join(l);
        }
        // The scheduler also asserts the binding on every switch.
        assert_eq!(BOUND_BAD.load(Ordering::Acquire), 0, "a bound thread ran elsewhere");
    }
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static SEEN_CPUS: AtomicU64 = AtomicU64::new(0);

fn spread(n: usize) {
    RUNNING.fetch_add(1, Ordering::AcqRel);
    // Spin until all n run at once: only possible on n different CPUs.
    let ok = crate::ktest::wait_until(10_000, || RUNNING.load(Ordering::Acquire) >= n);
    if ok {
        SEEN_CPUS.fetch_or(1 << curcpu().index(), Ordering::AcqRel);
    }
    crate::ktest::wait_until(10_000, || STOP.load(Ordering::Acquire));
}

ktest! {
    #[min_cpus(2)]
    #[timeout_ms(60_000)]
    fn unbound_threads_spread_over_idle_cpus() {
        STOP.store(false, Ordering::Release);
        RUNNING.store(0, Ordering::Release);
        SEEN_CPUS.store(0, Ordering::Release);
        // One thread per CPU but this one (this test thread keeps running here).
        let n = ncpu_online() - 1;
        let mut threads = [None; MAXCPUS];
        for (i, slot) in threads.iter_mut().enumerate().take(n) {
            *slot = Some(spawn(spread, n, 100, 0, None));
            let _ = i;
        }
        let all = crate::ktest::wait_until(10_000, || SEEN_CPUS.load(Ordering::Acquire).count_ones() as usize == n);
        STOP.store(true, Ordering::Release);
        for l in threads.into_iter().flatten() {
            kthread_join(l);
        }
        let seen = SEEN_CPUS.load(Ordering::Acquire);
        assert!(all, "{n} unbound threads ran at once on CPUs {seen:#b} only");
        assert_eq!(seen & (1 << curcpu().index()), 0, "one ran on the busy CPU");
    }
}

static WOKE_LATE: AtomicU64 = AtomicU64::new(0);
static SIGNAL_AT: AtomicU64 = AtomicU64::new(0);
static WAKE_LOCK: crate::sync::mutex::KMutex = crate::sync::mutex::KMutex::adaptive();
static WAKE_CV: crate::sync::condvar::KCondvar = crate::sync::condvar::KCondvar::new();
static WAKE_FLAG: AtomicBool = AtomicBool::new(false);
const WAKEUPS: usize = 20;

fn high_waiter(_: usize) {
    let mut worst = 0;
    for _ in 0..WAKEUPS {
        let _g = WAKE_LOCK.lock();
        while !WAKE_FLAG.load(Ordering::Acquire) {
            WAKE_CV.cv_wait(&WAKE_LOCK);
        }
        WAKE_FLAG.store(false, Ordering::Release);
        // Ticks of this (the victim) CPU between the signal and now.
        worst = worst.max(ticks_here().saturating_sub(SIGNAL_AT.load(Ordering::Acquire)));
    }
    WOKE_LATE.store(worst, Ordering::Release);
}

ktest! {
    #[timeout_ms(60_000)]
    fn higher_priority_wakeup_preempts_within_one_tick() {
        STOP.store(false, Ordering::Release);
        WAKE_FLAG.store(false, Ordering::Release);
        // A low-priority thread keeps the victim CPU busy; a high-priority one bound there
        // waits on a condition variable. Each signal must get it running within a tick,
        // preempting the spinner (across CPUs with a Sched IPI when there are several).
        let cpu = victim_cpu();
        let low = spawn(spin_until_stop, 0, 100, 0, Some(cpu));
        let high = spawn(high_waiter, 1, 150, 0, Some(cpu));
        for _ in 0..WAKEUPS {
            crate::kthread::kpause(2);
            let _g = WAKE_LOCK.lock();
            WAKE_FLAG.store(true, Ordering::Release);
            let victim = crate::cpu::cpu_lookup(cpu).expect("victim CPU");
            SIGNAL_AT.store(victim.tick_count.load(Ordering::Relaxed), Ordering::Release);
            WAKE_CV.cv_signal();
        }
        kthread_join(high);
        STOP.store(true, Ordering::Release);
        kthread_join(low);
        let worst = WOKE_LATE.load(Ordering::Acquire);
        // Within one tick: at most one tick of the victim CPU between the signal and the run.
        assert!(worst <= 1, "the high-priority thread ran {worst} ticks of its CPU after cv_signal");
    }
}

ktest! {
    fn curlwp_and_cpu_info_agree() {
        let l = curlwp();
        assert_eq!(l.cpu(), curcpu().index());
        assert_eq!(curcpu().curlwp.load(Ordering::Relaxed), l as *const _ as u64);
        assert!(curcpu().ctxsw_count.load(Ordering::Relaxed) > 0);
    }
}
