//! The `sched` torture: thread churn (create with random flags, priorities and bindings; exit;
//! join now or never), yields, one-tick sleeps, preemption-disabled windows, and FP/SIMD
//! sections whose register pattern must survive every switch.
//!
//! Counts: threads created = threads that ran to the end; MUSTJOIN threads created = joined;
//! FP/SIMD checks with a changed register: 0. Injected `kthread_create` failures are counted and
//! must leave nothing behind (the driver's leak check).

use super::{Failure, Rng, expect_eq, random_cpu, relax, wait_for};
use crate::arch::aarch64::context::{self, FpState};
use crate::kthread::{
    KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, KTHREAD_TS, KthreadError, PRI_NONE, kthread_create,
    kthread_join,
};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

static CREATED: AtomicU64 = AtomicU64::new(0);
static MUSTJOIN: AtomicU64 = AtomicU64::new(0);
static JOINED: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);
static NOMEM: AtomicU64 = AtomicU64::new(0);
static AGAIN: AtomicU64 = AtomicU64::new(0);
static FPU_CHECKS: AtomicU64 = AtomicU64::new(0);
static FPU_BAD: AtomicU64 = AtomicU64::new(0);

/// Detached threads allowed in flight at once, so churn cannot exhaust the stack slots.
const MAX_DETACHED: u64 = 24;

pub(super) fn setup() -> Result<(), Failure> {
    for c in [
        &CREATED,
        &MUSTJOIN,
        &JOINED,
        &FINISHED,
        &NOMEM,
        &AGAIN,
        &FPU_CHECKS,
        &FPU_BAD,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    Ok(())
}

fn pattern(seed: u64) -> FpState {
    let mut s = FpState::zero();
    let mut r = Rng::new(seed);
    for v in s.v.iter_mut() {
        *v = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
    }
    s
}

/// An FP/SIMD section: load a pattern, get switched out (yield or sleep), check it.
fn fpu_section(rng: &mut Rng) {
    let _g = crate::kthread::FpuGuard::enter();
    let want = pattern(rng.next_u64());
    context::fpu_restore_from(&want);
    if rng.chance(1, 2) {
        crate::sched::yield_now();
    } else {
        crate::kthread::kpause(1);
    }
    let mut got = FpState::zero();
    context::fpu_save_to(&mut got);
    FPU_CHECKS.fetch_add(1, Ordering::Relaxed);
    if got.v != want.v {
        FPU_BAD.fetch_add(1, Ordering::Relaxed);
        let bad = (0..32).find(|&i| got.v[i] != want.v[i]).unwrap_or(0);
        super::report(|| {
            format!(
                "sched: FP/SIMD register v{bad} changed across a switch in thread {}",
                crate::sched::curlwp().name()
            )
        });
    }
}

/// A churned thread: a few random steps, then it counts itself finished.
fn child(seed: usize) {
    let mut rng = Rng::new(seed as u64);
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 => crate::sched::yield_now(),
            1 => crate::kthread::kpause(rng.below(2)),
            2 => fpu_section(&mut rng),
            _ => relax(rng.below(8)),
        }
    }
    FINISHED.fetch_add(1, Ordering::AcqRel);
}

fn spawn(rng: &mut Rng) {
    // A child may finish (and count itself) before its creator counts it created, so
    // FINISHED can run ahead of CREATED for a moment: saturate rather than underflow.
    let in_flight = CREATED
        .load(Ordering::Relaxed)
        .saturating_sub(FINISHED.load(Ordering::Relaxed));
    let mustjoin = in_flight >= MAX_DETACHED || rng.chance(1, 2);
    let mut flags = KTHREAD_MPSAFE;
    if rng.chance(1, 8) {
        flags &= !KTHREAD_MPSAFE; // runs under the kernel lock
    }
    let pri = match rng.below(4) {
        0 => PRI_NONE,
        1 => {
            flags |= KTHREAD_TS;
            rng.below(64) as i32
        }
        2 => 64 + rng.below(64) as i32,
        _ => 128 + rng.below(64) as i32,
    };
    if mustjoin {
        flags |= KTHREAD_MUSTJOIN;
    }
    let bind = rng.chance(1, 3).then(|| random_cpu(rng));
    let mut l = None;
    let made = kthread_create(
        pri,
        flags,
        bind,
        child,
        rng.next_u64() as usize,
        mustjoin.then_some(&mut l),
        format_args!("torture/c"),
    );
    match made {
        Ok(()) => {
            CREATED.fetch_add(1, Ordering::AcqRel);
            if mustjoin {
                MUSTJOIN.fetch_add(1, Ordering::Relaxed);
                if rng.chance(1, 2) {
                    crate::sched::yield_now();
                }
                kthread_join(l.expect("newlp"));
                JOINED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(KthreadError::NoMem) => {
            NOMEM.fetch_add(1, Ordering::Relaxed);
        }
        Err(KthreadError::Again) => {
            AGAIN.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(super) fn op(rng: &mut Rng) {
    match rng.below(8) {
        0..=2 => spawn(rng),
        3 => crate::sched::yield_now(),
        4 => crate::kthread::kpause(1),
        5 => fpu_section(rng),
        6 => {
            crate::sched::kpreempt_disable();
            relax(rng.below(16));
            crate::sched::kpreempt_enable();
        }
        _ => relax(rng.below(32)),
    }
}

pub(super) fn finish() -> Result<(), Failure> {
    let created = CREATED.load(Ordering::Acquire);
    let _ = wait_for(super::DRAIN_MS, || {
        FINISHED.load(Ordering::Acquire) >= created
    });
    expect_eq(
        "sched: threads that ran to the end",
        FINISHED.load(Ordering::Acquire),
        created,
    )?;
    expect_eq(
        "sched: MUSTJOIN threads joined",
        JOINED.load(Ordering::Relaxed),
        MUSTJOIN.load(Ordering::Relaxed),
    )?;
    expect_eq(
        "sched: FP/SIMD checks that found a changed register",
        FPU_BAD.load(Ordering::Relaxed),
        0,
    )
}

pub(super) fn counts() -> String {
    format!(
        "{} threads created ({} MUSTJOIN, {} joined), {} finished, {} ENOMEM, {} EAGAIN, {} \
         FP/SIMD checks, {} bad",
        CREATED.load(Ordering::Relaxed),
        MUSTJOIN.load(Ordering::Relaxed),
        JOINED.load(Ordering::Relaxed),
        FINISHED.load(Ordering::Relaxed),
        NOMEM.load(Ordering::Relaxed),
        AGAIN.load(Ordering::Relaxed),
        FPU_CHECKS.load(Ordering::Relaxed),
        FPU_BAD.load(Ordering::Relaxed)
    )
}
