//! The `wq` torture: two long-lived work queues (one shared, one WQ_PERCPU; one of them
//! WQ_FPU and not MPSAFE in turn) fed from threads, from soft interrupts and from hard
//! interrupt handlers, `workqueue_wait` on a work just enqueued, and short-lived queues created,
//! used and destroyed under load (their creation may fail by injection and must leave nothing
//! behind).
//!
//! Each long-lived queue has a pool of 64 works, each owned by at most one enqueuer at a time (a
//! claim bit): claimed, enqueued, run once (the callback releases it). Counts: works run =
//! works enqueued, a work never runs unclaimed (duplicated), and `workqueue_wait` never returns
//! before the callback of the work it waited for.

use super::{Failure, Rng, expect_eq, this_cpu, wait_for};
use crate::cpu::{MAXCPUS, curcpu};
use crate::platform::{IpiTarget, platform};
use crate::softint::{SOFTINT_MPSAFE, SOFTINT_NET, softint_disestablish, softint_establish};
use crate::workqueue::{
    WQ_FPU, WQ_MPSAFE, WQ_PERCPU, Work, Workqueue, workqueue_create, workqueue_destroy,
    workqueue_enqueue, workqueue_wait,
};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

const NWORK: usize = 64;
/// The SGI whose handler enqueues what `MAIL` holds.
const SGI: u32 = 13;

static POOL: [[Work; NWORK]; 2] = [const { [const { Work::new("torture/wq") }; NWORK] }; 2];
/// Per queue: the claim bits of its pool.
static CLAIMED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Per queue and CPU: claimed works an interrupt or softint on that CPU must enqueue.
static MAIL: [[AtomicU64; MAXCPUS]; 2] = [const { [const { AtomicU64::new(0) }; MAXCPUS] }; 2];
static ENQUEUED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static RAN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static FROM_INTR: AtomicU64 = AtomicU64::new(0);
static FROM_SOFTINT: AtomicU64 = AtomicU64::new(0);
static WAITS: AtomicU64 = AtomicU64::new(0);
/// Per worker CPU: its private work (for `workqueue_wait`) and how often it ran.
static PRIVATE: [Work; MAXCPUS] = [const { Work::new("torture/wq-wait") }; MAXCPUS];
static PRIVATE_RUNS: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static TMP_WORK: [Work; MAXCPUS] = [const { Work::new("torture/wq-tmp") }; MAXCPUS];
static TMP_RUNS: AtomicU64 = AtomicU64::new(0);
static TMP_MADE: AtomicU64 = AtomicU64::new(0);
static TMP_FAILED: AtomicU64 = AtomicU64::new(0);

struct Queues {
    wq: [Option<Workqueue>; 2],
    softint: u64,
}

static QUEUES: crate::sync::SpinLock<Queues> = crate::sync::SpinLock::new(Queues {
    wq: [None, None],
    softint: 0,
});
/// The queues' addresses, for use without the lock (they live from setup to teardown).
static WQ_PTR: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn wq(q: usize) -> &'static Workqueue {
    // SAFETY: setup stored the address of a queue kept in QUEUES until teardown, which runs
    // after every worker, handler and softint of this torture is done.
    unsafe { &*(WQ_PTR[q].load(Ordering::Acquire) as *const Workqueue) }
}

fn index_of(q: usize, wk: &'static Work) -> Option<usize> {
    let base = POOL[q].as_ptr() as usize;
    let off = (wk as *const Work as usize).wrapping_sub(base) / core::mem::size_of::<Work>();
    (off < NWORK && core::ptr::eq(&POOL[q][off], wk)).then_some(off)
}

/// The long-lived queues' callback (`arg` = queue).
fn callback(wk: &'static Work, q: usize) {
    if let Some(i) = index_of(q, wk) {
        RAN[q].fetch_add(1, Ordering::Relaxed);
        let bit = 1u64 << i;
        if CLAIMED[q].fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
            super::report(|| format!("wq: work {i} of queue {q} ran while nobody had enqueued it"));
        }
    } else {
        let me = (0..MAXCPUS).find(|&c| core::ptr::eq(&PRIVATE[c], wk));
        match me {
            Some(c) => {
                PRIVATE_RUNS[c].fetch_add(1, Ordering::Release);
            }
            None => super::report(|| String::from("wq: a work not of this queue ran")),
        }
    }
}

fn tmp_callback(_: &'static Work, _: usize) {
    TMP_RUNS.fetch_add(1, Ordering::Relaxed);
}

/// Claims a free work of queue `q`'s pool, starting the search at a random place.
fn claim(q: usize, rng: &mut Rng) -> Option<usize> {
    let start = rng.below(NWORK as u64) as usize;
    for k in 0..NWORK {
        let i = (start + k) % NWORK;
        let bit = 1u64 << i;
        if CLAIMED[q].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            return Some(i);
        }
    }
    None
}

fn enqueue(q: usize, i: usize, cpu: Option<usize>) {
    ENQUEUED[q].fetch_add(1, Ordering::Relaxed);
    workqueue_enqueue(wq(q), &POOL[q][i], if q == 1 { cpu } else { None });
}

/// Enqueues what this CPU's mailboxes hold (from an interrupt or a softint).
fn deliver_mail() -> u64 {
    let cpu = curcpu().index();
    let mut n = 0;
    for (q, mail) in MAIL.iter().enumerate() {
        let mut bits = mail[cpu].swap(0, Ordering::AcqRel);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            enqueue(q, i, None);
            n += 1;
        }
    }
    n
}

fn sgi_handler(_: usize) -> bool {
    FROM_INTR.fetch_add(deliver_mail(), Ordering::Relaxed);
    true
}

fn softint_handler(_: usize) {
    FROM_SOFTINT.fetch_add(deliver_mail(), Ordering::Relaxed);
}

pub(super) fn setup() -> Result<(), Failure> {
    for q in 0..2 {
        CLAIMED[q].store(0, Ordering::Relaxed);
        ENQUEUED[q].store(0, Ordering::Relaxed);
        RAN[q].store(0, Ordering::Relaxed);
        for m in &MAIL[q] {
            m.store(0, Ordering::Relaxed);
        }
    }
    for r in &PRIVATE_RUNS {
        r.store(0, Ordering::Relaxed);
    }
    for c in [
        &FROM_INTR,
        &FROM_SOFTINT,
        &WAITS,
        &TMP_RUNS,
        &TMP_MADE,
        &TMP_FAILED,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    super::ensure_sgi(SGI, crate::spl::IPL_VM, sgi_handler, 0).map_err(|e| format!("wq: {e}"))?;
    let shared = workqueue_create(
        "torture/wq0",
        callback,
        0,
        crate::sched::PRI_KTHREAD,
        crate::spl::IPL_VM,
        WQ_MPSAFE,
    )
    .map_err(|e| format!("wq: cannot create the shared queue: {e:?}"))?;
    let percpu = workqueue_create(
        "torture/wq1",
        callback,
        1,
        40,
        crate::spl::IPL_VM,
        WQ_PERCPU | WQ_FPU,
    )
    .map_err(|e| format!("wq: cannot create the per-CPU queue: {e:?}"))?;
    let si = softint_establish(SOFTINT_NET | SOFTINT_MPSAFE, softint_handler, 0)
        .ok_or_else(|| String::from("wq: the softint table is full"))?;
    let mut g = QUEUES.lock();
    g.wq = [Some(shared), Some(percpu)];
    g.softint = si.to_raw();
    for (q, ptr) in WQ_PTR.iter().enumerate() {
        ptr.store(
            g.wq[q].as_ref().map_or(0, |w| w as *const Workqueue as u64),
            Ordering::Release,
        );
    }
    Ok(())
}

/// A short-lived queue: created (perhaps failing), one work enqueued and waited for, destroyed.
fn short_lived(rng: &mut Rng) {
    let me = this_cpu();
    let flags = WQ_MPSAFE | if rng.chance(1, 2) { WQ_PERCPU } else { 0 };
    let made = workqueue_create(
        "torture/wqtmp",
        tmp_callback,
        0,
        crate::sched::PRI_KTHREAD,
        crate::spl::IPL_NONE,
        flags,
    );
    let Ok(tmp) = made else {
        TMP_FAILED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TMP_MADE.fetch_add(1, Ordering::Relaxed);
    let before = TMP_RUNS.load(Ordering::Relaxed);
    workqueue_enqueue(&tmp, &TMP_WORK[me], None);
    workqueue_wait(&tmp, &TMP_WORK[me]);
    if TMP_RUNS.load(Ordering::Relaxed) == before {
        super::report(|| String::from("wq: workqueue_wait returned before the work ran"));
    }
    workqueue_destroy(tmp);
}

pub(super) fn op(rng: &mut Rng) {
    let q = rng.below(2) as usize;
    match rng.below(10) {
        0..=3 => {
            if let Some(i) = claim(q, rng) {
                let cpu = super::random_cpu(rng);
                enqueue(q, i, Some(cpu));
            }
        }
        4 | 5 => {
            // From an interrupt on a random CPU.
            if let Some(i) = claim(q, rng) {
                let cpu = super::random_cpu(rng);
                MAIL[q][cpu].fetch_or(1 << i, Ordering::AcqRel);
                platform().send_ipi(IpiTarget::Cpu(cpu), SGI);
            }
        }
        6 | 7 => {
            // From a soft interrupt on a random CPU.
            if let Some(i) = claim(q, rng) {
                let cpu = super::random_cpu(rng);
                MAIL[q][cpu].fetch_or(1 << i, Ordering::AcqRel);
                let h = crate::softint::SoftintHandle::from_raw(QUEUES.lock().softint);
                crate::sched::kpreempt_disable();
                crate::softint::softint_schedule_cpu(h, cpu);
                crate::sched::kpreempt_enable();
            }
        }
        8 => {
            let me = this_cpu();
            let before = PRIVATE_RUNS[me].load(Ordering::Acquire);
            let cpu = super::random_cpu(rng);
            workqueue_enqueue(wq(q), &PRIVATE[me], if q == 1 { Some(cpu) } else { None });
            workqueue_wait(wq(q), &PRIVATE[me]);
            WAITS.fetch_add(1, Ordering::Relaxed);
            if PRIVATE_RUNS[me].load(Ordering::Acquire) != before + 1 {
                super::report(|| {
                    format!("wq: cpu{me}: workqueue_wait returned before its work ran")
                });
            }
        }
        _ => short_lived(rng),
    }
}

pub(super) fn check_now() -> Result<(), Failure> {
    for q in 0..2 {
        let ran = RAN[q].load(Ordering::Relaxed);
        let enq = ENQUEUED[q].load(Ordering::Relaxed);
        if ran > enq {
            return Err(format!(
                "wq: queue {q}: {ran} works ran, {enq} enqueued (duplicated)"
            ));
        }
    }
    Ok(())
}

pub(super) fn finish() -> Result<(), Failure> {
    let _ = wait_for(super::DRAIN_MS, || {
        (0..2).all(|q| CLAIMED[q].load(Ordering::Acquire) == 0)
    });
    for q in 0..2 {
        let left = CLAIMED[q].load(Ordering::Acquire);
        if left != 0 {
            return Err(format!(
                "wq: queue {q}: works {left:#x} claimed and never run (lost)"
            ));
        }
        expect_eq(
            &format!("wq: queue {q}: works run"),
            RAN[q].load(Ordering::Relaxed),
            ENQUEUED[q].load(Ordering::Relaxed),
        )?;
    }
    Ok(())
}

pub(super) fn teardown() {
    let (wqs, si) = {
        let mut g = QUEUES.lock();
        (core::mem::take(&mut g.wq), g.softint)
    };
    softint_disestablish(crate::softint::SoftintHandle::from_raw(si));
    for ptr in &WQ_PTR {
        ptr.store(0, Ordering::Release);
    }
    for w in wqs.into_iter().flatten() {
        workqueue_destroy(w);
    }
}

pub(super) fn counts() -> String {
    format!(
        "{} works enqueued ({} by interrupts, {} by softints), {} run, {} waits, {} \
         short-lived queues ({} runs, {} creation failures)",
        ENQUEUED[0].load(Ordering::Relaxed) + ENQUEUED[1].load(Ordering::Relaxed),
        FROM_INTR.load(Ordering::Relaxed),
        FROM_SOFTINT.load(Ordering::Relaxed),
        RAN[0].load(Ordering::Relaxed) + RAN[1].load(Ordering::Relaxed),
        WAITS.load(Ordering::Relaxed),
        TMP_MADE.load(Ordering::Relaxed),
        TMP_RUNS.load(Ordering::Relaxed),
        TMP_FAILED.load(Ordering::Relaxed)
    )
}
