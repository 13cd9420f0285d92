//! A strict parser of the Prometheus text exposition format (0.0.4), for `/metrics`: it panics
//! on anything a scraper could choke on or misread (a sample outside the family declared before
//! it, a TYPE before its HELP, a bad name, label or escape, a value that is not a float, a
//! sample twice, a missing final newline).

use std::collections::{BTreeMap, BTreeSet};

/// A strictly parsed Prometheus text exposition: samples by (name, sorted labels).
pub struct Metrics {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    /// `# TYPE` of each family.
    pub families: BTreeMap<String, String>,
}

impl Metrics {
    /// The sample's value; panics naming it when /metrics has no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics"))
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` → sorted pairs; strict about quoting and escapes.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("bad label set in {line:?}"));
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(
            is_metric_name(name) && !name.contains(':'),
            "bad label name {name:?} in {line:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else {
            assert!(rest.is_empty(), "junk after a label in {line:?}");
        }
    }
    labels.sort();
    labels
}

/// Parse the text format strictly: every sample belongs to the family declared just before it
/// with `# HELP` and `# TYPE`; values are floats; no sample twice; the text ends with a newline.
pub fn parse(text: &str) -> Metrics {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut samples = BTreeMap::new();
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut help: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(doc)) => {
                    assert!(is_metric_name(name), "bad name in {line:?}");
                    assert!(!doc.trim().is_empty(), "empty HELP in {line:?}");
                    assert!(help.insert(name.to_string()), "HELP twice for {name}");
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(help.contains(name), "TYPE before HELP for {name}");
                    assert!(
                        ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                        "bad TYPE in {line:?}"
                    );
                    assert!(
                        families.insert(name.into(), kind.into()).is_none(),
                        "TYPE twice for {name}"
                    );
                    current = Some((name.to_string(), kind.to_string()));
                }
                _ => panic!("a comment that is neither HELP nor TYPE: {line:?}"),
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "blank line in /metrics");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not a float in {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], parse_labels(&series[i..], line)),
            None => (series, Vec::new()),
        };
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let belongs = name == family
            || (kind == "summary" || kind == "histogram")
                && ["_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()));
        assert!(
            belongs,
            "{name} is not part of the family {family} declared before it"
        );
        assert!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "sample twice: {line:?}"
        );
    }
    Metrics { samples, families }
}
