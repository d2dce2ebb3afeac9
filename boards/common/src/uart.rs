//! The PL011 console through `arm-pl011-uart`.
//!
//! The UART is used as firmware or QEMU left it (QEMU's PL011 prints without setup); a board
//! that must program baud divisors calls [`Pl011::enable`] first. Boards print their own early
//! messages (before the kernel's console exists) with `write!` on a [`Pl011`] value.

use arm_pl011_uart::{PL011Registers, Uart};
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
