//! Scrapes a Prometheus text endpoint before and after the run and reports the deltas of Tollgate's own counters.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text exposition format; lines that do not parse are skipped, since one odd line should not hide the rest.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns the labels and the text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for s in samples.iter().filter(|s| s.name == name) {
        found = true;
        total += s.value;
    }
    found.then_some(total)
}

fn by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == label) {
            *out.entry(v.clone()).or_insert(0.0) += s.value;
        }
    }
    out
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_total: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cache_requests_by_status: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executions_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_rows_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_batch_size: Option<f64>,
}

/// Counter deltas; a metric first created during the run counts from zero, one absent afterwards is omitted.
pub fn delta(before: &[Sample], after: &[Sample]) -> ServerDelta {
    let d = |name: &str| sum(after, name).map(|a| a - sum(before, name).unwrap_or(0.0));
    let mut cache = by_label(after, "tollgate_cache_requests_total", "status");
    let prior = by_label(before, "tollgate_cache_requests_total", "status");
    for (status, v) in cache.iter_mut() {
        *v -= prior.get(status).copied().unwrap_or(0.0);
    }
    let mean_batch_size = match (d("tollgate_batch_size_count"), d("tollgate_batch_size_sum")) {
        (Some(count), Some(total)) if count > 0.0 => Some(total / count),
        _ => None,
    };
    ServerDelta {
        requests_total: d("tollgate_requests_total"),
        cache_requests_by_status: cache,
        executions_total: d("tollgate_executions_total"),
        inference_rows_total: d("tollgate_inference_rows_total"),
        mean_batch_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"
# HELP tollgate_requests_total Requests.
# TYPE tollgate_requests_total counter
tollgate_requests_total{model="m",protocol="http"} 10
tollgate_requests_total{model="m",protocol="grpc"} 5
tollgate_cache_requests_total{model="m",status="hit"} 3
tollgate_batch_size_count{model="m"} 4
tollgate_batch_size_sum{model="m"} 8
"#;

    const AFTER: &str = r#"
tollgate_requests_total{model="m",protocol="http"} 110
tollgate_requests_total{model="m",protocol="grpc"} 5 1700000000000
tollgate_cache_requests_total{model="m",status="hit"} 53
tollgate_cache_requests_total{model="m",status="miss"} 50
tollgate_executions_total 12
tollgate_batch_size_count{model="m"} 14
tollgate_batch_size_sum{model="m"} 58
tollgate_batch_size_bucket{model="m",le="+Inf"} 14
"#;

    #[test]
    fn parses_names_labels_and_values() {
        let s = parse(r#"a_b{x="1",y="q\"u\\o"} 2.5e3"#);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "a_b");
        assert_eq!(
            s[0].labels,
            vec![("x".into(), "1".into()), ("y".into(), "q\"u\\o".into())]
        );
        assert_eq!(s[0].value, 2500.0);
        let plain = parse("up 1\n# comment\n\nbroken{x=\"1\" 3\nnan_metric NaN\n");
        assert_eq!(
            plain[0],
            Sample {
                name: "up".into(),
                labels: vec![],
                value: 1.0
            }
        );
        assert_eq!(plain.len(), 2);
        assert!(plain[1].value.is_nan());
        let with_comma = parse("m{a=\"x\",} 7");
        assert_eq!(with_comma[0].value, 7.0);
    }

    #[test]
    fn deltas_sum_over_labels() {
        let d = delta(&parse(BEFORE), &parse(AFTER));
        assert_eq!(d.requests_total, Some(100.0));
        assert_eq!(d.cache_requests_by_status.get("hit"), Some(&50.0));
        assert_eq!(d.cache_requests_by_status.get("miss"), Some(&50.0));
        assert_eq!(d.executions_total, Some(12.0));
        assert_eq!(d.inference_rows_total, None);
        assert_eq!(d.mean_batch_size, Some(5.0));
        let json = serde_json::to_value(&d).unwrap();
        assert!(json.get("inference_rows_total").is_none());
    }
}
