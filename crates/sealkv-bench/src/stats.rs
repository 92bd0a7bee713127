//! Latency samples and the numbers a run reports.

use std::time::Duration;

/// What one measured phase produced.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Completed operations per second over the measured window.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Completed operations.
    pub ops: u64,
    /// Failed operations (not counted in throughput or latency).
    pub errors: u64,
}

/// Summarises `samples` (latencies in microseconds) over a window of `window`.
pub fn summarize(mut samples: Vec<u32>, window: Duration, errors: u64) -> Summary {
    samples.sort_unstable();
    let pick = |q: f64| -> Duration {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        Duration::from_micros(u64::from(samples[i.min(samples.len() - 1)]))
    };
    Summary {
        ops_per_sec: samples.len() as f64 / window.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        ops: samples.len() as u64,
        errors,
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let s = summarize((1..=100).rev().collect(), Duration::from_secs(2), 3);
        assert_eq!(s.p50, Duration::from_micros(51));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.ops, 100);
        assert_eq!(s.errors, 3);
        assert!((s.ops_per_sec - 50.0).abs() < 1e-9);
        assert_eq!(summarize(Vec::new(), Duration::from_secs(1), 0).p99, Duration::ZERO);
    }
}
