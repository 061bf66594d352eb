//! One scrape's metrics, gathered from whatever state a process owns, encoded as OpenMetrics
//! text by `prometheus-client`.
//!
//! A process builds a fresh [`Scrape`] per request from its own counters rather than keeping
//! a `prometheus-client` registry of live metric objects: the broker's counters are plain
//! `Cell`s on each shard, which no other thread may touch, so the shard copies them into a
//! snapshot and the endpoint thread only ever sees values.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Histogram;

/// The `Content-Type` of [`Scrape::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of [`Scrape::render_classic`]'s text.
pub const CONTENT_TYPE_CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics of one scrape, grouped into families by name, in the order first added.
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Value {
    Number(u64),
    /// A counter in a unit with fractions (seconds of busy time).
    Float(f64),
    // Boxed: a histogram is 33 words, a number one, and most samples are numbers.
    Histogram {
        histogram: Box<Histogram>,
        scale: f64,
    },
}

impl Scrape {
    /// Adds one counter sample. `name` is the family's name without `_total`, which the
    /// encoder appends (OpenMetrics names the family without it).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.add(
            name,
            help,
            MetricType::Counter,
            labels,
            Value::Number(value),
        );
    }

    /// Adds one counter sample with a fractional value (seconds); see [`Scrape::counter`].
    pub fn counter_f64(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, help, MetricType::Counter, labels, Value::Float(value));
    }

    /// Adds one gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.add(name, help, MetricType::Gauge, labels, Value::Number(value));
    }

    /// Adds one histogram; each bucket bound and the sum are multiplied by `scale` (1e-6 turns
    /// microseconds into the seconds Prometheus names want).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
        scale: f64,
    ) {
        let value = Value::Histogram {
            histogram: Box::new(histogram.clone()),
            scale,
        };
        self.add(name, help, MetricType::Histogram, labels, value);
    }

    fn add(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), escape_label_value(v)))
            .collect();
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        self.families[at].samples.push((labels, value));
    }

    /// The classic Prometheus text (format 0.0.4) of every family added: what scrapers and
    /// tools that do not ask for OpenMetrics read, `promtool check metrics` among them. It is
    /// the OpenMetrics text with a counter's family named like its samples (`…_total`) and
    /// without `# EOF`: OpenMetrics names a counter family without the suffix, which the
    /// classic format would read as a family with no samples beside an undocumented one.
    pub fn render_classic(self) -> String {
        let counters: Vec<String> = (self.families.iter())
            .filter(|f| matches!(f.kind, MetricType::Counter))
            .map(|f| f.name.clone())
            .collect();
        let open = self.render();
        let mut text = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let descriptor = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
            match descriptor {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let suffix = if counters.iter().any(|c| c == name) {
                        "_total"
                    } else {
                        ""
                    };
                    text.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
                }
                None => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// The OpenMetrics text of every family added, ending with `# EOF`.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail, and every family is well formed by construction.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            log::error!("encoding metrics: {e}");
        }
        text
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, {
                // MetricType is not Copy; rebuild it from ours.
                match family.kind {
                    MetricType::Counter => MetricType::Counter,
                    MetricType::Histogram => MetricType::Histogram,
                    _ => MetricType::Gauge,
                }
            })?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    encode_value(&family.kind, value, &mut metric)?;
                } else {
                    let mut sample = metric.encode_family(labels)?;
                    encode_value(&family.kind, value, &mut sample)?;
                }
            }
        }
        Ok(())
    }
}

/// `prometheus-client` writes label values as given; the text format wants `\\`, `"` and
/// newlines escaped. Our label values are validated names, so this only guards the format.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn encode_value(
    kind: &MetricType,
    value: &Value,
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match value {
        Value::Number(n) => match kind {
            MetricType::Counter => {
                encoder.encode_counter::<NoLabelSet, u64, u64>(n, None)?;
            }
            // The encoder writes integer gauges as i64 and fails past it, which cut the
            // whole scrape short (a topic without a depth limit has u64::MAX): larger ones
            // go as floats.
            _ => match i64::try_from(*n) {
                Ok(n) => encoder.encode_gauge(&n)?,
                Err(_) => encoder.encode_gauge(&(*n as f64))?,
            },
        },
        Value::Float(x) => match kind {
            MetricType::Counter => {
                encoder.encode_counter::<NoLabelSet, f64, u64>(x, None)?;
            }
            _ => encoder.encode_gauge(x)?,
        },
        Value::Histogram { histogram, scale } => {
            let buckets = histogram.scaled_buckets(*scale);
            encoder.encode_histogram::<NoLabelSet>(
                histogram.sum() as f64 * scale,
                histogram.count(),
                &buckets,
                None,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_as_openmetrics_text() {
        let mut scrape = Scrape::default();
        scrape.counter("x_in_bytes", "Bytes in.", &[("topic", "a\"b")], 7);
        scrape.counter("x_in_bytes", "Bytes in.", &[("topic", "c")], 8);
        scrape.gauge("x_connections", "Open connections.", &[], 3);
        let mut h = Histogram::default();
        h.observe(3);
        scrape.histogram("x_fsync_seconds", "Fsync time.", &[], &h, 1e-6);
        let text = scrape.render();
        assert!(text.contains("# TYPE x_in_bytes counter\n"), "{text}");
        assert!(
            text.contains("x_in_bytes_total{topic=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("x_in_bytes_total{topic=\"c\"} 8\n"), "{text}");
        assert!(text.contains("x_connections 3\n"), "{text}");
        assert!(text.contains("x_fsync_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("x_fsync_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_gauge_past_i64_does_not_cut_the_scrape_short() {
        let mut scrape = Scrape::default();
        scrape.gauge("x_limit", "A limit.", &[("topic", "a")], u64::MAX);
        scrape.gauge("x_after", "After it.", &[], 1);
        let text = scrape.render_classic();
        assert!(
            text.contains("x_limit{topic=\"a\"} 18446744073709553000.0\n"),
            "{text}"
        );
        assert!(text.contains("x_after 1\n"), "{text}");
        crate::parse::parse(&text).unwrap();
    }

    #[test]
    fn a_fractional_counter_keeps_its_fraction() {
        let mut scrape = Scrape::default();
        scrape.counter_f64("x_busy_seconds", "Busy.", &[("shard", "0")], 1.25);
        let text = scrape.render_classic();
        assert!(
            text.contains("x_busy_seconds_total{shard=\"0\"} 1.25\n"),
            "{text}"
        );
        crate::parse::parse(&text).unwrap();
    }

    #[test]
    fn the_classic_text_names_a_counter_family_like_its_samples() {
        let mut scrape = Scrape::default();
        scrape.counter("x_in_bytes", "Bytes in.", &[], 7);
        scrape.gauge("x_connections", "Open connections.", &[], 3);
        let text = scrape.render_classic();
        assert!(
            text.contains("# HELP x_in_bytes_total Bytes in.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE x_in_bytes_total counter\nx_in_bytes_total 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE x_connections gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        crate::parse::parse(&text).unwrap();
    }
}
