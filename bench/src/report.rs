//! Summaries shared by the benchmarks.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Percentiles of a histogram of nanoseconds.
pub fn latency_summary(h: &Histogram<u64>) -> LatencySummary {
    let ms = |ns: u64| ns as f64 / 1e6;
    LatencySummary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// Prints a report as one JSON line (machine-readable) or pretty JSON.
pub fn print(report: &impl Serialize, json_line: bool) -> anyhow::Result<()> {
    if json_line {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}
