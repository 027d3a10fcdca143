//! The Llama family (Llama 2/3, SmolLM, TinyLlama, Mistral-style GQA): RMSNorm, rotary positions
//! (Hugging Face rotate-half layout), grouped-query attention, SwiGLU feed-forward, tied or untied head.

use kernels::{AttnArgs, Kernels, Layout, Mask, RopeLayout, RopeTable, Strides};

use crate::cache::{grow, KvCache, KvShape, DEFAULT_MAX_CACHE_BYTES};
use crate::layers::{Bias, Embedding, Linear, RmsNorm, TensorSource, WeightBytes, WeightType};
use crate::{Decoder, Error, Result};

/// The longest context a Llama model runs here (its RoPE table is precomputed up to it).
pub const MAX_CONTEXT: usize = 1 << 16;

/// The hyper-parameters the forward pass needs (from `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl TryFrom<&loaders::config::LlamaConfig> for LlamaParams {
    type Error = Error;

    /// The forward-pass parameters of a `config.json`; an error for what this engine does not run
    /// (another activation than SiLU, RoPE scaling).
    fn try_from(c: &loaders::config::LlamaConfig) -> Result<Self> {
        if c.hidden_act != "silu" {
            return Err(Error::Request(format!(
                "llama config: hidden_act {:?} is not supported (silu)",
                c.hidden_act
            )));
        }
        if let Some(r) = c.rope_scaling.as_ref().filter(|r| r.rope_type != "default") {
            return Err(Error::Request(format!(
                "llama config: rope scaling {:?} is not supported (only unscaled RoPE)",
                r.rope_type
            )));
        }
        Ok(Self {
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            n_layers: c.num_hidden_layers,
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            vocab_size: c.vocab_size,
            max_positions: c.max_position_embeddings,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta,
            tie_word_embeddings: c.tie_word_embeddings,
            attention_bias: c.attention_bias,
            mlp_bias: c.mlp_bias,
        })
    }
}

impl LlamaParams {
    /// An error naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Request(format!("llama config: {m}")));
        let p = self;
        if p.hidden_size == 0 || p.n_layers == 0 || p.n_heads == 0 || p.n_kv_heads == 0 || p.vocab_size == 0 {
            return bad(format!(
                "hidden_size {}, num_hidden_layers {}, num_attention_heads {}, num_key_value_heads {} and \
                 vocab_size {} must all be > 0",
                p.hidden_size, p.n_layers, p.n_heads, p.n_kv_heads, p.vocab_size
            ));
        }
        if !p.n_heads.is_multiple_of(p.n_kv_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                p.n_heads, p.n_kv_heads
            ));
        }
        if p.head_dim == 0 || !p.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even and > 0 (rotary pairs)", p.head_dim));
        }
        if !(p.rope_theta.is_finite() && p.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be > 0", p.rope_theta));
        }
        if p.max_positions == 0 {
            return bad("max_position_embeddings must be > 0".to_string());
        }
        Ok(())
    }
}

/// One transformer block.
#[derive(Debug)]
struct Layer {
    input_norm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attn_norm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// A Llama-family causal language model, weights bound zero-copy in their stored dtype.
#[derive(Debug)]
pub struct Llama {
    p: LlamaParams,
    kernels: Kernels,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RopeTable,
}

/// Scratch buffers of one generation: sized by the first (largest) step, then reused.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    hb: Vec<f32>,
    hb2: Vec<f32>,
    hb3: Vec<f32>,
    last: Vec<f32>,
}

/// The KV caches of every layer and the scratch buffers of one generation.
#[derive(Debug)]
pub struct LlamaCache {
    kv: Vec<KvCache>,
    scratch: Scratch,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// The last position of each sequence: `[batch, vocab]`.
    Last,
    /// Every position fed: `[batch, n, vocab]`.
    All,
}

impl Llama {
    /// Bind the weights of a `LlamaForCausalLM` checkpoint (HF names) and check every shape.
    pub fn new(st: &dyn TensorSource, p: &LlamaParams, kernels: Kernels) -> Result<Self> {
        Self::new_with(st, p, kernels, WeightType::Stored)
    }

    /// [`Llama::new`], with the linear layers (LM head included, tied or not) held as `weights`.
    pub fn new_with(st: &dyn TensorSource, p: &LlamaParams, kernels: Kernels, weights: WeightType) -> Result<Self> {
        p.validate()?;
        let (d, q_dim, kv_dim, ff) = (
            p.hidden_size,
            p.n_heads * p.head_dim,
            p.n_kv_heads * p.head_dim,
            p.intermediate_size,
        );
        let attn_bias = if p.attention_bias { Bias::Required } else { Bias::None };
        let mlp_bias = if p.mlp_bias { Bias::Required } else { Bias::None };
        let embed = Embedding::bind(st, "model.embed_tokens", p.vocab_size, d)?;
        let mut layers = Vec::with_capacity(p.n_layers);
        for l in 0..p.n_layers {
            let pre = format!("model.layers.{l}");
            let lin = |name: &str, out_dim, in_dim, bias| {
                Linear::bind(st, &format!("{pre}.{name}"), out_dim, in_dim, Layout::OutIn, bias)?.convert(st, weights)
            };
            layers.push(Layer {
                input_norm: RmsNorm::bind(st, &format!("{pre}.input_layernorm"), d, p.rms_norm_eps)?,
                q_proj: lin("self_attn.q_proj", q_dim, d, attn_bias)?,
                k_proj: lin("self_attn.k_proj", kv_dim, d, attn_bias)?,
                v_proj: lin("self_attn.v_proj", kv_dim, d, attn_bias)?,
                o_proj: lin("self_attn.o_proj", d, q_dim, attn_bias)?,
                post_attn_norm: RmsNorm::bind(st, &format!("{pre}.post_attention_layernorm"), d, p.rms_norm_eps)?,
                gate_proj: lin("mlp.gate_proj", ff, d, mlp_bias)?,
                up_proj: lin("mlp.up_proj", ff, d, mlp_bias)?,
                down_proj: lin("mlp.down_proj", d, ff, mlp_bias)?,
            });
        }
        let norm = RmsNorm::bind(st, "model.norm", d, p.rms_norm_eps)?;
        // An lm_head tensor wins over tie_word_embeddings (HF saves it when the head is untied).
        // A tied head quantized to int8 is its own copy: the lookups keep reading the stored table.
        let lm_head = if st.contains("lm_head.weight") || !p.tie_word_embeddings {
            Linear::bind(st, "lm_head", p.vocab_size, d, Layout::OutIn, Bias::None)?
        } else {
            Linear::from_tensor(st, embed.tensor().clone(), p.vocab_size, d, Layout::OutIn, None)?
        }
        .convert(st, weights)?;
        // The RoPE table covers the context this engine runs (at most MAX_CONTEXT positions).
        let rope = RopeTable::new(p.head_dim, p.max_positions.min(MAX_CONTEXT), p.rope_theta);
        Ok(Self {
            p: p.clone(),
            kernels,
            embed,
            layers,
            norm,
            lm_head,
            rope,
        })
    }

    pub fn params(&self) -> &LlamaParams {
        &self.p
    }

    /// Bytes of the weights this model reads (norm gains and biases aside).
    pub fn weight_bytes(&self) -> WeightBytes {
        let linears = self.layers.iter().flat_map(|l| {
            [
                &l.q_proj,
                &l.k_proj,
                &l.v_proj,
                &l.o_proj,
                &l.gate_proj,
                &l.up_proj,
                &l.down_proj,
            ]
        });
        WeightBytes::of(linears.chain([&self.lm_head]), &[&self.embed])
    }

    /// Longest sequence (prompt + generated) the model can position.
    pub fn max_positions(&self) -> usize {
        self.rope.max_pos
    }

    /// A cache for `batch` sequences of up to `capacity` positions each.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<LlamaCache> {
        if capacity > self.max_positions() {
            return Err(Error::Request(format!(
                "{capacity} positions asked for, the model runs at most {} (max_position_embeddings, capped \
                 at {MAX_CONTEXT})",
                self.max_positions()
            )));
        }
        let shape = KvShape {
            max_batch: batch,
            n_kv_heads: self.p.n_kv_heads,
            capacity,
            head_dim: self.p.head_dim,
        };
        Ok(LlamaCache {
            kv: KvCache::for_layers(self.p.n_layers, shape, batch, DEFAULT_MAX_CACHE_BYTES)?,
            scratch: Scratch::default(),
        })
    }

    /// Feed `tokens` (`[batch, n]`) after the cached positions and write logits (see [`LogitsFor`]).
    pub fn forward(
        &self,
        cache: &mut LlamaCache,
        tokens: &[u32],
        n: usize,
        which: LogitsFor,
        logits: &mut [f32],
    ) -> Result<()> {
        let p = &self.p;
        let k = &self.kernels;
        let batch = cache.kv.first().map_or(0, KvCache::batch);
        let rows = batch * n;
        let (d, hd, n_heads, n_kv) = (p.hidden_size, p.head_dim, p.n_heads, p.n_kv_heads);
        let (q_dim, kv_dim, ff) = (n_heads * hd, n_kv * hd, p.intermediate_size);
        check_step(tokens, batch, n, which, logits, p.vocab_size)?;
        let pos0 = cache.kv.first().map_or(0, KvCache::len);
        if let Some(c) = cache.kv.first() {
            c.check_room(n)?;
        }
        let s = &mut cache.scratch;
        let x = grow(&mut s.x, rows * d); // [rows, d] residual stream
        let xb = grow(&mut s.xb, rows * d); // [rows, d]
        let q = grow(&mut s.q, rows * q_dim); // [rows, n_heads, hd]
        let kb = grow(&mut s.k, rows * kv_dim); // [rows, n_kv_heads, hd]
        let vb = grow(&mut s.v, rows * kv_dim); // [rows, n_kv_heads, hd]
        let att = grow(&mut s.att, rows * q_dim); // [rows, n_heads, hd]
        let hb = grow(&mut s.hb, rows * ff); // [rows, ff]
        let hb2 = grow(&mut s.hb2, rows * ff); // [rows, ff]
        let hb3 = grow(&mut s.hb3, rows * ff); // [rows, ff]

        // Token embeddings: x = embed_tokens[tokens]                                  [rows, d]
        self.embed.forward(k, tokens, 1.0, x)?;
        for (layer, kv) in self.layers.iter().zip(cache.kv.iter_mut()) {
            // Attention input norm                                                     [rows, d]
            layer.input_norm.forward(k, x, xb);
            // Projections: q [rows, n_heads, hd], k and v [rows, n_kv_heads, hd]
            layer.q_proj.forward(k, xb, rows, q);
            layer.k_proj.forward(k, xb, rows, kb);
            layer.v_proj.forward(k, xb, rows, vb);
            // Rotary positions pos0 .. pos0 + n, per sequence
            for (qs, ks) in q.chunks_exact_mut(n * q_dim).zip(kb.chunks_exact_mut(n * kv_dim)) {
                k.rope(&self.rope, RopeLayout::Half, qs, n_heads, pos0); // [n, n_heads, hd]
                k.rope(&self.rope, RopeLayout::Half, ks, n_kv, pos0); // [n, n_kv_heads, hd]
            }
            // Append k, v to the cache                                 [batch, n_kv_heads, pos0 + n, hd]
            kv.append(kb, vb, n)?;
            // Causal grouped-query attention over the cache                      [rows, n_heads, hd]
            let args = AttnArgs {
                batch,
                n_heads,
                n_kv_heads: n_kv,
                head_dim: hd,
                q_len: n,
                kv_len: kv.len(),
                scale: 1.0 / (hd as f32).sqrt(),
                mask: Mask::Causal { q_offset: pos0 },
                key_lens: None,
                q_strides: Strides::token_major(n, n_heads, hd),
                kv_strides: kv.strides(),
                out_strides: Strides::token_major(n, n_heads, hd),
            };
            k.attention(&args, q, kv.k(), kv.v(), att);
            // Output projection and residual: x += o_proj(att)                          [rows, d]
            layer.o_proj.forward(k, att, rows, xb);
            k.add(x, xb);
            // Feed-forward input norm                                                  [rows, d]
            layer.post_attn_norm.forward(k, x, xb);
            // SwiGLU: hb3 = silu(gate(xb)) * up(xb)                                    [rows, ff]
            layer.gate_proj.forward(k, xb, rows, hb);
            layer.up_proj.forward(k, xb, rows, hb2);
            k.swiglu(hb, hb2, hb3);
            // Down projection and residual: x += down(hb3)                             [rows, d]
            layer.down_proj.forward(k, hb3, rows, xb);
            k.add(x, xb);
        }
        // Final norm and LM head, on the rows that need logits
        match which {
            LogitsFor::All => {
                self.norm.forward(k, x, xb); // [rows, d]
                self.lm_head.forward(k, xb, rows, logits); // [rows, vocab]
            }
            LogitsFor::Last => {
                let last = grow(&mut s.last, batch * d); // [batch, d]
                for b in 0..batch {
                    let t = (b * n + n - 1) * d;
                    self.norm.forward(k, &x[t..t + d], &mut last[b * d..(b + 1) * d]);
                }
                self.lm_head.forward(k, last, batch, logits); // [batch, vocab]
            }
        }
        Ok(())
    }
}

/// Check the shapes of one step against the cache and the logits buffer.
pub(crate) fn check_step(
    tokens: &[u32],
    batch: usize,
    n: usize,
    which: LogitsFor,
    logits: &[f32],
    vocab: usize,
) -> Result<()> {
    if batch == 0 || n == 0 || tokens.len() != batch * n {
        return Err(Error::Request(format!(
            "step: {} tokens given, expected batch {batch} x n {n} (both > 0)",
            tokens.len()
        )));
    }
    let rows = match which {
        LogitsFor::Last => batch,
        LogitsFor::All => batch * n,
    };
    if logits.len() != rows * vocab {
        return Err(Error::Request(format!(
            "step: logits buffer holds {} values, expected {rows} x vocab {vocab}",
            logits.len()
        )));
    }
    Ok(())
}

impl Decoder for Llama {
    type Cache = LlamaCache;

    fn vocab_size(&self) -> usize {
        self.p.vocab_size
    }

    fn step(&self, cache: &mut LlamaCache, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        crate::decoder::on_pool(|| self.forward(cache, tokens, n, LogitsFor::Last, logits))
    }

    fn reorder(&self, cache: &mut LlamaCache, src: &[usize]) -> Result<()> {
        cache.kv.iter_mut().try_for_each(|c| c.reorder(src))
    }

    fn cached_len(&self, cache: &LlamaCache) -> usize {
        cache.kv.first().map_or(0, KvCache::len)
    }
}
