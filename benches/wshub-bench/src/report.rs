//! A run's results: printed for people line by line, and kept as one JSON object for scripts.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::dial::DialReport;
use crate::histogram::Histogram;

/// Results of one scenario run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    fields: Map<String, Value>,
}

impl Report {
    /// Records `key` for the JSON line and prints it as `label: text`.
    pub(crate) fn put(&mut self, key: &str, value: impl Into<Value>, label: &str, text: String) {
        println!("  {label:<28} {text}");
        self.fields.insert(key.to_owned(), value.into());
    }

    /// Records `key` for the JSON line only.
    pub(crate) fn put_quiet(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    /// Records and prints the latency quantiles of `histogram` under `prefix`.
    pub(crate) fn put_latencies(&mut self, prefix: &str, label: &str, histogram: &Histogram) {
        let q = |q| millis(histogram.quantile(q));
        let (p50, p99, p999, max) = (q(0.5), q(0.99), q(0.999), millis(histogram.max()));
        self.put_quiet(&format!("{prefix}_p50_ms"), p50);
        self.put_quiet(&format!("{prefix}_p99_ms"), p99);
        self.put_quiet(&format!("{prefix}_p999_ms"), p999);
        self.put_quiet(&format!("{prefix}_max_ms"), max);
        println!(
            "  {label:<28} p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms \
             ({} samples)",
            histogram.count()
        );
    }

    /// Records and prints how opening the connections went.
    pub(crate) fn put_dial(&mut self, requested: usize, dial: &DialReport) {
        self.put(
            "connected",
            dial.connected,
            "connected",
            format!("{} of {requested} ({} failed)", dial.connected, dial.failed),
        );
        self.put_quiet("connect_failed", dial.failed);
        if let Some(error) = &dial.first_error {
            self.put(
                "connect_first_error",
                error.as_str(),
                "first connect error",
                error.clone(),
            );
        }
        let seconds = dial.elapsed.as_secs_f64();
        self.put(
            "connect_s",
            seconds,
            "connect time",
            format!("{seconds:.3} s"),
        );
        self.put_latencies("handshake", "handshake", &dial.handshakes);
    }

    /// The JSON line, with the scenario name and any label.
    pub(crate) fn into_json(mut self, scenario: &str, label: &str) -> Value {
        self.fields.insert("scenario".into(), json!(scenario));
        self.fields.insert("label".into(), json!(label));
        Value::Object(self.fields)
    }
}

/// A duration in milliseconds, for reports.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
