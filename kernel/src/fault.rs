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
pub use crate::arch::aarch64::esr::{
    Describe, exception_class_name, fault_status_name, write_fault_registers,
};
use crate::arch::aarch64::vectors::{ExceptionKind, TrapFrame};
use crate::console::emergency_write;
use crate::cpu::{CpuState, cpus, curcpu};
use crate::intr::{Ipi, ipi_broadcast};
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Set by the first CPU to panic or fault fatally; any later one just stops.
static PANICKING: AtomicBool = AtomicBool::new(false);

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

/// Prints the full report of a synchronous exception.
pub fn print_fault_report(frame: &TrapFrame, what: &dyn fmt::Display) {
    let cpu = curcpu().index();
    emergency_write(format_args!("\nFAULT on cpu{cpu}: {what}\n"));
    write_fault_registers(&mut |args| emergency_write(args), frame);
    print_backtrace(Some(frame.elr), frame.x[29]);
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

/// Entered from the IRQ vector's short path (`irq_common`, MMU on) with the interrupted
/// code's resume address (ELR); returns the address to resume at, which `irq_common` puts
/// back in ELR: the same, or the start of an interrupted trace record, which starts over
/// (the restartable sequence of `arch::aarch64::trace`). Context: exception, IRQs masked.
#[unsafe(no_mangle)]
extern "C" fn kernel_irq(pc: u64) -> u64 {
    let pc = crate::arch::aarch64::trace::ras_restart(pc);
    crate::intr::irq_entry(pc);
    pc
}

/// [`kernel_exception`] once the MMU is on. Kept out of line: the pre-MMU check stops here.
#[inline(never)]
fn exception_mmu_on(frame: &mut TrapFrame, kind: u64) {
    match ExceptionKind::from_raw(kind) {
        ExceptionKind::Irq => {
            // An interrupted trace record starts over when the thread resumes (the
            // restartable sequence of `arch::aarch64::trace`).
            frame.elr = crate::arch::aarch64::trace::ras_restart(frame.elr);
            crate::intr::irq_entry(frame.elr)
        }
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
