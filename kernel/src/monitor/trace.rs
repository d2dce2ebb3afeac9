//! `trace on [CLASSES] | off | clear | show [N]`: the kernel's event tracing (`crate::trace`)
//! from the monitor. `show` reads the rings through the kvm reader over the running kernel
//! (`kvm::trace`), the same code `cargo xtask trace` runs on a core or a live guest.

use super::{CmdResult, Command};
use crate::kprintln;
use crate::kvm::Kvm;
use crate::kvm::local::LocalSource;
use crate::trace::{CLASS_NAMES, Kind, SwitchReason};
use alloc::string::ToString;
use alloc::vec::Vec;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "trace",
    args: "on|off|clear|show [N]",
    summary: "event tracing: on, off, empty, last N records",
    detail: "trace on [CLASSES]: CLASSES is all (default) or a comma list of intr, spl, softint, switch, thread, \
             work, xcall, ipi, idle. `show N` (default 20) prints the last N records of all \
             CPUs in time order, read with the kvm reader; `cargo xtask trace --live` reads \
             the same rings from outside.",
    run: trace,
}];

fn trace(args: &[&str]) -> CmdResult {
    match args {
        ["on"] => on("all"),
        ["on", classes] => on(classes),
        ["off"] => {
            crate::trace_control::set_mask(0);
            kprintln!("trace: off");
            Ok(())
        }
        ["clear"] => {
            crate::stats::trace_clear();
            kprintln!("trace: every ring emptied");
            Ok(())
        }
        ["show"] => show(20),
        ["show", n] => show(
            n.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or("N must be a positive number")?,
        ),
        _ => Err("usage: trace on [CLASSES]|off|clear|show [N]".into()),
    }
}

fn on(classes: &str) -> CmdResult {
    let mask = crate::trace::parse_classes(classes).ok_or_else(|| {
        alloc::format!("unknown class in `{classes}` ({})", CLASS_NAMES.join(","))
    })?;
    crate::trace_control::set_mask(mask);
    let names: Vec<&str> = (0..CLASS_NAMES.len())
        .filter(|b| mask & 1 << b != 0)
        .map(|b| CLASS_NAMES[b])
        .collect();
    kprintln!("trace: on ({})", names.join(","));
    Ok(())
}

fn show(n: usize) -> CmdResult {
    let dump = Kvm::open(LocalSource::new())
        .and_then(|mut kd| kd.trace())
        .map_err(|e| e.to_string())?;
    let mut all: Vec<(u64, u32, &crate::kvm::trace::Event)> = dump
        .cpus
        .iter()
        .flat_map(|c| c.events.iter().map(move |e| (e.ts, c.cpu, e)))
        .collect();
    all.sort_by_key(|&(ts, cpu, e)| (ts, cpu, e.seq));
    for c in dump.cpus.iter().filter(|c| c.lost != 0) {
        kprintln!("cpu{}: {} records lost (the ring wrapped)", c.cpu, c.lost);
    }
    let freq = dump.freq.max(1);
    for &(ts, cpu, e) in all.iter().skip(all.len().saturating_sub(n)) {
        let us = ts as u128 * 1_000_000 / freq as u128;
        let what = match e.kind {
            Kind::Switch => alloc::format!(
                "{} -> {} ({})",
                label(&dump, e.a),
                label(&dump, e.b),
                SwitchReason::name(e.aux)
            ),
            _ => alloc::format!("a={:#x} b={:#x}", e.a, e.b),
        };
        kprintln!(
            "[{cpu:03}] {:>7}.{:06} {:<16} {what}",
            us / 1_000_000,
            us % 1_000_000,
            e.kind.name()
        );
    }
    Ok(())
}

fn label(dump: &crate::kvm::trace::TraceDump, id: u64) -> alloc::string::String {
    match dump.name_of(id) {
        Some(n) => alloc::format!("{n}#{id}"),
        None => alloc::format!("#{id}"),
    }
}
