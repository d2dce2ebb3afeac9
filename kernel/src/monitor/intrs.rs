//! `intr` (vmstat -i: interrupts per identifier and CPU, and the console's input counters),
//! `softint` (soft interrupts: per-level counters and the established handlers) and `wq`
//! (work queues and their counters).

use super::units::count;
use super::{CmdResult, Command};
use crate::cpu::{cpus, ncpu};
use crate::intr::{established, intr_count, stray_count};
use crate::kprintln;
use crate::softint::{self, NLEVELS, SOFTINT_MPSAFE, SOFTINT_RCPU};
use crate::workqueue::{WQ_FPU, WQ_MPSAFE, WQ_PERCPU, workqueue_list};
use alloc::string::String;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "intr",
        args: "",
        summary: "interrupts per IRQ and CPU; console input",
        detail: "Up to 4 CPUs get a column each; with more, the total and the busiest CPU. \
                 The console line: bytes the UART delivered, bytes dropped because the ring \
                 was full, bytes and lines the monitor read.",
        run: intr,
    },
    Command {
        name: "softint",
        args: "",
        summary: "soft interrupts: counters and handlers",
        detail: "",
        run: softints,
    },
    Command {
        name: "wq",
        args: "",
        summary: "work queues and their counters",
        detail: "`wqprobe` creates the monitor's own per-CPU queue `kdb` and runs a work on \
                 each CPU through it.",
        run: wq,
    },
];

const PER_CPU_COLUMNS: usize = 4;

fn intr(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: intr".into());
    }
    let n = ncpu();
    let per_cpu = n <= PER_CPU_COLUMNS;
    let mut header = String::from(" IRQ NAME         IPL       ");
    if per_cpu {
        for c in 0..n {
            header.push_str(&alloc::format!(" {:>8}", alloc::format!("cpu{c}")));
        }
    } else {
        header.push_str("  BUSIEST CPU");
    }
    header.push_str("    TOTAL");
    kprintln!("{header}");
    for i in established() {
        let mut name = String::from(if i.name.is_empty() { "?" } else { i.name });
        name.truncate(12);
        let mut row = alloc::format!("{:>4} {:<12} {:<10}", i.irq, name, i.ipl.name());
        let counts: alloc::vec::Vec<(usize, u64)> = cpus()
            .map(|ci| (ci.index(), intr_count(ci.index(), i.irq)))
            .collect();
        if per_cpu {
            for (_, c) in &counts {
                row.push_str(&alloc::format!(" {:>8}", count(*c)));
            }
        } else {
            let (cpu, most) = counts
                .iter()
                .copied()
                .max_by_key(|&(_, c)| c)
                .unwrap_or((0, 0));
            row.push_str(&alloc::format!(" {:>8} {:>3}", count(most), cpu));
        }
        let total: u64 = counts.iter().map(|(_, c)| c).sum();
        row.push_str(&alloc::format!(" {:>8}", count(total)));
        kprintln!("{row}");
    }
    kprintln!("stray interrupts: {}", stray_count());
    let s = crate::console::rx::stats();
    let (lines, line_bytes) = super::lines_read();
    kprintln!(
        "console rx: irq {}, {} bytes received, {} dropped (ring full), {} read, {} queued \
         (ring {} bytes)",
        s.irq,
        s.bytes,
        s.dropped,
        s.consumed,
        s.queued,
        s.ring_size
    );
    kprintln!(
        "monitor: {lines} lines read ({line_bytes} bytes), {} Ctrl-C cancels",
        s.cancels
    );
    Ok(())
}

const LEVEL_NAMES: [&str; NLEVELS] = ["CLOCK", "BIO", "NET", "SERIAL"];

fn softints(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: softint".into());
    }
    kprintln!("LEVEL   IPL            CPU  SCHEDULED        RUN");
    for (level, name) in LEVEL_NAMES.iter().enumerate() {
        for ci in cpus() {
            let (scheduled, run) = softint::counters(ci.index(), level);
            kprintln!(
                "{:<7} {:<14} {:>3} {:>10} {:>10}",
                name,
                softint::level_ipl(level).name(),
                ci.index(),
                count(scheduled),
                count(run)
            );
        }
    }
    kprintln!("");
    let list = softint::established();
    kprintln!("SLOT LEVEL   FLAGS          HANDLER");
    for s in &list {
        let mut flags = String::new();
        if s.flags & SOFTINT_MPSAFE != 0 {
            flags.push_str("MPSAFE ");
        }
        if s.flags & SOFTINT_RCPU != 0 {
            flags.push_str("RCPU ");
        }
        if s.dying {
            flags.push_str("dying");
        }
        if flags.is_empty() {
            flags.push('-');
        }
        kprintln!(
            "{:>4} {:<7} {:<14} {:#x}",
            s.index,
            LEVEL_NAMES[s.level.min(NLEVELS - 1)],
            flags.trim_end(),
            s.func
        );
    }
    kprintln!("{} established of {}", list.len(), softint::MAX_SOFTINTS);
    Ok(())
}

fn wq(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: wq".into());
    }
    let list = workqueue_list();
    kprintln!("NAME             FLAGS          PRI IPL        QUEUES PENDING ENQUEUED      RUN");
    for w in &list {
        let mut flags = String::new();
        for (bit, name) in [
            (WQ_MPSAFE, "MPSAFE"),
            (WQ_PERCPU, "PERCPU"),
            (WQ_FPU, "FPU"),
        ] {
            if w.flags & bit != 0 {
                if !flags.is_empty() {
                    flags.push(',');
                }
                flags.push_str(name);
            }
        }
        if flags.is_empty() {
            flags.push('-');
        }
        let mut name = String::from(w.name);
        name.truncate(16);
        kprintln!(
            "{:<16} {:<14} {:>3} {:<10} {:>6} {:>7} {:>8} {:>8}",
            name,
            flags,
            w.prio,
            w.ipl.name(),
            w.queues,
            w.pending,
            count(w.enqueued),
            count(w.ran)
        );
    }
    kprintln!("{} work queues", list.len());
    Ok(())
}
