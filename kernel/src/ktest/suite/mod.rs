//! The in-kernel test suites, one module per subject. Each test registers itself with
//! `ktest!`; nothing here needs to list them.

mod clock;
mod condvar;
mod cpu;
mod fault;
mod fpu;
mod harness;
mod heap;
mod ipi;
mod kthread;
mod kvm;
mod mmu;
mod mutex;
mod percpu;
mod races;
mod sched;
mod softint;
mod spl;
mod torture;
mod trace;
mod vioblk;
mod workqueue;
mod xcall;

/// A small deterministic generator (64-bit LCG, high bits) for stress tests: the seed is
/// printed so a failing run can be replayed with `ktest.seed=`.
pub struct Lcg(u64);

impl Lcg {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 31 pseudo-random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Spins for `ms` milliseconds of virtual time with IRQs as they are (a test holding a CPU).
pub fn spin_ms(ms: u64) {
    let end = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(ms);
    while crate::arch::aarch64::counter() < end {
        crate::arch::aarch64::cpu_relax();
    }
}

/// The seed for this run: `ktest.seed=` from the command line, else the counter.
pub fn seed() -> u64 {
    crate::bootinfo::bootarg("ktest.seed")
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(crate::arch::aarch64::counter)
}

/// Creates a KTHREAD_MUSTJOIN kernel thread running `func(arg)` for a test (named
/// `test/ARG`), with extra `flags`, priority `pri` (or `PRI_NONE`) and optional binding.
pub fn spawn_joinable(
    func: fn(usize),
    arg: usize,
    pri: i32,
    flags: u32,
    cpu: Option<usize>,
) -> crate::kthread::LwpRef {
    use crate::kthread::{KTHREAD_MUSTJOIN, kthread_create};
    let mut l = None;
    kthread_create(
        pri,
        flags | KTHREAD_MUSTJOIN,
        cpu,
        func,
        arg,
        Some(&mut l),
        format_args!("test/{arg}"),
    )
    .expect("kthread_create in a test");
    l.expect("kthread_create fills newlp")
}

/// Sleeps a clock tick at a time until `cond` holds or `timeout_ms` pass; returns whether it
/// held. Unlike [`wait_until`](crate::ktest::wait_until), which spins, this lets threads of
/// lower priority than the test run meanwhile, on a single CPU too.
pub fn sleep_until(timeout_ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(timeout_ms);
    loop {
        if cond() {
            return true;
        }
        if crate::arch::aarch64::counter() > deadline {
            return cond();
        }
        crate::kthread::kpause(1);
    }
}
