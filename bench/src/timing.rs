//! Timing of repeated runs: min / median / max, and whether the spread is too wide to trust.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Spread (max - min) / median above which a measurement is reported as noisy.
pub const NOISY_SPREAD: f64 = 0.25;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    pub runs: usize,
    pub min_s: f64,
    pub median_s: f64,
    pub max_s: f64,
}

impl Timing {
    pub fn noisy(&self) -> bool {
        self.runs >= 3 && (self.max_s - self.min_s) / self.median_s > NOISY_SPREAD
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
    Timing {
        runs: samples.len(),
        min_s: samples[0],
        median_s: samples[samples.len() / 2],
        max_s: samples[samples.len() - 1],
    }
}
