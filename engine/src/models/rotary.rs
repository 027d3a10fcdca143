//! The rotary grouped-query decoder that Qwen2/2.5, Qwen3, Mistral, Phi-3 and Gemma 2/3 are configurations of:
//! RMSNorm blocks, RoPE (plain or scaled, one table per layer kind), grouped-query attention (with optional
//! q/k/v bias, per-head q/k RMSNorm, sliding windows, score soft-capping), a gated feed-forward (SwiGLU or
//! GeGLU), tied or untied head. Each family's file reads its `config.json`, checks it, and says which of these
//! pieces it has in a [`Spec`]; the tensors are bound here by their Hugging Face names (`model.layers.{l}...`).
//!
//! A block, top to bottom (`[Gemma]` marks what only the sandwich-normed families have):
//!
//! ```text
//! x  = embed_tokens[tokens] * embed_scale
//! h  = input_layernorm(x)
//! q, k, v = qkv_proj(h)                        (q_proj, k_proj, v_proj or a fused qkv_proj, packed as one)
//! q, k = q_norm(q), k_norm(k)                   (per head, when the family has them)
//! q, k = rope(q), rope(k)                       (the table of the layer's kind: global or local)
//! a  = attention(q, cache k, cache v)           (causal, sliding window, scale, soft-cap)
//! x += [Gemma: post_attention_layernorm] o_proj(a)
//! h  = pre-FFN norm(x)                          (Llama-style: post_attention_layernorm; Gemma: pre_feedforward_layernorm)
//! x += [Gemma: post_feedforward_layernorm] down_proj(act(gate_proj(h)) * up_proj(h))
//! ```

use std::path::Path;

use kernels::{Activation, AttnArgs, Heads, Kernels, Layout, RopeLayout, RopeTable, Strides};
use loaders::config::{LlamaConfig, RawConfig};

use super::decoder_only::{Blocks, Dims, Step};
use super::rope::{Rope, Scaling, ScalingContext};
use super::{Loaded, Source};
use crate::attention::Tap;
use crate::cache::{KvCache, Scratch};
use crate::layers::{gated, split_columns, Bias, Embedding, Linear, LmHead, Norm, RmsNorm, WeightBytes};
use crate::{Error, Result};

/// The longest context these families run here (their RoPE tables are precomputed up to it).
pub(crate) const MAX_CONTEXT: usize = 1 << 16;

/// The sizes of a rotary decoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    pub(crate) hidden_size: usize,
    pub(crate) n_layers: usize,
    pub(crate) heads: Heads,
    pub(crate) intermediate_size: usize,
    pub(crate) vocab_size: usize,
    pub(crate) rms_norm_eps: f32,
}

/// How q, k and v are projected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Qkv {
    /// `q_proj`, `k_proj`, `v_proj`, with a bias on each (Qwen2) or none.
    Separate { bias: bool },
    /// One `qkv_proj` whose rows are q, then k, then v (Phi-3).
    Fused,
}

/// How gate and up are projected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mlp {
    /// `gate_proj` and `up_proj`.
    Separate,
    /// One `gate_up_proj` whose rows are gate, then up (Phi-3).
    Fused,
}

/// Where the norms of a block sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormStyle {
    /// Llama's: `input_layernorm` before attention, `post_attention_layernorm` before the feed-forward.
    PreNorm,
    /// Gemma 2/3's: also a norm on the output of attention (`post_attention_layernorm`) and of the
    /// feed-forward (`post_feedforward_layernorm`); `pre_feedforward_layernorm` before the feed-forward.
    Sandwich,
}

/// The norms of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Norms {
    pub(crate) style: NormStyle,
    /// Added to every stored gain: 0, or 1 for Gemma's `(1 + w)`.
    pub(crate) gain_offset: f32,
    /// Per-head RMSNorm of q and k before RoPE (`self_attn.q_norm`, `self_attn.k_norm`: Qwen3, Gemma 3).
    pub(crate) qk_norm: bool,
}

/// Attention of one layer: its RoPE table (into [`Spec::ropes`]) and its sliding window, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerKind {
    pub(crate) rope: usize,
    pub(crate) window: Option<usize>,
}

/// Everything a family says about its decoder.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) shape: Shape,
    pub(crate) qkv: Qkv,
    pub(crate) mlp: Mlp,
    /// The gate's activation: SiLU (SwiGLU), tanh GELU (GeGLU), any the kernels have.
    pub(crate) act: Activation,
    pub(crate) norms: Norms,
    /// Multiplies the token embeddings (Gemma: `sqrt(hidden_size)`; else 1).
    pub(crate) embed_scale: f32,
    /// Multiplies `q·k`: `1/sqrt(head_dim)`, or Gemma's `query_pre_attn_scalar^-0.5`.
    pub(crate) attn_scale: f32,
    /// Soft-capping of attention scores and of the final logits (Gemma 2).
    pub(crate) attn_softcap: Option<f32>,
    pub(crate) final_softcap: Option<f32>,
    /// One per layer.
    pub(crate) layers: Vec<LayerKind>,
    /// The RoPE of each layer kind (Gemma 3: global and local bases).
    pub(crate) ropes: Vec<Rope>,
    /// The longest sequence the config positions (`max_position_embeddings`); capped at [`MAX_CONTEXT`].
    pub(crate) max_positions: usize,
    /// Tie the head to the embeddings when the checkpoint has no `lm_head.weight`.
    pub(crate) tie_word_embeddings: bool,
}

impl Spec {
    /// The Llama block a config read as a [`LlamaConfig`] describes, with per-layer `layers` and one `rope` for
    /// all: separate unbiased projections, SwiGLU (or the config's `hidden_act`), pre-norm, `1/sqrt(head_dim)`
    /// scaling, nothing capped. Each family changes what differs.
    pub(crate) fn llama_like(file: &Path, c: &LlamaConfig, layers: Vec<LayerKind>, rope: Rope) -> Result<Self> {
        Ok(Spec {
            shape: shape(c),
            qkv: Qkv::Separate { bias: false },
            mlp: Mlp::Separate,
            act: super::activation(file, "hidden_act", &c.hidden_act)?,
            norms: Norms {
                style: NormStyle::PreNorm,
                gain_offset: 0.0,
                qk_norm: false,
            },
            embed_scale: 1.0,
            attn_scale: 1.0 / (c.head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            layers,
            ropes: vec![rope],
            max_positions: c.max_position_embeddings,
            tie_word_embeddings: c.tie_word_embeddings,
        })
    }
}

/// An error for `attention_bias: true` in a family whose published models have none (qkv binds no bias there).
pub(crate) fn no_attention_bias(file: &Path, c: &LlamaConfig) -> Result<()> {
    if c.attention_bias || c.mlp_bias {
        return Err(Error::Unsupported {
            what: format!("{}: attention_bias / mlp_bias in this family", file.display()),
        });
    }
    Ok(())
}

/// The shape of a config read as a [`LlamaConfig`] (the fields every rotary family names alike).
pub(crate) fn shape(c: &LlamaConfig) -> Shape {
    Shape {
        hidden_size: c.hidden_size,
        n_layers: c.num_hidden_layers,
        heads: Heads::grouped(c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        rms_norm_eps: c.rms_norm_eps,
    }
}

/// The RoPE of a config read as a [`LlamaConfig`]: `rope_theta` and `rope_scaling` (or `rope_parameters`);
/// `original_max_position_embeddings` when the config keeps it outside `rope_scaling` (Phi-3).
pub(crate) fn rope(file: &Path, c: &LlamaConfig, original_max_position_embeddings: Option<usize>) -> Result<Rope> {
    let cx = ScalingContext {
        file,
        max_position_embeddings: c.max_position_embeddings,
        original_max_position_embeddings,
    };
    Ok(Rope {
        head_dim: c.head_dim,
        theta: c.rope_theta,
        scaling: Scaling::from_config(c.rope_scaling.as_ref(), c.head_dim, &cx)?,
    })
}

/// Which layers use a sliding window, read from transformers' `layer_types` (`"full_attention"` /
/// `"sliding_attention"`) or, when the config has none, from `default_sliding(layer)`. Sliding layers get
/// `window` and the RoPE table `local_rope`, full ones table 0. An error names a bad entry, a wrong count, or a
/// sliding layer without a window.
pub(crate) fn layer_kinds(
    file: &Path,
    layer_types: Option<&[String]>,
    n_layers: usize,
    default_sliding: impl Fn(usize) -> bool,
    window: Option<usize>,
    local_rope: usize,
) -> Result<Vec<LayerKind>> {
    let invalid = |field: &str, reason: String| Error::InvalidConfig {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let sliding: Vec<bool> = match layer_types {
        Some(types) => {
            if types.len() != n_layers {
                return Err(invalid(
                    "layer_types",
                    format!("{} entries, num_hidden_layers is {n_layers}", types.len()),
                ));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(false),
                    "sliding_attention" => Ok(true),
                    other => Err(Error::Unsupported {
                        what: format!(
                            "{}: layer_types entry {other:?} (qkv runs full_attention, sliding_attention)",
                            file.display()
                        ),
                    }),
                })
                .collect::<Result<_>>()?
        }
        None => (0..n_layers).map(default_sliding).collect(),
    };
    sliding
        .into_iter()
        .map(|s| match (s, window) {
            (false, _) => Ok(LayerKind { rope: 0, window: None }),
            (true, Some(w)) if w > 0 => Ok(LayerKind {
                rope: local_rope,
                window: Some(w),
            }),
            (true, w) => Err(invalid(
                "sliding_window",
                format!("{w:?}: sliding layers need a window of at least one position"),
            )),
        })
        .collect()
}

/// A family's reading of its `config.json`: the decoder and the config's shared fields (special ids).
pub(crate) type ReadSpec = fn(&RawConfig) -> Result<(Spec, LlamaConfig)>;

/// The registry's loader of a rotary family: `config.json` read by `read`, the weights bound as the spec says,
/// behind the shared plumbing.
pub(crate) fn load(src: &Source<'_>, read: ReadSpec) -> Result<Loaded> {
    let (spec, c) = read(src.config)?;
    check(src, &spec)?;
    Ok(src.decoder_only(Rotary::bind(src, spec)?, c.bos_token_id, c.eos_token_id))
}

/// `read` on a config of `model_type` with small shapes (hidden 64, ffn 96, 4 heads, vocabulary 100) and
/// `extra` JSON members (tests of the families' validation).
#[cfg(test)]
pub(crate) fn read_test_config(model_type: &str, extra: &str, read: ReadSpec) -> Result<(Spec, LlamaConfig)> {
    let json = format!(
        r#"{{"model_type":"{model_type}","hidden_size":64,"intermediate_size":96,"num_attention_heads":4,
            "vocab_size":100{extra}}}"#
    );
    read(&RawConfig::from_json(Path::new("test/config.json"), &json).expect("JSON"))
}

/// The checks of a spec every family needs (a family's own file checks its config fields first).
fn check(src: &Source<'_>, spec: &Spec) -> Result<()> {
    let file = src.config.path();
    let invalid = |field: &str, reason: String| Error::InvalidConfig {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    if spec.layers.len() != spec.shape.n_layers {
        return Err(invalid(
            "layer_types",
            format!(
                "{} entries, num_hidden_layers is {}",
                spec.layers.len(),
                spec.shape.n_layers
            ),
        ));
    }
    if let Some(l) = spec.layers.iter().position(|l| l.rope >= spec.ropes.len()) {
        return Err(invalid("layer_types", format!("layer {l} has no RoPE table")));
    }
    for rope in &spec.ropes {
        if rope.head_dim != spec.shape.heads.head_dim {
            return Err(invalid(
                "head_dim",
                format!(
                    "RoPE over {} features, heads are {} wide",
                    rope.head_dim, spec.shape.heads.head_dim
                ),
            ));
        }
    }
    for cap in [
        ("attn_logit_softcapping", spec.attn_softcap),
        ("final_logit_softcapping", spec.final_softcap),
    ] {
        if let (field, Some(c)) = cap {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid(field, format!("{c} is not a positive number")));
            }
        }
    }
    Ok(())
}

/// The attention half of a block.
#[derive(Debug)]
struct Attention {
    /// q, k and v packed as one matrix (separate in the checkpoint or not): outputs q | k | v.
    qkv_proj: Linear,
    /// Per-head norms of q and k (`[head_dim]` gains).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    o_proj: Linear,
    /// Gemma: the norm of the attention output.
    post_norm: Option<RmsNorm>,
}

/// The feed-forward half of a block.
#[derive(Debug)]
struct FeedForward {
    /// `post_attention_layernorm` (Llama-style) or `pre_feedforward_layernorm` (Gemma).
    norm: RmsNorm,
    /// gate and up packed as one matrix: outputs gate | up.
    gate_up_proj: Linear,
    down_proj: Linear,
    /// Gemma: the norm of the feed-forward output.
    post_norm: Option<RmsNorm>,
}

#[derive(Debug)]
struct Layer {
    kind: LayerKind,
    input_norm: RmsNorm,
    attn: Attention,
    ffn: FeedForward,
}

/// A rotary decoder, weights bound zero-copy in their stored dtype.
#[derive(Debug)]
struct Rotary {
    spec: Spec,
    embed: Embedding,
    layers: Vec<Layer>,
    /// One per layer kind, `max_positions` long.
    tables: Vec<RopeTable>,
}

impl Rotary {
    fn bind(src: &Source<'_>, spec: Spec) -> Result<(Self, LmHead)> {
        let (st, weights) = (src.weights, src.hold());
        let Shape {
            hidden_size: d,
            heads,
            intermediate_size: ff,
            rms_norm_eps: eps,
            ..
        } = spec.shape;
        let (hd, q_dim, kv_dim) = (
            heads.head_dim,
            heads.n_heads * heads.head_dim,
            heads.n_kv_heads * heads.head_dim,
        );
        let offset = spec.norms.gain_offset;
        let norm = |name: &str, dim| RmsNorm::bind_offset(st, name, dim, eps, offset);
        let mut embed = Embedding::bind(st, "model.embed_tokens", spec.shape.vocab_size, d)?;
        let mut layers = Vec::with_capacity(spec.shape.n_layers);
        for (l, &kind) in spec.layers.iter().enumerate() {
            let pre = format!("model.layers.{l}");
            let bind = |name: &str, out_dim, in_dim, bias| {
                Linear::bind(st, &format!("{pre}.{name}"), out_dim, in_dim, Layout::OutIn, bias)
            };
            let lin = |name: &str, out_dim, in_dim, bias| bind(name, out_dim, in_dim, bias)?.convert(st, weights);
            // q/k/v and gate/up packed as one matrix each, whether the checkpoint stores them apart or fused
            let qkv_proj = match spec.qkv {
                Qkv::Separate { bias } => {
                    let bias = if bias { Bias::Required } else { Bias::None };
                    let parts = vec![
                        bind("self_attn.q_proj", q_dim, d, bias)?,
                        bind("self_attn.k_proj", kv_dim, d, bias)?,
                        bind("self_attn.v_proj", kv_dim, d, bias)?,
                    ];
                    Linear::stack(st, parts, weights)?
                }
                Qkv::Fused => lin("self_attn.qkv_proj", q_dim + 2 * kv_dim, d, Bias::None)?,
            };
            let gate_up_proj = match spec.mlp {
                Mlp::Separate => {
                    let parts = vec![
                        bind("mlp.gate_proj", ff, d, Bias::None)?,
                        bind("mlp.up_proj", ff, d, Bias::None)?,
                    ];
                    Linear::stack(st, parts, weights)?
                }
                Mlp::Fused => lin("mlp.gate_up_proj", 2 * ff, d, Bias::None)?,
            };
            let qk_norm = if spec.norms.qk_norm {
                Some((
                    norm(&format!("{pre}.self_attn.q_norm"), hd)?,
                    norm(&format!("{pre}.self_attn.k_norm"), hd)?,
                ))
            } else {
                None
            };
            let sandwich = spec.norms.style == NormStyle::Sandwich;
            let (attn_post, ffn_pre, ffn_post) = if sandwich {
                (
                    Some(norm(&format!("{pre}.post_attention_layernorm"), d)?),
                    norm(&format!("{pre}.pre_feedforward_layernorm"), d)?,
                    Some(norm(&format!("{pre}.post_feedforward_layernorm"), d)?),
                )
            } else {
                (None, norm(&format!("{pre}.post_attention_layernorm"), d)?, None)
            };
            layers.push(Layer {
                kind,
                input_norm: norm(&format!("{pre}.input_layernorm"), d)?,
                attn: Attention {
                    qkv_proj,
                    qk_norm,
                    o_proj: lin("self_attn.o_proj", d, q_dim, Bias::None)?,
                    post_norm: attn_post,
                },
                ffn: FeedForward {
                    norm: ffn_pre,
                    gate_up_proj,
                    down_proj: lin("mlp.down_proj", d, ff, Bias::None)?,
                    post_norm: ffn_post,
                },
            });
        }
        let final_norm = norm("model.norm", d)?;
        // An lm_head tensor wins over tie_word_embeddings (HF saves it when the head is untied).
        // A tied head packed as stored is the one copy the lookups read too (int8: its own copy).
        let vocab = spec.shape.vocab_size;
        let lm_head = match embed.tensor() {
            Some(table) if !st.contains("lm_head.weight") && spec.tie_word_embeddings => {
                Linear::from_tensor(st, table.clone(), vocab, d, Layout::OutIn, None)?
            }
            _ => Linear::bind(st, "lm_head", vocab, d, Layout::OutIn, Bias::None)?,
        }
        .convert(st, weights)?;
        embed.tie_to(&lm_head);
        let head = LmHead {
            norm: Some(Norm::Rms(final_norm)),
            linear: lm_head,
            softcap: spec.final_softcap,
        };
        let max_pos = spec.max_positions.min(MAX_CONTEXT);
        let tables = spec.ropes.iter().map(|r| r.table(max_pos)).collect();
        let spec = Spec {
            max_positions: max_pos,
            ..spec
        };
        Ok((
            Self {
                spec,
                embed,
                layers,
                tables,
            },
            head,
        ))
    }
}

impl Blocks for Rotary {
    fn dims(&self) -> Dims {
        let s = &self.spec.shape;
        Dims {
            heads: s.heads,
            hidden_size: s.hidden_size,
            n_layers: s.n_layers,
            vocab_size: s.vocab_size,
            max_positions: self.spec.max_positions,
        }
    }

    fn forward(&self, step: &Step<'_>, kv: &mut [KvCache], scratch: &mut Scratch, x: &mut [f32]) -> Result<()> {
        let spec = &self.spec;
        let Step { k, tokens, shape, .. } = *step;
        let rows = shape.rows();
        let heads = spec.shape.heads;
        let (d, hd, ff) = (spec.shape.hidden_size, heads.head_dim, spec.shape.intermediate_size);
        let (q_dim, kv_dim) = (heads.n_heads * hd, heads.n_kv_heads * hd);
        let ([xb, xb2, qkv, q, kb, vb, qn, kn, att, hb, hb3], attn) = scratch.take_with_attn([
            rows * d,                    // xb  [rows, d]
            rows * d,                    // xb2 [rows, d]
            rows * (q_dim + 2 * kv_dim), // qkv [rows, q_dim + 2 kv_dim]: q | k | v
            rows * q_dim,                // q   [rows, n_heads, hd]
            rows * kv_dim,               // k   [rows, n_kv_heads, hd]
            rows * kv_dim,               // v   [rows, n_kv_heads, hd]
            rows * q_dim,                // qn  [rows, n_heads, hd]: q after its per-head norm
            rows * kv_dim,               // kn  [rows, n_kv_heads, hd]: k after its per-head norm
            rows * q_dim,                // att [rows, n_heads, hd]
            rows * 2 * ff,               // hb  [rows, 2 ff]: gate | up
            rows * ff,                   // hb3 [rows, ff]
        ]);

        // Token embeddings: x = embed_tokens[tokens] * embed_scale                   [rows, d]
        self.embed.forward(k, tokens, spec.embed_scale, x)?;
        step.attn.tap(Tap::Embedded, x);
        for (layer, kv) in self.layers.iter().zip(kv.iter_mut()) {
            let a = &layer.attn;
            // Attention input norm                                                     [rows, d]
            layer.input_norm.forward(k, x, xb);
            // Projections, one matrix: q [rows, n_heads, hd], k and v [rows, n_kv_heads, hd]
            a.qkv_proj.forward(k, xb, rows, qkv);
            split_columns(qkv, rows, [&mut *q, &mut *kb, &mut *vb]);
            // Per-head RMSNorm of q and k (Qwen3, Gemma 3)
            let (q, kb) = match &a.qk_norm {
                Some((q_norm, k_norm)) => {
                    q_norm.forward(k, q, qn); // [rows, n_heads, hd]
                    k_norm.forward(k, kb, kn); // [rows, n_kv_heads, hd]
                    (&mut *qn, &mut *kn)
                }
                None => (&mut *q, &mut *kb),
            };
            // Rotary positions pos0 .. pos0 + n, per sequence, with this layer's table
            let table = &self.tables[layer.kind.rope];
            for s in step.spans() {
                let (qs, ks) = (
                    &mut q[s.start * q_dim..][..s.n * q_dim],
                    &mut kb[s.start * kv_dim..][..s.n * kv_dim],
                );
                k.rope(table, RopeLayout::Half, qs, heads.n_heads, s.pos0); // [n, n_heads, hd]
                k.rope(table, RopeLayout::Half, ks, heads.n_kv_heads, s.pos0); // [n, n_kv_heads, hd]
            }
            // Append k, v to the cache                                 [batch, n_kv_heads, pos0 + n, hd]
            step.append_kv(kv, kb, vb, Strides::token_major(shape.n, heads.n_kv_heads, hd))?;
            // Causal (or sliding-window) grouped-query attention over the cache     [rows, n_heads, hd]
            let args = |batch, n, kv_len| {
                AttnArgs::causal(heads, batch, n, kv_len)
                    .with_window(layer.kind.window)
                    .with_scale(spec.attn_scale)
                    .with_softcap(spec.attn_softcap)
            };
            step.attention(attn, kv, args, (q, q_dim), (att, q_dim));
            // Output projection (and its norm) and residual: x += o_proj(att)           [rows, d]
            a.o_proj.forward(k, att, rows, xb);
            residual(k, a.post_norm.as_ref(), x, xb, xb2);
            step.attn.tap(Tap::Attended, x);
            // Feed-forward input norm                                                  [rows, d]
            let f = &layer.ffn;
            f.norm.forward(k, x, xb);
            // Gated feed-forward, gate and up one matrix: hb3 = act(gate(xb)) * up(xb)   [rows, ff]
            f.gate_up_proj.forward(k, xb, rows, hb);
            gated(k, spec.act, hb, ff, hb3);
            // Down projection (and its norm) and residual: x += down(hb3)              [rows, d]
            f.down_proj.forward(k, hb3, rows, xb);
            residual(k, f.post_norm.as_ref(), x, xb, xb2);
            step.attn.tap(Tap::Layer, x);
        }
        Ok(())
    }

    fn weight_bytes(&self, head: &LmHead) -> WeightBytes {
        let linears = self
            .layers
            .iter()
            .flat_map(|l| [&l.attn.qkv_proj, &l.attn.o_proj, &l.ffn.gate_up_proj, &l.ffn.down_proj]);
        WeightBytes::of(linears.chain([&head.linear]), &[&self.embed])
    }

    /// Sliding layers (Mistral's, Gemma's local ones) keep a window's worth of cache.
    fn layer_windows(&self) -> Vec<Option<usize>> {
        self.spec.layers.iter().map(|l| l.window).collect()
    }
}

/// `x += norm(y)` (Gemma's post-norms; `tmp` holds the normed rows) or `x += y`.
fn residual(k: &Kernels, norm: Option<&RmsNorm>, x: &mut [f32], y: &[f32], tmp: &mut [f32]) {
    match norm {
        Some(norm) => {
            norm.forward(k, y, tmp);
            k.add(x, tmp);
        }
        None => k.add(x, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen3 / Gemma 3's q/k norm as the block runs it (one `[head_dim]` norm over `[rows, n_heads, head_dim]`),
    /// against a naive per-head RMSNorm in f64 (transformers' `Qwen3RMSNorm` over the last dimension, times the
    /// gain; Gemma's gain `1 + w`), on every ISA. Tolerance: f32 rounding of a 64-term mean of squares and two
    /// products, a few ulps of values of size ~3.
    #[test]
    fn qk_norm_is_a_per_head_rms_norm() {
        const TOL: f32 = 1e-5;
        let (rows, n_heads, hd, eps) = (5, 3, 64, 1e-6f32);
        let x: Vec<f32> = (0..rows * n_heads * hd)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / hd) as f32))
            .collect();
        let w: Vec<f32> = (0..hd).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        for offset in [0.0f32, 1.0] {
            let gains: Vec<f32> = w.iter().map(|g| g + offset).collect();
            let norm = RmsNorm::from_gains(gains, eps);
            let mut want = vec![0.0f32; x.len()];
            for (head, out) in x.chunks_exact(hd).zip(want.chunks_exact_mut(hd)) {
                let ms = head.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / hd as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for ((o, &v), &g) in out.iter_mut().zip(head).zip(&w) {
                    *o = (v as f64 * inv * (offset as f64 + g as f64)) as f32;
                }
            }
            for k in kernels::testing::kernels("rotary::qk_norm") {
                let mut got = vec![0.0f32; x.len()];
                norm.forward(&k, &x, &mut got);
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err <= TOL, "{}: per-head norm differs by {err}", k.isa());
            }
        }
    }
}
