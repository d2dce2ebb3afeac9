//! The virtio-blk driver (`drivers::virtio::blk`) on the disk `cargo xtask test` attaches (a
//! fresh generated image per configuration: sector N starts with `sector N\n`, the rest is
//! `N % 251`): a seeded pattern to 10,000 random sectors from threads on every CPU at queue
//! depth 32, read back and checked; requests past the end; the device's error status; detach
//! with 32 requests in flight (completed by the device, or aborted when it never saw them),
//! each completed exactly once, nothing left behind; device trees without usable nodes.

use super::{Lcg, seed, spawn_joinable};
use crate::bootinfo::device_tree;
use crate::cpu::{MAXCPUS, cpus};
use crate::drivers::virtio::blk::{AttachError, BlkError, BlkOp, Buf, SECTOR_SIZE, VioBlk};
use crate::drivers::virtio::{ProbeError, mmio_slots};
use crate::ktest;
use crate::sync::condvar::KCondvar;
use crate::sync::mutex::KMutex;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Sectors at the end of the disk the random test leaves alone, for the pattern check.
const UNTOUCHED_TAIL: u64 = 64;
/// Sectors written and read back by the random test.
const RANDOM_SECTORS: usize = 10_000;
/// Requests in flight, all threads together.
const QUEUE_DEPTH: usize = 32;

fn needs_virtio_blk() -> Option<&'static str> {
    match mmio_slots(device_tree()) {
        Ok(_) => None,
        Err(_) => Some("no virtio-mmio slots in the device tree (virt with a disk only)"),
    }
}

fn attach() -> VioBlk {
    match VioBlk::attach(device_tree()) {
        Ok(d) => d,
        Err(e) => panic!("vioblk attach: {e}"),
    }
}

/// What the generated image holds in sector `n`.
fn generated(n: u64) -> [u8; SECTOR_SIZE] {
    let mut s = [(n % 251) as u8; SECTOR_SIZE];
    let head = alloc::format!("sector {n}\n");
    s[..head.len()].copy_from_slice(head.as_bytes());
    s
}

/// The seeded pattern of sector `n`.
fn pattern(seed: u64, n: u64, out: &mut [u8]) {
    let mut g = Lcg::new(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for chunk in out.chunks_mut(4) {
        let v = (g.next() as u32).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out[..8].copy_from_slice(&n.to_le_bytes());
}

ktest! {
    #[requires(needs_virtio_blk)]
    fn vioblk_attaches_from_the_device_tree_and_reads_what_the_host_wrote() {
        let d = attach();
        let cap = d.capacity();
        assert!(cap > UNTOUCHED_TAIL, "capacity {cap} sectors");
        crate::kprintln!(
            "      vioblk at {:#x} irq {}: {cap} sectors{}",
            d.slot().regs.start,
            d.slot().irq,
            if d.readonly() { " (read-only)" } else { "" }
        );
        let mut buf = [0u8; SECTOR_SIZE * 4];
        let mut wrong = Vec::new();
        // The random test writes anywhere but the last UNTOUCHED_TAIL sectors.
        for first in [cap - UNTOUCHED_TAIL, cap - 4] {
            d.read(first, &mut buf).expect("read");
            for (i, s) in buf.chunks(SECTOR_SIZE).enumerate() {
                if s != generated(first + i as u64) {
                    wrong.push(first + i as u64);
                }
            }
        }
        let stats = d.stats();
        d.detach();
        assert!(wrong.is_empty(), "sectors not as generated: {wrong:?}");
        assert_eq!(stats.completed, 2, "completions");
        assert!(stats.intr >= 1 && stats.softint >= 1, "{stats:?}");
    }
}

// ---- 10,000 random sectors from every CPU at queue depth 32 ----------------------------------

/// One request slot of a test thread: `buf` first, so the `&Buf` given to `iodone` is the slot.
#[repr(C)]
struct Slot {
    buf: Buf,
    data: [u8; SECTOR_SIZE],
    sector: u64,
    /// Set by `iodone` (under the window's lock); cleared by the thread when it reuses the slot.
    done: AtomicBool,
}

/// A test thread's share: its sectors, its window of requests, its counts.
struct Window {
    dev: *const VioBlk,
    seed: u64,
    depth: usize,
    sectors: Vec<u64>,
    lock: KMutex,
    cv: KCondvar,
    completions: AtomicU64,
    double: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    first_mismatch: AtomicU64,
}

// SAFETY: the device is shared read-only (its methods lock); the rest is atomic or a lock.
unsafe impl Sync for Window {}

fn slot_done(bp: &Buf) {
    // SAFETY: every `Buf` this test submits with `slot_done` is the first field of a `Slot`
    // (`#[repr(C)]`), and `arg` is its `Window`; both outlive the request.
    let (slot, w) = unsafe {
        (
            &*(bp as *const Buf as *const Slot),
            &*(bp.arg as *const Window),
        )
    };
    if !matches!(bp.result(), Some(Ok(()))) {
        w.errors.fetch_add(1, Ordering::Relaxed);
    }
    let _g = w.lock.lock();
    if slot.done.swap(true, Ordering::AcqRel) {
        w.double.fetch_add(1, Ordering::Relaxed);
    }
    w.completions.fetch_add(1, Ordering::Relaxed);
    w.cv.cv_signal();
}

/// Runs `op` on every sector of `w` with `w.depth` requests in flight; on reads, checks each.
fn run_phase(w: &Window, slots: &mut [Box<Slot>], op: BlkOp) {
    // SAFETY: the device outlives the test threads (joined before detach).
    let dev = unsafe { &*w.dev };
    let check = |slot: &Slot| {
        if slot.buf.op() == BlkOp::Read {
            let mut want = [0u8; SECTOR_SIZE];
            pattern(w.seed, slot.sector, &mut want);
            if slot.data != want && w.mismatches.fetch_add(1, Ordering::Relaxed) == 0 {
                w.first_mismatch.store(slot.sector, Ordering::Relaxed);
            }
        }
    };
    let mut in_flight = [false; QUEUE_DEPTH];
    let mut next = 0;
    loop {
        // Reuse every slot whose request completed; fill free slots.
        for (i, slot) in slots.iter_mut().enumerate() {
            if in_flight[i] {
                let _g = w.lock.lock();
                if !slot.done.load(Ordering::Acquire) {
                    continue;
                }
                drop(_g);
                check(slot);
                in_flight[i] = false;
            }
            if next < w.sectors.len() {
                let sector = w.sectors[next];
                next += 1;
                slot.sector = sector;
                slot.done.store(false, Ordering::Relaxed);
                if op == BlkOp::Write {
                    pattern(w.seed, sector, &mut slot.data);
                } else {
                    slot.data = [0; SECTOR_SIZE];
                }
                let data = NonNull::new(slot.data.as_mut_ptr()).expect("slot data");
                // SAFETY: the slot (boxed, so it does not move) and its data stay untouched
                // until `slot_done` sets `done`, which this thread waits for before reuse.
                slot.buf = unsafe {
                    Buf::new(
                        op,
                        sector,
                        data,
                        SECTOR_SIZE,
                        slot_done,
                        w as *const Window as usize,
                    )
                };
                // SAFETY: as above.
                unsafe { dev.strategy(&slot.buf) }.expect("strategy");
                in_flight[i] = true;
            }
        }
        if !in_flight.iter().any(|&f| f) && next == w.sectors.len() {
            return;
        }
        // Sleep until some request of this window completes.
        let _g = w.lock.lock();
        while !slots
            .iter()
            .enumerate()
            .any(|(i, s)| in_flight[i] && s.done.load(Ordering::Acquire))
        {
            w.cv.cv_wait(&w.lock);
        }
    }
}

fn random_worker(arg: usize) {
    // SAFETY: the test passes a `Window` that outlives this thread (joined).
    let w = unsafe { &*(arg as *const Window) };
    let mut slots: Vec<Box<Slot>> = (0..w.depth)
        .map(|_| {
            let mut data = [0u8; SECTOR_SIZE];
            let p = NonNull::new(data.as_mut_ptr()).expect("data");
            Box::new(Slot {
                // SAFETY: a placeholder, never submitted (replaced before each submission).
                buf: unsafe { Buf::new(BlkOp::Read, 0, p, SECTOR_SIZE, slot_done, 0) },
                data,
                sector: 0,
                done: AtomicBool::new(true),
            })
        })
        .collect();
    run_phase(w, &mut slots, BlkOp::Write);
    run_phase(w, &mut slots, BlkOp::Read);
}

ktest! {
    #[requires(needs_virtio_blk)]
    #[timeout_ms(600_000)]
    fn ten_thousand_random_sectors_from_every_cpu_at_depth_32_read_back_exactly() {
        let s = seed();
        crate::kprintln!("      seed {s:#x}");
        let dev = attach();
        let usable = dev.capacity() - UNTOUCHED_TAIL;
        assert!(usable as usize >= RANDOM_SECTORS, "disk too small: {usable} sectors");
        // Distinct random sectors: a partial Fisher-Yates shuffle of 0..usable.
        let mut all: Vec<u64> = (0..usable).collect();
        let mut g = Lcg::new(s);
        for i in 0..RANDOM_SECTORS {
            let j = i + (g.next() as usize % (all.len() - i));
            all.swap(i, j);
        }
        let chosen = &all[..RANDOM_SECTORS];
        let online: Vec<usize> = cpus().filter(|c| c.is_online()).map(|c| c.index()).collect();
        let n = online.len();
        let windows: Vec<Box<Window>> = (0..n)
            .map(|k| {
                Box::new(Window {
                    dev: &dev,
                    seed: s,
                    // 32 in flight altogether: split as evenly as the CPUs allow.
                    depth: QUEUE_DEPTH / n + usize::from(k < QUEUE_DEPTH % n),
                    sectors: chosen.iter().skip(k).step_by(n).copied().collect(),
                    lock: KMutex::adaptive(),
                    cv: KCondvar::new(),
                    completions: AtomicU64::new(0),
                    double: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    mismatches: AtomicU64::new(0),
                    first_mismatch: AtomicU64::new(0),
                })
            })
            .collect();
        assert_eq!(windows.iter().map(|w| w.depth).sum::<usize>(), QUEUE_DEPTH);
        let threads: Vec<_> = windows
            .iter()
            .zip(&online)
            .map(|(w, &cpu)| {
                let arg = &**w as *const Window as usize;
                spawn_joinable(random_worker, arg, crate::kthread::PRI_NONE, 0, Some(cpu))
            })
            .collect();
        for t in threads {
            crate::kthread::kthread_join(t);
        }
        let stats = dev.stats();
        dev.detach();
        let mut per_cpu = [0u64; MAXCPUS];
        for (w, &cpu) in windows.iter().zip(&online) {
            per_cpu[cpu] = w.completions.load(Ordering::Relaxed);
            let mism = w.mismatches.load(Ordering::Relaxed);
            assert_eq!(
                mism, 0,
                "cpu{cpu}: {mism} sectors read back wrong, first {}",
                w.first_mismatch.load(Ordering::Relaxed)
            );
            assert_eq!(w.errors.load(Ordering::Relaxed), 0, "cpu{cpu}: request errors");
            assert_eq!(w.double.load(Ordering::Relaxed), 0, "cpu{cpu}: completed twice");
            assert_eq!(
                per_cpu[cpu],
                2 * w.sectors.len() as u64,
                "cpu{cpu}: completions for {} sectors written and read",
                w.sectors.len()
            );
        }
        assert_eq!(stats.completed, 2 * RANDOM_SECTORS as u64, "driver completions");
        assert_eq!(stats.errors, 0, "driver errors");
        crate::kprintln!(
            "      {} writes + {} reads on {n} CPUs: {} interrupts, {} softint runs, {} tag waits",
            RANDOM_SECTORS,
            RANDOM_SECTORS,
            stats.intr,
            stats.softint,
            stats.tag_waits
        );
    }
}

// ---- bad requests ----------------------------------------------------------------------------

ktest! {
    #[requires(needs_virtio_blk)]
    fn requests_past_the_end_or_of_bad_length_are_refused_and_the_disk_still_works() {
        let d = attach();
        let cap = d.capacity();
        let mut one = [0u8; SECTOR_SIZE];
        let mut two = [0u8; 2 * SECTOR_SIZE];
        let r1 = d.read(cap, &mut one);
        let r2 = d.write(cap - 1, &two);
        let r3 = d.read(u64::MAX, &mut one);
        let r4 = d.read(0, &mut two[..100]);
        let r5 = d.read(cap - 1, &mut one);
        let stats = d.stats();
        d.detach();
        assert_eq!(r1, Err(BlkError::PastEnd { sector: cap, count: 1, capacity: cap }));
        assert_eq!(r2, Err(BlkError::PastEnd { sector: cap - 1, count: 2, capacity: cap }));
        assert_eq!(r3, Err(BlkError::PastEnd { sector: u64::MAX, count: 1, capacity: cap }));
        assert_eq!(r4, Err(BlkError::BadLength(100)));
        assert_eq!(r5, Ok(()), "the last sector");
        assert_eq!(stats.completed, 1, "only the valid request reached the device");
    }
}

static ERR_DONE: AtomicU64 = AtomicU64::new(0);

fn count_done(_bp: &Buf) {
    ERR_DONE.fetch_add(1, Ordering::AcqRel);
}

ktest! {
    #[requires(needs_virtio_blk)]
    fn a_device_error_status_is_reported_once_and_the_disk_still_works() {
        ERR_DONE.store(0, Ordering::Relaxed);
        let d = attach();
        let cap = d.capacity();
        let mut data = [0u8; SECTOR_SIZE];
        let p = NonNull::new(data.as_mut_ptr()).expect("data");
        // SAFETY: `data` and `bp` live until the completion was counted below.
        let bp = unsafe { Buf::new(BlkOp::Read, cap, p, SECTOR_SIZE, count_done, 0) };
        // Past the driver's range check: QEMU answers with VIRTIO_BLK_S_IOERR.
        // SAFETY: as above.
        unsafe { d.strategy_unchecked(&bp) }.expect("queued");
        let seen = super::sleep_until(5_000, || ERR_DONE.load(Ordering::Acquire) == 1);
        let result = bp.result();
        let mut ok = [0u8; SECTOR_SIZE];
        let after = d.read(0, &mut ok);
        let stats = d.stats();
        d.detach();
        assert!(seen, "the failed request never completed");
        assert_eq!(result, Some(Err(BlkError::Device(1))), "status IOERR");
        assert_eq!(ERR_DONE.load(Ordering::Relaxed), 1, "completed exactly once");
        assert_eq!(after, Ok(()), "a read after the error");
        assert_eq!((stats.completed, stats.errors), (2, 1), "{stats:?}");
    }
}

// ---- detach with 32 requests in flight -------------------------------------------------------

/// Completions per request of the detach tests.
static DETACH_HITS: [AtomicU64; QUEUE_DEPTH] = [const { AtomicU64::new(0) }; QUEUE_DEPTH];

fn detach_done(bp: &Buf) {
    DETACH_HITS[bp.arg].fetch_add(1, Ordering::AcqRel);
}

/// Attaches, puts 32 reads in flight (with the device's notifications held back if `stall`),
/// detaches; returns the results and the report.
fn detach_with_32_in_flight(stall: bool) -> (Vec<Option<Result<(), BlkError>>>, usize) {
    for h in &DETACH_HITS {
        h.store(0, Ordering::Relaxed);
    }
    let d = attach();
    if stall {
        // A kick the previous attachment left in QEMU's event queue could still reach this
        // queue (seen once at smp 8): one completed read first shows every earlier kick was
        // taken.
        let mut first = [0u8; SECTOR_SIZE];
        d.read(0, &mut first).expect("read before stalling");
    }
    d.hold_notifications(stall);
    let mut data = alloc::vec![[0u8; SECTOR_SIZE]; QUEUE_DEPTH];
    let bufs: Vec<Buf> = data
        .iter_mut()
        .enumerate()
        .map(|(i, s)| {
            let p = NonNull::new(s.as_mut_ptr()).expect("data");
            // SAFETY: `data` and `bufs` outlive detach, which completes every request.
            unsafe { Buf::new(BlkOp::Read, i as u64 * 8, p, SECTOR_SIZE, detach_done, i) }
        })
        .collect();
    for bp in &bufs {
        // SAFETY: as above.
        unsafe { d.strategy(bp) }.expect("strategy");
    }
    let before: u64 = DETACH_HITS.iter().map(|h| h.load(Ordering::Acquire)).sum();
    let report = d.detach();
    crate::kprintln!(
        "      {} of {QUEUE_DEPTH} requests still in flight when detach began; {} aborted",
        QUEUE_DEPTH as u64 - before,
        report.aborted
    );
    (bufs.iter().map(Buf::result).collect(), report.aborted)
}

fn check_exactly_once(results: &[Option<Result<(), BlkError>>]) {
    for (i, h) in DETACH_HITS.iter().enumerate() {
        let n = h.load(Ordering::Acquire);
        assert_eq!(n, 1, "request {i} completed {n} times");
        assert!(
            matches!(results[i], Some(Ok(())) | Some(Err(BlkError::Aborted))),
            "request {i}: {:?}",
            results[i]
        );
    }
}

ktest! {
    #[requires(needs_virtio_blk)]
    #[timeout_ms(60_000)]
    fn detach_with_32_requests_in_flight_completes_each_once_and_leaves_nothing_behind() {
        // Warm up whatever is made once (per-CPU softint and workqueue state).
        let _ = detach_with_32_in_flight(false);
        let threads = crate::kthread::thread_count();
        let heap = crate::heap::stats().user;
        let (results, aborted) = detach_with_32_in_flight(false);
        check_exactly_once(&results);
        let ok = results.iter().filter(|r| matches!(r, Some(Ok(())))).count();
        drop(results);
        assert_eq!(crate::kthread::thread_count(), threads, "threads left behind");
        assert_eq!(crate::heap::stats().user, heap, "heap bytes left behind");
        assert_eq!(ok + aborted, QUEUE_DEPTH, "{ok} completed, {aborted} aborted");
    }
}

ktest! {
    #[requires(needs_virtio_blk)]
    #[timeout_ms(60_000)]
    fn detach_aborts_the_requests_a_stalled_device_holds_each_exactly_once() {
        // The warm-up takes the same path: the sleep queues' timeout list keeps the capacity
        // its most crowded moment needed (detach sleeps with a timeout; seen: 96 bytes more).
        let _ = detach_with_32_in_flight(true);
        let threads = crate::kthread::thread_count();
        let heap = crate::heap::stats().user;
        let (results, aborted) = detach_with_32_in_flight(true);
        check_exactly_once(&results);
        assert_eq!(aborted, QUEUE_DEPTH, "the device never saw them: all aborted");
        assert!(results.iter().all(|r| *r == Some(Err(BlkError::Aborted))));
        drop(results);
        assert_eq!(crate::kthread::thread_count(), threads, "threads left behind");
        assert_eq!(crate::heap::stats().user, heap, "heap bytes left behind");
    }
}

ktest! {
    #[requires(needs_virtio_blk)]
    fn requests_after_detach_started_are_refused() {
        let d = attach();
        d.hold_notifications(true);
        let mut data = [0u8; SECTOR_SIZE];
        let p = NonNull::new(data.as_mut_ptr()).expect("data");
        for h in &DETACH_HITS {
            h.store(0, Ordering::Relaxed);
        }
        // SAFETY: `data` and `bp` outlive the detach below, which completes the request.
        let bp = unsafe { Buf::new(BlkOp::Read, 0, p, SECTOR_SIZE, detach_done, 0) };
        // SAFETY: as above.
        unsafe { d.strategy(&bp) }.expect("strategy");
        d.begin_detach_for_test();
        let mut one = [0u8; SECTOR_SIZE];
        let refused = d.read(1, &mut one);
        d.detach();
        assert_eq!(refused, Err(BlkError::Detached));
        assert_eq!(DETACH_HITS[0].load(Ordering::Relaxed), 1, "the queued one completed once");
    }
}

ktest! {
    #[requires(needs_virtio_blk)]
    fn a_second_attach_leaves_the_attached_disk_alone() {
        let d = attach();
        let second = VioBlk::attach(device_tree());
        let mut one = [0u8; SECTOR_SIZE];
        let last = d.capacity() - 1;
        let still = d.read(last, &mut one);
        d.detach();
        let slots = mmio_slots(device_tree()).expect("slots").len();
        assert!(
            matches!(second, Err(AttachError::NoBlockDevice(n)) if n == slots),
            "second attach: {:?}",
            second.as_ref().err()
        );
        assert_eq!(still, Ok(()), "the first one still reads");
        assert!(one == generated(last), "last sector as generated");
    }
}

// ---- device trees ----------------------------------------------------------------------------

ktest! {
    fn a_device_tree_without_virtio_nodes_is_a_clear_error() {
        let mut b = crate::devtree::synth::TreeBuilder::new();
        crate::devtree::synth::begin_virt(&mut b, 2);
        b.end_node();
        let tree = b.finish();
        let e = VioBlk::attach(&tree).err().expect("attach must fail");
        assert!(matches!(e, AttachError::Probe(ProbeError::NoVirtioNodes)), "{e:?}");
        assert_eq!(alloc::format!("{e}"), "the device tree has no virtio,mmio node");
    }
}

ktest! {
    fn a_virtio_node_without_an_spi_is_a_clear_error() {
        let mut b = crate::devtree::synth::TreeBuilder::new();
        crate::devtree::synth::begin_virt(&mut b, 1);
        b.begin_node("virtio_mmio@a000000");
        b.property("dma-coherent", &[]);
        b.property_cells("interrupts", &[1, 5, 4]);
        b.property_u64s("reg", &[0x0a00_0000, 0x200]);
        b.property_str("compatible", "virtio,mmio");
        b.end_node();
        b.end_node();
        let tree = b.finish();
        let e = VioBlk::attach(&tree).err().expect("attach must fail");
        assert!(
            matches!(e, AttachError::Probe(ProbeError::BadNode { regs }) if regs.start == 0x0a00_0000),
            "{e:?}"
        );
    }
}
