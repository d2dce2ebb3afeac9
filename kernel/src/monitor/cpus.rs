//! `cpus` (one row per attached CPU) and `spl` (the levels, and each CPU's level now).

use super::units::{count, percent};
use super::{CmdResult, Command};
use crate::cpu::{CpuState, cpus as all_cpus};
use crate::kprintln;
use crate::sched::lwp_list;
use crate::spl::{Ipl, NIPL};
use alloc::string::String;
use core::sync::atomic::Ordering;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "cpus",
        args: "",
        summary: "one row per CPU: state, IPL, thread, counters",
        detail: "One row per CPU the kernel attached. INTR: hardware interrupts taken; TICKS: \
                 clock ticks (at HZ per second); IPIS: inter-processor interrupts received; \
                 CSW: context switches; IDLE: share of ticks taken while the idle thread ran.",
        run: cpus,
    },
    Command {
        name: "spl",
        args: "",
        summary: "the IPLs; each CPU's level and deferred work",
        detail: "",
        run: spl,
    },
];

/// The name of the thread at `addr` (`-` when none, `?` when it is not in the thread list).
fn thread_name(threads: &[crate::sched::LwpInfo], addr: u64) -> String {
    if addr == 0 {
        return "-".into();
    }
    threads
        .iter()
        .find(|t| t.addr as u64 == addr)
        .map_or_else(|| "?".into(), |t| t.name.clone())
}

/// An IPL without its `IPL_` prefix (table width).
fn short_ipl(ipl: Ipl) -> &'static str {
    ipl.name().trim_start_matches("IPL_")
}

fn cpus(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: cpus".into());
    }
    let threads = lwp_list();
    kprintln!("CPU STATE    MPIDR    IPL THREAD           INTR  TICKS   IPIS    CSW IDLE");
    let mut online = 0;
    let mut attached = 0;
    for ci in all_cpus() {
        attached += 1;
        let state = ci.state();
        if state == CpuState::Online {
            online += 1;
        }
        let ticks = ci.tick_count.load(Ordering::Relaxed);
        let ipis: u64 = ci.ipi_count.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let mut name = thread_name(&threads, ci.curlwp.load(Ordering::Relaxed));
        name.truncate(15);
        kprintln!(
            "{:>3} {:<8} {:<8} {:>3} {:<15} {:>6} {:>6} {:>6} {:>6} {:>4}",
            ci.index(),
            state.name(),
            alloc::format!("{:#x}", ci.mpidr()),
            ci.ipl.load(Ordering::Relaxed),
            name,
            count(ci.intr_count.load(Ordering::Relaxed)),
            count(ticks),
            count(ipis),
            count(ci.ctxsw_count.load(Ordering::Relaxed)),
            percent(ci.idle_ticks.load(Ordering::Relaxed), ticks),
        );
    }
    kprintln!(
        "{online} of {attached} CPUs online; IPL as a number (spl lists them); HZ {}",
        crate::clock::hz()
    );
    Ok(())
}

fn spl(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: spl".into());
    }
    kprintln!("IPL  NAME            ALIASES");
    const ALIASES: [&str; NIPL] = [
        "spl0",
        "splsoftclock",
        "splsoftbio",
        "splsoftnet",
        "splsoftserial",
        "splvm: IPL_BIO IPL_NET IPL_TTY (splbio splnet spltty)",
        "splsched: IPL_CLOCK IPL_STATCLOCK IPL_AUDIO (splclock splstatclock)",
        "splhigh: IPL_SERIAL IPL_LOCK (splserial spllock)",
    ];
    for (n, aliases) in ALIASES.iter().enumerate() {
        let ipl = Ipl::from_u8(n as u8).expect("0..NIPL");
        kprintln!("{n:>3}  {:<15} {aliases}", ipl.name());
    }
    kprintln!("");
    kprintln!("CPU IPL        DEFERRED (levels with work waiting)");
    for ci in all_cpus().filter(|ci| ci.is_online()) {
        let pending = ci.ipending.load(Ordering::Relaxed) & crate::spl::PENDING_LEVELS;
        let mut levels = String::new();
        for n in 0..NIPL {
            if pending & (1 << n) != 0 {
                if !levels.is_empty() {
                    levels.push(' ');
                }
                levels.push_str(short_ipl(Ipl::from_u8(n as u8).expect("0..NIPL")));
            }
        }
        if levels.is_empty() {
            levels.push('-');
        }
        kprintln!(
            "{:>3} {:<10} {levels}",
            ci.index(),
            short_ipl(Ipl::from_word(ci.ipl.load(Ordering::Relaxed)))
        );
    }
    Ok(())
}
