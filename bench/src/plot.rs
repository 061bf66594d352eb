//! Plots of a run, each written as SVG and as PNG (`--plot-dir`).
//!
//! plotters draws both; the PNG is rasterised in memory with a font bundled in the binary
//! (DejaVu Sans through plotters' `ab_glyph` feature), so no system font library is needed
//! and the same pictures come out on any machine.
//!
//! - `rr-latency-spectrum`: the request-reply latency spectra of the run (client closed and
//!   open loop, the raw-protocol exchange, the TCP relay);
//! - `e2e-latency-spectrum` and `e2e-latency-vs-rate`: the e2e sweep, one curve per offered
//!   rate, and its percentiles against the rate (saturated rates marked);
//! - `fanout-latency-spectrum`: the fan-out totals;
//! - `produce-throughput-vs-size`: the produce size sweep;
//! - `scale-queues`, `scale-connections`: the flat-cost sweeps.
//!
//! A spectrum's x axis is `log10(1 / (1 - q))`, so each decade of the tail (90%, 99%, 99.9%,
//! ...) gets the same width, as HdrHistogram's own plots draw it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::latency::Latency;
use crate::report::{self, Metric, Section, Sweep};

/// DejaVu Sans (Bitstream Vera license, `bench/assets/DejaVuSans-LICENSE`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT_FAMILY: &str = "sans-serif";
const SIZE_PX: (u32, u32) = (1000, 620);
/// Line colours, distinct on white and for the common colour-vision deficiencies (the
/// Tableau 10 palette): plotters' default palette has a pale yellow.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a chart, in data units.
#[derive(Clone, Debug)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Points drawn hollow (saturated rates).
    marked: Vec<(f64, f64)>,
}

/// How an axis maps data to the page.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Linear,
    Log,
    /// `log10(1 / (1 - q))` of a quantile, labelled as a percentile.
    Percentile,
}

/// One chart, drawable to any backend.
#[derive(Clone, Debug)]
struct Chart {
    file: String,
    title: String,
    x_desc: String,
    y_desc: String,
    x_scale: Scale,
    y_scale: Scale,
    series: Vec<Series>,
}

/// Draws every chart `sections` have data for into `dir`; returns the files written.
pub fn write_all(sections: &[Section], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for chart in charts(sections) {
        let svg = dir.join(format!("{}.svg", chart.file));
        draw(SVGBackend::new(&svg, SIZE_PX).into_drawing_area(), &chart)
            .with_context(|| format!("drawing {}", svg.display()))?;
        written.push(svg);
        let png = dir.join(format!("{}.png", chart.file));
        draw(
            BitMapBackend::new(&png, SIZE_PX).into_drawing_area(),
            &chart,
        )
        .with_context(|| format!("drawing {}", png.display()))?;
        written.push(png);
    }
    Ok(written)
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()
    });
    anyhow::ensure!(ok, "the bundled font does not parse");
    Ok(())
}

/// The charts `sections` have data for.
fn charts(sections: &[Section]) -> Vec<Chart> {
    let mut charts = Vec::new();
    let spectrum = |file: &str, title: &str, series: Vec<Series>| Chart {
        file: file.into(),
        title: title.into(),
        x_desc: "percentile".into(),
        y_desc: "latency (µs)".into(),
        x_scale: Scale::Percentile,
        y_scale: Scale::Log,
        series,
    };
    let rr = rr_spectra(sections);
    if !rr.is_empty() {
        charts.push(spectrum(
            "rr-latency-spectrum",
            "Request-reply round trip: latency by percentile",
            rr,
        ));
    }
    if let Some(e2e) = report::sweeps(sections).find(|s| s.workload == "e2e") {
        let series = e2e
            .steps
            .iter()
            .filter_map(|step| {
                Some(spectrum_series(
                    format!("{} msg/s", step.label),
                    step.measured.latency()?,
                ))
            })
            .collect();
        charts.push(spectrum(
            "e2e-latency-spectrum",
            "Publish → consume latency by percentile, per offered rate",
            series,
        ));
        charts.push(latency_vs_rate(e2e));
    }
    let fanout: Vec<Series> = report::comparisons(sections)
        .filter(|c| c.workload.starts_with("fanout-"))
        .filter_map(|c| Some(spectrum_series(c.workload.clone(), c.ours.latency()?)))
        .collect();
    if !fanout.is_empty() {
        charts.push(spectrum(
            "fanout-latency-spectrum",
            "Fan-out: publish → consume latency by percentile, all consumers",
            fanout,
        ));
    }
    if let Some(sizes) = report::sweeps(sections).find(|s| s.workload.ends_with("-sizes")) {
        charts.push(Chart {
            file: "produce-throughput-vs-size".into(),
            title: "Produce throughput vs message size".into(),
            x_desc: "message size (bytes)".into(),
            y_desc: "MB/s of payload".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: vec![metric_series("MB/s", sizes, Metric::MbPerS)],
        });
    }
    for (workload, x_desc) in [
        ("scale-queues", "queues"),
        ("scale-connections", "producer clients"),
    ] {
        if let Some(sweep) = report::sweeps(sections).find(|s| s.workload == workload) {
            charts.push(Chart {
                file: workload.into(),
                title: format!("Produce throughput vs {x_desc} (flat cost)"),
                x_desc: x_desc.into(),
                y_desc: "msg/s".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series: vec![metric_series("msg/s", sweep, Metric::OpsPerS)],
            });
        }
    }
    charts.retain(|c| c.series.iter().any(|s| !s.points.is_empty()));
    charts
}

/// Every request-reply latency of the run, each once: the client's (closed and open loop)
/// and the baselines beside them.
fn rr_spectra(sections: &[Section]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    let mut add = |name: String, latency: &Latency| {
        if !series.iter().any(|s| s.name == name) {
            series.push(spectrum_series(name, latency));
        }
    };
    for comparison in report::comparisons(sections) {
        let ours = match comparison.workload.as_str() {
            "rr" | "client-overhead" => "rr (client, closed loop)".to_owned(),
            "rr-open" => format!("rr-open ({})", rate_of(&comparison.setup)),
            _ => continue,
        };
        if let Some(latency) = comparison.ours.latency() {
            add(ours, latency);
        }
        if let Some(baseline) = &comparison.baseline {
            if let Some(latency) = baseline.measured.latency() {
                add(baseline.name.clone(), latency);
            }
        }
    }
    series
}

/// The `N req/s` part of an open-loop setup, for a legend.
fn rate_of(setup: &str) -> String {
    setup
        .split_once("open loop at ")
        .and_then(|(_, rest)| rest.split_once(" in total"))
        .map_or_else(|| "open loop".into(), |(rate, _)| rate.to_owned())
}

fn spectrum_series(name: String, latency: &Latency) -> Series {
    Series {
        name,
        points: latency
            .spectrum
            .iter()
            .filter(|p| p.quantile < 1.0 && p.us > 0.0)
            .map(|p| (-(1.0 - p.quantile).log10(), p.us))
            .collect(),
        marked: Vec::new(),
    }
}

/// p50, p99, p99.9 and max against the offered rate; saturated rates drawn hollow.
fn latency_vs_rate(sweep: &Sweep) -> Chart {
    let percentiles = [
        ("p50", Metric::P50Us),
        ("p99", Metric::P99Us),
        ("p99.9", Metric::P999Us),
        ("max", Metric::MaxUs),
    ];
    let series = percentiles
        .iter()
        .map(|&(name, metric)| {
            let point = |step: &crate::report::Step| Some((step.x, step.measured.get(metric)?));
            Series {
                name: name.into(),
                points: sweep.steps.iter().filter_map(point).collect(),
                marked: sweep
                    .steps
                    .iter()
                    .filter(|s| s.saturated == Some(true))
                    .filter_map(point)
                    .collect(),
            }
        })
        .collect();
    Chart {
        file: "e2e-latency-vs-rate".into(),
        title: "Publish → consume latency vs offered rate (hollow: not kept up)".into(),
        x_desc: "offered rate (msg/s)".into(),
        y_desc: "latency (µs)".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series,
    }
}

fn metric_series(name: &str, sweep: &Sweep, metric: Metric) -> Series {
    Series {
        name: name.into(),
        points: sweep
            .steps
            .iter()
            .filter_map(|step| Some((step.x, step.measured.get(metric)?)))
            .collect(),
        marked: Vec::new(),
    }
}

/// The data's extent on one axis, widened so lines do not touch the frame; log axes stay
/// positive.
fn extent(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite() && (scale != Scale::Log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (1.0, 10.0);
    }
    match scale {
        Scale::Log => (lo / 1.5, hi * 1.5),
        Scale::Percentile => (0.0, hi.ceil().max(1.0)),
        // Throughputs start at zero, so that a drop looks as large as it is.
        Scale::Linear if lo >= 0.0 => (0.0, hi * 1.08 + 1e-9),
        Scale::Linear => {
            let pad = ((hi - lo) * 0.08).max(1e-9);
            (lo - pad, hi + pad)
        }
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi) = extent(points().map(|p| p.0), chart.x_scale);
    let (y_lo, y_hi) = extent(points().map(|p| p.1), chart.y_scale);
    // One drawing routine per combination of axis kinds: plotters types them differently.
    match (chart.x_scale, chart.y_scale) {
        (Scale::Log, Scale::Log) => draw_in(
            root,
            chart,
            (x_lo..x_hi).log_scale(),
            (y_lo..y_hi).log_scale(),
        ),
        (Scale::Log, _) => draw_in(root, chart, (x_lo..x_hi).log_scale(), y_lo..y_hi),
        (_, Scale::Log) => draw_in(root, chart, x_lo..x_hi, (y_lo..y_hi).log_scale()),
        _ => draw_in(root, chart, x_lo..x_hi, y_lo..y_hi),
    }
}

fn draw_in<DB, X, Y>(root: DrawingArea<DB, Shift>, chart: &Chart, x: X, y: Y) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(fail)?;
    let mut context = ChartBuilder::on(&root)
        .caption(&chart.title, (FONT_FAMILY, 22))
        .margin(18)
        .margin_right(48)
        .x_label_area_size(52)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(fail)?;
    let percentile = chart.x_scale == Scale::Percentile;
    let x_label = |v: &f64| {
        if percentile {
            percentile_label(*v)
        } else {
            compact(*v)
        }
    };
    let y_label = |v: &f64| compact(*v);
    context
        .configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(fail)?;
    for (index, series) in chart.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()].to_rgba();
        context
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(fail)?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
        context
            .draw_series(
                series
                    .points
                    .iter()
                    .filter(|p| !series.marked.contains(p))
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )
            .map_err(fail)?;
        context
            .draw_series(
                series
                    .marked
                    .iter()
                    .map(|&p| Circle::new(p, 5, color.stroke_width(2))),
            )
            .map_err(fail)?;
    }
    context
        .configure_series_labels()
        .label_font((FONT_FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(fail)?;
    root.present().map_err(fail)?;
    Ok(())
}

/// `v` of a percentile axis (`log10(1 / (1 - q))`) as a percentile: 0 → `0%`, 2 → `99%`.
fn percentile_label(v: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-v));
    let decimals = (v.round() as i64 - 2).clamp(0, 6) as usize;
    format!("{percent:.decimals$}%")
}

/// A tick label: `950`, `12k`, `3.5M`.
fn compact(v: f64) -> String {
    let a = v.abs();
    let (value, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if value.fract().abs() < 1e-9 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, record_ns};
    use crate::report::tests::{sweep, throughput};
    use crate::report::{Comparison, Measured, Report, Step};

    fn latency(us_max: u64) -> Latency {
        let mut histogram = new_histogram();
        for us in 1..=us_max {
            record_ns(&mut histogram, us * 1000);
        }
        Latency::new(&histogram, throughput(1000.0, 1.0))
    }

    #[test]
    fn labels_read_as_percentiles_and_compact_numbers() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(12_000.0), "12k");
        assert_eq!(compact(3_500_000.0), "3.5M");
        assert_eq!(compact(0.25), "0.25");
    }

    #[test]
    fn a_report_with_every_kind_of_result_draws_svg_and_png() {
        let rr = Comparison {
            workload: "rr".into(),
            setup: "test".into(),
            message_bytes: 256,
            concurrency: 1,
            ours: Measured::Latency(latency(1000)),
            baseline: None,
        };
        let mut e2e = sweep("e2e", &[(1000.0, 1000.0), (2000.0, 1500.0)]);
        for (step, saturated) in e2e.steps.iter_mut().zip([false, true]) {
            *step = Step {
                measured: Measured::Latency(latency(500)),
                saturated: Some(saturated),
                offered_per_s: Some(step.x),
                ..step.clone()
            };
        }
        let queues = sweep("scale-queues", &[(1.0, 1000.0), (100.0, 900.0)]);
        let report = Report::new(
            "test".into(),
            "test".into(),
            None,
            vec![rr.into(), e2e.into(), queues.into()],
        );
        let files: Vec<String> = charts(&report.sections)
            .into_iter()
            .map(|c| c.file)
            .collect();
        assert_eq!(
            files,
            [
                "rr-latency-spectrum",
                "e2e-latency-spectrum",
                "e2e-latency-vs-rate",
                "scale-queues"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&report.sections, dir.path()).unwrap();
        assert_eq!(written.len(), 8);
        for file in written {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                bytes.len() > 1000,
                "{} is {} bytes",
                file.display(),
                bytes.len()
            );
            if file.extension().is_some_and(|e| e == "png") {
                assert_eq!(&bytes[1..4], b"PNG");
            } else {
                let svg = String::from_utf8(bytes).unwrap();
                assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
                // Text stays text in SVG: the axis names are there to read.
                assert!(
                    svg.contains("latency (µs)") || svg.contains("msg/s"),
                    "{svg}"
                );
            }
        }
    }
}
