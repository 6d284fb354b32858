//! `GET /metrics` scraped and parsed with the `prometheus-parse` crate.

#![allow(dead_code)]

use std::io::BufRead;

use prometheus_parse::{Sample, Scrape, Value};

use crate::common::Gateway;

/// A scrape: the raw text and its parsed samples.
pub struct Metrics {
    pub text: String,
    pub scrape: Scrape,
}

/// Scrapes `/metrics` (200, Prometheus text format) and parses it.
pub fn scrape(gw: &Gateway) -> Metrics {
    let r = gw.request("GET", "/metrics").send();
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain"),
        "GET /metrics content type: {ct:?}"
    );
    let text = r.text();
    let scrape = Scrape::parse(std::io::Cursor::new(text.clone()).lines())
        .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"));
    Metrics { text, scrape }
}

/// Scrapes until `ready` holds, for at most five seconds, and returns the last scrape. With the
/// audit off a call is counted just after its answer has left (`render_audited` in
/// `downstream/http.rs`), so a scrape sent on the heels of that answer can come first.
pub fn scrape_when(gw: &Gateway, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let m = scrape(gw);
        if ready(&m) || std::time::Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl Metrics {
    /// The samples of `metric` whose labels include every `(name, value)` of `labels`.
    pub fn samples(&self, metric: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of the one counter or gauge sample of `metric` with exactly `labels`
    /// (0 when there is none yet: a counter appears with its first increment).
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples(metric, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert!(
            found.len() <= 1,
            "{metric}{labels:?}: {} samples:\n{}",
            found.len(),
            self.text
        );
        match found.first().map(|s| &s.value) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{metric}{labels:?} is not a counter or gauge: {other:?}"),
        }
    }

    /// Whether `metric` has a sample at all (with any labels).
    pub fn has(&self, metric: &str) -> bool {
        self.scrape.samples.iter().any(|s| s.metric == metric)
    }

    /// The number of observations of histogram `metric` with `labels` (its `+Inf` bucket).
    pub fn histogram_count(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.samples(metric, labels);
        let mut total = 0.0;
        for s in found {
            let Value::Histogram(buckets) = &s.value else {
                panic!("{metric} is not a histogram: {:?}\n{}", s.value, self.text);
            };
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .unwrap_or_else(|| panic!("{metric}: no +Inf bucket:\n{}", self.text));
            // Buckets are cumulative: never decreasing.
            let mut last = 0.0;
            for b in buckets {
                assert!(
                    b.count >= last,
                    "{metric}: buckets not cumulative: {buckets:?}"
                );
                last = b.count;
            }
            total += inf.count;
        }
        total
    }

    /// Every label value of every sample.
    pub fn label_values(&self) -> Vec<String> {
        self.scrape
            .samples
            .iter()
            .flat_map(|s| s.labels.values().cloned())
            .collect()
    }
}
