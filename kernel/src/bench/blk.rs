//! virtio-blk figures (`drivers::virtio::blk`), 4 KiB reads of the generated disk xtask
//! attaches:
//!
//! - `blk_read_4k_qd1`: one read at a time; a sample is the guest instructions the kernel runs
//!   for it: `strategy` (check, tag, queue, notify) plus the hard interrupt handler's first
//!   line to the completion callback's first line (acknowledge, softint, harvest, workqueue
//!   wakeup and switch); when the host finished the read before `strategy` returned (the
//!   interrupt came inside it), `strategy`'s start to the callback. The time the request
//!   spends in the host is left out: under icount it is host time turned into jumps of the
//!   virtual clock to the next timer, not guest work, and not reproducible. Which of the two
//!   cases a request falls in depends on the host, so these figures (unlike the others) can
//!   differ a little from run to run. What is not in it: the exception entry and GIC acknowledge before
//!   the handler's first line, and the waiting thread's wakeup after the callback.
//! - `blk_read_4k_qd32`: rounds of 32 reads submitted back to back and then all waited for; a
//!   sample is a round's `strategy` calls plus, for each hard interrupt, its first line to the
//!   first line of the last callback it led to, divided by 32.
//! - `blk_intr_to_callback`: the hard interrupt handler's first line to the callback's first
//!   line, one read at a time.

use super::{SAMPLES, WARMUP, figures, report, report_hundredths};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::drivers::virtio::blk::{BlkOp, Buf, VioBlk};
use crate::sync::condvar::KCondvar;
use crate::sync::mutex::KMutex;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

const READ: usize = 4096;
const DEPTH: usize = 32;

static DEV: AtomicPtr<VioBlk> = AtomicPtr::new(core::ptr::null_mut());
static LOCK: KMutex = KMutex::adaptive();
static CV: KCondvar = KCondvar::new();
static OUTSTANDING: AtomicU32 = AtomicU32::new(0);
/// Per request of a round: (interrupt counter, callback counter).
static STAMPS: [(AtomicU64, AtomicU64); DEPTH] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; DEPTH];

fn done(bp: &Buf) {
    let now = counter();
    // SAFETY: set before any request is submitted, cleared after the last completed.
    let dev = unsafe { &*DEV.load(Ordering::Acquire) };
    STAMPS[bp.arg]
        .0
        .store(dev.last_intr_counter(), Ordering::Relaxed);
    STAMPS[bp.arg].1.store(now, Ordering::Relaxed);
    assert_eq!(
        bp.result(),
        Some(Ok(())),
        "bench read of sector {}",
        bp.blkno()
    );
    let _g = LOCK.lock();
    OUTSTANDING.fetch_sub(1, Ordering::AcqRel);
    CV.cv_broadcast();
}

fn wait_all() {
    let _g = LOCK.lock();
    while OUTSTANDING.load(Ordering::Acquire) != 0 {
        CV.cv_wait(&LOCK);
    }
}

/// The three figures, or a line saying why there is no disk.
pub fn run() {
    let dev = match VioBlk::attach(crate::bootinfo::device_tree()) {
        Ok(d) => d,
        Err(e) => {
            crate::kprintln!("bench: vioblk: no disk, no blk_* figures: {e}");
            return;
        }
    };
    DEV.store(&dev as *const VioBlk as *mut VioBlk, Ordering::Release);
    let span = dev.capacity() - (READ / 512) as u64;
    let mut data: Vec<[u8; READ]> = alloc::vec![[0u8; READ]; DEPTH];
    let buf_at = |i: usize, sector: u64, data: &mut [u8; READ]| {
        let p = NonNull::new(data.as_mut_ptr()).expect("data");
        // SAFETY: `data` outlives the request, which is waited for before it is reused.
        unsafe { Buf::new(BlkOp::Read, sector, p, READ, done, i) }
    };

    let mut qd1 = Vec::with_capacity(SAMPLES);
    let mut i2c = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let bp = buf_at(0, (i as u64 * 8 * 37) % span, &mut data[0]);
        OUTSTANDING.store(1, Ordering::Release);
        let t0 = counter();
        // SAFETY: `bp` lives until `wait_all` saw its completion.
        unsafe { dev.strategy(&bp) }.expect("strategy");
        let t1 = counter();
        wait_all();
        let (intr, cb) = (
            STAMPS[0].0.load(Ordering::Relaxed),
            STAMPS[0].1.load(Ordering::Relaxed),
        );
        if i >= WARMUP {
            // The host may finish the read before `strategy` returns (the interrupt is then
            // taken inside it): t0 to the callback is then all guest work, with no wait in it.
            let work = if intr > t1 {
                (t1 - t0) + (cb - intr)
            } else {
                cb.max(t1) - t0
            };
            qd1.push(counter_to_ns(work));
            i2c.push(counter_to_ns(cb.saturating_sub(intr)));
        }
    }
    report("blk_read_4k_qd1", "insns", figures(&mut qd1));
    report("blk_intr_to_callback", "insns", figures(&mut i2c));

    let mut qd32 = Vec::with_capacity(SAMPLES);
    for round in 0..WARMUP + SAMPLES {
        let bufs: Vec<Buf> = data
            .iter_mut()
            .enumerate()
            .map(|(k, d)| buf_at(k, ((round * DEPTH + k) as u64 * 8 * 37) % span, d))
            .collect();
        OUTSTANDING.store(DEPTH as u32, Ordering::Release);
        let mut submit = 0;
        for bp in &bufs {
            let t0 = counter();
            // SAFETY: `bufs` and `data` live until `wait_all` saw every completion.
            unsafe { dev.strategy(bp) }.expect("strategy");
            submit += counter() - t0;
        }
        wait_all();
        // Per interrupt: its first line to the last callback it led to.
        let mut groups: Vec<(u64, u64)> = Vec::with_capacity(DEPTH);
        for (intr, cb) in &STAMPS {
            let (intr, cb) = (intr.load(Ordering::Relaxed), cb.load(Ordering::Relaxed));
            match groups.iter_mut().find(|g| g.0 == intr) {
                Some(g) => g.1 = g.1.max(cb),
                None => groups.push((intr, cb)),
            }
        }
        let completion: u64 = groups.iter().map(|&(i, c)| c.saturating_sub(i)).sum();
        if round >= WARMUP {
            qd32.push(counter_to_ns(submit + completion) * 100 / DEPTH as u64);
        }
    }
    report_hundredths("blk_read_4k_qd32", "insns", figures(&mut qd32));
    let stats = dev.stats();
    dev.detach();
    DEV.store(core::ptr::null_mut(), Ordering::Release);
    crate::kprintln!(
        "bench: vioblk: {} reads, {} interrupts, {} softint runs",
        stats.completed,
        stats.intr,
        stats.softint
    );
}
