//! PSCI calls through `smccc`, with the conduit (HVC or SMC) chosen at run time from the
//! device tree's `/psci` node `method` property.

use kernel::platform::CpuStartError;
use smccc::{Hvc, Smc, psci};

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0` (firmware at EL2, e.g. QEMU without `virtualization=on`).
    Hvc,
    /// `smc #0` (firmware at EL3, or QEMU with `virtualization=on`).
    Smc,
}

impl Conduit {
    /// From the device tree's `method` string.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "hvc" => Some(Self::Hvc),
            "smc" => Some(Self::Smc),
            _ => None,
        }
    }

    /// PSCI CPU_ON.
    pub fn cpu_on(self, mpidr: u64, entry: u64, context: u64) -> Result<(), CpuStartError> {
        let r = match self {
            Self::Hvc => psci::cpu_on::<Hvc>(mpidr, entry, context),
            Self::Smc => psci::cpu_on::<Smc>(mpidr, entry, context),
        };
        r.map_err(|e| CpuStartError::Firmware(i64::from(e)))
    }

    /// PSCI SYSTEM_OFF. Returns only if the firmware refused.
    pub fn system_off(self) {
        let _ = match self {
            Self::Hvc => psci::system_off::<Hvc>(),
            Self::Smc => psci::system_off::<Smc>(),
        };
    }

    /// PSCI SYSTEM_RESET. Returns only if the firmware refused.
    pub fn system_reset(self) {
        let _ = match self {
            Self::Hvc => psci::system_reset::<Hvc>(),
            Self::Smc => psci::system_reset::<Smc>(),
        };
    }
}
