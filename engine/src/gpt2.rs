//! GPT-2: learned positions, pre-LayerNorm blocks, fused QKV (`c_attn`), `gelu_new`, tied head.
//!
//! GPT-2's `Conv1D` weights are stored `[in, out]`; they are bound as `Layout::InOut` and read in
//! place (no transposed copy), unless quantized to int8 (then transposed once, at load).

use kernels::{Activation, AttnArgs, Kernels, Layout, Mask, Strides};

use crate::cache::{grow, KvCache, KvShape, DEFAULT_MAX_CACHE_BYTES};
use crate::layers::{Bias, Embedding, LayerNorm, Linear, TensorSource, WeightBytes, WeightType};
use crate::llama::{check_step, LogitsFor};
use crate::{Decoder, Error, Result};

/// The hyper-parameters the forward pass needs (from `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Params {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Feed-forward width (`n_inner`, default `4 * n_embd`).
    pub n_inner: usize,
    pub layer_norm_epsilon: f32,
    pub activation: Activation,
    pub scale_attn_weights: bool,
}

impl TryFrom<&loaders::config::Gpt2Config> for Gpt2Params {
    type Error = Error;

    /// The forward-pass parameters of a `config.json`; an error for the variants this engine does not run.
    fn try_from(c: &loaders::config::Gpt2Config) -> Result<Self> {
        if c.scale_attn_by_inverse_layer_idx || c.add_cross_attention {
            return Err(Error::Request(
                "gpt2 config: scale_attn_by_inverse_layer_idx and add_cross_attention are not supported".to_string(),
            ));
        }
        Ok(Self {
            vocab_size: c.vocab_size,
            n_positions: c.n_positions,
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_inner: c.inner_dim(),
            layer_norm_epsilon: c.layer_norm_epsilon,
            activation: Self::activation_from_name(&c.activation_function)?,
            scale_attn_weights: c.scale_attn_weights,
        })
    }
}

impl Gpt2Params {
    /// The activation named by `activation_function`.
    pub fn activation_from_name(name: &str) -> Result<Activation> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(Error::Request(format!(
                "gpt2 config: activation_function {other:?} is not supported (gelu_new, gelu, relu, silu)"
            ))),
        }
    }

    /// An error naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let p = self;
        if p.n_embd == 0 || p.n_layer == 0 || p.n_head == 0 || p.vocab_size == 0 || p.n_inner == 0 {
            return Err(Error::Request(format!(
                "gpt2 config: n_embd {}, n_layer {}, n_head {}, n_inner {} and vocab_size {} must all be > 0",
                p.n_embd, p.n_layer, p.n_head, p.n_inner, p.vocab_size
            )));
        }
        if !p.n_embd.is_multiple_of(p.n_head) {
            return Err(Error::Request(format!(
                "gpt2 config: n_embd {} is not a multiple of n_head {}",
                p.n_embd, p.n_head
            )));
        }
        Ok(())
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
pub struct Gpt2 {
    p: Gpt2Params,
    kernels: Kernels,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
}

/// Scratch buffers of one generation: sized by the first (largest) step, then reused.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    xb: Vec<f32>,
    pos: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    hb: Vec<f32>,
    last: Vec<f32>,
    ids: Vec<u32>,
}

/// The KV caches of every layer and the scratch buffers of one generation.
#[derive(Debug)]
pub struct Gpt2Cache {
    kv: Vec<KvCache>,
    scratch: Scratch,
}

impl Gpt2 {
    /// Bind the weights of a `GPT2LMHeadModel` checkpoint (with or without the `transformer.` prefix).
    pub fn new(st: &dyn TensorSource, p: &Gpt2Params, kernels: Kernels) -> Result<Self> {
        Self::new_with(st, p, kernels, WeightType::Stored)
    }

    /// [`Gpt2::new`], with the linear layers (the tied LM head included) held as `weights`.
    pub fn new_with(st: &dyn TensorSource, p: &Gpt2Params, kernels: Kernels, weights: WeightType) -> Result<Self> {
        p.validate()?;
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
            kernels,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    pub fn params(&self) -> &Gpt2Params {
        &self.p
    }

    /// Bytes of the weights this model reads (norm gains and biases aside).
    pub fn weight_bytes(&self) -> WeightBytes {
        let linears = self
            .blocks
            .iter()
            .flat_map(|b| [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj]);
        WeightBytes::of(linears.chain([&self.lm_head]), &[&self.wte, &self.wpe])
    }

    /// Longest sequence (prompt + generated) the model can position.
    pub fn max_positions(&self) -> usize {
        self.p.n_positions
    }

    /// A cache for `batch` sequences of up to `capacity` positions each.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<Gpt2Cache> {
        if capacity > self.p.n_positions {
            return Err(Error::Request(format!(
                "{capacity} positions asked for, the model has {} (n_positions)",
                self.p.n_positions
            )));
        }
        let shape = KvShape {
            max_batch: batch,
            n_kv_heads: self.p.n_head,
            capacity,
            head_dim: self.p.n_embd / self.p.n_head,
        };
        Ok(Gpt2Cache {
            kv: KvCache::for_layers(self.p.n_layer, shape, batch, DEFAULT_MAX_CACHE_BYTES)?,
            scratch: Scratch::default(),
        })
    }

    /// Feed `tokens` (`[batch, n]`) after the cached positions and write logits (see [`LogitsFor`]).
    pub fn forward(
        &self,
        cache: &mut Gpt2Cache,
        tokens: &[u32],
        n: usize,
        which: LogitsFor,
        logits: &mut [f32],
    ) -> Result<()> {
        let p = &self.p;
        let k = &self.kernels;
        let batch = cache.kv.first().map_or(0, KvCache::batch);
        let rows = batch * n;
        let (d, n_heads, ff) = (p.n_embd, p.n_head, p.n_inner);
        let hd = d / n_heads;
        check_step(tokens, batch, n, which, logits, p.vocab_size)?;
        let pos0 = cache.kv.first().map_or(0, KvCache::len);
        if let Some(c) = cache.kv.first() {
            c.check_room(n)?;
        }
        let s = &mut cache.scratch;
        let x = grow(&mut s.x, rows * d); // [rows, d] residual stream
        let xb = grow(&mut s.xb, rows * d); // [rows, d]
        let pos = grow(&mut s.pos, n * d); // [n, d]
        let qkv = grow(&mut s.qkv, rows * 3 * d); // [rows, 3, n_heads, hd]
        let att = grow(&mut s.att, rows * d); // [rows, n_heads, hd]
        let hb = grow(&mut s.hb, rows * ff); // [rows, ff]

        // Token embeddings: x = wte[tokens]                                           [rows, d]
        self.wte.forward(k, tokens, 1.0, x)?;
        // Learned positions: x += wpe[pos0 .. pos0 + n] for every sequence           [n, d]
        s.ids.clear();
        s.ids.extend((pos0..pos0 + n).map(|t| t as u32));
        self.wpe.forward(k, &s.ids, 1.0, pos)?;
        for b in 0..batch {
            k.add(&mut x[b * n * d..(b + 1) * n * d], pos);
        }
        // q, k and v sit side by side in each row of the fused projection.
        let qkv_strides = Strides {
            batch: n * 3 * d,
            pos: 3 * d,
            head: hd,
        };
        for (block, kv) in self.blocks.iter().zip(cache.kv.iter_mut()) {
            // Attention input norm                                                     [rows, d]
            block.ln_1.forward(k, x, xb);
            // Fused projection: qkv = c_attn(xb)                                    [rows, 3 * d]
            block.c_attn.forward(k, xb, rows, qkv);
            // Append k, v to the cache                                    [batch, n_heads, pos0 + n, hd]
            kv.append_strided(&qkv[d..], &qkv[2 * d..], qkv_strides, n)?;
            // Causal attention over the cache                                    [rows, n_heads, hd]
            let args = AttnArgs {
                batch,
                n_heads,
                n_kv_heads: n_heads,
                head_dim: hd,
                q_len: n,
                kv_len: kv.len(),
                scale: if p.scale_attn_weights {
                    1.0 / (hd as f32).sqrt()
                } else {
                    1.0
                },
                mask: Mask::Causal { q_offset: pos0 },
                key_lens: None,
                q_strides: qkv_strides,
                kv_strides: kv.strides(),
                out_strides: Strides::token_major(n, n_heads, hd),
            };
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
        // Final norm and LM head, on the rows that need logits
        match which {
            LogitsFor::All => {
                self.ln_f.forward(k, x, xb); // [rows, d]
                self.lm_head.forward(k, xb, rows, logits); // [rows, vocab]
            }
            LogitsFor::Last => {
                let last = grow(&mut s.last, batch * d); // [batch, d]
                for b in 0..batch {
                    let t = (b * n + n - 1) * d;
                    self.ln_f.forward(k, &x[t..t + d], &mut last[b * d..(b + 1) * d]);
                }
                self.lm_head.forward(k, last, batch, logits); // [batch, vocab]
            }
        }
        Ok(())
    }
}

impl Decoder for Gpt2 {
    type Cache = Gpt2Cache;

    fn vocab_size(&self) -> usize {
        self.p.vocab_size
    }

    fn step(&self, cache: &mut Gpt2Cache, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        crate::decoder::on_pool(|| self.forward(cache, tokens, n, LogitsFor::Last, logits))
    }

    fn reorder(&self, cache: &mut Gpt2Cache, src: &[usize]) -> Result<()> {
        cache.kv.iter_mut().try_for_each(|c| c.reorder(src))
    }

    fn cached_len(&self, cache: &Gpt2Cache) -> usize {
        cache.kv.first().map_or(0, KvCache::len)
    }
}
