//! The Llama family (Llama 2/3, SmolLM, TinyLlama, Mistral-style GQA): RMSNorm, rotary positions
//! (Hugging Face rotate-half layout), grouped-query attention, SwiGLU feed-forward, tied or untied head.
//! Read from a `LlamaForCausalLM` checkpoint (`config.json` as transformers' `LlamaConfig`, Hugging Face
//! tensor names).

use std::path::Path;

use kernels::{Activation, AttnArgs, Heads, Layout, RopeLayout, RopeTable, Strides};
use loaders::config::LlamaConfig;

use super::decoder_only::{Blocks, Dims, Step};
use super::{Loaded, Source};
use crate::attention::Tap;
use crate::cache::{KvCache, Scratch};
use crate::layers::{gated, split_columns, Bias, Embedding, Linear, LmHead, Norm, RmsNorm, WeightBytes};
use crate::{Error, Result};

/// The longest context a Llama model runs here (its RoPE table is precomputed up to it).
const MAX_CONTEXT: usize = 1 << 16;

/// The registry's loader: `config.json` read as a `LlamaConfig`, the weights bound by their Hugging Face names.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let c = LlamaConfig::from_raw(src.config)?;
    check_supported(src.config.path(), &c)?;
    let (bos, eos) = (c.bos_token_id, c.eos_token_id.clone());
    Ok(src.decoder_only(Llama::bind(src, c)?, bos, eos))
}

/// An error for what this engine does not run of a config the loaders validated (sizes positive, heads dividing
/// the width, an even head_dim, a positive RoPE base): another activation than SiLU. (A RoPE scaling it does not
/// run is refused by `rope::Scaling::from_config`.)
fn check_supported(file: &Path, c: &LlamaConfig) -> Result<()> {
    if c.hidden_act != "silu" {
        return Err(Error::Unsupported {
            what: format!("{}: hidden_act {:?} (qkv runs silu)", file.display(), c.hidden_act),
        });
    }
    Ok(())
}

/// One transformer block.
#[derive(Debug)]
struct Layer {
    input_norm: RmsNorm,
    /// `q_proj`, `k_proj`, `v_proj` packed as one: outputs q | k | v.
    qkv_proj: Linear,
    o_proj: Linear,
    post_attn_norm: RmsNorm,
    /// `gate_proj`, `up_proj` packed as one: outputs gate | up.
    gate_up_proj: Linear,
    down_proj: Linear,
}

/// A Llama-family causal language model, weights bound zero-copy in their stored dtype.
#[derive(Debug)]
struct Llama {
    c: LlamaConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    rope: RopeTable,
}

impl Llama {
    /// Bind the weights of a `LlamaForCausalLM` checkpoint (HF names) and check every shape; the linear layers
    /// (LM head included, tied or not) held as `weights`.
    fn bind(src: &Source<'_>, c: LlamaConfig) -> Result<(Self, LmHead)> {
        let (st, weights) = (src.weights, src.hold());
        let (d, q_dim, kv_dim, ff) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let bias = |present: bool| if present { Bias::Required } else { Bias::None };
        let (attn_bias, mlp_bias) = (bias(c.attention_bias), bias(c.mlp_bias));
        let mut embed = Embedding::bind(st, "model.embed_tokens", c.vocab_size, d)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let pre = format!("model.layers.{l}");
            let bind = |name: &str, out_dim, in_dim, bias| {
                Linear::bind(st, &format!("{pre}.{name}"), out_dim, in_dim, Layout::OutIn, bias)
            };
            let lin = |name: &str, out_dim, in_dim, bias| bind(name, out_dim, in_dim, bias)?.convert(st, weights);
            let qkv = vec![
                bind("self_attn.q_proj", q_dim, d, attn_bias)?,
                bind("self_attn.k_proj", kv_dim, d, attn_bias)?,
                bind("self_attn.v_proj", kv_dim, d, attn_bias)?,
            ];
            let gate_up = vec![
                bind("mlp.gate_proj", ff, d, mlp_bias)?,
                bind("mlp.up_proj", ff, d, mlp_bias)?,
            ];
            layers.push(Layer {
                input_norm: RmsNorm::bind(st, &format!("{pre}.input_layernorm"), d, c.rms_norm_eps)?,
                qkv_proj: Linear::stack(st, qkv, weights)?,
                o_proj: lin("self_attn.o_proj", d, q_dim, attn_bias)?,
                post_attn_norm: RmsNorm::bind(st, &format!("{pre}.post_attention_layernorm"), d, c.rms_norm_eps)?,
                gate_up_proj: Linear::stack(st, gate_up, weights)?,
                down_proj: lin("mlp.down_proj", d, ff, mlp_bias)?,
            });
        }
        let norm = RmsNorm::bind(st, "model.norm", d, c.rms_norm_eps)?;
        // An lm_head tensor wins over tie_word_embeddings (HF saves it when the head is untied).
        // A tied head packed as stored is the one copy the lookups read too; quantized to int8 it is its own copy
        // and the lookups keep reading the stored table.
        let lm_head = match embed.tensor() {
            Some(table) if !st.contains("lm_head.weight") && c.tie_word_embeddings => {
                Linear::from_tensor(st, table.clone(), c.vocab_size, d, Layout::OutIn, None)?
            }
            _ => Linear::bind(st, "lm_head", c.vocab_size, d, Layout::OutIn, Bias::None)?,
        }
        .convert(st, weights)?;
        embed.tie_to(&lm_head);
        // The RoPE table (plain, linear or llama3-scaled) covers the context this engine runs (at most MAX_CONTEXT).
        let rope = super::rotary::rope(src.config.path(), &c, None)?.table(c.max_position_embeddings.min(MAX_CONTEXT));
        let head = LmHead {
            norm: Some(Norm::Rms(norm)),
            linear: lm_head,
            softcap: None,
        };
        Ok((Self { c, embed, layers, rope }, head))
    }
}

impl Blocks for Llama {
    fn dims(&self) -> Dims {
        Dims {
            heads: Heads::grouped(self.c.num_attention_heads, self.c.num_key_value_heads, self.c.head_dim),
            hidden_size: self.c.hidden_size,
            n_layers: self.c.num_hidden_layers,
            vocab_size: self.c.vocab_size,
            // the RoPE table's length
            max_positions: self.rope.max_pos,
        }
    }

    fn forward(&self, step: &Step<'_>, kv: &mut [KvCache], scratch: &mut Scratch, x: &mut [f32]) -> Result<()> {
        let c = &self.c;
        let Step { k, tokens, shape, .. } = *step;
        let rows = shape.rows();
        let (d, hd, n_heads, n_kv) = (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let (q_dim, kv_dim, ff) = (n_heads * hd, n_kv * hd, c.intermediate_size);
        let heads = Heads::grouped(n_heads, n_kv, hd);
        let ([xb, qkv, q, kb, vb, att, hb, hb3], attn) = scratch.take_with_attn([
            rows * d,                    // xb  [rows, d]
            rows * (q_dim + 2 * kv_dim), // qkv [rows, q_dim + 2 kv_dim]: q | k | v
            rows * q_dim,                // q   [rows, n_heads, hd]
            rows * kv_dim,               // k   [rows, n_kv_heads, hd]
            rows * kv_dim,               // v   [rows, n_kv_heads, hd]
            rows * q_dim,                // att [rows, n_heads, hd]
            rows * 2 * ff,               // hb  [rows, 2 ff]: gate | up
            rows * ff,                   // hb3 [rows, ff]
        ]);

        // Token embeddings: x = embed_tokens[tokens]                                  [rows, d]
        self.embed.forward(k, tokens, 1.0, x)?;
        step.attn.tap(Tap::Embedded, x);
        for (layer, kv) in self.layers.iter().zip(kv.iter_mut()) {
            // Attention input norm                                                     [rows, d]
            layer.input_norm.forward(k, x, xb);
            // Projections, one matrix: q [rows, n_heads, hd], k and v [rows, n_kv_heads, hd]
            layer.qkv_proj.forward(k, xb, rows, qkv);
            split_columns(qkv, rows, [&mut *q, &mut *kb, &mut *vb]);
            // Rotary positions pos0 .. pos0 + n, per sequence
            for s in step.spans() {
                let (qs, ks) = (
                    &mut q[s.start * q_dim..][..s.n * q_dim],
                    &mut kb[s.start * kv_dim..][..s.n * kv_dim],
                );
                k.rope(&self.rope, RopeLayout::Half, qs, n_heads, s.pos0); // [n, n_heads, hd]
                k.rope(&self.rope, RopeLayout::Half, ks, n_kv, s.pos0); // [n, n_kv_heads, hd]
            }
            // Append k, v to the cache                                 [batch, n_kv_heads, pos0 + n, hd]
            step.append_kv(kv, kb, vb, Strides::token_major(shape.n, n_kv, hd))?;
            // Causal grouped-query attention over the cache                      [rows, n_heads, hd]
            let args = |batch, n, kv_len| AttnArgs::causal(heads, batch, n, kv_len);
            step.attention(attn, kv, args, (q, q_dim), (att, q_dim));
            // Output projection and residual: x += o_proj(att)                          [rows, d]
            layer.o_proj.forward(k, att, rows, xb);
            k.add(x, xb);
            step.attn.tap(Tap::Attended, x);
            // Feed-forward input norm                                                  [rows, d]
            layer.post_attn_norm.forward(k, x, xb);
            // SwiGLU, gate and up one matrix: hb3 = silu(gate(xb)) * up(xb)              [rows, ff]
            layer.gate_up_proj.forward(k, xb, rows, hb);
            gated(k, Activation::Silu, hb, ff, hb3);
            // Down projection and residual: x += down(hb3)                             [rows, d]
            layer.down_proj.forward(k, hb3, rows, xb);
            k.add(x, xb);
            step.attn.tap(Tap::Layer, x);
        }
        Ok(())
    }

    fn weight_bytes(&self, head: &LmHead) -> WeightBytes {
        let linears = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv_proj, &l.o_proj, &l.gate_up_proj, &l.down_proj]);
        WeightBytes::of(linears.chain([&head.linear]), &[&self.embed])
    }
}
