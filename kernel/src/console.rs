//! The kernel console: `kprint!`/`kprintln!` on top of the board's [`Platform::console_write`].
//!
//! One lock serialises all output, and a `kprintln!` writes its whole text while holding it,
//! so lines from different CPUs never interleave mid-line. The lock masks IRQs, so printing
//! from an interrupt handler cannot deadlock against the CPU it interrupted. The panic path
//! uses [`emergency_write`], which does not wait forever for a lock whose holder may be the
//! panicking CPU itself or a CPU that will never run again.
//!
//! Context: thread or interrupt; never at IPL_HIGH in code that must not spin (NetBSD's rule:
//! no printing at IPL_HIGH), though nothing enforces that yet.
//!
//! [`Platform::console_write`]: crate::platform::Platform::console_write

use crate::platform::try_platform;
use crate::sync::SpinLock;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

static LOCK: SpinLock<()> = SpinLock::new(());
/// CPU index + 1 of the lock holder, 0 when free (for the panic path).
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// Writes to the platform console, turning `\n` into `\r\n` for terminals in raw mode.
struct Writer;

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let Some(platform) = try_platform() else {
            return Ok(());
        };
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                platform.console_write(b"\r\n");
            }
            platform.console_write(line.as_bytes());
        }
        Ok(())
    }
}

fn this_cpu_tag() -> usize {
    #[cfg(target_arch = "aarch64")]
    if crate::arch::aarch64::read_tpidr() != 0 {
        return crate::cpu::cpu_number() + 1;
    }
    usize::MAX
}

/// Prints formatted text atomically with respect to other CPUs. Used by the macros.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    OWNER.store(this_cpu_tag(), Ordering::Relaxed);
    let _ = Writer.write_fmt(args);
    OWNER.store(0, Ordering::Relaxed);
}

/// Prints on the panic path: takes the lock if it can within a bounded wait, and otherwise
/// (holder is this CPU, or a CPU that stopped) writes anyway.
pub fn emergency_write(args: fmt::Arguments<'_>) {
    let mine = OWNER.load(Ordering::Relaxed) == this_cpu_tag();
    let mut guard = None;
    if !mine {
        for _ in 0..1_000_000 {
            if let Some(g) = LOCK.try_lock() {
                guard = Some(g);
                break;
            }
            core::hint::spin_loop();
        }
    }
    let _ = Writer.write_fmt(args);
    drop(guard);
}

/// Prints to the console. Context: thread or interrupt.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console; the line is never interleaved with another CPU's output.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::print_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
