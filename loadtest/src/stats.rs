//! Latency histograms, result reports, the human summary table and JSON output.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The common time origin: every timestamp in a payload is ns since this instant.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A latency histogram in nanoseconds (1 ns ..= 100 s, 3 significant digits).
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency(Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Percentiles in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            mean: self.0.mean() / 1000.0,
            p50: us(self.0.value_at_quantile(0.5)),
            p90: us(self.0.value_at_quantile(0.9)),
            p99: us(self.0.value_at_quantile(0.99)),
            p999: us(self.0.value_at_quantile(0.999)),
            max: us(self.0.max()),
        }
    }
}

/// Latency percentiles (µs).
#[derive(Default, Clone, Copy, Debug)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count, "mean": self.mean, "p50": self.p50, "p90": self.p90,
            "p99": self.p99, "p99_9": self.p999, "max": self.max,
        })
    }

    pub fn line(self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            fmt_us(self.p50),
            fmt_us(self.p90),
            fmt_us(self.p99),
            fmt_us(self.p999),
            fmt_us(self.max)
        )
    }
}

/// Formats microseconds with a sensible unit.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}µs")
    }
}

/// Formats a rate with thousands separators.
pub fn fmt_rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A finished run: rows for the human table plus the machine-readable JSON object.
pub struct Report {
    pub scenario: &'static str,
    pub rows: Vec<(String, String)>,
    pub json: Map<String, Value>,
    /// Non-empty when the run failed a check (e.g. `--verify`); the process exits non-zero.
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            rows: Vec::new(),
            json: Map::new(),
            failures: Vec::new(),
        }
    }

    /// Adds a row to the human table.
    pub fn row(&mut self, key: &str, value: impl Into<String>) {
        self.rows.push((key.to_string(), value.into()));
    }

    /// Adds a JSON field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_string(), value.into());
    }

    /// Prints the human summary table to stdout.
    pub fn print(&self, label: &str) {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!("== ringhub-loadtest {} [{}] ==", self.scenario, label);
        for (k, v) in &self.rows {
            println!("  {k:<width$}  {v}");
        }
        for f in &self.failures {
            println!("  FAILED: {f}");
        }
    }

    /// Writes the JSON results (with label, scenario and parameters) to `path`.
    pub fn write_json(&self, path: &str, label: &str, params: Value) -> Result<()> {
        let mut obj = self.json.clone();
        obj.insert("label".into(), label.into());
        obj.insert("scenario".into(), self.scenario.into());
        obj.insert("params".into(), params);
        obj.insert("ok".into(), self.failures.is_empty().into());
        obj.insert("failures".into(), json!(self.failures));
        let text = serde_json::to_string_pretty(&Value::Object(obj))?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {path}"))
    }
}

/// Seconds as f64, for JSON.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
