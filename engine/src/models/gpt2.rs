//! GPT-2: learned positions, pre-LayerNorm blocks, fused QKV (`c_attn`), `gelu_new`, tied head.
//!
//! GPT-2's `Conv1D` weights are stored `[in, out]`; they are bound as `Layout::InOut` and read in
//! place (no transposed copy), unless quantized to int8 (then transposed once, at load).

use kernels::{Activation, AttnArgs, Heads, Layout, Strides};
use loaders::config::Gpt2Config;

use super::decoder_only::{Blocks, Dims, Step};
use super::{Loaded, Source};
use crate::attention::Tap;
use crate::cache::{KvCache, Scratch};
use crate::layers::{Bias, Embedding, LayerNorm, Linear, LmHead, Norm, WeightBytes};
use crate::{Error, Result};

/// The registry's loader: `config.json` read as a `GPT2Config`, the weights bound (with or without the
/// `transformer.` prefix).
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let c = Gpt2Config::from_raw(src.config)?;
    let file = src.config.path();
    if c.scale_attn_by_inverse_layer_idx || c.add_cross_attention {
        return Err(Error::Unsupported {
            what: format!(
                "{}: scale_attn_by_inverse_layer_idx and add_cross_attention (GPT-2 variants)",
                file.display()
            ),
        });
    }
    let activation = super::activation(file, "activation_function", &c.activation_function)?;
    let (bos, eos) = (c.bos_token_id, c.eos_token_id.clone());
    Ok(src.decoder_only(Gpt2::bind(src, c, activation)?, bos, eos))
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
    /// `config.json` (validated by the loaders: sizes positive, `n_head` dividing `n_embd`).
    c: Gpt2Config,
    activation: Activation,
    /// Multiplies `q·k`: `1/sqrt(head_dim)`, or 1 without `scale_attn_weights`.
    attn_scale: f32,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
}

impl Gpt2 {
    /// Bind the weights of a `GPT2LMHeadModel` checkpoint (with or without the `transformer.` prefix), the linear
    /// layers (the tied LM head included) held as `weights`.
    fn bind(src: &Source<'_>, c: Gpt2Config, activation: Activation) -> Result<(Self, LmHead)> {
        let (st, weights) = (src.weights, src.hold());
        let pre = if st.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let (d, ff) = (c.n_embd, c.inner_dim());
        let mut wte = Embedding::bind(st, &format!("{pre}wte"), c.vocab_size, d)?;
        let wpe = Embedding::bind(st, &format!("{pre}wpe"), c.n_positions, d)?;
        let mut blocks = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
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
            let eps = c.layer_norm_epsilon;
            blocks.push(Block {
                ln_1: LayerNorm::bind(st, &format!("{h}.ln_1"), d, eps)?,
                c_attn: conv("attn.c_attn", 3 * d, d)?,
                attn_proj: conv("attn.c_proj", d, d)?,
                ln_2: LayerNorm::bind(st, &format!("{h}.ln_2"), d, eps)?,
                c_fc: conv("mlp.c_fc", ff, d)?,
                mlp_proj: conv("mlp.c_proj", d, ff)?,
            });
        }
        let ln_f = LayerNorm::bind(st, &format!("{pre}ln_f"), d, c.layer_norm_epsilon)?;
        // The head is tied to wte unless the checkpoint has its own lm_head.
        // Packed as stored, a tied head is the one copy the lookups read too (quantized to int8 it is its own copy:
        // the lookups keep reading wte as stored).
        let lm_head = match wte.tensor() {
            Some(table) if !st.contains("lm_head.weight") => {
                Linear::from_tensor(st, table.clone(), c.vocab_size, d, Layout::OutIn, None)?
            }
            _ => Linear::bind(st, "lm_head", c.vocab_size, d, Layout::OutIn, Bias::None)?,
        }
        .convert(st, weights)?;
        wte.tie_to(&lm_head);
        let attn_scale = if c.scale_attn_weights {
            1.0 / (c.head_dim() as f32).sqrt()
        } else {
            1.0
        };
        let head = LmHead {
            norm: Some(Norm::Layer(ln_f)),
            linear: lm_head,
            softcap: None,
        };
        let gpt2 = Self {
            c,
            activation,
            attn_scale,
            wte,
            wpe,
            blocks,
        };
        Ok((gpt2, head))
    }
}

impl Blocks for Gpt2 {
    fn dims(&self) -> Dims {
        let c = &self.c;
        Dims {
            heads: Heads::new(c.n_head, c.head_dim()),
            hidden_size: c.n_embd,
            n_layers: c.n_layer,
            vocab_size: c.vocab_size,
            max_positions: c.n_positions,
        }
    }

    fn forward(&self, step: &Step<'_>, kv: &mut [KvCache], scratch: &mut Scratch, x: &mut [f32]) -> Result<()> {
        let c = &self.c;
        let Step { k, tokens, shape, .. } = *step;
        let (n, rows) = (shape.n, shape.rows());
        let (d, n_heads, ff, hd) = (c.n_embd, c.n_head, c.inner_dim(), c.head_dim());
        let ([xb, pos, qkv, att, hb], positions, attn) = scratch.take_with_ids(
            [
                rows * d,     // xb  [rows, d]
                rows * d,     // pos [rows, d]
                rows * 3 * d, // qkv [rows, 3, n_heads, hd]
                rows * d,     // att [rows, n_heads, hd]
                rows * ff,    // hb  [rows, ff]
            ],
            step.spans().flat_map(|s| s.pos0..s.pos0 + s.n),
        );

        // Token embeddings: x = wte[tokens]                                           [rows, d]
        self.wte.forward(k, tokens, 1.0, x)?;
        step.attn.tap(Tap::Embedded, x);
        // Learned positions: x += wpe[pos0 .. pos0 + n] of every sequence         [rows, d]
        self.wpe.forward(k, positions, 1.0, pos)?;
        k.add(x, pos);
        step.attn.tap(Tap::Positioned, x);
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
            step.append_kv(kv, &qkv[d..], &qkv[2 * d..], qkv_strides)?;
            // Causal attention over the cache                                    [rows, n_heads, hd]
            let args = |batch, n, kv_len| {
                AttnArgs::causal(Heads::new(n_heads, hd), batch, n, kv_len)
                    .with_scale(self.attn_scale)
                    .with_q_strides(qkv_strides)
            };
            step.attention(attn, kv, args, (qkv, 3 * d), (att, d));
            // Output projection and residual: x += c_proj(att)                          [rows, d]
            block.attn_proj.forward(k, att, rows, xb);
            k.add(x, xb);
            step.attn.tap(Tap::Attended, x);
            // Feed-forward input norm                                                  [rows, d]
            block.ln_2.forward(k, x, xb);
            // hb = act(c_fc(xb))                                                      [rows, ff]
            block.c_fc.forward(k, xb, rows, hb);
            k.activation(self.activation, hb);
            // Down projection and residual: x += c_proj(hb)                            [rows, d]
            block.mlp_proj.forward(k, hb, rows, xb);
            k.add(x, xb);
            step.attn.tap(Tap::Layer, x);
        }
        Ok(())
    }

    fn weight_bytes(&self, head: &LmHead) -> WeightBytes {
        let linears = self
            .blocks
            .iter()
            .flat_map(|b| [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj]);
        WeightBytes::of(linears.chain([&head.linear]), &[&self.wte, &self.wpe])
    }
}
