//! Choosing the next token from logits: greedy or sampled, with the Hugging Face logits processors.
//!
//! The order is that of `transformers`' `generate`: repetition penalty, then temperature, top-k,
//! top-p and min-p, then a draw from the renormalised distribution. The random numbers come from
//! a small seeded generator (xoshiro256**), so a seed gives the same tokens on every run and for
//! every thread count (the logits themselves are computed deterministically).

use kernels::Kernels;

use crate::{Error, Result};

/// How the next token is chosen.
///
/// ```
/// use qkv::{GenerateOptions, SampleParams, Strategy};
///
/// let greedy = GenerateOptions { strategy: Strategy::Greedy, ..Default::default() };
/// let sampled = GenerateOptions { strategy: Strategy::Sample(SampleParams { top_k: 40, ..Default::default() }), ..greedy };
/// assert_ne!(sampled.strategy, Strategy::Greedy);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    /// The most likely token.
    Greedy,
    /// A draw from the (filtered) distribution.
    Sample(SampleParams),
}

/// Sampling filters; the defaults turn every filter off (plain sampling at temperature 1).
///
/// ```
/// use qkv::SampleParams;
///
/// let p = SampleParams { temperature: 0.8, top_p: 0.95, min_p: 0.05, seed: 7, ..Default::default() };
/// p.validate()?;
/// assert!(SampleParams { temperature: 0.0, ..p }.validate().is_err(), "greedy is Strategy::Greedy");
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// Divides the logits (> 0).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SampleParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        }
    }
}

impl SampleParams {
    /// An error naming the first parameter out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Request(what.to_string()));
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(&format!("temperature must be > 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(&format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(&format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64: small, fast, reproducible.
///
/// ```
/// use qkv::search::Rng;
///
/// let (mut a, mut b) = (Rng::new(42), Rng::new(42));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!((0.0..1.0).contains(&a.next_f64()));
/// ```
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// HF `RepetitionPenaltyLogitsProcessor`: every token already in `history` has its logit divided by
/// `penalty` when positive, multiplied when negative (once per token, however often it occurs).
/// Ids outside `logits` are ignored. `seen` is scratch (`[vocab]`, all false on entry and on return).
pub(crate) fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32, seen: &mut Vec<bool>) {
    if penalty == 1.0 {
        return;
    }
    if seen.len() < logits.len() {
        seen.resize(logits.len(), false);
    }
    for &id in history {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let x = &mut logits[i];
            *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
        }
    }
    for &id in history {
        if let Some(s) = seen.get_mut(id as usize) {
            *s = false;
        }
    }
}

/// Chooses tokens; holds the random generator and a scratch buffer reused at every step.
///
/// ```
/// use qkv::search::{SampleParams, Sampler, Strategy};
/// use qkv::Kernels;
///
/// let k = Kernels::scalar();
/// let mut greedy = Sampler::new(Strategy::Greedy, 1.0)?;
/// assert_eq!(greedy.sample(&k, &mut [0.5, 2.0, 1.0], &[])?, 1);
/// // top-p 0.5 keeps only the most likely of these three.
/// let p = SampleParams { top_p: 0.5, seed: 3, ..Default::default() };
/// let mut s = Sampler::new(Strategy::Sample(p), 1.0)?;
/// assert_eq!(s.sample(&k, &mut [0.0, 4.0, 1.0], &[])?, 1);
/// assert_eq!(s.candidates().len(), 1);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sampler {
    strategy: Strategy,
    repetition_penalty: f32,
    rng: Rng,
    /// Candidates `(id, logit or probability)`, most likely first.
    candidates: Vec<(u32, f32)>,
    /// Scratch of the repetition penalty: which ids were already penalised.
    seen: Vec<bool>,
}

impl Sampler {
    pub fn new(strategy: Strategy, repetition_penalty: f32) -> Result<Self> {
        if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
            return Err(Error::Request(format!(
                "repetition_penalty must be > 0, got {repetition_penalty}"
            )));
        }
        let seed = match strategy {
            Strategy::Greedy => 0,
            Strategy::Sample(p) => {
                p.validate()?;
                p.seed
            }
        };
        Ok(Self {
            strategy,
            repetition_penalty,
            rng: Rng::new(seed),
            candidates: Vec::new(),
            seen: Vec::new(),
        })
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The next token given `logits` (`[vocab]`, modified in place) and the ids so far (prompt and
    /// generated, for the repetition penalty). An error only when no logit is a number.
    pub fn sample(&mut self, k: &Kernels, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        apply_repetition_penalty(logits, history, self.repetition_penalty, &mut self.seen);
        let p = match self.strategy {
            Strategy::Greedy => return k.argmax(logits).map(|i| i as u32).ok_or_else(no_number),
            Strategy::Sample(p) => p,
        };
        self.filter(logits, &p)?;
        // Draw from the kept candidates (their probabilities sum to 1 up to rounding).
        let u = self.rng.next_f64();
        let mut acc = 0.0f64;
        for &(id, prob) in &self.candidates {
            acc += prob as f64;
            if u < acc {
                return Ok(id);
            }
        }
        // Rounding left `acc` just below 1 and `u` above it: the last candidate.
        self.candidates.last().map(|&(id, _)| id).ok_or_else(no_number)
    }

    /// Leave in `self.candidates` the tokens the filters keep, most likely first, with their
    /// renormalised probabilities. Always keeps at least the most likely token.
    pub fn filter(&mut self, logits: &mut [f32], p: &SampleParams) -> Result<()> {
        // Temperature: logits / T (over the vocabulary).
        if p.temperature != 1.0 {
            let inv = 1.0 / p.temperature;
            logits.iter_mut().for_each(|x| *x *= inv);
        }
        // Every token with a number (NaN and -inf are never drawn).
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_nan() && **x != f32::NEG_INFINITY)
                .map(|(i, &x)| (i as u32, x)),
        );
        if cands.is_empty() {
            return Err(no_number());
        }
        // Top-k: the k most likely, by selection (linear time, not yet sorted).
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, most_likely_first);
            cands.truncate(p.top_k);
        }
        // Softmax over the survivors: the tokens top-k removed have probability 0, as in HF.
        let max = cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        let mut sum = 0.0f64;
        for c in cands.iter_mut() {
            c.1 = ((c.1 - max) as f64).exp() as f32;
            sum += c.1 as f64;
        }
        let inv = (1.0 / sum) as f32;
        cands.iter_mut().for_each(|c| c.1 *= inv);
        // Top-p: keep the most likely tokens until their mass reaches top_p (the token that crosses
        // it is kept). Only a sorted head is needed: sort 256, then 8x more while the mass falls short.
        if p.top_p < 1.0 {
            let mut n_head = TOP_P_HEAD.min(cands.len());
            loop {
                sort_head(cands, n_head);
                let mut mass = 0.0f64;
                if let Some(i) = cands[..n_head].iter().position(|c| {
                    mass += c.1 as f64;
                    mass >= p.top_p as f64
                }) {
                    cands.truncate(i + 1);
                    break;
                }
                if n_head == cands.len() {
                    break; // rounding: the whole mass is just below top_p, keep everything
                }
                n_head = n_head.saturating_mul(8).min(cands.len());
            }
        }
        // Min-p: drop tokens below min_p * the most likely probability.
        if p.min_p > 0.0 {
            let top = cands.iter().fold(0.0f32, |m, c| m.max(c.1));
            let floor = p.min_p * top;
            cands.retain(|c| c.1 >= floor);
        }
        // The draw walks the candidates most likely first.
        cands.sort_unstable_by(most_likely_first);
        // Renormalise what is left.
        let sum: f64 = cands.iter().map(|c| c.1 as f64).sum();
        let inv = (1.0 / sum) as f32;
        cands.iter_mut().for_each(|c| c.1 *= inv);
        Ok(())
    }

    /// The candidates of the last `filter` (or `sample`) call: `(id, probability)`, most likely first.
    pub fn candidates(&self) -> &[(u32, f32)] {
        &self.candidates
    }
}

/// Candidates sorted for top-p first take this many most likely tokens (usually enough).
const TOP_P_HEAD: usize = 256;

/// Higher value first, lower id first on ties (a total order: results never depend on the sort).
fn most_likely_first(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Put the `n` most likely candidates first, sorted.
fn sort_head(cands: &mut [(u32, f32)], n: usize) {
    if n < cands.len() {
        cands.select_nth_unstable_by(n, most_likely_first);
    }
    cands[..n].sort_unstable_by(most_likely_first);
}

fn no_number() -> Error {
    Error::Request("no logit is a number (all NaN or -inf): cannot choose a token".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_uniform_enough() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(xs[17], {
            (0..17).for_each(|_| {
                b.next_f64();
            });
            b.next_f64()
        });
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn repetition_penalty_as_hf() {
        let mut l = [2.0, -2.0, 1.0];
        let mut seen = vec![];
        apply_repetition_penalty(&mut l, &[0, 1, 1, 0, 7], 2.0, &mut seen);
        assert_eq!(l, [1.0, -4.0, 1.0]);
        assert!(seen.iter().all(|&s| !s));
    }

    #[test]
    fn greedy_picks_argmax_and_nan_is_an_error() {
        let k = Kernels::scalar();
        let mut s = Sampler::new(Strategy::Greedy, 1.0).unwrap();
        assert_eq!(s.sample(&k, &mut [0.1, 3.0, 2.0], &[]).unwrap(), 1);
        assert!(s.sample(&k, &mut [f32::NAN, f32::NAN], &[]).is_err());
        assert!(Sampler::new(Strategy::Greedy, 0.0).is_err());
        let bad = SampleParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert!(Sampler::new(Strategy::Sample(bad), 1.0).is_err());
    }

    #[test]
    fn filters_keep_the_expected_sets() {
        // probs ∝ exp(logits): 0.5, 0.25, 0.125, 0.0625, 0.0625 (ln values).
        let base: Vec<f32> = [0.5f32, 0.25, 0.125, 0.0625, 0.0625].iter().map(|p| p.ln()).collect();
        let kept = |p: SampleParams| {
            let mut s = Sampler::new(Strategy::Sample(p), 1.0).unwrap();
            let mut l = base.clone();
            s.filter(&mut l, &p).unwrap();
            s.candidates().iter().map(|c| c.0).collect::<Vec<_>>()
        };
        let d = SampleParams::default();
        assert_eq!(kept(d), vec![0, 1, 2, 3, 4]);
        assert_eq!(kept(SampleParams { top_k: 2, ..d }), vec![0, 1]);
        assert_eq!(kept(SampleParams { top_p: 0.7, ..d }), vec![0, 1]);
        assert_eq!(kept(SampleParams { top_p: 0.8, ..d }), vec![0, 1, 2]);
        assert_eq!(kept(SampleParams { min_p: 0.2, ..d }), vec![0, 1, 2]);
        assert_eq!(kept(SampleParams { min_p: 0.6, ..d }), vec![0]);
    }
}
