//! What a person sees while `cargo xtask test` runs: which step (configuration or check) is
//! running and how far the run is, then a table of every step's counts and time.
//!
//! On a terminal (and outside CI) that is an indicatif progress bar on stderr, with result
//! lines printed above it; otherwise (piped output, `CI` set, `--verbose`) plain
//! `xtask: [3/17] virt gic3 smp4` lines on stderr. Result lines go to stdout either way, as
//! before, so logs keep them. The run's state is process-wide (one `test` per process), so the
//! helpers that print result lines from other modules (`badtree`, `kvm::selftest`) record
//! their rows without being handed anything.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::test::{Counts, Verdict};

/// One finished step: a row of the summary table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The configuration or check (`virt gic3 smp4`, `host`).
    pub label: String,
    /// Its counts.
    pub counts: Counts,
    /// How long it ran, when measured.
    pub elapsed: Option<Duration>,
    /// Why it failed or was skipped, if it says.
    pub note: Option<String>,
}

struct State {
    bar: Option<ProgressBar>,
    planned: u64,
    started: u64,
    rows: Vec<Row>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<T>(f: impl FnOnce(&mut Option<State>) -> T) -> T {
    let mut guard = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Whether to draw a bar: only on a terminal, outside CI (`CI` unset, empty or `false`), and
/// not with `--verbose` (whose kernel output would scroll it away).
pub fn use_bar(stderr_is_terminal: bool, ci: Option<&str>, verbose: bool) -> bool {
    let in_ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    stderr_is_terminal && !in_ci && !verbose
}

/// Starts a run of about `planned` steps.
pub fn begin(planned: u64, verbose: bool) {
    let ci = std::env::var("CI").ok();
    let bar = use_bar(std::io::stderr().is_terminal(), ci.as_deref(), verbose).then(|| {
        let bar = ProgressBar::with_draw_target(Some(planned), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    });
    with_state(|s| {
        *s = Some(State {
            bar,
            planned,
            started: 0,
            rows: Vec::new(),
        });
    });
}

/// Says which step runs now.
pub fn running(label: &str) {
    let plain = with_state(|s| {
        let s = s.as_mut()?;
        s.started += 1;
        if s.started > s.planned {
            s.planned = s.started;
        }
        match &s.bar {
            Some(bar) => {
                bar.set_length(s.planned);
                bar.set_message(label.to_owned());
                None
            }
            None => Some(format!("xtask: [{}/{}] {label}", s.started, s.planned)),
        }
    });
    if let Some(line) = plain {
        eprintln!("{line}");
    }
}

/// Whether a bar is being drawn (child processes are then run quietly, so that their progress
/// lines do not tear it).
pub fn bar_active() -> bool {
    with_state(|s| s.as_ref().is_some_and(|s| s.bar.is_some()))
}

/// Says what the current step is doing, without counting a new step (plain mode: nothing, the
/// command lines printed say it).
pub fn status(message: &str) {
    with_state(|s| {
        if let Some(bar) = s.as_ref().and_then(|s| s.bar.as_ref()) {
            bar.set_message(message.to_owned());
        }
    });
}

/// Prints `line` on stdout, above the bar when there is one.
pub fn println(line: &str) {
    let bar = with_state(|s| s.as_ref().and_then(|s| s.bar.clone()));
    match bar {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// Prints `line` on stderr, above the bar when there is one.
pub fn eprintln(line: &str) {
    let bar = with_state(|s| s.as_ref().and_then(|s| s.bar.clone()));
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// Records a finished step (a row of the summary) and moves the bar on.
pub fn record(label: &str, verdict: &Verdict, elapsed: Option<Duration>) {
    with_state(|s| {
        if let Some(s) = s.as_mut() {
            s.rows.push(Row {
                label: label.to_owned(),
                counts: verdict.counts,
                elapsed,
                note: verdict.note.clone(),
            });
            if let Some(bar) = &s.bar {
                bar.set_position(s.rows.len() as u64);
            }
        }
    });
}

/// Ends the run: removes the bar and returns the rows.
pub fn finish() -> Vec<Row> {
    with_state(|s| {
        let state = s.take()?;
        if let Some(bar) = &state.bar {
            bar.finish_and_clear();
        }
        Some(state.rows)
    })
    .unwrap_or_default()
}

/// The summary table: one row a step with passed, failed, skipped and time, failed rows'
/// notes shortened to their first line.
pub fn summary_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let note = match (&r.note, r.counts.failed) {
                (Some(n), _) => n.lines().next().unwrap_or("").chars().take(70).collect(),
                (None, 0) => String::new(),
                (None, _) => "see above".to_owned(),
            };
            vec![
                r.label.clone(),
                r.counts.passed.to_string(),
                r.counts.failed.to_string(),
                r.counts.skipped.to_string(),
                r.elapsed
                    .map(|d| format!("{:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "-".to_owned()),
                note,
            ]
        })
        .collect();
    crate::table::render(
        &[
            "configuration",
            "passed",
            "failed",
            "skipped",
            "time",
            "note",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_only_on_a_terminal_outside_ci() {
        assert!(use_bar(true, None, false));
        assert!(use_bar(true, Some(""), false));
        assert!(use_bar(true, Some("false"), false));
        assert!(!use_bar(true, Some("true"), false));
        assert!(!use_bar(true, Some("1"), false));
        assert!(!use_bar(false, None, false));
        assert!(!use_bar(true, None, true));
    }

    #[test]
    fn summary_rows() {
        let rows = [
            Row {
                label: "host".into(),
                counts: Counts {
                    passed: 412,
                    failed: 0,
                    skipped: 0,
                },
                elapsed: None,
                note: None,
            },
            Row {
                label: "virt gic2 smp8".into(),
                counts: Counts {
                    passed: 80,
                    failed: 1,
                    skipped: 2,
                },
                elapsed: Some(Duration::from_millis(61_250)),
                note: Some("timeout after 300 s\nmore".into()),
            },
        ];
        assert_eq!(
            summary_table(&rows),
            "configuration   passed  failed  skipped  time    note\n\
             --------------  ------  ------  -------  ------  -------------------\n\
             host            412     0       0        -\n\
             virt gic2 smp8  80      1       2        61.2 s  timeout after 300 s\n"
        );
    }
}
