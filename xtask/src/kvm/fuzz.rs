//! Fuzzing the reader: kernel ELFs and cores, mutated (bytes flipped, words set to edge
//! values, truncated, spliced) or replaced by garbage, go through the whole host pipeline
//! (ELF parse, core parse, `Kvm::open`, `getmaxcpu`, `getpcpu` for every CPU,
//! `dpcpu_setcpu`, `nlist`, DPCPU reads). Every result must be `Ok` or `Err`; a panic is
//! caught (`catch_unwind`, which needs the unwinding test harness) and reported with the
//! iteration and seed that replay it.
//!
//! The host test `fuzz_synthetic` runs [`DEFAULT_ITERATIONS`] inputs made from the synthetic
//! kernel of [`fixture`](super::fixture) in a few seconds; `cargo xtask test` then runs
//! `fuzz_real_artifacts` on the ELF of the test image and the pages of a real core.
//! Longer runs: `KVM_FUZZ_ITERS=5000000 KVM_FUZZ_SEED=0x1234 cargo test -p xtask --release
//! fuzz_synthetic -- --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use kernel::kvm::{Kvm, symbols};

use super::elf::KernelElf;
use super::elfcore::Core;
use super::{HostSource, fixture};

/// Inputs per run unless `KVM_FUZZ_ITERS` says otherwise.
pub const DEFAULT_ITERATIONS: u64 = 100_000;

/// xorshift64* (deterministic from the seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Starts from `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Values that break arithmetic: zero, all ones, sign bits, near-limits.
const EDGE_U64: &[u64] = &[
    0,
    1,
    u64::MAX,
    u64::MAX - 7,
    0x8000_0000_0000_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x4000_0000,
    4096,
    17,
];

/// A position to mutate: anywhere, or (two times in three) in the first 4 KiB or the last
/// 64 KiB, where headers, section tables and symbol tables are (a kernel ELF is mostly debug
/// information the reader never looks at).
fn position(rng: &mut Rng, len: usize) -> usize {
    match rng.below(3) {
        0 => rng.below(len),
        1 => rng.below(len.min(4096)),
        _ => len - 1 - rng.below(len.min(65536)),
    }
}

/// A mutated view of one base input: changed bytes are put back by [`Mutation::undo`], so a
/// large base is never copied.
struct Mutation {
    undo: Vec<(usize, u8)>,
    len: usize,
}

impl Mutation {
    fn apply(rng: &mut Rng, buf: &mut [u8]) -> Self {
        let mut undo = Vec::new();
        let set = |undo: &mut Vec<(usize, u8)>, buf: &mut [u8], at: usize, b: u8| {
            if at < buf.len() {
                undo.push((at, buf[at]));
                buf[at] = b;
            }
        };
        let mut len = buf.len();
        for _ in 0..1 + rng.below(4) {
            if buf.is_empty() {
                break;
            }
            match rng.below(6) {
                0 => {
                    let at = position(rng, buf.len());
                    let b = buf[at] ^ (1 << rng.below(8));
                    set(&mut undo, buf, at, b);
                }
                1 => {
                    let at = position(rng, buf.len());
                    let b = rng.next_u64() as u8;
                    set(&mut undo, buf, at, b);
                }
                2 | 3 => {
                    // An aligned word (header fields, pointers, counts) set to an edge value.
                    let at = position(rng, buf.len()) & !7;
                    let value = EDGE_U64[rng.below(EDGE_U64.len())].to_le_bytes();
                    let width = [2usize, 4, 8][rng.below(3)];
                    for (k, b) in value.iter().take(width).enumerate() {
                        set(&mut undo, buf, at + k, *b);
                    }
                }
                4 => {
                    // Copy a run from elsewhere in the file.
                    let from = rng.below(buf.len());
                    let to = position(rng, buf.len());
                    for k in 0..1 + rng.below(64) {
                        if from + k < buf.len() {
                            let b = buf[from + k];
                            set(&mut undo, buf, to + k, b);
                        }
                    }
                }
                _ => len = rng.below(len + 1),
            }
        }
        Self { undo, len }
    }

    fn undo(self, buf: &mut [u8]) {
        for (at, b) in self.undo.into_iter().rev() {
            buf[at] = b;
        }
    }
}

/// Runs the whole reader on one ELF and core; `Ok` only if everything was read.
pub fn exercise(elf: &[u8], core: &[u8]) -> Result<(), String> {
    let elf = KernelElf::parse(elf)?;
    let memory = Core::parse(core)?;
    let mut kd = Kvm::open(HostSource { elf, memory }).map_err(|e| e.to_string())?;
    let mut first_error = None;
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    };
    let maxcpu = kd.getmaxcpu().map_err(|e| e.to_string())?;
    for cpu in 0..maxcpu.min(64) {
        note(
            kd.getpcpu(cpu as usize)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        if kd.dpcpu_setcpu(cpu).is_ok() {
            for name in [fixture::COUNTER, "KVM_SELFTEST_COUNTER"] {
                let _ = kd.read_dpcpu(name, cpu, 8);
            }
        }
    }
    note(
        kd.nlist(symbols::REQUIRED)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    if let Some(e) = first_error {
        if kd.geterr().is_empty() {
            return Err(format!("an error ({e}) left geterr() empty"));
        }
        return Err(e);
    }
    Ok(())
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub iterations: u64,
    /// Inputs read completely.
    pub ok: u64,
    /// Inputs refused with an error.
    pub errors: u64,
    /// Inputs that panicked: (iteration, message).
    pub panics: Vec<(u64, String)>,
}

/// Feeds `iterations` inputs derived from `cases` (kernel ELF, core) to [`exercise`].
pub fn run(cases: &mut [(Vec<u8>, Vec<u8>)], iterations: u64, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut garbage = Vec::new();
    for i in 0..iterations {
        let case = rng.below(cases.len());
        let (elf, core) = &mut cases[case];
        let kind = rng.below(10);
        let result = if kind == 0 {
            // Pure garbage in the place of one of the two.
            garbage.clear();
            let n = rng.below(4096);
            garbage.extend((0..n).map(|_| rng.next_u64() as u8));
            if rng.below(2) == 0 {
                garbage[..n.min(4)].copy_from_slice(&b"\x7fELF"[..n.min(4)]);
            }
            if rng.below(2) == 0 {
                catch_unwind(AssertUnwindSafe(|| exercise(&garbage, core)))
            } else {
                catch_unwind(AssertUnwindSafe(|| exercise(elf, &garbage)))
            }
        } else {
            let mutate_elf = kind <= 3;
            let target: &mut Vec<u8> = if mutate_elf { elf } else { core };
            let m = Mutation::apply(&mut rng, target);
            let len = m.len;
            let (elf, core) = &cases[case];
            let result = if mutate_elf {
                catch_unwind(AssertUnwindSafe(|| exercise(&elf[..len], core)))
            } else {
                catch_unwind(AssertUnwindSafe(|| exercise(elf, &core[..len])))
            };
            let (elf, core) = &mut cases[case];
            m.undo(if mutate_elf { elf } else { core });
            result
        };
        report.iterations += 1;
        match result {
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(_)) => report.errors += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "non-string panic".into());
                report.panics.push((i, message));
            }
        }
    }
    report
}

/// `KVM_FUZZ_ITERS` and `KVM_FUZZ_SEED` (hex), else the defaults (seed from the clock).
pub fn settings() -> (u64, u64) {
    let iterations = std::env::var("KVM_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seed = std::env::var("KVM_FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    (iterations, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(report: &Report, seed: u64, iterations: u64) {
        println!(
            "kvm fuzz: seed {seed:#x}: {} inputs, {} read, {} refused, {} panics",
            report.iterations,
            report.ok,
            report.errors,
            report.panics.len()
        );
        assert_eq!(report.iterations, iterations);
        if let Some((i, message)) = report.panics.first() {
            panic!(
                "input {i} panicked: {message} (replay: KVM_FUZZ_SEED={seed:#x} \
                 KVM_FUZZ_ITERS={})",
                i + 1
            );
        }
        assert!(
            report.errors > 0,
            "no input was refused: the mutations do nothing"
        );
    }

    #[test]
    fn unmutated_inputs_read_completely() {
        for ncpu in [1, 4, 16] {
            let s = fixture::synthetic(ncpu);
            assert_eq!(exercise(&s.elf, &s.core), Ok(()), "{ncpu} CPUs");
        }
    }

    #[test]
    fn fuzz_synthetic() {
        let (iterations, seed) = settings();
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = [1, 4, 16]
            .into_iter()
            .map(|n| {
                let s = fixture::synthetic(n);
                (s.elf, s.core)
            })
            .collect();
        let report = run(&mut cases, iterations, seed);
        check(&report, seed, iterations);
        assert!(
            report.ok > 0,
            "no input was read completely: the mutations break everything"
        );
    }

    /// Run by `cargo xtask test` after it took a real core: `KVM_FUZZ_ELF` (the test image)
    /// and `KVM_FUZZ_CORE` (the core's pages the reader needs).
    #[test]
    #[ignore = "needs a real kernel ELF and core; cargo xtask test runs it"]
    fn fuzz_real_artifacts() {
        let elf = std::fs::read(std::env::var("KVM_FUZZ_ELF").expect("KVM_FUZZ_ELF")).unwrap();
        let core = std::fs::read(std::env::var("KVM_FUZZ_CORE").expect("KVM_FUZZ_CORE")).unwrap();
        assert_eq!(exercise(&elf, &core), Ok(()), "the unmutated real core");
        let (iterations, seed) = settings();
        let report = run(&mut [(elf, core)], iterations, seed);
        check(&report, seed, iterations);
    }
}
