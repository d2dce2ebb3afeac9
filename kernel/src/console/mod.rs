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
//! # The input line
//!
//! While the monitor shows a prompt and the line being typed (`input_begin` .. `input_end`),
//! that line is kept here, under the same lock. Any other output then first erases it
//! (`\r` and "erase to end of line"), prints, ends its own last line if it left it open, and
//! draws the prompt and the typed text again, so a kernel message never lands in the middle of
//! what the user is typing and the user's text is never lost from the screen.
//!
//! Input arrives through the receive interrupt ([`rx`]) into a lock-free ring ([`ring`]).
//!
//! [`Platform::console_write`]: crate::platform::Platform::console_write

use crate::platform::try_platform;
use crate::sync::SpinLock;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

pub mod ring;
#[cfg(target_arch = "aarch64")]
pub mod rx;

/// The longest input line the console redraws (the monitor's line limit).
pub const INPUT_MAX: usize = 240;

/// The line being typed, while a prompt is shown.
struct InputLine {
    prompt: &'static str,
    buf: [u8; INPUT_MAX],
    len: usize,
    shown: bool,
}

static LOCK: SpinLock<InputLine> = SpinLock::new(InputLine {
    prompt: "",
    buf: [0; INPUT_MAX],
    len: 0,
    shown: false,
});
/// CPU index + 1 of the lock holder, 0 when free (for the panic path).
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// Writes to the platform console, turning `\n` into `\r\n` for terminals in raw mode, and
/// remembers whether the last byte ended a line.
struct Writer {
    at_line_start: bool,
}

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let Some(platform) = try_platform() else {
            return Ok(());
        };
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                platform.console_write(b"\r\n");
                self.at_line_start = true;
            }
            if !line.is_empty() {
                platform.console_write(line.as_bytes());
                self.at_line_start = false;
            }
        }
        Ok(())
    }
}

fn raw_write(bytes: &[u8]) {
    if let Some(platform) = try_platform() {
        platform.console_write(bytes);
    }
}

/// Erase the current terminal line: carriage return, then "erase to end of line" (ECMA-48 EL).
const ERASE_LINE: &[u8] = b"\r\x1b[K";

fn draw(line: &InputLine) {
    raw_write(line.prompt.as_bytes());
    raw_write(&line.buf[..line.len]);
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
    let guard = LOCK.lock();
    OWNER.store(this_cpu_tag(), Ordering::Relaxed);
    if guard.shown {
        raw_write(ERASE_LINE);
    }
    let mut w = Writer {
        at_line_start: true,
    };
    let _ = w.write_fmt(args);
    if guard.shown {
        if !w.at_line_start {
            raw_write(b"\r\n");
        }
        draw(&guard);
    }
    OWNER.store(0, Ordering::Relaxed);
}

/// Shows `prompt` and starts an empty input line (see the module documentation). Context:
/// thread (the one reader).
pub fn input_begin(prompt: &'static str) {
    let mut line = LOCK.lock();
    line.prompt = prompt;
    line.len = 0;
    line.shown = true;
    draw(&line);
}

/// Appends `b` to the input line and echoes it; false (nothing echoed) when the line is full.
pub fn input_push(b: u8) -> bool {
    let mut line = LOCK.lock();
    if line.len == INPUT_MAX {
        return false;
    }
    let len = line.len;
    line.buf[len] = b;
    line.len += 1;
    raw_write(&[b]);
    true
}

/// Removes the last byte of the input line from the line and the screen.
pub fn input_pop() {
    let mut line = LOCK.lock();
    if line.len > 0 {
        line.len -= 1;
        raw_write(b"\x08 \x08");
    }
}

/// Replaces the whole input line (Ctrl-U, history) and redraws it; `text` is cut at
/// [`INPUT_MAX`].
pub fn input_replace(text: &[u8]) {
    let mut line = LOCK.lock();
    let n = text.len().min(INPUT_MAX);
    line.buf[..n].copy_from_slice(&text[..n]);
    line.len = n;
    raw_write(ERASE_LINE);
    draw(&line);
}

/// Ends the input line: prints `suffix` (`^C` for a cancelled line, or nothing) and a line
/// end, and stops redrawing the prompt around other output.
pub fn input_end(suffix: &str) {
    let mut line = LOCK.lock();
    raw_write(suffix.as_bytes());
    raw_write(b"\r\n");
    line.shown = false;
    line.len = 0;
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
    if let Some(g) = guard.as_mut()
        && g.shown
    {
        // A prompt is on the screen: the report starts on a line of its own, and the prompt
        // is not drawn again.
        g.shown = false;
        raw_write(b"\r\n");
    }
    let _ = Writer {
        at_line_start: true,
    }
    .write_fmt(args);
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
