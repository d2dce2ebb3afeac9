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
    crate::platform::platform().exit(0)
}
