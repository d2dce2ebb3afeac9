//! AArch64 board code shared by every board: the entry assembly with the drop from EL2 to EL1,
//! the GIC glue (v2 and v3, through `arm-gic`) and the interrupt facts a device tree gives it
//! (`irq`), the PL011 console, PSCI calls with a conduit chosen at run time, starting CPUs
//! from a firmware spin table, and leaving QEMU through semihosting.
//!
//! A board crate combines these with its own device-tree reading and linker script; it holds
//! no copy of any of them.

#![cfg_attr(not(test), no_std)]

#[cfg(target_arch = "aarch64")]
pub mod entry;
#[cfg(target_arch = "aarch64")]
pub mod gic;
pub mod irq;
pub mod priority;
#[cfg(target_arch = "aarch64")]
pub mod psci;
#[cfg(target_arch = "aarch64")]
pub mod semihosting;
pub mod spin_table;
#[cfg(target_arch = "aarch64")]
pub mod uart;
