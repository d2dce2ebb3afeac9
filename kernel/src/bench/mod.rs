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

/// Runs every benchmark and exits. Boot CPU, after all CPUs are up.
pub fn run_all() -> ! {
    // Boot is measured once per boot: QEMU starts the counter at 0, so the time at which the
    // last CPU came online is the figure. Under icount it is identical on every run.
    let online = counter_to_ns(crate::boot::all_online_at());
    report(
        "boot_all_cpus_online",
        "ns",
        Figures {
            median: online,
            min: online,
            max: online,
            n: 1,
        },
    );
    spl_raise_restore();
    crate::platform::platform().exit(0)
}
