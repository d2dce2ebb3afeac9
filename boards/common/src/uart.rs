//! The PL011 console through `arm-pl011-uart`.
//!
//! The UART is used as firmware or QEMU left it (QEMU's PL011 prints without setup); a board
//! that must program baud divisors calls [`Pl011::enable`] first. Boards print their own early
//! messages (before the kernel's console exists) with `write!` on a [`Pl011`] value.
//!
//! Input is interrupt-driven: [`Pl011::rx_interrupts`] turns on the receive and receive-timeout
//! interrupts (with the FIFOs on, the first fires at the FIFO's trigger level and the second
//! when fewer characters sit there for 32 bit periods, so nothing waits in a partly filled
//! FIFO), and the kernel's handler drains the FIFO with [`Pl011::read_byte`], which is what
//! ends both interrupts.

use arm_pl011_uart::{FifoLevel, Interrupts, PL011Registers, Uart};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;

/// A PL011 at a fixed physical address.
#[derive(Clone, Copy, Debug)]
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// A PL011 whose registers are at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the address of a PL011's registers, mapped as device memory whenever
    /// the UART is used.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    /// The register base address.
    pub fn base(&self) -> usize {
        self.base
    }

    fn uart(&self) -> Uart<'static> {
        // SAFETY: `new`'s caller promised `base` is a PL011. A fresh driver per call aliases
        // the registers, which is harmless here: the kernel console serialises writers, and on
        // the panic path an interleaved byte is the worst outcome (the driver keeps no state).
        Uart::new(unsafe {
            UniqueMmioPointer::new(
                NonNull::new(self.base as *mut PL011Registers).expect("non-null"),
            )
        })
    }

    /// Writes `bytes`, waiting for room in the transmit FIFO.
    pub fn write(&self, bytes: &[u8]) {
        let mut uart = self.uart();
        for &b in bytes {
            while uart.is_tx_fifo_full() {
                core::hint::spin_loop();
            }
            uart.write_word(b);
        }
    }

    /// Turns the receive interrupts (RXIM: FIFO at its trigger level, RTIM: receive timeout)
    /// on or off, with the FIFOs enabled and the receive trigger at half full. Transmit and
    /// modem interrupts stay masked (output polls the FIFO).
    pub fn rx_interrupts(&self, on: bool) {
        // Line control (UARTLCR_H), for FIFO enable (FEN, bit 4): `arm-pl011-uart` sets it
        // only in `enable`, which also reprograms the baud rate.
        const LCR_H: usize = 0x2c;
        const FEN: u32 = 1 << 4;
        let lcr_h = (self.base + LCR_H) as *mut u32;
        // SAFETY: `new`'s caller promised a PL011 at `base`; UARTLCR_H is its line-control
        // register, and setting FEN changes nothing but the FIFO depth (receiver and
        // transmitter stay enabled).
        unsafe {
            let v = lcr_h.read_volatile();
            if v & FEN == 0 {
                lcr_h.write_volatile(v | FEN);
            }
        }
        let mut uart = self.uart();
        uart.set_interrupt_fifo_levels(FifoLevel::Bytes16, FifoLevel::Bytes16);
        uart.clear_interrupts(Interrupts::RXI | Interrupts::RTI);
        let masks = if on {
            Interrupts::RXI | Interrupts::RTI
        } else {
            Interrupts::empty()
        };
        uart.set_interrupt_masks(masks);
    }

    /// One received byte, or `None` when the receive FIFO is empty. A byte that arrived with
    /// a framing, parity, break or overrun error is returned as it is (a console has no better
    /// use for it).
    pub fn read_byte(&self) -> Option<u8> {
        // Data register (UARTDR): bits 7..0 the character, 11..8 its error flags.
        const DR: usize = 0x00;
        let uart = self.uart();
        if uart.is_rx_fifo_empty() {
            return None;
        }
        // SAFETY: `new`'s caller promised a PL011 at `base`; reading UARTDR pops one entry of
        // the receive FIFO, which is not empty (checked above; only the console's interrupt
        // handler reads it).
        let dr = unsafe { ((self.base + DR) as *const u32).read_volatile() };
        Some(dr as u8)
    }

    /// Programs 8N1 at `baud` for a UART clock of `clock_hz` and enables the UART.
    pub fn enable(&self, baud: u32, clock_hz: u32) -> Result<(), arm_pl011_uart::Error> {
        let config = arm_pl011_uart::LineConfig {
            data_bits: arm_pl011_uart::DataBits::Bits8,
            parity: arm_pl011_uart::Parity::None,
            stop_bits: arm_pl011_uart::StopBits::One,
        };
        self.uart().enable(config, baud, clock_hz)
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}
