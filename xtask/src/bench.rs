//! `cargo xtask bench`: boots the bench image under `-icount` on every configuration of
//! [`BENCH_MATRIX`] and prints the kernel's `metric=` lines in canonical form (see
//! `shared/reference/bench-format.md`), optionally also as JSON.
//!
//! The kernel does not know the board or the GIC, so it prints e.g.
//! `metric=ctx_switch unit=ns median=.. min=.. max=.. n=..`; xtask sets `board`, `smp`, `gic`
//! and `mode` and prints the fields in the canonical order. Only metric lines go to stdout
//! (then, with `--compare BASE.json`, a table of each figure beside the baseline's, with the
//! ratio); progress goes to stderr.

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

/// A figure of a baseline file: what identifies it, its unit and its median.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseFigure {
    /// Every field but the figures (`metric`, `board`, `smp`, `gic`, `unit`, `mode`, extras).
    pub key: Vec<(String, String)>,
    /// The median.
    pub median: f64,
}

/// The fields that are figures, not identity, in a JSON object.
const FIGURE_KEYS: &[&str] = &["median", "min", "max", "n"];

/// Reads one JSON object of a `--json` file into its identity and median.
fn base_figure(object: &Value) -> std::result::Result<BaseFigure, String> {
    let map = object
        .as_object()
        .ok_or_else(|| format!("`{object}` is not an object"))?;
    if !map.get("metric").is_some_and(Value::is_string) {
        return Err(format!("`{object}` has no \"metric\" name"));
    }
    let median = map
        .get("median")
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("`{object}` has no numeric \"median\""))?;
    let key = map
        .iter()
        .filter(|(k, _)| !FIGURE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    Ok(BaseFigure { key, median })
}

/// Parses a file written by `--json`.
pub fn parse_baseline(text: &str) -> std::result::Result<Vec<BaseFigure>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let array = value
        .as_array()
        .ok_or("not a JSON array of figures (as `cargo xtask bench --json` writes)")?;
    array.iter().map(base_figure).collect()
}

/// The identity of `metric` as [`BaseFigure::key`] spells it.
fn metric_key(metric: &Metric) -> Vec<(String, String)> {
    let value: Value = serde_json::from_str(&metric.to_json()).unwrap_or(Value::Null);
    base_figure(&value).map(|f| f.key).unwrap_or_default()
}

/// The comparison table's rows: every figure of this run beside the baseline's median with
/// the ratio (now / base), then the baseline's figures this run did not print.
pub fn compare(base: &[BaseFigure], now: &[Metric]) -> Vec<Vec<String>> {
    let field = |key: &[(String, String)], name: &str| {
        key.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let label = |key: &[(String, String)]| {
        let mut text = format!(
            "{} gic{} smp{}",
            field(key, "board"),
            field(key, "gic"),
            field(key, "smp")
        );
        for (k, v) in key {
            if !["metric", "board", "gic", "smp", "unit", "mode"].contains(&k.as_str()) {
                text.push_str(&format!(" {k}={v}"));
            }
        }
        text
    };
    let mut rows = Vec::new();
    let mut used = vec![false; base.len()];
    for metric in now {
        let key = metric_key(metric);
        let median = metric.median.text.clone();
        let found = base
            .iter()
            .enumerate()
            .find(|(i, b)| !used[*i] && b.key == key);
        let (base_text, ratio) = match found {
            Some((i, b)) => {
                used[i] = true;
                let now_value = metric.median.value.as_f64().unwrap_or(f64::NAN);
                let ratio = if b.median == 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:.3}", now_value / b.median)
                };
                (format_median(b.median), ratio)
            }
            None => ("-".to_owned(), "new".to_owned()),
        };
        rows.push(vec![
            metric.name.clone(),
            label(&key),
            metric.unit.clone(),
            base_text,
            median,
            ratio,
        ]);
    }
    for (b, _) in base.iter().zip(&used).filter(|(_, used)| !**used) {
        rows.push(vec![
            field(&b.key, "metric"),
            label(&b.key),
            field(&b.key, "unit"),
            format_median(b.median),
            "-".to_owned(),
            "gone".to_owned(),
        ]);
    }
    rows
}

/// A baseline median as the kernel would print it: whole numbers without a fraction.
fn format_median(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// `cargo xtask bench`.
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<ExitCode> {
    // A bad baseline is found before the long runs, not after.
    let baseline = match &args.compare {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the baseline {}", path.display()))?;
            let figures = parse_baseline(&text)
                .map_err(|e| Error::new(format!("the baseline {}: {e}", path.display())))?;
            Some(figures)
        }
        None => None,
    };
    tools::ensure_qemu(tools::install_allowed_here(args.no_install))?;
    let kernel = image::build_with(
        ws,
        Board::Virt,
        Variant::Bench,
        Profile::Release,
        args.notrace.then_some("notrace"),
    )?;
    let mut metrics = Vec::new();
    let mut problems = Vec::new();
    let only = args.smp.map(|smp| [Machine::virt(Gic::V3, smp)]);
    let machines: &[Machine] = only.as_ref().map_or(BENCH_MATRIX, |m| m.as_slice());
    for &machine in machines {
        let disk = crate::disk::scratch(ws, "bench")?;
        let run = QemuRun {
            icount: true,
            disk: Some(&disk),
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
    if let (Some(base), Some(path)) = (&baseline, &args.compare) {
        println!();
        println!("compared with {} (ratio = now / base):", path.display());
        print!(
            "{}",
            crate::table::render(
                &["metric", "machine", "unit", "base", "now", "ratio"],
                &compare(base, &metrics)
            )
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
    fn compare_pairs_figures_with_the_baseline() {
        let v3 = Machine::virt(Gic::V3, 4);
        let v2 = Machine::virt(Gic::V2, 4);
        let now = [
            metric(
                "metric=ctx_switch unit=ns median=1100 min=1000 max=1400 n=1000",
                v3,
            ),
            metric(
                "metric=ctx_switch unit=ns median=900 min=800 max=1000 n=1000",
                v2,
            ),
            metric(
                "metric=wq_remote unit=ns median=2.5 min=2 max=3 n=1000 cpu=1",
                v3,
            ),
        ];
        let base_metrics = [
            metric(
                "metric=ctx_switch unit=ns median=1000 min=900 max=1100 n=1000",
                v3,
            ),
            metric(
                "metric=wq_remote unit=ns median=5 min=4 max=6 n=1000 cpu=1",
                v3,
            ),
            metric(
                "metric=spl_raise_restore unit=ns median=40 min=40 max=41 n=1000",
                v3,
            ),
        ];
        let base = parse_baseline(&to_json(&base_metrics)).unwrap();
        assert_eq!(base.len(), 3);
        assert_eq!(base[0].median, 1000.0);
        let rows = compare(&base, &now);
        let row = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            rows,
            vec![
                row(&[
                    "ctx_switch",
                    "virt gic3 smp4",
                    "ns",
                    "1000",
                    "1100",
                    "1.100"
                ]),
                row(&["ctx_switch", "virt gic2 smp4", "ns", "-", "900", "new"]),
                row(&[
                    "wq_remote",
                    "virt gic3 smp4 cpu=1",
                    "ns",
                    "5",
                    "2.5",
                    "0.500"
                ]),
                row(&[
                    "spl_raise_restore",
                    "virt gic3 smp4",
                    "ns",
                    "40",
                    "-",
                    "gone"
                ]),
            ]
        );
    }

    #[test]
    fn bad_baselines_are_clear_errors() {
        assert!(parse_baseline("").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_baseline("{}")
                .unwrap_err()
                .contains("not a JSON array")
        );
        assert!(parse_baseline("[1]").unwrap_err().contains("not an object"));
        assert!(
            parse_baseline(r#"[{"metric": "x"}]"#)
                .unwrap_err()
                .contains("no numeric \"median\"")
        );
        assert!(
            parse_baseline(r#"[{"median": 3}]"#)
                .unwrap_err()
                .contains("no \"metric\"")
        );
        assert_eq!(parse_baseline("[]\n").unwrap(), vec![]);
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
