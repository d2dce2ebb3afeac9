//! `cargo xtask trace --svg FILE`: a simple per-CPU timeline of a trace as an SVG picture,
//! drawn with `plotters` (its SVG backend): one row per CPU, the running threads' spans in the
//! lower half of the row (one colour per thread), interrupt, softint, work and cross-call
//! slices in the upper half (one colour per kind), time in microseconds along the x axis.

use std::collections::BTreeMap;
use std::path::Path;

use kernel::kvm::trace::TraceDump;
use kernel::trace::Kind;
use plotters::prelude::*;

/// Colours of the slice kinds, by begin kind.
const SLICE_COLOURS: [(Kind, Kind, RGBColor); 4] = [
    (Kind::IntrEntry, Kind::IntrExit, RGBColor(214, 39, 40)),
    (Kind::SoftintRun, Kind::SoftintDone, RGBColor(255, 127, 14)),
    (Kind::WorkRun, Kind::WorkDone, RGBColor(44, 160, 44)),
    (Kind::XcallRun, Kind::XcallRunDone, RGBColor(31, 119, 180)),
];

/// A bar: CPU row, start and end (µs), upper half (slice) or lower (thread), colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The CPU.
    pub cpu: u32,
    /// Start, µs from the first record.
    pub start: f64,
    /// End, µs from the first record.
    pub end: f64,
    /// A slice (upper half) rather than a thread span (lower half).
    pub slice: bool,
    /// Its colour.
    pub colour: RGBColor,
}

/// A thread's colour: one of a fixed palette, by id.
fn thread_colour(id: u64) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(158, 218, 229),
        RGBColor(199, 199, 199),
        RGBColor(219, 219, 141),
        RGBColor(196, 156, 148),
        RGBColor(197, 176, 213),
        RGBColor(152, 223, 138),
        RGBColor(255, 187, 120),
        RGBColor(174, 199, 232),
    ];
    PALETTE[(id % PALETTE.len() as u64) as usize]
}

/// The bars of a trace (begin/end pairs matched per CPU as in the JSON).
pub fn bars(dump: &TraceDump) -> Vec<Bar> {
    let t0 = dump
        .cpus
        .iter()
        .filter_map(|c| c.events.first().map(|e| e.ts))
        .min()
        .unwrap_or(0);
    let us = |ts: u64| (ts - t0) as f64 * 1e6 / dump.freq as f64;
    let mut out = Vec::new();
    for c in &dump.cpus {
        let last = c.events.last().map_or(t0, |e| e.ts);
        let mut open: BTreeMap<(u8, u64), Vec<u64>> = BTreeMap::new();
        let mut running: Option<(u64, u64)> = None;
        for e in &c.events {
            if let Some(&(b, _, colour)) = SLICE_COLOURS.iter().find(|s| s.0 == e.kind) {
                let _ = (b, colour);
                open.entry((e.kind as u8, e.a)).or_default().push(e.ts);
            } else if let Some(&(b, _, colour)) = SLICE_COLOURS.iter().find(|s| s.1 == e.kind) {
                if let Some(start) = open.get_mut(&(b as u8, e.a)).and_then(Vec::pop) {
                    out.push(Bar {
                        cpu: c.cpu,
                        start: us(start),
                        end: us(e.ts),
                        slice: true,
                        colour,
                    });
                }
            } else if e.kind == Kind::Switch {
                if let Some((id, since)) = running {
                    out.push(Bar {
                        cpu: c.cpu,
                        start: us(since),
                        end: us(e.ts),
                        slice: false,
                        colour: thread_colour(id),
                    });
                }
                running = Some((e.b, e.ts));
            }
        }
        for ((kind, _), starts) in open {
            if let Some(&(_, _, colour)) = SLICE_COLOURS.iter().find(|s| s.0 as u8 == kind) {
                for start in starts {
                    out.push(Bar {
                        cpu: c.cpu,
                        start: us(start),
                        end: us(last),
                        slice: true,
                        colour,
                    });
                }
            }
        }
        if let Some((id, since)) = running {
            out.push(Bar {
                cpu: c.cpu,
                start: us(since),
                end: us(last),
                slice: false,
                colour: thread_colour(id),
            });
        }
    }
    out
}

/// Draws the timeline of `dump` into `path`.
pub fn render(dump: &TraceDump, path: &Path) -> Result<(), String> {
    let bars = bars(dump);
    let ncpu = dump.cpus.iter().map(|c| c.cpu + 1).max().unwrap_or(1);
    let end = bars.iter().map(|b| b.end).fold(1.0, f64::max);
    let height = 120 + 60 * ncpu;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "kernel trace: threads (lower) and irq / softint / work / xcall (upper)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..f64::from(ncpu))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("µs")
        .y_labels(ncpu as usize + 1)
        .y_label_formatter(&|y| format!("cpu{}", (*y as u32)))
        .disable_y_mesh()
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().map(|b| {
            let row = f64::from(b.cpu);
            let (lo, hi) = if b.slice {
                (row + 0.5, row + 0.9)
            } else {
                (row + 0.1, row + 0.45)
            };
            let end = if b.end > b.start {
                b.end
            } else {
                b.start + end / 5000.0
            };
            Rectangle::new([(b.start, lo), (end, hi)], b.colour.filled())
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::trace::tests::ev;
    use kernel::kvm::trace::CpuTrace;

    #[test]
    fn bars_follow_the_slices_and_thread_spans_and_the_svg_draws_each() {
        let dump = TraceDump {
            freq: 1_000_000,
            mask: 0,
            cpus: vec![CpuTrace {
                cpu: 1,
                head: 5,
                lost: 0,
                events: vec![
                    ev(0, 10, Kind::Switch, 0, 7),
                    ev(1, 20, Kind::IntrEntry, 30, 6),
                    ev(2, 25, Kind::IntrExit, 30, 6),
                    ev(3, 40, Kind::Switch, 7, 8),
                    ev(4, 50, Kind::WorkRun, 0x100, 0),
                ],
            }],
            names: vec![],
        };
        let b = bars(&dump);
        assert_eq!(b.len(), 4, "{b:?}");
        assert!(
            b.iter()
                .any(|b| b.slice && b.start == 10.0 && b.end == 15.0),
            "irq {b:?}"
        );
        assert!(
            b.iter()
                .any(|b| !b.slice && b.start == 0.0 && b.end == 30.0),
            "thread 7 {b:?}"
        );
        let path = std::env::temp_dir().join(format!("trace-svg-test-{}.svg", std::process::id()));
        render(&dump, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("cpu1"));
        // The four bars plus the background (plotters draws each as a <rect>).
        assert!(svg.matches("<rect").count() >= 5, "{svg}");
    }
}
