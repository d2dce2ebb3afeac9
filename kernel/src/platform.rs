//! The one trait a board implements: console output, the interrupt controller, starting CPUs
//! and leaving the machine.
//!
//! The kernel never names a board, a register address or a GIC version: whatever it needs from
//! the hardware beyond the architecture (timer, MMU, exception vectors, which live in
//! `arch::aarch64`) goes through [`Platform`]. A board builds one `'static` object implementing
//! it and hands it to [`crate::boot::kernel_main`].

/// A physical address range `[start, start + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte of the range.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

impl PhysRange {
    /// One past the last byte of the range (saturating, so a bogus range cannot wrap).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// Whether `addr` lies inside the range.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end()
    }

    /// Whether the two ranges share a byte (an empty range overlaps nothing).
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.size > 0 && other.size > 0 && self.start < other.end() && other.start < self.end()
    }

    /// The highest range of `size` bytes starting at a multiple of `align` (a power of two)
    /// that lies inside this one and overlaps nothing in `avoid`, if there is one. Each step
    /// moves the candidate below the lowest range in its way, so it takes at most
    /// `avoid.len() + 1` steps. Pure arithmetic: used before the MMU is on.
    pub fn highest_free(&self, size: u64, align: u64, avoid: &[PhysRange]) -> Option<PhysRange> {
        if size == 0 {
            return None;
        }
        let mut end = self.end();
        loop {
            if end < self.start || end - self.start < size {
                return None;
            }
            let start = (end - size) & !(align - 1);
            if start < self.start {
                return None;
            }
            let candidate = PhysRange { start, size };
            match avoid
                .iter()
                .filter(|a| a.overlaps(&candidate))
                .map(|a| a.start)
                .min()
            {
                None => return Some(candidate),
                Some(lowest) => end = lowest,
            }
        }
    }
}

/// Which CPUs an inter-processor interrupt goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiTarget {
    /// One CPU, by kernel CPU index (which may be the sender itself).
    Cpu(usize),
    /// Every online CPU except the sender.
    AllButSelf,
}

/// An interrupt acknowledged at the controller: the identifier to dispatch on and the raw
/// value the controller wants back at end-of-interrupt (on GICv2 an SGI's IAR value carries the
/// source CPU, which must be written back unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqAck {
    /// Interrupt identifier (GIC INTID: SGIs 0-15, PPIs 16-31, SPIs from 32).
    pub irq: u32,
    /// Raw acknowledge value, returned to [`Platform::irq_eoi`].
    pub raw: u32,
}

/// Why a CPU could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuStartError {
    /// The firmware refused (PSCI error code, or the board's own code).
    Firmware(i64),
    /// The board has no way to start that CPU.
    Unsupported,
}

/// The services a board provides to the kernel.
///
/// All methods may be called from any CPU; methods marked *this CPU* act on the CPU that calls
/// them. None of them sleeps. They may be called with interrupts masked.
pub trait Platform: Sync {
    /// Short board name for the banner (`"qemu-virt"`).
    fn name(&self) -> &'static str;

    /// Writes bytes to the console, blocking until the hardware accepted them. The kernel's
    /// console module serialises callers; implementations need no lock of their own.
    fn console_write(&self, bytes: &[u8]);

    /// Physical address ranges of device registers the kernel must map as device memory.
    fn device_ranges(&self) -> &[PhysRange];

    /// RAM the kernel must never allocate from although the device tree lists it as memory:
    /// firmware that stays in use after boot (on the Raspberry Pi, the armstub and the
    /// spin table the other CPUs wait on, below the image). It stays mapped. Default: none.
    fn reserved_ranges(&self) -> &[PhysRange] {
        &[]
    }

    /// One-time interrupt controller setup, on the boot CPU, before any other CPU starts.
    fn irq_init(&self);

    /// Per-CPU interrupt controller setup (*this CPU*), called on every CPU, boot CPU included,
    /// after [`Platform::irq_init`].
    fn irq_init_cpu(&self, cpu: usize);

    /// Enables interrupt `irq`, delivered at kernel priority level `ipl` (`spl::Ipl` as a
    /// number, 5 = IPL_VM to 7 = IPL_HIGH; the board maps it to controller priorities so that a
    /// higher IPL is a more urgent priority). For private interrupts (SGI/PPI) `cpu` names the
    /// CPU whose copy to program; the kernel always calls this on that CPU itself.
    fn irq_enable(&self, irq: u32, cpu: Option<usize>, ipl: u8);

    /// Disables interrupt `irq` (for private interrupts, CPU `cpu`'s copy). Interrupts the
    /// controller cannot disable (some SGIs) are left as they are.
    fn irq_disable(&self, irq: u32, cpu: Option<usize>);

    /// Forgets a pending private interrupt `irq` (SGI/PPI) of CPU `cpu`, called on that CPU
    /// before the interrupt is enabled for a new handler (one sent while it was disabled must
    /// not reach that handler). Default: nothing to clear.
    fn irq_clear_pending(&self, irq: u32, cpu: usize) {
        let _ = (irq, cpu);
    }

    /// Acknowledges the highest-priority pending interrupt (*this CPU*), or `None` when the
    /// controller has nothing (spurious).
    fn irq_ack(&self) -> Option<IrqAck>;

    /// Signals end of interrupt for an acknowledged interrupt (*this CPU*).
    fn irq_eoi(&self, ack: IrqAck);

    /// Sends software-generated interrupt `sgi` (0-7) to `target`.
    fn send_ipi(&self, target: IpiTarget, sgi: u32);

    /// The interrupt identifier of the EL1 physical timer (a PPI, the same on every CPU).
    fn timer_irq(&self) -> u32;

    /// Starts CPU `index` (MPIDR `mpidr`) at physical address `entry` with `context` in x0.
    /// The CPU enters at EL1 or EL2 with the MMU off; `entry` is the board's secondary entry.
    fn start_cpu(&self, index: usize, mpidr: u64, context: u64) -> Result<(), CpuStartError>;

    /// Leaves the machine with exit status `code` (under QEMU, the emulator exits with it).
    fn exit(&self, code: i32) -> !;

    /// The interrupt identifier of the console UART's receive interrupt (an SPI), or `None`
    /// when the console cannot interrupt on input. Default: none.
    fn console_rx_irq(&self) -> Option<u32> {
        None
    }

    /// Turns the console UART's receive interrupts (data received, receive timeout) on or off
    /// at the UART itself (the kernel enables the line at the interrupt controller). Default:
    /// nothing to do.
    fn console_rx_enable(&self, on: bool) {
        let _ = on;
    }

    /// One byte the console UART received, or `None` when its receive FIFO is empty. Called
    /// by the console's receive interrupt handler, which drains the FIFO; reading it empty is
    /// what ends the UART's receive interrupt. Default: never anything.
    fn console_read(&self) -> Option<u8> {
        None
    }

    /// Turns the machine off (PSCI SYSTEM_OFF; on the Raspberry Pi, the watchdog with the
    /// firmware's halt partition). Under QEMU the emulator exits with status 0. Default:
    /// [`Platform::exit`] with 0.
    fn power_off(&self) -> ! {
        self.exit(0)
    }

    /// Resets the machine (PSCI SYSTEM_RESET; on the Raspberry Pi, the watchdog). Under QEMU
    /// with `-no-reboot` the emulator exits with status 0. Default: [`Platform::power_off`].
    fn reboot(&self) -> ! {
        self.power_off()
    }
}

/// The board's platform object: written once, with a plain store, by the boot CPU at the start
/// of [`crate::boot::kernel_main`], before any other CPU runs and while the MMU is still off
/// (where a `spin::Once` would need an atomic read-modify-write: `crate::early`), so that
/// even a panic before the MMU is on reaches the console.
struct PlatformCell(core::cell::UnsafeCell<Option<&'static dyn Platform>>);

// SAFETY: written only by `set_platform`, whose callers guarantee it runs once, on the boot
// CPU, before any other CPU runs or anything reads the cell; read-only afterwards.
unsafe impl Sync for PlatformCell {}

static PLATFORM: PlatformCell = PlatformCell(core::cell::UnsafeCell::new(None));

/// Registers the board's platform object. Called by [`crate::boot::kernel_main`], first.
///
/// # Safety
///
/// Called once, on the boot CPU, before any other CPU runs and before anything asks for the
/// platform.
pub unsafe fn set_platform(platform: &'static dyn Platform) {
    // SAFETY: the caller guarantees that nothing else accesses the cell now (see above).
    unsafe { *PLATFORM.0.get() = Some(platform) };
}

/// The board's platform object, once registered.
pub fn try_platform() -> Option<&'static dyn Platform> {
    // SAFETY: after `set_platform` the cell is only read; before it only the boot CPU runs,
    // and it writes the cell before anything reads it.
    unsafe { *PLATFORM.0.get() }
}

/// The board's platform object. Panics if called before boot registered it.
pub fn platform() -> &'static dyn Platform {
    try_platform().expect("platform() called before kernel_main registered the board")
}

#[cfg(test)]
mod tests {
    use super::PhysRange;

    const fn r(start: u64, size: u64) -> PhysRange {
        PhysRange { start, size }
    }

    #[test]
    fn overlap_needs_a_shared_byte() {
        assert!(r(0, 10).overlaps(&r(9, 1)));
        assert!(!r(0, 10).overlaps(&r(10, 1)));
        assert!(!r(0, 10).overlaps(&r(5, 0)));
    }

    #[test]
    fn the_highest_free_range_sits_at_the_top_when_nothing_is_in_the_way() {
        let ram = r(0, 0x3b40_0000);
        assert_eq!(
            ram.highest_free(0x200_0000, 0x8000, &[]),
            Some(r(0x3940_0000, 0x200_0000))
        );
        // An unaligned end rounds the start down.
        assert_eq!(
            r(0, 0x1_0100).highest_free(0x8000, 0x8000, &[]),
            Some(r(0x8000, 0x8000))
        );
    }

    #[test]
    fn the_highest_free_range_moves_below_everything_in_its_way() {
        let ram = r(0, 0x3b40_0000);
        // A device tree near the top (where a firmware may put it) and a reservation just
        // below: the range ends below both.
        let tree = r(0x3b3f_2e00, 0xd151);
        let reserved = r(0x3a00_0000, 0x10_0000);
        let got = ram
            .highest_free(0x200_0000, 0x8000, &[tree, reserved])
            .unwrap();
        assert_eq!(got, r(0x3800_0000, 0x200_0000));
        assert!(!got.overlaps(&tree) && !got.overlaps(&reserved));
    }

    #[test]
    fn no_room_is_none() {
        let ram = r(0x1000, 0x10_0000);
        assert_eq!(ram.highest_free(0x20_0000, 0x8000, &[]), None);
        assert_eq!(ram.highest_free(0x8000, 0x8000, &[r(0, 0x20_0000)]), None);
        assert_eq!(ram.highest_free(0, 0x8000, &[]), None);
    }
}
