//! Latency figures from HDR histograms: the percentiles every table prints and the percentile
//! spectrum the plots draw.
//!
//! Every latency in the bench is recorded in nanoseconds into a [`Histogram`] made by
//! [`new_histogram`] (0.1% resolution, up to a minute) and summarised here in microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::measure::Throughput;

/// Longest latency the histograms hold, ns; longer ones are clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Spectrum points per decade of `1 / (1 - quantile)`: 10 draws a smooth curve.
const SPECTRUM_POINTS_PER_DECADE: u32 = 10;
/// The spectrum stops at 99.999% (five decades), the deepest tail a run here resolves.
const SPECTRUM_DECADES: u32 = 5;

/// An empty latency histogram, ns.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `ns` into `histogram`, clamped to what it holds.
pub fn record_ns(histogram: &mut Histogram<u64>, ns: u64) {
    histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// One point of the percentile spectrum: the latency at `quantile`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub quantile: f64,
    pub us: f64,
}

/// Latency percentiles, µs, and the throughput of the run they came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    /// The latency at quantiles spaced evenly in `log10(1 / (1 - q))`, up to what the sample
    /// count resolves, then the max: what the spectrum plots draw.
    pub spectrum: Vec<SpectrumPoint>,
    pub throughput: Throughput,
}

impl Latency {
    pub fn new(histogram: &Histogram<u64>, throughput: Throughput) -> Self {
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            samples: histogram.len(),
            mean_us: histogram.mean() / 1e3,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            p9999_us: us(histogram.value_at_quantile(0.9999)),
            max_us: us(histogram.max()),
            spectrum: spectrum(histogram),
            throughput,
        }
    }
}

/// See [`Latency::spectrum`]. A quantile `q` is resolved while `(1 - q) × samples > 1`; the
/// max stands at `1 - 1 / samples`.
fn spectrum(histogram: &Histogram<u64>) -> Vec<SpectrumPoint> {
    let samples = histogram.len();
    if samples == 0 {
        return Vec::new();
    }
    let mut points: Vec<SpectrumPoint> = (0..=SPECTRUM_DECADES * SPECTRUM_POINTS_PER_DECADE)
        .map(|step| 1.0 - 10f64.powf(-f64::from(step) / f64::from(SPECTRUM_POINTS_PER_DECADE)))
        .take_while(|q| (1.0 - q) * samples as f64 > 1.0 + 1e-9)
        .map(|quantile| SpectrumPoint {
            quantile,
            us: histogram.value_at_quantile(quantile) as f64 / 1e3,
        })
        .collect();
    // The max sits where one sample in `samples` is left: the resolution's end.
    points.push(SpectrumPoint {
        quantile: 1.0 - 1.0 / samples as f64,
        us: histogram.max() as f64 / 1e3,
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throughput() -> Throughput {
        crate::report::tests::throughput(1.0, 1.0)
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = new_histogram();
        for us in 1..=10_000u64 {
            record_ns(&mut histogram, us * 1000);
        }
        let latency = Latency::new(&histogram, throughput());
        assert_eq!(latency.samples, 10_000);
        assert!((latency.p50_us - 5000.0).abs() < 10.0, "{latency:?}");
        assert!((latency.p99_us - 9900.0).abs() < 20.0, "{latency:?}");
        assert!((latency.p9999_us - 9999.0).abs() < 20.0, "{latency:?}");
        assert!((latency.max_us - 10_000.0).abs() < 20.0, "{latency:?}");
    }

    #[test]
    fn the_spectrum_rises_and_stops_at_the_resolution() {
        let mut histogram = new_histogram();
        for us in 1..=1000u64 {
            record_ns(&mut histogram, us * 1000);
        }
        let points = spectrum(&histogram);
        // 1000 samples resolve three decades: 30 points below 99.9%, then the max there.
        assert_eq!(points.len(), 31, "{points:?}");
        assert!(points.windows(2).all(|w| w[0].us <= w[1].us), "{points:?}");
        assert!(points.windows(2).all(|w| w[0].quantile < w[1].quantile));
        assert!(spectrum(&new_histogram()).is_empty());
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut histogram = new_histogram();
        record_ns(&mut histogram, 0);
        record_ns(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
    }
}
