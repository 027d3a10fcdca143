//! The trace of one forward pass, the way the Transformer is taught: tokens and ids, embeddings and positions,
//! one layer and head's Q, K, V, scaled scores, mask, softmax weights and weighted sum, the residual stream
//! around the layer's norms, the feed-forward, and the next tokens the model expects.
//!
//! [`crate::Model::explain`] builds it from one pass of a decoder-only model on the recording path
//! ([`crate::attention`]: the attention calls and the residual stream at the `Tap`s); [`Trace::toy`] from a
//! tiny built-in model (d_model 4, one head, fixed weights) small enough to redo by hand.

use serde::Serialize;

use crate::attention::{AttnKind, Call, Recorder, Tap};
use crate::{Error, Result};

/// Leading dimensions of the residual stream a trace shows (all of them for a narrower model).
pub const SHOWN_DIMS: usize = 8;
/// Next tokens a trace lists.
pub const TOP_NEXT: usize = 5;

/// Mean, standard deviation (population, as LayerNorm divides by; without its epsilon) and root mean square (what
/// RMSNorm divides by) of one row of the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RowStats {
    pub mean: f64,
    pub std: f64,
    pub rms: f64,
}

impl RowStats {
    pub fn of(x: &[f64]) -> Self {
        let n = x.len().max(1) as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let ms = x.iter().map(|v| v * v).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
            rms: ms.sqrt(),
        }
    }
}

/// A LayerNorm worked by hand: `(x - μ) / σ` (γ = 1, β = 0, no epsilon).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NormExample {
    pub input: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    pub output: Vec<f64>,
}

impl NormExample {
    pub fn of(input: &[f64]) -> Self {
        let s = RowStats::of(input);
        Self {
            input: input.to_vec(),
            mean: s.mean,
            std: s.std,
            output: input.iter().map(|v| (v - s.mean) / s.std).collect(),
        }
    }
}

/// One forward pass, traced. Vectors of the residual stream show its first [`Trace::shown_dims`] dimensions;
/// `[n]` below is the number of tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trace {
    /// What ran: `toy`, or the model's architecture.
    pub model: String,
    pub tokens: Vec<String>,
    pub ids: Vec<u32>,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub shown_dims: usize,
    /// Token embeddings (as the model scales them) `[n][shown_dims]`.
    pub embedding: Vec<Vec<f64>>,
    /// How the model encodes positions: `sinusoidal`, `learned` or `rotary`.
    pub position_kind: String,
    /// The position vectors added to the embeddings `[n][shown_dims]` (none for rotary positions, which rotate
    /// q and k instead).
    pub positions: Option<Vec<Vec<f64>>>,
    /// The layer and head traced.
    pub layer: usize,
    pub head: usize,
    /// Rows of that head (after rotary positions, when the model has them) `[n][head_dim]`.
    pub q: Vec<Vec<f64>>,
    pub k: Vec<Vec<f64>>,
    pub v: Vec<Vec<f64>>,
    /// Multiplies q·k (1/√head_dim).
    pub scale: f64,
    /// q·k × scale `[n][n]`; `None` where the mask hides the key.
    pub scores: Vec<Vec<Option<f64>>>,
    /// Softmax weights `[n][n]`, masked keys exactly 0.
    pub weights: Vec<Vec<f64>>,
    pub row_sums: Vec<f64>,
    /// Σ weight × v `[n][head_dim]`.
    pub weighted_sum: Vec<Vec<f64>>,
    /// `pre-norm` (x + f(norm(x))) or `post-norm` (norm(x + f(x))).
    pub norm_placement: String,
    /// `LayerNorm` or `RMSNorm`.
    pub norm_kind: String,
    /// Statistics of the input of the layer's attention norm, per token.
    pub attention_norm_input: Vec<RowStats>,
    /// Statistics of the input of the layer's feed-forward norm, per token.
    pub ffn_norm_input: Vec<RowStats>,
    /// The feed-forward's output `[n][shown_dims]`.
    pub ffn_output: Vec<Vec<f64>>,
    /// The most likely next tokens after the last one: (token, id, probability).
    pub top_next: Vec<(String, u32, f64)>,
    /// A LayerNorm worked by hand (the toy's warm-up).
    pub norm_example: Option<NormExample>,
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Rows `[n][shown]` of the leading `shown` dimensions of `x` (`[n, d]`).
fn leading(x: &[f64], d: usize, shown: usize) -> Vec<Vec<f64>> {
    x.chunks(d).map(|r| r[..shown].to_vec()).collect()
}

/// Rows `[len][hd]` of head `h` of a head-major `[heads, len, hd]` buffer.
fn head_rows(x: &[f32], h: usize, len: usize, hd: usize) -> Vec<Vec<f64>> {
    x[h * len * hd..(h + 1) * len * hd].chunks(hd).map(widen).collect()
}

/// The top `k` of `softmax(logits)`, with `name` for each id.
pub(crate) fn top_next(logits: &[f32], k: usize, name: impl Fn(u32) -> String) -> Vec<(String, u32, f64)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    ids.into_iter()
        .take(k)
        .map(|id| (name(id), id, (logits[id as usize] as f64 - max).exp() / sum))
        .collect()
}

/// What [`from_recording`] needs besides the recorder.
pub(crate) struct TraceInput<'a> {
    pub(crate) architecture: &'a str,
    pub(crate) ids: &'a [u32],
    pub(crate) tokens: Vec<String>,
    pub(crate) d_model: usize,
    pub(crate) n_layers: usize,
    pub(crate) layer: usize,
    pub(crate) head: usize,
    pub(crate) norm_kind: &'a str,
    /// `[n, vocab]`
    pub(crate) logits: &'a [f32],
    pub(crate) vocab: usize,
}

/// The trace of a decoder-only pre-norm pass recorded with its taps.
pub(crate) fn from_recording(rec: &Recorder, t: TraceInput<'_>, name: impl Fn(u32) -> String) -> Result<Trace> {
    let calls = rec.calls(AttnKind::Decoder);
    let (embedded, positioned) = (rec.taps(Tap::Embedded), rec.taps(Tap::Positioned));
    let (attended, layers) = (rec.taps(Tap::Attended), rec.taps(Tap::Layer));
    let n = t.ids.len();
    let (d, shown) = (t.d_model, t.d_model.min(SHOWN_DIMS));
    if calls.len() != t.n_layers || attended.len() != t.n_layers || layers.len() != t.n_layers || embedded.len() != 1 {
        return Err(Error::Request(format!(
            "explain: the recording holds {} attention calls, {} + {} layer taps, expected {} of each",
            calls.len(),
            attended.len(),
            layers.len(),
            t.n_layers
        )));
    }
    let call: &Call = &calls[t.layer];
    let (hd, group) = (call.heads.head_dim, call.heads.n_heads / call.heads.n_kv_heads);
    let emb = widen(&embedded[0]);
    let start = match positioned.first() {
        Some(p) => widen(p),
        None => emb.clone(),
    };
    let positions = positioned.first().map(|p| {
        leading(
            &widen(p).iter().zip(&emb).map(|(a, b)| a - b).collect::<Vec<_>>(),
            d,
            shown,
        )
    });
    let x_in = if t.layer == 0 {
        start
    } else {
        widen(&layers[t.layer - 1])
    };
    let x_att = widen(&attended[t.layer]);
    let x_out = widen(&layers[t.layer]);
    let (h, kh) = (t.head, t.head / group);
    let q = head_rows(&call.q, h, n, hd);
    let k = head_rows(&call.k, kh, call.kv_len, hd);
    let scores = (0..n)
        .map(|i| {
            (0..call.kv_len)
                .map(|j| {
                    let dot: f64 = q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum();
                    call.visible[i * call.kv_len + j].then_some(dot * call.scale as f64)
                })
                .collect()
        })
        .collect();
    let weights: Vec<Vec<f64>> = head_rows(&call.probs, h, n, call.kv_len);
    let stats = |x: &[f64]| x.chunks(d).map(RowStats::of).collect::<Vec<_>>();
    let last = &t.logits[(n - 1) * t.vocab..n * t.vocab];
    Ok(Trace {
        model: t.architecture.to_string(),
        tokens: t.tokens,
        ids: t.ids.to_vec(),
        d_model: d,
        n_layers: t.n_layers,
        n_heads: call.heads.n_heads,
        head_dim: hd,
        shown_dims: shown,
        embedding: leading(&emb, d, shown),
        position_kind: if positions.is_some() { "learned" } else { "rotary" }.into(),
        positions,
        layer: t.layer,
        head: t.head,
        v: head_rows(&call.v, kh, call.kv_len, hd),
        q,
        k,
        scale: call.scale as f64,
        scores,
        row_sums: weights.iter().map(|r| r.iter().sum()).collect(),
        weights,
        weighted_sum: head_rows(&call.out, h, n, hd),
        norm_placement: "pre-norm".into(),
        norm_kind: t.norm_kind.into(),
        attention_norm_input: stats(&x_in),
        ffn_norm_input: stats(&x_att),
        ffn_output: leading(
            &x_out.iter().zip(&x_att).map(|(a, b)| a - b).collect::<Vec<_>>(),
            d,
            shown,
        ),
        top_next: top_next(last, TOP_NEXT, name),
        norm_example: None,
    })
}

// ---------------------------------------------------------------------------------------------
// The toy: a one-layer, one-head post-norm Transformer with d_model 4, every weight a small fixed number
// ---------------------------------------------------------------------------------------------

/// The toy's words (its whole vocabulary) and the sentence it traces.
pub const TOY_VOCAB: [&str; 6] = ["Cat", "is", "sleeping", "on", "the", "mat"];
const TOY_D: usize = 4;
const TOY_FF: usize = 8;

/// The toy's weights: each a formula of its indices, so that a hand (or the NumPy script
/// tools/scripts/explain_toy.py) can write them down: quarters between -1 and 1.
fn toy_weight(seed: usize, i: usize, j: usize) -> f64 {
    ((2 + 3 * i + 5 * j + 7 * seed + i * j * (seed + 1)) % 9) as f64 / 4.0 - 1.0
}

/// Sinusoidal position encoding (Vaswani et al.): `PE(p, 2i) = sin(p / 10000^(2i/d))`, `PE(p, 2i+1) = cos(...)`.
fn sinusoid(p: usize, d: usize) -> Vec<f64> {
    (0..d)
        .map(|j| {
            let angle = p as f64 / 10000f64.powf((j / 2 * 2) as f64 / d as f64);
            if j % 2 == 0 {
                angle.sin()
            } else {
                angle.cos()
            }
        })
        .collect()
}

fn matmul(x: &[Vec<f64>], seed: usize, out_dim: usize) -> Vec<Vec<f64>> {
    x.iter()
        .map(|r| {
            (0..out_dim)
                .map(|o| r.iter().enumerate().map(|(i, v)| v * toy_weight(seed, i, o)).sum())
                .collect()
        })
        .collect()
}

fn layer_norm(x: &[f64]) -> Vec<f64> {
    NormExample::of(x).output
}

impl Trace {
    /// The trace of the toy model over "Cat is sleeping on the mat": x = E[token] + PE(position); one head
    /// (q = x·W_q, k = x·W_k, v = x·W_v, scores q·kᵀ/√4, causal mask, softmax, weighted sum, no output
    /// projection); h = LayerNorm(x + attention); y = LayerNorm(h + ReLU(h·W_1)·W_2); logits = y·Eᵀ. Weights:
    /// `E[t][j]` = w(0, t, j), `W_q` = w(1), `W_k` = w(2), `W_v` = w(3), `W_1` (4 x 8) = w(4), `W_2` (8 x 4) =
    /// w(5), with w(s, i, j) = ((2 + 3i + 5j + 7s + ij(s + 1)) mod 9) / 4 - 1; LayerNorm with γ = 1, β = 0 and no
    /// epsilon.
    pub fn toy() -> Trace {
        let n = TOY_VOCAB.len();
        let ids: Vec<u32> = (0..n as u32).collect();
        let emb: Vec<Vec<f64>> = (0..n)
            .map(|t| (0..TOY_D).map(|j| toy_weight(0, t, j)).collect())
            .collect();
        let pos: Vec<Vec<f64>> = (0..n).map(|p| sinusoid(p, TOY_D)).collect();
        let x: Vec<Vec<f64>> = emb
            .iter()
            .zip(&pos)
            .map(|(e, p)| e.iter().zip(p).map(|(a, b)| a + b).collect())
            .collect();
        let (q, k, v) = (matmul(&x, 1, TOY_D), matmul(&x, 2, TOY_D), matmul(&x, 3, TOY_D));
        let scale = 1.0 / (TOY_D as f64).sqrt();
        let scores: Vec<Vec<Option<f64>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (j <= i).then(|| q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>() * scale))
                    .collect()
            })
            .collect();
        let weights: Vec<Vec<f64>> = scores
            .iter()
            .map(|row| {
                let max = row.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = row.iter().map(|s| s.map_or(0.0, |s| (s - max).exp())).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|v| v / sum).collect()
            })
            .collect();
        let weighted: Vec<Vec<f64>> = weights
            .iter()
            .map(|w| {
                (0..TOY_D)
                    .map(|c| w.iter().zip(&v).map(|(p, vr)| p * vr[c]).sum())
                    .collect()
            })
            .collect();
        let add = |a: &[Vec<f64>], b: &[Vec<f64>]| -> Vec<Vec<f64>> {
            a.iter()
                .zip(b)
                .map(|(r, s)| r.iter().zip(s).map(|(x, y)| x + y).collect())
                .collect()
        };
        let res1 = add(&x, &weighted);
        let h: Vec<Vec<f64>> = res1.iter().map(|r| layer_norm(r)).collect();
        let hidden: Vec<Vec<f64>> = matmul(&h, 4, TOY_FF)
            .into_iter()
            .map(|r| r.into_iter().map(|v| v.max(0.0)).collect())
            .collect();
        let ffn = matmul(&hidden, 5, TOY_D);
        let res2 = add(&h, &ffn);
        let y: Vec<Vec<f64>> = res2.iter().map(|r| layer_norm(r)).collect();
        let logits: Vec<f32> = emb
            .iter()
            .map(|e| e.iter().zip(&y[n - 1]).map(|(a, b)| a * b).sum::<f64>() as f32)
            .collect();
        // the toy's top next tokens in f64 (the f32 logits only order them)
        let exact: Vec<f64> = emb
            .iter()
            .map(|e| e.iter().zip(&y[n - 1]).map(|(a, b)| a * b).sum())
            .collect();
        let max = exact.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = exact.iter().map(|l| (l - max).exp()).sum();
        let top = top_next(&logits, TOP_NEXT, |id| TOY_VOCAB[id as usize].to_string())
            .into_iter()
            .map(|(t, id, _)| (t, id, (exact[id as usize] - max).exp() / sum))
            .collect();
        Trace {
            model: "toy".into(),
            tokens: TOY_VOCAB.iter().map(|s| s.to_string()).collect(),
            ids,
            d_model: TOY_D,
            n_layers: 1,
            n_heads: 1,
            head_dim: TOY_D,
            shown_dims: TOY_D,
            embedding: emb,
            position_kind: "sinusoidal".into(),
            positions: Some(pos),
            layer: 0,
            head: 0,
            q,
            k,
            v,
            scale,
            scores,
            row_sums: weights.iter().map(|r| r.iter().sum()).collect(),
            weights,
            weighted_sum: weighted,
            norm_placement: "post-norm".into(),
            norm_kind: "LayerNorm".into(),
            attention_norm_input: res1.iter().map(|r| RowStats::of(r)).collect(),
            ffn_norm_input: res2.iter().map(|r| RowStats::of(r)).collect(),
            ffn_output: ffn,
            top_next: top,
            norm_example: Some(NormExample::of(&[1.0, 3.0, 5.0])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_1_3_5_is_the_textbook_one() {
        let e = NormExample::of(&[1.0, 3.0, 5.0]);
        assert_eq!(e.mean, 3.0);
        // σ = sqrt(8/3)
        assert!((e.std - (8.0f64 / 3.0).sqrt()).abs() < 1e-15 && format!("{:.3}", e.std) == "1.633");
        let shown: Vec<String> = e.output.iter().map(|v| format!("{v:.4}")).collect();
        assert_eq!(shown, ["-1.2247", "0.0000", "1.2247"]);
    }

    #[test]
    fn toy_rows_are_probabilities_and_masked_entries_zero() {
        let t = Trace::toy();
        for (i, row) in t.weights.iter().enumerate() {
            assert!((t.row_sums[i] - 1.0).abs() < 1e-12);
            assert!(row[i + 1..].iter().all(|&p| p == 0.0));
            assert!(t.scores[i][i + 1..].iter().all(Option::is_none));
        }
        // the first row sees only itself
        assert_eq!(t.weights[0][0], 1.0);
    }
}
