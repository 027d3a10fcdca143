//! Attention you can see: the probabilities of every attention layer and head of one forward pass.
//!
//! A forward pass runs one of two attention paths ([`AttnPath`], carried by each step): the fused kernels
//! (`Kernels::attention`, online softmax, nothing kept: every normal step), or the recording path, which runs
//! the naive attention of `kernels::reference::attention_probs` (the same math, every score row materialised)
//! and keeps, per call, the queries, keys, values, softmax weights and outputs in a [`Recorder`]. The recording
//! path is chosen per call ([`crate::Model::attention`], [`crate::Model::translation_attention`]); the families
//! call [`AttnPath::attend`] where they called the kernel, so when it is `Fused` a step costs one match more.
//!
//! Results are [`AttentionMaps`], indexed `[layer][head][query][key]` (cross-attention: `[layer][head][target]
//! [source]`): each row over the keys a query sees sums to 1, and masked keys (future positions, padding) are
//! exactly 0.

use std::sync::Mutex;

use kernels::{AttnArgs, AttnScratch, Heads, Kernels};

use crate::models::decoder_only::CausalLm;
use crate::models::seq2seq::{Room, Seq2Seq};
use crate::step::{LogitsFor, StepIo};
use crate::{Error, Result};

/// Which attention a forward pass runs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum AttnPath<'a> {
    /// The fused kernels; nothing is kept (every normal step).
    #[default]
    Fused,
    /// The naive attention that keeps its probabilities (and the residual stream at the [`Tap`]s) in the recorder.
    Record(&'a Recorder),
}

/// The three attentions of a Transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttnKind {
    /// An encoder's bidirectional self-attention.
    Encoder,
    /// A decoder's causal self-attention (every decoder-only model's).
    Decoder,
    /// A decoder's attention over the encoder output.
    Cross,
}

/// Points of a decoder-only forward pass where the recording path keeps the residual stream (`[rows, d]`), for
/// [`crate::Model::explain`]. Each is tapped once per layer (`Attended`, `Layer`) or once per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tap {
    /// After the token embeddings.
    Embedded,
    /// After adding position encodings (families with additive positions).
    Positioned,
    /// After a layer's attention block and its residual.
    Attended,
    /// After a layer's feed-forward and its residual: the layer's output.
    Layer,
}

impl AttnPath<'_> {
    /// `out = attention(q, k, v)` as `args` describe it, on the fused kernels (with the buffers of `sc`) or
    /// recorded as `kind`.
    pub(crate) fn attend(
        self,
        k: &Kernels,
        sc: &mut AttnScratch,
        kind: AttnKind,
        args: &AttnArgs<'_>,
        [q, keys, v]: Qkv<'_>,
        out: &mut [f32],
    ) {
        match self {
            AttnPath::Fused => k.attention_in(sc, args, q, keys, v, out),
            AttnPath::Record(r) => r.attend(kind, args, q, keys, v, out),
        }
    }

    /// Keep the residual stream `x` at `tap` (recording path only).
    pub(crate) fn tap(self, tap: Tap, x: &[f32]) {
        if let AttnPath::Record(r) = self {
            lock(&r.taps).push((tap, x.to_vec()));
        }
    }
}

/// The queries, keys and values of one attention call, laid out as its `AttnArgs` say.
pub(crate) type Qkv<'a> = [&'a [f32]; 3];

/// One recorded attention call, batch row 0 of it gathered head-major.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) kind: AttnKind,
    pub(crate) heads: Heads,
    pub(crate) q_len: usize,
    pub(crate) kv_len: usize,
    pub(crate) scale: f32,
    /// `[n_heads, q_len, head_dim]`
    pub(crate) q: Vec<f32>,
    /// `[n_kv_heads, kv_len, head_dim]`
    pub(crate) k: Vec<f32>,
    /// `[n_kv_heads, kv_len, head_dim]`
    pub(crate) v: Vec<f32>,
    /// Softmax weights `[n_heads, q_len, kv_len]`.
    pub(crate) probs: Vec<f32>,
    /// Weighted sums of the values `[n_heads, q_len, head_dim]`.
    pub(crate) out: Vec<f32>,
    /// Whether query `i` may see key `j`: `[q_len, kv_len]`.
    pub(crate) visible: Vec<bool>,
}

/// What the recording path keeps: every attention call in order, and the residual stream at each [`Tap`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    calls: Mutex<Vec<Call>>,
    taps: Mutex<Vec<(Tap, Vec<f32>)>>,
}

/// The data under a mutex, also after a panic elsewhere (the recorder only ever appends).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    fn attend(&self, kind: AttnKind, a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        let mut probs = vec![0.0f32; a.batch * a.n_heads * a.q_len * a.kv_len]; // [batch, n_heads, q_len, kv_len]
        kernels::reference::attention_probs(a, q, k, v, out, &mut probs);
        // Batch row 0, head-major: what the recording entry points (one sequence) need.
        let d = a.head_dim;
        let gather = |src: &[f32], strides: kernels::Strides, heads: usize, len: usize| {
            let mut g = Vec::with_capacity(heads * len * d);
            for h in 0..heads {
                for t in 0..len {
                    let o = strides.offset(0, t, h);
                    g.extend_from_slice(&src[o..o + d]);
                }
            }
            g
        };
        let visible = (0..a.q_len)
            .flat_map(|i| (0..a.kv_len).map(move |j| (i, j)))
            .map(|(i, j)| a.visible(0, i, j))
            .collect();
        probs.truncate(a.n_heads * a.q_len * a.kv_len);
        let call = Call {
            kind,
            heads: Heads::grouped(a.n_heads, a.n_kv_heads, d),
            q_len: a.q_len,
            kv_len: a.kv_len,
            scale: a.scale,
            q: gather(q, a.q_strides, a.n_heads, a.q_len),
            k: gather(k, a.kv_strides, a.n_kv_heads, a.kv_len),
            v: gather(v, a.kv_strides, a.n_kv_heads, a.kv_len),
            probs,
            out: gather(out, a.out_strides, a.n_heads, a.q_len),
            visible,
        };
        lock(&self.calls).push(call);
    }

    /// The calls of `kind`, in order (one per layer for the one-sequence passes that record).
    pub(crate) fn calls(&self, kind: AttnKind) -> Vec<Call> {
        lock(&self.calls).iter().filter(|c| c.kind == kind).cloned().collect()
    }

    /// The residual streams kept at `tap`, in order.
    pub(crate) fn taps(&self, tap: Tap) -> Vec<Vec<f32>> {
        lock(&self.taps)
            .iter()
            .filter(|(t, _)| *t == tap)
            .map(|(_, x)| x.clone())
            .collect()
    }

    /// The probabilities of every `kind` call, one per layer: `[layer][head][query][key]`.
    pub(crate) fn maps(&self, kind: AttnKind, n_layers: usize) -> Result<AttentionMaps> {
        let calls = self.calls(kind);
        let first = calls.first();
        let (n_heads, n_queries, n_keys) = first.map_or((0, 0, 0), |c| (c.heads.n_heads, c.q_len, c.kv_len));
        let same = calls
            .iter()
            .all(|c| (c.heads.n_heads, c.q_len, c.kv_len) == (n_heads, n_queries, n_keys));
        if calls.len() != n_layers || !same {
            // a bug of this crate (a family that does not attend once per layer), never of a caller
            return Err(Error::Request(format!(
                "attention recording: {} {kind:?} calls of differing shapes, expected one per layer ({n_layers})",
                calls.len()
            )));
        }
        Ok(AttentionMaps {
            n_layers,
            n_heads,
            n_queries,
            n_keys,
            probs: calls.into_iter().flat_map(|c| c.probs).collect(),
        })
    }
}

/// Attention probabilities of one kind of attention, every layer and head: `[layer][head][query][key]` (for
/// cross-attention `[layer][head][target][source]`). Rows sum to 1 over the keys their query sees; masked keys
/// are exactly 0.
///
/// ```
/// use qkv::Model;
///
/// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
/// let att = model.attention_ids(&[1, 158, 66, 9])?;
/// let maps = &att.self_attention;
/// assert_eq!(maps.shape(), [2, 8, 4, 4]); // 2 layers, 8 query heads, 4 x 4 positions
/// assert_eq!(maps.get(1, 3, 0, 1), 0.0); // the first token cannot see the second
/// assert!((maps.row(1, 3, 2).iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMaps {
    n_layers: usize,
    n_heads: usize,
    n_queries: usize,
    n_keys: usize,
    /// `[n_layers, n_heads, n_queries, n_keys]`
    probs: Vec<f32>,
}

impl AttentionMaps {
    /// Empty maps of `n_layers` x `n_heads` (no query rows), e.g. the cross-attention of an empty translation.
    pub(crate) fn empty(n_layers: usize, n_heads: usize, n_keys: usize) -> Self {
        Self {
            n_layers,
            n_heads,
            n_queries: 0,
            n_keys,
            probs: Vec::new(),
        }
    }

    /// `[layers, heads, queries, keys]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n_layers, self.n_heads, self.n_queries, self.n_keys]
    }

    /// The weight of `key` in `query`'s row of `head` in `layer` (panics outside [`AttentionMaps::shape`]).
    pub fn get(&self, layer: usize, head: usize, query: usize, key: usize) -> f32 {
        assert!(key < self.n_keys, "key {key} of {}", self.n_keys);
        self.row(layer, head, query)[key]
    }

    /// One query's row over the keys (panics outside [`AttentionMaps::shape`]).
    pub fn row(&self, layer: usize, head: usize, query: usize) -> &[f32] {
        assert!(query < self.n_queries, "query {query} of {}", self.n_queries);
        let r = query * self.n_keys;
        &self.head(layer, head)[r..r + self.n_keys]
    }

    /// One head's map, `[query][key]` row-major (panics outside [`AttentionMaps::shape`]).
    pub fn head(&self, layer: usize, head: usize) -> &[f32] {
        assert!(
            layer < self.n_layers && head < self.n_heads,
            "layer {layer} head {head} of {} x {}",
            self.n_layers,
            self.n_heads
        );
        let size = self.n_queries * self.n_keys;
        let h0 = (layer * self.n_heads + head) * size;
        &self.probs[h0..h0 + size]
    }

    /// A layer's maps averaged over its heads, `[query][key]` (what an alignment shows).
    pub fn mean_over_heads(&self, layer: usize) -> Vec<f32> {
        let size = self.n_queries * self.n_keys;
        let mut mean = vec![0.0f64; size];
        for h in 0..self.n_heads {
            for (m, &p) in mean.iter_mut().zip(self.head(layer, h)) {
                *m += p as f64;
            }
        }
        mean.iter().map(|&m| (m / self.n_heads as f64) as f32).collect()
    }

    /// Every probability, `[layers, heads, queries, keys]` row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.probs
    }

    /// Nested `[layer][head][query][key]` vectors (e.g. for JSON).
    pub fn to_nested(&self) -> Vec<Vec<Vec<Vec<f32>>>> {
        (0..self.n_layers)
            .map(|l| {
                (0..self.n_heads)
                    .map(|h| (0..self.n_queries).map(|q| self.row(l, h, q).to_vec()).collect())
                    .collect()
            })
            .collect()
    }
}

/// The self-attention of a decoder-only model over a prompt ([`crate::Model::attention`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptAttention {
    /// The prompt's ids.
    pub ids: Vec<u32>,
    /// Each id's token as the tokenizer spells it (the id itself when the model has no tokenizer).
    pub tokens: Vec<String>,
    /// Causal self-attention `[layer][head][query][key]`.
    pub self_attention: AttentionMaps,
}

/// The three attentions of an encoder-decoder model over a source and its translation
/// ([`crate::Model::translation_attention`]): one target row per generated token, the decoder position whose
/// output produced it (the decoder start token's row produced the first), EOS not included.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslationAttention {
    pub source_ids: Vec<u32>,
    pub source_tokens: Vec<String>,
    /// The generated tokens the rows stand for (EOS not included).
    pub target_ids: Vec<u32>,
    pub target_tokens: Vec<String>,
    /// Encoder self-attention `[layer][head][source][source]`.
    pub encoder: AttentionMaps,
    /// Decoder self-attention `[layer][head][target][target position]`; the keys are the decoder's inputs: the
    /// start token, then the targets but the last.
    pub decoder: AttentionMaps,
    /// Cross-attention `[layer][head][target][source]`.
    pub cross: AttentionMaps,
}

/// A decoder-only forward pass of one sequence `ids` on the recording path: what it recorded, and the logits of
/// every position (`[ids.len(), vocab]`). An error naming the problem for an empty prompt or one longer than the
/// model's context.
pub(crate) fn record_prompt(m: &CausalLm, ids: &[u32], max_bytes: usize) -> Result<(Recorder, Vec<f32>)> {
    let d = m.dims();
    if ids.is_empty() {
        return Err(Error::Request("the prompt is empty (no tokens)".into()));
    }
    if ids.len() > d.max_positions {
        return Err(Error::Request(format!(
            "the prompt has {} tokens, longer than the model's context of {} positions",
            ids.len(),
            d.max_positions
        )));
    }
    let mut cache = m.new_cache(1, ids.len(), max_bytes)?;
    let rec = Recorder::default();
    let mut logits = vec![0.0f32; ids.len() * d.vocab_size]; // [n, vocab]
    m.forward(
        &mut cache,
        StepIo {
            tokens: ids,
            n: ids.len(),
            which: LogitsFor::All,
            logits: &mut logits,
            attn: AttnPath::Record(&rec),
        },
    )?;
    Ok((rec, logits))
}

/// The decoder inputs that teacher-force `target` (cut at its first `eos`): the start token, then the targets
/// but the last; and the targets the rows stand for.
pub(crate) fn teacher_forced(start: u32, target: &[u32], eos: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let end = target.iter().position(|t| eos.contains(t)).unwrap_or(target.len());
    let targets = target[..end].to_vec();
    let inputs = std::iter::once(start)
        .chain(targets.iter().copied())
        .take(targets.len())
        .collect();
    (inputs, targets)
}

/// Encoder and decoder passes of one source and its translation `target` on the recording path: the three maps
/// (one target row per target token before the first `eos`).
pub(crate) fn record_translation(
    net: &Seq2Seq,
    source: &[u32],
    target: &[u32],
    eos: &[u32],
    max_bytes: usize,
) -> Result<(AttentionMaps, AttentionMaps, AttentionMaps)> {
    let c = net.config();
    if source.is_empty() {
        return Err(Error::Request(
            "translation attention: the source is empty (no tokens)".into(),
        ));
    }
    let (inputs, targets) = teacher_forced(c.decoder_start_token_id, target, eos);
    let rec = Recorder::default();
    let room = Room {
        max_rows: 1,
        max_new_tokens: inputs.len().max(1),
    };
    let mut state = net.start(&[source], room, max_bytes, AttnPath::Record(&rec))?;
    let encoder = rec.maps(AttnKind::Encoder, c.n_encoder_layers)?;
    let (n_layers, n_heads) = (c.n_decoder_layers, c.n_decoder_heads);
    if targets.is_empty() {
        let empty = AttentionMaps::empty(n_layers, n_heads, 0);
        return Ok((encoder, empty, AttentionMaps::empty(n_layers, n_heads, source.len())));
    }
    let mut logits = vec![0.0f32; c.tgt_vocab_size]; // [1, vocab]
    net.forward(
        &mut state,
        StepIo {
            tokens: &inputs,
            n: inputs.len(),
            which: LogitsFor::Last,
            logits: &mut logits,
            attn: AttnPath::Record(&rec),
        },
    )?;
    let decoder = rec.maps(AttnKind::Decoder, n_layers)?;
    let cross = rec.maps(AttnKind::Cross, n_layers)?;
    Ok((encoder, decoder, cross))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_forcing_drops_eos_and_shifts() {
        assert_eq!(teacher_forced(1, &[5, 6, 2], &[2]), (vec![1, 5], vec![5, 6]));
        assert_eq!(teacher_forced(1, &[5, 6], &[2]), (vec![1, 5], vec![5, 6]));
        assert_eq!(teacher_forced(1, &[2], &[2]), (vec![], vec![]));
    }
}
