//! T5's relative position bias: a learned per-head bias of the attention scores indexed by a bucket of the
//! distance `key position - query position` (exact for short distances, log-spaced up to `max_distance`, one
//! bucket beyond), bidirectional in the encoder (separate buckets for keys before and after the query) and causal
//! in the decoder (only keys at or before the query). transformers' `T5Attention._relative_position_bucket`.
//!
//! The bias depends on the distance only, and every distance past `max_distance` falls in the last bucket of its
//! direction, so a stack's whole bias is a table of `2 * max_distance + 1` values per head. It is built once per
//! stack when the model loads ([`RelativeBias::bind`]) and read by the attention kernel
//! ([`kernels::PositionBias`]) in every layer and step: never recomputed per layer, per step or per sequence.

use kernels::PositionBias;

use crate::layers::TensorSource;
use crate::Result;

/// Which keys a stack's queries see, and so how distances map to buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Encoder: keys before and after the query, half of the buckets each.
    Bidirectional,
    /// Decoder: keys at or before the query (later ones share bucket 0; the causal mask hides them).
    Causal,
}

/// `relative_attention_num_buckets` and `relative_attention_max_distance` of a T5 config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RelativeBuckets {
    pub(crate) num_buckets: usize,
    pub(crate) max_distance: usize,
}

impl RelativeBuckets {
    /// Shapes whose log-spaced range is empty or inverted are refused (the formula divides by
    /// `ln(max_distance / max_exact)`).
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let max_exact = self.num_buckets / 4; // bidirectional: half the buckets per side, half of them exact
        if self.num_buckets < 4 || max_exact == 0 || self.max_distance <= self.num_buckets / 2 {
            return Err(format!(
                "{} buckets up to distance {}: need at least 4 buckets and a max distance above half of them",
                self.num_buckets, self.max_distance
            ));
        }
        Ok(())
    }

    /// The bucket of `rel = key position - query position`, as transformers computes it (the log-spaced part
    /// in f32 arithmetic like torch's, truncated toward zero).
    pub(crate) fn bucket(&self, rel: i64, dir: Direction) -> usize {
        let (mut nb, mut base) = (self.num_buckets as i64, 0);
        let n = match dir {
            Direction::Bidirectional => {
                nb /= 2;
                if rel > 0 {
                    base = nb;
                }
                rel.abs()
            }
            Direction::Causal => (-rel).max(0),
        };
        let max_exact = nb / 2;
        let b = if n < max_exact {
            n
        } else {
            let ratio = (n as f32 / max_exact as f32).ln();
            let span = (self.max_distance as f64 / max_exact as f64).ln() as f32;
            let large = max_exact + (ratio / span * (nb - max_exact) as f32) as i64;
            large.min(nb - 1)
        };
        (base + b) as usize
    }
}

/// One stack's bias by distance: `[n_heads, 2 * max_distance + 1]`, entry `m + r` the bias of distance `r`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RelativeBias {
    table: Vec<f32>,
    max_distance: usize,
}

impl RelativeBias {
    /// The stack's table from its learned `[num_buckets, n_heads]` embedding `name`.
    pub(crate) fn bind(
        st: &dyn TensorSource,
        name: &str,
        buckets: RelativeBuckets,
        n_heads: usize,
        dir: Direction,
    ) -> Result<Self> {
        let weights = st.get_shaped(name, &[buckets.num_buckets, n_heads])?.to_f32_vec();
        Ok(Self::from_weights(&weights, n_heads, buckets, dir))
    }

    /// The table of `weights` (`[num_buckets, n_heads]`).
    pub(crate) fn from_weights(weights: &[f32], n_heads: usize, buckets: RelativeBuckets, dir: Direction) -> Self {
        let m = buckets.max_distance;
        let width = 2 * m + 1;
        let mut table = vec![0.0f32; n_heads * width]; // [n_heads, 2m + 1]
        for (at, r) in (-(m as i64)..=m as i64).enumerate() {
            let b = buckets.bucket(r, dir);
            for h in 0..n_heads {
                table[h * width + at] = weights[b * n_heads + h];
            }
        }
        Self { table, max_distance: m }
    }

    /// The kernel's view of the table.
    pub(crate) fn args(&self) -> PositionBias<'_> {
        PositionBias {
            table: &self.table,
            max_distance: self.max_distance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' formula in f64, written out literally (the reference the f32 version is checked against:
    /// for these power-of-two shapes every log ratio is exact in both).
    fn naive_bucket(rel: i64, bidirectional: bool, num_buckets: i64, max_distance: i64) -> i64 {
        let mut nb = num_buckets;
        let mut ret = 0;
        let n = if bidirectional {
            nb /= 2;
            ret += if rel > 0 { nb } else { 0 };
            rel.abs()
        } else {
            -rel.min(0)
        };
        let max_exact = nb / 2;
        if n < max_exact {
            return ret + n;
        }
        let large = max_exact
            + ((n as f64 / max_exact as f64).ln() / (max_distance as f64 / max_exact as f64).ln()
                * (nb - max_exact) as f64) as i64;
        ret + large.min(nb - 1)
    }

    const SHAPES: [RelativeBuckets; 3] = [
        RelativeBuckets {
            num_buckets: 32,
            max_distance: 128,
        },
        RelativeBuckets {
            num_buckets: 16,
            max_distance: 64,
        },
        RelativeBuckets {
            num_buckets: 8,
            max_distance: 32,
        },
    ];

    #[test]
    fn buckets_match_the_formula_in_both_directions() {
        for b in SHAPES {
            for rel in -400i64..=400 {
                for (dir, bi) in [(Direction::Bidirectional, true), (Direction::Causal, false)] {
                    let want = naive_bucket(rel, bi, b.num_buckets as i64, b.max_distance as i64);
                    assert_eq!(b.bucket(rel, dir) as i64, want, "{b:?} {dir:?} rel {rel}");
                }
            }
            // keys after the query use the upper half only in the encoder; the decoder maps them to bucket 0
            assert!(b.bucket(1, Direction::Bidirectional) >= b.num_buckets / 2);
            assert_eq!(b.bucket(5, Direction::Causal), 0);
            // past max_distance: the last bucket of each side
            let last = b.num_buckets / 2 - 1;
            assert_eq!(b.bucket(-(b.max_distance as i64), Direction::Bidirectional), last);
            assert_eq!(
                b.bucket(b.max_distance as i64 * 5, Direction::Bidirectional),
                2 * last + 1
            );
            assert_eq!(
                b.bucket(-(b.max_distance as i64) * 5, Direction::Causal),
                b.num_buckets - 1
            );
        }
    }

    /// The distance table the kernel reads gives, for every (query, key) pair of positions up to three times
    /// `max_distance` apart, the learned bias of the pair's bucket: the clamp at `max_distance` loses nothing.
    #[test]
    fn table_lookup_equals_the_bucket_bias_of_every_pair() {
        let heads = 3;
        for b in SHAPES {
            let weights: Vec<f32> = (0..b.num_buckets * heads).map(|i| i as f32 * 0.25 - 3.0).collect();
            for dir in [Direction::Bidirectional, Direction::Causal] {
                let bias = RelativeBias::from_weights(&weights, heads, b, dir);
                let pb = bias.args();
                let span = 3 * b.max_distance;
                for q in (0..span).step_by(7) {
                    for k in 0..span {
                        let naive = naive_bucket(
                            k as i64 - q as i64,
                            dir == Direction::Bidirectional,
                            b.num_buckets as i64,
                            b.max_distance as i64,
                        ) as usize;
                        for h in 0..heads {
                            assert_eq!(pb.get(h, q, k), weights[naive * heads + h], "{b:?} {dir:?} q {q} k {k}");
                        }
                    }
                }
            }
        }
    }

    /// transformers' own buckets (`T5Attention._relative_position_bucket`, recorded by
    /// tools/scripts/make_seq2seq_fixtures.py for distances -300..=300, past the 128 clamp) for the T5 and Flan-T5
    /// fixtures' shapes, both directions: equal to ours at every distance.
    #[test]
    fn buckets_equal_transformers_recorded_ones() {
        for name in ["t5", "flan_t5"] {
            let dir = loaders::paths::fixture("seq2seq").join(name);
            let read = |f: &str| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
            };
            let (meta, config) = (read("reference.json"), read("config.json"));
            let b = RelativeBuckets {
                num_buckets: config["relative_attention_num_buckets"].as_u64().unwrap() as usize,
                // transformers' default when the config omits it (t5-small's does)
                max_distance: config["relative_attention_max_distance"].as_u64().unwrap_or(128) as usize,
            };
            let hf = &meta["relative_buckets"];
            let (lo, hi) = (
                hf["relative_positions"][0].as_i64().unwrap(),
                hf["relative_positions"][1].as_i64().unwrap(),
            );
            for (key, dir) in [
                ("bidirectional", Direction::Bidirectional),
                ("causal", Direction::Causal),
            ] {
                let want: Vec<u64> = serde_json::from_value(hf[key].clone()).unwrap();
                assert_eq!(want.len() as i64, hi - lo + 1, "{name} {key}");
                for (rel, w) in (lo..=hi).zip(want) {
                    assert_eq!(b.bucket(rel, dir) as u64, w, "{name} {key}: distance {rel}");
                }
            }
        }
    }

    #[test]
    fn degenerate_shapes_are_refused() {
        for (num_buckets, max_distance) in [(2, 128), (32, 16), (32, 8)] {
            let b = RelativeBuckets {
                num_buckets,
                max_distance,
            };
            assert!(b.validate().is_err(), "{b:?}");
        }
        assert!(SHAPES.iter().all(|b| b.validate().is_ok()));
    }
}
