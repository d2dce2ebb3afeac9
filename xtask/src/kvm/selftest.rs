//! The kvm end-to-end check of `cargo xtask test`: boots the test image on virt GICv3 with 4
//! CPUs and `kvm.selftest=1` (see `kernel/src/ktest/kvm_selftest.rs`), waits for
//! `kvm-selftest ready`, then reads the guest from outside and compares, field by field, for
//! every CPU, with what each CPU printed about itself:
//!
//! 1. `kernel`: each CPU's line is there, its counter is the count it was told to bump, and
//!    the in-kernel reader's lines (the kernel reading itself) equal the CPUs' own;
//! 2. `live`: the reader through QEMU's gdbstub (the guest pauses while connected);
//! 3. `core`: the reader on an ELF core QEMU writes through QMP `dump-guest-memory`;
//! 4. `bad input`: the CLI and the reader on a truncated core, a core of another build,
//!    garbage, a kernel ELF without the symbols, an address outside the dump, CPUs out of range
//!    or inactive, a gdbstub that is gone: each must fail with its message (exit status 1);
//! 5. `fuzz`: the host fuzz test on the real kernel ELF and the real core's pages.
//!
//! Every field is compared exactly, counters included: each CPU stops its clock tick before
//! printing, so nothing in its `CpuInfo` changes afterwards (see the kernel side's doc). Each
//! of the five counts as one test in the totals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kernel::cpu::MAXCPUS;
use kernel::kvm::Kvm;
use serde_json::Value;

use super::dump::Session;
use super::elf::KernelElf;
use super::elfcore::Core;
use super::gdb::GdbRemote;
use super::{CpuSel, HostSource, Memory, Query, answer, fixture};
use crate::board::{Gic, Machine};
use crate::error::{Context, Result};
use crate::progress;
use crate::qemu::QemuRun;
use crate::test::{Counts, Verdict, report};
use crate::workspace::Workspace;

/// Kernel-side names, kept in step with `kernel/src/ktest/kvm_selftest.rs`.
const CPU_LINE: &str = "kvm-selftest cpu=";
const IN_KERNEL_LINE: &str = "kvm-selftest in-kernel cpu=";
const TRACE_LINE: &str = "trace-selftest in-kernel cpu=";
const COUNTER: &str = "KVM_SELFTEST_COUNTER";
const CPUS: usize = 4;

/// Inputs of the fuzz pass on the real artifacts (about 2 ms each: the test image's symbol
/// table has ~2,800 entries); `KVM_FUZZ_ITERS` overrides it. The 100,000-input pass runs on
/// the synthetic kernel in the host tests.
const REAL_FUZZ_ITERATIONS: &str = "5000";

/// How many times CPU `cpu` bumps its counter (the kernel's `kvm_selftest::bumps`).
fn bumps(cpu: u64) -> u64 {
    1000 * (cpu + 1) + 7 * cpu
}

/// One report line as `key -> value` (numbers; `ipi` split into `ipi0..ipi3`).
pub type Fields = BTreeMap<String, u64>;

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `<prefix>N key=value ...`.
pub fn parse_line(line: &str, prefix: &str) -> Option<Fields> {
    let rest = line.strip_prefix(prefix)?;
    let mut fields = Fields::new();
    let mut words = rest.split_whitespace();
    fields.insert("cpu".into(), number(words.next()?)?);
    for word in words {
        let (key, value) = word.split_once('=')?;
        if key == "ipi" {
            for (k, v) in value.split(',').enumerate() {
                fields.insert(format!("ipi{k}"), number(v)?);
            }
        } else {
            fields.insert(key.into(), number(value)?);
        }
    }
    Some(fields)
}

/// The reader's answers (pcpu rows and the counter) in the kernel line's terms.
pub fn fields_from_reader(pcpu: &Value, dpcpu: &Value) -> BTreeMap<u64, Fields> {
    let mut out = BTreeMap::new();
    let names = [
        ("cpu", "cpu"),
        ("self", "self"),
        ("mpidr", "mpidr"),
        ("state_raw", "state"),
        ("ipl", "ipl"),
        ("ipending", "ipending"),
        ("curlwp", "curlwp"),
        ("dpcpu_off", "dpcpu_off"),
        ("intr", "intr"),
        ("ticks", "ticks"),
        ("stack_base", "stack_base"),
        ("stack_size", "stack_size"),
        ("ctxsw", "ctxsw"),
        ("idle_ticks", "idle_ticks"),
        ("intr_ipl", "intr_ipl"),
        ("intr_depth", "intr_depth"),
    ];
    for row in pcpu.as_array().into_iter().flatten() {
        let mut f = Fields::new();
        for (json, key) in names {
            if let Some(v) = row[json].as_u64() {
                f.insert(key.into(), v);
            }
        }
        for (k, v) in row["ipi"].as_array().into_iter().flatten().enumerate() {
            if let Some(v) = v.as_u64() {
                f.insert(format!("ipi{k}"), v);
            }
        }
        if let Some(cpu) = row["cpu"].as_u64() {
            out.insert(cpu, f);
        }
    }
    for row in dpcpu.as_array().into_iter().flatten() {
        if let (Some(cpu), Some(value), Some(addr)) = (
            row["cpu"].as_u64(),
            row["value"].as_u64(),
            row["address"].as_u64(),
        ) && let Some(f) = out.get_mut(&cpu)
        {
            f.insert("counter".into(), value);
            f.insert("counter_addr".into(), addr);
        }
    }
    out
}

/// Compares `got` with the kernel's own lines; every difference, named.
pub fn compare(
    source: &str,
    want: &BTreeMap<u64, Fields>,
    got: &BTreeMap<u64, Fields>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if want.keys().ne(got.keys()) {
        problems.push(format!(
            "{source}: CPUs {:?}, the kernel printed {:?}",
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        ));
    }
    for (cpu, fields) in want {
        let Some(read) = got.get(cpu) else { continue };
        for (key, value) in fields {
            match read.get(key) {
                Some(v) if v == value => {}
                Some(v) => problems.push(format!(
                    "{source}: cpu{cpu} {key} = {v:#x}, the kernel printed {value:#x}"
                )),
                None => problems.push(format!("{source}: cpu{cpu} {key} missing")),
            }
        }
    }
    problems
}

/// Reads pcpu and the counter through `kd`.
fn read_all<M: Memory>(
    kd: &mut Kvm<HostSource<M>>,
) -> std::result::Result<BTreeMap<u64, Fields>, String> {
    let pcpu = answer(kd, &Query::Pcpu(None)).map_err(|e| e.to_string())?;
    let dpcpu = answer(
        kd,
        &Query::Dpcpu {
            symbol: COUNTER.into(),
            cpus: CpuSel::All,
            size: Some(8),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(fields_from_reader(&pcpu.json, &dpcpu.json))
}

/// Each CPU's trace ring through `kd`, in the kernel's `trace-selftest` line terms.
fn read_trace<M: Memory>(
    kd: &mut Kvm<HostSource<M>>,
) -> std::result::Result<BTreeMap<u64, Fields>, String> {
    let trace = kd.trace().map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for c in &trace.cpus {
        let mut f = Fields::new();
        f.insert("cpu".into(), c.cpu.into());
        f.insert("head".into(), c.head);
        f.insert("lost".into(), c.lost);
        f.insert("events".into(), c.events.len() as u64);
        f.insert("digest".into(), trace.digest(c.cpu).unwrap_or(0));
        out.insert(u64::from(c.cpu), f);
    }
    Ok(out)
}

/// A corrupt ring in a core is a clear error, through the reader and the CLI: a record of
/// CPU 1's ring with a wrong sequence number, and CPU 1's ring magic overwritten.
fn corrupt_ring(dir: &Path, kernel: &Path, mini: Result<&Path, &str>) -> Vec<String> {
    let run = || -> std::result::Result<Vec<String>, String> {
        let mini = mini.map_err(str::to_owned)?;
        let elf = KernelElf::parse(&std::fs::read(kernel).map_err(|e| e.to_string())?)?;
        let core_bytes = std::fs::read(mini).map_err(|e| e.to_string())?;
        let core = Core::parse(&core_bytes[..])?;
        let ring = elf
            .symbol("dpcpu_entry_TRACE_RING")
            .ok_or("dpcpu_entry_TRACE_RING not in the test image")?;
        let table = elf.symbol("kern_dpcpu_off").ok_or("no kern_dpcpu_off")?;
        let mut off1 = [0u8; 8];
        core.read(table + 8, &mut off1).map_err(|e| e.to_string())?;
        let ring1 = ring.wrapping_add(u64::from_le_bytes(off1));
        let mut problems = Vec::new();
        let cases: [(&str, u64, &str); 2] = [
            (
                "ring-seq.core",
                ring1 + 64 + 8 + 4,
                "cpu1 trace ring: slot 0 holds sequence number",
            ),
            ("ring-magic.core", ring1, "cpu1 trace ring: magic"),
        ];
        for (name, addr, want) in cases {
            let at = core
                .file_offset(addr)
                .ok_or(format!("{addr:#x} not in the small core"))? as usize;
            let mut bytes = core_bytes.clone();
            bytes[at] ^= 0x5a;
            let path = dir.join(name);
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let out = Command::new(exe)
                .arg("trace")
                .arg("--core")
                .arg(&path)
                .arg("--kernel")
                .arg(kernel)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running xtask trace: {e}"))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(1) || !stderr.contains(want) {
                problems.push(format!(
                    "{name}: status {:?}, stderr {:?}, expected status 1 and {want:?}",
                    out.status.code(),
                    stderr.trim()
                ));
            }
        }
        Ok(problems)
    };
    run().unwrap_or_else(|e| vec![e])
}

/// A memory that remembers which pages were read (to cut a small core out of a large one).
struct Recording<'a, M> {
    inner: &'a mut M,
    pages: &'a mut std::collections::BTreeSet<u64>,
}

impl<M: Memory> Memory for Recording<'_, M> {
    fn read(
        &mut self,
        addr: u64,
        buf: &mut [u8],
    ) -> std::result::Result<(), kernel::kvm::KvmError> {
        let last = addr.saturating_add(buf.len().max(1) as u64 - 1);
        for page in (addr >> 12)..=(last >> 12) {
            self.pages.insert(page);
        }
        self.inner.read(addr, buf)
    }
}

/// The number of parts (result lines) of a run that boots: kernel, live, core, bad input and
/// fuzz (`cargo xtask test` sizes its progress bar with it).
pub const PARTS: usize = 5;

/// Runs the check; prints one result line per part and returns the sum.
pub fn run(ws: &Workspace, kernel: &Path, timeout: Duration, verbose: bool) -> Result<Verdict> {
    let dir = ws.target_dir.join("kvm-selftest");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let core_path = dir.join("selftest.core");
    let machine = Machine::virt(Gic::V3, CPUS as u32);
    let label = format!("{} kvm", machine.label());
    let run = QemuRun {
        append: Some("kvm.selftest=1"),
        memory: Some("256M"),
        ..QemuRun::new(machine, kernel)
    };
    let mut total = Counts::default();
    progress::running(&label);
    let part = |name: &str, problems: Vec<String>, total: &mut Counts| {
        let failed = u64::from(!problems.is_empty());
        let verdict = Verdict {
            counts: Counts {
                passed: 1 - failed,
                failed,
                skipped: 0,
            },
            note: (!problems.is_empty()).then(|| problems.join("; ")),
        };
        report(&format!("{label} {name}"), &verdict, None);
        *total += verdict.counts;
    };

    let mut session = match Session::start(&run, &ws.log_path("virt-gic3-smp4-kvm-selftest")) {
        Ok(session) => session,
        Err(e) => {
            part("boot", vec![e.to_string()], &mut total);
            return Ok(Verdict {
                counts: total,
                note: None,
            });
        }
    };
    let ready = session.wait_for(timeout, |l| {
        l.starts_with("kvm-selftest ready") || l.starts_with("panic on cpu")
    });
    if verbose {
        for line in session.lines() {
            println!("{line}");
        }
    }
    if let Err(e) = ready {
        part("boot", vec![e.to_string()], &mut total);
        return Ok(Verdict {
            counts: total,
            note: None,
        });
    }
    let own: BTreeMap<u64, Fields> = session
        .lines()
        .iter()
        .filter_map(|l| parse_line(l, CPU_LINE))
        .map(|f| (f["cpu"], f))
        .collect();
    let session_lines = session.lines().to_vec();
    let in_kernel: BTreeMap<u64, Fields> = session
        .lines()
        .iter()
        .filter_map(|l| parse_line(l, IN_KERNEL_LINE))
        .map(|f| (f["cpu"], f))
        .collect();

    // 1. The kernel's own report.
    let mut problems = Vec::new();
    if own.len() != CPUS {
        problems.push(format!("{} CPU lines, expected {CPUS}", own.len()));
    }
    for (cpu, f) in &own {
        if f.get("counter") != Some(&bumps(*cpu)) {
            problems.push(format!(
                "cpu{cpu} counter {:?}, expected {}",
                f.get("counter"),
                bumps(*cpu)
            ));
        }
    }
    if !session
        .lines()
        .iter()
        .any(|l| l == "kvm-selftest in-kernel: ok")
    {
        problems.push("no `kvm-selftest in-kernel: ok` line".into());
    }
    problems.extend(compare("in-kernel", &own, &in_kernel));
    part("kernel", problems, &mut total);

    // 2. Live through the gdbstub.
    let elf = match std::fs::read(kernel)
        .map_err(|e| e.to_string())
        .and_then(|bytes| KernelElf::parse(&bytes))
    {
        Ok(elf) => elf,
        Err(e) => {
            part(
                "live",
                vec![format!("{}: {e}", kernel.display())],
                &mut total,
            );
            return Ok(Verdict {
                counts: total,
                note: None,
            });
        }
    };
    type Read = (
        BTreeMap<u64, Fields>,
        std::result::Result<BTreeMap<u64, Fields>, String>,
    );
    let live = (|| -> std::result::Result<Read, String> {
        let memory = GdbRemote::connect(&session.gdb_addr, super::IO_TIMEOUT)?;
        let mut kd = Kvm::open(HostSource {
            elf: elf.clone(),
            memory,
        })
        .map_err(|e| e.to_string())?;
        let fields = read_all(&mut kd)?;
        let trace = read_trace(&mut kd);
        kd.into_source().memory.detach()?;
        Ok((fields, trace))
    })();
    let (live, live_trace) = match live {
        Ok((fields, trace)) => (Ok(fields), trace),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    part(
        "live",
        match live {
            Ok(got) => compare("live", &own, &got),
            Err(e) => vec![e],
        },
        &mut total,
    );

    // 3. A core through QMP.
    let dumped = session.dump(&core_path);
    session.quit();
    let mut pages = std::collections::BTreeSet::new();
    let from_core = dumped.map_err(|e| e.to_string()).and_then(|()| {
        let mut core = Core::open(&core_path)?;
        let memory = Recording {
            inner: &mut core,
            pages: &mut pages,
        };
        let mut kd = Kvm::open(HostSource {
            elf: elf.clone(),
            memory,
        })
        .map_err(|e| e.to_string())?;
        Ok((read_all(&mut kd)?, read_trace(&mut kd)))
    });
    let (from_core, core_trace) = match from_core {
        Ok((fields, trace)) => (Ok(fields), trace),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    part(
        "core",
        match from_core {
            Ok(got) => compare("core", &own, &got),
            Err(e) => vec![e],
        },
        &mut total,
    );

    // The pages the reader touched, as a small core (for the contradictions and the fuzzer).
    let mini = cut_pages(&dir, &core_path, &pages);
    let mini = mini.as_deref().map_err(String::as_str);

    // The trace rings: the in-kernel reader's check, and the same rings read live and from
    // the core, identical record for record (head, lost, count and digest per CPU); a corrupt
    // ring in the core is a clear error.
    let in_kernel_trace: BTreeMap<u64, Fields> = session_lines
        .iter()
        .filter_map(|l| parse_line(l, TRACE_LINE))
        .map(|f| (f["cpu"], f))
        .collect();
    let mut problems = Vec::new();
    if !session_lines
        .iter()
        .any(|l| l == "trace-selftest in-kernel: ok")
    {
        problems.push("no `trace-selftest in-kernel: ok` line".into());
    }
    if in_kernel_trace.len() != CPUS {
        problems.push(format!(
            "{} trace lines, expected {CPUS}",
            in_kernel_trace.len()
        ));
    }
    for (name, got) in [("trace live", live_trace), ("trace core", core_trace)] {
        match got {
            Ok(got) => problems.extend(compare(name, &in_kernel_trace, &got)),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    problems.extend(corrupt_ring(&dir, kernel, mini));
    part("trace", problems, &mut total);

    // 4. Bad input, through the CLI and the reader.
    part(
        "bad input",
        bad_input(&dir, kernel, &core_path, mini),
        &mut total,
    );

    // 5. The fuzz test on the real ELF and the core's pages the reader needed.
    part("fuzz", fuzz_real(ws, kernel, mini), &mut total);
    Ok(Verdict {
        counts: total,
        note: None,
    })
}

/// Runs `cargo xtask kvm ARGS` (this very binary) and returns (status, stderr).
fn cli(args: &[&str]) -> std::result::Result<(Option<i32>, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("kvm")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running xtask kvm: {e}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn bad_input(dir: &Path, kernel: &Path, core: &Path, mini: Result<&Path, &str>) -> Vec<String> {
    let mut problems = Vec::new();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.join(name);
        let _ = std::fs::write(&path, bytes);
        path
    };
    let head = std::fs::File::open(core)
        .and_then(|f| {
            use std::io::Read;
            let mut buf = Vec::new();
            f.take(1 << 20).read_to_end(&mut buf).map(|_| buf)
        })
        .unwrap_or_default();
    let truncated = write("truncated.core", &head);
    let garbage = write("garbage.core", &[0x5a; 4096]);
    let mut other_build = std::fs::read(kernel).unwrap_or_default();
    let other_elf = match KernelElf::parse(&other_build)
        .ok()
        .and_then(|e| e.build_id())
    {
        Some(id) => {
            if let Some(at) = other_build.windows(16).position(|w| w == id) {
                other_build[at] ^= 0xff;
            }
            write("other-build.elf", &other_build)
        }
        None => {
            problems.push("the test image has no build id".into());
            write("other-build.elf", b"")
        }
    };
    let no_symbols = write(
        "no-symbols.elf",
        &fixture::write_kernel_elf(0x4020_0000, &[0; 64], &[]),
    );
    let k = kernel.to_string_lossy().into_owned();
    let c = core.to_string_lossy().into_owned();
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--core".into(),
                s(&truncated),
                "--kernel".into(),
                k.clone(),
                "maxcpu".into(),
            ],
            "core truncated",
        ),
        (
            vec![
                "--core".into(),
                s(&garbage),
                "--kernel".into(),
                k.clone(),
                "pcpu".into(),
            ],
            "not an ELF core",
        ),
        (
            vec![
                "--core".into(),
                c.clone(),
                "--kernel".into(),
                s(&other_elf),
                "pcpu".into(),
            ],
            "build id mismatch",
        ),
        (
            vec![
                "--core".into(),
                c.clone(),
                "--kernel".into(),
                s(&no_symbols),
                "pcpu".into(),
            ],
            "symbol kern_build_id not found in ELF",
        ),
        (
            vec![
                "--core".into(),
                c.clone(),
                "--kernel".into(),
                s(&garbage),
                "pcpu".into(),
            ],
            "not an ELF",
        ),
        (
            vec![
                "--core".into(),
                c.clone(),
                "--kernel".into(),
                k.clone(),
                "pcpu".into(),
                "5".into(),
            ],
            "CPU 5 is not active",
        ),
        (
            vec![
                "--core".into(),
                c.clone(),
                "--kernel".into(),
                k.clone(),
                "dpcpu".into(),
                COUNTER.into(),
                "--cpu".into(),
                "7".into(),
            ],
            "CPU 7 not found",
        ),
        (
            vec![
                "--live".into(),
                "127.0.0.1:1".into(),
                "--kernel".into(),
                k.clone(),
                "maxcpu".into(),
            ],
            "connecting to the gdbstub at 127.0.0.1:1",
        ),
    ];
    let mut cases: Vec<(Vec<String>, String)> = cases
        .into_iter()
        .map(|(args, expected)| (args, expected.to_owned()))
        .collect();
    cases.push((
        ["--core", &c, "--kernel", &k, "pcpu", &MAXCPUS.to_string()]
            .map(str::to_owned)
            .to_vec(),
        format!("CPU {MAXCPUS} too big (maxcpu {MAXCPUS})"),
    ));
    match contradictions(dir, kernel, mini) {
        Ok(more) => cases.extend(more),
        Err(e) => problems.push(e),
    }
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match cli(&args) {
            Ok((Some(1), stderr)) if stderr.contains(expected.as_str()) => {}
            Ok((status, stderr)) => problems.push(format!(
                "kvm {}: exit {status:?}, stderr {:?}, expected status 1 and {expected:?}",
                args.join(" "),
                stderr.trim()
            )),
            Err(e) => problems.push(e),
        }
    }
    // An address outside the dump, through the reader's `read`.
    let outside = (|| -> std::result::Result<String, String> {
        let elf = KernelElf::parse(&std::fs::read(kernel).map_err(|e| e.to_string())?)?;
        let memory = Core::open(core)?;
        let mut kd = Kvm::open(HostSource { elf, memory }).map_err(|e| e.to_string())?;
        match kd.read(0x1000, &mut [0u8; 8]) {
            Ok(()) => Err("reading 0x1000 succeeded".into()),
            Err(_) => Ok(kd.geterr().to_owned()),
        }
    })();
    match outside {
        Ok(message) if message == "address 0x1000 (8 bytes) outside the dump" => {}
        Ok(message) => problems.push(format!("read outside the dump: {message:?}")),
        Err(e) => problems.push(e),
    }
    // The good case through the CLI, so the failures above are not failures of everything.
    match cli(&["--core", &c, "--kernel", &k, "--json", "maxcpu"]) {
        Ok((Some(0), _)) => {}
        other => problems.push(format!("kvm maxcpu on the good core: {other:?}")),
    }
    problems
}

/// Cores and kernel ELFs that contradict each other, made from the real ones (the small core
/// of the pages the reader needs, and the test image), and what the CLI must say of each
/// (exit status 1): the contradictions of issue #19.
fn contradictions(
    dir: &Path,
    kernel: &Path,
    mini: Result<&Path, &str>,
) -> std::result::Result<Vec<(Vec<String>, String)>, String> {
    let mini = mini.map_err(str::to_owned)?;
    let elf_bytes = std::fs::read(kernel).map_err(|e| e.to_string())?;
    let elf = KernelElf::parse(&elf_bytes)?;
    let core_bytes = std::fs::read(mini).map_err(|e| e.to_string())?;
    let core = Core::parse(&core_bytes[..])?;
    let sym = |name: &str| {
        elf.symbol(name)
            .ok_or(format!("{name} not in the test image"))
    };
    let patch = |addr: u64, bytes: &[u8]| -> std::result::Result<Vec<u8>, String> {
        let at = core
            .file_offset(addr)
            .ok_or(format!("{addr:#x} not in the small core"))? as usize;
        let mut out = core_bytes.clone();
        out[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(out)
    };
    let write = |name: &str, bytes: &[u8]| -> std::result::Result<String, String> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path.to_string_lossy().into_owned())
    };
    let k = kernel.to_string_lossy().into_owned();
    let m = mini.to_string_lossy().into_owned();
    let args = |core: &str, kernel: &str, query: &[&str]| -> Vec<String> {
        ["--core", core, "--kernel", kernel]
            .iter()
            .chain(query)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let mut cases = Vec::new();

    // kern_maxcpus beyond the arrays the ELF declares.
    let beyond = MAXCPUS as u32 + 8;
    let maxcpus = write(
        &format!("maxcpus-{beyond}.core"),
        &patch(sym("kern_maxcpus")?, &beyond.to_le_bytes())?,
    )?;
    cases.push((
        args(&maxcpus, &k, &["pcpu", "20"]),
        format!(
            "error: kern_maxcpus = {beyond} in memory, but kern_cpu_info_ptrs has {MAXCPUS} \
             entries ({} bytes) in ELF",
            8 * MAXCPUS
        ),
    ));

    // A zero-filled segment over the CPU pointer array, first in the table.
    let mut ranges = vec![(sym("kern_cpu_info_ptrs")?, vec![0u8; 8 * MAXCPUS])];
    for seg in core.segments() {
        let mut bytes = vec![0u8; seg.filesz as usize];
        core.read(seg.paddr, &mut bytes)
            .map_err(|e| e.to_string())?;
        ranges.push((seg.paddr, bytes));
    }
    let overlap = write("overlap.core", &fixture::write_core(&ranges))?;
    cases.push((args(&overlap, &k, &["pcpu"]), "both hold memory at".into()));

    // CPU 2's offset in the table made CPU 1's.
    let table = sym("kern_dpcpu_off")?;
    let mut off1 = [0u8; 8];
    core.read(table + 8, &mut off1).map_err(|e| e.to_string())?;
    let shared = write("shared-offset.core", &patch(table + 16, &off1)?)?;
    cases.push((
        args(&shared, &k, &["pcpu", "2"]),
        "error: CPU 2: its CpuInfo says dpcpu_off = ".into(),
    ));
    cases.push((
        args(&shared, &k, &["dpcpu", COUNTER, "--all"]),
        "error: kern_dpcpu_off: cpu1 and cpu2 share one DPCPU copy".into(),
    ));

    // __dpcpu_end at the top of the address space, and equal to __dpcpu_start.
    let mut top = elf_bytes.clone();
    super::elf::set_symbol(&mut top, "__dpcpu_end", Some(u64::MAX), None)?;
    let top = write("dpcpu-end-top.elf", &top)?;
    cases.push((
        args(&m, &top, &["nlist", COUNTER, "--cpu", "1"]),
        "error: symbol __dpcpu_end (0xffffffffffffffff, 0 bytes) lies outside its section .dpcpu"
            .into(),
    ));
    let mut empty = elf_bytes.clone();
    super::elf::set_symbol(&mut empty, "__dpcpu_end", Some(sym("__dpcpu_start")?), None)?;
    let empty = write("dpcpu-end-start.elf", &empty)?;
    cases.push((
        args(&m, &empty, &["nlist", COUNTER]),
        "is not above __dpcpu_start".into(),
    ));

    // A DPCPU variable whose size runs past __dpcpu_end (by 8 bytes, wherever the link put
    // it: a fixed 64 KiB stayed inside when the 64 KiB trace ring followed the counter).
    let entry = format!("dpcpu_entry_{COUNTER}");
    let past_end = sym("__dpcpu_end")? - sym(&entry)? + 8;
    let mut long = elf_bytes.clone();
    super::elf::set_symbol(&mut long, &entry, None, Some(past_end))?;
    let long = write("dpcpu-long.elf", &long)?;
    cases.push((
        args(&m, &long, &["dpcpu", COUNTER, "--cpu", "1"]),
        "bytes at".into(),
    ));
    Ok(cases)
}

/// Cuts the pages the reader needed out of the core into `pages.core`.
fn cut_pages(
    dir: &Path,
    core: &Path,
    pages: &std::collections::BTreeSet<u64>,
) -> std::result::Result<PathBuf, String> {
    let Ok(full) = Core::open(core) else {
        return Err("no core to cut pages from".into());
    };
    let mut ranges: Vec<(u64, Vec<u8>)> = Vec::new();
    for &page in pages {
        let mut bytes = vec![0u8; 4096];
        if full.read(page << 12, &mut bytes).is_err() {
            continue;
        }
        match ranges.last_mut() {
            Some((start, data)) if *start + data.len() as u64 == page << 12 => {
                data.extend_from_slice(&bytes)
            }
            _ => ranges.push((page << 12, bytes)),
        }
    }
    if ranges.is_empty() {
        return Err("the reader touched no page of the core".into());
    }
    let mini = dir.join("pages.core");
    std::fs::write(&mini, fixture::write_core(&ranges))
        .map_err(|e| format!("{}: {e}", mini.display()))?;
    Ok(mini)
}

/// Runs the ignored host fuzz test on the small core with the real kernel ELF.
fn fuzz_real(ws: &Workspace, kernel: &Path, mini: Result<&Path, &str>) -> Vec<String> {
    let mini = match mini {
        Ok(mini) => mini,
        Err(e) => return vec![e.to_owned()],
    };
    let iterations =
        std::env::var("KVM_FUZZ_ITERS").unwrap_or_else(|_| REAL_FUZZ_ITERATIONS.into());
    eprintln!("xtask: kvm fuzz on the real ELF and the core's pages ({iterations} inputs)");
    let out = ws
        .cargo()
        .args([
            "test",
            "-p",
            "xtask",
            "--quiet",
            "kvm::fuzz::tests::fuzz_real_artifacts",
            "--",
            "--ignored",
            "--exact",
            "--nocapture",
        ])
        .env("KVM_FUZZ_ELF", kernel)
        .env("KVM_FUZZ_CORE", mini)
        .env("KVM_FUZZ_ITERS", &iterations)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.starts_with("kvm fuzz:")) {
                eprintln!("xtask: {line}");
            }
            Vec::new()
        }
        Ok(out) => vec![format!(
            "the fuzz test failed: {}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
                .filter(|l| l.contains("panicked") || l.contains("kvm fuzz"))
                .collect::<Vec<_>>()
                .join(" / ")
        )],
        Err(e) => vec![format!("running cargo test: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_parse_and_compare() {
        let line = "kvm-selftest cpu=2 self=0x40210080 mpidr=0x2 state=2 ipl=0 ipending=0x0 \
                    curlwp=0x0 dpcpu_off=0x10 intr=5 ticks=9 ipi=1,0,0,0 stack_base=0x1 \
                    stack_size=0x10000 ctxsw=0 idle_ticks=0 intr_ipl=0 intr_depth=0 \
                    counter=3014 counter_addr=0x4444";
        let f = parse_line(line, CPU_LINE).unwrap();
        assert_eq!(f["cpu"], 2);
        assert_eq!(f["self"], 0x4021_0080);
        assert_eq!(f["ipi0"], 1);
        assert_eq!(f["counter"], bumps(2));
        assert_eq!(parse_line(line, IN_KERNEL_LINE), None);
        assert_eq!(parse_line("kvm-selftest cpu=x", CPU_LINE), None);

        let want: BTreeMap<u64, Fields> = [(2, f.clone())].into();
        assert!(compare("t", &want, &want).is_empty());
        let mut other = f;
        other.insert("ticks".into(), 10);
        let got: BTreeMap<u64, Fields> = [(2, other)].into();
        assert_eq!(
            compare("core", &want, &got),
            ["core: cpu2 ticks = 0xa, the kernel printed 0x9"]
        );
        assert_eq!(compare("core", &want, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn reader_json_maps_to_the_kernel_line_keys() {
        let s = fixture::synthetic(2);
        let elf = KernelElf::parse(&s.elf).unwrap();
        let memory = Core::parse(&s.core[..]).unwrap();
        let mut kd = Kvm::open(HostSource { elf, memory }).unwrap();
        let pcpu = answer(&mut kd, &Query::Pcpu(None)).unwrap();
        let dpcpu = answer(
            &mut kd,
            &Query::Dpcpu {
                symbol: fixture::COUNTER.into(),
                cpus: CpuSel::All,
                size: Some(8),
            },
        )
        .unwrap();
        let got = fields_from_reader(&pcpu.json, &dpcpu.json);
        assert_eq!(got[&1]["counter"], s.counters[1]);
        assert_eq!(got[&1]["ticks"], s.cpus[1].tick_count);
        assert_eq!(got[&1]["ipi3"], 2);
        assert_eq!(got[&0]["state"], 2);
    }
}
