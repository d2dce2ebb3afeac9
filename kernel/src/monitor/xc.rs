//! `xc CPU|all [high|low]`: issues a cross call (xcall(9)) and prints its latency and where
//! the callback ran. `wq probe` lives here too: a work on every CPU through the monitor's
//! per-CPU work queue, with its latency.

use super::units::duration_ns;
use super::{CmdResult, Command, parse_cpu};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::cpu::{MAXCPUS, cpus, curcpu};
use crate::kprintln;
use crate::workqueue::{WQ_MPSAFE, WQ_PERCPU, Work, Workqueue, workqueue_create};
use crate::xcall::{XC_HIGHPRI, xc_broadcast, xc_unicast, xc_wait};
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

/// The commands of this group.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "xc",
        args: "CPU|all [high|low]",
        summary: "cross call a CPU or all; latency",
        detail: "low (default): the callback runs in the target's xcall thread; high: in a \
                 soft interrupt at IPL_SOFTSERIAL. The latency is from the call to the \
                 return of xc_wait.",
        run: xc,
    },
    Command {
        name: "wqprobe",
        args: "",
        summary: "a work on each CPU via the kdb work queue",
        detail: "Enqueues one work on each online CPU's queue of the `kdb` work queue \
                 (WQ_PERCPU) and waits for each; prints the latency per CPU. `wq` shows the \
                 queue's counters.",
        run: wqprobe,
    },
];

/// Per CPU: times the callback ran there during the current call (bit per CPU in `RAN_ON`).
static RAN_ON: AtomicU64 = AtomicU64::new(0);
static RUNS: AtomicU64 = AtomicU64::new(0);

fn callback(_: usize, _: usize) {
    RAN_ON.fetch_or(1 << curcpu().index(), Ordering::Relaxed);
    RUNS.fetch_add(1, Ordering::Relaxed);
}

fn cpu_list(mask: u64) -> String {
    let mut s = String::new();
    for c in 0..MAXCPUS {
        if mask & (1 << c) != 0 {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(&alloc::format!("cpu{c}"));
        }
    }
    if s.is_empty() { "nowhere".into() } else { s }
}

fn xc(args: &[&str]) -> CmdResult {
    let usage = || String::from("usage: xc CPU|all [high|low]");
    let (target, prio) = match args {
        [t] => (*t, "low"),
        [t, p] => (*t, *p),
        _ => return Err(usage()),
    };
    let flags = match prio {
        "low" => 0,
        "high" => XC_HIGHPRI,
        _ => return Err(usage()),
    };
    RAN_ON.store(0, Ordering::Relaxed);
    RUNS.store(0, Ordering::Relaxed);
    let (what, t0, t1) = if target == "all" {
        let t0 = counter();
        let ticket = xc_broadcast(flags, callback, 0, 0);
        xc_wait(ticket);
        ("broadcast".into(), t0, counter())
    } else {
        let cpu = parse_cpu(target)?;
        let t0 = counter();
        let ticket = xc_unicast(flags, callback, 0, 0, cpu);
        xc_wait(ticket);
        (alloc::format!("unicast to cpu{cpu}"), t0, counter())
    };
    kprintln!(
        "xc {what} ({prio}): {} callbacks, on {}; latency {}",
        RUNS.load(Ordering::Relaxed),
        cpu_list(RAN_ON.load(Ordering::Relaxed)),
        duration_ns(counter_to_ns(t1 - t0))
    );
    Ok(())
}

/// The monitor's work queue, made by the first `wqprobe`.
static PROBE_WQ: spin::Once<Workqueue> = spin::Once::new();
static PROBE_WORKS: [Work; MAXCPUS] = [const { Work::new("kdb probe") }; MAXCPUS];
/// Per CPU: the CPU the probe work ran on + 1.
static PROBE_RAN: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

fn probe_work(wk: &'static Work, _: usize) {
    let i = PROBE_WORKS
        .iter()
        .position(|w| core::ptr::eq(w, wk))
        .expect("one of the probe works");
    PROBE_RAN[i].store(curcpu().index() as u64 + 1, Ordering::Relaxed);
}

fn wqprobe(args: &[&str]) -> CmdResult {
    if !args.is_empty() {
        return Err("usage: wqprobe".into());
    }
    let wq = match PROBE_WQ.get() {
        Some(wq) => wq,
        None => {
            let wq = workqueue_create(
                "kdb",
                probe_work,
                0,
                crate::sched::PRI_KTHREAD,
                crate::spl::IPL_NONE,
                WQ_MPSAFE | WQ_PERCPU,
            )
            .map_err(|e| alloc::format!("workqueue_create: {e:?}"))?;
            PROBE_WQ.call_once(|| wq)
        }
    };
    for ci in cpus().filter(|ci| ci.is_online()) {
        let c = ci.index();
        PROBE_RAN[c].store(0, Ordering::Relaxed);
        let t0 = counter();
        crate::workqueue::workqueue_enqueue(wq, &PROBE_WORKS[c], Some(c));
        crate::workqueue::workqueue_wait(wq, &PROBE_WORKS[c]);
        let t1 = counter();
        let ran = PROBE_RAN[c].load(Ordering::Relaxed);
        kprintln!(
            "wq kdb cpu{c}: work ran on {}; enqueue to done {}",
            if ran == 0 {
                "nowhere".into()
            } else {
                alloc::format!("cpu{}", ran - 1)
            },
            duration_ns(counter_to_ns(t1 - t0))
        );
    }
    Ok(())
}
