//! `cargo xtask bench`: boots the bench image under `-icount` on every configuration of
//! [`BENCH_MATRIX`] and prints the kernel's `metric=` lines in canonical form (see
//! `shared/reference/bench-format.md`), optionally also as JSON.
//!
//! The kernel does not know the board or the GIC, so it prints e.g.
//! `metric=ctx_switch unit=ns median=.. min=.. max=.. n=..`; xtask sets `board`, `smp`, `gic`
//! and `mode` and prints the fields in the canonical order. Only metric lines go to stdout;
//! progress goes to stderr.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Number, Value};

use crate::args::BenchArgs;
use crate::board::{Board, Gic, Machine, Profile, Variant};
use crate::error::{Context, Error, Result};
use crate::proc::{self, Ending};
use crate::qemu::QemuRun;
use crate::workspace::Workspace;
use crate::{image, tools};

/// The QEMU configurations the bench image runs on, in this order.
pub const BENCH_MATRIX: &[Machine] = &[
    Machine::virt(Gic::V3, 1),
    Machine::virt(Gic::V3, 2),
    Machine::virt(Gic::V3, 4),
    Machine::virt(Gic::V3, 8),
    Machine::virt(Gic::V2, 4),
];

/// The timing mode of every run: QEMU's deterministic instruction counting.
const MODE: &str = "icount";

/// Keys xtask sets itself, whatever the kernel printed for them.
const HOST_KEYS: &[&str] = &["board", "smp", "gic", "mode"];

/// Keys the kernel must print, after `metric=`.
const REQUIRED_KEYS: &[&str] = &["unit", "median", "min", "max", "n"];

/// How many lines of a failed run's log to show.
const TAIL_LINES: usize = 20;

/// A numeric field: the text the kernel printed and its JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    text: String,
    value: Number,
}

impl Figure {
    /// Parses a decimal number (integer or fraction); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let value = if let Ok(n) = text.parse::<u64>() {
            Number::from(n)
        } else if let Ok(n) = text.parse::<i64>() {
            Number::from(n)
        } else {
            let looks_numeric = text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
            if !looks_numeric {
                return None;
            }
            Number::from_f64(text.parse::<f64>().ok()?)?
        };
        Some(Self {
            text: text.to_owned(),
            value,
        })
    }
}

/// One benchmark figure in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name (`metric=`).
    pub name: String,
    /// Board name.
    pub board: Board,
    /// CPU count.
    pub smp: u32,
    /// GIC version.
    pub gic: Gic,
    /// Unit of the figures.
    pub unit: String,
    /// Median of the samples.
    pub median: Figure,
    /// Smallest sample.
    pub min: Figure,
    /// Largest sample.
    pub max: Figure,
    /// Number of samples.
    pub n: u64,
    /// Any further `key=value` fields the kernel printed, in its order.
    pub extra: Vec<(String, String)>,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "metric={} board={} smp={} gic={} unit={} median={} min={} max={} n={} mode={MODE}",
            self.name,
            self.board,
            self.smp,
            self.gic,
            self.unit,
            self.median.text,
            self.min.text,
            self.max.text,
            self.n
        )?;
        for (key, value) in &self.extra {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

impl Metric {
    /// The figure as a one-line JSON object, fields in canonical order, numbers as numbers.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(&str, Value)> = vec![
            ("metric", Value::from(self.name.as_str())),
            ("board", Value::from(self.board.name())),
            ("smp", Value::from(self.smp)),
            ("gic", Value::from(self.gic.number())),
            ("unit", Value::from(self.unit.as_str())),
            ("median", Value::Number(self.median.value.clone())),
            ("min", Value::Number(self.min.value.clone())),
            ("max", Value::Number(self.max.value.clone())),
            ("n", Value::from(self.n)),
            ("mode", Value::from(MODE)),
        ];
        for (key, value) in &self.extra {
            let value = match Figure::parse(value) {
                Some(figure) => Value::Number(figure.value),
                None => Value::from(value.as_str()),
            };
            fields.push((key, value));
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("{}: {value}", Value::from(*key)))
            .collect();
        format!("{{{}}}", body.join(", "))
    }
}

/// A JSON array of `metrics`, one object per line.
pub fn to_json(metrics: &[Metric]) -> String {
    if metrics.is_empty() {
        return "[]\n".to_owned();
    }
    let objects: Vec<String> = metrics
        .iter()
        .map(|m| format!("  {}", m.to_json()))
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

/// Parses a kernel output line. `None` if it is not a metric line (does not start with
/// `metric=`); an error if it is one but malformed.
pub fn parse_metric(line: &str, machine: Machine) -> Option<Result<Metric>> {
    let line = line.trim();
    if !line.starts_with("metric=") {
        return None;
    }
    Some(parse_fields(line, machine).map_err(|e| Error::new(format!("{e} in `{line}`"))))
}

fn parse_fields(line: &str, machine: Machine) -> Result<Metric> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for token in line.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| Error::new(format!("`{token}` is not key=value")))?;
        if key.is_empty() || value.is_empty() {
            return Err(Error::new(format!("`{token}` is not key=value")));
        }
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(Error::new(format!("`{key}` appears twice")));
        }
        fields.push((key, value));
    }
    let get = |key: &str| -> Result<&str> {
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| Error::new(format!("missing `{key}=`")))
    };
    let figure = |key: &str| -> Result<Figure> {
        let text = get(key)?;
        Figure::parse(text).ok_or_else(|| Error::new(format!("`{key}={text}` is not a number")))
    };
    let n_text = get("n")?;
    let n = n_text
        .parse()
        .map_err(|_| Error::new(format!("`n={n_text}` is not a whole number")))?;
    let extra = fields
        .iter()
        .filter(|(k, _)| *k != "metric" && !HOST_KEYS.contains(k) && !REQUIRED_KEYS.contains(k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Ok(Metric {
        name: get("metric")?.to_owned(),
        board: machine.board,
        smp: machine.smp,
        gic: machine.gic,
        unit: get("unit")?.to_owned(),
        median: figure("median")?,
        min: figure("min")?,
        max: figure("max")?,
        n,
        extra,
    })
}

/// `cargo xtask bench`.
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<ExitCode> {
    tools::ensure_qemu(tools::install_allowed_here(args.no_install))?;
    let kernel = image::build(ws, Board::Virt, Variant::Bench, Profile::Release)?;
    let mut metrics = Vec::new();
    let mut problems = Vec::new();
    let only = args.smp.map(|smp| [Machine::virt(Gic::V3, smp)]);
    let machines: &[Machine] = only.as_ref().map_or(BENCH_MATRIX, |m| m.as_slice());
    for &machine in machines {
        let run = QemuRun {
            icount: true,
            ..QemuRun::new(machine, &kernel)
        };
        run_config(ws, &run, args, &mut metrics, &mut problems)?;
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("xtask: bench: {problem}");
        }
        if let Some(path) = &args.json {
            eprintln!(
                "xtask: bench: not writing {} because of the errors above",
                path.display()
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    if let Some(path) = &args.json {
        write_json(path, &metrics)?;
        eprintln!(
            "xtask: bench: wrote {} figures to {}",
            metrics.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the bench image on one machine, printing each metric line as it arrives.
fn run_config(
    ws: &Workspace,
    run: &QemuRun,
    args: &BenchArgs,
    metrics: &mut Vec<Metric>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let label = run.machine.label();
    let log = ws.log_path(&run.machine.log_stem(Variant::Bench));
    eprintln!("xtask: bench {label}: {}", run.display());
    let before = metrics.len();
    let mut bad_lines = Vec::new();
    let captured =
        proc::run_captured(
            &mut run.command(),
            &log,
            args.timeout,
            |line| match parse_metric(line, run.machine) {
                Some(Ok(metric)) => {
                    println!("{metric}");
                    metrics.push(metric);
                }
                Some(Err(e)) => bad_lines.push(format!("{label}: {e}")),
                None => {}
            },
        )?;
    let found = metrics.len() - before;
    let failure = match captured.ending {
        Ending::TimedOut => Some(format!("timeout after {} s", args.timeout.as_secs())),
        Ending::Exited(status) if !status.success() => {
            Some(format!("QEMU exited with {}", proc::describe(status)))
        }
        Ending::Exited(_) if found == 0 => Some("no metric= lines were printed".to_owned()),
        Ending::Exited(_) => None,
    };
    eprintln!(
        "xtask: bench {label}: {found} figures ({:.1} s){}",
        captured.elapsed.as_secs_f64(),
        failure
            .as_ref()
            .map(|f| format!(" - {f}"))
            .unwrap_or_default()
    );
    if failure.is_some() {
        let skip = captured.lines.len().saturating_sub(TAIL_LINES);
        eprintln!("xtask: bench {label}: last lines of {}:", log.display());
        for line in &captured.lines[skip..] {
            eprintln!("  {line}");
        }
    }
    problems.extend(bad_lines);
    problems.extend(failure.map(|f| format!("{label}: {f} (log: {})", log.display())));
    Ok(())
}

/// Writes `metrics` to `path` as a JSON array.
fn write_json(path: &Path, metrics: &[Metric]) -> Result<()> {
    Workspace::create_parent(path)?;
    std::fs::write(path, to_json(metrics)).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMP4: Machine = Machine::virt(Gic::V3, 4);

    fn metric(line: &str, machine: Machine) -> Metric {
        match parse_metric(line, machine) {
            Some(Ok(m)) => m,
            other => panic!("`{line}` should parse, got {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        match parse_metric(line, SMP4) {
            Some(Err(e)) => e.to_string(),
            other => panic!("`{line}` should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn kernel_line_gets_host_fields_in_canonical_order() {
        let m = metric(
            "metric=boot_all_cpus_online unit=ns median=1200 min=1100 max=1500 n=1000\r",
            SMP4,
        );
        assert_eq!(
            m.to_string(),
            "metric=boot_all_cpus_online board=virt smp=4 gic=3 unit=ns median=1200 min=1100 \
             max=1500 n=1000 mode=icount"
        );
    }

    #[test]
    fn host_fields_override_the_kernel_and_order_is_restored() {
        let m = metric(
            "metric=ctx_switch mode=mttcg n=5 max=9 min=1.5 median=2.25 unit=ticks gic=2 smp=1 \
             board=rpi4",
            Machine::virt(Gic::V2, 8),
        );
        assert_eq!(
            m.to_string(),
            "metric=ctx_switch board=virt smp=8 gic=2 unit=ticks median=2.25 min=1.5 max=9 n=5 \
             mode=icount"
        );
    }

    #[test]
    fn extra_fields_are_kept_after_mode() {
        let m = metric(
            "metric=wq_throughput unit=ops_per_s median=10 min=9 max=11 n=3 cpu=2 note=warm",
            SMP4,
        );
        assert!(m.to_string().ends_with(" n=3 mode=icount cpu=2 note=warm"));
        let json: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(json["cpu"], Value::from(2));
        assert_eq!(json["note"], Value::from("warm"));
    }

    #[test]
    fn non_metric_lines_are_ignored() {
        assert!(parse_metric("boot: 4 cpus online", SMP4).is_none());
        assert!(parse_metric("  bench: metric=x", SMP4).is_none());
    }

    #[test]
    fn malformed_metric_lines_are_errors() {
        assert!(error("metric=x unit=ns median=1 min=1 max=1").contains("missing `n=`"));
        assert!(error("metric=x unit=ns median=fast min=1 max=1 n=1").contains("not a number"));
        assert!(error("metric=x unit=ns median=1 min=1 max=1 n=1.5").contains("whole number"));
        assert!(error("metric=x unit=ns median=1 min=1 max=1 n=2 n=3").contains("twice"));
        assert!(error("metric=x unit=ns median=1 min=1 max=1 n=2 junk").contains("key=value"));
        assert!(error("metric= unit=ns median=1 min=1 max=1 n=2").contains("key=value"));
        assert!(error("metric=x median=1 min=1 max=1 n=2").contains("missing `unit=`"));
        assert!(error("metric=x unit=ns median=inf min=1 max=1 n=2").contains("not a number"));
    }

    #[test]
    fn json_has_numbers_as_numbers_in_order() {
        let metrics = vec![
            metric("metric=a unit=ns median=12 min=10 max=20 n=1000", SMP4),
            metric(
                "metric=b unit=ns median=1.5 min=1 max=2 n=7",
                Machine::virt(Gic::V2, 4),
            ),
        ];
        let text = to_json(&metrics);
        assert!(text.starts_with("[\n  {\"metric\": \"a\", \"board\": \"virt\", \"smp\": 4, "));
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let array = parsed.as_array().unwrap();
        assert_eq!(array.len(), 2);
        assert_eq!(array[0]["median"], Value::from(12));
        assert!(array[0]["median"].is_u64());
        assert_eq!(array[0]["n"], Value::from(1000));
        assert_eq!(array[0]["gic"], Value::from(3));
        assert_eq!(array[0]["mode"], Value::from("icount"));
        assert_eq!(array[1]["median"].as_f64(), Some(1.5));
        assert_eq!(array[1]["gic"], Value::from(2));
        assert_eq!(array[1]["unit"], Value::from("ns"));
        assert_eq!(array[1]["metric"], Value::from("b"));
        let keys: Vec<&str> = [
            "metric", "board", "smp", "gic", "unit", "median", "min", "max", "n", "mode",
        ]
        .to_vec();
        let object = array[0].as_object().unwrap();
        assert_eq!(object.len(), keys.len());
        let mut last = 0;
        for key in keys {
            let at = text.find(&format!("\"{key}\":")).unwrap();
            assert!(at >= last, "{key} out of order");
            last = at;
        }
    }

    #[test]
    fn empty_json_is_an_empty_array() {
        let parsed: Value = serde_json::from_str(&to_json(&[])).unwrap();
        assert_eq!(parsed, Value::Array(vec![]));
    }

    #[test]
    fn figures() {
        assert_eq!(Figure::parse("42").unwrap().value, Number::from(42u64));
        assert_eq!(Figure::parse("-3").unwrap().value, Number::from(-3i64));
        assert_eq!(Figure::parse("0.25").unwrap().value.as_f64(), Some(0.25));
        assert!(Figure::parse("NaN").is_none());
        assert!(Figure::parse("12ns").is_none());
        assert!(Figure::parse("").is_none());
    }

    #[test]
    fn matrix_is_valid() {
        assert_eq!(BENCH_MATRIX.len(), 5);
        for m in BENCH_MATRIX {
            assert!(m.validate().is_ok(), "{m:?}");
        }
    }
}
