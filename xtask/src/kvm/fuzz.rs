//! Fuzzing the reader: kernel ELFs and cores go through the whole host pipeline (ELF parse,
//! core parse, `Kvm::open`, `getmaxcpu`, `getpcpu` for every CPU, `dpcpu_setcpu`, `nlist`,
//! DPCPU reads, the trace rings). Two kinds of mutation:
//!
//! - structure-aware, on the fields the reader trusts: in the ELF, the value and size of each
//!   exported symbol (`kern_*`, `__dpcpu_*`, `dpcpu_entry_*`); in the core, the `PT_LOAD`
//!   headers (address, offset, size; the `PT_NOTE` turned into a `PT_LOAD` over another
//!   segment), `kern_maxcpus`, every entry of the CPU-pointer and DPCPU-offset arrays, and
//!   each `CpuInfo`'s `self`, `index` and `dpcpu_off`. Values are edge values, or values taken
//!   from a neighbouring field (another CPU's pointer or offset, the array length plus a few,
//!   `__dpcpu_start` for `__dpcpu_end`), which is how a dump contradicts itself;
//! - blind: bytes flipped, words set to edge values, runs copied, truncation, garbage.
//!
//! Every result must be `Ok` or `Err`: a panic is caught (`catch_unwind`, which needs the
//! unwinding test harness) and reported with the input number and seed that replay it. And an
//! input read completely must not have been believed when absurd: [`check_answers`] re-derives
//! from the ELF and the core directly what the reader promises (`kern_maxcpus` equal to the
//! arrays' length, DPCPU bounds ordered, every CPU's `dpcpu_off` equal to the table's, distinct
//! offsets, no overlapping segments).
//!
//! The host test `fuzz_synthetic` runs [`DEFAULT_ITERATIONS`] inputs made from the synthetic
//! kernel of [`fixture`](super::fixture) in a few seconds; `cargo xtask test` then runs
//! `fuzz_real_artifacts` on the ELF of the test image and the pages of a real core;
//! `cargo xtask fuzz kvm --seconds N` runs for as long as asked. Longer test runs:
//! `KVM_FUZZ_ITERS=5000000 KVM_FUZZ_SEED=0x1234 cargo test -p xtask --release fuzz_synthetic
//! -- --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use kernel::cpu::MAXCPUS;
use kernel::kvm::{Kvm, symbols};
use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol};

use super::elf::KernelElf;
use super::elfcore::Core;
use super::{HostSource, fixture};
use crate::fuzz::{Budget, Outcome, Report, Rng, note_input};

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

/// What a field holds, so that a mutation picks values that mean something there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A symbol's value (an address).
    SymValue,
    /// A symbol's size.
    SymSize,
    /// `__dpcpu_end`'s value.
    DpcpuEnd,
    /// A program header's address, offset or size.
    Phdr,
    /// The `PT_NOTE` header's type (becomes `PT_LOAD`).
    NoteType,
    /// `kern_maxcpus` (u32).
    MaxCpus,
    /// An entry of `kern_cpu_info_ptrs`.
    Ptr,
    /// An entry of `kern_dpcpu_off`.
    Off,
    /// A `CpuInfo`'s `self_addr`, `index` (u32) or `dpcpu_off`.
    CpuInfo,
}

/// A field: file offset, width in bytes, what it is.
#[derive(Debug, Clone, Copy)]
struct Spot {
    at: usize,
    width: usize,
    kind: Kind,
}

/// The fields of one (ELF, core) pair worth mutating, and a few of their values.
#[derive(Debug, Clone, Default)]
pub struct Spots {
    elf: Vec<Spot>,
    core: Vec<Spot>,
    /// Values of the pointer and offset arrays and the DPCPU start, to copy elsewhere.
    values: Vec<u64>,
    /// The arrays' length in entries.
    maxcpus: u32,
    /// `__dpcpu_start`.
    dpcpu_start: u64,
}

/// Finds the fields of `elf` and `core` (both must parse; otherwise there are none).
pub fn spots(elf: &[u8], core: &[u8]) -> Spots {
    let mut out = Spots::default();
    let Ok(file) = ElfFile64::<Endianness>::parse(elf) else {
        return out;
    };
    let symtab = file.section_by_name(".symtab").and_then(|s| s.file_range());
    let kernel = KernelElf::parse(elf).ok();
    if let Some((symtab_at, _)) = symtab {
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            if !symbols::embeddable(name) {
                continue;
            }
            let entry = symtab_at as usize + symbol.index().0 * 24;
            let value_kind = if name == symbols::DPCPU_END {
                Kind::DpcpuEnd
            } else {
                Kind::SymValue
            };
            out.elf.push(Spot {
                at: entry + 8,
                width: 8,
                kind: value_kind,
            });
            out.elf.push(Spot {
                at: entry + 16,
                width: 8,
                kind: Kind::SymSize,
            });
        }
    }
    let Ok(parsed) = Core::parse(core) else {
        return out;
    };
    // Program headers: p_type at +0, p_offset +8, p_paddr +24, p_filesz +32.
    if let Ok(header) = object::elf::FileHeader64::<Endianness>::parse(core)
        && let Ok(endian) = header.endian()
    {
        let phoff = header.e_phoff(endian) as usize;
        for i in 0..usize::from(header.e_phnum(endian)) {
            let ph = phoff + 56 * i;
            let p_type = core
                .get(ph..ph + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
            if p_type == Some(4) {
                // PT_NOTE
                out.core.push(Spot {
                    at: ph,
                    width: 4,
                    kind: Kind::NoteType,
                });
            }
            for field in [8, 24, 32] {
                out.core.push(Spot {
                    at: ph + field,
                    width: 8,
                    kind: Kind::Phdr,
                });
            }
        }
    }
    let Some(kernel) = kernel else { return out };
    let at = |addr: u64| parsed.file_offset(addr).map(|o| o as usize);
    if let Some(a) = kernel.symbol(symbols::MAXCPUS).and_then(at) {
        out.core.push(Spot {
            at: a,
            width: 4,
            kind: Kind::MaxCpus,
        });
    }
    let entries = kernel
        .symbol_size(symbols::CPU_INFO_PTRS)
        .filter(|&s| s > 0)
        .map_or(MAXCPUS as u64, |s| (s / 8).min(64));
    out.maxcpus = entries as u32;
    out.dpcpu_start = kernel.symbol(symbols::DPCPU_START).unwrap_or(0);
    out.values.push(out.dpcpu_start);
    for (array, kind) in [
        (symbols::CPU_INFO_PTRS, Kind::Ptr),
        (symbols::DPCPU_OFF, Kind::Off),
    ] {
        let Some(base) = kernel.symbol(array) else {
            continue;
        };
        for i in 0..entries {
            let Some(a) = at(base + 8 * i) else { continue };
            out.core.push(Spot {
                at: a,
                width: 8,
                kind,
            });
            let mut value = [0u8; 8];
            if parsed.read(base + 8 * i, &mut value).is_ok() {
                let value = u64::from_le_bytes(value);
                if value != 0 {
                    out.values.push(value);
                }
                // Each CpuInfo's self_addr (0), index (8) and dpcpu_off (40).
                if kind == Kind::Ptr && value != 0 {
                    for (field, width) in [(0, 8), (8, 4), (40, 8)] {
                        if let Some(a) = at(value + field) {
                            out.core.push(Spot {
                                at: a,
                                width,
                                kind: Kind::CpuInfo,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The value a structure-aware mutation writes into `spot`.
fn value_for(rng: &mut Rng, spot: Spot, spots: &Spots) -> u64 {
    let copied = || spots.values.first().copied().unwrap_or(0);
    let pick = |rng: &mut Rng| {
        if spots.values.is_empty() {
            copied()
        } else {
            spots.values[rng.below(spots.values.len())]
        }
    };
    match (spot.kind, rng.below(3)) {
        (Kind::MaxCpus, 0) => u64::from(spots.maxcpus) + rng.below(10) as u64,
        (Kind::MaxCpus, 1) => rng.below(spots.maxcpus as usize + 1) as u64,
        (Kind::DpcpuEnd, 0) => spots.dpcpu_start + rng.below(2) as u64,
        (Kind::NoteType, _) => 1, // PT_LOAD
        (Kind::SymSize, 0) => 1 << (4 + rng.below(20)),
        (Kind::Ptr | Kind::Off | Kind::CpuInfo | Kind::SymValue | Kind::Phdr, 0 | 1) => {
            pick(rng).wrapping_add([0, 0, 8, 64, 0x1000][rng.below(5)])
        }
        _ => EDGE_U64[rng.below(EDGE_U64.len())],
    }
}

/// A mutated view of one base input: changed bytes are put back by [`Mutation::undo`], so a
/// large base is never copied.
struct Mutation {
    undo: Vec<(usize, u8)>,
    len: usize,
}

/// A position to mutate blindly: anywhere, or (two times in three) in the first 4 KiB or the
/// last 64 KiB, where headers, section tables and symbol tables are (a kernel ELF is mostly
/// debug information the reader never looks at).
fn position(rng: &mut Rng, len: usize) -> usize {
    match rng.below(3) {
        0 => rng.below(len),
        1 => rng.below(len.min(4096)),
        _ => len - 1 - rng.below(len.min(65536)),
    }
}

impl Mutation {
    fn set(&mut self, buf: &mut [u8], at: usize, b: u8) {
        if at < buf.len() {
            self.undo.push((at, buf[at]));
            buf[at] = b;
        }
    }

    fn apply(rng: &mut Rng, buf: &mut [u8], spots: &[Spot], all: &Spots) -> Self {
        let mut m = Self {
            undo: Vec::new(),
            len: buf.len(),
        };
        for _ in 0..1 + rng.below(4) {
            if buf.is_empty() {
                break;
            }
            match rng.below(8) {
                // Structure-aware: a field the reader trusts.
                0..=3 if !spots.is_empty() => {
                    let spot = spots[rng.below(spots.len())];
                    let value = value_for(rng, spot, all).to_le_bytes();
                    for (k, b) in value.iter().take(spot.width).enumerate() {
                        m.set(buf, spot.at + k, *b);
                    }
                }
                0..=4 => {
                    let at = position(rng, buf.len());
                    let b = buf[at] ^ (1 << rng.below(8));
                    m.set(buf, at, b);
                }
                5 => {
                    // An aligned word (header fields, pointers, counts) set to an edge value.
                    let at = position(rng, buf.len()) & !7;
                    let value = EDGE_U64[rng.below(EDGE_U64.len())].to_le_bytes();
                    let width = [2usize, 4, 8][rng.below(3)];
                    for (k, b) in value.iter().take(width).enumerate() {
                        m.set(buf, at + k, *b);
                    }
                }
                6 => {
                    // Copy a run from elsewhere in the file.
                    let from = rng.below(buf.len());
                    let to = position(rng, buf.len());
                    for k in 0..1 + rng.below(64) {
                        if from + k < buf.len() {
                            let b = buf[from + k];
                            m.set(buf, to + k, b);
                        }
                    }
                }
                _ => m.len = rng.below(m.len + 1),
            }
        }
        m
    }

    fn undo(self, buf: &mut [u8]) {
        for (at, b) in self.undo.into_iter().rev() {
            buf[at] = b;
        }
    }
}

/// Reads `n` little-endian u64s at `addr` of the core, directly.
fn words(core: &Core<&[u8]>, addr: u64, n: u64) -> Option<Vec<u64>> {
    let mut bytes = vec![0u8; (8 * n) as usize];
    core.read(addr, &mut bytes).ok()?;
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// What the ELF says of the structures the reader reads, taken before the ELF goes to the
/// reader.
#[derive(Debug, Clone, Copy)]
pub struct ElfFacts {
    ptrs_size: Option<u64>,
    off_size: Option<u64>,
    off_addr: Option<u64>,
    dpcpu_start: Option<u64>,
    dpcpu_end: Option<u64>,
}

impl ElfFacts {
    /// The facts of `elf`.
    pub fn of(elf: &KernelElf) -> Self {
        Self {
            ptrs_size: elf.symbol_size(symbols::CPU_INFO_PTRS),
            off_size: elf.symbol_size(symbols::DPCPU_OFF),
            off_addr: elf.symbol(symbols::DPCPU_OFF),
            dpcpu_start: elf.symbol(symbols::DPCPU_START),
            dpcpu_end: elf.symbol(symbols::DPCPU_END),
        }
    }
}

/// What the reader promises about a pair it read completely, re-derived from the ELF's facts
/// and the core directly, without the reader; the first promise broken.
pub fn check_answers(
    elf: &ElfFacts,
    core: &Core<&[u8]>,
    maxcpu: u32,
    pcpus: &[(u32, kernel::cpu::CpuInfoSnapshot)],
    dpcpu_cpus: &[u32],
) -> Result<(), String> {
    let mut segments: Vec<_> = core.segments().iter().filter(|s| s.filesz > 0).collect();
    segments.sort_by_key(|s| s.paddr);
    if segments
        .windows(2)
        .any(|w| w[1].paddr < w[0].paddr + w[0].filesz)
    {
        return Err("overlapping segments were read".into());
    }
    for (array, size) in [
        (symbols::CPU_INFO_PTRS, elf.ptrs_size),
        (symbols::DPCPU_OFF, elf.off_size),
    ] {
        if let Some(size) = size.filter(|&s| s > 0)
            && size != 8 * u64::from(maxcpu)
        {
            return Err(format!("maxcpu {maxcpu} with {array} of {size} bytes"));
        }
    }
    let table = elf
        .off_addr
        .and_then(|a| words(core, a, maxcpu.into()))
        .ok_or("no offset table")?;
    for (cpu, snap) in pcpus {
        if table.get(*cpu as usize) != Some(&snap.dpcpu_off) || snap.index != *cpu {
            return Err(format!("CPU {cpu}: {snap:x?} against table {table:x?}"));
        }
    }
    if !dpcpu_cpus.is_empty() {
        let (start, end) = (elf.dpcpu_start.unwrap_or(0), elf.dpcpu_end.unwrap_or(0));
        if end <= start {
            return Err(format!("DPCPU bounds {start:#x}..{end:#x} believed"));
        }
        for &cpu in dpcpu_cpus {
            let off = table.get(cpu as usize).copied().unwrap_or(0);
            let shared = table
                .iter()
                .enumerate()
                .any(|(i, &o)| i != cpu as usize && o == off);
            if off == 0 || shared {
                return Err(format!("CPU {cpu}'s offset {off:#x} believed"));
            }
        }
    }
    Ok(())
}

/// Runs the whole reader on one ELF and core and judges the answers.
pub fn exercise(elf_bytes: &[u8], core_bytes: &[u8]) -> Outcome {
    let refused = |e: String| {
        // The kind: the message's first words, numbers left out.
        let kind: String = e
            .split(|c: char| c.is_ascii_digit() || c == '(' || c == ':')
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(48)
            .collect();
        Outcome::Refused(kind)
    };
    let elf = match KernelElf::parse(elf_bytes) {
        Ok(elf) => elf,
        Err(e) => return refused(e),
    };
    let memory = match Core::parse(core_bytes) {
        Ok(core) => core,
        Err(e) => return refused(e),
    };
    let check_core = match Core::parse(core_bytes) {
        Ok(core) => core,
        Err(e) => return refused(e),
    };
    let facts = ElfFacts::of(&elf);
    let mut kd = match Kvm::open(HostSource { elf, memory }) {
        Ok(kd) => kd,
        Err(e) => return refused(e.to_string()),
    };
    let maxcpu = match kd.getmaxcpu() {
        Ok(n) => n,
        Err(e) => return refused(e.to_string()),
    };
    let mut first_error = None;
    let mut pcpus = Vec::new();
    let mut dpcpu_cpus = Vec::new();
    for cpu in 0..maxcpu.min(64) {
        match kd.getpcpu(cpu as usize) {
            Ok(Some(snap)) => pcpus.push((cpu, snap)),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
        if kd.dpcpu_setcpu(cpu).is_ok() {
            dpcpu_cpus.push(cpu);
            for name in [fixture::COUNTER, "KVM_SELFTEST_COUNTER"] {
                let _ = kd.read_dpcpu(name, cpu, 8);
            }
        }
    }
    if let Err(e) = kd.nlist(symbols::REQUIRED) {
        first_error.get_or_insert(e.to_string());
    }
    if let Some(e) = first_error {
        if kd.geterr().is_empty() {
            return Outcome::Believed(format!("an error ({e}) left geterr() empty"));
        }
        return refused(e);
    }
    // The trace rings: whatever the bytes, an answer or an error, never a panic.
    let _ = kd.trace();
    match check_answers(&facts, &check_core, maxcpu, &pcpus, &dpcpu_cpus) {
        Ok(()) => Outcome::Accepted,
        Err(why) => Outcome::Believed(why),
    }
}

/// The synthetic cases: kernels with 1, 4, 16 and MAXCPUS CPUs.
pub fn synthetic_cases() -> Vec<(Vec<u8>, Vec<u8>)> {
    [1, 4, 16, MAXCPUS]
        .into_iter()
        .map(|n| {
            let s = fixture::synthetic(n);
            (s.elf, s.core)
        })
        .collect()
}

/// Feeds inputs derived from `cases` (kernel ELF, core) to [`exercise`] within `budget`;
/// `cli` records each input's number for the panic hook of `cargo xtask fuzz`.
pub fn run(cases: &mut [(Vec<u8>, Vec<u8>)], budget: Budget, seed: u64, cli: bool) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let spots: Vec<Spots> = cases.iter().map(|(e, c)| spots(e, c)).collect();
    let mut garbage = Vec::new();
    let mut i = 0;
    while budget.allows(i) {
        if cli {
            note_input(i, None);
        }
        let case = rng.below(cases.len());
        let kind = rng.below(10);
        let start = Instant::now();
        let result = if kind == 0 {
            // Pure garbage in the place of one of the two.
            let (elf, core) = &cases[case];
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
            let s = &spots[case];
            let (elf, core) = &mut cases[case];
            let (target, fields) = if mutate_elf {
                (elf, &s.elf)
            } else {
                (core, &s.core)
            };
            let m = Mutation::apply(&mut rng, target, fields, s);
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
        report.record(i, result, start.elapsed());
        i += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs per test run unless `KVM_FUZZ_ITERS` says otherwise.
    pub const DEFAULT_ITERATIONS: u64 = 100_000;

    /// `KVM_FUZZ_ITERS` and `KVM_FUZZ_SEED` (hex), else the defaults (seed from the clock).
    pub fn settings() -> (u64, u64) {
        let iterations = std::env::var("KVM_FUZZ_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_ITERATIONS);
        let seed = std::env::var("KVM_FUZZ_SEED")
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(crate::fuzz::clock_seed);
        (iterations, seed)
    }

    fn check(report: &Report, seed: u64, iterations: u64, elapsed: std::time::Duration) {
        println!("{}", report.summary("kvm", seed, elapsed));
        assert_eq!(report.iterations, iterations);
        if let Some((i, message)) = report.failures.first() {
            panic!(
                "input {i} {message} (replay: KVM_FUZZ_SEED={seed:#x} KVM_FUZZ_ITERS={})",
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
        for ncpu in [1, 4, 16, MAXCPUS] {
            let s = fixture::synthetic(ncpu);
            assert_eq!(exercise(&s.elf, &s.core), Outcome::Accepted, "{ncpu} CPUs");
        }
    }

    #[test]
    fn the_fields_are_found() {
        let s = fixture::synthetic(4);
        let spots = spots(&s.elf, &s.core);
        assert_eq!(spots.maxcpus, MAXCPUS as u32);
        let count = |kind| spots.core.iter().filter(|s| s.kind == kind).count();
        assert_eq!(count(Kind::Ptr), MAXCPUS);
        assert_eq!(count(Kind::Off), MAXCPUS);
        assert_eq!(count(Kind::CpuInfo), 3 * 4);
        assert_eq!(count(Kind::MaxCpus), 1);
        assert_eq!(count(Kind::NoteType), 1);
        assert!(spots.elf.iter().any(|s| s.kind == Kind::DpcpuEnd));
    }

    #[test]
    fn the_answer_check_catches_what_the_old_reader_believed() {
        let s = fixture::synthetic(4);
        let elf = ElfFacts::of(&KernelElf::parse(&s.elf).unwrap());
        let core = Core::parse(&s.core[..]).unwrap();
        let cpus: Vec<(u32, _)> = s.cpus.iter().map(|c| (c.index, *c)).collect();
        let max = MAXCPUS as u32;
        assert_eq!(
            check_answers(&elf, &core, max, &cpus, &[0, 1, 2, 3]),
            Ok(())
        );
        assert!(
            check_answers(&elf, &core, max + 8, &cpus, &[]).is_err(),
            "maxcpu beyond the arrays"
        );
        let mut wrong = cpus.clone();
        wrong[2].1.dpcpu_off = wrong[1].1.dpcpu_off;
        assert!(check_answers(&elf, &core, max, &wrong, &[]).is_err());
        assert!(
            check_answers(&elf, &core, max, &cpus, &[5]).is_err(),
            "a CPU without an offset"
        );
    }

    #[test]
    fn fuzz_synthetic() {
        let (iterations, seed) = settings();
        let mut cases = synthetic_cases();
        let start = Instant::now();
        let report = run(&mut cases, Budget::inputs(iterations), seed, false);
        check(&report, seed, iterations, start.elapsed());
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
        assert_eq!(
            exercise(&elf, &core),
            Outcome::Accepted,
            "the unmutated real core"
        );
        let (iterations, seed) = settings();
        let start = Instant::now();
        let report = run(&mut [(elf, core)], Budget::inputs(iterations), seed, false);
        check(&report, seed, iterations, start.elapsed());
    }
}
