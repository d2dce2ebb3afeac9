//! The benchmark image: measures and prints one `metric=` line per figure in the format of
//! docs/bench-format (xtask adds the board, GIC and mode fields), then leaves QEMU with
//! status 0. Benchmarks never judge their figures; people and scripts compare them.
//!
//! Run under `-icount shift=0,align=off,sleep=off`, where the virtual counter advances with
//! guest instructions, so every figure is the same on every run and every host.

use crate::clock::counter_to_ns;
use crate::kprintln;

/// Summary of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// Median sample.
    pub median: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
    /// Number of samples.
    pub n: usize,
}

/// Median, minimum and maximum of `samples` (sorted in place).
pub fn figures(samples: &mut [u64]) -> Figures {
    samples.sort_unstable();
    let n = samples.len();
    Figures {
        median: if n == 0 { 0 } else { samples[n / 2] },
        min: samples.first().copied().unwrap_or(0),
        max: samples.last().copied().unwrap_or(0),
        n,
    }
}

/// Prints one metric line.
pub fn report(metric: &str, unit: &str, f: Figures) {
    kprintln!(
        "metric={metric} smp={} unit={unit} median={} min={} max={} n={}",
        crate::cpu::ncpu_online(),
        f.median,
        f.min,
        f.max,
        f.n
    );
}

/// Prints one metric line whose samples are in hundredths of `unit` (two decimals).
pub fn report_hundredths(metric: &str, unit: &str, f: Figures) {
    let h = |v: u64| Hundredths(v);
    kprintln!(
        "metric={metric} smp={} unit={unit} median={} min={} max={} n={}",
        crate::cpu::ncpu_online(),
        h(f.median),
        h(f.min),
        h(f.max),
        f.n
    );
}

struct Hundredths(u64);

impl core::fmt::Display for Hundredths {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Samples per latency figure, and warm-up rounds before them.
const SAMPLES: usize = 1000;
const WARMUP: usize = 100;

mod blk;
mod boot;
mod devtree;
mod pingpong;
mod softint;
mod workqueue;
mod xcall;

/// Measures `op` in batches of `batch` calls and returns per-call figures in hundredths of a
/// virtual nanosecond, with the cost of an empty loop of the same shape subtracted. Under
/// `-icount shift=0` a virtual nanosecond is one guest instruction.
fn per_call_hundredths(batch: u64, mut op: impl FnMut()) -> Figures {
    let mut run = |with_op: bool| {
        let t0 = crate::arch::aarch64::counter();
        for _ in 0..batch {
            // An empty asm statement keeps both loops from being optimised away or merged.
            // SAFETY: it contains no instructions.
            unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
            if with_op {
                op();
            }
        }
        counter_to_ns(crate::arch::aarch64::counter() - t0)
    };
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let empty = run(false);
        let full = run(true);
        if i >= WARMUP {
            samples.push(full.saturating_sub(empty) * 100 / batch);
        }
    }
    figures(&mut samples)
}

/// `spl_raise_restore`: one `splraise(IPL_VM)` + `splx(s)` pair with nothing pending.
fn spl_raise_restore() {
    use crate::spl::{IPL_VM, splraise, splx};
    let f = per_call_hundredths(1000, || {
        let s = splraise(IPL_VM);
        splx(s);
    });
    report_hundredths("spl_raise_restore", "insns", f);
}

/// `trace_event_cost`: one `trace::event!` of an enabled class (the patched `b`, the arguments,
/// the call of the record routine and the record), on a ring no one reads. Tracing is off again afterwards and the ring emptied.
fn trace_event_cost() {
    use crate::trace::{Class, Kind};
    crate::trace_control::set_mask(1 << Class::Thread as u32);
    let f = per_call_hundredths(1000, || {
        crate::trace::event!(Kind::ThreadExit, 1, 2);
    });
    crate::trace_control::set_mask(0);
    crate::trace::clear_this_cpu();
    report_hundredths("trace_event_cost", "insns", f);
}

/// `mutex_uncontended`: `mutex_enter` + `mutex_exit` of a free adaptive mutex.
fn mutex_uncontended() {
    static M: crate::sync::mutex::KMutex = crate::sync::mutex::KMutex::adaptive();
    let f = per_call_hundredths(1000, || {
        M.mutex_enter();
        M.mutex_exit();
    });
    report_hundredths("mutex_uncontended", "insns", f);
}

fn empty_thread(_: usize) {}

/// `kthread_create_join`: create a KTHREAD_MUSTJOIN thread of an empty function and join it.
fn kthread_create_join() {
    use crate::kthread::*;
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t0 = crate::arch::aarch64::counter();
        let mut l = None;
        kthread_create(
            PRI_NONE,
            KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
            None,
            empty_thread,
            0,
            Some(&mut l),
            format_args!("bench"),
        )
        .expect("kthread_create");
        kthread_join(l.expect("newlp"));
        let t = counter_to_ns(crate::arch::aarch64::counter() - t0);
        if i >= WARMUP {
            samples.push(t * 100);
        }
    }
    report_hundredths("kthread_create_join", "insns", figures(&mut samples));
}

static SWITCH_SAMPLES: crate::sync::SpinLock<alloc::vec::Vec<u64>> =
    crate::sync::SpinLock::new(alloc::vec::Vec::new());
static PING_DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Switches per sample: each of the 50 yields of the measuring thread is two switches.
const SWITCHES_PER_SAMPLE: u64 = 100;

fn ping(_: usize) {
    use crate::arch::aarch64::pmu;
    // Retired instructions where the PMU counts them (QEMU's precise icount: exact, where the
    // counter's 62.5 MHz steps are 16 instructions, 0.16 per switch here); else the counter.
    // The thread is bound, so both reads are of this CPU's PMU.
    let exact = pmu::start_inst_retired();
    let now = || {
        if exact {
            u64::from(pmu::inst_retired())
        } else {
            counter_to_ns(crate::arch::aarch64::counter())
        }
    };
    for i in 0..WARMUP + SAMPLES {
        let t0 = now();
        for _ in 0..SWITCHES_PER_SAMPLE / 2 {
            crate::sched::yield_now();
        }
        let t = (now().wrapping_sub(t0)) & if exact { u64::from(u32::MAX) } else { u64::MAX };
        if i >= WARMUP {
            SWITCH_SAMPLES.lock().push(t * 100 / SWITCHES_PER_SAMPLE);
        }
    }
    PING_DONE.store(true, core::sync::atomic::Ordering::Release);
}

fn pong(_: usize) {
    while !PING_DONE.load(core::sync::atomic::Ordering::Acquire) {
        crate::sched::yield_now();
    }
}

/// `ctx_switch`: two threads bound to one CPU at the same priority hand the CPU to each other
/// with `yield_now`; one sample is the instructions per switch over 100 switches, counted by
/// the PMU (exact) where it counts them.
fn ctx_switch() {
    use crate::kthread::*;
    let cpu = crate::cpu::ncpu_online() - 1;
    let mut a = None;
    let mut b = None;
    let flags = KTHREAD_MPSAFE | KTHREAD_MUSTJOIN | KTHREAD_IDLE;
    kthread_create(
        150,
        flags,
        Some(cpu),
        ping,
        0,
        Some(&mut a),
        format_args!("ping"),
    )
    .expect("kthread_create");
    kthread_create(
        150,
        flags,
        Some(cpu),
        pong,
        0,
        Some(&mut b),
        format_args!("pong"),
    )
    .expect("kthread_create");
    // Both must exist before either runs, or the first would yield to nobody.
    crate::sched::kpreempt_disable();
    kthread_start(b.expect("b"));
    kthread_start(a.expect("a"));
    crate::sched::kpreempt_enable();
    kthread_join(a.expect("a"));
    kthread_join(b.expect("b"));
    let mut samples = core::mem::take(&mut *SWITCH_SAMPLES.lock());
    report_hundredths("ctx_switch", "insns", figures(&mut samples));
}

/// Runs every benchmark and exits. Boot CPU, after all CPUs are up.
pub fn run_all() -> ! {
    // Boot is measured once per boot: QEMU starts the counter at 0, so the time at which the
    // last CPU came online is the figure. Under icount it is identical on every run.
    boot::boot();
    spl_raise_restore();
    trace_event_cost();
    mutex_uncontended();
    kthread_create_join();
    ctx_switch();
    pingpong::pingpong();
    softint::softint_local();
    softint::softint_intr();
    workqueue::latencies();
    workqueue::throughput();
    xcall::latencies();
    xcall::concurrent();
    devtree::devtree_parse();
    blk::run();
    crate::platform::platform().exit(0)
}
