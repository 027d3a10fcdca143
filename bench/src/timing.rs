//! Timing of repeated runs: min / median / max, and whether the spread is too wide to trust.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Spread (p90 - p10) / median above which a measurement is reported as noisy. The 10th-90th percentile range
/// and not min-max: one run delayed by the OS among a few hundred does not make the median untrustworthy, a
/// wide spread of the middle 80% does. (With fewer than 10 runs p10 and p90 are min and max.)
pub const NOISY_SPREAD: f64 = 0.25;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    pub runs: usize,
    pub min_s: f64,
    pub p10_s: f64,
    pub median_s: f64,
    pub p90_s: f64,
    pub max_s: f64,
}

impl Timing {
    pub fn noisy(&self) -> bool {
        self.runs >= 3 && (self.p90_s - self.p10_s) / self.median_s > NOISY_SPREAD
    }
}

/// Run `f` once to warm up, then repeatedly until `budget` is spent (at least `min_runs`, at most `max_runs`).
pub fn time<F: FnMut()>(mut f: F, budget: Duration, min_runs: usize, max_runs: usize) -> Timing {
    f();
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < min_runs || (start.elapsed() < budget && samples.len() < max_runs) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    Timing {
        runs: n,
        min_s: samples[0],
        p10_s: samples[n / 10],
        median_s: samples[n / 2],
        p90_s: samples[(n - 1) - (n - 1) / 10],
        max_s: samples[n - 1],
    }
}
