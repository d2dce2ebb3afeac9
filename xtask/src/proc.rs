//! Running child processes: sending their standard output to our standard error, and running
//! one non-interactively while reading its output line by line into a log, with a time limit.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use crate::workspace::Workspace;

/// How long to keep reading output after the process has ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How often to poll a child that closed its output but has not exited yet.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A duplicate of our standard error, to use as a child's standard output so that its output
/// does not mix with the lines xtask prints on standard output.
pub fn stdout_to_stderr() -> Result<Stdio> {
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")?;
    Ok(Stdio::from(fd))
}

/// An exit status in words: `status 3` or `signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// How a captured run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The process exited by itself.
    Exited(ExitStatus),
    /// The time limit passed and the process was killed.
    TimedOut,
}

/// The result of [`run_captured`].
#[derive(Debug)]
pub struct Captured {
    /// How the process ended.
    pub ending: Ending,
    /// Every line it printed on stdout or stderr, without line terminators.
    pub lines: Vec<String>,
    /// Wall-clock time from start to end.
    pub elapsed: Duration,
}

/// Runs `cmd` with no input, writing every line of its stdout and stderr to `log` and handing
/// it to `on_line` as it arrives. The process is killed once `timeout` has passed.
pub fn run_captured(
    cmd: &mut Command,
    log: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Captured> {
    Workspace::create_parent(log)?;
    let mut log_file =
        BufWriter::new(File::create(log).with_context(|| format!("creating {}", log.display()))?);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;

    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_reader(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_reader(err, tx.clone()));
    }
    drop(tx);

    let mut lines = Vec::new();
    // A log that cannot be written is reported once the process is gone, never left running.
    let mut log_error = None;
    let mut take = |line: String, lines: &mut Vec<String>| {
        if log_error.is_none()
            && let Err(e) = writeln!(log_file, "{line}")
        {
            log_error = Some(e);
        }
        on_line(&line);
        lines.push(line);
    };
    let timed_out = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => take(line, &mut lines),
            Err(mpsc::RecvTimeoutError::Timeout) => break true,
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };

    let status = if timed_out {
        None
    } else {
        // Output closed; the process should be about to exit.
        loop {
            if let Some(status) = child.try_wait().context("waiting for child")? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(EXIT_POLL);
        }
    };
    let ending = match status {
        Some(status) => Ending::Exited(status),
        None => {
            // Already exited between the checks is fine; only a failed wait is an error.
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("waiting for {program}"))?;
            Ending::TimedOut
        }
    };
    let elapsed = start.elapsed();
    // Whatever was still in flight when the process ended. A grandchild that inherited the
    // pipes could keep them open forever, so stop waiting after a short while.
    let mut drained = false;
    loop {
        match rx.recv_timeout(DRAIN_LIMIT) {
            Ok(line) => take(line, &mut lines),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                drained = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    if drained {
        for reader in readers {
            let _ = reader.join();
        }
    }
    if let Some(e) = log_error {
        return Err(e).with_context(|| format!("writing {}", log.display()));
    }
    log_file
        .flush()
        .with_context(|| format!("writing {}", log.display()))?;
    Ok(Captured {
        ending,
        lines,
        elapsed,
    })
}

/// Reads `pipe` to its end, sending each line (lossily decoded, terminators removed).
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!("xtask-proc-test-{}", std::process::id()))
            .join(format!("{name}.log"))
    }

    #[test]
    fn captures_both_streams_and_the_status() {
        let log = log_path("ok");
        let mut seen = Vec::new();
        let run = run_captured(
            Command::new("sh").args(["-c", "echo one; printf 'two\\r\\n'; echo three >&2; exit 3"]),
            &log,
            Duration::from_secs(30),
            |l| seen.push(l.to_owned()),
        )
        .unwrap();
        let Ending::Exited(status) = run.ending else {
            panic!("should have exited")
        };
        assert_eq!(status.code(), Some(3));
        let mut sorted = run.lines.clone();
        sorted.sort();
        assert_eq!(sorted, ["one", "three", "two"]);
        assert_eq!(seen, run.lines);
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(logged.lines().count(), 3);
        assert!(logged.contains("two\n"));
    }

    #[test]
    fn statuses_in_words() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "status 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9");
    }

    #[test]
    fn kills_on_timeout() {
        let log = log_path("timeout");
        let run = run_captured(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            &log,
            Duration::from_millis(300),
            |_| {},
        )
        .unwrap();
        assert_eq!(run.ending, Ending::TimedOut);
        assert_eq!(run.lines, ["started"]);
        assert!(run.elapsed < Duration::from_secs(10));
    }
}
