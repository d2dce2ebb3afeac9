//! `ps`: every thread, with its state, wait channel, priority, class, CPU, binding and CPU
//! time.

use super::units::duration_ns;
use super::{CmdResult, Command};
use crate::kprintln;
use crate::sched::lwp_list;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "ps",
    args: "",
    summary: "threads: state, wait channel, priority, CPU",
    detail: "WCHAN is the address of the sleep queue a sleeping thread waits on. PRI is the \
             current priority (0-223, higher runs first; idle threads show -). TIME is CPU \
             time, counted in clock ticks.",
    run: ps,
}];

fn ps(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: ps".into());
    }
    let mut threads = lwp_list();
    threads.sort_by_key(|t| t.id);
    let tick_ns = 1_000_000_000 / crate::clock::hz().max(1);
    kprintln!("  ID NAME                 STATE  WCHAN        PRI CLASS  CPU BIND      TIME");
    for t in &threads {
        let mut name = t.name.clone();
        name.truncate(20);
        let wchan = if t.wchan == 0 {
            "-".into()
        } else {
            alloc::format!("{:#x}", t.wchan)
        };
        let pri = if t.class == crate::sched::lwp::SchedClass::IdleLoop {
            "-".into()
        } else {
            alloc::format!("{}", t.pri)
        };
        let bind = t
            .bound
            .map_or_else(|| "-".into(), |c| alloc::format!("cpu{c}"));
        kprintln!(
            "{:>4} {:<20} {:<6} {:<12} {:>3} {:<5} {:>4} {:<5} {:>8}",
            t.id,
            name,
            t.state.name(),
            wchan,
            pri,
            t.class.name(),
            t.cpu,
            bind,
            duration_ns(t.run_ticks * tick_ns),
        );
    }
    kprintln!("{} threads", threads.len());
    Ok(())
}
