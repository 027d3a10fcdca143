//! Parameter types shared by every kernel and its reference.

use half::{bf16, f16};

/// Weight values in their stored dtype. Kernels convert in registers; nothing is widened in memory.
#[derive(Clone, Copy, Debug)]
pub enum WeightData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    /// Symmetric int8, one scale per output row: `W(o, i) = q[o * in_dim + i] * scales[o]`
    /// ([`Layout::OutIn`] only; see [`crate::quantize_i8`]).
    I8 {
        q: &'a [i8],
        scales: &'a [f32],
    },
}

impl WeightData<'_> {
    /// Number of weight elements (for `I8`, of `q`).
    pub fn len(&self) -> usize {
        match self {
            WeightData::F32(s) => s.len(),
            WeightData::F16(s) => s.len(),
            WeightData::Bf16(s) => s.len(),
            WeightData::I8 { q, .. } => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` (row-major) as f32; for `I8`, dequantized with the scale of its row.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            WeightData::F32(s) => s[i],
            WeightData::F16(s) => s[i].to_f32(),
            WeightData::Bf16(s) => s[i].to_f32(),
            WeightData::I8 { q, scales } => {
                let in_dim = q.len() / scales.len().max(1);
                q[i] as f32 * scales[i / in_dim.max(1)]
            }
        }
    }

    /// Bytes per element (for `I8`, without the per-row scales: see [`WeightData::bytes`]).
    pub fn elem_bytes(&self) -> usize {
        match self {
            WeightData::F32(_) => 4,
            WeightData::F16(_) | WeightData::Bf16(_) => 2,
            WeightData::I8 { .. } => 1,
        }
    }

    /// Bytes a pass over the whole matrix reads (for `I8`, the values and the scales).
    pub fn bytes(&self) -> usize {
        match self {
            WeightData::I8 { q, scales } => q.len() + std::mem::size_of_val(*scales),
            other => other.len() * other.elem_bytes(),
        }
    }
}

/// How a weight matrix is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[out, in]`, row-major: PyTorch `nn.Linear` (`y = x Wᵀ`).
    OutIn,
    /// `[in, out]`, row-major: GPT-2's `Conv1D` (`y = x W`).
    InOut,
}

/// A weight matrix: data, logical shape and layout.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub data: WeightData<'a>,
    pub out_dim: usize,
    pub in_dim: usize,
    pub layout: Layout,
}

impl<'a> Weight<'a> {
    /// `None` when `data.len() != out_dim * in_dim`, or for `I8` data unless it is `OutIn` with
    /// `out_dim` scales.
    pub fn new(data: WeightData<'a>, out_dim: usize, in_dim: usize, layout: Layout) -> Option<Self> {
        let int8_ok = match data {
            WeightData::I8 { scales, .. } => layout == Layout::OutIn && scales.len() == out_dim,
            _ => true,
        };
        (int8_ok && out_dim.checked_mul(in_dim)? == data.len()).then_some(Self {
            data,
            out_dim,
            in_dim,
            layout,
        })
    }

    /// Element `(o, i)` as f32, whatever the layout (`I8`: dequantized, `q * scale`).
    #[inline]
    pub fn at(&self, o: usize, i: usize) -> f32 {
        match (self.data, self.layout) {
            (WeightData::I8 { q, scales }, _) => q[o * self.in_dim + i] as f32 * scales[o],
            (_, Layout::OutIn) => self.data.get(o * self.in_dim + i),
            (_, Layout::InOut) => self.data.get(i * self.out_dim + o),
        }
    }
}

/// Element strides of a `[batch, pos, head, head_dim]` tensor (head_dim is contiguous).
///
/// Projections produce `[batch, len, n_heads * head_dim]`: `Strides::token_major(len, n_heads, head_dim)`.
/// KV caches are `[batch, n_kv_heads, capacity, head_dim]`: `Strides::head_major(n_kv_heads, capacity, head_dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub batch: usize,
    pub pos: usize,
    pub head: usize,
}

impl Strides {
    pub fn token_major(len: usize, n_heads: usize, head_dim: usize) -> Self {
        Self {
            batch: len * n_heads * head_dim,
            pos: n_heads * head_dim,
            head: head_dim,
        }
    }

    pub fn head_major(n_heads: usize, capacity: usize, head_dim: usize) -> Self {
        Self {
            batch: n_heads * capacity * head_dim,
            pos: head_dim,
            head: capacity * head_dim,
        }
    }

    /// Offset of `(b, t, h, 0)`.
    #[inline]
    pub fn offset(&self, b: usize, t: usize, h: usize) -> usize {
        b * self.batch + t * self.pos + h * self.head
    }
}

/// A per-head bias of the attention scores that depends only on the distance `key position - query position`
/// (T5's relative position bias): `table[h * width + clamp(j - pos(i), -max_distance, max_distance) +
/// max_distance]`, `width = 2 * max_distance + 1`, where a query's position is its row index after the mask's
/// `q_offset` (the cached positions). Distances past `max_distance` read the edge entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionBias<'a> {
    /// `[n_heads, 2 * max_distance + 1]`
    pub table: &'a [f32],
    pub max_distance: usize,
}

impl PositionBias<'_> {
    /// Entries per head.
    pub fn width(&self) -> usize {
        2 * self.max_distance + 1
    }

    /// The bias of head `h` for a query at position `q_pos` and a key at position `k_pos`.
    #[inline]
    pub fn get(&self, h: usize, q_pos: usize, k_pos: usize) -> f32 {
        let m = self.max_distance;
        // clamp(k - q, -m, m) + m, without signed arithmetic
        let at = if k_pos >= q_pos {
            m + (k_pos - q_pos).min(m)
        } else {
            m - (q_pos - k_pos).min(m)
        };
        self.table[h * self.width() + at]
    }
}

/// Which keys a query may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every key (encoder self-attention, cross-attention, decode over a cache).
    None,
    /// Query row `i` sees keys `j <= q_offset + i` (`q_offset` = number of cached positions before the queries).
    Causal { q_offset: usize },
    /// Causal within a sliding window (Mistral, Gemma's local layers): query row `i` sees the `window` keys
    /// `q_offset + i - window < j <= q_offset + i` (transformers' `kv_idx > q_idx - sliding_window`).
    SlidingWindow { q_offset: usize, window: usize },
}

impl Mask {
    /// The keys `lo .. hi` query row `i` may see (before `kv_len` and `key_lens` cut them), `hi = usize::MAX` for
    /// no upper limit.
    #[inline]
    pub fn keys(&self, i: usize) -> std::ops::Range<usize> {
        match *self {
            Mask::None => 0..usize::MAX,
            Mask::Causal { q_offset } => 0..q_offset + i + 1,
            Mask::SlidingWindow { q_offset, window } => (q_offset + i + 1).saturating_sub(window)..q_offset + i + 1,
        }
    }

    /// The position of query row `i` among the keys (`q_offset + i`; `i` without a causal mask).
    #[inline]
    pub fn query_pos(&self, i: usize) -> usize {
        match *self {
            Mask::None => i,
            Mask::Causal { q_offset } | Mask::SlidingWindow { q_offset, .. } => q_offset + i,
        }
    }
}

/// Tanh soft-capping of attention scores or logits (Gemma 2): `x = cap · tanh(x / cap)`, which keeps every value
/// inside `(-cap, cap)` and leaves small ones almost unchanged.
pub fn softcap(cap: f32, x: &mut [f32]) {
    for v in x {
        *v = cap * (*v / cap).tanh();
    }
}

/// Shapes, masks and layouts of one attention call.
///
/// Query head `h` reads KV head `h / (n_heads / n_kv_heads)` (grouped-query attention).
/// `key_lens[b]`, when given, masks keys `j >= key_lens[b]` of batch row `b` (padding).
/// A query row that sees no key at all gets an output of zeros.
#[derive(Clone, Copy, Debug)]
pub struct AttnArgs<'a> {
    pub batch: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    /// Multiplies `q·k` (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// When set, every scaled score `s` becomes `cap · tanh(s / cap)` before the softmax ([`softcap`]).
    pub softcap: Option<f32>,
    /// When set, a bias by key-minus-query distance is added to every scaled score (T5's relative position
    /// bias, [`PositionBias`]).
    pub position_bias: Option<PositionBias<'a>>,
    pub mask: Mask,
    pub key_lens: Option<&'a [usize]>,
    pub q_strides: Strides,
    /// Shared by `k` and `v`.
    pub kv_strides: Strides,
    pub out_strides: Strides,
}

/// The heads of one attention call: query heads, KV heads (grouped-query attention when fewer) and their width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// `n_heads` query heads and as many KV heads (no grouping).
    pub fn new(n_heads: usize, head_dim: usize) -> Self {
        Self {
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
        }
    }

    /// `n_heads` query heads sharing `n_kv_heads` KV heads.
    pub fn grouped(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        Self {
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }
}

/// The three kinds of attention a Transformer runs, each a constructor with the usual defaults: scale
/// `1/sqrt(head_dim)`, queries, keys, values and outputs token-major (`[batch, len, heads * head_dim]`,
/// [`Strides::token_major`]). The `with_*` methods change what differs (a cache's head-major strides, a fused
/// projection's rows, another scale).
impl<'a> AttnArgs<'a> {
    /// Causal self-attention: the `q_len` newest positions of each of `batch` rows over `kv_len` keys (the
    /// positions already cached followed by the new ones), query `i` seeing keys `j <= kv_len - q_len + i`.
    pub fn causal(heads: Heads, batch: usize, q_len: usize, kv_len: usize) -> Self {
        Self::unmasked(heads, batch, q_len, kv_len).with_mask(Mask::Causal {
            q_offset: kv_len.saturating_sub(q_len),
        })
    }

    /// Cross-attention: `q_len` decoder positions of each of `batch` rows over all `kv_len` encoder positions.
    pub fn cross(heads: Heads, batch: usize, q_len: usize, kv_len: usize) -> Self {
        Self::unmasked(heads, batch, q_len, kv_len)
    }

    /// Bidirectional self-attention (an encoder): `batch` sequences padded to `len` positions, where row `b`
    /// holds `key_lens[b]` real positions (keys past them are masked).
    pub fn bidirectional(heads: Heads, batch: usize, len: usize, key_lens: &'a [usize]) -> Self {
        Self {
            key_lens: Some(key_lens),
            ..Self::unmasked(heads, batch, len, len)
        }
    }

    fn unmasked(heads: Heads, batch: usize, q_len: usize, kv_len: usize) -> Self {
        let tokens = |len: usize, n: usize| Strides::token_major(len, n, heads.head_dim);
        Self {
            scale: 1.0 / (heads.head_dim as f32).sqrt(),
            q_strides: tokens(q_len, heads.n_heads),
            kv_strides: tokens(kv_len, heads.n_kv_heads),
            out_strides: tokens(q_len, heads.n_heads),
            softcap: None,
            position_bias: None,
            mask: Mask::None,
            key_lens: None,
            batch,
            n_heads: heads.n_heads,
            n_kv_heads: heads.n_kv_heads,
            head_dim: heads.head_dim,
            q_len,
            kv_len,
        }
    }

    /// `q·k` multiplied by `scale` instead of `1/sqrt(head_dim)`.
    pub fn with_scale(self, scale: f32) -> Self {
        Self { scale, ..self }
    }

    /// Another mask.
    pub fn with_mask(self, mask: Mask) -> Self {
        Self { mask, ..self }
    }

    /// A causal mask limited to the last `window` keys of each query (`None` keeps the mask as it is).
    pub fn with_window(self, window: Option<usize>) -> Self {
        match (self.mask, window) {
            (Mask::Causal { q_offset } | Mask::SlidingWindow { q_offset, .. }, Some(window)) => {
                self.with_mask(Mask::SlidingWindow { q_offset, window })
            }
            _ => self,
        }
    }

    /// Scores biased by key-minus-query distance (`None`: no bias).
    pub fn with_position_bias(self, position_bias: Option<PositionBias<'a>>) -> Self {
        Self { position_bias, ..self }
    }

    /// Scores soft-capped at `cap` (`None`: not capped).
    pub fn with_softcap(self, softcap: Option<f32>) -> Self {
        Self { softcap, ..self }
    }

    /// Queries laid out with `q_strides` (e.g. inside a fused QKV projection).
    pub fn with_q_strides(self, q_strides: Strides) -> Self {
        Self { q_strides, ..self }
    }

    /// Keys and values laid out with `kv_strides` (e.g. a head-major KV cache, [`Strides::head_major`]).
    pub fn with_kv_strides(self, kv_strides: Strides) -> Self {
        Self { kv_strides, ..self }
    }
}

impl AttnArgs<'_> {
    /// Whether query row `i` of batch row `b` may see key `j`.
    #[inline]
    pub fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        let in_len = self.key_lens.is_none_or(|l| j < l[b]);
        in_len && self.mask.keys(i).contains(&j) && j < self.kv_len
    }
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Silu,
    /// `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))` (GPT-2's `gelu_new`).
    GeluTanh,
    /// `0.5x(1 + erf(x/√2))` (exact GELU).
    GeluErf,
}

/// How RoPE pairs the features of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face `rotate_half`: feature `i` pairs with `i + head_dim/2`.
    Half,
    /// Meta / llama2.c: feature `2i` pairs with `2i + 1`.
    Interleaved,
}

/// Precomputed `cos`/`sin` of RoPE angles: `[max_pos, head_dim/2]` each.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub head_dim: usize,
    pub max_pos: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// Angle of pair `i` at position `p`: `p · theta^(-2i/head_dim)`, computed in f64 then rounded
    /// (as Hugging Face computes `inv_freq` in f32 and the product in f32, results match within 1 ulp).
    pub fn new(head_dim: usize, max_pos: usize, theta: f64) -> Self {
        let inv_freq = Self::default_inv_freq(head_dim, theta);
        Self::from_inv_freq(&inv_freq, max_pos, 1.0)
    }

    /// Unscaled inverse frequencies `theta^(-2i/head_dim)`, `i < head_dim/2`, computed in f64 then rounded.
    pub fn default_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
        (0..head_dim / 2)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect()
    }

    /// A table from given inverse frequencies (one per pair: `head_dim = 2 * inv_freq.len()`), `cos` and `sin`
    /// multiplied by `attention_factor` (1 for plain RoPE; YaRN / LongRoPE scale them), as transformers does:
    /// angle `p · inv_freq` in f32, then `cos(angle) · factor`.
    pub fn from_inv_freq(inv_freq: &[f32], max_pos: usize, attention_factor: f32) -> Self {
        let (half, head_dim) = (inv_freq.len(), 2 * inv_freq.len());
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos() * attention_factor);
                sin.push(angle.sin() * attention_factor);
            }
        }
        Self {
            head_dim,
            max_pos,
            cos,
            sin,
        }
    }
}

/// Which sinusoidal position table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sinusoid {
    /// Hugging Face Marian: `[sin(p/10000^(2j/d)) | cos(p/10000^(2j/d))]`, j < d/2.
    Marian,
    /// tensor2tensor / OpenNMT: `[sin(p·ts_j) | cos(p·ts_j)]`, `ts_j = exp(-j·ln(10000)/(d/2 - 1))`.
    Tensor2Tensor,
}

/// Sinusoidal position table `[n_pos, dim]` for positions `first_pos .. first_pos + n_pos`.
pub fn sinusoidal_table(kind: Sinusoid, n_pos: usize, dim: usize, first_pos: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0f32; n_pos * dim];
    for t in 0..n_pos {
        let p = (first_pos + t) as f64;
        let row = &mut out[t * dim..(t + 1) * dim];
        for j in 0..half {
            let angle = match kind {
                Sinusoid::Marian => p / 10000f64.powf(2.0 * j as f64 / dim as f64),
                Sinusoid::Tensor2Tensor => {
                    let denom = (half as f64 - 1.0).max(1.0);
                    p * (-(j as f64) * 10000f64.ln() / denom).exp()
                }
            };
            row[j] = angle.sin() as f32;
            row[half + j] = angle.cos() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attn_args_constructors() {
        let heads = Heads::grouped(6, 2, 4);
        // Causal: 3 new positions after 5 cached ones see keys up to their own position.
        let a = AttnArgs::causal(heads, 2, 3, 8);
        assert_eq!(
            (a.n_heads, a.n_kv_heads, a.head_dim, a.q_len, a.kv_len),
            (6, 2, 4, 3, 8)
        );
        assert_eq!(a.mask, Mask::Causal { q_offset: 5 });
        assert!(a.visible(1, 0, 5) && !a.visible(1, 0, 6) && a.visible(0, 2, 7));
        assert_eq!(a.scale, 0.5);
        assert_eq!(a.q_strides, Strides::token_major(3, 6, 4));
        assert_eq!(a.kv_strides, Strides::token_major(8, 2, 4));
        assert_eq!(a.out_strides, a.q_strides);
        // Cross: every key.
        let c = AttnArgs::cross(Heads::new(2, 4), 1, 1, 9).with_scale(1.0);
        assert!(c.mask == Mask::None && c.key_lens.is_none() && c.visible(0, 0, 8) && c.scale == 1.0);
        // Bidirectional: padding masked per row.
        let lens = [3, 1];
        let b = AttnArgs::bidirectional(Heads::new(2, 4), 2, 3, &lens);
        assert!(b.visible(0, 0, 2) && b.visible(1, 2, 0) && !b.visible(1, 0, 1));
        let hm = Strides::head_major(2, 16, 4);
        assert_eq!(b.with_kv_strides(hm).kv_strides, hm);
    }
}
