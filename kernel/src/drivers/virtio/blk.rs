//! `vioblk`: the virtio-blk driver, in NetBSD's shape (`ld_virtio(4)` over `virtio(4)`).
//!
//! ```text
//! thread (IPL_NONE)     strategy(bp): check, take a tag (sleep on tag_cv if none), at IPL_BIO
//!                       under sc_lock put the request on the virtqueue and notify the device
//! hard intr (IPL_BIO)   vioblk_intr: under sc_lock acknowledge the device, softint_schedule
//! softint (IPL_SOFTBIO) vioblk_softint: under sc_lock pop every used request off the queue,
//!                       read its status byte; then workqueue_enqueue each one's tag work
//! workqueue thread      vioblk_done: free the tag, call the request's `iodone` (may sleep);
//!   (IPL_NONE, MPSAFE)  the synchronous read/write's `iodone` signals its condvar
//! ```
//!
//! The virtqueue and the virtio-mmio transport are the `virtio-drivers` crate's (`VirtQueue`,
//! `MmioTransport`); its `VirtIOBlk` is not used, for one reason: its queue size is a private
//! constant, 16, and with one descriptor per request (indirect descriptors) that caps the queue
//! depth at 16, below the 32 this driver must carry. Its non-blocking calls otherwise fit
//! NetBSD's model (`read_blocks_nb` returns a token, `peek_used` + `complete_read_blocks` harvest
//! in any order): the split is only in who owns the queue. So this driver speaks the block
//! protocol itself (a 16-byte request header, the data, a status byte: virtio 1.1 §5.2.6) over a
//! `VirtQueue` of [`QUEUE_SIZE`] descriptors, three per request, and so carries up to
//! [`MAX_INFLIGHT`] requests at once. Without the crate's `alloc` feature it uses no indirect
//! descriptors, so putting a request on the queue never allocates.
//!
//! A *tag* is a request slot of the device: its header and status byte (the device reads and
//! writes them), the work item its completion runs as, and the request (`Buf`) it carries. A
//! tag is taken at submission and freed in the workqueue thread just before the request's
//! `iodone`, so a tag's work is never pending when the tag is taken again (the workqueue forbids
//! enqueueing a pending work).
//!
//! Locks: `sc_lock` is a spin mutex at IPL_BIO (the hard interrupt takes it) over the
//! virtqueue, the transport and the tag bookkeeping; `wait_lock` is an adaptive mutex for the
//! sleeps (a free tag, a synchronous request's completion, detach's drain).
//!
//! Detach ([`VioBlk::detach`]): refuse new requests; wait for every request in flight to
//! complete (past [`DETACH_TIMEOUT_MS`], reset the device and complete what it still held with
//! [`BlkError::Aborted`]); reset the device; then `workqueue_wait` on every tag's work,
//! `softint_disestablish`, `intr_disestablish`, in that order; then free everything.

use super::{KernelHal, MmioSlot, ProbeError};
use crate::intr::{INTR_MPSAFE, IntrError, IntrHandle, intr_disestablish, intr_establish};
use crate::softint::{SOFTINT_BIO, SOFTINT_MPSAFE, SoftintHandle, softint_disestablish};
use crate::softint::{softint_establish, softint_schedule};
use crate::spl::{IPL_BIO, IPL_SOFTBIO};
use crate::sync::condvar::KCondvar;
use crate::sync::mutex::KMutex;
use crate::workqueue::{
    WQ_MPSAFE, Work, Workqueue, WqError, workqueue_create, workqueue_destroy, workqueue_enqueue,
    workqueue_wait,
};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};

/// Bytes per sector (virtio-blk addresses the disk in 512-byte sectors whatever its block size).
pub const SECTOR_SIZE: usize = 512;
/// Descriptors in the virtqueue (a power of two, at most the device's QueueNumMax: QEMU's is
/// 256 for virtio-blk).
pub const QUEUE_SIZE: usize = 128;
/// Requests in flight at most: three descriptors each (header, data, status).
pub const MAX_INFLIGHT: usize = QUEUE_SIZE / 3;
/// How long detach waits for the device to finish what it holds before resetting it.
pub const DETACH_TIMEOUT_MS: u64 = 2000;
/// Priority of the completion workqueue's thread (as the test and bench queues: timeshared
/// range is below 64; this is a kernel priority).
pub const WQ_PRI: u32 = 96;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
/// virtio-blk status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// virtio-blk status: the device failed the request (QEMU: also a request past the end).
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// virtio-blk status: the device does not support the request type.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Status byte value before the device wrote one.
const STATUS_NONE: u8 = 0xff;

const F_RO: u64 = 1 << 5;
const F_VERSION_1: u64 = 1 << 32;

/// A request's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkOp {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The buffer is empty or not a whole number of sectors.
    BadLength(usize),
    /// The request reaches past the end of the disk.
    PastEnd {
        /// First sector asked for.
        sector: u64,
        /// Sectors asked for.
        count: u64,
        /// Sectors on the disk.
        capacity: u64,
    },
    /// A write to a read-only disk.
    ReadOnly,
    /// The device is detaching (or detached): no new requests.
    Detached,
    /// The device completed the request with this status (`VIRTIO_BLK_S_IOERR`,
    /// `VIRTIO_BLK_S_UNSUPP`, or a value the specification does not define).
    Device(u8),
    /// Detach reset the device before it completed the request.
    Aborted,
    /// The virtqueue refused the request (a driver bug: a free tag always has room).
    Queue,
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadLength(n) => write!(f, "length {n} is not a non-zero multiple of 512"),
            Self::PastEnd {
                sector,
                count,
                capacity,
            } => write!(
                f,
                "sectors {sector}..{} past the end of the disk ({capacity} sectors)",
                sector.saturating_add(*count)
            ),
            Self::ReadOnly => write!(f, "the disk is read-only"),
            Self::Detached => write!(f, "the device is detaching"),
            Self::Device(VIRTIO_BLK_S_IOERR) => write!(f, "device status IOERR"),
            Self::Device(VIRTIO_BLK_S_UNSUPP) => write!(f, "device status UNSUPP"),
            Self::Device(s) => write!(f, "device status {s:#x} (undefined)"),
            Self::Aborted => write!(f, "aborted by detach"),
            Self::Queue => write!(f, "the virtqueue refused the request"),
        }
    }
}

/// Why [`VioBlk::attach`] failed. Nothing is left allocated or established after an error.
#[derive(Debug)]
pub enum AttachError {
    /// The device tree: malformed, no virtio nodes, a node the driver cannot use.
    Probe(ProbeError),
    /// Every `virtio,mmio` slot was probed (this many) and none holds a block device that
    /// another `VioBlk` does not already drive.
    NoBlockDevice(usize),
    /// The device refused the driver's setup (the crate's error).
    Device(virtio_drivers::Error),
    /// The device's queue 0 is smaller than [`QUEUE_SIZE`], or the device has no queue 0.
    QueueTooSmall(u32),
    /// `intr_establish` refused.
    Intr(IntrError),
    /// The softint table is full.
    Softint,
    /// `workqueue_create` refused.
    Workqueue(WqError),
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Probe(e) => write!(f, "{e}"),
            Self::NoBlockDevice(n) => {
                write!(f, "none of the {n} virtio-mmio slots holds a block device")
            }
            Self::Device(e) => write!(f, "device setup failed: {e}"),
            Self::QueueTooSmall(n) => {
                write!(
                    f,
                    "the device's queue holds {n} descriptors, {QUEUE_SIZE} needed"
                )
            }
            Self::Intr(e) => write!(f, "intr_establish: {e:?}"),
            Self::Softint => write!(f, "softint_establish: no free softint"),
            Self::Workqueue(e) => write!(f, "workqueue_create: {e:?}"),
        }
    }
}

/// What a request's completion callback receives. Context: the driver's workqueue thread
/// (thread context, IPL_NONE, may sleep).
pub type IoDone = fn(&Buf);

/// One request (NetBSD's `struct buf`): direction, first sector, data, and the completion
/// callback with its argument. The caller owns it; from [`VioBlk::strategy`] until its `iodone`
/// is called the driver may read and (for a read) write the data, and after that it touches
/// nothing of it.
pub struct Buf {
    op: BlkOp,
    blkno: u64,
    data: NonNull<u8>,
    len: usize,
    iodone: IoDone,
    /// The callback's argument, free for the caller.
    pub arg: usize,
    /// 0 while in flight, then [`encode`]d.
    result: AtomicU32,
    /// Set by the synchronous calls' `iodone` under `wait_lock`, as its last touch of the
    /// request (the waiter may free it as soon as it sees this).
    synced: AtomicBool,
}

// SAFETY: the data pointer is only dereferenced by the driver between `strategy` and `iodone`
// (the caller's contract) and by the caller otherwise; `result` is atomic.
unsafe impl Sync for Buf {}
// SAFETY: as above.
unsafe impl Send for Buf {}

const RESULT_OK: u32 = 1;
const RESULT_ABORTED: u32 = 2;
const RESULT_QUEUE: u32 = 3;
const RESULT_DEVICE: u32 = 0x100;

fn encode(r: Result<(), BlkError>) -> u32 {
    match r {
        Ok(()) => RESULT_OK,
        Err(BlkError::Device(s)) => RESULT_DEVICE | u32::from(s),
        Err(BlkError::Aborted) => RESULT_ABORTED,
        Err(_) => RESULT_QUEUE,
    }
}

impl Buf {
    /// A request for `len` bytes at `data`, starting at sector `blkno`; `iodone(bp)` runs when
    /// it completes.
    ///
    /// # Safety
    ///
    /// `data..data + len` must stay valid (and writable for a read) and must not be accessed
    /// by anyone else from `strategy` until `iodone` is called.
    pub unsafe fn new(
        op: BlkOp,
        blkno: u64,
        data: NonNull<u8>,
        len: usize,
        iodone: IoDone,
        arg: usize,
    ) -> Self {
        Self {
            op,
            blkno,
            data,
            len,
            iodone,
            arg,
            result: AtomicU32::new(0),
            synced: AtomicBool::new(false),
        }
    }

    /// The direction.
    pub fn op(&self) -> BlkOp {
        self.op
    }

    /// The first sector.
    pub fn blkno(&self) -> u64 {
        self.blkno
    }

    /// The result, once `iodone` has been called (`None` before). Context: any.
    pub fn result(&self) -> Option<Result<(), BlkError>> {
        match self.result.load(Ordering::Acquire) {
            0 => None,
            RESULT_OK => Some(Ok(())),
            RESULT_ABORTED => Some(Err(BlkError::Aborted)),
            RESULT_QUEUE => Some(Err(BlkError::Queue)),
            r => Some(Err(BlkError::Device(r as u8))),
        }
    }

    /// The data as a raw slice; the driver makes it a reference only while the request is in
    /// flight (`Buf::new`'s contract gives it the data then).
    fn data_ptr(&self) -> *mut [u8] {
        core::ptr::slice_from_raw_parts_mut(self.data.as_ptr(), self.len)
    }
}

/// The virtio-blk request header (virtio 1.1 §5.2.6), little-endian on the device side as
/// this CPU is.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReqHeader {
    type_: u32,
    reserved: u32,
    sector: u64,
}

impl ReqHeader {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ReqHeader` is 16 bytes of plain integers with no padding.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), 16) }
    }
}

/// A request slot (module doc). `work` first, so a `&Work` is the tag's address.
#[repr(C)]
struct Tag {
    work: Work,
    /// Under `sc_lock`, except `hdr` and `status`, which the device owns while in flight.
    inner: UnsafeCell<TagInner>,
}

struct TagInner {
    hdr: ReqHeader,
    status: [u8; 1],
    bp: *const Buf,
    token: u16,
    /// Submitted and not yet harvested (detach's abort looks for these).
    on_queue: bool,
    result: u32,
}

/// State under `sc_lock`.
struct State {
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    transport: MmioTransport<'static>,
    /// Bit i: tag i is free.
    free: u64,
    /// Virtqueue token (head descriptor) -> tag index.
    by_token: [u8; QUEUE_SIZE],
    /// Tags taken and not yet freed.
    busy: usize,
    /// No new requests.
    dying: bool,
    /// The hard interrupt no longer schedules the softint (set before softint_disestablish).
    intr_off: bool,
    /// The device was reset (by detach).
    reset: bool,
    /// Tests: requests are taken in but not put on the ring (a device that stalls).
    hold_notify: bool,
}

/// Counters (`blk stat`).
#[derive(Default)]
struct Counters {
    intr: AtomicU64,
    softint: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    tag_waits: AtomicU64,
}

/// A snapshot of the driver's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Hard interrupts that found the device's interrupt status set.
    pub intr: u64,
    /// Softint runs.
    pub softint: u64,
    /// Requests completed (callback called), errors included.
    pub completed: u64,
    /// Requests completed with an error.
    pub errors: u64,
    /// Submissions that had to sleep for a free tag.
    pub tag_waits: u64,
}

struct Softc {
    sc_lock: KMutex,
    state: UnsafeCell<State>,
    tags: Box<[Tag]>,
    wait_lock: KMutex,
    tag_cv: KCondvar,
    tag_waiters: AtomicU32,
    done_cv: KCondvar,
    drain_cv: KCondvar,
    softint: SoftintHandle,
    wq: Option<Workqueue>,
    capacity: u64,
    readonly: bool,
    slot: MmioSlot,
    counters: Counters,
    /// Counter value at the last hard interrupt (for `blk_intr_to_callback`).
    last_intr: AtomicU64,
}

// SAFETY: `state` and the tags' inner parts are only touched under `sc_lock` (or by the device,
// for the header and status bytes); everything else is immutable after attach, atomic, or a
// lock.
unsafe impl Sync for Softc {}
// SAFETY: as above.
unsafe impl Send for Softc {}

/// An attached virtio-blk device. Dropping it detaches it (as [`detach`](Self::detach), so
/// the drop must happen in thread context at IPL_NONE, where detaching may sleep).
pub struct VioBlk {
    sc: NonNull<Softc>,
    intr: Option<IntrHandle>,
}

// SAFETY: every method takes what it needs through the softc's locks.
unsafe impl Sync for VioBlk {}
// SAFETY: as above.
unsafe impl Send for VioBlk {}

/// What [`VioBlk::detach`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// Requests the device still held when detach gave up waiting, completed with
    /// [`BlkError::Aborted`].
    pub aborted: usize,
}

fn sync_done(bp: &Buf) {
    // SAFETY: the synchronous calls set `arg` to their `Softc`, which outlives every request.
    let sc = unsafe { &*(bp.arg as *const Softc) };
    let _g = sc.wait_lock.lock();
    // The last touch of `bp`: its owner returns (and frees it) once it sees this, which it
    // can only do after `wait_lock` is released.
    bp.synced.store(true, Ordering::Release);
    sc.done_cv.cv_broadcast();
}

impl VioBlk {
    /// Finds the first virtio-mmio slot of the device tree `dtb` that holds a block device,
    /// and attaches it: resets it, negotiates features (VERSION_1, RO), sets up its queue,
    /// establishes its interrupt at IPL_BIO, a SOFTINT_BIO softint and an MPSAFE workqueue.
    /// Slots with no device (QEMU's empty ones) and other device types are skipped.
    ///
    /// Context: thread, IPL_NONE (intr_establish waits for other CPUs). Errors name the cause;
    /// nothing is left behind.
    pub fn attach(dtb: &[u8]) -> Result<Self, AttachError> {
        let slots = super::mmio_slots(dtb).map_err(AttachError::Probe)?;
        for slot in &slots {
            // A slot another `VioBlk` drives is not probed (probing resets the device).
            if !claim(slot.regs.start) {
                continue;
            }
            // SAFETY: the slot's registers come from the device tree; the board maps every
            // virtio-mmio window as a device range; the claim above keeps other `VioBlk`s off
            // it, and nothing else in the kernel drives virtio devices.
            let transport = match unsafe { probe(slot) } {
                Some(t) => t,
                None => {
                    unclaim(slot.regs.start);
                    continue;
                }
            };
            let attached = if slot.dma_coherent {
                Self::attach_transport(*slot, transport)
            } else {
                core::mem::forget(transport);
                Err(AttachError::Probe(ProbeError::NotCoherent(slot.regs)))
            };
            if attached.is_err() {
                unclaim(slot.regs.start);
            }
            return attached;
        }
        Err(AttachError::NoBlockDevice(slots.len()))
    }

    fn attach_transport(
        slot: MmioSlot,
        mut transport: MmioTransport<'static>,
    ) -> Result<Self, AttachError> {
        // virtio 1.1 §3.1.1, as the crate's `begin_init`, with this driver's feature bits.
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let features = transport.read_device_features() & (F_RO | F_VERSION_1);
        transport.write_driver_features(features);
        transport.set_status(
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK,
        );
        transport.set_guest_page_size(virtio_drivers::PAGE_SIZE as u32);
        let fail = |mut t: MmioTransport<'static>, e| {
            t.set_status(DeviceStatus::FAILED);
            Err(e)
        };
        let max = transport.max_queue_size(0);
        if max < QUEUE_SIZE as u32 {
            return fail(transport, AttachError::QueueTooSmall(max));
        }
        let capacity = match transport.read_consistent(|| {
            Ok(u64::from(transport.read_config_space::<u32>(0)?)
                | u64::from(transport.read_config_space::<u32>(4)?) << 32)
        }) {
            Ok(c) => c,
            Err(e) => return fail(transport, AttachError::Device(e)),
        };
        let queue = match VirtQueue::<KernelHal, QUEUE_SIZE>::new(&mut transport, 0, false, false) {
            Ok(q) => q,
            Err(e) => return fail(transport, AttachError::Device(e)),
        };
        let tags: Box<[Tag]> = (0..MAX_INFLIGHT)
            .map(|_| Tag {
                work: Work::new("vioblk-done"),
                inner: UnsafeCell::new(TagInner {
                    hdr: ReqHeader {
                        type_: 0,
                        reserved: 0,
                        sector: 0,
                    },
                    status: [STATUS_NONE],
                    bp: core::ptr::null(),
                    token: 0,
                    on_queue: false,
                    result: 0,
                }),
            })
            .collect();
        let sc = Box::new(Softc {
            sc_lock: KMutex::spin(IPL_BIO),
            state: UnsafeCell::new(State {
                queue,
                transport,
                free: (1u64 << MAX_INFLIGHT) - 1,
                by_token: [0; QUEUE_SIZE],
                busy: 0,
                dying: false,
                intr_off: false,
                reset: false,
                hold_notify: false,
            }),
            tags,
            wait_lock: KMutex::adaptive(),
            tag_cv: KCondvar::new(),
            tag_waiters: AtomicU32::new(0),
            done_cv: KCondvar::new(),
            drain_cv: KCondvar::new(),
            softint: SoftintHandle::from_raw(0),
            wq: None,
            capacity,
            readonly: features & F_RO != 0,
            slot,
            counters: Counters::default(),
            last_intr: AtomicU64::new(0),
        });
        let sc = NonNull::from(Box::leak(sc));
        let arg = sc.as_ptr() as usize;
        // From here on an error goes through `undo`, which frees what was made.
        let undo = |sc: NonNull<Softc>, softint: Option<SoftintHandle>, e: AttachError| {
            // SAFETY: `sc` came from `Box::leak` above and nothing else refers to it any more
            // (no interrupt, softint or workqueue was left established).
            let mut sc = unsafe { Box::from_raw(sc.as_ptr()) };
            if let Some(h) = softint {
                softint_disestablish(h);
            }
            if let Some(wq) = sc.wq.take() {
                workqueue_destroy(wq);
            }
            let st = sc.state.get_mut();
            st.transport.queue_unset(0);
            st.transport.set_status(DeviceStatus::FAILED);
            Err(e)
        };
        let Some(softint) = softint_establish(SOFTINT_BIO | SOFTINT_MPSAFE, vioblk_softint, arg)
        else {
            return undo(sc, None, AttachError::Softint);
        };
        let wq = match workqueue_create("vioblk", vioblk_done, arg, WQ_PRI, IPL_SOFTBIO, WQ_MPSAFE)
        {
            Ok(wq) => wq,
            Err(e) => return undo(sc, Some(softint), AttachError::Workqueue(e)),
        };
        // SAFETY: nothing else refers to the softc yet (no interrupt is established).
        unsafe {
            (*sc.as_ptr()).softint = softint;
            (*sc.as_ptr()).wq = Some(wq);
        }
        // Driver ready before the interrupt can fire.
        {
            // SAFETY: as above.
            let st = unsafe { &mut *(*sc.as_ptr()).state.get() };
            st.transport.finish_init();
        }
        let intr = match intr_establish(slot.irq, IPL_BIO, INTR_MPSAFE, vioblk_intr, arg) {
            Ok(h) => h,
            Err(e) => return undo(sc, Some(softint), AttachError::Intr(e)),
        };
        Ok(Self {
            sc,
            intr: Some(intr),
        })
    }

    fn sc(&self) -> &Softc {
        // SAFETY: the softc lives until `detach` consumes `self`.
        unsafe { self.sc.as_ref() }
    }

    /// The disk's size in sectors.
    pub fn capacity(&self) -> u64 {
        self.sc().capacity
    }

    /// Whether the device is read-only.
    pub fn readonly(&self) -> bool {
        self.sc().readonly
    }

    /// The virtio-mmio slot it is attached at.
    pub fn slot(&self) -> MmioSlot {
        self.sc().slot
    }

    /// The driver's counters. Context: any.
    pub fn stats(&self) -> BlkStats {
        let c = &self.sc().counters;
        BlkStats {
            intr: c.intr.load(Ordering::Relaxed),
            softint: c.softint.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            tag_waits: c.tag_waits.load(Ordering::Relaxed),
        }
    }

    /// The counter value (`CNTVCT_EL0`) at the first line of the last hard interrupt handler
    /// run that found the device's interrupt status set; for measuring interrupt to completion
    /// callback. Context: any.
    pub fn last_intr_counter(&self) -> u64 {
        self.sc().last_intr.load(Ordering::Acquire)
    }

    fn check(&self, op: BlkOp, blkno: u64, len: usize) -> Result<(), BlkError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::BadLength(len));
        }
        let count = (len / SECTOR_SIZE) as u64;
        let capacity = self.capacity();
        if blkno.checked_add(count).is_none_or(|end| end > capacity) {
            return Err(BlkError::PastEnd {
                sector: blkno,
                count,
                capacity,
            });
        }
        if op == BlkOp::Write && self.readonly() {
            return Err(BlkError::ReadOnly);
        }
        Ok(())
    }

    /// `strategy(bp)`: checks the request (length, range, read-only) and queues it; its
    /// `iodone` runs in the driver's workqueue thread once the device completed it. Sleeps for
    /// a free tag when [`MAX_INFLIGHT`] requests are in flight.
    ///
    /// On `Err` the request was not queued and `iodone` will not be called. Context: thread
    /// (may sleep), IPL_NONE.
    ///
    /// # Safety
    ///
    /// `bp` (and its data, `Buf::new`'s contract) must stay valid until its `iodone` has been
    /// called, and must not be submitted again before that.
    pub unsafe fn strategy(&self, bp: &Buf) -> Result<(), BlkError> {
        self.check(bp.op, bp.blkno, bp.len)?;
        // SAFETY: the caller's contract.
        unsafe { self.submit(bp) }
    }

    /// `strategy` without the range and read-only checks, so that the device's own error
    /// path can be exercised (QEMU answers a request past the end with VIRTIO_BLK_S_IOERR).
    ///
    /// # Safety
    ///
    /// As [`strategy`](Self::strategy).
    #[cfg(feature = "ktest")]
    pub unsafe fn strategy_unchecked(&self, bp: &Buf) -> Result<(), BlkError> {
        if bp.len == 0 || !bp.len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::BadLength(bp.len));
        }
        // SAFETY: the caller's contract.
        unsafe { self.submit(bp) }
    }

    /// Tests: while `hold` is true, requests are taken in (a tag each) but never put on the
    /// ring, so the device never sees them (a stalled device, for detach's abort path, which
    /// is the only way they complete). Context: any.
    #[cfg(feature = "ktest")]
    pub fn hold_notifications(&self, hold: bool) {
        let sc = self.sc();
        let _g = sc.sc_lock.lock();
        // SAFETY: under sc_lock.
        unsafe { (*sc.state.get()).hold_notify = hold };
    }

    /// Tests: detach's first step alone (new requests are refused from now on).
    #[cfg(feature = "ktest")]
    pub fn begin_detach_for_test(&self) {
        let sc = self.sc();
        let _g = sc.sc_lock.lock();
        // SAFETY: under sc_lock.
        unsafe { (*sc.state.get()).dying = true };
    }

    /// Takes a free tag, sleeping for one if needed. `None` once the device is dying.
    fn take_tag(&self) -> Option<usize> {
        let sc = self.sc();
        let try_take = || {
            let _g = sc.sc_lock.lock();
            // SAFETY: under sc_lock.
            let st = unsafe { &mut *sc.state.get() };
            if st.dying {
                return Some(None);
            }
            if st.free == 0 {
                return None;
            }
            let i = st.free.trailing_zeros() as usize;
            st.free &= !(1 << i);
            st.busy += 1;
            Some(Some(i))
        };
        if let Some(r) = try_take() {
            return r;
        }
        sc.counters.tag_waits.fetch_add(1, Ordering::Relaxed);
        let _g = sc.wait_lock.lock();
        // Sequentially consistent with the freeing side's load: either it sees this waiter and
        // broadcasts (under wait_lock, so after this thread sleeps), or this retry sees the tag.
        sc.tag_waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            if let Some(r) = try_take() {
                break r;
            }
            sc.tag_cv.cv_wait(&sc.wait_lock);
        };
        sc.tag_waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// # Safety
    ///
    /// As [`strategy`](Self::strategy); `bp`'s length is a non-zero multiple of the sector.
    unsafe fn submit(&self, bp: &Buf) -> Result<(), BlkError> {
        crate::sync::assert_sleepable("vioblk strategy");
        let sc = self.sc();
        let Some(i) = self.take_tag() else {
            return Err(BlkError::Detached);
        };
        let tag = &sc.tags[i];
        bp.result.store(0, Ordering::Relaxed);
        let g = sc.sc_lock.lock();
        // SAFETY: under sc_lock; the tag is ours (taken above).
        let (st, t) = unsafe { (&mut *sc.state.get(), &mut *tag.inner.get()) };
        if st.dying {
            // Detach started after the tag was taken: give it back.
            release_tag(sc, st, i);
            drop(g);
            wake_tag_waiters(sc);
            return Err(BlkError::Detached);
        }
        t.hdr = ReqHeader {
            type_: match bp.op {
                BlkOp::Read => VIRTIO_BLK_T_IN,
                BlkOp::Write => VIRTIO_BLK_T_OUT,
            },
            reserved: 0,
            sector: bp.blkno,
        };
        t.status = [STATUS_NONE];
        t.bp = bp;
        if st.hold_notify {
            // A stalled device (tests): the request is in flight for the driver but never
            // reaches the ring, so no kick left in QEMU from earlier requests can show it to
            // the device (a notify skipped alone was not enough: QEMU's handler rescans the
            // ring while it runs). Only detach's abort completes it.
            t.on_queue = true;
            return Ok(());
        }
        // SAFETY: the request is being put in flight: the data is the driver's (contract).
        let data = unsafe { &mut *bp.data_ptr() };
        // SAFETY: the header and status live in the tag until the request is popped (the tag
        // is not reused before); the data is the caller's until `iodone` (its contract).
        let added = unsafe {
            match bp.op {
                BlkOp::Read => st
                    .queue
                    .add(&[t.hdr.bytes()], &mut [data, &mut t.status[..]]),
                BlkOp::Write => st
                    .queue
                    .add(&[t.hdr.bytes(), data], &mut [&mut t.status[..]]),
            }
        };
        let token = match added {
            Ok(token) => token,
            Err(_) => {
                release_tag(sc, st, i);
                drop(g);
                wake_tag_waiters(sc);
                return Err(BlkError::Queue);
            }
        };
        t.token = token;
        t.on_queue = true;
        st.by_token[token as usize] = i as u8;
        if st.queue.should_notify() {
            st.transport.notify(0);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes (a multiple of 512) from sector `blkno`, sleeping on a condvar
    /// until the request completed. Context: thread, IPL_NONE (sleeps).
    pub fn read(&self, blkno: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let data = NonNull::new(buf.as_mut_ptr()).expect("slice pointer");
        self.sync_io(BlkOp::Read, blkno, data, buf.len())
    }

    /// Writes `buf` (a multiple of 512 bytes) at sector `blkno`, sleeping until the request
    /// completed. Context: thread, IPL_NONE (sleeps).
    pub fn write(&self, blkno: u64, buf: &[u8]) -> Result<(), BlkError> {
        let data = NonNull::new(buf.as_ptr().cast_mut()).expect("slice pointer");
        self.sync_io(BlkOp::Write, blkno, data, buf.len())
    }

    fn sync_io(
        &self,
        op: BlkOp,
        blkno: u64,
        data: NonNull<u8>,
        len: usize,
    ) -> Result<(), BlkError> {
        let sc = self.sc();
        // SAFETY: the buffer outlives this call, which returns only after `iodone` ran (or the
        // request was refused); a write's data is only read by the device.
        let bp = unsafe { Buf::new(op, blkno, data, len, sync_done, sc as *const Softc as usize) };
        // SAFETY: `bp` lives on this stack until its completion was seen below.
        unsafe { self.strategy(&bp)? };
        // biowait: `sync_done` broadcasts under wait_lock after the result is stored.
        let _g = sc.wait_lock.lock();
        while !bp.synced.load(Ordering::Acquire) {
            sc.done_cv.cv_wait(&sc.wait_lock);
        }
        drop(_g);
        bp.result().expect("completed")
    }

    /// Detaches the device (module doc): no new requests; waits for every request in flight
    /// (each completes, or errors with `Aborted` if the device still held it after
    /// [`DETACH_TIMEOUT_MS`]; either way its `iodone` is called exactly once); resets the
    /// device; `workqueue_wait` for every completion, `softint_disestablish`,
    /// `intr_disestablish`; frees everything. Context: thread, IPL_NONE (sleeps).
    pub fn detach(mut self) -> DetachReport {
        let report = self.detach_inner();
        core::mem::forget(self);
        report
    }

    fn detach_inner(&mut self) -> DetachReport {
        crate::sync::assert_sleepable("vioblk detach");
        let sc = self.sc;
        // SAFETY: the softc lives until the end of this function.
        let s = unsafe { sc.as_ref() };
        {
            let _g = s.sc_lock.lock();
            // SAFETY: under sc_lock.
            unsafe { (*s.state.get()).dying = true };
        }
        wake_tag_waiters_always(s);
        let mut report = DetachReport::default();
        let busy = || {
            let _g = s.sc_lock.lock();
            // SAFETY: under sc_lock.
            unsafe { (*s.state.get()).busy }
        };
        {
            let _g = s.wait_lock.lock();
            let deadline =
                crate::arch::aarch64::counter() + crate::clock::ms_to_counter(DETACH_TIMEOUT_MS);
            let mut aborted = false;
            while busy() != 0 {
                if !aborted && crate::arch::aarch64::counter() >= deadline {
                    // What was aborted completes through the workqueue.
                    report.aborted = abort_queued(s);
                    aborted = true;
                }
                // Woken by the last completion. The timeout bounds the wait, and covers a tag
                // given back by a submission that found the device dying (no broadcast).
                let ticks = (crate::clock::hz() / 100).max(1);
                let _ = s.drain_cv.cv_timedwait(&s.wait_lock, ticks);
            }
        }
        {
            let _g = s.sc_lock.lock();
            // SAFETY: under sc_lock.
            let st = unsafe { &mut *s.state.get() };
            st.intr_off = true;
            st.transport.set_status(DeviceStatus::empty());
            st.reset = true;
        }
        let wq = s.wq.as_ref().expect("workqueue");
        for t in s.tags.iter() {
            // SAFETY: the tags live in the softc, freed below after every wait.
            let wk: &'static Work = unsafe { &*(&t.work as *const Work) };
            workqueue_wait(wq, wk);
        }
        softint_disestablish(s.softint);
        intr_disestablish(self.intr.take().expect("interrupt handle"));
        // SAFETY: no interrupt, softint or workqueue refers to the softc any more, and `self`
        // is forgotten or being dropped (`intr` is now `None`, so it is never freed twice):
        // this is the last reference.
        let mut owned = unsafe { Box::from_raw(sc.as_ptr()) };
        workqueue_destroy(owned.wq.take().expect("workqueue"));
        owned.state.get_mut().transport.queue_unset(0);
        let regs = owned.slot.regs.start;
        drop(owned);
        unclaim(regs);
        report
    }
}

impl Drop for VioBlk {
    fn drop(&mut self) {
        if self.intr.is_some() {
            let _ = self.detach_inner();
        }
    }
}

/// The disk attached at boot by [`autoconf`] (the normal image only).
static BOOT_DISK: spin::Once<VioBlk> = spin::Once::new();

/// Attaches the first virtio-blk disk of the boot device tree, prints one line about it (or
/// why there is none) and the first line of its sector 0, and keeps it attached
/// ([`boot_disk`]). Context: thread, IPL_NONE, once (the normal image's boot).
pub fn autoconf() {
    match VioBlk::attach(crate::bootinfo::device_tree()) {
        Ok(d) => {
            let slot = d.slot();
            crate::kprintln!(
                "vioblk0 at virtio-mmio {:#x} irq {}: {} sectors ({} KiB){}",
                slot.regs.start,
                slot.irq,
                d.capacity(),
                d.capacity() / 2,
                if d.readonly() { ", read-only" } else { "" }
            );
            let mut sector = [0u8; SECTOR_SIZE];
            match d.read(0, &mut sector) {
                Ok(()) => {
                    let line = sector.split(|&b| b == b'\n').next().unwrap_or(&[]);
                    let text: alloc::string::String = line
                        .iter()
                        .take(64)
                        .map(|&b| {
                            if (0x20..0x7f).contains(&b) {
                                b as char
                            } else {
                                '.'
                            }
                        })
                        .collect();
                    crate::kprintln!("vioblk0: sector 0 begins \"{text}\"");
                }
                Err(e) => crate::kprintln!("vioblk0: reading sector 0: {e}"),
            }
            BOOT_DISK.call_once(|| d);
        }
        Err(e) => crate::kprintln!("vioblk: no disk: {e}"),
    }
}

/// The disk [`autoconf`] attached, if any. Context: any.
pub fn boot_disk() -> Option<&'static VioBlk> {
    BOOT_DISK.get()
}

/// Register addresses of the slots attached `VioBlk`s drive.
static CLAIMED: crate::sync::SpinLock<Vec<u64>> = crate::sync::SpinLock::new(Vec::new());

/// Claims the slot at `regs`; false if it is taken.
fn claim(regs: u64) -> bool {
    let mut c = CLAIMED.lock();
    if c.contains(&regs) {
        return false;
    }
    c.push(regs);
    true
}

fn unclaim(regs: u64) {
    CLAIMED.lock().retain(|&r| r != regs);
}

/// Probes one slot: a transport if it holds a block device.
///
/// # Safety
///
/// `slot.regs` must be the device's mapped register window, driven by nobody else.
unsafe fn probe(slot: &MmioSlot) -> Option<MmioTransport<'static>> {
    let header = NonNull::new(slot.regs.start as *mut VirtIOHeader)?;
    // SAFETY: the caller's contract.
    let t = unsafe { MmioTransport::new(header, slot.regs.size as usize) }.ok()?;
    if t.device_type() == DeviceType::Block {
        Some(t)
    } else {
        // Dropping a transport resets the device: only a device this driver would drive.
        core::mem::forget(t);
        None
    }
}

fn release_tag(sc: &Softc, st: &mut State, i: usize) {
    debug_assert!(st.free & (1 << i) == 0);
    // SAFETY: under sc_lock (the caller holds it).
    let t = unsafe { &mut *sc.tags[i].inner.get() };
    t.bp = core::ptr::null();
    t.on_queue = false;
    st.free |= 1 << i;
    st.busy -= 1;
}

fn wake_tag_waiters(sc: &Softc) {
    if sc.tag_waiters.load(Ordering::SeqCst) != 0 {
        wake_tag_waiters_always(sc);
    }
}

fn wake_tag_waiters_always(sc: &Softc) {
    let _g = sc.wait_lock.lock();
    sc.tag_cv.cv_broadcast();
}

/// Detach gave up waiting: reset the device, complete what it still held with `Aborted`.
/// Returns how many. Context: thread (detach), `wait_lock` held.
fn abort_queued(sc: &Softc) -> usize {
    let mut aborted = Vec::new();
    {
        let _g = sc.sc_lock.lock();
        // SAFETY: under sc_lock.
        let st = unsafe { &mut *sc.state.get() };
        st.transport.set_status(DeviceStatus::empty());
        st.reset = true;
        st.intr_off = true;
        for (i, tag) in sc.tags.iter().enumerate() {
            // SAFETY: under sc_lock; the device was reset, so it touches no tag any more.
            let t = unsafe { &mut *tag.inner.get() };
            if t.on_queue {
                t.on_queue = false;
                t.result = encode(Err(BlkError::Aborted));
                aborted.push(i);
            }
        }
    }
    let wq = sc.wq.as_ref().expect("workqueue");
    for &i in &aborted {
        // SAFETY: the tags live until detach frees the softc, after waiting for these works.
        let wk: &'static Work = unsafe { &*(&sc.tags[i].work as *const Work) };
        workqueue_enqueue(wq, wk, None);
    }
    aborted.len()
}

/// The hard interrupt handler, at IPL_BIO: acknowledge, schedule the softint.
fn vioblk_intr(arg: usize) -> bool {
    // SAFETY: `arg` is the softc, which outlives the interrupt's establishment.
    let sc = unsafe { &*(arg as *const Softc) };
    let first_line = crate::arch::aarch64::counter();
    let _g = sc.sc_lock.lock();
    // SAFETY: under sc_lock.
    let st = unsafe { &mut *sc.state.get() };
    if st.reset {
        return false;
    }
    let status = st.transport.ack_interrupt();
    if status.is_empty() {
        return false;
    }
    sc.last_intr.store(first_line, Ordering::Release);
    sc.counters.intr.fetch_add(1, Ordering::Relaxed);
    // Under sc_lock: detach sets `intr_off` under it before softint_disestablish.
    if !st.intr_off {
        softint_schedule(sc.softint);
    }
    true
}

/// The softint handler, at IPL_SOFTBIO: harvest every completed request, hand each to the
/// workqueue.
fn vioblk_softint(arg: usize) {
    // SAFETY: `arg` is the softc, which outlives the softint's establishment.
    let sc = unsafe { &*(arg as *const Softc) };
    sc.counters.softint.fetch_add(1, Ordering::Relaxed);
    let mut done = [0u8; MAX_INFLIGHT];
    let mut n = 0;
    {
        let _g = sc.sc_lock.lock();
        // SAFETY: under sc_lock.
        let st = unsafe { &mut *sc.state.get() };
        if st.reset {
            return;
        }
        while let Some(token) = st.queue.peek_used() {
            let i = st.by_token[token as usize] as usize;
            // SAFETY: under sc_lock; the tag holds the request the token was given for.
            let t = unsafe { &mut *sc.tags[i].inner.get() };
            // SAFETY: `t.bp` was set at submission and stays valid until its iodone.
            let bp = unsafe { &*t.bp };
            // SAFETY: the request is still in flight: the data is the driver's (contract).
            let data = unsafe { &mut *bp.data_ptr() };
            // SAFETY: the same buffers as at `add` (header, data, status, per direction).
            let popped = unsafe {
                match bp.op {
                    BlkOp::Read => {
                        st.queue
                            .pop_used(token, &[t.hdr.bytes()], &mut [data, &mut t.status[..]])
                    }
                    BlkOp::Write => {
                        st.queue
                            .pop_used(token, &[t.hdr.bytes(), data], &mut [&mut t.status[..]])
                    }
                }
            };
            t.on_queue = false;
            t.result = match (popped, t.status[0]) {
                (Err(_), _) => encode(Err(BlkError::Queue)),
                (Ok(_), VIRTIO_BLK_S_OK) => encode(Ok(())),
                (Ok(_), s) => encode(Err(BlkError::Device(s))),
            };
            done[n] = i as u8;
            n += 1;
        }
    }
    let wq = sc.wq.as_ref().expect("workqueue");
    for &i in &done[..n] {
        // SAFETY: the tags live until detach frees the softc, after waiting for these works.
        let wk: &'static Work = unsafe { &*(&sc.tags[i as usize].work as *const Work) };
        workqueue_enqueue(wq, wk, None);
    }
}

/// The workqueue callback, in the driver's MPSAFE worker thread: free the tag, complete the
/// request.
fn vioblk_done(wk: &'static Work, arg: usize) {
    // SAFETY: `arg` is the softc, which outlives the workqueue.
    let sc = unsafe { &*(arg as *const Softc) };
    // SAFETY: the only works enqueued on this queue are tags' `work` fields, at offset 0 of a
    // `#[repr(C)]` `Tag`.
    let tag = unsafe { &*(wk as *const Work as *const Tag) };
    let i = (tag as *const Tag as usize - sc.tags.as_ptr() as usize) / size_of::<Tag>();
    let (bp, result, last) = {
        let _g = sc.sc_lock.lock();
        // SAFETY: under sc_lock.
        let (st, t) = unsafe { (&mut *sc.state.get(), &*tag.inner.get()) };
        let bp = t.bp;
        let result = t.result;
        release_tag(sc, st, i);
        (bp, result, st.dying && st.busy == 0)
    };
    wake_tag_waiters(sc);
    sc.counters.completed.fetch_add(1, Ordering::Relaxed);
    if result != RESULT_OK {
        sc.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: the request stays valid until its iodone has been called (strategy's contract).
    let bp = unsafe { &*bp };
    bp.result.store(result, Ordering::Release);
    (bp.iodone)(bp);
    if last {
        let _g = sc.wait_lock.lock();
        sc.drain_cv.cv_broadcast();
    }
}
