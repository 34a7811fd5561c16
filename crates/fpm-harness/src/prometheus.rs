//! A strict reader of the Prometheus text exposition format (0.0.4), enough to judge
//! what the gateway writes: comments, metric and label names, label escaping, values,
//! one `TYPE` per family declared before its samples, and histogram consistency.
//!
//! Shared by every test that reads the gateway's `/metrics`: its unit tests and the
//! integration tests of both crates.

use std::collections::{BTreeMap, HashMap};

/// One sample.
#[derive(Debug)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum` or `_count` for a histogram's samples).
    pub name: String,
    /// The labels, values unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug)]
pub struct Metrics {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The `TYPE` of each family.
    pub types: HashMap<String, String>,
}

impl Metrics {
    /// The value of the one sample named `name` with exactly `labels`.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted)
            .collect();
        assert_eq!(found.len(), 1, "samples {name}{labels:?}");
        found[0].value
    }
}

fn is_name(name: &str, colon: bool) -> bool {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let mut chars = name.chars();
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

/// The family a sample belongs to: histogram samples carry a suffix.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

/// Reads `text`, or says which line breaks the format and how.
pub fn parse(text: &str) -> Result<Metrics, String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fail = |why: &str| Err(format!("line {}: {why}: {line:?}", index + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) if is_name(name, true) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_name(name, true) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return fail("unknown type");
                    }
                    if samples
                        .iter()
                        .any(|s: &Sample| family(&s.name, &types) == Some(name))
                    {
                        return fail("TYPE after the family's samples");
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return fail("second TYPE for a family");
                    }
                }
                (Some("HELP" | "TYPE"), _, _) => return fail("malformed HELP or TYPE"),
                _ => {} // Other comments are allowed.
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_name(name, true) {
            return fail("bad metric name");
        }
        if family(name, &types).is_none() {
            return fail("sample without a TYPE");
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = inner;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let Some(eq) = rest.find("=\"") else {
                    return fail("label without =\"");
                };
                let label = &rest[..eq];
                if !is_name(label, false) || label.starts_with("__") {
                    return fail("bad label name");
                }
                let mut value = String::new();
                let mut chars = rest[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break eq + 2 + i + 1,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return fail("bad escape in label value"),
                        },
                        Some((_, c)) => value.push(c),
                        None => return fail("unterminated label value"),
                    }
                };
                if labels.insert(label.to_owned(), value).is_some() {
                    return fail("label given twice");
                }
                rest = &rest[end..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let Some(value) = rest.strip_prefix(' ') else {
            return fail("no space before the value");
        };
        // A timestamp may follow; the gateway writes none.
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => return fail("bad value"),
            },
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&samples, &types)?;
    Ok(Metrics { samples, types })
}

/// Buckets rise with `le`, end in `+Inf`, and `+Inf` equals `_count`.
fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == bucket_name) {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le").ok_or("bucket without le")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad le {le:?}"))?
            };
            series.entry(labels).or_default().push((le, sample.value));
        }
        for (labels, buckets) in series {
            let rising = buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            if !rising || buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                return Err(format!("{family}{labels:?}: bad buckets {buckets:?}"));
            }
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if count.value != buckets[buckets.len() - 1].1 {
                return Err(format!("{family}{labels:?}: +Inf bucket is not _count"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_reader_rejects_what_prometheus_would() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\"} 1\n";
        let metrics = parse(ok).unwrap();
        assert_eq!(metrics.samples[0].labels["x"], "q\"\n");
        for bad in [
            "a_total 1\n",                        // no TYPE
            "# TYPE a counter\na{x=\"1\"} one\n", // bad value
            "# TYPE a counter\na{x=1} 1\n",       // unquoted label
            "# TYPE a counter\na{x=\"\\t\"} 1\n", // bad escape
            "# TYPE a counter\na 1",              // no final newline
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
