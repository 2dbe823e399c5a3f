//! `deploy/grafana/channels-server.json` asks only for metrics `/metrics`
//! serves: every PromQL expression of the dashboard (and the metric of each
//! `label_values(...)` variable) is parsed for metric names, and each one
//! must be a series name on a real server's page (histograms appear there
//! as `_bucket`, `_sum` and `_count`).

use std::collections::BTreeSet;
use std::sync::Arc;

use channels_core::SharedLayer;
use channels_server::{App, ServerConfig};

/// PromQL words that are not metric names: aggregations, functions,
/// keywords and binary operators.
const NOT_METRICS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "time",
    "topk",
    "bottomk",
    "label_values",
    "le",
];

/// Drops what sits between `open` and its matching `close` (label matchers,
/// range selectors), keeping the rest.
fn strip_groups(expr: &str, open: char, close: char) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    let mut in_string = false;
    for c in expr.chars() {
        if c == '"' && depth > 0 {
            in_string = !in_string;
        }
        if in_string {
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The metric names an expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bare = strip_groups(&strip_groups(expr, '{', '}'), '[', ']');
    // `by (a, b)` / `without (...)` list labels, not metrics.
    let mut cleaned = String::new();
    let mut rest = bare.as_str();
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        cleaned.push_str(&rest[..at]);
        let word_len = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len() - at);
        let word = &rest[at..at + word_len];
        let after = rest[at + word_len..].trim_start();
        if matches!(word, "by" | "without" | "on" | "ignoring") && after.starts_with('(') {
            let close = after.find(')').map_or(after.len(), |i| i + 1);
            rest = &after[close..];
            continue;
        }
        if after.starts_with('(') {
            // A function or aggregation call.
            cleaned.push(' ');
        } else {
            cleaned.push(' ');
            cleaned.push_str(word);
            cleaned.push(' ');
        }
        rest = &rest[at + word_len..];
    }
    cleaned
        .split_whitespace()
        .filter(|word| {
            word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && !NOT_METRICS.contains(word)
        })
        .map(str::to_owned)
        .collect()
}

/// Every `expr` string in the dashboard, and the metric of each
/// `label_values(metric, label)` template query.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    ("definition", serde_json::Value::String(query))
                        if query.starts_with("label_values(") =>
                    {
                        let inner = &query["label_values(".len()..];
                        let metric = inner.split([',', ')']).next().unwrap_or("").trim();
                        out.push(metric.to_owned());
                    }
                    _ => queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The series names on a real server's `/metrics` page.
fn served_names() -> BTreeSet<String> {
    let layer: SharedLayer = Arc::new(channels_memory::InMemoryChannelLayer::new());
    let page = App::new(layer, ServerConfig::default()).render_metrics();
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_parser_finds_metric_names_only() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, op) (rate(a_bucket{job=~\"x\", op=\"send\"}[5m]))) \
         / clamp_min(b_total, 1) + on (instance) c",
    );
    assert_eq!(
        names,
        ["a_bucket", "b_total", "c"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}

#[test]
fn every_dashboard_query_names_served_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/channels-server.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 15, "only {} queries found", all.len());
    let served = served_names();
    let mut used = BTreeSet::new();
    for query in &all {
        let names = metric_names(query);
        assert!(!names.is_empty(), "no metric in `{query}`");
        for name in names {
            assert!(
                served.contains(&name),
                "`{name}` (in `{query}`) is not served by /metrics; served: {served:?}"
            );
            used.insert(name);
        }
    }
    // The dashboard shows the metrics that matter for operating it.
    for name in [
        "channels_connections_open",
        "channels_layer_op_duration_seconds_bucket",
        "channels_layer_dropped_total",
        "process_resident_memory_bytes",
        "channels_build_info",
        "channels_slow_client_closes_total",
        "channels_flood_closes_total",
        "channels_frames_rate_limited_total",
        "channels_gateway_closes_total",
        "channels_gateway_auth_failures_total",
        "channels_forward_dropped_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}
