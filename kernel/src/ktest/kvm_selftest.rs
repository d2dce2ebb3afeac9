//! The kvm end-to-end self-test (`kvm.selftest=1` on the test image's command line; `cargo
//! xtask test` boots it and reads the guest from outside).
//!
//! Every CPU bumps its copy of the DPCPU counter [`KVM_SELFTEST_COUNTER`] a different number of
//! times ([`bumps`]) in its test worker thread and stops its clock tick. Once all are done and
//! quiet (workers asleep, no tick, no IPI in flight), the boot thread prints one
//! `kvm-selftest cpu=N ...` line per CPU with every `CpuInfo` field and its counter, as the
//! kernel itself sees them, and keeps CPU 0 for good (a thread switch would change CPU 0's
//! `curlwp` and switch count). Then CPU 0 reads the same through the kvm reader over the running kernel
//! ([`LocalSource`](crate::kvm::local::LocalSource)), prints those as `kvm-selftest in-kernel
//! cpu=N ...` lines in the same format, compares them with the CPUs' own copies, prints
//! `kvm-selftest in-kernel: ok` (or what differed) and `kvm-selftest ready`, and idles without
//! exiting. xtask then takes a core through QMP and reads the guest through the gdbstub and
//! compares all three with the CPUs' own lines, field by field.
//!
//! Why every field can be compared exactly: after the tick is stopped no interrupt reaches a
//! CPU any more (no device interrupts exist, no IPI is sent once the CPUs are done), so the
//! counters, the IPL and everything else stand still until QEMU is stopped.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{BARRIER_COUNT, KTest, Message, all_cpus_barrier, run_one};
use crate::cpu::{CpuInfoSnapshot, MAXCPUS, cpu_lookup, cpus, curcpu, ncpu};
use crate::kvm::local::LocalSource;
use crate::kvm::{Kvm, KvmError};
use crate::{clock, kprintln};

crate::dpcpu_define! {
    /// Bumped [`bumps`]`(cpu)` times by each CPU in the self-test.
    pub static KVM_SELFTEST_COUNTER: AtomicU64 = AtomicU64::new(0);
}

/// The counter's name for `nlist` (without the `dpcpu_entry_` prefix).
pub const COUNTER_NAME: &str = "KVM_SELFTEST_COUNTER";

/// How many times CPU `cpu` bumps its counter: different for every CPU.
pub const fn bumps(cpu: usize) -> u64 {
    1000 * (cpu as u64 + 1) + 7 * cpu as u64
}

/// Line prefix of a CPU's own report.
pub const CPU_LINE: &str = "kvm-selftest cpu=";
/// Line prefix of the in-kernel reader's report.
pub const IN_KERNEL_LINE: &str = "kvm-selftest in-kernel cpu=";
/// Line prefix of the in-kernel reader's summary of each CPU's trace ring.
pub const TRACE_LINE: &str = "trace-selftest in-kernel cpu=";

/// Reads the trace rings through the reader on the running kernel, prints one
/// [`TRACE_LINE`] per CPU (head, lost, records, digest) and checks them against the workload;
/// returns the number of problems.
fn trace_check(expect: &super::trace_workload::Expect) -> Result<usize, KvmError> {
    let trace = Kvm::open(LocalSource::new())?.trace()?;
    for c in &trace.cpus {
        kprintln!(
            "{TRACE_LINE}{} head={} lost={} events={} digest={:#x}",
            c.cpu,
            c.head,
            c.lost,
            c.events.len(),
            trace.digest(c.cpu).unwrap_or(0)
        );
    }
    let problems = expect.check(&trace);
    for p in &problems {
        kprintln!("trace-selftest in-kernel: {p}");
    }
    Ok(problems.len())
}

/// Each CPU's counter address, as it saw it (for the in-kernel comparison).
static COUNTER_ADDR: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

static SELFTEST: KTest = KTest::new("kvm_selftest::bump_and_stop", bump_and_stop).all_cpus();

/// Formats one report line: `<prefix><cpu> self=.. mpidr=.. ... counter=N counter_addr=0x..`.
/// xtask parses it (`key=value` words).
pub fn format_line(
    out: &mut impl Write,
    prefix: &str,
    s: &CpuInfoSnapshot,
    counter: u64,
    addr: u64,
) {
    let _ = write!(
        out,
        "{prefix}{} self={:#x} mpidr={:#x} state={} ipl={} ipending={:#x} curlwp={:#x} \
         dpcpu_off={:#x} intr={} ticks={} ipi={},{},{},{} stack_base={:#x} stack_size={:#x} \
         ctxsw={} idle_ticks={} intr_ipl={} intr_depth={} counter={counter} counter_addr={addr:#x}",
        s.index,
        s.self_addr,
        s.mpidr,
        s.state,
        s.ipl,
        s.ipending,
        s.curlwp,
        s.dpcpu_off,
        s.intr_count,
        s.tick_count,
        s.ipi_count[0],
        s.ipi_count[1],
        s.ipi_count[2],
        s.ipi_count[3],
        s.stack_base,
        s.stack_size,
        s.ctxsw_count,
        s.idle_ticks,
        s.intr_ipl,
        s.intr_depth,
    );
}

/// A line buffer for [`format_line`] (no allocation needed, printed in one piece).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 512],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<not UTF-8>")
    }
}

/// One CPU's part: bump its counter, then stop its clock tick.
fn bump_and_stop() {
    let ci = curcpu();
    let counter = KVM_SELFTEST_COUNTER.get();
    for _ in 0..bumps(ci.index()) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    COUNTER_ADDR[ci.index()].store(counter as *const AtomicU64 as u64, Ordering::Relaxed);
    all_cpus_barrier();
    clock::stop_this_cpu();
}

/// Prints CPU `cpu`'s `CpuInfo` and counter as the kernel itself sees them.
fn print_cpu(cpu: usize) {
    let Some(ci) = cpu_lookup(cpu) else { return };
    let counter = KVM_SELFTEST_COUNTER.on_cpu(cpu);
    let mut line = Line::new();
    format_line(
        &mut line,
        CPU_LINE,
        &ci.snapshot(),
        counter.load(Ordering::Relaxed),
        counter as *const AtomicU64 as u64,
    );
    kprintln!("{}", line.as_str());
}

/// Reads every CPU through the reader on the running kernel, prints the lines, and compares
/// them with the CPUs' own `CpuInfo`; returns the number of differences.
fn in_kernel_check() -> Result<usize, KvmError> {
    let mut kd = Kvm::open(LocalSource::new())?;
    let maxcpu = kd.getmaxcpu()?;
    let mut differences = 0;
    if maxcpu as usize != MAXCPUS {
        kprintln!("kvm-selftest in-kernel: getmaxcpu {maxcpu}, MAXCPUS {MAXCPUS}");
        differences += 1;
    }
    for (cpu, own_addr) in COUNTER_ADDR.iter().enumerate() {
        let read = kd.getpcpu(cpu)?;
        let Some(own) = cpu_lookup(cpu) else {
            if read.is_some() {
                kprintln!("kvm-selftest in-kernel: CPU {cpu} is not attached but was read");
                differences += 1;
            }
            continue;
        };
        let Some(snap) = read else {
            kprintln!("kvm-selftest in-kernel: CPU {cpu} is attached but reads as inactive");
            differences += 1;
            continue;
        };
        let (addr, bytes) = kd.read_dpcpu(COUNTER_NAME, cpu as u32, 8)?;
        let mut value = [0u8; 8];
        value.copy_from_slice(&bytes);
        let value = u64::from_le_bytes(value);
        let mut line = Line::new();
        format_line(&mut line, IN_KERNEL_LINE, &snap, value, addr);
        kprintln!("{}", line.as_str());
        if snap != own.snapshot() {
            kprintln!(
                "kvm-selftest in-kernel: CPU {cpu}: the reader's CpuInfo differs from the CPU's own"
            );
            differences += 1;
        }
        let own_counter = KVM_SELFTEST_COUNTER.on_cpu(cpu).load(Ordering::Relaxed);
        let own_addr = own_addr.load(Ordering::Relaxed);
        if value != own_counter || addr != own_addr {
            kprintln!(
                "kvm-selftest in-kernel: CPU {cpu}: counter {value} at {addr:#x}, the CPU has \
                 {own_counter} at {own_addr:#x}"
            );
            differences += 1;
        }
    }
    Ok(differences)
}

/// Runs the self-test and idles for good (the machine is left for xtask to inspect).
/// Boot CPU, after all CPUs are up.
pub fn run() -> ! {
    // First the traced workload (tracing is off again afterwards, so the rings stand still).
    let expect = super::trace_workload::run(40, 30, 20);
    kprintln!("kvm-selftest: {} CPUs bump their DPCPU counters", ncpu());
    super::start_workers();
    BARRIER_COUNT.store(0, Ordering::Release);
    let mut failure = Message::new();
    if !run_one(&SELFTEST, &mut failure) {
        kprintln!("kvm-selftest: FAIL {}", failure.as_str());
    }
    // Every CPU's tick is stopped and its worker asleep; let the last wakeup IPIs land, then
    // nothing changes any more as long as this thread keeps the boot CPU (it never sleeps).
    let _ = super::wait_until(20, || false);
    for cpu in 0..ncpu() {
        print_cpu(cpu);
    }
    match in_kernel_check() {
        Ok(0) => kprintln!("kvm-selftest in-kernel: ok"),
        Ok(n) => kprintln!("kvm-selftest in-kernel: FAIL {n} differences"),
        Err(e) => kprintln!("kvm-selftest in-kernel: FAIL {e}"),
    }
    match trace_check(&expect) {
        Ok(0) => kprintln!("trace-selftest in-kernel: ok"),
        Ok(n) => kprintln!("trace-selftest in-kernel: FAIL {n} problems"),
        Err(e) => kprintln!("trace-selftest in-kernel: FAIL {e}"),
    }
    let online = cpus().filter(|c| c.is_online()).count();
    kprintln!("kvm-selftest ready ({online} CPUs online, idle)");
    // Stay the running thread of CPU 0 (a switch would change its CpuInfo).
    crate::arch::aarch64::irq_disable();
    loop {
        crate::arch::aarch64::wait_for_interrupt();
    }
}
