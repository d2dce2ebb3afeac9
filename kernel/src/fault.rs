//! Exceptions that are not interrupts, and panics: the fault report, stopping the machine.
//!
//! A synchronous exception in the kernel (data or instruction abort, undefined instruction,
//! FP/SIMD trap, ...) or a panic prints a report naming the CPU, the exception class, ESR, FAR,
//! ELR, all registers and a frame-pointer backtrace; then the other CPUs are stopped with a
//! halt IPI and the machine is left with a non-zero exit status (under QEMU, the emulator
//! exits with it).
//!
//! In the test image, a panic or fault inside a running test goes to the test harness first,
//! which ends that test (a failure, or a pass for a test that expects exactly that panic) and
//! carries on with the next.
//!
//! Before the MMU is on, both take the early paths of `early.rs` instead (no lock, no atomic
//! read-modify-write, no per-CPU data): the panic handler and `kernel_exception` check
//! SCTLR_EL1.M first and keep everything else in `panic_mmu_on` and `exception_mmu_on`, where
//! `cargo xtask test`'s pre-MMU check stops (`xtask/src/premmu.rs`): it accepts them as the
//! MMU-on halves only when called from a function that reads SCTLR_EL1.

use crate::arch::aarch64::backtrace;
use crate::arch::aarch64::vectors::{ExceptionKind, TrapFrame};
use crate::console::emergency_write;
use crate::cpu::{CpuState, cpus, curcpu};
use crate::intr::{Ipi, ipi_broadcast};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// Set by the first CPU to panic or fault fatally; any later one just stops.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// The exception class (ESR_EL1.EC) in words.
pub fn exception_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "WFI/WFE trap",
        0x07 => "FP/SIMD access trap",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "system register access trap",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other exception",
    }
}

/// The fault status code of an abort (ISS.DFSC/IFSC) in words.
pub fn fault_status_name(fsc: u64) -> &'static str {
    match fsc & 0x3f {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// One-line description of a synchronous exception: class, and for aborts the fault kind,
/// level and access (e.g. "data abort: permission fault, level 3, on write").
pub struct Describe(pub u64);

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.0;
        let ec = (esr >> 26) & 0x3f;
        write!(f, "{}", exception_class_name(ec))?;
        if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
            let fsc = esr & 0x3f;
            write!(f, ": {}", fault_status_name(fsc))?;
            if fsc < 0x10 {
                write!(f, ", level {}", fsc & 3)?;
            }
            if matches!(ec, 0x24 | 0x25) {
                let access = if esr & (1 << 6) != 0 { "write" } else { "read" };
                write!(f, ", on {access}")?;
            } else {
                write!(f, ", on instruction fetch")?;
            }
        }
        Ok(())
    }
}

/// The stack bounds of this CPU, for a safe backtrace walk.
fn stack_bounds() -> Option<(u64, u64)> {
    if crate::sched::started()
        && let Some(bounds) = crate::sched::curlwp().stack_bounds()
    {
        return Some(bounds);
    }
    let ci = curcpu();
    let base = ci.stack_base.load(Ordering::Relaxed);
    let size = ci.stack_size.load(Ordering::Relaxed);
    (size != 0).then_some((base, base + size))
}

/// Prints the backtrace from frame pointer `fp`, led by `pc` when known.
fn print_backtrace(pc: Option<u64>, fp: u64) {
    emergency_write(format_args!("  backtrace:\n"));
    let mut n = 0;
    if let Some(pc) = pc {
        emergency_write(format_args!("    #{n:<2} {pc:#018x}\n"));
        n += 1;
    }
    backtrace::walk(fp, stack_bounds(), 32, |lr| {
        // The return address points after the call; show the call itself.
        emergency_write(format_args!("    #{n:<2} {:#018x}\n", lr.wrapping_sub(4)));
        n += 1;
    });
}

/// Writes the register part of a fault report through `out`: the exception class, ESR, FAR,
/// ELR, SPSR and SP on two lines, then x0-x30 four to a line. No lock, no per-CPU data (the
/// early path uses it too).
pub(crate) fn write_fault_registers(out: &mut dyn FnMut(fmt::Arguments<'_>), frame: &TrapFrame) {
    let ec = (frame.esr >> 26) & 0x3f;
    out(format_args!(
        "  exception class {ec:#04x}  ESR {:#010x}  FAR {:#018x}\n  \
         ELR {:#018x}  SPSR {:#010x}  SP {:#018x}\n",
        frame.esr, frame.far, frame.elr, frame.spsr, frame.sp
    ));
    for row in 0..8 {
        let mut line = Line::new();
        for col in 0..4 {
            let r = row * 4 + col;
            if r < 31 {
                let _ = write!(line, "  x{r:<2} {:#018x}", frame.x[r]);
            }
        }
        out(format_args!("{}\n", line.as_str()));
    }
}

/// Prints the full report of a synchronous exception.
pub fn print_fault_report(frame: &TrapFrame, what: &dyn fmt::Display) {
    let cpu = curcpu().index();
    emergency_write(format_args!("\nFAULT on cpu{cpu}: {what}\n"));
    write_fault_registers(&mut |args| emergency_write(args), frame);
    print_backtrace(Some(frame.elr), frame.x[29]);
}

/// A small stack buffer for composing one line without allocating.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Stops every other CPU, says how many stopped, and leaves the machine with status 1 (or,
/// with `panic.hold=1` on the command line, keeps it halted so a crash dump can be taken).
fn stop_machine() -> ! {
    ipi_broadcast(Ipi::Halt);
    // Give them a moment to stop so their output does not trail ours; never wait forever.
    let me = curcpu().index();
    let others = || cpus().filter(move |ci| ci.index() != me);
    for _ in 0..1_000_000 {
        if others().all(|ci| ci.state() != CpuState::Online) {
            break;
        }
        crate::arch::aarch64::cpu_relax();
    }
    let halted = others().filter(|ci| ci.state() == CpuState::Halted).count();
    emergency_write(format_args!(
        "other CPUs halted: {halted} of {}\n",
        others().count()
    ));
    if crate::bootinfo::bootarg("panic.hold") == Some("1") {
        // `cargo xtask dump --dump-on-panic`: keep the machine as it is for a crash dump.
        emergency_write(format_args!("held for a crash dump (panic.hold=1)\n"));
        loop {
            crate::arch::aarch64::irq_disable();
            crate::arch::aarch64::wait_for_interrupt();
        }
    }
    crate::platform::platform().exit(1)
}

/// Crashes on purpose, as `crash=KIND` on the command line asks (`data-abort` or `panic`), so
/// the fatal path itself (report, halting the other CPUs, exit status) can be tested and
/// crash dumps can be taken. Context: thread, boot CPU, after all CPUs are up. (The
/// `early-panic` and `early-fault` kinds crashed before the MMU was on: `early.rs`.)
pub fn crash_on_request(kind: &str) {
    match kind {
        "early-panic" | "early-fault" => {}
        "data-abort" => {
            // SAFETY: deliberately reads an unmapped address (64 GiB) to take the fault path.
            let value = unsafe { (0x10_0000_0000 as *const u64).read_volatile() };
            panic!("read {value:#x} from an unmapped address without a fault");
        }
        "panic" => panic!("crash requested on the command line"),
        other => crate::kprintln!(
            "warning: crash={other} ignored (data-abort, panic, early-panic or early-fault)"
        ),
    }
}

/// Where a panic or a synchronous fault may be recovered from instead of stopping the machine:
/// the test harness installs these (each returns if it does not take the failure over).
pub struct RecoveryHooks {
    /// Called first by the panic handler (IRQs masked).
    pub on_panic: fn(&core::panic::PanicInfo<'_>),
    /// Called for a synchronous fault after thread faults were turned into panics.
    pub on_fault: fn(&TrapFrame, &dyn fmt::Display),
}

static RECOVERY: spin::Once<RecoveryHooks> = spin::Once::new();

/// Installs the recovery hooks (once). Keeps this module from naming the test harness, which
/// sits above it. Context: thread, before the failures it should catch.
pub fn set_recovery_hooks(hooks: RecoveryHooks) {
    RECOVERY.call_once(|| hooks);
}

/// Entered from the vectors for every exception. Context: exception, IRQs masked.
#[unsafe(no_mangle)]
extern "C" fn kernel_exception(frame: &mut TrapFrame, kind: u64) {
    if !crate::arch::aarch64::mmu_enabled() {
        crate::early::exception(frame, ExceptionKind::from_raw(kind));
    }
    exception_mmu_on(frame, kind);
}

/// [`kernel_exception`] once the MMU is on. Kept out of line: the pre-MMU check stops here.
#[inline(never)]
fn exception_mmu_on(frame: &mut TrapFrame, kind: u64) {
    match ExceptionKind::from_raw(kind) {
        ExceptionKind::Irq => crate::intr::irq_entry(frame.elr),
        ExceptionKind::Sync => {
            thread_fault(frame);
            let what = Describe(frame.esr);
            if let Some(hooks) = RECOVERY.get() {
                (hooks.on_fault)(frame, &what);
            }
            fatal(frame, &what)
        }
        other => {
            let what = format_args!("unexpected exception {other:?}");
            fatal(frame, &what)
        }
    }
}

/// Faults that are a thread's own mistake get a message naming the thread, as a panic (so the
/// test harness can catch them): running off the stack into its guard page, and FP/SIMD use
/// outside `kthread_fpu_enter`/`exit`.
fn thread_fault(frame: &TrapFrame) {
    if !crate::sched::started() {
        return;
    }
    let l = crate::sched::curlwp();
    let ec = (frame.esr >> 26) & 0x3f;
    if ec == 0x25
        && let Some(slot) = crate::sched::stack::guard_slot(frame.far)
        && l.stack_index() == Some(slot)
    {
        print_fault_report(frame, &Describe(frame.esr));
        panic!(
            "stack overflow in thread {} (FAR {:#x} is its guard page, SP {:#x})",
            l.name(),
            frame.far,
            frame.sp
        );
    }
    if ec == 0x07 {
        panic!(
            "FP/SIMD instruction at {:#x} outside kthread_fpu_enter/exit in thread {}",
            frame.elr,
            l.name()
        );
    }
}

fn fatal(frame: &TrapFrame, what: &dyn fmt::Display) -> ! {
    if PANICKING.swap(true, Ordering::AcqRel) {
        crate::intr::halt_this_cpu();
    }
    print_fault_report(frame, what);
    stop_machine()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::arch::aarch64::irq_disable();
    if !crate::arch::aarch64::mmu_enabled() {
        crate::early::panic(info);
    }
    panic_mmu_on(info)
}

/// The panic handler once the MMU is on. Kept out of line: the pre-MMU check stops here.
#[inline(never)]
fn panic_mmu_on(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Some(hooks) = RECOVERY.get() {
        (hooks.on_panic)(info);
    }
    if PANICKING.swap(true, Ordering::AcqRel) {
        crate::intr::halt_this_cpu();
    }
    let cpu = if crate::arch::aarch64::read_tpidr() != 0 {
        curcpu().index()
    } else {
        0
    };
    emergency_write(format_args!("\npanic on cpu{cpu}: {}\n", info.message()));
    if let Some(loc) = info.location() {
        emergency_write(format_args!(
            "  at {}:{}:{}\n",
            loc.file(),
            loc.line(),
            loc.column()
        ));
    }
    if crate::arch::aarch64::read_tpidr() != 0 {
        print_backtrace(None, crate::arch::aarch64::frame_pointer());
        stop_machine()
    }
    match crate::platform::try_platform() {
        Some(p) => p.exit(1),
        None => loop {
            crate::arch::aarch64::wait_for_interrupt();
        },
    }
}
