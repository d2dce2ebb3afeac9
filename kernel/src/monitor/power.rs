//! `panic`, `reboot` and `poweroff`.

use super::{CmdResult, Command};
use crate::kprintln;
use crate::platform::platform;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "panic",
        args: "",
        summary: "panic the kernel (see the panic path)",
        detail: "",
        run: panic,
    },
    Command {
        name: "reboot",
        args: "",
        summary: "reset (PSCI SYSTEM_RESET; rpi4: watchdog)",
        detail: "Under QEMU (run with -no-reboot) the emulator exits.",
        run: reboot,
    },
    Command {
        name: "poweroff",
        args: "",
        summary: "power off (PSCI SYSTEM_OFF; rpi4: watchdog)",
        detail: "Under QEMU the emulator exits with status 0.",
        run: poweroff,
    },
];

fn panic(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: panic".into());
    }
    panic!("panic requested from the monitor");
}

fn reboot(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: reboot".into());
    }
    kprintln!("kdb: rebooting");
    platform().reboot()
}

fn poweroff(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: poweroff".into());
    }
    kprintln!("kdb: powering off");
    platform().power_off()
}
