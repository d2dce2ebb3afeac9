//! The Raspberry Pi 4 board's pure logic, apart from the board binary (`main.rs`) so that it is
//! unit-tested on the host: the BCM2711 memory map, deciding whether x0 holds a device tree,
//! the built-in default tree used when it does not, the kernel command line from an ATAG list,
//! the spin-table release address of each CPU, and the GPIO registers (tock-registers'
//! `register_structs!`/`register_bitfields!`) that route the PL011 to the header pins.
//!
//! Everything here runs at boot with the MMU off: no allocation, no locks.

#![cfg_attr(not(test), no_std)]

pub mod fdt_writer;

use fdt_writer::{FdtWriter, NoRoom};
use kernel::devtree::{self, CpuNode, DtbError, EnableMethod};
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::{Readable, Writeable};
/// The BCM2711's fixed addresses (ARM physical, "low peripheral" mode, the firmware's
/// default) and the Pi 4's boot conventions.
pub mod layout {
    use kernel::platform::PhysRange;

    /// GPIO controller.
    pub const GPIO_BASE: usize = 0xfe20_0000;
    /// PL011 UART0.
    pub const UART0_BASE: usize = 0xfe20_1000;
    /// GIC-400 distributor.
    pub const GICD_BASE: usize = 0xff84_1000;
    /// GIC-400 CPU interface (two pages).
    pub const GICC_BASE: usize = 0xff84_2000;
    /// The PL011's reference clock as the firmware sets it (`init_uart_clock`, 48 MHz).
    pub const UART_CLOCK_HZ: u32 = 48_000_000;
    /// The console speed (8N1).
    pub const BAUD: u32 = 115_200;
    /// The EL1 physical timer's interrupt (PPI 14).
    pub const TIMER_IRQ: u32 = 30;
    /// UART0's interrupt at the GIC-400: VideoCore peripheral interrupt 57, which the BCM2711
    /// delivers as SPI 121 (Linux's device tree: `interrupts = <GIC_SPI 121 ...>`), INTID 153.
    pub const UART0_IRQ: u32 = 32 + 121;
    /// The power manager, whose watchdog resets the SoC (Linux's `bcm2835_wdt`; registers in
    /// [`crate::pm::PmRegisters`]).
    pub const PM_BASE: usize = 0xfe10_0000;
    /// Device registers the kernel maps.
    pub const DEVICES: [PhysRange; 5] = [
        PhysRange {
            start: GPIO_BASE as u64,
            size: 0x1000,
        },
        PhysRange {
            start: UART0_BASE as u64,
            size: 0x1000,
        },
        PhysRange {
            start: GICD_BASE as u64,
            size: 0x1000,
        },
        PhysRange {
            start: GICC_BASE as u64,
            size: 0x2000,
        },
        PhysRange {
            start: PM_BASE as u64,
            size: 0x1000,
        },
    ];

    /// Where the image is loaded (and linked).
    pub const LOAD_ADDRESS: u64 = 0x8_0000;
    /// RAM below the image that the firmware keeps using: the armstub and the spin table the
    /// other CPUs wait on (and, under QEMU, its boot stub and ATAGs).
    pub const FIRMWARE_RESERVED: PhysRange = PhysRange {
        start: 0,
        size: LOAD_ADDRESS,
    };
    /// Spin-table release address of CPU 0 (`0xd8 + 8 * n` for CPU n), the firmware's and
    /// QEMU's, used when the device tree has no `cpu-release-addr`.
    pub const SPIN_TABLE_BASE: u64 = 0xd8;
    /// CPUs of the BCM2711 (MPIDR Aff0 0-3).
    pub const CPUS: usize = 4;
    /// RAM assumed without a device tree: the first 948 MiB, which every Pi 4 has below the
    /// VideoCore's share at the default `gpu_mem` (76 MiB).
    pub const DEFAULT_RAM: PhysRange = PhysRange {
        start: 0,
        size: 0x3b40_0000,
    };
}

/// Why the board did not use x0 as a device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTree {
    /// x0 was 0.
    Null,
    /// x0 points outside the RAM every Pi 4 has, or is not 8-byte aligned.
    Implausible(u64),
    /// The header at x0 is not a device tree's (QEMU without `-dtb` passes an ATAG list).
    NotATree(u64, DtbError),
    /// The header was a device tree's but the tree is unusable.
    Unusable(u64, DtbError),
}

impl core::fmt::Display for NoTree {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Null => write!(f, "x0 = 0, no device tree was passed"),
            Self::Implausible(x0) => write!(f, "x0 = {x0:#x} cannot be a device tree address"),
            Self::NotATree(x0, e) => write!(f, "x0 = {x0:#x}: {e}"),
            Self::Unusable(x0, e) => write!(f, "the device tree at {x0:#x} is unusable: {e}"),
        }
    }
}

/// Whether the 40 bytes at `x0` may be read as a device tree header: non-zero, 8-byte aligned
/// (as the FDT format requires) and inside [`layout::DEFAULT_RAM`].
pub fn check_address(x0: u64) -> Result<(), NoTree> {
    if x0 == 0 {
        return Err(NoTree::Null);
    }
    if !x0.is_multiple_of(8) || x0.saturating_add(40) > layout::DEFAULT_RAM.end() {
        return Err(NoTree::Implausible(x0));
    }
    Ok(())
}

/// The size of the device tree whose first 40 bytes are `header`, read from address `x0`.
pub fn check_header(x0: u64, header: &[u8]) -> Result<usize, NoTree> {
    match devtree::total_size(header) {
        Ok(size) if x0.saturating_add(size as u64) <= layout::DEFAULT_RAM.end() => Ok(size),
        Ok(_) => Err(NoTree::Unusable(
            x0,
            DtbError::BadHeader("the tree would extend past the end of RAM"),
        )),
        Err(e @ DtbError::BadMagic(_)) => Err(NoTree::NotATree(x0, e)),
        Err(e) => Err(NoTree::Unusable(x0, e)),
    }
}

/// Makes the tree in `tree` (read from address `x0`) ready for the kernel: checks it and
/// removes the NOP tokens that firmware leaves where it deleted properties
/// (`kernel::devtree::remove_nops`; the kernel's reader skips them, the compacted tree is just
/// what gets handed on), then checks that it holds what the kernel needs (memory, CPUs, every
/// value in range) by parsing it as the kernel will. Returns the parse and the NOPs removed.
pub fn prepare_tree(x0: u64, tree: &mut [u8]) -> Result<(devtree::SystemInfo, usize), NoTree> {
    let nops = devtree::remove_nops(tree).map_err(|e| NoTree::Unusable(x0, e))?;
    let info = devtree::parse(tree, 0).map_err(|e| NoTree::Unusable(x0, e))?;
    Ok((info, nops))
}

/// The ATAG list tag that must come first.
const ATAG_CORE: u32 = 0x5441_0001;
/// The tag holding the kernel command line.
const ATAG_CMDLINE: u32 = 0x5441_0009;

/// The kernel command line from an ATAG list (what QEMU passes in x0 without `-dtb`), if
/// `atags` starts with ATAG_CORE and holds a well-formed ATAG_CMDLINE before the list ends.
pub fn atag_cmdline(atags: &[u8]) -> Option<&str> {
    let word = |offset: usize| -> Option<u32> {
        let b = atags.get(offset..offset + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut offset = 0;
    let mut first = true;
    loop {
        let size_words = word(offset)? as usize;
        let tag = word(offset + 4)?;
        if first && tag != ATAG_CORE {
            return None;
        }
        first = false;
        if size_words < 2 {
            return None; // ATAG_NONE (size 0) or a malformed tag
        }
        let end = offset.checked_add(size_words.checked_mul(4)?)?;
        if tag == ATAG_CMDLINE {
            let text = atags.get(offset + 8..end)?;
            let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            return core::str::from_utf8(&text[..len]).ok();
        }
        offset = end;
    }
}

/// Writes the device tree the board uses when the firmware passed none: [`layout::DEFAULT_RAM`],
/// the four CPUs with their spin-table release addresses, and `bootargs`. Returns its size.
pub fn build_default_tree(buf: &mut [u8], bootargs: &str) -> Result<usize, NoRoom> {
    let mut w = FdtWriter::new(buf)?;
    w.begin_node("")?;
    w.property_cells("#address-cells", &[2])?;
    w.property_cells("#size-cells", &[2])?;
    w.property_str("model", "Raspberry Pi 4 (built-in defaults)")?;

    w.begin_node("chosen")?;
    w.property_str("bootargs", bootargs)?;
    w.end_node()?;

    let ram = layout::DEFAULT_RAM;
    w.begin_node("memory@0")?;
    w.property_str("device_type", "memory")?;
    w.property_cells(
        "reg",
        &[
            (ram.start >> 32) as u32,
            ram.start as u32,
            (ram.size >> 32) as u32,
            ram.size as u32,
        ],
    )?;
    w.end_node()?;

    w.begin_node("cpus")?;
    w.property_cells("#address-cells", &[1])?;
    w.property_cells("#size-cells", &[0])?;
    const NAMES: [&str; layout::CPUS] = ["cpu@0", "cpu@1", "cpu@2", "cpu@3"];
    for (n, name) in NAMES.iter().enumerate() {
        let release = layout::SPIN_TABLE_BASE + 8 * n as u64;
        w.begin_node(name)?;
        w.property_str("device_type", "cpu")?;
        w.property_str("compatible", "arm,cortex-a72")?;
        w.property_cells("reg", &[n as u32])?;
        w.property_str("enable-method", "spin-table")?;
        w.property_cells(
            "cpu-release-addr",
            &[(release >> 32) as u32, release as u32],
        )?;
        w.end_node()?;
    }
    w.end_node()?;
    w.end_node()?;
    w.finish()
}

/// Where a CPU's release address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseAddress {
    /// The device tree's `cpu-release-addr`.
    FromTree(u64),
    /// The firmware's known address, because the tree has none for this CPU.
    Default(u64),
}

impl ReleaseAddress {
    /// The address.
    pub fn addr(self) -> u64 {
        match self {
            Self::FromTree(a) | Self::Default(a) => a,
        }
    }
}

/// Why a CPU cannot be started from the spin table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRelease {
    /// The tree says the CPU starts another way (PSCI needs firmware the Pi does not have).
    NotSpinTable(EnableMethod),
    /// No `cpu-release-addr`, and the MPIDR is not one of the BCM2711's four CPUs.
    UnknownCpu(u64),
}

/// The release address of `cpu`: its `cpu-release-addr`, or `0xd8 + 8 * Aff0` for the
/// BCM2711's CPUs 0-3 when the tree lacks it. A CPU whose enable method is not given is
/// assumed to use the spin table (the Pi's only method).
pub fn release_address(cpu: &CpuNode) -> Result<ReleaseAddress, NoRelease> {
    match cpu.enable_method {
        EnableMethod::SpinTable | EnableMethod::Unknown => {}
        other => return Err(NoRelease::NotSpinTable(other)),
    }
    if let Some(addr) = cpu.release_addr {
        return Ok(ReleaseAddress::FromTree(addr));
    }
    let affinity = cpu.mpidr & 0xff_00ff_ffff;
    if affinity < layout::CPUS as u64 {
        Ok(ReleaseAddress::Default(
            layout::SPIN_TABLE_BASE + 8 * affinity,
        ))
    } else {
        Err(NoRelease::UnknownCpu(cpu.mpidr))
    }
}

/// The BCM2711 GPIO registers the board uses, described with tock-registers.
pub mod gpio {
    #![allow(
        missing_docs,
        reason = "register_bitfields! generates each register's Register type, field constants \
                  and value enums without doc comments; the registers and fields are documented"
    )]

    use tock_registers::registers::ReadWrite;
    use tock_registers::{register_bitfields, register_structs};

    register_bitfields! {u32,
        /// GPFSEL1: the function of GPIO 10-19, three bits each (only the console's pins named).
        pub GPFSEL1 [
            /// GPIO14 (header pin 8).
            FSEL14 OFFSET(12) NUMBITS(3) [
                /// An input (reset).
                Input = 0b000,
                /// An output.
                Output = 0b001,
                /// ALT0: PL011 UART0 TXD0.
                Alt0 = 0b100,
                /// ALT5: the mini UART's TXD1 (what the firmware leaves with enable_uart=1).
                Alt5 = 0b010
            ],
            /// GPIO15 (header pin 10).
            FSEL15 OFFSET(15) NUMBITS(3) [
                /// An input (reset).
                Input = 0b000,
                /// An output.
                Output = 0b001,
                /// ALT0: PL011 UART0 RXD0.
                Alt0 = 0b100,
                /// ALT5: the mini UART's RXD1.
                Alt5 = 0b010
            ]
        ],
        /// GPIO_PUP_PDN_CNTRL_REG0 of the BCM2711: the pull of GPIO 0-15, two bits each.
        pub GPIO_PUP_PDN_CNTRL_REG0 [
            /// GPIO14's pull.
            GPIO_PUP_PDN_CNTRL14 OFFSET(28) NUMBITS(2) [
                /// No pull.
                None = 0b00,
                /// Pull-up.
                Up = 0b01,
                /// Pull-down.
                Down = 0b10
            ],
            /// GPIO15's pull.
            GPIO_PUP_PDN_CNTRL15 OFFSET(30) NUMBITS(2) [
                /// No pull.
                None = 0b00,
                /// Pull-up.
                Up = 0b01,
                /// Pull-down.
                Down = 0b10
            ]
        ]
    }

    register_structs! {
        /// The BCM2711 GPIO block at [`crate::layout::GPIO_BASE`], up to the registers the board uses.
        pub GpioRegisters {
            /// GPFSEL0: the function of GPIO 0-9.
            (0x00 => pub gpfsel0: ReadWrite<u32>),
            /// GPFSEL1: the function of GPIO 10-19.
            (0x04 => pub gpfsel1: ReadWrite<u32, GPFSEL1::Register>),
            (0x08 => _reserved0),
            /// GPIO_PUP_PDN_CNTRL_REG0: the pull of GPIO 0-15.
            (0xe4 => pub pup_pdn_cntrl_reg0: ReadWrite<u32, GPIO_PUP_PDN_CNTRL_REG0::Register>),
            (0xe8 => @END),
        }
    }
}

pub use gpio::{GPFSEL1, GPIO_PUP_PDN_CNTRL_REG0, GpioRegisters};

/// GPFSEL1 with GPIO14 and GPIO15 (header pins 8 and 10) switched to ALT0 (PL011 TXD0 and
/// RXD0), the other pins unchanged.
pub fn gpfsel1_with_uart0(value: u32) -> u32 {
    let mut reg = LocalRegisterCopy::<u32, GPFSEL1::Register>::new(value);
    reg.modify(GPFSEL1::FSEL14::Alt0 + GPFSEL1::FSEL15::Alt0);
    reg.get()
}

/// GPIO_PUP_PDN_CNTRL_REG0 with no pull on GPIO14 (TX) and a pull-up on GPIO15 (RX, so an
/// unconnected line reads idle), the other pins unchanged.
pub fn pulls_with_uart0(value: u32) -> u32 {
    let mut reg = LocalRegisterCopy::<u32, GPIO_PUP_PDN_CNTRL_REG0::Register>::new(value);
    reg.modify(
        GPIO_PUP_PDN_CNTRL_REG0::GPIO_PUP_PDN_CNTRL14::None
            + GPIO_PUP_PDN_CNTRL_REG0::GPIO_PUP_PDN_CNTRL15::Up,
    );
    reg.get()
}

/// Routes the PL011 to GPIO14/15: ALT0 on both, no pull on TX and a pull-up on RX, the other
/// pins' fields unchanged. Boot CPU only, before anything else uses the GPIO block (the
/// read-modify-writes are not atomic); any IPL; does not block.
pub fn route_uart0(gpio: &GpioRegisters) {
    gpio.gpfsel1.set(gpfsel1_with_uart0(gpio.gpfsel1.get()));
    gpio.pup_pdn_cntrl_reg0
        .set(pulls_with_uart0(gpio.pup_pdn_cntrl_reg0.get()));
}

/// The BCM2711 power manager's reset and watchdog registers (Linux's `bcm2835_wdt`),
/// described with tock-registers. Every write carries the password 0x5a in bits 31..24.
pub mod pm {
    #![allow(
        missing_docs,
        reason = "register_bitfields! generates each register's Register type, field constants \
                  and value enums without doc comments; the registers and fields are documented"
    )]

    use tock_registers::registers::ReadWrite;
    use tock_registers::{register_bitfields, register_structs};

    register_bitfields! {u32,
        /// PM_RSTC: reset control.
        pub PM_RSTC [
            /// The write password.
            PASSWD OFFSET(24) NUMBITS(8) [
                /// The only value the power manager accepts.
                Password = 0x5a
            ],
            /// What the watchdog does when it expires.
            WRCFG OFFSET(4) NUMBITS(2) [
                /// Nothing.
                Clear = 0b00,
                /// A full reset of the SoC.
                FullReset = 0b10
            ]
        ],
        /// PM_RSTS: reset status; the partition the firmware boots after a reset is spread
        /// over every other bit (bit n of the partition in bit 2n), 63 meaning "halt".
        pub PM_RSTS [
            /// The write password.
            PASSWD OFFSET(24) NUMBITS(8) [
                /// The only value the power manager accepts.
                Password = 0x5a
            ],
            /// Partition bit 0.
            PARTITION0 OFFSET(0) NUMBITS(1) [],
            /// Partition bit 1.
            PARTITION1 OFFSET(2) NUMBITS(1) [],
            /// Partition bit 2.
            PARTITION2 OFFSET(4) NUMBITS(1) [],
            /// Partition bit 3.
            PARTITION3 OFFSET(6) NUMBITS(1) [],
            /// Partition bit 4.
            PARTITION4 OFFSET(8) NUMBITS(1) [],
            /// Partition bit 5.
            PARTITION5 OFFSET(10) NUMBITS(1) []
        ],
        /// PM_WDOG: the watchdog's time left, in 16 µs ticks.
        pub PM_WDOG [
            /// The write password.
            PASSWD OFFSET(24) NUMBITS(8) [
                /// The only value the power manager accepts.
                Password = 0x5a
            ],
            /// Ticks until the watchdog expires.
            TIME OFFSET(0) NUMBITS(20) []
        ]
    }

    register_structs! {
        /// The power manager at [`crate::layout::PM_BASE`], up to the watchdog.
        pub PmRegisters {
            (0x00 => _reserved0),
            /// PM_RSTC.
            (0x1c => pub rstc: ReadWrite<u32, PM_RSTC::Register>),
            /// PM_RSTS.
            (0x20 => pub rsts: ReadWrite<u32, PM_RSTS::Register>),
            /// PM_WDOG.
            (0x24 => pub wdog: ReadWrite<u32, PM_WDOG::Register>),
            (0x28 => @END),
        }
    }
}

pub use pm::{PM_RSTC, PM_RSTS, PM_WDOG, PmRegisters};

/// PM_RSTS with `partition` (0..=63) as the partition to boot after the reset, the password,
/// and every other bit as read.
pub fn rsts_with_partition(value: u32, partition: u32) -> u32 {
    let bit = |n: u32| (partition >> n) & 1;
    let mut reg = LocalRegisterCopy::<u32, PM_RSTS::Register>::new(value);
    reg.modify(
        PM_RSTS::PASSWD::Password
            + PM_RSTS::PARTITION0.val(bit(0))
            + PM_RSTS::PARTITION1.val(bit(1))
            + PM_RSTS::PARTITION2.val(bit(2))
            + PM_RSTS::PARTITION3.val(bit(3))
            + PM_RSTS::PARTITION4.val(bit(4))
            + PM_RSTS::PARTITION5.val(bit(5)),
    );
    reg.get()
}

/// PM_RSTC set for a full reset when the watchdog expires, with the password, every other bit
/// as read.
pub fn rstc_full_reset(value: u32) -> u32 {
    let mut reg = LocalRegisterCopy::<u32, PM_RSTC::Register>::new(value);
    reg.modify(PM_RSTC::PASSWD::Password + PM_RSTC::WRCFG::FullReset);
    reg.get()
}

/// The watchdog's timeout before [`watchdog_reset`] resets: 10 ticks, 160 µs.
pub const WATCHDOG_RESET_TICKS: u32 = 10;

/// Resets the SoC through the power manager's watchdog, as Linux's `bcm2835_restart` and
/// `bcm2835_power_off` do: `partition` into PM_RSTS (63: the firmware halts), a short timeout
/// into PM_WDOG, full reset into PM_RSTC. Returns once the watchdog is armed; the machine
/// resets 160 µs later. Any context and IPL; does not block.
pub fn watchdog_reset(pm: &PmRegisters, partition: u32) {
    pm.rsts.set(rsts_with_partition(pm.rsts.get(), partition));
    pm.wdog
        .write(PM_WDOG::PASSWD::Password + PM_WDOG::TIME.val(WATCHDOG_RESET_TICKS));
    pm.rstc.set(rstc_full_reset(pm.rstc.get()));
}

#[cfg(test)]
mod tests;
