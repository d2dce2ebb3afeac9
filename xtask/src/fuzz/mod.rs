//! `cargo xtask fuzz dtb|kvm`: the project's own structure-aware fuzzers, run for as long as
//! asked. The same fuzzers run for a bounded number of inputs in the host tests (so in
//! `cargo xtask test`), each printing its seed:
//!
//! - [`dtb`]: device trees (QEMU's virt trees for GICv2/v3 and several CPU counts, a Pi 4
//!   shaped tree and the cached Debian Pi 4 tree when `cargo xtask sdcard` fetched it, and trees
//!   built in code), mutated token by token, through the kernel's reader;
//! - `kvm` (`kvm::fuzz`): kernel ELFs and cores, mutated in their structures (symbols,
//!   program headers, the exported variables in the core) and as bytes, through the reader;
//!   the synthetic kernels of `kvm::fixture`, and a real ELF and core given with `--kernel`
//!   and `--core` (`target/kvm-selftest/pages.core` and the test image after a `cargo xtask
//!   test`).
//!
//! Every input must give a result or a named error: a panic stops the run (the panic hook
//! prints the seed and input number that replay it, and for a tree writes the tree to
//! `target/fuzz/`), and an input whose answer breaks an invariant the reader promises ("never
//! believed when absurd") is reported the same way. The slowest input is reported, never
//! judged: timings stay out of the tests.

pub mod dtb;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::workspace::Workspace;

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

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// A seed from the clock, for runs that were not given one.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Which fuzzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Device trees through `kernel::devtree`.
    Dtb,
    /// Kernel ELFs and cores through `kernel::kvm`.
    Kvm,
}

/// Flags of `cargo xtask fuzz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzArgs {
    /// Which fuzzer.
    pub target: Target,
    /// Run for this long (default 60 s unless `iterations` is given).
    pub seconds: Option<u64>,
    /// Run exactly this many inputs.
    pub iterations: Option<u64>,
    /// The seed (default: from the clock).
    pub seed: Option<u64>,
    /// kvm: a real kernel ELF to add to the synthetic cases (with `core`).
    pub kernel: Option<PathBuf>,
    /// kvm: a core of that kernel.
    pub core: Option<PathBuf>,
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// At most this many inputs.
    pub iterations: Option<u64>,
    /// Until this moment.
    pub deadline: Option<Instant>,
}

impl Budget {
    /// Exactly `n` inputs.
    #[cfg(test)]
    pub fn inputs(n: u64) -> Self {
        Self {
            iterations: Some(n),
            deadline: None,
        }
    }

    /// Whether input `i` (counted from 0) is still inside the budget.
    pub fn allows(&self, i: u64) -> bool {
        self.iterations.is_none_or(|n| i < n) && self.deadline.is_none_or(|d| Instant::now() < d)
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub iterations: u64,
    /// Inputs the reader accepted (every invariant held).
    pub ok: u64,
    /// Inputs refused with an error.
    pub errors: u64,
    /// Inputs that panicked or broke an invariant: (input number, message).
    pub failures: Vec<(u64, String)>,
    /// The slowest input: (input number, time).
    pub slowest: (u64, Duration),
    /// Inputs refused, per kind of error.
    pub refusals: std::collections::BTreeMap<String, u64>,
}

impl Report {
    /// Records one input's outcome and time.
    pub fn record(&mut self, i: u64, outcome: std::thread::Result<Outcome>, time: Duration) {
        self.iterations += 1;
        if time > self.slowest.1 {
            self.slowest = (i, time);
        }
        match outcome {
            Ok(Outcome::Accepted) => self.ok += 1,
            Ok(Outcome::Refused(why)) => {
                self.errors += 1;
                let key: String = why
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                *self.refusals.entry(key).or_default() += 1;
            }
            Ok(Outcome::Believed(why)) => self.failures.push((i, format!("believed: {why}"))),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "non-string panic".into());
                self.failures.push((i, format!("panicked: {message}")));
            }
        }
    }

    /// One summary line.
    pub fn summary(&self, what: &str, seed: u64, elapsed: Duration) -> String {
        format!(
            "{what} fuzz: seed {seed:#x}: {} inputs in {:.1} s, {} accepted, {} refused, {} \
             failures; slowest input #{} took {:.1} ms",
            self.iterations,
            elapsed.as_secs_f64(),
            self.ok,
            self.errors,
            self.failures.len(),
            self.slowest.0,
            self.slowest.1.as_secs_f64() * 1e3
        )
    }
}

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read completely; every invariant held.
    Accepted,
    /// Refused with an error of this kind.
    Refused(String),
    /// Accepted, but the answer breaks an invariant (the reader believed something absurd).
    Believed(String),
}

/// The input being tried, for the panic hook of `cargo xtask fuzz` (which cannot unwind: the
/// xtask binary is built with `panic = "abort"`).
static CURRENT: Mutex<Option<(u64, Vec<u8>)>> = Mutex::new(None);

/// Records the input about to be tried (`cargo xtask fuzz` only; tests catch the panic).
pub fn note_input(i: u64, bytes: Option<&[u8]>) {
    if let Ok(mut current) = CURRENT.lock() {
        *current = Some((i, bytes.map(<[u8]>::to_vec).unwrap_or_default()));
    }
}

/// `cargo xtask fuzz`.
pub fn run(ws: &Workspace, args: &FuzzArgs) -> Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let seconds = match (args.seconds, args.iterations) {
        (None, None) => Some(60),
        (s, _) => s,
    };
    let budget = Budget {
        iterations: args.iterations,
        deadline: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
    };
    let name = match args.target {
        Target::Dtb => "dtb",
        Target::Kvm => "kvm",
    };
    let crash_dir = ws.target_dir.join("fuzz");
    std::fs::create_dir_all(&crash_dir).with_context(|| crash_dir.display().to_string())?;
    eprintln!(
        "xtask: fuzz {name}: seed {seed:#x}, {}",
        match (seconds, args.iterations) {
            (Some(s), Some(n)) => format!("{s} s or {n} inputs"),
            (Some(s), None) => format!("{s} s"),
            (None, n) => format!("{} inputs", n.unwrap_or(0)),
        }
    );
    let hook_dir = crash_dir.clone();
    std::panic::set_hook(Box::new(move |info| {
        let current = CURRENT.lock().ok().and_then(|c| c.clone());
        eprintln!("xtask: fuzz {name}: {info}");
        if let Some((i, bytes)) = current {
            eprintln!(
                "xtask: fuzz {name}: input #{i} of seed {seed:#x} panicked; replay: cargo xtask \
                 fuzz {name} --seed {seed:#x} --iterations {}",
                i + 1
            );
            if !bytes.is_empty() {
                let path = hook_dir.join(format!("{name}-{seed:x}-{i}.bin"));
                if std::fs::write(&path, &bytes).is_ok() {
                    eprintln!("xtask: fuzz {name}: the input is in {}", path.display());
                }
            }
        }
    }));
    let start = Instant::now();
    let report = match args.target {
        Target::Dtb => {
            let seeds = dtb::seeds(ws);
            let names: Vec<&str> = seeds.iter().map(|s| s.name.as_str()).collect();
            eprintln!("xtask: fuzz dtb: seeds {}", names.join(", "));
            dtb::run(&seeds, budget, seed, Some(&crash_dir))
        }
        Target::Kvm => {
            let mut cases = crate::kvm::fuzz::synthetic_cases();
            match (&args.kernel, &args.core) {
                (Some(k), Some(c)) => {
                    let elf = std::fs::read(k).with_context(|| k.display().to_string())?;
                    let core = std::fs::read(c).with_context(|| c.display().to_string())?;
                    cases.push((elf, core));
                    eprintln!(
                        "xtask: fuzz kvm: the synthetic kernels and {} with {}",
                        k.display(),
                        c.display()
                    );
                }
                (None, None) => eprintln!("xtask: fuzz kvm: the synthetic kernels"),
                _ => return Err(Error::new("--kernel and --core go together")),
            }
            crate::kvm::fuzz::run(&mut cases, budget, seed, true)
        }
    };
    let _ = std::panic::take_hook();
    println!("{}", report.summary(name, seed, start.elapsed()));
    let mut kinds: Vec<(&String, &u64)> = report.refusals.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, n) in kinds.iter().take(16) {
        eprintln!("xtask: fuzz {name}: {n:>9} refused: {kind}");
    }
    match report.failures.first() {
        None => Ok(ExitCode::SUCCESS),
        Some((i, message)) => Err(Error::new(format!(
            "input #{i} {message} (replay: cargo xtask fuzz {name} --seed {seed:#x} \
             --iterations {})",
            i + 1
        ))),
    }
}
