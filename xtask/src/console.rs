//! The kernel's console as xtask sees it: QEMU's standard output relayed to ours with each
//! backtrace line symbolised on the fly ([`Annotator`]), and scripted sessions with the
//! monitor ([`Session`]: send a line when the `kdb> ` prompt is there, wait for the next one,
//! collect what the command printed).
//!
//! QEMU's stdio chardev reads its standard input and writes its standard output; only the
//! output goes through xtask. In an interactive `cargo xtask qemu` the terminal stays QEMU's
//! standard input, so QEMU still puts it in raw mode and Ctrl-A x still leaves.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::symbolize::Symbols;
use crate::workspace::Workspace;

/// The monitor's prompt.
pub const PROMPT: &str = "kdb> ";

/// The prompt as it starts a line. The line editor's redraws (Up, Ctrl-U) write it after
/// `\r` and "erase line" instead, so they are not taken for a new prompt.
const PROMPT_LINE: &[u8] = b"\nkdb> ";

/// Copies console output through, appending ` name+0xoff` to each backtrace line (`#N 0xADDR`)
/// just before its line end. Bytes are passed on as they come, so a prompt without a line
/// end shows at once.
pub struct Annotator {
    symbols: Option<Symbols>,
    line: Vec<u8>,
}

impl Annotator {
    /// An annotator with `symbols` (none: bytes pass unchanged).
    pub fn new(symbols: Option<Symbols>) -> Self {
        Self {
            symbols,
            line: Vec::new(),
        }
    }

    /// `bytes` as they should be shown.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if let Some(symbols) = &self.symbols
                    && let Ok(line) = std::str::from_utf8(&self.line)
                {
                    let annotated = symbols.annotate(line);
                    out.extend_from_slice(&annotated.as_bytes()[line.len()..]);
                }
                self.line.clear();
            } else if self.line.len() < 512 {
                self.line.push(b);
            }
            out.push(b);
        }
        out
    }
}

/// Spawns `cmd` with standard output piped; returns the child and a channel of its output
/// chunks (closed at end of output).
fn spawn_output(cmd: &mut Command, stdin: Stdio) -> Result<(Child, mpsc::Receiver<Vec<u8>>)> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((child, rx))
}

/// Runs `cmd` interactively (the terminal as its standard input), relaying its output with
/// backtraces symbolised from `elf`; returns its exit status.
pub fn relay(cmd: &mut Command, elf: &Path) -> Result<ExitStatus> {
    let (mut child, rx) = spawn_output(cmd, Stdio::inherit())?;
    let mut annotator = Annotator::new(Symbols::load(elf));
    let mut stdout = std::io::stdout();
    for chunk in rx {
        // Our standard output going away (a closed pipe) must not stop QEMU's console.
        let _ = stdout.write_all(&annotator.feed(&chunk));
        let _ = stdout.flush();
    }
    child.wait().context("waiting for QEMU")
}

/// A scripted session with the monitor of a running kernel.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Vec<u8>>,
    /// Everything the console printed so far (raw).
    out: Vec<u8>,
    /// Where the next wait for a prompt starts looking.
    mark: usize,
    annotator: Annotator,
    echo: bool,
    log: BufWriter<File>,
    closed: bool,
}

impl Session {
    /// Starts `cmd` (a QEMU command line) with its standard input and output piped, logging
    /// the console to `log`; with `echo`, the console is also shown on our standard output,
    /// backtraces symbolised from `elf`.
    pub fn start(cmd: &mut Command, log: &Path, elf: &Path, echo: bool) -> Result<Self> {
        Workspace::create_parent(log)?;
        let log = BufWriter::new(
            File::create(log).with_context(|| format!("creating {}", log.display()))?,
        );
        let (mut child, rx) = spawn_output(cmd, Stdio::piped())?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            rx,
            out: Vec::new(),
            mark: 0,
            annotator: Annotator::new(Symbols::load(elf)),
            echo,
            log,
            closed: false,
        })
    }

    /// Everything the console printed so far, as text (line ends as the kernel sent them).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// How many bytes the console has printed so far (a position for [`Session::output_since`]).
    pub fn position(&self) -> usize {
        self.out.len()
    }

    /// What the console printed from `pos` on, raw (line ends and escapes as sent).
    pub fn output_since(&self, pos: usize) -> String {
        String::from_utf8_lossy(&self.out[pos.min(self.out.len())..]).into_owned()
    }

    fn take(&mut self, chunk: Vec<u8>) {
        let _ = self.log.write_all(&chunk);
        if self.echo {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(&self.annotator.feed(&chunk));
            let _ = stdout.flush();
        }
        self.out.extend_from_slice(&chunk);
    }

    /// Reads output until `done(output since the mark)` holds; an error naming `what` when
    /// `timeout` passes or the output ends first.
    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[u8]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.out[self.mark..]) {
                return Ok(());
            }
            if self.closed {
                return Err(Error::new(format!(
                    "the console closed (QEMU ended) while waiting for {what}"
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.take(chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::new(format!(
                        "no {what} within {} s",
                        timeout.as_secs()
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Waits for `count` prompts after the mark, then moves the mark past the last.
    pub fn wait_prompts(&mut self, count: usize, timeout: Duration) -> Result<()> {
        let what = if count == 1 {
            "prompt".to_owned()
        } else {
            format!("{count} prompts")
        };
        self.wait_until(&what, timeout, |out| count_prompts(out) >= count)?;
        let mut end = self.mark;
        for _ in 0..count {
            end += find(&self.out[end..], PROMPT_LINE).expect("counted") + PROMPT_LINE.len();
        }
        self.mark = end;
        Ok(())
    }

    /// Waits until `text` appears after the mark (the mark stays).
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("`{text}`"), timeout, |out| {
            find(out, text.as_bytes()).is_some()
        })
    }

    /// Moves the mark to the end of what was printed so far: prompts drawn again around
    /// kernel messages (which look like new ones) are not waited for.
    pub fn skip_to_end(&mut self) {
        self.mark = self.out.len();
    }

    /// Waits until the output from `pos` on holds `count` occurrences of `text`.
    pub fn wait_count_since(
        &mut self,
        pos: usize,
        text: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<()> {
        let mark = std::mem::replace(&mut self.mark, pos.min(self.out.len()));
        let r = self.wait_until(&format!("{count} times `{text}`"), timeout, |out| {
            occurrences(out, text.as_bytes()) >= count
        });
        self.mark = mark;
        r
    }

    /// Writes `bytes` to the console's input as they are.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::new("the console's input is closed"))?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .context("writing to QEMU's standard input")
    }

    /// Types `line` and Return at the prompt (which must have been waited for) and waits for
    /// the next prompt; returns what the command printed (the lines after the echoed line, up
    /// to the prompt), with `\r\n` turned into `\n`.
    pub fn run(&mut self, line: &str, timeout: Duration) -> Result<String> {
        let start = self.mark;
        self.send(format!("{line}\r").as_bytes())?;
        self.wait_prompts(1, timeout)
            .map_err(|e| Error::new(format!("after `{line}`: {e}")))?;
        let text = String::from_utf8_lossy(&self.out[start..self.mark - PROMPT.len()])
            .replace("\r\n", "\n");
        // Drop the echoed line itself.
        Ok(match text.split_once('\n') {
            Some((_, rest)) => rest.to_owned(),
            None => String::new(),
        })
    }

    /// Closes the console's input and waits for QEMU to exit; `None` if it did not within
    /// `timeout` (it is killed then).
    pub fn finish(mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for QEMU")? {
                while let Ok(chunk) = self.rx.recv_timeout(Duration::from_millis(200)) {
                    self.take(chunk);
                }
                let _ = self.log.flush();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let _ = self.log.flush();
                return Ok(None);
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(chunk) => self.take(chunk),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session abandoned on an error must not leave QEMU running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self.log.flush();
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How many prompts start a line in `out`.
pub fn count_prompts(out: &[u8]) -> usize {
    occurrences(out, PROMPT_LINE)
}

/// How many times `needle` occurs in `hay`, without overlaps.
pub fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = hay;
    while let Some(i) = find(rest, needle) {
        n += 1;
        rest = &rest[i + needle.len()..];
    }
    n
}

/// The lines of a `--script` file or a `--cmd` string (`;`-separated): trimmed, empty ones
/// left out (a `;` inside a script line stays: the monitor splits it itself).
pub fn script_lines(text: &str, split_semicolons: bool) -> Vec<String> {
    let pieces: Vec<&str> = if split_semicolons {
        text.split([';', '\n']).collect()
    } else {
        text.lines().collect()
    };
    pieces
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_lines_are_annotated_before_their_line_end_and_the_rest_passes() {
        let symbols = Symbols::from_list(vec![(0x1000, 0x100, "kernel::a".into())]);
        let mut a = Annotator::new(Some(symbols));
        // Split across chunks, as a pipe may deliver it.
        let mut out = a.feed(b"kdb> panic\r\n    #0  0x00000000000010");
        out.extend(a.feed(b"20\r\n    #1  0x0000000000009999\r\nkdb> "));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "kdb> panic\r\n    #0  0x0000000000001020  kernel::a+0x20\r\n    \
             #1  0x0000000000009999\r\nkdb> "
        );
        let mut plain = Annotator::new(None);
        assert_eq!(plain.feed(b"    #0  0x1020\r\n"), b"    #0  0x1020\r\n");
    }

    #[test]
    fn prompts_are_counted() {
        assert_eq!(count_prompts(b""), 0);
        assert_eq!(count_prompts(b"\r\nkdb> cpus\r\n...\r\nkdb> "), 2);
        // A redraw after Up is not a new prompt.
        assert_eq!(count_prompts(b"\r\nkdb> \r\x1b[Kkdb> xc 0"), 1);
    }

    #[test]
    fn scripts_and_command_strings_become_lines() {
        assert_eq!(
            script_lines(" cpus;ps ;; intr ", true),
            ["cpus", "ps", "intr"]
        );
        assert_eq!(
            script_lines("cpus; ps\n\n  # note\nxc all\n", false),
            ["cpus; ps", "# note", "xc all"]
        );
    }
}
