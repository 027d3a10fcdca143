//! Encoder-decoder Transformers: one runtime, configured for Hugging Face Marian (opus-mt) or for the
//! OpenNMT / CTranslate2 pre-norm Transformer.
//!
//! | | Marian | CTranslate2 `TransformerBase` |
//! |---|---|---|
//! | norms | post-norm ([`NormPlacement::PostNorm`]) | pre-norm + final norms ([`NormPlacement::PreNorm`]) |
//! | positions | sinusoid ([`Sinusoid::Marian`]) from 0 | sinusoid ([`Sinusoid::Tensor2Tensor`]) from 1 |
//! | self-attention | `q_proj`, `k_proj`, `v_proj` | fused `linear_0` `[3d, d]` = q\|k\|v |
//! | cross-attention | `q_proj`, `k_proj`, `v_proj` | `linear_0` = q, fused `linear_1` `[2d, d]` = k\|v |
//! | LM head | tied embeddings + `final_logits_bias` | `decoder/projection` with bias |
//!
//! The path of one batch: the sources run through the encoder once ([`Seq2Seq::start`]), which also
//! projects the encoder output to each decoder layer's cross-attention K and V — once per source, kept
//! in the [`Seq2SeqState`] and shared by every beam of that source (a beam row only stores the index of
//! its source). Each [`Decoder::step`] then appends to the preallocated self-attention caches in place.

use std::sync::atomic::{AtomicUsize, Ordering};

use kernels::{sinusoidal_table, Activation, AttnArgs, Kernels, Layout, Mask, Sinusoid, Strides};

use crate::cache::{KvCache, KvShape, DEFAULT_MAX_CACHE_BYTES};
use crate::decoder::Decoder;
use crate::layers::{Bias, Embedding, LayerNorm, Linear, TensorSource, WeightBytes, WeightType};
use crate::{Error, Result};

/// Self-attention caches start with room for `INITIAL_CACHE_FACTOR * source length + INITIAL_CACHE_EXTRA`
/// positions (translations are rarely longer), and grow by doubling up to the requested maximum.
const INITIAL_CACHE_FACTOR: usize = 2;
const INITIAL_CACHE_EXTRA: usize = 16;

/// Where the layer norm sits in a residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x = x + f(norm(x))`, with a final norm after the last layer (OpenNMT, CTranslate2).
    PreNorm,
    /// `x = norm(x + f(x))` (Marian, BART, the original Transformer).
    PostNorm,
}

/// Which tensor names (and fused projections) the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightNames {
    /// Hugging Face `MarianMTModel`: `model.encoder.layers.{l}.self_attn.q_proj.weight`, ...
    Marian,
    /// CTranslate2 spec names: `encoder/layer_{l}/self_attention/linear_0/weight`, ...
    Ct2,
}

/// Sinusoidal position encodings: which table, and the position of the first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Positions {
    pub kind: Sinusoid,
    /// 0 for Marian, 1 for OpenNMT / CTranslate2.
    pub first: usize,
    /// Positions available (per sequence, encoder and decoder alike).
    pub max: usize,
}

/// Everything the runtime needs to know about an encoder-decoder model (built from the model's
/// config file by [`crate::translate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqConfig {
    pub names: WeightNames,
    pub d_model: usize,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    pub n_encoder_heads: usize,
    pub n_decoder_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub activation: Activation,
    pub norm: NormPlacement,
    pub layer_norm_eps: f32,
    /// Multiplies token embeddings (`sqrt(d_model)` for both families, 1 when Marian's `scale_embedding` is off).
    pub embed_scale: f32,
    pub positions: Positions,
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    /// Marian: the LM head is the decoder embedding table (`tie_word_embeddings`).
    pub tied_lm_head: bool,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

impl Seq2SeqConfig {
    /// Check the dimensions fit together (the loaders validated each field; this checks the runtime's needs).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Request(format!("encoder-decoder config: {msg}")));
        if self.d_model == 0 || self.src_vocab_size == 0 || self.tgt_vocab_size == 0 {
            return bad("d_model and vocabulary sizes must be positive".into());
        }
        for (what, heads) in [("encoder", self.n_encoder_heads), ("decoder", self.n_decoder_heads)] {
            if heads == 0 || !self.d_model.is_multiple_of(heads) {
                return bad(format!(
                    "d_model {} is not divisible by {heads} {what} heads",
                    self.d_model
                ));
            }
        }
        if self.n_encoder_layers == 0 || self.n_decoder_layers == 0 {
            return bad("the encoder and the decoder need at least one layer".into());
        }
        for (what, id) in [
            ("decoder_start_token_id", self.decoder_start_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if id as usize >= self.tgt_vocab_size {
                return bad(format!(
                    "{what} {id} is outside the target vocabulary ({})",
                    self.tgt_vocab_size
                ));
            }
        }
        if self.positions.max == 0 {
            return bad("no positions".into());
        }
        Ok(())
    }
}

/// The q, k and v projections of a self-attention block.
#[derive(Debug)]
enum QkvProj {
    /// Three `[d, d]` matrices (Marian).
    Separate(Box<[Linear; 3]>),
    /// One `[3d, d]` matrix whose output rows are q | k | v (CTranslate2).
    Fused(Linear),
}

/// The k and v projections of a cross-attention block.
#[derive(Debug)]
enum KvProj {
    /// Two `[d, d]` matrices (Marian).
    Separate(Box<[Linear; 2]>),
    /// One `[2d, d]` matrix whose output rows are k | v.
    Fused(Linear),
}

/// Where q, k and v lie in one buffer of `3 * rows * d` (separate projections) or `rows * 3d` (fused),
/// so that neither layout is copied: offsets of each and their shared position stride.
#[derive(Clone, Copy, Debug)]
struct Packed {
    q: usize,
    k: usize,
    v: usize,
    pos: usize,
}

impl QkvProj {
    fn linears(&self) -> Vec<&Linear> {
        match self {
            QkvProj::Separate(qkv) => qkv.iter().collect(),
            QkvProj::Fused(w) => vec![w],
        }
    }

    /// Project `x[rows, d]` into `out` (`3 * rows * d`) and say where q, k and v are.
    fn forward(&self, k: &Kernels, x: &[f32], rows: usize, d: usize, out: &mut [f32]) -> Packed {
        match self {
            QkvProj::Separate(qkv) => {
                let [q, kp, v] = &**qkv;
                let n = rows * d;
                q.forward(k, x, rows, &mut out[..n]);
                kp.forward(k, x, rows, &mut out[n..2 * n]);
                v.forward(k, x, rows, &mut out[2 * n..3 * n]);
                Packed {
                    q: 0,
                    k: n,
                    v: 2 * n,
                    pos: d,
                }
            }
            QkvProj::Fused(w) => {
                w.forward(k, x, rows, &mut out[..3 * rows * d]);
                Packed {
                    q: 0,
                    k: d,
                    v: 2 * d,
                    pos: 3 * d,
                }
            }
        }
    }
}

impl KvProj {
    fn linears(&self) -> Vec<&Linear> {
        match self {
            KvProj::Separate(kv) => kv.iter().collect(),
            KvProj::Fused(w) => vec![w],
        }
    }

    /// Project `x[rows, d]` into `out` (`2 * rows * d`); returns (k offset, v offset, position stride).
    fn forward(&self, k: &Kernels, x: &[f32], rows: usize, d: usize, out: &mut [f32]) -> (usize, usize, usize) {
        match self {
            KvProj::Separate(kv) => {
                let [kp, v] = &**kv;
                let n = rows * d;
                kp.forward(k, x, rows, &mut out[..n]);
                v.forward(k, x, rows, &mut out[n..2 * n]);
                (0, n, d)
            }
            KvProj::Fused(w) => {
                w.forward(k, x, rows, &mut out[..2 * rows * d]);
                (0, d, 2 * d)
            }
        }
    }
}

#[derive(Debug)]
struct SelfAttention {
    norm: LayerNorm,
    qkv: QkvProj,
    out: Linear,
}

#[derive(Debug)]
struct CrossAttention {
    norm: LayerNorm,
    q: Linear,
    kv: KvProj,
    out: Linear,
}

#[derive(Debug)]
struct FeedForward {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

#[derive(Debug)]
struct EncoderLayer {
    attn: SelfAttention,
    ffn: FeedForward,
}

#[derive(Debug)]
struct DecoderLayer {
    attn: SelfAttention,
    cross: CrossAttention,
    ffn: FeedForward,
}

/// An encoder-decoder model with its weights bound (zero-copy) and its position table.
#[derive(Debug)]
pub struct Seq2Seq {
    cfg: Seq2SeqConfig,
    kernels: Kernels,
    src_embed: Embedding,
    tgt_embed: Embedding,
    /// `[positions.max, d_model]`, row `p` = position `positions.first + p`.
    pos_table: Vec<f32>,
    encoder: Vec<EncoderLayer>,
    encoder_norm: Option<LayerNorm>,
    decoder: Vec<DecoderLayer>,
    decoder_norm: Option<LayerNorm>,
    lm_head: Linear,
    /// Counts source-rows × decoder-layers projected to cross-attention K/V (tests check it is done once).
    cross_projections: AtomicUsize,
}

/// Tensor names of one family.
struct Names {
    names: WeightNames,
}

impl Names {
    fn enc(&self, l: usize, part: &str) -> String {
        match self.names {
            WeightNames::Marian => format!("model.encoder.layers.{l}.{part}"),
            WeightNames::Ct2 => format!("encoder/layer_{l}/{part}"),
        }
    }

    fn dec(&self, l: usize, part: &str) -> String {
        match self.names {
            WeightNames::Marian => format!("model.decoder.layers.{l}.{part}"),
            WeightNames::Ct2 => format!("decoder/layer_{l}/{part}"),
        }
    }
}

impl Seq2Seq {
    /// Bind every weight of `cfg` from `st` (shapes checked against the config, stored dtype kept).
    pub fn load(st: &dyn TensorSource, cfg: Seq2SeqConfig, kernels: Kernels) -> Result<Self> {
        Self::load_with(st, cfg, kernels, WeightType::Stored)
    }

    /// [`Seq2Seq::load`], with the linear layers (the LM head included, tied or not) held as `weights`.
    pub fn load_with(st: &dyn TensorSource, cfg: Seq2SeqConfig, kernels: Kernels, weights: WeightType) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.d_model;
        let eps = cfg.layer_norm_eps;
        let n = Names { names: cfg.names };
        let lin = |name: &str, out_dim: usize, in_dim: usize| {
            Linear::bind(st, name, out_dim, in_dim, Layout::OutIn, Bias::Required)?.convert(st, weights)
        };
        // Marian: `<prefix>.weight` / `<prefix>.bias`; CTranslate2: `<prefix>/gamma` / `<prefix>/beta`
        let norm = |prefix: &str| match cfg.names {
            WeightNames::Marian => LayerNorm::bind(st, prefix, d, eps),
            WeightNames::Ct2 => Ok(LayerNorm {
                gamma: float_vector(st, &format!("{prefix}/gamma"), d)?,
                beta: float_vector(st, &format!("{prefix}/beta"), d)?,
                eps,
            }),
        };

        let (src_embed, tgt_embed, encoder, encoder_norm, decoder, decoder_norm, lm_head) = match cfg.names {
            WeightNames::Marian => {
                // embeddings: per side when not shared, else `model.shared`
                let pick = |side: &str| {
                    let own = format!("model.{side}.embed_tokens.weight");
                    if st.contains(&own) {
                        own
                    } else {
                        "model.shared.weight".to_string()
                    }
                };
                let src_embed = Embedding::bind(st, &pick("encoder"), cfg.src_vocab_size, d)?;
                let tgt_embed = Embedding::bind(st, &pick("decoder"), cfg.tgt_vocab_size, d)?;
                let self_attn = |name: &dyn Fn(&str) -> String| -> Result<SelfAttention> {
                    Ok(SelfAttention {
                        norm: norm(&name("self_attn_layer_norm"))?,
                        qkv: QkvProj::Separate(Box::new([
                            lin(&name("self_attn.q_proj"), d, d)?,
                            lin(&name("self_attn.k_proj"), d, d)?,
                            lin(&name("self_attn.v_proj"), d, d)?,
                        ])),
                        out: lin(&name("self_attn.out_proj"), d, d)?,
                    })
                };
                let ffn = |name: &dyn Fn(&str) -> String, ffn_dim: usize| -> Result<FeedForward> {
                    Ok(FeedForward {
                        norm: norm(&name("final_layer_norm"))?,
                        up: lin(&name("fc1"), ffn_dim, d)?,
                        down: lin(&name("fc2"), d, ffn_dim)?,
                    })
                };
                let encoder = (0..cfg.n_encoder_layers)
                    .map(|l| {
                        let name = |p: &str| n.enc(l, p);
                        Ok(EncoderLayer {
                            attn: self_attn(&name)?,
                            ffn: ffn(&name, cfg.encoder_ffn_dim)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let decoder = (0..cfg.n_decoder_layers)
                    .map(|l| {
                        let name = |p: &str| n.dec(l, p);
                        Ok(DecoderLayer {
                            attn: self_attn(&name)?,
                            cross: CrossAttention {
                                norm: norm(&name("encoder_attn_layer_norm"))?,
                                q: lin(&name("encoder_attn.q_proj"), d, d)?,
                                kv: KvProj::Separate(Box::new([
                                    lin(&name("encoder_attn.k_proj"), d, d)?,
                                    lin(&name("encoder_attn.v_proj"), d, d)?,
                                ])),
                                out: lin(&name("encoder_attn.out_proj"), d, d)?,
                            },
                            ffn: ffn(&name, cfg.decoder_ffn_dim)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                // LM head: the decoder embeddings (tied) or `lm_head`, plus `final_logits_bias` (zeros if absent)
                let bias = if st.contains("final_logits_bias") {
                    st.get_shaped("final_logits_bias", &[1, cfg.tgt_vocab_size])?
                        .to_f32_vec()
                } else {
                    vec![0.0; cfg.tgt_vocab_size]
                };
                let head = if cfg.tied_lm_head {
                    tgt_embed.tensor().clone()
                } else {
                    st.get_shaped("lm_head.weight", &[cfg.tgt_vocab_size, d])?
                };
                let lm_head = Linear::from_tensor(st, head, cfg.tgt_vocab_size, d, Layout::OutIn, Some(bias))?
                    .convert(st, weights)?;
                (src_embed, tgt_embed, encoder, None, decoder, None, lm_head)
            }
            WeightNames::Ct2 => {
                let src_embed = Embedding::bind(st, "encoder/embeddings/weight", cfg.src_vocab_size, d)?;
                let tgt_embed = Embedding::bind(st, "decoder/embeddings/weight", cfg.tgt_vocab_size, d)?;
                let self_attn = |name: &dyn Fn(&str) -> String| -> Result<SelfAttention> {
                    Ok(SelfAttention {
                        norm: norm(&name("self_attention/layer_norm"))?,
                        qkv: QkvProj::Fused(lin(&name("self_attention/linear_0/weight"), 3 * d, d)?),
                        out: lin(&name("self_attention/linear_1/weight"), d, d)?,
                    })
                };
                let ffn = |name: &dyn Fn(&str) -> String, ffn_dim: usize| -> Result<FeedForward> {
                    Ok(FeedForward {
                        norm: norm(&name("ffn/layer_norm"))?,
                        up: lin(&name("ffn/linear_0/weight"), ffn_dim, d)?,
                        down: lin(&name("ffn/linear_1/weight"), d, ffn_dim)?,
                    })
                };
                let encoder = (0..cfg.n_encoder_layers)
                    .map(|l| {
                        let name = |p: &str| n.enc(l, p);
                        Ok(EncoderLayer {
                            attn: self_attn(&name)?,
                            ffn: ffn(&name, cfg.encoder_ffn_dim)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let decoder = (0..cfg.n_decoder_layers)
                    .map(|l| {
                        let name = |p: &str| n.dec(l, p);
                        Ok(DecoderLayer {
                            attn: self_attn(&name)?,
                            cross: CrossAttention {
                                norm: norm(&name("attention/layer_norm"))?,
                                q: lin(&name("attention/linear_0/weight"), d, d)?,
                                kv: KvProj::Fused(lin(&name("attention/linear_1/weight"), 2 * d, d)?),
                                out: lin(&name("attention/linear_2/weight"), d, d)?,
                            },
                            ffn: ffn(&name, cfg.decoder_ffn_dim)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let lm_head = if cfg.tied_lm_head {
                    let bias = Some(vec![0.0; cfg.tgt_vocab_size]);
                    Linear::from_tensor(
                        st,
                        tgt_embed.tensor().clone(),
                        cfg.tgt_vocab_size,
                        d,
                        Layout::OutIn,
                        bias,
                    )?
                    .convert(st, weights)?
                } else {
                    lin("decoder/projection/weight", cfg.tgt_vocab_size, d)?
                };
                (
                    src_embed,
                    tgt_embed,
                    encoder,
                    Some(norm("encoder/layer_norm")?),
                    decoder,
                    Some(norm("decoder/layer_norm")?),
                    lm_head,
                )
            }
        };
        // pre-norm models end each stack with a norm; post-norm ones already normalised the last output
        let (encoder_norm, decoder_norm) = match cfg.norm {
            NormPlacement::PreNorm => (encoder_norm, decoder_norm),
            NormPlacement::PostNorm => (None, None),
        };
        let pos_table = sinusoidal_table(cfg.positions.kind, cfg.positions.max, d, cfg.positions.first);
        Ok(Self {
            cfg,
            kernels,
            src_embed,
            tgt_embed,
            pos_table,
            encoder,
            encoder_norm,
            decoder,
            decoder_norm,
            lm_head,
            cross_projections: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    /// Bytes of the weights this model reads (norm gains and biases aside).
    pub fn weight_bytes(&self) -> WeightBytes {
        let mut linears: Vec<&Linear> = vec![&self.lm_head];
        for l in &self.encoder {
            linears.extend(l.attn.qkv.linears());
            linears.extend([&l.attn.out, &l.ffn.up, &l.ffn.down]);
        }
        for l in &self.decoder {
            linears.extend(l.attn.qkv.linears());
            linears.extend(l.cross.kv.linears());
            linears.extend([&l.attn.out, &l.cross.q, &l.cross.out, &l.ffn.up, &l.ffn.down]);
        }
        // a shared table (Marian's `model.shared`) counts once
        if self.src_embed.tensor().name() == self.tgt_embed.tensor().name() {
            WeightBytes::of(linears, &[&self.src_embed])
        } else {
            WeightBytes::of(linears, &[&self.src_embed, &self.tgt_embed])
        }
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Source rows × decoder layers projected to cross-attention K/V since the model was loaded.
    pub fn cross_projection_count(&self) -> usize {
        self.cross_projections.load(Ordering::Relaxed)
    }

    /// Add the position encodings of positions `p0 .. p0 + n` to each of the `rows` sequences of `x`.
    fn add_positions(&self, x: &mut [f32], rows: usize, n: usize, p0: usize) -> Result<()> {
        let d = self.cfg.d_model;
        if p0 + n > self.cfg.positions.max {
            return Err(Error::Request(format!(
                "sequence of {} positions is longer than the model's {} positions",
                p0 + n,
                self.cfg.positions.max
            )));
        }
        let table = &self.pos_table[p0 * d..(p0 + n) * d];
        for r in 0..rows {
            self.kernels.add(&mut x[r * n * d..(r + 1) * n * d], table);
        }
        Ok(())
    }

    /// Encode `sources` (token ids, any lengths) and project the result to every decoder layer's
    /// cross-attention K/V. The returned state has one decoder row per source; it can hold up to
    /// `max_rows` rows (e.g. sources × beams) and `max_new_tokens` decoder positions per row.
    pub fn start(&self, sources: &[&[u32]], max_rows: usize, max_new_tokens: usize) -> Result<Seq2SeqState> {
        crate::decoder::on_pool(|| self.encode(sources, max_rows, max_new_tokens))
    }

    /// [`Self::start`].
    fn encode(&self, sources: &[&[u32]], max_rows: usize, max_new_tokens: usize) -> Result<Seq2SeqState> {
        let k = &self.kernels;
        let d = self.cfg.d_model;
        let n_src = sources.len();
        let src_lens: Vec<usize> = sources.iter().map(|s| s.len()).collect();
        // pad every source to the longest (at least one position, so that an empty source is masked, not skipped)
        let len = src_lens.iter().copied().max().unwrap_or(0).max(1);
        let rows = n_src * len;
        let pad = self.cfg.pad_token_id.min(self.cfg.src_vocab_size as u32 - 1);
        let mut ids = vec![pad; rows];
        for (s, src) in sources.iter().enumerate() {
            ids[s * len..s * len + src.len()].copy_from_slice(src);
        }

        // 1. token embeddings * scale + positions: x [n_src * len, d]
        let mut x = vec![0.0f32; rows * d];
        self.src_embed.forward(k, &ids, self.cfg.embed_scale, &mut x)?;
        self.add_positions(&mut x, n_src, len, 0)?;

        // 2. encoder layers, padded keys masked by `src_lens`
        let ffn_dim = self.cfg.encoder_ffn_dim;
        let mut buf = Buffers::new(rows, d, ffn_dim);
        let heads = self.cfg.n_encoder_heads;
        for layer in &self.encoder {
            // self-attention (bidirectional)
            let input = pre_norm(k, self.cfg.norm, &layer.attn.norm, &x, &mut buf.h);
            let p = layer.attn.qkv.forward(k, input, rows, d, &mut buf.qkv);
            let args = AttnArgs {
                batch: n_src,
                n_heads: heads,
                n_kv_heads: heads,
                head_dim: d / heads,
                q_len: len,
                kv_len: len,
                scale: 1.0 / ((d / heads) as f32).sqrt(),
                mask: Mask::None,
                key_lens: Some(&src_lens),
                q_strides: packed_strides(len, p.pos, d / heads),
                kv_strides: packed_strides(len, p.pos, d / heads),
                out_strides: Strides::token_major(len, heads, d / heads),
            };
            k.attention(&args, &buf.qkv[p.q..], &buf.qkv[p.k..], &buf.qkv[p.v..], &mut buf.attn);
            layer.attn.out.forward(k, &buf.attn, rows, &mut buf.o);
            buf.residual(k, self.cfg.norm, &layer.attn.norm, &mut x);
            // feed-forward
            self.feed_forward(&layer.ffn, &mut buf, &mut x, rows);
        }
        if let Some(norm) = &self.encoder_norm {
            norm.forward(k, &x, &mut buf.h);
            std::mem::swap(&mut x, &mut buf.h);
        }

        // 3. cross-attention K/V of every decoder layer, once per source
        let cross = self
            .decoder
            .iter()
            .map(|layer| {
                let mut data = vec![0.0f32; 2 * rows * d];
                let (k_off, v_off, pos) = layer.cross.kv.forward(k, &x, rows, d, &mut data);
                CrossKv {
                    data,
                    k_off,
                    v_off,
                    pos,
                }
            })
            .collect();
        self.cross_projections
            .fetch_add(n_src * self.decoder.len(), Ordering::Relaxed);

        // 4. self-attention caches for up to `max_rows` rows; room for `max_new_tokens` positions, first
        //    allocated for a typical output length and grown (rarely) in `step`
        let max_rows = max_rows.max(n_src);
        let heads = self.cfg.n_decoder_heads;
        let max_new_tokens = max_new_tokens.max(1);
        let shape = KvShape {
            max_batch: max_rows,
            n_kv_heads: heads,
            capacity: max_new_tokens.min(INITIAL_CACHE_FACTOR * len + INITIAL_CACHE_EXTRA),
            head_dim: d / heads,
        };
        let self_kv = KvCache::for_layers(self.decoder.len(), shape, n_src, DEFAULT_MAX_CACHE_BYTES)?;
        Ok(Seq2SeqState {
            self_kv,
            cross,
            src_len: len,
            src_lens,
            memory: x,
            row_source: (0..n_src).collect(),
            buf: Buffers::new(max_rows, d, self.cfg.decoder_ffn_dim),
            x: vec![0.0; max_rows * d],
            n_rows_max: max_rows,
            max_len: max_new_tokens,
        })
    }

    /// `x = x + ffn(x)` with the block's norm before or after.
    fn feed_forward(&self, ffn: &FeedForward, buf: &mut Buffers, x: &mut [f32], rows: usize) {
        let k = &self.kernels;
        let act = self.cfg.activation;
        let input = pre_norm(k, self.cfg.norm, &ffn.norm, x, &mut buf.h);
        let hidden = &mut buf.ffn[..rows * ffn.up.out_dim];
        ffn.up.forward(k, input, rows, hidden);
        k.activation(act, hidden);
        ffn.down.forward(k, hidden, rows, &mut buf.o[..rows * self.cfg.d_model]);
        buf.residual(k, self.cfg.norm, &ffn.norm, x);
    }
}

/// A float vector of `n` values (norm gains, biases), widened to f32.
fn float_vector(st: &dyn TensorSource, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = st.get_shaped(name, &[n])?;
    match t.dtype() {
        loaders::Dtype::F32 | loaders::Dtype::F16 | loaders::Dtype::BF16 => Ok(t.to_f32_vec()),
        other => Err(loaders::Error::TensorDtype {
            path: st.origin(),
            name: name.to_string(),
            expected: "F32, F16 or BF16".into(),
            found: other.to_string(),
        }
        .into()),
    }
}

/// Strides of `[batch, len, heads, head_dim]` rows whose positions are `pos` floats apart.
fn packed_strides(len: usize, pos: usize, head_dim: usize) -> Strides {
    Strides {
        batch: len * pos,
        pos,
        head: head_dim,
    }
}

/// One decoder layer's cross-attention K and V for every source: `[n_src, src_len, *]` rows of `pos`
/// floats, K at `k_off`, V at `v_off` within each row.
#[derive(Debug)]
struct CrossKv {
    data: Vec<f32>,
    k_off: usize,
    v_off: usize,
    pos: usize,
}

/// Scratch buffers, sized once for the most rows a run needs (and grown only if a call needs more).
#[derive(Debug, Default)]
struct Buffers {
    /// Normalised input of a block (pre-norm) / norm output (post-norm). `[rows, d]`
    h: Vec<f32>,
    /// q | k | v projections. `3 * rows * d`
    qkv: Vec<f32>,
    /// Cross-attention queries. `[rows, d]`
    q: Vec<f32>,
    /// Attention output before the out projection. `[rows, d]`
    attn: Vec<f32>,
    /// Block output. `[rows, d]`
    o: Vec<f32>,
    /// FFN hidden. `[rows, ffn_dim]`
    ffn: Vec<f32>,
}

impl Buffers {
    fn new(rows: usize, d: usize, ffn_dim: usize) -> Self {
        let mut b = Self::default();
        b.ensure(rows, d, ffn_dim);
        b
    }

    /// Make every buffer hold `rows` rows (no allocation when they already do).
    fn ensure(&mut self, rows: usize, d: usize, ffn_dim: usize) {
        for (v, n) in [
            (&mut self.h, rows * d),
            (&mut self.qkv, 3 * rows * d),
            (&mut self.q, rows * d),
            (&mut self.attn, rows * d),
            (&mut self.o, rows * d),
            (&mut self.ffn, rows * ffn_dim),
        ] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
    }

    /// `x = x + o` (pre-norm) or `x = norm(x + o)` (post-norm), `o` being the sublayer output in `self.o`.
    fn residual(&mut self, k: &Kernels, place: NormPlacement, norm: &LayerNorm, x: &mut [f32]) {
        let n = x.len();
        k.add(x, &self.o[..n]);
        if place == NormPlacement::PostNorm {
            norm.forward(k, x, &mut self.h[..n]);
            x.copy_from_slice(&self.h[..n]);
        }
    }
}

/// The input of a sublayer: `norm(x)` (pre-norm, written to `h`) or `x` itself (post-norm).
fn pre_norm<'a>(k: &Kernels, place: NormPlacement, norm: &LayerNorm, x: &'a [f32], h: &'a mut [f32]) -> &'a [f32] {
    match place {
        NormPlacement::PreNorm => {
            let h = &mut h[..x.len()];
            norm.forward(k, x, h);
            h
        }
        NormPlacement::PostNorm => x,
    }
}

/// The decoding state of a batch of sources: encoder output, cross-attention K/V per source (shared by
/// all beams of a source), self-attention caches per row, the row -> source map and scratch buffers.
#[derive(Debug)]
pub struct Seq2SeqState {
    self_kv: Vec<KvCache>,
    cross: Vec<CrossKv>,
    /// Padded source length (rows of `memory` and `cross` per source).
    src_len: usize,
    src_lens: Vec<usize>,
    /// Encoder output `[n_src, src_len, d]`.
    memory: Vec<f32>,
    /// Decoder row -> source index.
    row_source: Vec<usize>,
    buf: Buffers,
    /// The decoder's residual stream. `[rows, d]`
    x: Vec<f32>,
    n_rows_max: usize,
    /// The most decoder positions asked for in `start`.
    max_len: usize,
}

impl Seq2SeqState {
    /// Re-allocate the self-attention caches with room for at least `needed` positions (doubling, at most
    /// `max_len`), copying the filled positions.
    fn grow_caches(&mut self, needed: usize) -> Result<()> {
        for cache in &mut self.self_kv {
            let old_shape = cache.shape();
            let shape = KvShape {
                capacity: needed.max(2 * old_shape.capacity).min(self.max_len),
                ..old_shape
            };
            let mut grown = KvCache::new(shape, cache.batch(), DEFAULT_MAX_CACHE_BYTES)?;
            grown.append_strided(cache.k(), cache.v(), cache.strides(), cache.len())?;
            *cache = grown;
        }
        Ok(())
    }

    /// Encoder output `[n_src, src_len, d_model]` (rows past a source's length are padding).
    pub fn encoder_output(&self) -> &[f32] {
        &self.memory
    }

    /// Padded source length.
    pub fn src_len(&self) -> usize {
        self.src_len
    }

    /// Number of sources.
    pub fn n_sources(&self) -> usize {
        self.src_lens.len()
    }

    /// Decoder row -> source index.
    pub fn row_sources(&self) -> &[usize] {
        &self.row_source
    }

    /// Bytes held by the cross-attention K/V (independent of the number of beams).
    pub fn cross_kv_bytes(&self) -> usize {
        self.cross.iter().map(|c| c.data.len() * 4).sum()
    }
}

impl Decoder for Seq2Seq {
    type Cache = Seq2SeqState;

    fn vocab_size(&self) -> usize {
        self.cfg.tgt_vocab_size
    }

    fn step(&self, st: &mut Seq2SeqState, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        crate::decoder::on_pool(|| self.decode(st, tokens, n, logits))
    }

    fn reorder(&self, st: &mut Seq2SeqState, src: &[usize]) -> Result<()> {
        self.reorder_rows(st, src)
    }

    fn cached_len(&self, st: &Seq2SeqState) -> usize {
        st.self_kv.first().map_or(0, |c| c.len())
    }
}

impl Seq2Seq {
    /// [`Decoder::step`]: `n` new tokens per row through the decoder, logits of each row's last position.
    fn decode(&self, st: &mut Seq2SeqState, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        let k = &self.kernels;
        let d = self.cfg.d_model;
        let heads = self.cfg.n_decoder_heads;
        let head_dim = d / heads;
        let vocab = self.cfg.tgt_vocab_size;
        let batch = st.row_source.len();
        if n == 0 || tokens.len() != batch * n || logits.len() != batch * vocab {
            return Err(Error::Request(format!(
                "decoder step: {} tokens and {} logits for {batch} rows of {n} new tokens and {vocab} logits",
                tokens.len(),
                logits.len()
            )));
        }
        let past = self.cached_len(st);
        if past + n > st.max_len {
            return Err(Error::CacheFull {
                needed: past + n,
                capacity: st.max_len,
            });
        }
        if past + n > st.self_kv[0].capacity() {
            st.grow_caches(past + n)?;
        }
        let rows = batch * n;
        st.buf.ensure(rows, d, self.cfg.decoder_ffn_dim);
        let buf = &mut st.buf;

        // 1. token embeddings * scale + positions past .. past + n: x [batch * n, d]
        let mut x = std::mem::take(&mut st.x);
        x.resize(rows * d, 0.0);
        self.tgt_embed.forward(k, tokens, self.cfg.embed_scale, &mut x)?;
        self.add_positions(&mut x, batch, n, past)?;

        for (l, layer) in self.decoder.iter().enumerate() {
            // 2. causal self-attention over the cache (the new positions appended in place)
            let input = pre_norm(k, self.cfg.norm, &layer.attn.norm, &x, &mut buf.h);
            let p = layer.attn.qkv.forward(k, input, rows, d, &mut buf.qkv);
            let cache = &mut st.self_kv[l];
            let src = packed_strides(n, p.pos, head_dim);
            cache.append_strided(&buf.qkv[p.k..], &buf.qkv[p.v..], src, n)?;
            let args = AttnArgs {
                batch,
                n_heads: heads,
                n_kv_heads: heads,
                head_dim,
                q_len: n,
                kv_len: past + n,
                scale: 1.0 / (head_dim as f32).sqrt(),
                mask: Mask::Causal { q_offset: past },
                key_lens: None,
                q_strides: src,
                kv_strides: cache.strides(),
                out_strides: Strides::token_major(n, heads, head_dim),
            };
            k.attention(&args, &buf.qkv[p.q..], cache.k(), cache.v(), &mut buf.attn[..rows * d]);
            layer
                .attn
                .out
                .forward(k, &buf.attn[..rows * d], rows, &mut buf.o[..rows * d]);
            buf.residual(k, self.cfg.norm, &layer.attn.norm, &mut x);

            // 3. cross-attention: each run of rows of one source reads that source's K/V
            let input = pre_norm(k, self.cfg.norm, &layer.cross.norm, &x, &mut buf.h);
            layer.cross.q.forward(k, input, rows, &mut buf.q[..rows * d]);
            let kv = &st.cross[l];
            let mut r0 = 0;
            while r0 < batch {
                let s = st.row_source[r0];
                let r1 = r0 + st.row_source[r0..].iter().take_while(|&&t| t == s).count();
                let base = s * st.src_len * kv.pos;
                let args = AttnArgs {
                    batch: r1 - r0,
                    n_heads: heads,
                    n_kv_heads: heads,
                    head_dim,
                    q_len: n,
                    kv_len: st.src_lens[s],
                    scale: 1.0 / (head_dim as f32).sqrt(),
                    mask: Mask::None,
                    key_lens: None,
                    q_strides: Strides::token_major(n, heads, head_dim),
                    // batch stride 0: every beam of the source reads the same K/V
                    kv_strides: Strides {
                        batch: 0,
                        pos: kv.pos,
                        head: head_dim,
                    },
                    out_strides: Strides::token_major(n, heads, head_dim),
                };
                k.attention(
                    &args,
                    &buf.q[r0 * n * d..r1 * n * d],
                    &kv.data[base + kv.k_off..],
                    &kv.data[base + kv.v_off..],
                    &mut buf.attn[r0 * n * d..r1 * n * d],
                );
                r0 = r1;
            }
            layer
                .cross
                .out
                .forward(k, &buf.attn[..rows * d], rows, &mut buf.o[..rows * d]);
            buf.residual(k, self.cfg.norm, &layer.cross.norm, &mut x);

            // 4. feed-forward
            self.feed_forward(&layer.ffn, buf, &mut x, rows);
        }

        // 5. last position of each row -> (final norm) -> LM head: logits [batch, vocab]
        let last = &mut buf.attn[..batch * d];
        for r in 0..batch {
            let t = r * n + n - 1;
            last[r * d..(r + 1) * d].copy_from_slice(&x[t * d..(t + 1) * d]);
        }
        let last: &[f32] = match &self.decoder_norm {
            Some(norm) => {
                norm.forward(k, &buf.attn[..batch * d], &mut buf.h[..batch * d]);
                &buf.h[..batch * d]
            }
            None => &buf.attn[..batch * d],
        };
        self.lm_head.forward(k, last, batch, logits);
        st.x = x;
        Ok(())
    }

    fn reorder_rows(&self, st: &mut Seq2SeqState, src: &[usize]) -> Result<()> {
        if src.len() > st.n_rows_max {
            return Err(Error::Request(format!(
                "decoder reorder: {} rows asked for, the state holds at most {}",
                src.len(),
                st.n_rows_max
            )));
        }
        let old = &st.row_source;
        let new: Vec<usize> = src
            .iter()
            .map(|&r| {
                old.get(r)
                    .copied()
                    .ok_or_else(|| Error::Request(format!("decoder reorder: row {r} does not exist ({})", old.len())))
            })
            .collect::<Result<_>>()?;
        for cache in &mut st.self_kv {
            cache.reorder(src)?;
        }
        st.row_source = new;
        Ok(())
    }
}
