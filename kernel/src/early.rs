//! Console output, panics and faults before the MMU is on: on the boot CPU from the first line
//! of `kernel_main` until `mmu::enable` has turned the MMU on.
//!
//! With the MMU off every data access is to Device memory. Load/store-exclusive instructions
//! (every lock, `spin::Once`, an atomic swap or fetch-add) need a global exclusive monitor
//! there, which the Raspberry Pi 4 does not provide: the store-exclusive never succeeds and the
//! CPU retries for ever, silently (QEMU does not model this). And TPIDR_EL1, where `curcpu()`
//! is found later, holds nothing yet. So nothing here takes a lock, makes an atomic
//! read-modify-write or reads per-CPU data: text goes straight to the board's
//! `Platform::console_write` (registered with a plain store as `kernel_main`'s first step), and
//! the machine stops through `Platform::exit`. `cargo xtask test` disassembles everything
//! reachable before the MMU is on, this module included, and fails on any exclusive
//! (`xtask/src/premmu.rs`).
//!
//! The panic handler and the exception entry come here while SCTLR_EL1.M is clear
//! (`fault.rs`). `crash=early-panic` and `crash=early-fault` on the command line crash on
//! purpose right after the device tree is parsed, so the test suite sees both paths print.

use crate::arch::aarch64::esr::{Describe, write_fault_registers};
use crate::arch::aarch64::vectors::{ExceptionKind, TrapFrame};
use crate::arch::aarch64::{self as arch, backtrace};
use crate::platform::{Platform, try_platform};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// Set when the early panic or fault path starts, so that a panic inside it (the board's
/// console failing, say) stops instead of recursing. A plain load and store, not a swap: only
/// the boot CPU runs before the MMU is on.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The board's console as a `fmt::Write`, turning `\n` into `\r\n`.
struct Console(&'static dyn Platform);

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.0.console_write(b"\r\n");
            }
            self.0.console_write(line.as_bytes());
        }
        Ok(())
    }
}

/// Writes to the board's console without a lock (nothing, before the board is registered).
pub fn write(args: fmt::Arguments<'_>) {
    if let Some(board) = try_platform() {
        let _ = Console(board).write_fmt(args);
    }
}

/// Leaves the machine with status 1 through the board (or, before the board is registered,
/// waits for interrupts for ever with them masked).
fn stop() -> ! {
    if let Some(board) = try_platform() {
        board.exit(1);
    }
    loop {
        arch::irq_disable();
        arch::wait_for_interrupt();
    }
}

/// Enters the early panic or fault path once; a second entry (a failure inside the first)
/// stops at once.
fn enter() {
    if STOPPING.load(Ordering::Relaxed) {
        stop();
    }
    STOPPING.store(true, Ordering::Relaxed);
}

/// The boot stack's bounds, for a backtrace that cannot run off it.
fn boot_stack() -> (u64, u64) {
    // SAFETY: linker-script symbols; only their addresses are taken.
    unsafe {
        (
            &crate::arch::aarch64::linker::__boot_stack_bottom as *const u8 as u64,
            &crate::arch::aarch64::linker::__boot_stack_top as *const u8 as u64,
        )
    }
}

/// Writes a backtrace from frame pointer `fp`, led by `pc` when known, bounded by the boot
/// stack.
fn write_backtrace(pc: Option<u64>, fp: u64) {
    write(format_args!("  backtrace:\n"));
    let mut n = 0;
    if let Some(pc) = pc {
        write(format_args!("    #{n:<2} {pc:#018x}\n"));
        n += 1;
    }
    backtrace::walk(fp, Some(boot_stack()), 32, |lr| {
        // The return address points after the call; show the call itself.
        write(format_args!("    #{n:<2} {:#018x}\n", lr.wrapping_sub(4)));
        n += 1;
    });
}

/// Reports a problem found before the MMU is on and leaves the machine with status 1.
pub fn fail(what: fmt::Arguments<'_>) -> ! {
    enter();
    write(format_args!("\nkernel: {what}\n"));
    stop()
}

/// The panic handler's path while the MMU is off: the message, where, a backtrace, stop.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    enter();
    write(format_args!(
        "\npanic before the MMU is on: {}\n",
        info.message()
    ));
    if let Some(loc) = info.location() {
        write(format_args!(
            "  at {}:{}:{}\n",
            loc.file(),
            loc.line(),
            loc.column()
        ));
    }
    write_backtrace(None, arch::frame_pointer());
    stop()
}

/// The exception entry's path while the MMU is off: what happened, the registers, a
/// backtrace, stop.
pub fn exception(frame: &TrapFrame, kind: ExceptionKind) -> ! {
    enter();
    match kind {
        ExceptionKind::Sync => write(format_args!(
            "\nFAULT before the MMU is on: {}\n",
            Describe(frame.esr)
        )),
        other => write(format_args!(
            "\nFAULT before the MMU is on: unexpected exception {other:?}\n"
        )),
    }
    write_fault_registers(&mut |args| write(args), frame);
    write_backtrace(Some(frame.elr), frame.x[29]);
    stop()
}

/// Crashes as `crash=early-panic` or `crash=early-fault` in `bootargs` asks (anything else is
/// left to `fault::crash_on_request` once the system is up). Boot CPU, MMU off, right after
/// the device tree is parsed.
pub fn crash_on_request(bootargs: &str) {
    match crate::bootinfo::find_bootarg(bootargs, "crash") {
        Some("early-panic") => panic!("crash requested on the command line (crash=early-panic)"),
        Some("early-fault") => arch::undefined_instruction(),
        _ => {}
    }
}
