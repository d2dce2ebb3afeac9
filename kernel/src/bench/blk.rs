//! virtio-blk figures (`drivers::virtio::blk`), 4 KiB reads of the generated disk xtask
//! attaches:
//!
//! - `blk_read_4k_qd1`: one read at a time; a sample is the guest instructions retired from
//!   just before `strategy` to the completion callback's first line: check, tag, queue and
//!   notify, the submitter's sleep and the switch to idle, exception entry, the hard interrupt
//!   at IPL_BIO, the softint's harvest, the workqueue thread's wakeup and switch. They are
//!   counted by the PMU's `INST_RETIRED` (`arch::aarch64::pmu`), not the clock: under icount
//!   the host's time on the read is a jump of the virtual clock, not guest work, while a CPU
//!   idle in WFI retires nothing. QEMU's counter counts every vCPU's instructions, so a timer
//!   tick that falls inside the wait is in the sample (the median leaves such samples out);
//!   the figure is the same whatever the host's speed. Linux is measured the same way
//!   (`xtask/peer/linux`).
//! - `blk_read_4k_qd32`: rounds of 32 reads submitted back to back and then all waited for; a
//!   sample is the instructions retired from before the first `strategy` to the last
//!   callback's first line, divided by 32.
//! - `blk_intr_to_callback`: the hard interrupt handler's first line to the callback's first
//!   line, one read at a time.

use super::{SAMPLES, WARMUP, figures, report, report_hundredths};
use crate::arch::aarch64::{counter, pmu};
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
/// Per request of a round: the retired-instruction count at the callback's first line, and
/// the CPU it ran on.
static WORK: [(AtomicU32, AtomicU32); DEPTH] =
    [const { (AtomicU32::new(0), AtomicU32::new(0)) }; DEPTH];

fn done(bp: &Buf) {
    let insns = pmu::inst_retired();
    let now = counter();
    WORK[bp.arg].0.store(insns, Ordering::Relaxed);
    WORK[bp.arg]
        .1
        .store(crate::cpu::cpu_number() as u32, Ordering::Relaxed);
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

/// Starts every online CPU's retired-instruction counter and returns, per CPU, its offset
/// from this CPU's counter (`P_k - P_here` at one instant), or `None` when the PMU has no
/// `INST_RETIRED`.
///
/// Under icount every counter counts the same machine-wide sequence, each from its own
/// reset, so the offsets are constant. They are taken in one low-priority broadcast: this
/// CPU's `xcall` thread publishes its count in a loop that yields after each store, and
/// every other CPU reads the published count and then its own, 16 times, keeping the least
/// difference. Only one vCPU runs at a time, so that difference exceeds the offset by the
/// few instructions between the publisher's read and the reader's (about ten).
fn counter_offsets() -> Option<[u32; crate::cpu::MAXCPUS]> {
    let here = crate::cpu::cpu_number();
    let missing = AtomicU32::new(0);
    crate::xcall::xc_broadcast_with(0, |_| {
        if !pmu::start_inst_retired() {
            missing.fetch_add(1, Ordering::Relaxed);
        }
    });
    if missing.load(Ordering::Relaxed) != 0 {
        return None;
    }
    let published = AtomicU32::new(0);
    let started = AtomicU32::new(0);
    let answered = AtomicU32::new(0);
    let offsets: [AtomicU32; crate::cpu::MAXCPUS] =
        [const { AtomicU32::new(0) }; crate::cpu::MAXCPUS];
    let others = crate::cpu::ncpu_online() as u32 - 1;
    crate::xcall::xc_broadcast_with(0, |ci| {
        if ci.index() == here {
            while answered.load(Ordering::Acquire) != others {
                published.store(pmu::inst_retired(), Ordering::Release);
                started.store(1, Ordering::Release);
                crate::arch::aarch64::cpu_relax();
            }
        } else {
            while started.load(Ordering::Acquire) == 0 {
                crate::arch::aarch64::cpu_relax();
            }
            // Published value first, own count second: the difference is the offset plus
            // the instructions run in between, never less. An interrupt or the end of this
            // vCPU's turn between the two reads adds to it; the least of several is kept.
            let mut best: Option<u32> = None;
            for _ in 0..16 {
                let theirs = published.load(Ordering::Acquire);
                let mine = pmu::inst_retired();
                let d = mine.wrapping_sub(theirs);
                best = Some(best.map_or(d, |b| if (d.wrapping_sub(b) as i32) < 0 { d } else { b }));
                crate::arch::aarch64::cpu_relax();
            }
            offsets[ci.index()].store(best.unwrap_or(0), Ordering::Relaxed);
            answered.fetch_add(1, Ordering::AcqRel);
        }
    });
    Some(core::array::from_fn(|k| offsets[k].load(Ordering::Relaxed)))
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

    let Some(off) = counter_offsets() else {
        crate::kprintln!(
            "bench: vioblk: the PMU has no INST_RETIRED (icount off?): no blk figures"
        );
        dev.detach();
        DEV.store(core::ptr::null_mut(), Ordering::Release);
        return;
    };
    // A count read on CPU k, as the offsets' reference CPU would have read it.
    let here_count = |w: u32, cpu: u32| w.wrapping_sub(off[cpu as usize]);
    // The count now, wherever this thread runs (it is not bound: it must not migrate
    // between the read and the CPU number).
    let now = || {
        crate::sched::kpreempt_disable();
        let w = pmu::inst_retired();
        let cpu = crate::cpu::cpu_number() as u32;
        crate::sched::kpreempt_enable();
        here_count(w, cpu)
    };

    let mut qd1 = Vec::with_capacity(SAMPLES);
    let mut i2c = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let bp = buf_at(0, (i as u64 * 8 * 37) % span, &mut data[0]);
        OUTSTANDING.store(1, Ordering::Release);
        let w0 = now();
        // SAFETY: `bp` lives until `wait_all` saw its completion.
        unsafe { dev.strategy(&bp) }.expect("strategy");
        wait_all();
        let (intr, cb) = (
            STAMPS[0].0.load(Ordering::Relaxed),
            STAMPS[0].1.load(Ordering::Relaxed),
        );
        let (w1, cpu) = (
            WORK[0].0.load(Ordering::Relaxed),
            WORK[0].1.load(Ordering::Relaxed),
        );
        if i >= WARMUP {
            qd1.push(u64::from(here_count(w1, cpu).wrapping_sub(w0)));
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
        let w0 = now();
        for bp in &bufs {
            // SAFETY: `bufs` and `data` live until `wait_all` saw every completion.
            unsafe { dev.strategy(bp) }.expect("strategy");
        }
        wait_all();
        // The last callback's first line: the largest count since `w0` among them.
        let last = WORK
            .iter()
            .map(|(w, cpu)| {
                let (w, cpu) = (w.load(Ordering::Relaxed), cpu.load(Ordering::Relaxed));
                here_count(w, cpu).wrapping_sub(w0)
            })
            .max()
            .unwrap_or(0);
        if round >= WARMUP {
            qd32.push(u64::from(last) * 100 / DEPTH as u64);
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
