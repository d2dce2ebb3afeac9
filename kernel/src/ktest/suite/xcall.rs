//! xcall(9): exact counts for both classes and every soft level, `xc_wait` after slow
//! callbacks, every CPU broadcasting at once, unicasts to idle CPUs racing with self-calls,
//! where each class runs, tickets, the barrier, and misuse.

use crate::cpu::{MAXCPUS, cpus, curcpu, ncpu_online};
use crate::ktest;
use crate::ktest::suite::{Lcg, seed, spin_ms};
use crate::ktest::{all_cpus_barrier, wait_until};
use crate::sched::{curlwp, kpreempt_disable, kpreempt_enable};
use crate::spl::*;
use crate::xcall::*;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Every class: low, then high at each soft level.
const CLASSES: [u32; 5] = [
    0,
    XC_HIGHPRI,
    XC_HIGHPRI_IPL(IPL_SOFTNET),
    XC_HIGHPRI_IPL(IPL_SOFTBIO),
    XC_HIGHPRI_IPL(IPL_SOFTCLOCK),
];

static COUNT: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
/// Where calls ran: bit 0 = a low call outside `xcall/N` or not at IPL_NONE; bit 1 = a high
/// call not at its level or outside a softint.
static WRONG_PLACE: AtomicU32 = AtomicU32::new(0);

fn count(expect_ipl: usize, _: usize) {
    let me = curcpu().index();
    COUNT[me].fetch_add(1, Ordering::Relaxed);
    let ipl = curipl().as_u8() as usize;
    let l = curlwp();
    if expect_ipl == 0 {
        if ipl != 0 || !l.name().starts_with("xcall/") {
            WRONG_PLACE.fetch_or(1, Ordering::Relaxed);
        }
    } else if ipl != expect_ipl || l.softint_level() != Some(expect_ipl as u8) {
        WRONG_PLACE.fetch_or(2, Ordering::Relaxed);
    }
}

fn reset_counts() {
    for c in &COUNT {
        c.store(0, Ordering::Relaxed);
    }
}

fn ipl_of(flags: u32) -> usize {
    match flags {
        0 => 0,
        XC_HIGHPRI => IPL_SOFTSERIAL.as_u8() as usize,
        f => (f >> 8) as usize,
    }
}

ktest! {
    fn ten_thousand_calls_of_every_class_run_exactly_once_on_each_target_at_the_right_place() {
        let s = seed();
        crate::kprintln!("      seed {s:#x}");
        let mut rng = Lcg::new(s);
        let n = ncpu_online();
        reset_counts();
        WRONG_PLACE.store(0, Ordering::Relaxed);
        let mut want = [0u64; MAXCPUS];
        for flags in CLASSES {
            let ipl = ipl_of(flags);
            let mut last = 0;
            for i in 0..1000 {
                last = xc_broadcast(flags, count, ipl, 0);
                for w in want.iter_mut().take(n) {
                    *w += 1;
                }
                let target = rng.next() as usize % n;
                let t = xc_unicast(flags, count, ipl, 0, target);
                want[target] += 1;
                if i % 64 == 63 {
                    xc_wait(t);
                }
                last = last.max(t);
            }
            xc_wait(last);
        }
        for cpu in 0..n {
            assert_eq!(COUNT[cpu].load(Ordering::Relaxed), want[cpu], "cpu{cpu}: calls run");
        }
        assert_eq!(WRONG_PLACE.load(Ordering::Relaxed), 0, "a call ran in the wrong context (bit 0 low, bit 1 high)");
    }
}

static SLOW_DONE: [AtomicBool; MAXCPUS] = [const { AtomicBool::new(false) }; MAXCPUS];

fn slow(_: usize, _: usize) {
    spin_ms(2);
    SLOW_DONE[curcpu().index()].store(true, Ordering::Release);
}

fn quick(_: usize, _: usize) {}

ktest! {
    fn right_after_xc_wait_every_slow_callback_has_returned() {
        for flags in [0, XC_HIGHPRI] {
            for round in 0..20 {
                for f in &SLOW_DONE {
                    f.store(false, Ordering::Relaxed);
                }
                let t = xc_broadcast(flags, slow, 0, 0);
                xc_wait(t);
                for ci in cpus().filter(|ci| ci.is_online()) {
                    assert!(
                        SLOW_DONE[ci.index()].load(Ordering::Acquire),
                        "flags {flags:#x} round {round}: cpu{} not done right after xc_wait",
                        ci.index()
                    );
                }
                // A second call at once (NetBSD's failure 1).
                let t2 = xc_broadcast(flags, quick, 0, 0);
                assert!(t2 > t, "tickets of one class increase");
                xc_wait(t2);
            }
        }
    }
}

static STORM_ARRIVED: AtomicU32 = AtomicU32::new(0);
static STORM_ISSUED: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static STORM_RUN: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

fn storm_count(_: usize, _: usize) {
    STORM_RUN[curcpu().index()].fetch_add(1, Ordering::Relaxed);
}

ktest! {
    #[all_cpus]
    #[timeout_ms(120_000)]
    fn every_cpu_broadcasting_at_once_for_ten_seconds_gets_exact_counts() {
        let me = curcpu().index();
        if me == 0 {
            STORM_ARRIVED.store(0, Ordering::Relaxed);
            for i in 0..MAXCPUS {
                STORM_ISSUED[i].store(0, Ordering::Relaxed);
                STORM_RUN[i].store(0, Ordering::Relaxed);
            }
        }
        all_cpus_barrier();
        let end = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(10_000);
        let mut k = 0u64;
        while crate::arch::aarch64::counter() < end && !crate::ktest::aborted() {
            let flags = if k.is_multiple_of(2) { XC_HIGHPRI } else { 0 };
            let t = xc_broadcast(flags, storm_count, 0, 0);
            STORM_ISSUED[me].fetch_add(1, Ordering::Relaxed);
            if k % 4 == 3 {
                xc_wait(t);
            }
            k += 1;
        }
        // Everything issued so far, of both classes, done.
        xc_barrier(0);
        xc_barrier(XC_HIGHPRI);
        // A barrier that sleeps: this worker outranks the `xcall/N` threads, which still owe
        // other CPUs' barrier calls.
        STORM_ARRIVED.fetch_add(1, Ordering::AcqRel);
        assert!(
            crate::ktest::suite::sleep_until(60_000, || {
                STORM_ARRIVED.load(Ordering::Acquire) == ncpu_online() as u32
            }),
            "not every CPU finished its barriers"
        );
        if me == 0 {
            let issued: u64 = STORM_ISSUED.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            crate::kprintln!("      {issued} broadcasts from {} CPUs", ncpu_online());
            for ci in cpus().filter(|ci| ci.is_online()) {
                let ran = STORM_RUN[ci.index()].load(Ordering::Relaxed);
                assert_eq!(ran, issued, "cpu{}: broadcasts run", ci.index());
            }
        }
    }
}

static RACE_RUN: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

fn race_count(_: usize, _: usize) {
    RACE_RUN[curcpu().index()].fetch_add(1, Ordering::Relaxed);
}

ktest! {
    #[min_cpus(2)]
    fn unicasts_to_idle_cpus_racing_with_self_calls_lose_no_ipi() {
        for c in &RACE_RUN {
            c.store(0, Ordering::Relaxed);
        }
        let n = ncpu_online();
        let me = curcpu().index();
        let mut want = [0u64; MAXCPUS];
        for i in 0..2000usize {
            let flags = if i % 3 == 0 { 0 } else { XC_HIGHPRI };
            let other = 1 + i % (n - 1);
            let other = if other == me { 0 } else { other };
            let a = xc_unicast(flags, race_count, 0, 0, other);
            let b = xc_unicast(flags, race_count, 0, 0, me);
            want[other] += 1;
            want[me] += 1;
            if i % 2 == 0 {
                xc_wait(a.max(b));
            } else {
                // Let the other CPU go idle in WFI before the next one.
                xc_wait(a);
                xc_wait(b);
                spin_ms(0);
            }
        }
        xc_barrier(0);
        xc_barrier(XC_HIGHPRI);
        for cpu in 0..n {
            assert_eq!(RACE_RUN[cpu].load(Ordering::Relaxed), want[cpu], "cpu{cpu}: calls run");
        }
    }
}

ktest! {
    fn xc_wait_on_ticket_zero_or_an_old_ticket_returns_at_once() {
        xc_wait(0);
        let t = xc_broadcast(0, quick, 0, 0);
        xc_wait(t);
        let u = xc_broadcast(XC_HIGHPRI, quick, 0, 0);
        xc_wait(u);
        // Done already: no sleep, no switch.
        let before = curlwp().switches();
        xc_wait(t);
        xc_wait(u);
        assert_eq!(curlwp().switches(), before, "xc_wait on a done ticket switched away");
        let t2 = xc_broadcast(0, quick, 0, 0);
        assert!(t2 > t, "low tickets increase");
        xc_wait(t2);
    }
}

ktest! {
    fn xc_broadcast_with_runs_a_borrowing_closure_everywhere_before_it_returns() {
        let hits = [const { AtomicU32::new(0) }; MAXCPUS];
        xc_broadcast_with(XC_HIGHPRI, |ci| {
            hits[ci.index()].fetch_add(1, Ordering::Relaxed);
        });
        xc_broadcast_with(0, |ci| {
            hits[ci.index()].fetch_add(1, Ordering::Relaxed);
        });
        for ci in cpus().filter(|ci| ci.is_online()) {
            assert_eq!(hits[ci.index()].load(Ordering::Relaxed), 2, "cpu{}", ci.index());
        }
    }
}

// A low-priority broadcast wakes every other CPU's `xcall/N` before the caller's own
// `xcall/N` (which outranks the caller) takes its CPU: the caller's call, waiting there for the
// others to start, must see them all. Waking in CPU order let the caller's own call preempt
// the caller before it woke the rest, so they started only after that call returned. The
// caller is bound to CPU 0, the first in that order.
static LOW_STARTED: AtomicU32 = AtomicU32::new(0);
static LOW_SAW: AtomicU32 = AtomicU32::new(0);

fn low_caller(_: usize) {
    let others = ncpu_online() as u32 - 1;
    xc_broadcast_with(0, |ci| {
        if ci.index() != 0 {
            LOW_STARTED.fetch_add(1, Ordering::AcqRel);
            return;
        }
        // Up to a second of virtual time for the others: far beyond a wakeup.
        let _ = wait_until(1_000, || LOW_STARTED.load(Ordering::Acquire) == others);
        LOW_SAW.store(LOW_STARTED.load(Ordering::Acquire), Ordering::Relaxed);
    });
}

ktest! {
    fn a_low_broadcast_starts_the_other_cpus_calls_before_the_callers_own() {
        use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, PRI_NONE, kthread_create, kthread_join};
        LOW_STARTED.store(0, Ordering::Relaxed);
        LOW_SAW.store(u32::MAX, Ordering::Relaxed);
        let mut l = None;
        kthread_create(
            PRI_NONE,
            KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
            Some(0),
            low_caller,
            0,
            Some(&mut l),
            format_args!("xc-low-caller"),
        )
        .expect("kthread_create");
        kthread_join(l.expect("joinable"));
        assert_eq!(
            LOW_SAW.load(Ordering::Relaxed),
            ncpu_online() as u32 - 1,
            "the caller's own low-priority call ran before the other CPUs' calls were started"
        );
    }
}

// A caller that finds RING calls of its class in flight sleeps until the oldest is done, then
// publishes: nothing is lost, overwritten or run twice. The first call holds every CPU's
// `xcall/N` until a helper opens the gate, so the ring fills up behind it.
static GATE: AtomicBool = AtomicBool::new(false);
static RING_ISSUED: AtomicU32 = AtomicU32::new(0);
static ISSUED_AT_GATE: AtomicU32 = AtomicU32::new(u32::MAX);
static RING_RUN: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

fn gated(first: usize, _: usize) {
    if first != 0 {
        while !GATE.load(Ordering::Acquire) {
            crate::kthread::kpause(1);
        }
    }
    RING_RUN[curcpu().index()].fetch_add(1, Ordering::Relaxed);
}

fn gate_opener(_: usize) {
    // Long enough for the issuer to fill the ring and fall asleep on the next record.
    crate::kthread::kpause(20);
    ISSUED_AT_GATE.store(RING_ISSUED.load(Ordering::Acquire), Ordering::Release);
    GATE.store(true, Ordering::Release);
}

ktest! {
    fn a_caller_finding_the_ring_full_waits_for_the_oldest_call_and_loses_nothing() {
        use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, PRI_NONE, kthread_create, kthread_join};
        GATE.store(false, Ordering::Relaxed);
        RING_ISSUED.store(0, Ordering::Relaxed);
        ISSUED_AT_GATE.store(u32::MAX, Ordering::Relaxed);
        for c in &RING_RUN {
            c.store(0, Ordering::Relaxed);
        }
        let mut l = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, gate_opener, 0,
            Some(&mut l), format_args!("xc-gate"))
        .expect("kthread_create");
        let mut last = 0;
        for i in 0..=RING {
            last = xc_broadcast(0, gated, usize::from(i == 0), 0);
            RING_ISSUED.fetch_add(1, Ordering::Release);
        }
        xc_wait(last);
        kthread_join(l.expect("joinable"));
        assert_eq!(
            ISSUED_AT_GATE.load(Ordering::Acquire),
            RING as u32,
            "calls issued while the first was held (the one after them must wait for a record)"
        );
        for ci in cpus().filter(|ci| ci.is_online()) {
            let ran = RING_RUN[ci.index()].load(Ordering::Relaxed);
            assert_eq!(ran, RING as u64 + 1, "cpu{}: calls run", ci.index());
        }
    }
}

// The caller's own share of a high-priority call runs in the caller's thread ("the caller runs
// it locally"), as its level's soft interrupt: at the level's IPL, marked as a softint, pinned
// to its CPU, and excluded from that level's handlers there even while it is blocked.
static OWN_LWP: AtomicU64 = AtomicU64::new(0);
static OWN_IPL: AtomicU32 = AtomicU32::new(0);
static OWN_LEVEL: AtomicU32 = AtomicU32::new(0);

fn own_share(_: usize, _: usize) {
    OWN_LWP.store(curlwp() as *const _ as u64, Ordering::Relaxed);
    OWN_IPL.store(curipl().as_u8().into(), Ordering::Relaxed);
    OWN_LEVEL.store(
        curlwp().softint_level().unwrap_or(0).into(),
        Ordering::Relaxed,
    );
}

ktest! {
    fn the_callers_own_share_of_a_high_call_runs_in_its_thread_at_the_level() {
        let me_lwp = curlwp() as *const _ as u64;
        for flags in &CLASSES[1..] {
            let ipl = ipl_of(*flags) as u32;
            OWN_LWP.store(0, Ordering::Relaxed);
            OWN_IPL.store(0, Ordering::Relaxed);
            OWN_LEVEL.store(0, Ordering::Relaxed);
            kpreempt_disable();
            let me = curcpu().index();
            kpreempt_enable();
            xc_wait(xc_unicast(*flags, own_share, 0, 0, me));
            let lwp = OWN_LWP.load(Ordering::Relaxed);
            assert_eq!(lwp, me_lwp, "flags {flags:#x}: ran in another thread");
            assert_eq!(OWN_IPL.load(Ordering::Relaxed), ipl, "flags {flags:#x}: IPL while it ran");
            let level = OWN_LEVEL.load(Ordering::Relaxed);
            assert_eq!(level, ipl, "flags {flags:#x}: not marked as a softint");
            assert_eq!(curipl(), IPL_NONE, "flags {flags:#x}: IPL after the call");
            let marked = curlwp().softint_level().is_some();
            assert!(!marked, "flags {flags:#x}: still marked as a softint");
        }
    }
}

static BLOCK_MUTEX: crate::sync::mutex::KMutex =
    crate::sync::mutex::KMutex::new(crate::sync::mutex::MutexType::Adaptive, IPL_NONE);
static BLOCK_HELD: AtomicBool = AtomicBool::new(false);
static BLOCK_WAITING: AtomicBool = AtomicBool::new(false);
static BLOCK_CALLER: AtomicU64 = AtomicU64::new(0);
/// Bit 0: the callback resumed on another CPU; bit 1: at another IPL; bit 2: the level's
/// softint ran while the callback was blocked; bit 3: the softint did not run after it; bit 4:
/// the callback did not run in the caller's thread (so nothing here was tested).
static BLOCK_WRONG: AtomicU32 = AtomicU32::new(0);
static NET_RAN: AtomicU32 = AtomicU32::new(0);
static NET_SIH: AtomicU64 = AtomicU64::new(0);

fn net_soft(_: usize) {
    NET_RAN.fetch_add(1, Ordering::AcqRel);
}

/// Sleeps a tick at a time until `cond` holds (at most `ticks` ticks), so that threads of
/// lower priority get the CPU too.
fn pause_until(ticks: u32, cond: impl Fn() -> bool) -> bool {
    for _ in 0..ticks {
        if cond() {
            return true;
        }
        crate::kthread::kpause(1);
    }
    cond()
}

/// Bound to the caller's CPU: takes the mutex, and gives it back a few ticks after the
/// callback blocked on it. Its release wakes the callback while this thread runs on the
/// callback's CPU, so an unpinned callback would be moved to an idle CPU.
fn holder(_: usize) {
    BLOCK_MUTEX.mutex_enter();
    BLOCK_HELD.store(true, Ordering::Release);
    assert!(
        pause_until(500, || BLOCK_WAITING.load(Ordering::Acquire)),
        "the callback never came"
    );
    crate::kthread::kpause(5);
    BLOCK_MUTEX.mutex_exit();
}

fn blocks_on_the_mutex(_: usize, _: usize) {
    if curlwp() as *const _ as u64 != BLOCK_CALLER.load(Ordering::Relaxed) {
        BLOCK_WRONG.fetch_or(16, Ordering::Relaxed);
    }
    let cpu = curcpu().index();
    let sih = crate::softint::SoftintHandle::from_raw(NET_SIH.load(Ordering::Relaxed));
    // Pending at the callback's own level on its CPU: it must wait for the callback.
    crate::softint::softint_schedule(sih);
    BLOCK_WAITING.store(true, Ordering::Release);
    BLOCK_MUTEX.mutex_enter();
    if curcpu().index() != cpu {
        BLOCK_WRONG.fetch_or(1, Ordering::Relaxed);
    }
    if curipl() != IPL_SOFTNET {
        BLOCK_WRONG.fetch_or(2, Ordering::Relaxed);
    }
    if NET_RAN.load(Ordering::Acquire) != 0 {
        BLOCK_WRONG.fetch_or(4, Ordering::Relaxed);
    }
    BLOCK_MUTEX.mutex_exit();
}

/// An unbound thread making a high-priority call to its own CPU whose callback blocks.
fn blocking_caller(_: usize) {
    use crate::kthread::{
        KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, PRI_NONE, kthread_create, kthread_join,
    };
    BLOCK_CALLER.store(curlwp() as *const _ as u64, Ordering::Relaxed);
    kpreempt_disable();
    let me = curcpu().index();
    kpreempt_enable();
    let mut l = None;
    kthread_create(
        PRI_NONE,
        KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
        Some(me),
        holder,
        0,
        Some(&mut l),
        format_args!("xc-holder"),
    )
    .expect("kthread_create");
    assert!(
        pause_until(500, || BLOCK_HELD.load(Ordering::Acquire)),
        "the holder never took the mutex"
    );
    kpreempt_disable();
    let me = curcpu().index();
    kpreempt_enable();
    xc_wait(xc_unicast(
        XC_HIGHPRI_IPL(IPL_SOFTNET),
        blocks_on_the_mutex,
        0,
        0,
        me,
    ));
    // The softint left pending at the level ran once the callback was done, before the call
    // returned.
    if NET_RAN.load(Ordering::Acquire) != 1 {
        BLOCK_WRONG.fetch_or(8, Ordering::Relaxed);
    }
    kthread_join(l.expect("joinable"));
}

ktest! {
    fn the_callers_own_share_may_block_and_resumes_on_its_cpu_ahead_of_its_level() {
        use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, PRI_NONE, kthread_create, kthread_join};
        use crate::softint::*;
        BLOCK_HELD.store(false, Ordering::Relaxed);
        BLOCK_WAITING.store(false, Ordering::Relaxed);
        BLOCK_WRONG.store(0, Ordering::Relaxed);
        NET_RAN.store(0, Ordering::Relaxed);
        let h = softint_establish(SOFTINT_NET | SOFTINT_MPSAFE, net_soft, 0).expect("table");
        NET_SIH.store(h.to_raw(), Ordering::Relaxed);
        let mut l = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None, blocking_caller, 0,
            Some(&mut l), format_args!("xc-blocking-caller"))
        .expect("kthread_create");
        kthread_join(l.expect("joinable"));
        softint_disestablish(h);
        let wrong = BLOCK_WRONG.load(Ordering::Relaxed);
        for (bit, what) in [
            (16, "the call to the caller's own CPU did not run in the caller's thread"),
            (1, "the blocked callback resumed on another CPU"),
            (2, "the blocked callback resumed at another IPL"),
            (4, "a handler of the callback's level ran on its CPU while it was blocked"),
            (8, "the handler left pending at the level did not run after the callback"),
        ] {
            assert!(wrong & bit == 0, "{what}");
        }
    }
}

// ---- misuse ---------------------------------------------------------------------------------

ktest! {
    #[should_panic("xc_broadcast: called at IPL_VM; cross calls need IPL_NONE")]
    fn xc_broadcast_at_a_raised_ipl_is_caught() {
        let _s = splvm();
        xc_broadcast(0, quick, 0, 0);
    }
}

ktest! {
    #[should_panic("xc_unicast: called with preemption disabled")]
    fn xc_unicast_with_preemption_disabled_is_caught() {
        kpreempt_disable();
        let t = xc_unicast(0, quick, 0, 0, 0);
        kpreempt_enable();
        xc_wait(t);
    }
}

static HELD: crate::sync::mutex::KMutex = crate::sync::mutex::KMutex::spin(IPL_NONE);

ktest! {
    #[should_panic("xc_broadcast: called with 1 spin mutex(es) held")]
    fn xc_broadcast_holding_a_spin_mutex_is_caught() {
        HELD.mutex_enter();
        xc_broadcast(XC_HIGHPRI, quick, 0, 0);
    }
}

ktest! {
    // CPU MAXCPUS (64): never online, whatever the configuration (63 is online at smp 64+).
    #[should_panic("xc_unicast: cpu64 is not online")]
    fn xc_unicast_to_a_cpu_that_is_not_online_is_caught() {
        xc_unicast(0, quick, 0, 0, MAXCPUS);
    }
}

ktest! {
    #[should_panic("xc_broadcast: XC_HIGHPRI_IPL(IPL_VM) is not a soft level")]
    fn xc_highpri_ipl_of_a_hardware_level_is_refused() {
        xc_broadcast(XC_HIGHPRI_IPL(IPL_VM), quick, 0, 0);
    }
}

/// SGI 8, established for good by the first test that needs it (a test that panics on purpose
/// inside its handler cannot give it back); the handler misbehaves only while armed.
const SGI_XC: u32 = 8;
static SGI_XC_ESTABLISHED: AtomicBool = AtomicBool::new(false);
static SGI_XC_ARMED: AtomicBool = AtomicBool::new(false);

fn from_hard(_: usize) -> bool {
    if SGI_XC_ARMED.swap(false, Ordering::AcqRel) {
        xc_broadcast(0, quick, 0, 0);
    }
    true
}

ktest! {
    #[should_panic("xc_broadcast: called from a hard interrupt handler")]
    fn xc_broadcast_from_a_hard_interrupt_handler_is_caught() {
        if !SGI_XC_ESTABLISHED.swap(true, Ordering::AcqRel) {
            let _kept = crate::intr::intr_establish(SGI_XC, IPL_VM, 0, from_hard, 0).expect("SGI 8");
        }
        SGI_XC_ARMED.store(true, Ordering::Release);
        let me = curcpu().index();
        crate::platform::platform().send_ipi(crate::platform::IpiTarget::Cpu(me), SGI_XC);
        let _ = wait_until(1000, || false);
        SGI_XC_ARMED.store(false, Ordering::Release);
        panic!("the handler's misuse was not caught");
    }
}

static SOFT_TRIED: AtomicBool = AtomicBool::new(false);

fn from_soft(_: usize) {
    SOFT_TRIED.store(true, Ordering::Release);
    xc_broadcast(0, quick, 0, 0);
}

ktest! {
    #[should_panic("xc_broadcast: called from a soft interrupt handler")]
    fn xc_broadcast_from_a_softint_handler_is_caught() {
        use crate::softint::*;
        SOFT_TRIED.store(false, Ordering::Relaxed);
        let h = softint_establish(SOFTINT_NET | SOFTINT_MPSAFE, from_soft, 0).expect("table");
        kpreempt_disable();
        softint_schedule(h);
        kpreempt_enable();
        assert!(wait_until(2000, || SOFT_TRIED.load(Ordering::Acquire)), "never ran");
        softint_disestablish(h);
    }
}

fn leaves_preemption_disabled(_: usize, _: usize) {
    kpreempt_disable();
}

ktest! {
    #[should_panic("returned with preemption disabled")]
    fn a_callback_returning_with_preemption_disabled_is_caught() {
        // High priority: the softint is ended by the harness; the call still counts as run,
        // so the wait ends.
        let me = curcpu().index();
        let t = xc_unicast(XC_HIGHPRI, leaves_preemption_disabled, 0, 0, me);
        xc_wait(t);
    }
}

fn leaves_the_ipl_raised(_: usize, _: usize) {
    let _ = splraise(IPL_VM);
}

ktest! {
    #[should_panic("returned at IPL_VM")]
    fn an_own_cpu_callback_returning_at_a_raised_ipl_is_caught() {
        // The caller's own share runs inline: the check is `run_inline`'s, after the call
        // counted as run, so the wait ends.
        kpreempt_disable();
        let me = curcpu().index();
        kpreempt_enable();
        xc_wait(xc_unicast(XC_HIGHPRI, leaves_the_ipl_raised, 0, 0, me));
    }
}

fn misbehaving_caller(cpu: usize) {
    xc_wait(xc_unicast(
        XC_HIGHPRI,
        leaves_preemption_disabled,
        0,
        0,
        cpu,
    ));
}

ktest! {
    #[should_panic("returned with preemption disabled")]
    fn a_thread_ended_inside_its_own_share_gives_the_level_back() {
        use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, PRI_NONE, kthread_create, kthread_join};
        // A thread bound to this CPU makes an own-CPU call whose callback breaks a rule: it
        // panics inside `softint::run_inline` and the harness ends it there. The level must
        // be free again, so this thread's own-CPU call runs inline (a level left busy would
        // send it to a softint that never runs, and the wait would hang).
        kpreempt_disable();
        let me = curcpu().index();
        kpreempt_enable();
        let mut l = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, Some(me), misbehaving_caller, me,
            Some(&mut l), format_args!("xc-misbehaving"))
        .expect("kthread_create");
        kthread_join(l.expect("joinable"));
        // (Test threads are bound to their CPU: this one is still on `me`.)
        OWN_LWP.store(0, Ordering::Relaxed);
        xc_wait(xc_unicast(XC_HIGHPRI, own_share, 0, 0, me));
        let lwp = OWN_LWP.load(Ordering::Relaxed);
        assert_eq!(lwp, curlwp() as *const _ as u64, "the own-CPU call after it did not run inline");
    }
}

// ---- a user ---------------------------------------------------------------------------------

fn nothing_soft(_: usize) {}

ktest! {
    fn reset_cpu_counters_zeroes_every_cpus_own_counters_through_a_cross_call() {
        use crate::softint::*;
        let h = softint_establish(SOFTINT_BIO | SOFTINT_MPSAFE, nothing_soft, 0).expect("table");
        kpreempt_disable();
        for ci in cpus().filter(|ci| ci.is_online()) {
            softint_schedule_cpu(h, ci.index());
        }
        kpreempt_enable();
        let bio = 1;
        assert!(wait_until(2000, || cpus().filter(|ci| ci.is_online())
            .all(|ci| counters(ci.index(), bio).1 > 0)), "the softints did not run everywhere");
        crate::stats::reset_cpu_counters();
        for ci in cpus().filter(|ci| ci.is_online()) {
            assert_eq!(counters(ci.index(), bio), (0, 0), "cpu{}: BIO counters after the reset", ci.index());
        }
        softint_disestablish(h);
    }
}
