//! `reference::attention_probs`, the recording path's attention: the same output as `reference::attention`,
//! and softmax weights whose rows sum to 1, with masked keys (causal, padding) exactly 0 and a query that sees
//! no key all zeros.

use kernels::reference::{attention, attention_probs};
use kernels::{AttnArgs, Heads};

/// Max |row sum - 1|: each weight is an f64 quotient rounded once to f32 (relative 2^-24), summed in f64 here.
const ROW_SUM_TOL: f64 = 1e-6;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

#[test]
fn probs_match_the_reference_and_respect_the_masks() {
    let heads = Heads::grouped(4, 2, 8);
    let (batch, q_len, kv_len) = (2, 3, 5);
    let lens = [5, 0];
    for (name, args) in [
        ("causal", AttnArgs::causal(heads, batch, q_len, kv_len)),
        ("cross", AttnArgs::cross(heads, batch, q_len, kv_len)),
        ("padded", AttnArgs::bidirectional(heads, batch, kv_len, &lens)),
    ] {
        let q = values(batch * args.q_len * 4 * 8, 1);
        let (k, v) = (values(batch * kv_len * 2 * 8, 2), values(batch * kv_len * 2 * 8, 3));
        let mut want = vec![0.0; batch * args.q_len * 4 * 8];
        attention(&args, &q, &k, &v, &mut want);
        let mut out = vec![0.0; want.len()];
        let mut probs = vec![f32::NAN; batch * 4 * args.q_len * kv_len];
        attention_probs(&args, &q, &k, &v, &mut out, &mut probs);
        assert_eq!(out, want, "{name}: the output is the reference's");
        for b in 0..batch {
            for h in 0..4 {
                for i in 0..args.q_len {
                    let r0 = ((b * 4 + h) * args.q_len + i) * kv_len;
                    let row = &probs[r0..r0 + kv_len];
                    let seen = (0..kv_len).filter(|&j| args.visible(b, i, j)).count();
                    for (j, &p) in row.iter().enumerate() {
                        if !args.visible(b, i, j) {
                            assert_eq!(p, 0.0, "{name} b{b} h{h} q{i}: masked key {j}");
                        }
                    }
                    let sum: f64 = row.iter().map(|&p| p as f64).sum();
                    let expected = if seen == 0 { 0.0 } else { 1.0 };
                    assert!(
                        (sum - expected).abs() <= ROW_SUM_TOL,
                        "{name} b{b} h{h} q{i}: sums to {sum}"
                    );
                }
            }
        }
    }
}
