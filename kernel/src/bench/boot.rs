//! Boot figures: `boot_all_cpus_online` (QEMU's start, counter 0, to the moment the last CPU
//! reported online) and its breakdown: one `boot_phase_<name>` line per step of the boot CPU
//! (`boot::BootPhase`), `boot_phase_secondaries` from the end of those steps to the last CPU
//! online (the phases add up to `boot_all_cpus_online`), and one `boot_phase_cpuN` line per
//! secondary CPU, from the boot CPU's request to start it to the CPU reporting online (these
//! overlap each other and the secondaries phase). Each is one sample per boot; under `-icount`
//! they are the same on every run.

use super::{Figures, report};
use crate::clock::counter_to_ns;

fn once(metric: &str, ns: u64) {
    report(
        metric,
        "ns",
        Figures {
            median: ns,
            min: ns,
            max: ns,
            n: 1,
        },
    );
}

/// Prints `boot_all_cpus_online` and the per-phase lines.
pub fn boot() {
    once(
        "boot_all_cpus_online",
        counter_to_ns(crate::boottime::all_online_at()),
    );
    let mut boot_cpu_end = 0;
    for (phase, ticks) in crate::boottime::phase_ticks() {
        boot_cpu_end += ticks;
        once(
            &alloc::format!("boot_phase_{}", phase.name()),
            counter_to_ns(ticks),
        );
    }
    if crate::cpu::ncpu() > 1 {
        once(
            "boot_phase_secondaries",
            counter_to_ns(crate::boottime::all_online_at().saturating_sub(boot_cpu_end)),
        );
    }
    for (cpu, start, online) in crate::boottime::secondary_ticks() {
        if online != 0 {
            once(
                &alloc::format!("boot_phase_cpu{cpu}"),
                counter_to_ns(online.saturating_sub(start)),
            );
        }
    }
}
