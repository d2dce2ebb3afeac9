//! spl(9): blocked interrupts are delivered exactly once right after the level drops, higher
//! levels nest inside lower ones and never the reverse, the names map to the documented levels,
//! and misuse is caught.
//!
//! The tests establish their own SGIs: 4 at IPL_VM, 5 at IPL_SCHED, 6 at IPL_HIGH.

use crate::cpu::{MAXCPUS, cpu_lookup, curcpu, ncpu_online};
use crate::intr::{IntrError, intr_count, intr_disestablish, intr_establish, stray_count};
use crate::ktest;
use crate::ktest::{all_cpus_barrier, wait_until};
use crate::platform::{IpiTarget, platform};
use crate::spl::*;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

const SGI_VM: u32 = 4;
const SGI_SCHED: u32 = 5;
const SGI_HIGH: u32 = 6;

/// Handler calls per CPU and SGI (index SGI - 4).
static CALLS: [[AtomicU64; 3]; MAXCPUS] = [const { [const { AtomicU64::new(0) }; 3] }; MAXCPUS];
/// The IPL each handler observed while running, per SGI (last call).
static SEEN_IPL: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
/// Event log for the nesting tests: 1 = VM enter, 2 = VM exit, 3 = HIGH enter, 4 = HIGH exit.
static LOG: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
static LOG_LEN: AtomicUsize = AtomicUsize::new(0);
/// What the VM/HIGH handlers do besides counting (see the nesting tests).
static MODE: AtomicU32 = AtomicU32::new(MODE_COUNT);
const MODE_COUNT: u32 = 0;
const MODE_VM_RAISES_HIGH: u32 = 1;
const MODE_HIGH_RAISES_VM: u32 = 2;
const MODE_VM_LOWERS: u32 = 3;
static NESTED_OK: AtomicBool = AtomicBool::new(false);

fn log(event: u32) {
    let i = LOG_LEN.fetch_add(1, Ordering::AcqRel);
    if let Some(slot) = LOG.get(i) {
        slot.store(event, Ordering::Release);
    }
}

fn calls(cpu: usize, sgi: u32) -> u64 {
    CALLS[cpu][(sgi - SGI_VM) as usize].load(Ordering::Acquire)
}

fn send(cpu: usize, sgi: u32) {
    platform().send_ipi(IpiTarget::Cpu(cpu), sgi);
}

fn handler(sgi: usize) -> bool {
    let me = curcpu().index();
    let k = sgi - SGI_VM as usize;
    SEEN_IPL[k].store(u32::from(curipl().as_u8()), Ordering::Relaxed);
    match (MODE.load(Ordering::Acquire), sgi as u32) {
        (MODE_VM_RAISES_HIGH, SGI_VM) => {
            log(1);
            let before = calls(me, SGI_HIGH);
            send(me, SGI_HIGH);
            // The HIGH handler must run inside this one.
            NESTED_OK.store(
                wait_until(1000, || calls(me, SGI_HIGH) > before),
                Ordering::Release,
            );
            log(2);
        }
        (MODE_HIGH_RAISES_VM, SGI_HIGH) => {
            log(3);
            let before = calls(me, SGI_VM);
            send(me, SGI_VM);
            // The VM handler must NOT run inside this one.
            let ran = wait_until(20, || calls(me, SGI_VM) > before);
            NESTED_OK.store(!ran, Ordering::Release);
            log(4);
        }
        (MODE_HIGH_RAISES_VM, SGI_VM) => log(1),
        (MODE_VM_LOWERS, SGI_VM) => {
            // Misuse: lowering below the handler's own level.
            let _ = splhigh();
            splx(IPL_NONE);
        }
        _ => {}
    }
    CALLS[me][k].fetch_add(1, Ordering::AcqRel);
    true
}

/// The three test SGIs, established by the first test that needs them and kept (a test that
/// panics on purpose could not give them back), and the handlers' mode for this test.
struct TestSgis;

static ESTABLISHED: AtomicBool = AtomicBool::new(false);

impl TestSgis {
    fn establish(mode: u32) -> Self {
        MODE.store(mode, Ordering::Release);
        if !ESTABLISHED.swap(true, Ordering::AcqRel) {
            for (sgi, ipl) in [
                (SGI_VM, IPL_VM),
                (SGI_SCHED, IPL_SCHED),
                (SGI_HIGH, IPL_HIGH),
            ] {
                // Established for good: the handle is never given back.
                let _kept = intr_establish(sgi, ipl, 0, handler, sgi as usize).expect("free SGI");
            }
        }
        Self
    }
}

impl Drop for TestSgis {
    fn drop(&mut self) {
        MODE.store(MODE_COUNT, Ordering::Release);
    }
}

/// Spins ~`ms` of virtual time and reports whether `cond` became true meanwhile.
fn becomes_true_within(ms: u64, cond: impl FnMut() -> bool) -> bool {
    wait_until(ms, cond)
}

ktest! {
    fn sgi_to_self_at_a_blocked_level_runs_exactly_once_when_the_level_drops() {
        let _sgis = TestSgis::establish(MODE_COUNT);
        let me = curcpu().index();
        for (sgi, raise) in [(SGI_VM, IPL_VM), (SGI_VM, IPL_SCHED), (SGI_VM, IPL_HIGH),
                             (SGI_SCHED, IPL_SCHED), (SGI_HIGH, IPL_HIGH)] {
            let before = calls(me, sgi);
            let s = splraise(raise);
            send(me, sgi);
            assert!(!becomes_true_within(20, || calls(me, sgi) != before),
                "SGI {sgi} ran while the CPU was at {raise}");
            splx(s);
            // Delivered by splx itself: no waiting.
            assert_eq!(calls(me, sgi), before + 1, "SGI {sgi} after dropping from {raise}");
            assert!(!becomes_true_within(20, || calls(me, sgi) != before + 1),
                "SGI {sgi} ran twice");
        }
    }
}

ktest! {
    fn interrupt_above_the_current_level_runs_at_once() {
        let _sgis = TestSgis::establish(MODE_COUNT);
        let me = curcpu().index();
        let before = calls(me, SGI_SCHED);
        let s = splvm();
        send(me, SGI_SCHED);
        assert!(becomes_true_within(1000, || calls(me, SGI_SCHED) > before),
            "an IPL_SCHED interrupt was held back at IPL_VM");
        splx(s);
        assert_eq!(calls(me, SGI_SCHED), before + 1);
        assert_eq!(SEEN_IPL[1].load(Ordering::Relaxed), u32::from(IPL_SCHED.as_u8()),
            "the handler did not run at its own IPL");
    }
}

ktest! {
    #[all_cpus]
    fn sgi_to_another_cpu_at_a_blocked_level_runs_once_when_it_drops() {
        let _sgis = (curcpu().index() == 0).then(|| TestSgis::establish(MODE_COUNT));
        all_cpus_barrier();
        let me = curcpu().index();
        let n = ncpu_online();
        let next = (me + 1) % n;
        let before = calls(me, SGI_VM);
        let s = splvm();
        all_cpus_barrier();
        send(next, SGI_VM);
        // Everyone has sent before anyone lowers; meanwhile nothing may run here.
        assert!(!becomes_true_within(20, || calls(me, SGI_VM) != before),
            "cpu{me}: SGI ran at IPL_VM");
        all_cpus_barrier();
        splx(s);
        assert_eq!(calls(me, SGI_VM), before + 1, "cpu{me}: after splx");
        all_cpus_barrier();
    }
}

ktest! {
    fn timer_tick_is_held_at_ipl_sched_and_delivered_once_after() {
        let ci = curcpu();
        let ticks = || ci.tick_count.load(Ordering::Relaxed);
        let start = ticks();
        assert!(wait_until(1000, || ticks() > start), "no tick at all");
        let before = ticks();
        let s = splsched();
        // Wait five tick periods by the counter; the tick must not run.
        let period_ms = 1000 / crate::clock::hz();
        assert!(!becomes_true_within(5 * period_ms, || ticks() != before),
            "a tick ran at IPL_SCHED");
        splx(s);
        assert_eq!(ticks(), before + 1, "the held tick was not delivered exactly once");
    }
}

ktest! {
    fn higher_level_interrupt_nests_inside_a_lower_level_handler() {
        let _sgis = TestSgis::establish(MODE_VM_RAISES_HIGH);
        LOG_LEN.store(0, Ordering::Release);
        NESTED_OK.store(false, Ordering::Release);
        let me = curcpu().index();
        let before = calls(me, SGI_VM);
        send(me, SGI_VM);
        assert!(wait_until(1000, || calls(me, SGI_VM) > before), "VM handler never ran");
        assert!(NESTED_OK.load(Ordering::Acquire), "the IPL_HIGH SGI did not run inside");
        assert_eq!(SEEN_IPL[2].load(Ordering::Relaxed), u32::from(IPL_HIGH.as_u8()));
        let log: [u32; 2] = core::array::from_fn(|i| LOG[i].load(Ordering::Acquire));
        assert_eq!(log, [1, 2]);
    }
}

ktest! {
    fn lower_level_interrupt_never_nests_inside_a_higher_level_handler() {
        let _sgis = TestSgis::establish(MODE_HIGH_RAISES_VM);
        LOG_LEN.store(0, Ordering::Release);
        NESTED_OK.store(false, Ordering::Release);
        let me = curcpu().index();
        let before = calls(me, SGI_VM);
        send(me, SGI_HIGH);
        assert!(wait_until(1000, || calls(me, SGI_VM) > before), "VM handler never ran");
        assert!(NESTED_OK.load(Ordering::Acquire), "the IPL_VM SGI ran inside IPL_HIGH");
        let log: [u32; 3] = core::array::from_fn(|i| LOG[i].load(Ordering::Acquire));
        assert_eq!(log, [3, 4, 1], "order: HIGH enter, HIGH exit, then VM");
    }
}

ktest! {
    fn splraise_never_lowers() {
        let levels = [IPL_NONE, IPL_SOFTCLOCK, IPL_SOFTBIO, IPL_SOFTNET, IPL_SOFTSERIAL,
                      IPL_VM, IPL_SCHED, IPL_HIGH];
        for &high in &levels {
            for &low in &levels {
                let s0 = splraise(high);
                let s1 = splraise(low);
                assert_eq!(curipl(), high.max(low), "splraise({low}) at {high}");
                assert!(curipl() >= high, "splraise({low}) lowered the IPL from {high}");
                assert_eq!(s1, high, "splraise({low}) at {high} returned the wrong level");
                splx(s1);
                splx(s0);
                assert_eq!(curipl(), IPL_NONE);
            }
        }
    }
}

ktest! {
    fn every_spl_name_raises_to_its_documented_level() {
        type Raise = fn() -> Ipl;
        let table: [(&str, Raise, Ipl); 14] = [
            ("splhigh", splhigh, IPL_HIGH),
            ("spllock", spllock, IPL_HIGH),
            ("splserial", splserial, IPL_HIGH),
            ("splsched", splsched, IPL_SCHED),
            ("splclock", splclock, IPL_SCHED),
            ("splstatclock", splstatclock, IPL_SCHED),
            ("splvm", splvm, IPL_VM),
            ("splbio", splbio, IPL_VM),
            ("splnet", splnet, IPL_VM),
            ("spltty", spltty, IPL_VM),
            ("splsoftserial", splsoftserial, IPL_SOFTSERIAL),
            ("splsoftnet", splsoftnet, IPL_SOFTNET),
            ("splsoftbio", splsoftbio, IPL_SOFTBIO),
            ("splsoftclock", splsoftclock, IPL_SOFTCLOCK),
        ];
        for (name, raise, level) in table {
            let s = raise();
            assert_eq!(s, IPL_NONE, "{name} returned the wrong previous level");
            assert_eq!(curipl(), level, "{name}");
            splx(s);
        }
        let s = splhigh();
        spllowersoftclock();
        assert_eq!(curipl(), IPL_SOFTCLOCK, "spllowersoftclock from IPL_HIGH");
        spl0();
        assert_eq!(curipl(), IPL_NONE, "spl0");
        spllowersoftclock();
        assert_eq!(curipl(), IPL_NONE, "spllowersoftclock must never raise");
        let _ = s;
    }
}

fn guarded(early: bool) -> Ipl {
    let _g = SplGuard::raise(IPL_SCHED);
    if early {
        return curipl();
    }
    {
        let _inner = SplGuard::raise(IPL_VM);
        assert_eq!(curipl(), IPL_SCHED, "a guard lowered the level");
    }
    curipl()
}

ktest! {
    fn spl_guard_restores_on_every_path() {
        assert_eq!(guarded(true), IPL_SCHED);
        assert_eq!(curipl(), IPL_NONE, "after an early return");
        assert_eq!(guarded(false), IPL_SCHED);
        assert_eq!(curipl(), IPL_NONE, "after a normal return");
        let outer = splvm();
        {
            let g = SplGuard::raise(IPL_HIGH);
            assert_eq!(g.saved(), IPL_VM);
        }
        assert_eq!(curipl(), IPL_VM, "the guard restored the wrong level");
        splx(outer);
    }
}

ktest! {
    #[timeout_ms(300_000)]
    fn statistics_count_100000_sgis_across_all_cpus_exactly() {
        let _sgis = TestSgis::establish(MODE_COUNT);
        let n = ncpu_online();
        let mut stats0 = [0u64; MAXCPUS];
        let mut calls0 = [0u64; MAXCPUS];
        for c in 0..n {
            stats0[c] = intr_count(c, SGI_VM);
            calls0[c] = calls(c, SGI_VM);
        }
        let mut sent = [0u64; MAXCPUS];
        // Pipelined over the targets: a target gets its next SGI once it has taken the last
        // (the GIC would merge two pending ones), so every send must show up exactly once.
        for i in 0..100_000u64 {
            let t = (i as usize) % n;
            let ok = wait_until(1000, || calls(t, SGI_VM) - calls0[t] == sent[t]);
            assert!(ok, "send {i}: cpu{t} took {} of {} SGIs", calls(t, SGI_VM) - calls0[t], sent[t]);
            send(t, SGI_VM);
            sent[t] += 1;
        }
        for t in 0..n {
            assert!(wait_until(1000, || calls(t, SGI_VM) - calls0[t] == sent[t]),
                "cpu{t}: {} of {} SGIs arrived", calls(t, SGI_VM) - calls0[t], sent[t]);
        }
        assert!(!wait_until(50, || (0..n).any(|t| calls(t, SGI_VM) - calls0[t] > sent[t])),
            "an SGI arrived twice");
        for t in 0..n {
            let stat = intr_count(t, SGI_VM) - stats0[t];
            assert_eq!(stat, sent[t], "cpu{t}: statistics say {stat}, {} were sent", sent[t]);
        }
        assert_eq!(sent.iter().sum::<u64>(), 100_000);
    }
}

ktest! {
    fn intr_establish_rejects_soft_levels_busy_and_out_of_range_interrupts() {
        let _sgis = TestSgis::establish(MODE_COUNT);
        assert_eq!(intr_establish(7, IPL_SOFTNET, 0, handler, 7).err(),
            Some(IntrError::BadIpl(IPL_SOFTNET)));
        assert_eq!(intr_establish(SGI_VM, IPL_VM, 0, handler, 4).err(), Some(IntrError::Busy(4)));
        assert_eq!(intr_establish(5000, IPL_VM, 0, handler, 0).err(), Some(IntrError::BadIrq(5000)));
    }
}

ktest! {
    #[should_panic("splx(IPL_VM) would raise the IPL from IPL_NONE")]
    fn splx_to_a_higher_level_is_caught() {
        splx(IPL_VM);
    }
}

ktest! {
    #[should_panic("a handler may not lower the IPL below its own level")]
    fn lowering_below_the_handlers_level_in_a_handler_is_caught() {
        let _sgis = TestSgis::establish(MODE_VM_LOWERS);
        let me = curcpu().index();
        send(me, SGI_VM);
        let _ = wait_until(1000, || false);
        panic!("the handler's misuse was not caught");
    }
}

ktest! {
    #[should_panic("spl calls need an online CPU")]
    fn spl_on_a_cpu_that_is_not_online_is_caught() {
        let ci = cpu_lookup(curcpu().index()).expect("self");
        // Pretend this CPU is not online; the harness restores it after the panic.
        set_online(ci, false);
        let s = splvm();
        splx(s);
    }
}

ktest! {
    fn interrupts_still_work_after_the_misuse_tests() {
        // Runs after the expected-panic tests above recovered from inside a handler.
        let _sgis = TestSgis::establish(MODE_COUNT);
        let me = curcpu().index();
        for sgi in [SGI_VM, SGI_SCHED, SGI_HIGH] {
            let before = calls(me, sgi);
            send(me, sgi);
            assert!(wait_until(1000, || calls(me, sgi) > before), "SGI {sgi} lost");
        }
        let t = curcpu().tick_count.load(Ordering::Relaxed);
        assert!(wait_until(1000, || curcpu().tick_count.load(Ordering::Relaxed) > t), "no tick");
        assert_eq!(curipl(), IPL_NONE);
    }
}

ktest! {
    #[should_panic("deliberate failure at IPL_SOFTCLOCK")]
    fn harness_restores_the_ipl_after_a_panic_at_a_raised_level() {
        let _ = splsoftclock();
        panic!("deliberate failure at {}", curipl());
    }
}

ktest! {
    fn the_ipl_is_none_after_the_panic_at_a_raised_level() {
        assert_eq!(curipl(), IPL_NONE, "the harness did not restore the IPL");
    }
}

static SPARE_CALLS: AtomicU64 = AtomicU64::new(0);

fn spare_handler(_: usize) -> bool {
    SPARE_CALLS.fetch_add(1, Ordering::AcqRel);
    true
}

ktest! {
    fn disestablished_interrupt_no_longer_runs_its_handler() {
        const SGI_SPARE: u32 = 7;
        let me = curcpu().index();
        let h = intr_establish(SGI_SPARE, IPL_VM, 0, spare_handler, 0).expect("SGI 7 free");
        let before = SPARE_CALLS.load(Ordering::Acquire);
        send(me, SGI_SPARE);
        assert!(wait_until(1000, || SPARE_CALLS.load(Ordering::Acquire) > before), "not run");
        intr_disestablish(h);
        let stray = stray_count();
        send(me, SGI_SPARE);
        assert!(!wait_until(20, || SPARE_CALLS.load(Ordering::Acquire) > before + 1),
            "the handler ran after intr_disestablish");
        // Whether the controller still delivers it (GICv2 SGIs cannot be disabled) or not, it
        // must never reach the old handler; if delivered it is counted as stray.
        assert!(stray_count() >= stray);
        let h = intr_establish(SGI_SPARE, IPL_VM, 0, spare_handler, 0).expect("free again");
        intr_disestablish(h);
    }
}
