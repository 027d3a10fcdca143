//! Fused attention on every ISA this CPU has, against `reference::attention` (f64 accumulation).

use kernels::{reference, AttnArgs, Mask, Strides};
use proptest::prelude::*;

/// Max |fused - reference| for ordinary logits (|scale·q·k| ≲ 3, values in [-1, 1]): f32 rounding of
/// the dot products, the running sums and `exp`, over up to a few thousand keys.
const TOL: f32 = 1e-6;
/// Max |fused - reference| when `scale·q·k` reaches ~1e4: a logit that large carries an f32 rounding
/// error of ~1e4 · 2⁻²⁴ · √head_dim ≈ 5e-3 relative in its weight.
const LARGE_LOGIT_TOL: f32 = 1e-3;
/// Values outside the addressed output rows must be left as they were.
const SENTINEL: f32 = 1234.5;

/// splitmix64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// How the K/V tensors are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KvLayout {
    /// `[batch, kv_len, n_kv_heads, head_dim]`, like the q/k/v projections.
    TokenMajor,
    /// `[batch, n_kv_heads, capacity, head_dim]`, a preallocated cache with `capacity >= kv_len`.
    Cache { capacity: usize },
}

/// One attention problem and its layouts.
#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    q_len: usize,
    kv_len: usize,
    mask: Mask,
    key_lens: Option<Vec<usize>>,
    kv_layout: KvLayout,
    /// Extra elements between positions of q and out (0 = dense token-major).
    pos_pad: usize,
    /// Offset of every slice start (1 makes them unaligned).
    slice_start: usize,
    /// Multiplies q (to make large logits).
    q_gain: f32,
    /// Tanh soft-capping of the scores (Gemma 2).
    softcap: Option<f32>,
    /// A relative position bias `[n_heads, 2 * max_distance + 1]` and its max distance (T5).
    position_bias: Option<(Vec<f32>, usize)>,
    seed: u64,
}

impl Case {
    fn new(batch: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize, q_len: usize, kv_len: usize) -> Self {
        Self {
            batch,
            n_heads,
            n_kv_heads,
            head_dim,
            q_len,
            kv_len,
            mask: Mask::None,
            key_lens: None,
            kv_layout: KvLayout::TokenMajor,
            pos_pad: 0,
            slice_start: 0,
            q_gain: 1.0,
            softcap: None,
            position_bias: None,
            seed: 1,
        }
    }

    fn causal(mut self, q_offset: usize) -> Self {
        self.mask = Mask::Causal { q_offset };
        self
    }

    fn window(mut self, q_offset: usize, window: usize) -> Self {
        self.mask = Mask::SlidingWindow { q_offset, window };
        self
    }

    fn key_lens(mut self, l: &[usize]) -> Self {
        self.key_lens = Some(l.to_vec());
        self
    }

    fn cache(mut self, capacity: usize) -> Self {
        self.kv_layout = KvLayout::Cache { capacity };
        self
    }

    fn strided(mut self, pos_pad: usize, slice_start: usize) -> Self {
        self.pos_pad = pos_pad;
        self.slice_start = slice_start;
        self
    }

    /// Max |fused - reference| over every ISA this CPU has (asserting `tol`), plus the worst value seen.
    fn check(&self, tol: f32) -> f32 {
        let (b, h, hk, d) = (self.batch, self.n_heads, self.n_kv_heads, self.head_dim);
        // q and out: token-major with optional padding between positions.
        let q_pos = h * d + self.pos_pad;
        let q_strides = Strides {
            batch: self.q_len * q_pos,
            pos: q_pos,
            head: d,
        };
        let kv_strides = match self.kv_layout {
            KvLayout::TokenMajor => Strides::token_major(self.kv_len, hk, d),
            KvLayout::Cache { capacity } => Strides::head_major(hk, capacity, d),
        };
        let kv_rows = match self.kv_layout {
            KvLayout::TokenMajor => self.kv_len,
            KvLayout::Cache { capacity } => capacity,
        };
        let s0 = self.slice_start;
        let mut rng = Rng(self.seed);
        let q_buf: Vec<f32> = rng
            .vec(s0 + b * self.q_len * q_pos)
            .iter()
            .map(|x| x * self.q_gain)
            .collect();
        let k_buf = rng.vec(s0 + b * kv_rows * hk * d);
        let v_buf = rng.vec(s0 + b * kv_rows * hk * d);
        let args = AttnArgs {
            batch: b,
            n_heads: h,
            n_kv_heads: hk,
            head_dim: d,
            q_len: self.q_len,
            kv_len: self.kv_len,
            scale: 1.0 / (d.max(1) as f32).sqrt(),
            softcap: self.softcap,
            position_bias: self.position_bias.as_ref().map(|(table, m)| kernels::PositionBias {
                table,
                max_distance: *m,
            }),
            mask: self.mask,
            key_lens: self.key_lens.as_deref(),
            q_strides,
            kv_strides,
            out_strides: q_strides,
        };
        let (q, k, v) = (&q_buf[s0..], &k_buf[s0..], &v_buf[s0..]);
        let mut want = vec![SENTINEL; s0 + b * self.q_len * q_pos];
        reference::attention(&args, q, k, v, &mut want[s0..]);
        let mut worst = 0.0f32;
        for kern in kernels::testing::kernels("attention") {
            let isa = kern.isa();
            let mut got = vec![SENTINEL; want.len()];
            let calls = kernels::isa::exercised(isa);
            kern.attention(&args, q, k, v, &mut got[s0..]);
            assert!(kernels::isa::exercised(isa) > calls, "{isa} path did not run");
            let err = max_abs_diff(&got, &want);
            assert!(
                err <= tol,
                "{isa}: max |fused - reference| = {err:e} > {tol:e} for {self:?}"
            );
            worst = worst.max(err);
        }
        worst
    }
}

/// Max |a - b|; NaN anywhere counts as infinite.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

const EDGE_LENS: [usize; 7] = [0, 1, 7, 15, 17, 63, 65];

#[test]
fn edge_lengths_bidirectional_and_causal() {
    for &q_len in &EDGE_LENS {
        for &kv_len in &EDGE_LENS {
            Case::new(2, 4, 2, 8, q_len, kv_len).check(TOL);
            // Causal as in a decoder: the queries are the last q_len positions.
            Case::new(2, 4, 2, 8, q_len, kv_len)
                .causal(kv_len.saturating_sub(q_len))
                .check(TOL);
        }
    }
}

#[test]
fn head_dims() {
    for d in [1, 3, 4, 5, 8, 17, 64, 80, 128] {
        for (q_len, kv_len) in [(1, 65), (17, 17), (40, 130)] {
            Case::new(1, 3, 3, d, q_len, kv_len).check(TOL);
            Case::new(1, 3, 3, d, q_len, kv_len).causal(kv_len - q_len).check(TOL);
        }
    }
}

#[test]
fn grouped_query_ratios() {
    for group in [1, 3, 4] {
        for (q_len, kv_len) in [(1, 100), (3, 70), (33, 33), (70, 200)] {
            Case::new(2, 2 * group, 2, 64, q_len, kv_len).check(TOL);
            Case::new(2, 2 * group, 2, 64, q_len, kv_len)
                .causal(kv_len - q_len)
                .check(TOL);
        }
    }
}

#[test]
fn causal_offsets() {
    // Offset 0 (prefill), inside, at and past the end of the keys.
    for q_offset in [0, 1, 5, 64, 90, 100, 500] {
        Case::new(1, 4, 2, 16, 20, 100).causal(q_offset).check(TOL);
        Case::new(1, 4, 4, 16, 1, 100).causal(q_offset).check(TOL);
        Case::new(1, 4, 4, 16, 70, 100).causal(q_offset).check(TOL);
    }
}

#[test]
fn padding_key_lens() {
    // Zero (fully masked rows give zeros), short, exact, longer than kv_len.
    let lens = [0, 1, 13, 64, 65, 100, 300];
    Case::new(7, 4, 2, 32, 9, 100).key_lens(&lens).check(TOL);
    Case::new(7, 4, 2, 32, 1, 100).key_lens(&lens).check(TOL);
    Case::new(7, 2, 2, 32, 100, 100).key_lens(&lens).check(TOL);
    Case::new(7, 2, 2, 32, 40, 100).key_lens(&lens).causal(60).check(TOL);
    Case::new(1, 2, 1, 32, 5, 9).key_lens(&[0]).check(0.0);
}

#[test]
fn strided_layouts_and_unaligned_starts() {
    for (q_len, kv_len, capacity) in [(1, 1, 8), (1, 77, 128), (12, 65, 100), (65, 65, 65), (30, 130, 200)] {
        for (pos_pad, start) in [(0, 1), (3, 0), (5, 3)] {
            let case = Case::new(2, 6, 2, 24, q_len, kv_len).strided(pos_pad, start);
            case.clone().check(TOL);
            case.clone().cache(capacity).check(TOL);
            case.clone().cache(capacity).causal(kv_len - q_len).check(TOL);
            case.cache(capacity).key_lens(&[kv_len / 2, kv_len]).check(TOL);
        }
    }
}

/// Run `f` on a rayon pool of `n_threads` (the key split only happens with several threads).
fn on_threads(n_threads: usize, f: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn long_sequences() {
    // Prefill over 1000+ tokens, causal and not.
    Case::new(1, 2, 2, 64, 1030, 1030).causal(0).check(TOL);
    Case::new(1, 2, 1, 64, 300, 1100).check(TOL);
}

#[test]
fn decode_over_long_caches() {
    // One query row over a long cache: split into key chunks on several threads, serial on one.
    for n_threads in [1, 2, 5] {
        on_threads(n_threads, || {
            for kv_len in [1024, 1500, 4099] {
                Case::new(1, 1, 1, 64, 1, kv_len).cache(kv_len + 7).check(TOL);
                Case::new(2, 4, 1, 80, 1, kv_len)
                    .cache(kv_len + 1)
                    .causal(kv_len - 1)
                    .check(TOL);
                Case::new(2, 4, 4, 64, 1, kv_len)
                    .key_lens(&[kv_len - 100, 3])
                    .check(TOL);
                // GQA 8 and 16 query heads per KV head (in place vs packed K/V).
                Case::new(1, 16, 2, 64, 1, kv_len).cache(kv_len).check(TOL);
                Case::new(1, 16, 1, 64, 1, kv_len).cache(kv_len).check(TOL);
            }
        });
    }
}

/// Sliding-window masks (Mistral, Gemma's local layers): windows shorter than, across and longer than a key tile,
/// prefill (every query its own window) and decode over a cache longer than the window, with GQA and padding.
#[test]
fn sliding_windows() {
    for window in [1, 5, 64, 65, 200] {
        for (q_len, kv_len) in [(1, 1), (1, 300), (7, 300), (70, 70), (130, 130), (33, 1100)] {
            let q_offset = kv_len - q_len;
            Case::new(2, 4, 2, 16, q_len, kv_len)
                .window(q_offset, window)
                .check(TOL);
            Case::new(1, 8, 1, 64, q_len, kv_len)
                .cache(kv_len + 3)
                .window(q_offset, window)
                .check(TOL);
        }
    }
    Case::new(2, 4, 4, 16, 9, 150)
        .window(141, 20)
        .key_lens(&[150, 140])
        .check(TOL);
    // Decode split into key chunks on several threads: the chunks before the window are skipped.
    on_threads(3, || {
        Case::new(1, 2, 1, 64, 1, 4099)
            .cache(4100)
            .window(4098, 1500)
            .check(TOL);
    });
}

/// Gemma 2's tanh soft-capping of the scaled scores, against the reference's f64 `cap · tanh(s / cap)`: caps
/// that bite (large logits) and caps far above every score (no effect), causal, windowed and unmasked.
#[test]
fn soft_capped_scores() {
    for (cap, gain) in [(50.0f32, 1.0), (1.0, 1.0), (5.0, 100.0), (50.0, 1e3)] {
        // A capped score near `cap` carries the f32 rounding of `cap · tanh` (a few ulps of cap) into its weight's
        // exponent: a relative error of ~4 · cap · 2⁻²⁴ on the output (values in [-1, 1]), never below TOL.
        let tol = TOL.max(4.0 * cap * f32::EPSILON / 2.0);
        for (q_len, kv_len) in [(1, 90), (17, 65), (70, 70)] {
            let mut case = Case::new(1, 4, 2, 32, q_len, kv_len);
            case.softcap = Some(cap);
            case.q_gain = gain;
            case.clone().check(tol);
            case.clone().causal(kv_len - q_len).check(tol);
            case.window(kv_len - q_len, 9).check(tol);
        }
    }
}

/// T5's relative position bias added to the (unscaled) scores, against the reference's per-key lookup: distances
/// inside and past `max_distance` (the edge entries), bidirectional with padding, causal after a cache (the
/// query positions shifted by `q_offset`), one query or many, on every ISA.
#[test]
fn relative_position_bias() {
    for max_distance in [3usize, 40] {
        for (q_len, kv_len) in [(1, 90), (17, 65), (70, 70)] {
            let heads = 4;
            let mut rng = Rng(7 + max_distance as u64);
            let table: Vec<f32> = rng
                .vec(heads * (2 * max_distance + 1))
                .iter()
                .map(|x| 4.0 * x)
                .collect();
            let mut case = Case::new(2, heads, 2, 16, q_len, kv_len);
            case.position_bias = Some((table, max_distance));
            case.clone().check(TOL);
            case.clone().key_lens(&[kv_len, kv_len / 2]).check(TOL);
            case.causal(kv_len - q_len).check(TOL);
        }
    }
}

#[test]
fn large_logits() {
    // scale·q·k up to ~1e4 (q scaled by 1e3 · √head_dim): softmax must stay finite and exact in structure.
    for (q_len, kv_len, d) in [(1, 200, 64), (17, 65, 16), (70, 70, 64)] {
        let mut case = Case::new(1, 2, 1, d, q_len, kv_len);
        case.q_gain = 1e3 * (d as f32).sqrt();
        case.clone().check(LARGE_LOGIT_TOL);
        case.causal(kv_len - q_len).check(LARGE_LOGIT_TOL);
    }
}

#[test]
fn empty_problems() {
    Case::new(0, 4, 2, 8, 5, 5).check(0.0);
    Case::new(2, 0, 1, 8, 5, 5).check(0.0);
    Case::new(2, 4, 2, 0, 5, 5).check(0.0);
    Case::new(2, 4, 2, 8, 0, 5).check(0.0);
    Case::new(2, 4, 2, 8, 5, 0).check(0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_shapes(
        batch in 1usize..4,
        n_kv_heads in 1usize..4,
        group in 1usize..5,
        head_dim in 1usize..100,
        q_len in 0usize..80,
        kv_len in 0usize..300,
        causal in proptest::option::of(0usize..300),
        lens in proptest::option::of(proptest::collection::vec(0usize..320, 4)),
        extra_capacity in proptest::option::of(0usize..20),
        pos_pad in 0usize..4,
        slice_start in 0usize..4,
        seed in any::<u64>(),
    ) {
        let mut case = Case::new(batch, n_kv_heads * group, n_kv_heads, head_dim, q_len, kv_len)
            .strided(pos_pad, slice_start);
        case.seed = seed;
        if let Some(q_offset) = causal {
            case = case.causal(q_offset);
        }
        if let Some(l) = lens {
            case = case.key_lens(&l[..batch]);
        }
        if let Some(extra) = extra_capacity {
            case = case.cache(kv_len + extra);
        }
        case.check(TOL);
    }
}
