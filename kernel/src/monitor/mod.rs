//! The kernel monitor (`kdb> `): an interactive shell on the console, in its own thread, for
//! looking inside the running kernel and exercising its primitives by hand (NetBSD's ddb(4),
//! FreeBSD's ddb, Linux's kdb, for a kernel without user space).
//!
//! The monitor thread reads console input through the interrupt-driven receive path
//! (`console::rx`), edits the line (`line`: Backspace, Ctrl-U, Ctrl-C, Up/Down history) and
//! runs each `;`-separated command from the table that each command group module exports
//! (`cpus`, `threads`, `kthreads`, `intrs`, `xc`, `kvm`, `stress`, `trace`, `bench`, `power`). While a command runs, Ctrl-C
//! becomes a cancel request that long commands poll ([`cancelled`]). Tables are at most 80
//! columns wide and numbers carry units (`units`). A line starting with `#` is a comment.
//!
//! The monitor depends downward only (console, cpu, sched, intr, softint, workqueue, xcall,
//! kvm); boot starts it in the default image.

pub mod line;
pub mod units;

/// How the monitor's first line begins, once the kernel is up and waiting for commands (the
/// default image's last boot line; `cargo xtask dump` waits for it).
pub const BANNER: &str = "kdb: kernel monitor";

#[cfg(target_arch = "aarch64")]
mod bench;
#[cfg(target_arch = "aarch64")]
mod blk;
#[cfg(target_arch = "aarch64")]
mod cpus;
#[cfg(target_arch = "aarch64")]
mod intrs;
#[cfg(target_arch = "aarch64")]
mod kthreads;
#[cfg(target_arch = "aarch64")]
mod kvm;
#[cfg(target_arch = "aarch64")]
mod power;
#[cfg(target_arch = "aarch64")]
mod stress;
#[cfg(target_arch = "aarch64")]
mod threads;
#[cfg(target_arch = "aarch64")]
mod trace;
#[cfg(target_arch = "aarch64")]
mod xc;

#[cfg(target_arch = "aarch64")]
pub use run::*;

#[cfg(target_arch = "aarch64")]
mod run {
    use super::line::{Edit, LineEditor};
    use crate::console::{self, rx};
    use crate::kprintln;
    use alloc::string::String;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// The prompt.
    pub const PROMPT: &str = "kdb> ";

    /// Priority of the monitor thread: above timeshared work and the stress threads, so the
    /// monitor answers while they run.
    pub const PRI_MONITOR: u32 = 150;

    /// A command's result: `Err` is printed as one line, `kdb: NAME: MESSAGE`.
    pub type CmdResult = Result<(), String>;

    /// One monitor command.
    pub struct Command {
        /// What is typed.
        pub name: &'static str,
        /// Its arguments, for `help` (`CPU|all [high|low]`).
        pub args: &'static str,
        /// One line for `help`.
        pub summary: &'static str,
        /// More for `help NAME` (may be empty).
        pub detail: &'static str,
        /// Runs it with the words after the name. Context: the monitor thread.
        pub run: fn(&[&str]) -> CmdResult,
    }

    /// Every command group, in `help` order.
    const GROUPS: &[&[Command]] = &[
        HELP,
        super::cpus::COMMANDS,
        super::threads::COMMANDS,
        super::kthreads::COMMANDS,
        super::intrs::COMMANDS,
        super::xc::COMMANDS,
        super::kvm::COMMANDS,
        super::stress::COMMANDS,
        super::trace::COMMANDS,
        super::bench::COMMANDS,
        super::blk::COMMANDS,
        super::power::COMMANDS,
    ];

    const HELP: &[Command] = &[Command {
        name: "help",
        args: "[CMD]",
        summary: "list the commands, or explain one",
        detail: "Keys: Backspace, Ctrl-U (erase the line), Ctrl-C (cancel the line or stop a \
                 running command), Up/Down (history). Several commands on a line: `cpus; ps`. \
                 A line starting with # is ignored.",
        run: help,
    }];

    fn commands() -> impl Iterator<Item = &'static Command> {
        GROUPS.iter().flat_map(|g| g.iter())
    }

    fn help(args: &[&str]) -> CmdResult {
        match args {
            [] => {
                for c in commands() {
                    let usage = alloc::format!("{} {}", c.name, c.args);
                    kprintln!("  {usage:<29} {}", c.summary);
                }
                Ok(())
            }
            [name] => {
                let c = commands()
                    .find(|c| c.name == *name)
                    .ok_or_else(|| alloc::format!("no command `{name}`"))?;
                kprintln!("usage: {} {}", c.name, c.args);
                kprintln!("  {}", c.summary);
                if !c.detail.is_empty() {
                    for line in wrap(c.detail, 76) {
                        kprintln!("  {line}");
                    }
                }
                Ok(())
            }
            _ => Err("usage: help [CMD]".into()),
        }
    }

    /// `text` cut into lines of at most `width` characters at spaces.
    fn wrap(text: &str, width: usize) -> alloc::vec::Vec<String> {
        let mut lines = alloc::vec::Vec::new();
        let mut cur = String::new();
        for word in text.split_whitespace() {
            if !cur.is_empty() && cur.len() + 1 + word.len() > width {
                lines.push(core::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        lines
    }

    /// Whether Ctrl-C was typed since the running command started. Context: the monitor
    /// thread (and the threads it started for the command).
    pub fn cancelled() -> bool {
        rx::cancel_requested()
    }

    /// Lines the monitor has read, and the bytes in them (with the line ends): for `intr`.
    static LINES: AtomicU64 = AtomicU64::new(0);
    static LINE_BYTES: AtomicU64 = AtomicU64::new(0);

    /// (lines read, bytes in them) since boot.
    pub fn lines_read() -> (u64, u64) {
        (
            LINES.load(Ordering::Relaxed),
            LINE_BYTES.load(Ordering::Relaxed),
        )
    }

    /// Starts console input and the monitor thread. Context: thread at IPL_NONE, once, after
    /// soft interrupts and cross calls are set up. Without a console receive interrupt it
    /// says so and does nothing.
    pub fn start() {
        match rx::init() {
            Ok(irq) => kprintln!("console: input on interrupt {irq} at IPL_TTY"),
            Err(e) => {
                kprintln!("console: no input ({e:?}); no monitor");
                return;
            }
        }
        let r = crate::kthread::kthread_create(
            PRI_MONITOR as i32,
            crate::kthread::KTHREAD_MPSAFE,
            None,
            monitor_main,
            0,
            None,
            format_args!("monitor"),
        );
        if let Err(e) = r {
            kprintln!("monitor: cannot start its thread: {e:?}");
        }
    }

    fn monitor_main(_: usize) {
        let mut input = rx::reader().expect("the monitor is the console's only reader");
        let mut editor = LineEditor::new(console::INPUT_MAX);
        kprintln!("{}; type help (leave QEMU with Ctrl-A x)", super::BANNER);
        loop {
            let line = read_line(&mut input, &mut editor);
            for cmd in line.split(';') {
                execute(cmd.trim());
            }
        }
    }

    /// Shows the prompt and edits a line until Return (or Ctrl-C, which gives "").
    fn read_line(input: &mut rx::ConsoleReader, editor: &mut LineEditor) -> String {
        console::input_begin(PROMPT);
        let mut bytes = 0u64;
        loop {
            let b = input.getc();
            bytes += 1;
            match editor.feed(b) {
                Edit::None => {}
                Edit::Insert(b) => {
                    console::input_push(b);
                }
                Edit::Erase => console::input_pop(),
                Edit::Replace(text) => console::input_replace(&text),
                Edit::Submit(text) => {
                    console::input_end("");
                    LINES.fetch_add(1, Ordering::Relaxed);
                    LINE_BYTES.fetch_add(bytes, Ordering::Relaxed);
                    return text;
                }
                Edit::Cancel => {
                    console::input_end("^C");
                    LINE_BYTES.fetch_add(bytes, Ordering::Relaxed);
                    return String::new();
                }
            }
        }
    }

    /// Runs one command line (no `;`).
    fn execute(cmd: &str) {
        if cmd.is_empty() || cmd.starts_with('#') {
            return;
        }
        let words: alloc::vec::Vec<&str> = cmd.split_whitespace().collect();
        let Some(c) = commands().find(|c| c.name == words[0]) else {
            kprintln!("kdb: unknown command `{}`; type help", words[0]);
            return;
        };
        rx::cancel_arm();
        let r = (c.run)(&words[1..]);
        rx::cancel_disarm();
        if let Err(e) = r {
            kprintln!("kdb: {}: {e}", c.name);
        }
    }

    /// Parses a CPU index that names an attached CPU.
    pub fn parse_cpu(word: &str) -> Result<usize, String> {
        let cpu: usize = word
            .parse()
            .map_err(|_| alloc::format!("`{word}` is not a CPU number"))?;
        match crate::cpu::cpu_lookup(cpu) {
            Some(_) => Ok(cpu),
            None => Err(alloc::format!(
                "no cpu{cpu} (CPUs 0-{})",
                crate::cpu::ncpu() - 1
            )),
        }
    }
}
