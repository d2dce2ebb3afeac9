//! The `intr` torture: storms of software-generated interrupts (SGIs) at three levels
//! (IPL_VM, IPL_SCHED, IPL_HIGH) from every CPU to every CPU, against spl sections on the
//! receivers: an interrupt at or below the IPL must be deferred and run by the `splx` that
//! lowers it; one above must nest and run at once.
//!
//! Counts, exact although the GIC merges an SGI that is already pending: a sender adds one to
//! the receiver's "owed" count for that SGI before sending it; the handler takes the whole
//! count (swap to 0) and adds it to "served". After the run, once everything drained, every
//! owed count is 0 and served = sent: a lost interrupt (or one never ended, which blocks its
//! level) leaves something owed.

use super::{Failure, Rng, expect_eq, relax, sum, this_cpu, wait_for};
use crate::cpu::{MAXCPUS, curcpu};
use crate::platform::{IpiTarget, platform};
use crate::spl::{IPL_HIGH, IPL_SCHED, IPL_VM, Ipl};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

/// The SGIs and their levels.
const SGIS: [(u32, Ipl); 3] = [(9, IPL_VM), (10, IPL_SCHED), (11, IPL_HIGH)];

static OWED: [[AtomicU64; MAXCPUS]; 3] = [const { [const { AtomicU64::new(0) }; MAXCPUS] }; 3];
static RUNS: [[AtomicU64; MAXCPUS]; 3] = [const { [const { AtomicU64::new(0) }; MAXCPUS] }; 3];
static SENT: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static SERVED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static NESTED: AtomicU64 = AtomicU64::new(0);
static DEFERRED: AtomicU64 = AtomicU64::new(0);

fn handler(k: usize) -> bool {
    let ci = curcpu();
    let cpu = ci.index();
    let ipl = crate::spl::curipl();
    if ipl != SGIS[k].1 {
        super::report(|| format!("intr: SGI {} ran at {ipl}, not {}", SGIS[k].0, SGIS[k].1));
    }
    if ci.intr_depth.load(Ordering::Relaxed) > 1 {
        NESTED.fetch_add(1, Ordering::Relaxed);
    }
    let owed = OWED[k][cpu].swap(0, Ordering::AcqRel);
    SERVED[k].fetch_add(owed, Ordering::Relaxed);
    RUNS[k][cpu].fetch_add(1, Ordering::Release);
    true
}

pub(super) fn setup() -> Result<(), Failure> {
    for k in 0..3 {
        for c in 0..MAXCPUS {
            OWED[k][c].store(0, Ordering::Relaxed);
            RUNS[k][c].store(0, Ordering::Relaxed);
        }
        SENT[k].store(0, Ordering::Relaxed);
        SERVED[k].store(0, Ordering::Relaxed);
    }
    NESTED.store(0, Ordering::Relaxed);
    DEFERRED.store(0, Ordering::Relaxed);
    for (k, &(sgi, ipl)) in SGIS.iter().enumerate() {
        super::ensure_sgi(sgi, ipl, handler, k).map_err(|e| format!("intr: {e}"))?;
    }
    Ok(())
}

/// Sends SGI `k` to `cpu`, owed first.
fn send(k: usize, cpu: usize) {
    OWED[k][cpu].fetch_add(1, Ordering::AcqRel);
    SENT[k].fetch_add(1, Ordering::Relaxed);
    platform().send_ipi(IpiTarget::Cpu(cpu), SGIS[k].0);
}

/// Spins up to 1 ms of virtual time for `cond`.
fn spin_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(1);
    while !cond() {
        if crate::arch::aarch64::counter() > end {
            return cond();
        }
        relax(1);
    }
    true
}

/// Raises the IPL to `raised`, sends SGI `k` to this CPU and checks that it is deferred (at or
/// below the IPL) or runs at once (above it), and that a deferred one has run once `splx`
/// returns.
fn spl_section(k: usize, raised: Ipl) {
    crate::sched::kpreempt_disable();
    let me = this_cpu();
    let s = crate::spl::splraise(raised);
    let r0 = RUNS[k][me].load(Ordering::Acquire);
    send(k, me);
    let level = SGIS[k].1;
    let ci = curcpu();
    if level <= raised {
        // Taken and deferred: its level flagged, or a higher one that was deferred first
        // (the GIC then holds back its priority and below until `splx` ends it).
        let at_or_above = crate::spl::HARD_LEVELS & !((1u32 << level.as_u8()) - 1);
        let taken = spin_for(|| ci.ipending.load(Ordering::Relaxed) & at_or_above != 0);
        if !taken {
            super::report(|| {
                format!(
                    "intr: cpu{me}: SGI {} to itself at {raised} not taken (deferred) within 1 ms",
                    SGIS[k].0
                )
            });
        }
        if RUNS[k][me].load(Ordering::Acquire) != r0 {
            super::report(|| {
                format!(
                    "intr: cpu{me}: SGI {} at {level} ran while the IPL was {raised}",
                    SGIS[k].0
                )
            });
        }
        DEFERRED.fetch_add(1, Ordering::Relaxed);
        crate::spl::splx(s);
        // Run by `splx`, or (if a higher deferred one held it back at the GIC) taken as soon
        // as `splx` ended that one.
        if !spin_for(|| RUNS[k][me].load(Ordering::Acquire) != r0) {
            super::report(|| {
                format!(
                    "intr: cpu{me}: deferred SGI {} had not run 1 ms after splx({})",
                    SGIS[k].0,
                    crate::spl::curipl()
                )
            });
        }
    } else {
        let ran = spin_for(|| RUNS[k][me].load(Ordering::Acquire) != r0);
        if !ran {
            super::report(|| {
                format!(
                    "intr: cpu{me}: SGI {} at {level} did not run within 1 ms at IPL {raised}",
                    SGIS[k].0
                )
            });
        }
        crate::spl::splx(s);
    }
    crate::sched::kpreempt_enable();
}

pub(super) fn op(rng: &mut Rng) {
    match rng.below(8) {
        0..=3 => {
            let k = rng.below(3) as usize;
            let cpu = super::random_cpu(rng);
            send(k, cpu);
        }
        4 => {
            let k = rng.below(3) as usize;
            crate::sched::kpreempt_disable();
            let me = this_cpu();
            for c in super::online().filter(|&c| c != me) {
                OWED[k][c].fetch_add(1, Ordering::AcqRel);
                SENT[k].fetch_add(1, Ordering::Relaxed);
            }
            platform().send_ipi(IpiTarget::AllButSelf, SGIS[k].0);
            crate::sched::kpreempt_enable();
        }
        _ => {
            let k = rng.below(3) as usize;
            let raised = [IPL_VM, IPL_SCHED, IPL_HIGH][rng.below(3) as usize];
            spl_section(k, raised);
        }
    }
}

fn owed() -> u64 {
    OWED.iter().map(|a| sum(a)).sum()
}

pub(super) fn finish() -> Result<(), Failure> {
    let _ = wait_for(super::DRAIN_MS, || owed() == 0);
    for (k, &(sgi, ipl)) in SGIS.iter().enumerate() {
        for c in super::online() {
            let o = OWED[k][c].load(Ordering::Acquire);
            if o != 0 {
                return Err(format!(
                    "intr: SGI {sgi} ({ipl}) to cpu{c}: {o} sent and never handled (lost)"
                ));
            }
        }
        expect_eq(
            &format!("intr: SGI {sgi} ({ipl}) handled"),
            SERVED[k].load(Ordering::Relaxed),
            SENT[k].load(Ordering::Relaxed),
        )?;
    }
    Ok(())
}

pub(super) fn counts() -> String {
    format!(
        "{} SGIs sent ({} VM, {} SCHED, {} HIGH), {} handled, {} handler runs, {} nested, {} \
         deferred by spl",
        SENT.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>(),
        SENT[0].load(Ordering::Relaxed),
        SENT[1].load(Ordering::Relaxed),
        SENT[2].load(Ordering::Relaxed),
        SERVED
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum::<u64>(),
        RUNS.iter().map(|a| sum(a)).sum::<u64>(),
        NESTED.load(Ordering::Relaxed),
        DEFERRED.load(Ordering::Relaxed)
    )
}
