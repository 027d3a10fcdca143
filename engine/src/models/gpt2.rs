//! GPT-2: learned positions, pre-LayerNorm blocks, fused QKV (`c_attn`), `gelu_new`, tied head.
//!
//! GPT-2's `Conv1D` weights are stored `[in, out]`; they are bound as `Layout::InOut` and read in
//! place (no transposed copy), unless quantized to int8 (then transposed once, at load).

use std::path::Path;

use kernels::{Activation, AttnArgs, Heads, Kernels, Layout, Strides};
use loaders::config::Gpt2Config;

use super::decoder_only::{Blocks, Dims, Step};
use super::{Loaded, Source};
use crate::cache::{KvCache, Scratch};
use crate::layers::{Bias, Embedding, LayerNorm, Linear, LmHead, Norm, TensorSource, WeightBytes, WeightType};
use crate::{Error, Result};

/// The registry's loader: `config.json` read as a `GPT2Config`, the weights bound (with or without the
/// `transformer.` prefix).
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let c = Gpt2Config::from_raw(src.config)?;
    let p = Gpt2Params::from_config(src.config.path(), &c)?;
    let blocks = Gpt2::bind(src.weights, &p, src.weight_type)?;
    Ok(Loaded::decoder_only(
        blocks,
        src.kernels,
        c.bos_token_id,
        c.eos_token_id,
    ))
}

/// The hyper-parameters the forward pass needs (from `config.json`, which the loaders validated: sizes positive,
/// `n_head` dividing `n_embd`).
#[derive(Clone, Debug, PartialEq)]
struct Gpt2Params {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    /// Feed-forward width (`n_inner`, default `4 * n_embd`).
    n_inner: usize,
    layer_norm_epsilon: f32,
    activation: Activation,
    /// Multiplies `q·k`: `1/sqrt(head_dim)`, or 1 without `scale_attn_weights`.
    attn_scale: f32,
}

impl Gpt2Params {
    /// The forward-pass parameters of `config.json` (`file`); an error for the variants this engine does not run.
    fn from_config(file: &Path, c: &Gpt2Config) -> Result<Self> {
        if c.scale_attn_by_inverse_layer_idx || c.add_cross_attention {
            return Err(Error::Unsupported {
                what: format!(
                    "{}: scale_attn_by_inverse_layer_idx and add_cross_attention (GPT-2 variants)",
                    file.display()
                ),
            });
        }
        Ok(Self {
            vocab_size: c.vocab_size,
            n_positions: c.n_positions,
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_inner: c.inner_dim(),
            layer_norm_epsilon: c.layer_norm_epsilon,
            activation: super::activation(file, "activation_function", &c.activation_function)?,
            attn_scale: if c.scale_attn_weights {
                1.0 / (c.head_dim() as f32).sqrt()
            } else {
                1.0
            },
        })
    }
}

/// One transformer block.
#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A GPT-2 causal language model, weights bound zero-copy in their stored dtype.
#[derive(Debug)]
struct Gpt2 {
    p: Gpt2Params,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    head: LmHead,
}

impl Gpt2 {
    /// Bind the weights of a `GPT2LMHeadModel` checkpoint (with or without the `transformer.` prefix), the linear
    /// layers (the tied LM head included) held as `weights`.
    fn bind(st: &dyn TensorSource, p: &Gpt2Params, weights: WeightType) -> Result<Self> {
        let pre = if st.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let (d, ff) = (p.n_embd, p.n_inner);
        let wte = Embedding::bind(st, &format!("{pre}wte"), p.vocab_size, d)?;
        let wpe = Embedding::bind(st, &format!("{pre}wpe"), p.n_positions, d)?;
        let mut blocks = Vec::with_capacity(p.n_layer);
        for l in 0..p.n_layer {
            let h = format!("{pre}h.{l}");
            let conv = |name: &str, out_dim, in_dim| {
                Linear::bind(
                    st,
                    &format!("{h}.{name}"),
                    out_dim,
                    in_dim,
                    Layout::InOut,
                    Bias::Required,
                )?
                .convert(st, weights)
            };
            let eps = p.layer_norm_epsilon;
            blocks.push(Block {
                ln_1: LayerNorm::bind(st, &format!("{h}.ln_1"), d, eps)?,
                c_attn: conv("attn.c_attn", 3 * d, d)?,
                attn_proj: conv("attn.c_proj", d, d)?,
                ln_2: LayerNorm::bind(st, &format!("{h}.ln_2"), d, eps)?,
                c_fc: conv("mlp.c_fc", ff, d)?,
                mlp_proj: conv("mlp.c_proj", d, ff)?,
            });
        }
        let ln_f = LayerNorm::bind(st, &format!("{pre}ln_f"), d, p.layer_norm_epsilon)?;
        // The head is tied to wte unless the checkpoint has its own lm_head.
        // (quantized to int8, a tied head is its own copy: the lookups keep reading wte as stored)
        let lm_head = if st.contains("lm_head.weight") {
            Linear::bind(st, "lm_head", p.vocab_size, d, Layout::OutIn, Bias::None)?
        } else {
            Linear::from_tensor(st, wte.tensor().clone(), p.vocab_size, d, Layout::OutIn, None)?
        }
        .convert(st, weights)?;
        Ok(Self {
            p: p.clone(),
            wte,
            wpe,
            blocks,
            head: LmHead {
                norm: Some(Norm::Layer(ln_f)),
                linear: lm_head,
            },
        })
    }
}

impl Blocks for Gpt2 {
    fn dims(&self) -> Dims {
        let p = &self.p;
        Dims {
            hidden_size: p.n_embd,
            n_layers: p.n_layer,
            n_heads: p.n_head,
            n_kv_heads: p.n_head,
            head_dim: p.n_embd / p.n_head,
            vocab_size: p.vocab_size,
            max_positions: p.n_positions,
        }
    }

    fn forward(
        &self,
        k: &Kernels,
        step: &Step<'_>,
        kv: &mut [KvCache],
        scratch: &mut Scratch,
        x: &mut [f32],
    ) -> Result<()> {
        let p = &self.p;
        let Step { tokens, shape, pos0 } = *step;
        let (batch, n, rows) = (shape.batch, shape.n, shape.rows());
        let (d, n_heads, ff) = (p.n_embd, p.n_head, p.n_inner);
        let hd = d / n_heads;
        let ([xb, pos, qkv, att, hb], positions) = scratch.take_with_ids(
            [
                rows * d,     // xb  [rows, d]
                n * d,        // pos [n, d]
                rows * 3 * d, // qkv [rows, 3, n_heads, hd]
                rows * d,     // att [rows, n_heads, hd]
                rows * ff,    // hb  [rows, ff]
            ],
            pos0..pos0 + n,
        );

        // Token embeddings: x = wte[tokens]                                           [rows, d]
        self.wte.forward(k, tokens, 1.0, x)?;
        // Learned positions: x += wpe[pos0 .. pos0 + n] for every sequence           [n, d]
        self.wpe.forward(k, positions, 1.0, pos)?;
        for b in 0..batch {
            k.add(&mut x[b * n * d..(b + 1) * n * d], pos);
        }
        // q, k and v sit side by side in each row of the fused projection.
        let qkv_strides = Strides {
            batch: n * 3 * d,
            pos: 3 * d,
            head: hd,
        };
        for (block, kv) in self.blocks.iter().zip(kv.iter_mut()) {
            // Attention input norm                                                     [rows, d]
            block.ln_1.forward(k, x, xb);
            // Fused projection: qkv = c_attn(xb)                                    [rows, 3 * d]
            block.c_attn.forward(k, xb, rows, qkv);
            // Append k, v to the cache                                    [batch, n_heads, pos0 + n, hd]
            kv.append_strided(&qkv[d..], &qkv[2 * d..], qkv_strides, n)?;
            // Causal attention over the cache                                    [rows, n_heads, hd]
            let args = AttnArgs::causal(Heads::new(n_heads, hd), batch, n, kv.len())
                .with_scale(p.attn_scale)
                .with_q_strides(qkv_strides)
                .with_kv_strides(kv.strides());
            k.attention(&args, qkv, kv.k(), kv.v(), att);
            // Output projection and residual: x += c_proj(att)                          [rows, d]
            block.attn_proj.forward(k, att, rows, xb);
            k.add(x, xb);
            // Feed-forward input norm                                                  [rows, d]
            block.ln_2.forward(k, x, xb);
            // hb = act(c_fc(xb))                                                      [rows, ff]
            block.c_fc.forward(k, xb, rows, hb);
            k.activation(p.activation, hb);
            // Down projection and residual: x += c_proj(hb)                            [rows, d]
            block.mlp_proj.forward(k, hb, rows, xb);
            k.add(x, xb);
        }
        Ok(())
    }

    fn head(&self) -> &LmHead {
        &self.head
    }

    /// Bytes of the weights this model reads (norm gains and biases aside).
    fn weight_bytes(&self) -> WeightBytes {
        let linears = self
            .blocks
            .iter()
            .flat_map(|b| [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj]);
        WeightBytes::of(linears.chain([&self.head.linear]), &[&self.wte, &self.wpe])
    }
}
