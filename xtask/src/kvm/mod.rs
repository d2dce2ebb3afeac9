//! `cargo xtask kvm`: the kernel's kvm reader (`kernel::kvm`) on the host, over an ELF core
//! (`--core`) or a live QEMU guest through its gdbstub (`--live`), with the kernel ELF's
//! symbols; prints readable tables or `--json`.
//!
//! The sources live here because they need `std`: [`core`] (ELF cores), [`gdb`] (the GDB
//! remote protocol), [`elf`] (the kernel ELF's symbols, and the post-link patch step every
//! image build runs). [`HostSource`] joins a kernel ELF with one of them into a
//! `kernel::kvm::Source`; everything above is the kernel crate's reader, the same code the
//! kernel runs on itself.

pub mod dump;
pub mod elf;
pub mod elfcore;
pub mod fixture;
pub mod fuzz;
pub mod gdb;
pub mod qmp;
pub mod selftest;
pub mod trace;
pub mod trace_svg;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kernel::cpu::{CpuInfoSnapshot, CpuState};
use kernel::kvm::symbols::BUILD_ID_LEN;
use kernel::kvm::{Kvm, KvmError, Source};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// Default gdbstub address for `--live` (QEMU's `-s`).
pub const DEFAULT_LIVE: &str = "127.0.0.1:1234";

/// How long a gdbstub or QMP peer may stay silent.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Guest memory, wherever it comes from.
pub trait Memory {
    /// Reads `buf.len()` bytes at kernel address `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> std::result::Result<(), KvmError>;
}

impl<B: elfcore::CoreBytes> Memory for elfcore::Core<B> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> std::result::Result<(), KvmError> {
        elfcore::Core::read(self, addr, buf)
    }
}

impl Memory for gdb::GdbRemote {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> std::result::Result<(), KvmError> {
        gdb::GdbRemote::read(self, addr, buf)
    }
}

/// A kernel ELF's symbols plus guest memory: a kvm [`Source`].
#[derive(Debug)]
pub struct HostSource<M> {
    /// The symbols.
    pub elf: elf::KernelElf,
    /// The memory.
    pub memory: M,
}

impl<M: Memory> Source for HostSource<M> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> std::result::Result<(), KvmError> {
        self.memory.read(addr, buf)
    }

    fn symbol(&mut self, name: &str) -> std::result::Result<Option<u64>, KvmError> {
        Ok(self.elf.symbol(name))
    }

    fn symbol_size(&mut self, name: &str) -> Option<u64> {
        self.elf.symbol_size(name)
    }

    fn symbol_section(&mut self, name: &str) -> Option<kernel::kvm::SymbolSection> {
        self.elf.symbol_section(name).cloned()
    }

    fn symbol_origin(&self) -> &str {
        "ELF"
    }

    fn image_build_id(&mut self) -> std::result::Result<Option<[u8; BUILD_ID_LEN]>, KvmError> {
        match self.elf.build_id() {
            Some(id) => Ok(Some(id)),
            None => Err(KvmError::Source(
                "the kernel ELF holds no build id bytes (kern_build_id not in a section with \
                 file contents)"
                    .into(),
            )),
        }
    }
}

/// Where the kernel to read is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An ELF core file.
    Core(PathBuf),
    /// A QEMU gdbstub at `host:port`.
    Live(String),
}

/// Which CPUs a `dpcpu` query covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSel {
    /// One CPU.
    One(u32),
    /// Every CPU with a DPCPU copy.
    All,
}

/// What to ask the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `kvm_getmaxcpu`.
    MaxCpu,
    /// `kvm_getpcpu` for one CPU, or every active CPU.
    Pcpu(Option<u32>),
    /// A DPCPU variable on one or all CPUs; `size` bytes (default: the symbol's size, else 8).
    Dpcpu {
        /// The variable (with or without `dpcpu_entry_`).
        symbol: String,
        /// Which CPUs.
        cpus: CpuSel,
        /// Bytes to read.
        size: Option<usize>,
    },
    /// `kvm_nlist`, with DPCPU symbols moved to `cpu` (default 0).
    Nlist {
        /// The symbols.
        symbols: Vec<String>,
        /// The DPCPU CPU.
        cpu: Option<u32>,
    },
}

/// Flags of `cargo xtask kvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmArgs {
    /// The core or gdbstub (default: the core `cargo xtask dump` last wrote).
    pub target: Option<Target>,
    /// The kernel ELF (default: the copy `cargo xtask dump` keeps beside its core, or the
    /// default debug image for `--live`).
    pub kernel: Option<PathBuf>,
    /// Print JSON instead of tables.
    pub json: bool,
    /// The question.
    pub query: Query,
}

/// A query's answer: JSON, plus whether it found everything it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer as JSON (what `--json` prints).
    pub json: Value,
    /// Set when part of the answer is missing (an inactive CPU asked for, a symbol not found):
    /// the message, and the CLI exits with status 1.
    pub missing: Option<String>,
}

fn state_name(raw: u32) -> &'static str {
    CpuState::from_raw(raw).map_or("unknown", CpuState::name)
}

/// One CPU's `CpuInfo` as JSON (every field).
pub fn pcpu_json(s: &CpuInfoSnapshot) -> Value {
    json!({
        "cpu": s.index,
        "self": s.self_addr,
        "mpidr": s.mpidr,
        "state": state_name(s.state),
        "state_raw": s.state,
        "ipl": s.ipl,
        "ipending": s.ipending,
        "curlwp": s.curlwp,
        "dpcpu_off": s.dpcpu_off,
        "intr": s.intr_count,
        "ticks": s.tick_count,
        "ipi": s.ipi_count,
        "stack_base": s.stack_base,
        "stack_size": s.stack_size,
        "ctxsw": s.ctxsw_count,
        "idle_ticks": s.idle_ticks,
        "intr_ipl": s.intr_ipl,
        "intr_depth": s.intr_depth,
    })
}

/// Answers `query` with the reader.
pub fn answer<S: Source>(kd: &mut Kvm<S>, query: &Query) -> std::result::Result<Answer, KvmError> {
    match query {
        Query::MaxCpu => Ok(Answer {
            json: json!({ "maxcpu": kd.getmaxcpu()? }),
            missing: None,
        }),
        Query::Pcpu(Some(cpu)) => match kd.getpcpu(*cpu as usize)? {
            Some(s) => Ok(Answer {
                json: json!([pcpu_json(&s)]),
                missing: None,
            }),
            None => Ok(Answer {
                json: json!([]),
                missing: Some(format!("CPU {cpu} is not active")),
            }),
        },
        Query::Pcpu(None) => {
            let maxcpu = kd.getmaxcpu()?;
            let mut rows = Vec::new();
            for cpu in 0..maxcpu as usize {
                if let Some(s) = kd.getpcpu(cpu)? {
                    rows.push(pcpu_json(&s));
                }
            }
            Ok(Answer {
                json: Value::Array(rows),
                missing: None,
            })
        }
        Query::Dpcpu { symbol, cpus, size } => {
            let size = size
                .or_else(|| kd.symbol_size(symbol).and_then(|s| usize::try_from(s).ok()))
                .filter(|&s| s > 0)
                .unwrap_or(8)
                .min(1 << 20);
            let list: Vec<u32> = match cpus {
                CpuSel::One(cpu) => vec![*cpu],
                CpuSel::All => {
                    let (_, _, offsets) = kd.dpcpu_layout()?;
                    (0..offsets.len() as u32)
                        .filter(|&c| offsets[c as usize] != 0)
                        .collect()
                }
            };
            let mut rows = Vec::new();
            for cpu in list {
                let (addr, bytes) = kd.read_dpcpu(symbol, cpu, size)?;
                let mut row = json!({
                    "cpu": cpu,
                    "address": addr,
                    "bytes": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                });
                if size <= 8 {
                    let mut le = [0u8; 8];
                    le[..size].copy_from_slice(&bytes);
                    row["value"] = json!(u64::from_le_bytes(le));
                }
                rows.push(row);
            }
            Ok(Answer {
                json: Value::Array(rows),
                missing: None,
            })
        }
        Query::Nlist { symbols, cpu } => {
            if let Some(cpu) = cpu {
                kd.dpcpu_setcpu(*cpu)?;
            }
            let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
            let addrs = kd.nlist(&names)?;
            let missing: Vec<&str> = names
                .iter()
                .zip(&addrs)
                .filter(|(_, a)| a.is_none())
                .map(|(n, _)| *n)
                .collect();
            Ok(Answer {
                json: Value::Array(
                    names
                        .iter()
                        .zip(&addrs)
                        .map(|(n, a)| json!({ "name": n, "address": a }))
                        .collect(),
                ),
                missing: (!missing.is_empty()).then(|| {
                    format!(
                        "symbol{} {} not found in ELF",
                        if missing.len() > 1 { "s" } else { "" },
                        missing.join(", ")
                    )
                }),
            })
        }
    }
}

fn hex(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_owned(), |n| format!("{n:#x}"))
}

fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The answer as a readable table.
pub fn table(query: &Query, json: &Value) -> String {
    let mut out = String::new();
    let rows = json.as_array().cloned().unwrap_or_default();
    match query {
        Query::MaxCpu => {
            let _ = writeln!(out, "maxcpu {}", num(&json["maxcpu"]));
        }
        Query::Pcpu(_) => {
            let _ = writeln!(
                out,
                "{:>3}  {:<10} {:<8} {:<12} {:>3}  {:>10} {:>10}  {:<15}  {:<12} {:<12}",
                "cpu",
                "mpidr",
                "state",
                "curlwp",
                "ipl",
                "intr",
                "ticks",
                "ipi n/h/s/x",
                "self",
                "dpcpu_off"
            );
            for r in rows {
                let ipi: Vec<String> = r["ipi"]
                    .as_array()
                    .map(|a| a.iter().map(num).collect())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:>3}  {:<10} {:<8} {:<12} {:>3}  {:>10} {:>10}  {:<15}  {:<12} {:<12}",
                    num(&r["cpu"]),
                    hex(&r["mpidr"]),
                    r["state"].as_str().unwrap_or("-"),
                    hex(&r["curlwp"]),
                    num(&r["ipl"]),
                    num(&r["intr"]),
                    num(&r["ticks"]),
                    ipi.join("/"),
                    hex(&r["self"]),
                    hex(&r["dpcpu_off"]),
                );
            }
        }
        Query::Dpcpu { symbol, .. } => {
            let _ = writeln!(
                out,
                "{:>3}  {:<12} {:>20}  bytes ({symbol})",
                "cpu", "address", "value"
            );
            for r in rows {
                let _ = writeln!(
                    out,
                    "{:>3}  {:<12} {:>20}  {}",
                    num(&r["cpu"]),
                    hex(&r["address"]),
                    num(&r["value"]),
                    r["bytes"].as_str().unwrap_or("")
                );
            }
        }
        Query::Nlist { .. } => {
            for r in rows {
                let addr = if r["address"].is_null() {
                    "not found".to_owned()
                } else {
                    hex(&r["address"])
                };
                let _ = writeln!(out, "{:<40} {addr}", r["name"].as_str().unwrap_or(""));
            }
        }
    }
    out
}

/// The core and kernel `cargo xtask dump` writes by default.
pub fn default_dump(ws: &Workspace) -> (PathBuf, PathBuf) {
    let dir = ws.target_dir.join("dumps");
    (dir.join("dump.core"), dir.join("dump.elf"))
}

/// What to do with a kernel [`open_target`] opened: one method, generic over the source, so
/// that a core and a live guest share the opening and the detaching.
pub trait KvmJob {
    /// What it gives back.
    type Output;
    /// Runs on the opened kernel.
    fn run<S: Source>(self, kd: &mut Kvm<S>) -> std::result::Result<Self::Output, KvmError>;
}

/// Opens `target` with the symbols of `kernel`, runs `job` on it and, for a live guest,
/// detaches (even when the job failed); the error text is what the CLI prints.
pub fn open_target<J: KvmJob>(
    target: &Target,
    kernel: &std::path::Path,
    job: J,
) -> std::result::Result<J::Output, String> {
    let bytes = std::fs::read(kernel).map_err(|e| format!("reading {}: {e}", kernel.display()))?;
    let elf = elf::KernelElf::parse(&bytes).map_err(|e| format!("{}: {e}", kernel.display()))?;
    match target {
        Target::Core(path) => {
            let memory = elfcore::Core::open(path)?;
            let mut kd = Kvm::open(HostSource { elf, memory }).map_err(|e| e.to_string())?;
            job.run(&mut kd).map_err(|e| e.to_string())
        }
        Target::Live(addr) => {
            let memory = gdb::GdbRemote::connect(addr, IO_TIMEOUT)?;
            let mut kd = Kvm::open(HostSource { elf, memory }).map_err(|e| e.to_string())?;
            let result = job.run(&mut kd).map_err(|e| e.to_string());
            kd.into_source().memory.detach()?;
            result
        }
    }
}

/// Opens `target` with `kernel` and answers `query`; the error text is what the CLI prints.
pub fn run_query(
    target: &Target,
    kernel: &std::path::Path,
    query: &Query,
) -> std::result::Result<Answer, String> {
    struct Ask<'a>(&'a Query);
    impl KvmJob for Ask<'_> {
        type Output = Answer;
        fn run<S: Source>(self, kd: &mut Kvm<S>) -> std::result::Result<Answer, KvmError> {
            answer(kd, self.0)
        }
    }
    open_target(target, kernel, Ask(query))
}

/// What `--core`/`--live` and `--kernel` name, with their defaults: the default dump's core;
/// the ELF beside a core (else the default dump's), or the default debug image for a live
/// guest.
pub fn target_and_kernel(
    ws: &Workspace,
    target: Option<&Target>,
    kernel: Option<&PathBuf>,
) -> (Target, PathBuf) {
    let (dump_core, dump_elf) = default_dump(ws);
    let target = target.cloned().unwrap_or(Target::Core(dump_core));
    let kernel = match (kernel, &target) {
        (Some(kernel), _) => kernel.clone(),
        (None, Target::Core(core)) => {
            let beside = core.with_extension("elf");
            if beside.is_file() { beside } else { dump_elf }
        }
        (None, Target::Live(_)) => ws.image_path(
            crate::board::Board::Virt,
            crate::board::Variant::Default,
            crate::board::Profile::Debug,
        ),
    };
    (target, kernel)
}

/// `cargo xtask kvm`.
pub fn run(ws: &Workspace, args: &KvmArgs) -> Result<ExitCode> {
    let (target, kernel) = target_and_kernel(ws, args.target.as_ref(), args.kernel.as_ref());
    let answer = run_query(&target, &kernel, &args.query).map_err(Error::new)?;
    if args.json {
        println!("{}", answer.json);
    } else {
        print!("{}", table(&args.query, &answer.json));
    }
    match answer.missing {
        Some(message) => Err(Error::new(message)),
        None => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(s: &fixture::Synthetic) -> Kvm<HostSource<elfcore::Core<&[u8]>>> {
        let elf = elf::KernelElf::parse(&s.elf).unwrap();
        let memory = elfcore::Core::parse(&s.core[..]).unwrap();
        Kvm::open(HostSource { elf, memory }).unwrap()
    }

    #[test]
    fn the_synthetic_core_reads_back_exactly() {
        let s = fixture::synthetic(4);
        let mut kd = open(&s);
        let a = answer(&mut kd, &Query::Pcpu(None)).unwrap();
        assert_eq!(a.json.as_array().unwrap().len(), 4);
        for (row, ci) in a.json.as_array().unwrap().iter().zip(&s.cpus) {
            assert_eq!(row, &pcpu_json(ci));
        }
        let q = Query::Dpcpu {
            symbol: fixture::COUNTER.into(),
            cpus: CpuSel::All,
            size: None,
        };
        let a = answer(&mut kd, &q).unwrap();
        let values: Vec<u64> = a
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_u64().unwrap())
            .collect();
        assert_eq!(values, s.counters);
        let t = table(&q, &a.json);
        assert!(t.contains("bytes (COUNTER)"), "{t}");
    }

    #[test]
    fn inactive_cpus_and_unknown_symbols_are_reported() {
        let s = fixture::synthetic(2);
        let mut kd = open(&s);
        let a = answer(&mut kd, &Query::Pcpu(Some(3))).unwrap();
        assert_eq!(a.missing.as_deref(), Some("CPU 3 is not active"));
        let max = kernel::cpu::MAXCPUS;
        let e = answer(&mut kd, &Query::Pcpu(Some(max as u32))).unwrap_err();
        assert_eq!(e.to_string(), format!("CPU {max} too big (maxcpu {max})"));
        let q = Query::Nlist {
            symbols: vec!["kern_ncpu".into(), "nope".into()],
            cpu: None,
        };
        let a = answer(&mut kd, &q).unwrap();
        assert_eq!(a.missing.as_deref(), Some("symbol nope not found in ELF"));
        assert!(table(&q, &a.json).contains("not found"));
        let e = answer(
            &mut kd,
            &Query::Dpcpu {
                symbol: fixture::COUNTER.into(),
                cpus: CpuSel::One(5),
                size: None,
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "CPU 5 not found (it has no DPCPU copy)");
    }

    #[test]
    fn a_core_from_another_build_is_refused() {
        let s = fixture::synthetic(2);
        let mut other = s.elf.clone();
        let at = other
            .windows(16)
            .position(|w| w == b"synthetic-build!")
            .unwrap();
        other[at] ^= 1;
        let elf = elf::KernelElf::parse(&other).unwrap();
        let memory = elfcore::Core::parse(&s.core[..]).unwrap();
        let e = Kvm::open(HostSource { elf, memory })
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("build id mismatch"), "{e}");
    }

    #[test]
    fn a_kernel_without_the_symbols_is_named() {
        let s = fixture::synthetic(1);
        let elf_bytes = fixture::write_kernel_elf(fixture::DATA, &[0; 64], &[]);
        let elf = elf::KernelElf::parse(&elf_bytes).unwrap();
        let memory = elfcore::Core::parse(&s.core[..]).unwrap();
        let e = Kvm::open(HostSource { elf, memory })
            .unwrap_err()
            .to_string();
        assert_eq!(e, "symbol kern_build_id not found in ELF");
    }

    #[test]
    fn truncated_cores_and_addresses_outside_are_named() {
        let s = fixture::synthetic(2);
        let e = elfcore::Core::parse(&s.core[..s.core.len() - 1]).unwrap_err();
        assert!(e.starts_with("core truncated: segment 2"), "{e}");
        let c = elfcore::Core::parse(&s.core[..]).unwrap();
        let e = c.read(0x1000, &mut [0u8; 4]).unwrap_err().to_string();
        assert_eq!(e, "address 0x1000 (4 bytes) outside the dump");
        assert!(
            elfcore::Core::parse(&s.elf[..])
                .unwrap_err()
                .contains("not an ELF core file")
        );
        assert!(elfcore::Core::parse(&b"garbage"[..]).is_err());
    }

    /// The synthetic core with the bytes at guest address `addr` replaced.
    fn patched_core(s: &fixture::Synthetic, addr: u64, bytes: &[u8]) -> Vec<u8> {
        let at = elfcore::Core::parse(&s.core[..])
            .unwrap()
            .file_offset(addr)
            .unwrap() as usize;
        let mut core = s.core.clone();
        core[at..at + bytes.len()].copy_from_slice(bytes);
        core
    }

    fn query(elf: &[u8], core: &[u8], q: &Query) -> std::result::Result<Answer, String> {
        let elf = elf::KernelElf::parse(elf)?;
        let memory = elfcore::Core::parse(core)?;
        let mut kd = Kvm::open(HostSource { elf, memory }).map_err(|e| e.to_string())?;
        answer(&mut kd, q).map_err(|e| e.to_string())
    }

    fn sym(s: &fixture::Synthetic, name: &str) -> u64 {
        elf::KernelElf::parse(&s.elf).unwrap().symbol(name).unwrap()
    }

    #[test]
    fn kern_maxcpus_past_the_elfs_arrays_is_an_error_naming_them() {
        let s = fixture::synthetic(4);
        let max = kernel::cpu::MAXCPUS;
        let big = max as u32 + 8;
        let core = patched_core(&s, sym(&s, "kern_maxcpus"), &big.to_le_bytes());
        let expected = format!(
            "kern_maxcpus = {big} in memory, but kern_cpu_info_ptrs has {max} entries ({} \
             bytes) in ELF",
            8 * max
        );
        assert_eq!(query(&s.elf, &core, &Query::MaxCpu).unwrap_err(), expected);
        assert_eq!(
            query(&s.elf, &core, &Query::Pcpu(Some(big - 4))).unwrap_err(),
            expected
        );
    }

    #[test]
    fn dpcpu_end_at_the_top_or_at_the_start_is_an_error() {
        let start = sym(&fixture::synthetic(1), "__dpcpu_start");
        for end in [u64::MAX, start] {
            let s = fixture::synthetic_with(4, |syms| {
                for (n, addr, _) in syms.iter_mut() {
                    if n == "__dpcpu_end" {
                        *addr = end;
                    }
                }
            });
            let q = Query::Nlist {
                symbols: vec![fixture::COUNTER.into()],
                cpu: Some(1),
            };
            let e = query(&s.elf, &s.core, &q).unwrap_err();
            assert!(e.contains("__dpcpu_end"), "{e}");
        }
    }

    #[test]
    fn overlapping_segments_are_an_error_naming_both() {
        let s = fixture::synthetic(4);
        // A zero-filled segment over the CPU pointer array made every CPU "inactive".
        let full = elfcore::Core::parse(&s.core[..]).unwrap();
        let mut ranges: Vec<(u64, Vec<u8>)> = full
            .segments()
            .iter()
            .map(|seg| {
                let mut bytes = vec![0u8; seg.filesz as usize];
                full.read(seg.paddr, &mut bytes).unwrap();
                (seg.paddr, bytes)
            })
            .collect();
        ranges.insert(0, (sym(&s, "kern_cpu_info_ptrs"), vec![0; 128]));
        let core = fixture::write_core(&ranges);
        let e = query(&s.elf, &core, &Query::Pcpu(None)).unwrap_err();
        assert!(
            e.starts_with("PT_LOAD segments 1 and 2 both hold memory at"),
            "{e}"
        );
        // Without the overlap it reads.
        let core = fixture::write_core(&ranges[1..]);
        assert!(query(&s.elf, &core, &Query::Pcpu(None)).is_ok());
    }

    #[test]
    fn a_cpu_whose_dpcpu_off_disagrees_or_shares_an_offset_is_an_error() {
        let s = fixture::synthetic(4);
        let table = sym(&s, "kern_dpcpu_off");
        let core = patched_core(&s, table + 16, &s.cpus[1].dpcpu_off.to_le_bytes());
        let e = query(&s.elf, &core, &Query::Pcpu(Some(2))).unwrap_err();
        assert!(
            e.starts_with("CPU 2: its CpuInfo says dpcpu_off = ")
                && e.ends_with(&format!(
                    "but kern_dpcpu_off[2] = {:#x}",
                    s.cpus[1].dpcpu_off
                )),
            "{e}"
        );
        let q = Query::Dpcpu {
            symbol: fixture::COUNTER.into(),
            cpus: CpuSel::All,
            size: None,
        };
        let e = query(&s.elf, &core, &q).unwrap_err();
        assert_eq!(
            e,
            format!(
                "kern_dpcpu_off: cpu1 and cpu2 share one DPCPU copy (both at offset {:#x})",
                s.cpus[1].dpcpu_off
            )
        );
    }

    #[test]
    fn a_dpcpu_symbol_running_past_the_section_is_an_error() {
        let s = fixture::synthetic_with(4, |syms| {
            for (n, _, size) in syms.iter_mut() {
                if n.ends_with(fixture::COUNTER) {
                    *size = 0x1000;
                }
            }
        });
        let q = Query::Dpcpu {
            symbol: fixture::COUNTER.into(),
            cpus: CpuSel::One(1),
            size: None,
        };
        let e = query(&s.elf, &s.core, &q).unwrap_err();
        assert!(e.starts_with("COUNTER: 4096 bytes at 0x"), "{e}");
        let end = sym(&s, "__dpcpu_end");
        assert!(
            e.ends_with(&format!("run past __dpcpu_end ({end:#x})")),
            "{e}"
        );
    }
}
