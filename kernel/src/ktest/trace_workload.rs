//! A traced workload whose content is known exactly: `n` soft interrupts run on one CPU, `m`
//! works, `k` cross calls to one CPU, each waited for before the next, with every trace class
//! on. Afterwards the trace read back (through the kvm reader, from the kernel itself, a core
//! or a live guest) must hold exactly those events, identified by the softint's handle, the
//! works' addresses and the calls' tickets ([`Expect::check`]). Used by the `trace` test suite,
//! the kvm end-to-end check (`kvm.selftest=1`) and `cargo xtask trace --run`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::ncpu;
use crate::kvm::trace::TraceDump;
use crate::sched::{kpreempt_disable, kpreempt_enable};
use crate::softint::{
    SOFTINT_MPSAFE, SOFTINT_RCPU, SOFTINT_SERIAL, softint_disestablish, softint_establish,
    softint_schedule_cpu,
};
use crate::spl::IPL_VM;
use crate::trace::{ALL_CLASSES, Kind};
use crate::workqueue::{WQ_MPSAFE, Work, workqueue_create, workqueue_enqueue, workqueue_wait};
use crate::xcall::{XC_HIGHPRI, xc_unicast, xc_wait};

/// Works in the pool the workload enqueues from (each enqueued again once it has run).
const POOL: usize = 4;
static WORKS: [Work; POOL] = [const { Work::new("trace-work") }; POOL];

static SOFTINTS_RUN: AtomicU64 = AtomicU64::new(0);
static WORKS_RUN: AtomicU64 = AtomicU64::new(0);
static CALLS_RUN: AtomicU64 = AtomicU64::new(0);

fn softint_handler(_: usize) {
    SOFTINTS_RUN.fetch_add(1, Ordering::Release);
}

fn work_handler(_: &'static Work, _: usize) {
    WORKS_RUN.fetch_add(1, Ordering::Release);
}

fn call_handler(_: usize, _: usize) {
    CALLS_RUN.fetch_add(1, Ordering::Release);
}

/// What the workload did: the identities its events carry, and their counts.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The CPU the soft interrupts were scheduled on.
    pub softint_cpu: u32,
    /// The softint handle's index (`a` of its events).
    pub softint_index: u64,
    /// Soft interrupts scheduled (and run).
    pub softints: usize,
    /// Work addresses.
    pub works: [u64; POOL],
    /// Works enqueued (and run).
    pub nworks: usize,
    /// The CPU the cross calls went to.
    pub call_cpu: u32,
    /// The calls' tickets.
    pub tickets: Vec<u64>,
}

/// Runs the workload: `n` softints on CPU 1 (CPU 0 on a one-CPU machine), `m` works, `k`
/// high-priority cross calls to the last CPU. Clears every ring first, enables every class,
/// and disables tracing again before it returns, so the rings stay as they are afterwards.
/// Context: thread, IPL_NONE.
pub fn run(n: usize, m: usize, k: usize) -> Expect {
    let softint_cpu = 1 % ncpu();
    let call_cpu = ncpu() - 1;
    let h = softint_establish(
        SOFTINT_SERIAL | SOFTINT_MPSAFE | SOFTINT_RCPU,
        softint_handler,
        0,
    )
    .expect("trace workload: softint table full");
    let wq = workqueue_create("trace-wq", work_handler, 0, 96, IPL_VM, WQ_MPSAFE)
        .expect("trace workload: workqueue_create");
    let mut tickets = Vec::with_capacity(k);

    SOFTINTS_RUN.store(0, Ordering::Relaxed);
    crate::trace_control::set_mask(0);
    crate::stats::trace_clear();
    crate::trace_control::set_mask(ALL_CLASSES);
    for i in 0..n as u64 {
        kpreempt_disable();
        softint_schedule_cpu(h, softint_cpu);
        kpreempt_enable();
        assert!(
            super::wait_until(2000, || SOFTINTS_RUN.load(Ordering::Acquire) > i),
            "trace workload: softint {i} never ran on cpu{softint_cpu}"
        );
    }
    for i in 0..m {
        let w = &WORKS[i % POOL];
        workqueue_enqueue(&wq, w, None);
        workqueue_wait(&wq, w);
    }
    for _ in 0..k {
        let t = xc_unicast(XC_HIGHPRI, call_handler, 0, 0, call_cpu);
        xc_wait(t);
        tickets.push(t);
    }
    crate::trace_control::set_mask(0);

    softint_disestablish(h);
    crate::workqueue::workqueue_destroy(wq);
    Expect {
        softint_cpu: softint_cpu as u32,
        softint_index: h.to_raw() & 0xffff_ffff,
        softints: n,
        works: core::array::from_fn(|i| &WORKS[i] as *const Work as u64),
        nworks: m,
        call_cpu: call_cpu as u32,
        tickets,
    }
}

/// `trace.run=NAME` (`cargo xtask trace --run NAME`): runs a named workload traced, checks
/// it through the in-kernel reader, prints `trace-run ready` and idles for good, the rings
/// left as the workload left them. `known`: 40 softints, 30 works, 20 cross calls; `stress`:
/// 400, 300, 200 (rings may wrap; the check then reports the lost records). Boot CPU.
pub fn run_named(name: &str) -> ! {
    let (n, m, k) = match name {
        "known" => (40, 30, 20),
        "stress" => (400, 300, 200),
        other => {
            crate::kprintln!("trace-run: unknown workload {other} (known, stress)");
            (0, 0, 0)
        }
    };
    crate::kprintln!("trace-run: {name}: {n} softints, {m} works, {k} cross calls");
    let expect = run(n, m, k);
    let checked =
        crate::kvm::Kvm::open(crate::kvm::local::LocalSource::new()).and_then(|mut kd| kd.trace());
    match checked {
        Ok(trace) => {
            let problems = expect.check(&trace);
            for p in &problems {
                crate::kprintln!("trace-run: {p}");
            }
            crate::kprintln!("trace-run: in-kernel check: {} problems", problems.len());
        }
        Err(e) => crate::kprintln!("trace-run: in-kernel reader: {e}"),
    }
    crate::kprintln!("trace-run ready");
    loop {
        crate::kthread::kpause(1000);
    }
}

impl Expect {
    /// Everything in `trace` that contradicts the workload: counts per kind and CPU of the
    /// workload's own events, lost records, timestamps and switch chains. Empty if none.
    pub fn check(&self, trace: &TraceDump) -> Vec<String> {
        let mut problems = trace.check_order();
        let mut want = |what: &str, got: usize, expected: usize| {
            if got != expected {
                problems.push(format!("{what}: {got} events, expected {expected}"));
            }
        };
        for c in &trace.cpus {
            want(&format!("cpu{} lost records", c.cpu), c.lost as usize, 0);
        }
        let si = self.softint_index;
        let is_work = |a: u64| self.works.contains(&a);
        let is_call = |a: u64| self.tickets.contains(&a);
        let total = |kind: Kind, f: &dyn Fn(u64) -> bool| -> usize {
            trace
                .cpus
                .iter()
                .map(|c| trace.count(c.cpu, kind, |a, _| f(a)))
                .sum()
        };
        let sched = total(Kind::SoftintSchedule, &|a| a == si);
        let work_enq = total(Kind::WorkEnqueue, &is_work);
        let work_run = total(Kind::WorkRun, &is_work);
        let work_done = total(Kind::WorkDone, &is_work);
        let issued = total(Kind::XcallIssue, &is_call);
        let done = total(Kind::XcallDone, &is_call);
        want(
            "softint_schedule of the workload's handle",
            sched,
            self.softints,
        );
        for c in &trace.cpus {
            let on_target = c.cpu == self.softint_cpu;
            let expect = if on_target { self.softints } else { 0 };
            for kind in [Kind::SoftintRun, Kind::SoftintDone] {
                let got = trace.count(c.cpu, kind, |a, _| a == si);
                want(&format!("cpu{} {}", c.cpu, kind.name()), got, expect);
            }
            let expect = if c.cpu == self.call_cpu {
                self.tickets.len()
            } else {
                0
            };
            for kind in [Kind::XcallRun, Kind::XcallRunDone] {
                let got = trace.count(c.cpu, kind, |a, _| is_call(a));
                want(&format!("cpu{} {}", c.cpu, kind.name()), got, expect);
            }
        }
        want("work_enqueue", work_enq, self.nworks);
        want("work_run", work_run, self.nworks);
        want("work_done", work_done, self.nworks);
        want("xcall_issue", issued, self.tickets.len());
        want("xcall_done", done, self.tickets.len());
        problems
    }
}
