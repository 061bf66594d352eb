//! A strict reader of the OpenMetrics text our endpoints serve, for tests and tools: it checks
//! the format line by line (names, labels, values, every sample under a declared family,
//! histogram buckets cumulative and ending at `+Inf` = `_count`, `# EOF` last) and returns the
//! samples so a test can compare them with what happened.

use std::collections::{HashMap, HashSet};

type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        });
        let first = matching.next()?;
        matching.next().is_none().then_some(first.value)
    }
}

/// Parses and checks `text`, OpenMetrics when it ends with `# EOF`, else the classic text
/// format (where a counter's family is named like its samples); the error names the line and
/// what is wrong with it.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let openmetrics = text.ends_with("# EOF\n");
    let mut exposition = Exposition::default();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    let mut seen = HashSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if eof {
            return Err(fail("text after # EOF"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_metric_name(name) {
                return Err(fail("bad metric name"));
            }
            match keyword {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "info", "unknown"].contains(&kind) {
                        return Err(fail("unknown type"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(fail("family declared twice"));
                    }
                    current = Some(name.to_string());
                }
                _ => return Err(fail("unknown descriptor")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|why| fail(&why))?;
        let family = current
            .as_deref()
            .ok_or_else(|| fail("sample before any # TYPE"))?;
        let suffixes: &[&str] = match types[family].as_str() {
            "counter" if openmetrics => &["_total", "_created"],
            "counter" => &[""],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        if !suffixes
            .iter()
            .any(|s| sample.name == format!("{family}{s}"))
        {
            return Err(fail("sample outside its family"));
        }
        if !seen.insert(format!("{}{:?}", sample.name, sample.labels)) {
            return Err(fail("duplicate sample"));
        }
        exposition.samples.push(sample);
    }
    if openmetrics != eof {
        return Err("# EOF not at the end".into());
    }
    check_histograms(&exposition, &types)?;
    Ok(exposition)
}

/// [`parse`], and `promtool check metrics` where promtool is installed: what every test
/// scrape of our endpoints must pass.
pub fn checked(text: &str) -> Result<Exposition, String> {
    let exposition = parse(text)?;
    match promtool_check(text) {
        Some(Err(e)) => Err(format!("promtool check metrics: {e}")),
        Some(Ok(())) | None => Ok(exposition),
    }
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed (CI installs
/// Debian's `prometheus` package), else its verdict with what it printed.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let written = child.stdin.take()?.write_all(text.as_bytes());
    let verdict = child
        .wait_with_output()
        .map_err(|e| e.to_string())
        .and_then(|out| {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            match (out.status.success(), written) {
                (true, Ok(())) => Ok(()),
                (_, Err(e)) => Err(format!("writing to promtool: {e}; {said}")),
                (false, _) => Err(said),
            }
        });
    Some(verdict)
}

fn check_histograms(
    exposition: &Exposition,
    types: &HashMap<String, String>,
) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket_name = format!("{family}_bucket");
        // Buckets grouped by their labels other than `le`, in order of appearance.
        let mut series: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
        for s in exposition.samples.iter().filter(|s| s.name == bucket_name) {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or("bucket without le")?;
            let bound = parse_value(&le.1).ok_or_else(|| format!("bad le {:?}", le.1))?;
            let rest: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            match series.iter_mut().find(|(labels, _)| *labels == rest) {
                Some((_, buckets)) => buckets.push((bound, s.value)),
                None => series.push((rest, vec![(bound, s.value)])),
            }
        }
        for (labels, buckets) in series {
            let ordered = buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let last = buckets.last().copied().unwrap_or((0.0, 0.0));
            let count = exposition
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels);
            if !ordered || last.0 != f64::INFINITY || count.map(|c| c.value) != Some(last.1) {
                return Err(format!(
                    "{family}{labels:?}: buckets not cumulative up to +Inf = _count"
                ));
            }
        }
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            let (start, c) = chars.next().ok_or("unclosed labels")?;
            if c == '}' {
                break start;
            }
            let eq = inner[start..].find("=\"").ok_or("label without =\"")? + start;
            let key = &inner[start..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '\n' => return Err("newline in label value".into()),
                    c => value.push(c),
                }
            }
            labels.push((key.to_string(), value));
            match chars.next().ok_or("unclosed labels")? {
                (_, ',') => {}
                (i, '}') => break i,
                _ => return Err("expected , or } after a label".into()),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = parse_value(value).ok_or_else(|| format!("bad value {value:?}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_scrape_parses_back() {
        let mut scrape = crate::Scrape::default();
        scrape.counter("a_bytes", "A.", &[("topic", "x\"y\\z"), ("queue", "0")], 5);
        let mut h = crate::Histogram::default();
        h.observe(7);
        scrape.histogram("b_seconds", "B.", &[("shard", "0")], &h, 1e-6);
        let parsed = parse(&scrape.render()).unwrap();
        assert_eq!(
            parsed.value("a_bytes_total", &[("topic", "x\"y\\z")]),
            Some(5.0)
        );
        assert_eq!(
            parsed.value("b_seconds_count", &[("shard", "0")]),
            Some(1.0)
        );
    }

    #[test]
    fn malformed_text_is_refused_with_its_line() {
        for bad in [
            "# TYPE a counter\na_total 1\n", // classic: a counter named otherwise
            "a 1\n# EOF\n",                  // no TYPE
            "# TYPE a counter\nb_total 1\n# EOF\n", // outside its family
            "# TYPE a gauge\na{x=\"1} 1\n# EOF\n", // unterminated
            "# TYPE a gauge\na one\n# EOF\n", // bad value
            "# TYPE a gauge\na 1\na 2\n# EOF\n", // duplicate
            "# TYPE h histogram\nh_count 2\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n# EOF\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
