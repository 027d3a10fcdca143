//! Rotary position frequencies, plain or scaled as a config's `rope_scaling` / `rope_parameters` asks: `linear`
//! (positions divided by a factor), `llama3` (Llama 3.1+: long wavelengths divided by the factor, short ones
//! kept, a smooth blend between) and `longrope` (Phi-3 128k: one divisor per frequency, short or long factors,
//! `cos`/`sin` scaled by an attention factor). Every family with RoPE builds its tables here; the kernels
//! apply them ([`kernels::RopeTable`], `Kernels::rope`).

use std::path::Path;

use kernels::RopeTable;

use crate::{Error, Result};

/// How the frequencies `theta^(-2i/head_dim)` are changed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scaling {
    None,
    /// Every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's scaling (transformers `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: usize,
    },
    /// LongRoPE (transformers `_compute_longrope_parameters`): frequency `i` divided by `short[i]` at positions
    /// below `original_context`, by `long[i]` from there on; `cos`/`sin` times `attention_factor`.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_context: usize,
        attention_factor: f64,
    },
}

/// The RoPE of a family: base, rotated width and scaling.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rope {
    pub(crate) head_dim: usize,
    pub(crate) theta: f64,
    pub(crate) scaling: Scaling,
}

/// What a `rope_scaling` entry needs besides itself: the file (for errors) and the config's context lengths.
pub(crate) struct ScalingContext<'a> {
    pub(crate) file: &'a Path,
    pub(crate) max_position_embeddings: usize,
    /// A top-level `original_max_position_embeddings` (Phi-3 keeps it there).
    pub(crate) original_max_position_embeddings: Option<usize>,
}

impl Scaling {
    /// The scaling a config's `rope_scaling` asks for; `Error::Unsupported` naming a type this engine does not
    /// run, `Error::InvalidConfig` for a missing or out-of-range parameter.
    pub(crate) fn from_config(
        r: Option<&loaders::config::RopeScaling>,
        head_dim: usize,
        cx: &ScalingContext<'_>,
    ) -> Result<Self> {
        let Some(r) = r else { return Ok(Scaling::None) };
        let invalid = |field: &str, reason: String| Error::InvalidConfig {
            file: cx.file.to_path_buf(),
            field: format!("rope_scaling.{field}"),
            reason,
        };
        let positive = |field: &str, v: Option<f64>| match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(invalid(field, format!("{x} is not a positive number"))),
            None => Err(invalid(
                field,
                format!("missing (rope_type {:?} needs it)", r.rope_type),
            )),
        };
        let original = r
            .original_max_position_embeddings
            .or(cx.original_max_position_embeddings)
            .filter(|&n| n > 0);
        match r.rope_type.as_str() {
            "default" => Ok(Scaling::None),
            "linear" => Ok(Scaling::Linear {
                factor: positive("factor", r.factor)?,
            }),
            "llama3" => {
                let (low, high) = (
                    positive("low_freq_factor", r.low_freq_factor)?,
                    positive("high_freq_factor", r.high_freq_factor)?,
                );
                if high <= low {
                    return Err(invalid(
                        "high_freq_factor",
                        format!("{high} must exceed low_freq_factor {low}"),
                    ));
                }
                Ok(Scaling::Llama3 {
                    factor: positive("factor", r.factor)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_context: original
                        .ok_or_else(|| invalid("original_max_position_embeddings", "missing".into()))?,
                })
            }
            "longrope" => {
                let original_context =
                    original.ok_or_else(|| invalid("original_max_position_embeddings", "missing".into()))?;
                let factors = |field: &str, v: &Option<Vec<f64>>| -> Result<Vec<f64>> {
                    let v = v.clone().ok_or_else(|| invalid(field, "missing".into()))?;
                    if v.len() != head_dim / 2 {
                        return Err(invalid(
                            field,
                            format!("{} values, expected head_dim / 2 = {}", v.len(), head_dim / 2),
                        ));
                    }
                    if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                        return Err(invalid(field, format!("{x} is not a positive number")));
                    }
                    Ok(v)
                };
                // transformers: factor = max_position_embeddings / original when the config gives none, and the
                // attention factor sqrt(1 + ln(factor) / ln(original)) above 1.
                let factor = match r.factor {
                    Some(f) => positive("factor", Some(f))?,
                    None => cx.max_position_embeddings as f64 / original_context as f64,
                };
                let attention_factor = match r.attention_factor {
                    Some(a) => positive("attention_factor", Some(a))?,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original_context as f64).ln()).sqrt(),
                };
                Ok(Scaling::LongRope {
                    short: factors("short_factor", &r.short_factor)?,
                    long: factors("long_factor", &r.long_factor)?,
                    original_context,
                    attention_factor,
                })
            }
            other => Err(Error::Unsupported {
                what: format!(
                    "{}: rope scaling {other:?} (qkv runs default, linear, llama3, longrope)",
                    cx.file.display()
                ),
            }),
        }
    }
}

impl Rope {
    /// The inverse frequencies of pair `i < head_dim/2` (the short ones for LongRoPE), and the `cos`/`sin` factor.
    fn inv_freq(&self, long: bool) -> (Vec<f32>, f32) {
        let base = RopeTable::default_inv_freq(self.head_dim, self.theta);
        match &self.scaling {
            Scaling::None => (base, 1.0),
            Scaling::Linear { factor } => (base.iter().map(|&f| (f as f64 / factor) as f32).collect(), 1.0),
            Scaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let old = *original_context as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                let scaled = base
                    .iter()
                    .map(|&f| {
                        let f = f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f // high frequencies: kept
                        } else if wavelen > low_wavelen {
                            f / factor // low frequencies: scaled
                        } else {
                            // in between: blended
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .map(|f| f as f32)
                    .collect();
                (scaled, 1.0)
            }
            Scaling::LongRope {
                short,
                long: long_f,
                attention_factor,
                ..
            } => {
                let ext = if long { long_f } else { short };
                // 1 / (ext_i · theta^(2i/d)), as transformers computes it
                let inv = (0..self.head_dim / 2)
                    .map(|i| {
                        let exponent = (2 * i) as f64 / self.head_dim as f64;
                        (1.0 / (ext[i] * self.theta.powf(exponent))) as f32
                    })
                    .collect();
                (inv, *attention_factor as f32)
            }
        }
    }

    /// The `cos`/`sin` table of positions `0 .. max_pos`. LongRoPE's rows from `original_context` on use the long
    /// factors. transformers instead switches every position to the long factors once a sequence passes the
    /// original context (its Phi-3 drops the KV cache and re-runs the whole sequence at that step): here the
    /// positions before it keep their short rotation, so outputs past the original context (4096 positions in
    /// Phi-3 128k) differ from transformers'; within it they are the same.
    pub(crate) fn table(&self, max_pos: usize) -> RopeTable {
        let (short, factor) = self.inv_freq(false);
        let mut table = RopeTable::from_inv_freq(&short, max_pos, factor);
        if let Scaling::LongRope { original_context, .. } = self.scaling {
            if max_pos > original_context {
                let (long, factor) = self.inv_freq(true);
                let far = RopeTable::from_inv_freq(&long, max_pos, factor);
                let from = original_context * (self.head_dim / 2);
                table.cos[from..].copy_from_slice(&far.cos[from..]);
                table.sin[from..].copy_from_slice(&far.sin[from..]);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' formulas written out naively in f64 (modeling_rope_utils.py), for pair `i` of `d`.
    fn naive_llama3(theta: f64, d: usize, i: usize, factor: f64, low: f64, high: f64, old: f64) -> f64 {
        let f = 1.0 / theta.powf(2.0 * i as f64 / d as f64);
        let wavelen = 2.0 * std::f64::consts::PI / f;
        let scaled = if wavelen > old / low { f / factor } else { f };
        let smooth = (old / wavelen - low) / (high - low);
        let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
        let medium = wavelen >= old / high && wavelen <= old / low; // (no NaN here)
        if medium {
            smoothed
        } else {
            scaled
        }
    }

    fn cx(max: usize, original: Option<usize>) -> ScalingContext<'static> {
        ScalingContext {
            file: Path::new("config.json"),
            max_position_embeddings: max,
            original_max_position_embeddings: original,
        }
    }

    fn scaling(json: &str) -> loaders::config::RopeScaling {
        serde_json::from_str(json).unwrap()
    }

    /// Llama 3.2's published parameters: factor 32, low 1, high 4, original 8192, theta 5e5, head_dim 64. Every
    /// frequency within f32 rounding (2⁻²³ relative) of the naive formula, and the three regimes all present.
    #[test]
    fn llama3_frequencies_match_the_naive_formula() {
        let r = scaling(
            r#"{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                "original_max_position_embeddings":8192}"#,
        );
        let s = Scaling::from_config(Some(&r), 64, &cx(131072, None)).unwrap();
        let rope = Rope {
            head_dim: 64,
            theta: 5e5,
            scaling: s,
        };
        let (inv, factor) = rope.inv_freq(false);
        assert_eq!(factor, 1.0);
        let (mut kept, mut scaled, mut blended) = (0, 0, 0);
        for (i, &f) in inv.iter().enumerate() {
            let want = naive_llama3(5e5, 64, i, 32.0, 1.0, 4.0, 8192.0);
            assert!(
                ((f as f64 - want) / want).abs() <= f32::EPSILON as f64,
                "pair {i}: {f} vs {want}"
            );
            let plain = 1.0 / 5e5f64.powf(2.0 * i as f64 / 64.0);
            match want / plain {
                x if (x - 1.0).abs() < 1e-12 => kept += 1,
                x if (x - 1.0 / 32.0).abs() < 1e-12 => scaled += 1,
                _ => blended += 1,
            }
        }
        assert!(kept > 0 && scaled > 0 && blended > 0, "{kept} {scaled} {blended}");
        // The table holds p · inv_freq at every position.
        let t = rope.table(100);
        let (p, i) = (77, 20);
        assert!((t.cos[p * 32 + i] - (p as f32 * inv[i]).cos()).abs() <= 1e-6);
    }

    /// A Llama 3 GGUF's `rope_freqs.weight` (llama.cpp's converter: divisors computed in f32 from the llama3
    /// parameters, `LlamaModel.generate_extra_tensors`) imported as the per-frequency form loaders' GGUF import
    /// writes (`longrope`, equal lists, attention factor 1, the context as the original one) gives Llama 3's
    /// frequencies, hence its table at every position, past the original 8192 too.
    #[test]
    fn per_frequency_divisors_are_llama3_at_every_position() {
        let (d, theta, factor, low, high, old) = (64usize, 5e5f64, 32.0f32, 1.0f32, 4.0f32, 8192.0f32);
        let divisors: Vec<f64> = (0..d / 2)
            .map(|i| {
                let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / d as f32);
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                let f = if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f64
            })
            .collect();
        let json = format!(
            r#"{{"rope_type":"longrope","short_factor":{divisors:?},"long_factor":{divisors:?},"factor":1.0,
                "attention_factor":1.0,"original_max_position_embeddings":131072}}"#
        );
        let per_freq = Rope {
            head_dim: d,
            theta,
            scaling: Scaling::from_config(Some(&scaling(&json)), d, &cx(131072, None)).unwrap(),
        };
        let llama3 = Rope {
            head_dim: d,
            theta,
            scaling: Scaling::from_config(
                Some(&scaling(
                    r#"{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                        "original_max_position_embeddings":8192}"#,
                )),
                d,
                &cx(131072, None),
            )
            .unwrap(),
        };
        let ((a, fa), (b, fb)) = (per_freq.inv_freq(false), llama3.inv_freq(false));
        assert_eq!((fa, fb), (1.0, 1.0));
        // Each side rounds theta^(-2i/d) to f32 once or twice and the divisor once: within 4 f32 epsilons.
        const INV_FREQ_REL: f32 = 4.0 * f32::EPSILON;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= INV_FREQ_REL * y, "pair {i}: {x} vs {y}");
        }
        let (ta, tb) = (per_freq.table(9000), llama3.table(9000));
        for p in [0usize, 100, 8191, 8192, 8999] {
            for (i, inv) in b.iter().enumerate() {
                // angle p·inv differs by at most p·INV_FREQ_REL·inv, plus the tables' own f32 rounding
                let bound = p as f32 * INV_FREQ_REL * inv + 4.0 * f32::EPSILON;
                let k = p * d / 2 + i;
                assert!((ta.cos[k] - tb.cos[k]).abs() <= bound, "position {p} pair {i}");
                assert!((ta.sin[k] - tb.sin[k]).abs() <= bound, "position {p} pair {i}");
            }
        }
    }

    #[test]
    fn linear_and_longrope() {
        let lin =
            Scaling::from_config(Some(&scaling(r#"{"type":"linear","factor":8.0}"#)), 8, &cx(2048, None)).unwrap();
        let rope = Rope {
            head_dim: 8,
            theta: 1e4,
            scaling: lin,
        };
        let plain = RopeTable::default_inv_freq(8, 1e4);
        for (f, p) in rope.inv_freq(false).0.iter().zip(&plain) {
            assert_eq!(*f, p / 8.0);
        }
        // LongRoPE with Phi-3 128k's context ratio: attention factor sqrt(1 + ln 32 / ln 4096), short factors below
        // the original context, long ones from it.
        let r = scaling(r#"{"type":"longrope","short_factor":[1.0,2.0],"long_factor":[3.0,5.0]}"#);
        let s = Scaling::from_config(Some(&r), 4, &cx(131072, Some(4096))).unwrap();
        let want_factor = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
        assert!(
            matches!(&s, Scaling::LongRope { attention_factor, .. } if (attention_factor - want_factor).abs() < 1e-15)
        );
        let rope = Rope {
            head_dim: 4,
            theta: 1e4,
            scaling: s,
        };
        let t = rope.table(5000);
        let f = want_factor as f32;
        for (p, ext) in [(4095usize, [1.0f64, 2.0]), (4096, [3.0, 5.0])] {
            for (i, e) in ext.iter().enumerate() {
                let inv = (1.0 / (e * 1e4f64.powf(2.0 * i as f64 / 4.0))) as f32;
                let angle = p as f32 * inv;
                // within an ulp: the compiler may fold this side's cos/sin at build time
                let ulp = f32::EPSILON * f;
                assert!(
                    (t.cos[p * 2 + i] - angle.cos() * f).abs() <= ulp,
                    "position {p} pair {i}"
                );
                assert!(
                    (t.sin[p * 2 + i] - angle.sin() * f).abs() <= ulp,
                    "position {p} pair {i}"
                );
            }
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let e =
            Scaling::from_config(Some(&scaling(r#"{"rope_type":"yarn","factor":4.0}"#)), 8, &cx(1, None)).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("\"yarn\"")),
            "{e}"
        );
        let e = Scaling::from_config(
            Some(&scaling(r#"{"rope_type":"llama3","factor":8.0}"#)),
            8,
            &cx(1, None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rope_scaling.low_freq_factor"), "{e}");
        // Llama 3's blend needs high > low, and the original context its wavelengths are measured against.
        let e = Scaling::from_config(
            Some(&scaling(
                r#"{"rope_type":"llama3","factor":8.0,"low_freq_factor":4.0,"high_freq_factor":4.0,
                    "original_max_position_embeddings":8192}"#,
            )),
            8,
            &cx(1, None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rope_scaling.high_freq_factor"), "{e}");
        let e = Scaling::from_config(
            Some(&scaling(
                r#"{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0}"#,
            )),
            8,
            &cx(1, None),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("rope_scaling.original_max_position_embeddings"),
            "{e}"
        );
        let r = scaling(r#"{"type":"longrope","short_factor":[1.0],"long_factor":[1.0,1.0]}"#);
        let e = Scaling::from_config(Some(&r), 4, &cx(8192, Some(4096))).unwrap_err();
        assert!(
            e.to_string().contains("short_factor") && e.to_string().contains("expected head_dim / 2 = 2"),
            "{e}"
        );
        let e =
            Scaling::from_config(Some(&scaling(r#"{"type":"linear","factor":-1.0}"#)), 4, &cx(1, None)).unwrap_err();
        assert!(e.to_string().contains("rope_scaling.factor"), "{e}");
    }
}
