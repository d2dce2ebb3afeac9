//! The console's receive side, interrupt-driven: the UART's receive interrupt is established
//! at IPL_TTY through `intr_establish`; its handler drains the UART's FIFO into a lock-free
//! ring ([`super::ring`]) and schedules a soft interrupt at SOFTINT_SERIAL, which wakes the
//! reader sleeping in [`ConsoleReader::getc`]. The reader is a thread (the monitor) holding
//! the one [`ConsoleReader`] token, so the ring has one producer and one consumer.
//!
//! A full ring drops the byte and counts it ([`RxStats::dropped`]): nothing is lost without
//! being counted. While a command runs ([`cancel_arm`]), Ctrl-C (0x03) does not go into the
//! ring: the handler records it for [`cancel_requested`], which long commands poll.
//!
//! Context: [`init`] from a thread at IPL_NONE once soft interrupts exist; the rest as
//! documented on each item.

use super::ring::RxRing;
use crate::intr::{INTR_MPSAFE, intr_establish_xname};
use crate::platform::platform;
use crate::sched::sleepq::SleepQueue;
use crate::softint::{SOFTINT_MPSAFE, SOFTINT_SERIAL, SoftintHandle, softint_establish};
use crate::spl::IPL_TTY;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Bytes the ring holds (the most that can be typed or pasted ahead of the reader).
pub const RING_SIZE: usize = 4096;

/// The most bytes one interrupt takes from the UART; the rest keep the (level-triggered)
/// interrupt asserted for the next round, so a flood cannot hold a CPU in the handler.
const DRAIN_LIMIT: usize = 256;

/// Ctrl-C.
pub const CTRL_C: u8 = 0x03;

static RING: RxRing<RING_SIZE> = RxRing::new();
/// Reader sleeps here while the ring is empty.
static WAIT: SleepQueue = SleepQueue::new();
/// The softint handle (raw), 0 before `init`.
static SOFTINT: AtomicU64 = AtomicU64::new(0);
/// The UART's interrupt identifier, 0 before `init`.
static IRQ: AtomicU32 = AtomicU32::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static CONSUMED: AtomicU64 = AtomicU64::new(0);
static CANCELS: AtomicU64 = AtomicU64::new(0);
static READER_TAKEN: AtomicBool = AtomicBool::new(false);
static CANCEL_ARMED: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Why [`init`] could not turn console input on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The board has no console receive interrupt.
    NoInterrupt,
    /// The soft interrupt table is full.
    NoSoftint,
    /// `intr_establish` refused.
    Establish(crate::intr::IntrError),
}

/// Establishes the soft interrupt and the UART's receive interrupt and turns the UART's
/// receive interrupts on; returns the interrupt identifier. Context: thread, IPL_NONE, once.
pub fn init() -> Result<u32, RxError> {
    let p = platform();
    let irq = p.console_rx_irq().ok_or(RxError::NoInterrupt)?;
    assert!(
        IRQ.load(Ordering::Relaxed) == 0,
        "console::rx::init: called twice; console input is set up once"
    );
    let h = softint_establish(SOFTINT_SERIAL | SOFTINT_MPSAFE, rx_softint, 0)
        .ok_or(RxError::NoSoftint)?;
    SOFTINT.store(h.to_raw(), Ordering::Release);
    IRQ.store(irq, Ordering::Release);
    // Established for the life of the kernel: the handle is never disestablished.
    let _handle = intr_establish_xname(irq, IPL_TTY, INTR_MPSAFE, rx_intr, 0, "console rx")
        .map_err(RxError::Establish)?;
    p.console_rx_enable(true);
    Ok(irq)
}

/// The receive interrupt handler, at IPL_TTY: moves what the UART holds into the ring (a
/// Ctrl-C while a command runs becomes a cancel request instead) and schedules the softint.
fn rx_intr(_: usize) -> bool {
    let p = platform();
    let mut n = 0;
    while n < DRAIN_LIMIT {
        let Some(b) = p.console_read() else { break };
        n += 1;
        if b == CTRL_C && CANCEL_ARMED.load(Ordering::Acquire) {
            CANCELS.fetch_add(1, Ordering::Relaxed);
            CANCEL.store(true, Ordering::Release);
            continue;
        }
        if !RING.push(b) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    BYTES.fetch_add(n as u64, Ordering::Relaxed);
    if n > 0 {
        crate::softint::softint_schedule(SoftintHandle::from_raw(SOFTINT.load(Ordering::Acquire)));
    }
    n > 0
}

/// The soft interrupt, at IPL_SOFTSERIAL: wakes the reader.
fn rx_softint(_: usize) {
    WAIT.wake_all();
}

/// The right to read console input: one exists, taken with [`reader`].
pub struct ConsoleReader(());

/// The console reader token, the first time it is asked for; `None` afterwards (the ring
/// has one consumer). Context: any.
pub fn reader() -> Option<ConsoleReader> {
    (!READER_TAKEN.swap(true, Ordering::AcqRel)).then_some(ConsoleReader(()))
}

impl ConsoleReader {
    /// The next input byte, sleeping until one arrives. Context: thread, IPL_NONE.
    pub fn getc(&mut self) -> u8 {
        loop {
            if let Some(b) = self.try_getc() {
                return b;
            }
            // The check runs under the queue's lock: a byte pushed after it is followed by a
            // softint whose wakeup finds this thread on the queue.
            let _ = WAIT.sleep(None, || RING.is_empty());
        }
    }

    /// The next input byte if one is waiting. Context: any.
    pub fn try_getc(&mut self) -> Option<u8> {
        let b = RING.pop()?;
        CONSUMED.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }
}

/// From now until [`cancel_disarm`], Ctrl-C typed is a cancel request (for a running command)
/// instead of input. Clears an earlier request. Context: any.
pub fn cancel_arm() {
    CANCEL.store(false, Ordering::Release);
    CANCEL_ARMED.store(true, Ordering::Release);
}

/// Ctrl-C is input again. Context: any.
pub fn cancel_disarm() {
    CANCEL_ARMED.store(false, Ordering::Release);
}

/// Whether Ctrl-C was typed since [`cancel_arm`]. Context: any.
pub fn cancel_requested() -> bool {
    CANCEL.load(Ordering::Acquire)
}

/// Console input counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxStats {
    /// The UART's interrupt identifier (0 when input is not set up).
    pub irq: u32,
    /// Bytes taken from the UART.
    pub bytes: u64,
    /// Bytes dropped because the ring was full.
    pub dropped: u64,
    /// Bytes the reader has taken from the ring.
    pub consumed: u64,
    /// Ctrl-C typed as cancel requests.
    pub cancels: u64,
    /// Bytes waiting in the ring now.
    pub queued: usize,
    /// The ring's size.
    pub ring_size: usize,
}

/// The counters now. Context: any.
pub fn stats() -> RxStats {
    RxStats {
        irq: IRQ.load(Ordering::Acquire),
        bytes: BYTES.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
        consumed: CONSUMED.load(Ordering::Relaxed),
        cancels: CANCELS.load(Ordering::Relaxed),
        queued: RING.len(),
        ring_size: RING_SIZE,
    }
}
