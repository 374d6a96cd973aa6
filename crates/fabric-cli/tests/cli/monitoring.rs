//! The shipped Grafana dashboard (`deploy/grafana/fabric.json`) and Prometheus alerts
//! (`deploy/prometheus/alerts.yml`) name only metrics a real server exposes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::server::Fabric;

/// The files whose metric names are checked, relative to the repository's root.
const FILES: [&str; 2] = ["deploy/grafana/fabric.json", "deploy/prometheus/alerts.yml"];

/// Suffixes of the series of a histogram or summary family.
const SERIES_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every token `fabric_[A-Za-z0-9_:]*` of `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("fabric_") {
        let preceded_by_name = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[start..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded_by_name {
            names.insert(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// What an exposition declares: family name → type (`# TYPE` lines), and every sample name.
struct Exposition {
    families: Vec<(String, String)>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut families = Vec::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(decl) = line.strip_prefix("# TYPE ") {
                let mut words = decl.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    families.push((name.to_string(), kind.to_string()));
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_string());
            }
        }
        Self { families, samples }
    }

    /// Whether `name` is a family, a sample, or a series of a histogram or summary family
    /// (`X_bucket`, `X_sum`, `X_count` of a family `X` typed so).
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.iter().any(|(f, _)| f == name) {
            return true;
        }
        SERIES_SUFFIXES.iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                self.families.iter().any(|(family, kind)| {
                    family == base && (kind == "histogram" || kind == "summary")
                })
            })
        })
    }
}

#[test]
fn metric_names_are_whole_tokens_and_series_resolve_to_their_family() {
    let names = metric_names(
        r#"sum(rate(fabric_a_total{x="y"}[5m])) / my_fabric_b + fabric_c_bucket{le="1"}"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["fabric_a_total".into(), "fabric_c_bucket".into()])
    );
    let exposition = Exposition::parse(
        "# TYPE fabric_h_seconds histogram\nfabric_h_seconds_bucket{le=\"1\"} 0\n\
         # TYPE fabric_g gauge\nfabric_g 1\n# TYPE fabric_empty_total counter\n",
    );
    for present in ["fabric_h_seconds_sum", "fabric_g", "fabric_empty_total"] {
        assert!(exposition.has(present), "{present}");
    }
    for absent in ["fabric_g_count", "fabric_h", "fabric_gone"] {
        assert!(!exposition.has(absent), "{absent}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alerts_name_only_exposed_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut referenced = BTreeSet::new();
    for file in FILES {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file} names only {names:?}");
        referenced.extend(names);
    }

    let server = Fabric::start(&[]);
    let client = server.client();
    let echo = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = client.submit(json!({"module": echo, "input": "hi"})).await;
    let task = client.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let (status, text) = client.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let exposition = Exposition::parse(&text);

    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| !exposition.has(name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts name metrics /metrics does not expose: {missing:?}\n{text}"
    );
}
