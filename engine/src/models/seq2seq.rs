//! Encoder-decoder Transformers: one runtime, loaded from a checkpoint's naming scheme ([`MARIAN`] for Hugging
//! Face Marian / opus-mt, [`CT2`] for the OpenNMT / CTranslate2 pre-norm Transformer; BART or T5 names would be
//! further schemes of the same table).
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
//! its source). Each decoder step then appends to the preallocated self-attention caches in place.
//!
//! Search defaults come from the model: for Hugging Face Marian, `generation_config.json` (else
//! `config.json`) as transformers' `generate` reads them (num_beams, max_length, min_length,
//! length_penalty, early_stopping, bad_words_ids, forced_eos_token_id, renormalize_logits) and its beam
//! search semantics; for the CTranslate2 Transformer, `translate_batch`'s defaults (beam 2, length
//! penalty 1, at most 256 tokens, at least 1) and CTranslate2's beam search semantics (see [`crate::search`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use kernels::{sinusoidal_table, Activation, AttnArgs, Heads, Kernels, Layout, Sinusoid, Strides};
use loaders::config::{Ct2Config, EmbeddingScale, GenerationConfig, MarianConfig};
use serde::Deserialize;

use super::relative_position::{Direction, RelativeBias, RelativeBuckets};
use super::{Loaded, Network, Source};
use crate::attention::{AttnKind, AttnPath};
use crate::cache::{KvCache, KvShape, Scratch};
use crate::decoder::{on_pool, Decoder};
use crate::layers::{
    gated, Bias, Embedding, Hold, LayerNorm, Linear, LmHead, Norm, RmsNorm, TensorSource, WeightBytes,
};
use crate::search::{BeamStyle, EarlyStopping, LogitsRules, SearchOptions};
use crate::step::StepIo;
use crate::{Error, Result};

/// Self-attention caches start with room for `INITIAL_CACHE_FACTOR * source length + INITIAL_CACHE_EXTRA`
/// positions (translations are rarely longer), and grow by doubling up to the requested maximum.
const INITIAL_CACHE_FACTOR: usize = 2;
const INITIAL_CACHE_EXTRA: usize = 16;

/// Positions of the CTranslate2 Transformer's sinusoid table (it has no learned limit): CTranslate2's
/// default `max_input_length` (1024) plus its default `max_decoding_length` (256).
const CT2_MAX_POSITIONS: usize = 1024 + 256;

// ---------------------------------------------------------------------------------------------
// Loading: the registry's loaders, configs, naming schemes
// ---------------------------------------------------------------------------------------------

/// The registry's loader for Hugging Face `MarianMTModel` (`config.json` as transformers' `MarianConfig`).
pub(crate) fn load_marian(src: &Source<'_>) -> Result<Loaded> {
    let c = MarianConfig::from_raw(src.config)?;
    let cfg = marian_config(src, &c)?;
    load(src, cfg, marian_defaults(&c, src.generation))
}

/// The registry's loader for the custom CTranslate2 Transformer config (model_type `ct2_transformer_seq2seq`).
pub(crate) fn load_ct2(src: &Source<'_>) -> Result<Loaded> {
    let c = Ct2Config::from_raw(src.config)?;
    let cfg = ct2_config(src, &c)?;
    load(src, cfg, ct2_defaults(&c))
}

pub(super) fn load(src: &Source<'_>, cfg: Seq2SeqConfig, defaults: SearchOptions) -> Result<Loaded> {
    let net = Seq2Seq::bind(src.weights, cfg, src.hold())?;
    Ok(Loaded {
        network: Network::EncoderDecoder {
            net: Box::new(net),
            defaults: Box::new(defaults.clone()),
        },
        bos: None,
        eos: defaults.rules.eos,
    })
}

/// Where the layer norm sits in a residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormPlacement {
    /// `x = x + f(norm(x))`, with a final norm after the last layer (OpenNMT, CTranslate2).
    PreNorm,
    /// `x = norm(x + f(x))` (Marian, BART, the original Transformer).
    PostNorm,
}

/// The matrix of the LM head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum HeadMatrix {
    /// The decoder's token embedding table.
    TiedToTargetEmbeddings,
    /// The decoder's token embedding table, its input scaled by `scale` (T5's `d_model^-0.5`, folded into the
    /// final norm's gains).
    TiedScaled { scale: f32 },
    /// A matrix of its own (the scheme's `head`).
    Own,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum PositionKind {
    /// A sinusoid table added to the embeddings; the first token has position `first` (0 for Marian, 1 for
    /// OpenNMT / CTranslate2, `pad + 1` for M2M100).
    Sinusoid { kind: Sinusoid, first: usize },
    /// A learned table per stack (the scheme's `positions`) added to the embeddings; position `p` reads row
    /// `p + offset` (BART's 2).
    Learned { offset: usize },
    /// No absolute positions: a bias of the self-attention scores by relative distance (T5).
    RelativeBias(RelativeBuckets),
}

/// Position encodings and the positions available.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Positions {
    pub(super) kind: PositionKind,
    /// Positions available (per sequence, encoder and decoder alike).
    pub(crate) max: usize,
}

/// The kind of every norm of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NormKind {
    /// Gain and shift, mean removed (`torch.nn.LayerNorm`).
    Layer,
    /// Gain only, no mean (T5's `T5LayerNorm`).
    Rms,
}

/// What multiplies `q·k` before the softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScoreScale {
    /// `1/sqrt(head_dim)`.
    InvSqrtHeadDim,
    /// 1: T5 folds the scale into its initialisation.
    One,
}

/// The feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FfnKind {
    /// `down(act(up(x)))`.
    Plain,
    /// `down(act(gate(x)) * up(x))` (T5 v1.1 / Flan-T5 `gated-gelu`).
    Gated,
}

/// Everything the runtime needs to know about an encoder-decoder model (built from the model's config file by
/// its loader; the loaders validated the sizes and ids).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seq2SeqConfig {
    pub(super) names: &'static Naming,
    pub(crate) d_model: usize,
    pub(crate) n_encoder_layers: usize,
    pub(crate) n_decoder_layers: usize,
    pub(crate) n_encoder_heads: usize,
    pub(crate) n_decoder_heads: usize,
    /// Width of one attention head (`d_model / heads` but for T5, whose `d_kv * heads` may differ from d_model).
    pub(crate) head_dim: usize,
    pub(super) encoder_ffn_dim: usize,
    pub(super) decoder_ffn_dim: usize,
    pub(super) activation: Activation,
    pub(super) ffn: FfnKind,
    pub(super) norm: NormPlacement,
    pub(super) norm_kind: NormKind,
    pub(super) layer_norm_eps: f32,
    pub(super) score_scale: ScoreScale,
    /// Multiplies token embeddings (`sqrt(d_model)` for both families, 1 when Marian's `scale_embedding` is off).
    pub(super) embed_scale: f32,
    pub(crate) positions: Positions,
    pub(crate) src_vocab_size: usize,
    pub(crate) tgt_vocab_size: usize,
    /// Whether the LM head is the decoder embedding table (Marian's `tie_word_embeddings`).
    pub(super) head: HeadMatrix,
    pub(crate) decoder_start_token_id: u32,
    pub(super) pad_token_id: u32,
}

impl Seq2SeqConfig {
    /// Width of the attention projections (`heads * head_dim`).
    fn inner(&self, heads: usize) -> usize {
        heads * self.head_dim
    }

    /// Refuse shapes that do not fit together, naming `file` and the field.
    pub(super) fn validate(self, file: &std::path::Path) -> Result<Self> {
        let bad = |field: &str, reason: String| Error::InvalidConfig {
            file: file.to_path_buf(),
            field: field.into(),
            reason,
        };
        for (field, v) in [
            ("d_model", self.d_model),
            ("encoder heads", self.n_encoder_heads),
            ("decoder heads", self.n_decoder_heads),
            ("head_dim", self.head_dim),
            ("encoder ffn_dim", self.encoder_ffn_dim),
            ("decoder ffn_dim", self.decoder_ffn_dim),
            ("vocab_size", self.src_vocab_size),
            ("target vocab_size", self.tgt_vocab_size),
            ("max positions", self.positions.max),
        ] {
            if v == 0 {
                return Err(bad(field, "must be at least 1, found 0".into()));
            }
        }
        if self.n_encoder_heads != self.n_decoder_heads && self.head_dim * self.n_encoder_heads != self.d_model {
            return Err(bad(
                "attention heads",
                format!(
                    "{} encoder and {} decoder heads differ, and {} heads of {} do not fill d_model {}",
                    self.n_encoder_heads, self.n_decoder_heads, self.n_encoder_heads, self.head_dim, self.d_model
                ),
            ));
        }
        let head_dims = [self.d_model / self.n_encoder_heads, self.d_model / self.n_decoder_heads];
        let divides =
            self.d_model.is_multiple_of(self.n_encoder_heads) && self.d_model.is_multiple_of(self.n_decoder_heads);
        if !matches!(self.positions.kind, PositionKind::RelativeBias(_))
            && (!divides || head_dims != [self.head_dim; 2])
        {
            return Err(bad(
                "d_model",
                format!(
                    "{} is not a multiple of the attention heads ({} encoder, {} decoder)",
                    self.d_model, self.n_encoder_heads, self.n_decoder_heads
                ),
            ));
        }
        if matches!(self.positions.kind, PositionKind::Sinusoid { .. }) && !self.d_model.is_multiple_of(2) {
            return Err(bad(
                "d_model",
                format!("sinusoidal positions need an even width, found {}", self.d_model),
            ));
        }
        for (field, id) in [
            ("decoder_start_token_id", self.decoder_start_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if id as usize >= self.tgt_vocab_size.max(self.src_vocab_size) {
                return Err(bad(
                    field,
                    format!(
                        "{id} is outside the vocabulary ({})",
                        self.tgt_vocab_size.max(self.src_vocab_size)
                    ),
                ));
            }
        }
        if let PositionKind::RelativeBias(b) = self.positions.kind {
            b.validate()
                .map_err(|reason| bad("relative_attention_num_buckets", reason))?;
        }
        Ok(self)
    }
}

/// The runtime description of a Hugging Face `MarianMTModel` config. transformers' Marian is always
/// post-norm with static sinusoidal positions (it ignores `normalize_before` and `static_position_embeddings`).
fn marian_config(src: &Source<'_>, c: &MarianConfig) -> Result<Seq2SeqConfig> {
    let shape = FairseqShape {
        vocab_size: c.vocab_size,
        decoder_vocab_size: c.decoder_vocab_size,
        d_model: c.d_model,
        encoder_layers: c.encoder_layers,
        decoder_layers: c.decoder_layers,
        encoder_attention_heads: c.encoder_attention_heads,
        decoder_attention_heads: c.decoder_attention_heads,
        encoder_ffn_dim: c.encoder_ffn_dim,
        decoder_ffn_dim: c.decoder_ffn_dim,
        activation_function: &c.activation_function,
        max_position_embeddings: c.max_position_embeddings,
        scale_embedding: c.scale_embedding,
        tie_word_embeddings: c.tie_word_embeddings,
        pad_token_id: c.pad_token_id,
        decoder_start_token_id: c.decoder_start_token_id,
    };
    let layout = FairseqLayout {
        names: &MARIAN,
        norm: NormPlacement::PostNorm,
        positions: PositionKind::Sinusoid {
            kind: Sinusoid::Marian,
            first: 0,
        },
    };
    fairseq_config(src.config.path(), &shape, layout)
}

/// The shape of a fairseq-descended config (Marian, BART/mBART, M2M100/NLLB), whose keys these families name
/// alike; each family reads them with its own defaults.
pub(super) struct FairseqShape<'a> {
    pub(super) vocab_size: usize,
    pub(super) decoder_vocab_size: usize,
    pub(super) d_model: usize,
    pub(super) encoder_layers: usize,
    pub(super) decoder_layers: usize,
    pub(super) encoder_attention_heads: usize,
    pub(super) decoder_attention_heads: usize,
    pub(super) encoder_ffn_dim: usize,
    pub(super) decoder_ffn_dim: usize,
    pub(super) activation_function: &'a str,
    pub(super) max_position_embeddings: usize,
    pub(super) scale_embedding: bool,
    pub(super) tie_word_embeddings: bool,
    pub(super) pad_token_id: u32,
    pub(super) decoder_start_token_id: u32,
}

/// What a fairseq-style family chooses beyond its shape: tensor names, where the norms sit, how positions enter.
pub(super) struct FairseqLayout {
    pub(super) names: &'static Naming,
    pub(super) norm: NormPlacement,
    pub(super) positions: PositionKind,
}

/// The runtime description of a fairseq-style model: LayerNorm (torch's eps), plain feed-forward, scores scaled
/// by `1/sqrt(head_dim)`, embeddings by `sqrt(d_model)` when `scale_embedding`. Not validated (the caller does).
pub(super) fn fairseq_config(file: &Path, s: &FairseqShape<'_>, layout: FairseqLayout) -> Result<Seq2SeqConfig> {
    Ok(Seq2SeqConfig {
        names: layout.names,
        d_model: s.d_model,
        n_encoder_layers: s.encoder_layers,
        n_decoder_layers: s.decoder_layers,
        n_encoder_heads: s.encoder_attention_heads,
        n_decoder_heads: s.decoder_attention_heads,
        head_dim: s.d_model / s.encoder_attention_heads.max(1),
        encoder_ffn_dim: s.encoder_ffn_dim,
        decoder_ffn_dim: s.decoder_ffn_dim,
        activation: super::activation(file, "activation_function", s.activation_function)?,
        ffn: FfnKind::Plain,
        norm: layout.norm,
        norm_kind: NormKind::Layer,
        // torch.nn.LayerNorm's default
        layer_norm_eps: 1e-5,
        score_scale: ScoreScale::InvSqrtHeadDim,
        embed_scale: if s.scale_embedding {
            (s.d_model as f32).sqrt()
        } else {
            1.0
        },
        positions: Positions {
            kind: layout.positions,
            max: s.max_position_embeddings,
        },
        src_vocab_size: s.vocab_size,
        tgt_vocab_size: s.decoder_vocab_size,
        head: if s.tie_word_embeddings {
            HeadMatrix::TiedToTargetEmbeddings
        } else {
            HeadMatrix::Own
        },
        decoder_start_token_id: s.decoder_start_token_id,
        pad_token_id: s.pad_token_id,
    })
}

/// transformers' `BartConfig` / `MBartConfig` / `M2M100Config`, which share their keys and most defaults
/// (bart-large's and m2m100_418M's shape); the three that differ come from the family ([`BartLikeDefaults`]).
#[derive(Deserialize)]
pub(super) struct BartLikeConfig {
    #[serde(default)]
    vocab_size: Option<usize>,
    #[serde(default = "bart_like::d_model")]
    d_model: usize,
    #[serde(default = "bart_like::layers")]
    encoder_layers: usize,
    #[serde(default = "bart_like::layers")]
    decoder_layers: usize,
    #[serde(default = "bart_like::heads")]
    encoder_attention_heads: usize,
    #[serde(default = "bart_like::heads")]
    decoder_attention_heads: usize,
    #[serde(default = "bart_like::ffn_dim")]
    encoder_ffn_dim: usize,
    #[serde(default = "bart_like::ffn_dim")]
    decoder_ffn_dim: usize,
    #[serde(default)]
    activation_function: Option<String>,
    #[serde(default = "bart_like::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    scale_embedding: Option<bool>,
    #[serde(default = "bart_like::yes")]
    tie_word_embeddings: bool,
    #[serde(default = "bart_like::pad")]
    pub(super) pad_token_id: u32,
    #[serde(default = "bart_like::eos")]
    decoder_start_token_id: u32,
}

/// The defaults a BART-like family sets apart.
pub(super) struct BartLikeDefaults {
    pub(super) vocab_size: usize,
    pub(super) activation_function: &'static str,
    pub(super) scale_embedding: bool,
}

impl BartLikeConfig {
    /// The shape, with `d`'s defaults for the keys the file leaves out (one vocabulary for both sides).
    pub(super) fn shape(&self, d: &BartLikeDefaults) -> FairseqShape<'_> {
        let vocab_size = self.vocab_size.unwrap_or(d.vocab_size);
        FairseqShape {
            vocab_size,
            decoder_vocab_size: vocab_size,
            d_model: self.d_model,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            encoder_attention_heads: self.encoder_attention_heads,
            decoder_attention_heads: self.decoder_attention_heads,
            encoder_ffn_dim: self.encoder_ffn_dim,
            decoder_ffn_dim: self.decoder_ffn_dim,
            activation_function: self.activation_function.as_deref().unwrap_or(d.activation_function),
            max_position_embeddings: self.max_position_embeddings,
            scale_embedding: self.scale_embedding.unwrap_or(d.scale_embedding),
            tie_word_embeddings: self.tie_word_embeddings,
            pad_token_id: self.pad_token_id,
            decoder_start_token_id: self.decoder_start_token_id,
        }
    }
}

mod bart_like {
    pub(super) fn d_model() -> usize {
        1024
    }
    pub(super) fn layers() -> usize {
        12
    }
    pub(super) fn heads() -> usize {
        16
    }
    pub(super) fn ffn_dim() -> usize {
        4096
    }
    pub(super) fn max_position_embeddings() -> usize {
        1024
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn pad() -> u32 {
        1
    }
    pub(super) fn eos() -> u32 {
        2
    }
}

/// The runtime description of the custom CTranslate2 Transformer config.
fn ct2_config(src: &Source<'_>, c: &Ct2Config) -> Result<Seq2SeqConfig> {
    let file = src.config.path();
    if c.position_encoding.kind != "sinusoidal_tensor2tensor" {
        return Err(Error::Unsupported {
            what: format!(
                "{}: position_encoding.type {:?} (qkv runs sinusoidal_tensor2tensor)",
                file.display(),
                c.position_encoding.kind
            ),
        });
    }
    if c.pre_norm
        && (c.final_layer_norm.encoder != "encoder/layer_norm" || c.final_layer_norm.decoder != "decoder/layer_norm")
    {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            field: "final_layer_norm".into(),
            reason: format!(
                "expected encoder/layer_norm and decoder/layer_norm, found {:?}",
                c.final_layer_norm
            ),
        });
    }
    Ok(Seq2SeqConfig {
        names: &CT2,
        d_model: c.d_model,
        n_encoder_layers: c.encoder_layers,
        n_decoder_layers: c.decoder_layers,
        n_encoder_heads: c.num_heads,
        n_decoder_heads: c.num_heads,
        head_dim: c.d_model / c.num_heads.max(1),
        encoder_ffn_dim: c.ffn_dim,
        decoder_ffn_dim: c.ffn_dim,
        activation: super::activation(file, "activation", &c.activation)?,
        ffn: FfnKind::Plain,
        norm: if c.pre_norm {
            NormPlacement::PreNorm
        } else {
            NormPlacement::PostNorm
        },
        norm_kind: NormKind::Layer,
        layer_norm_eps: c.layer_norm_eps,
        score_scale: ScoreScale::InvSqrtHeadDim,
        embed_scale: match c.scale_embeddings {
            EmbeddingScale::SqrtDModel => (c.d_model as f32).sqrt(),
            EmbeddingScale::None => 1.0,
        },
        positions: Positions {
            kind: PositionKind::Sinusoid {
                kind: Sinusoid::Tensor2Tensor,
                first: c.position_encoding.first_position,
            },
            max: CT2_MAX_POSITIONS,
        },
        src_vocab_size: c.src_vocab_size,
        tgt_vocab_size: c.tgt_vocab_size,
        head: HeadMatrix::Own,
        decoder_start_token_id: c.decoder_start_token_id,
        pad_token_id: c.pad_token_id,
    })
}

/// The generation keys of a config.json that transformers' `generate` falls back to when generation_config.json
/// lacks them (older files keep them there), with `PretrainedConfig`'s defaults.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub(super) struct ConfigGeneration {
    #[serde(default)]
    eos_token_id: Option<u32>,
    #[serde(default)]
    max_length: Option<usize>,
    #[serde(default)]
    min_length: Option<usize>,
    #[serde(default)]
    num_beams: Option<usize>,
    #[serde(default)]
    length_penalty: Option<f32>,
    /// `true`, `false` or `"never"`.
    #[serde(default)]
    early_stopping: Option<serde_json::Value>,
    #[serde(default)]
    bad_words_ids: Option<Vec<Vec<u32>>>,
    #[serde(default)]
    forced_eos_token_id: Option<u32>,
    #[serde(default)]
    forced_bos_token_id: Option<u32>,
    #[serde(default)]
    no_repeat_ngram_size: Option<usize>,
}

impl ConfigGeneration {
    fn of_marian(c: &MarianConfig) -> Self {
        Self {
            eos_token_id: Some(c.eos_token_id),
            max_length: Some(c.max_length),
            num_beams: Some(c.num_beams),
            bad_words_ids: Some(c.bad_words_ids.clone()),
            forced_eos_token_id: c.forced_eos_token_id,
            ..Self::default()
        }
    }
}

/// transformers' `generate` defaults for a Marian model: generation_config.json over config.json.
fn marian_defaults(c: &MarianConfig, g: Option<&GenerationConfig>) -> SearchOptions {
    hf_defaults(&ConfigGeneration::of_marian(c), g)
}

/// transformers' `generate` defaults of a Hugging Face encoder-decoder: generation_config.json over config.json
/// (`c`) over `PretrainedConfig`'s defaults (20 tokens with the start token, 1 beam, length penalty 1).
pub(super) fn hf_defaults(c: &ConfigGeneration, g: Option<&GenerationConfig>) -> SearchOptions {
    let g = g.cloned().unwrap_or_default();
    // lengths count the decoder start token in transformers
    let max_length = g.max_length.or(c.max_length).unwrap_or(20);
    let max_new_tokens = g.max_new_tokens.unwrap_or(max_length.saturating_sub(1)).max(1);
    let min_length = g.min_length.or(c.min_length).unwrap_or(0);
    let min_new_tokens = g.min_new_tokens.unwrap_or(min_length.saturating_sub(1));
    let num_beams = g.num_beams.or(c.num_beams).unwrap_or(1).max(1);
    let early_stopping = match g.early_stopping {
        Some(loaders::config::EarlyStopping::WhenNumBeamsDone) => EarlyStopping::Eager,
        Some(loaders::config::EarlyStopping::Never) => EarlyStopping::Never,
        Some(loaders::config::EarlyStopping::Heuristic) => EarlyStopping::Heuristic,
        None => match &c.early_stopping {
            Some(serde_json::Value::Bool(true)) => EarlyStopping::Eager,
            Some(serde_json::Value::String(s)) if s == "never" => EarlyStopping::Never,
            _ => EarlyStopping::Heuristic,
        },
    };
    SearchOptions {
        num_beams,
        max_new_tokens,
        min_new_tokens,
        length_penalty: g.length_penalty.or(c.length_penalty).unwrap_or(1.0),
        num_return_sequences: g.num_return_sequences.unwrap_or(1).clamp(1, num_beams),
        style: BeamStyle::HuggingFace { early_stopping },
        rules: LogitsRules {
            eos: g.eos_token_id.unwrap_or_else(|| c.eos_token_id.into_iter().collect()),
            bad_words: g.bad_words_ids.or_else(|| c.bad_words_ids.clone()).unwrap_or_default(),
            forced_eos: match g.forced_eos_token_id {
                Some(ids) => ids.first().copied(),
                None => c.forced_eos_token_id,
            },
            forced_bos: g.forced_bos_token_id.or(c.forced_bos_token_id),
            no_repeat_ngram: g.no_repeat_ngram_size.or(c.no_repeat_ngram_size).unwrap_or(0),
            renormalize: g.renormalize_logits.unwrap_or(false),
        },
    }
}

/// CTranslate2 `translate_batch` defaults.
fn ct2_defaults(c: &Ct2Config) -> SearchOptions {
    SearchOptions {
        style: BeamStyle::CTranslate2 { patience: 1.0 },
        num_beams: 2,
        max_new_tokens: 256,
        min_new_tokens: 1,
        length_penalty: 1.0,
        num_return_sequences: 1,
        rules: LogitsRules {
            eos: vec![c.eos_token_id],
            ..LogitsRules::default()
        },
    }
}

/// How one checkpoint format names (and fuses) the tensors of an encoder-decoder Transformer: one table per
/// format, read by the one binding code ([`Seq2Seq::bind`]). Layer `l`'s tensors are `{layer}{l}{sep}{name}`;
/// a norm's gain and shift are its name followed by `norm_params`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Naming {
    /// The prefixes of encoder and decoder layers.
    pub(super) layers: [&'static str; 2],
    pub(super) sep: &'static str,
    /// A norm's gain and shift suffixes (an RMS norm reads the gain only).
    pub(super) norm_params: [&'static str; 2],
    /// Self-attention: `[norm, output projection]`, then its q, k, v.
    pub(super) self_attn: [&'static str; 2],
    pub(super) qkv: SelfProj,
    /// Cross-attention: `[norm, output projection]`, then its q, k, v.
    pub(super) cross_attn: [&'static str; 2],
    pub(super) cross_qkv: CrossProj,
    /// Feed-forward of encoder and decoder layers (the same but for T5, whose decoder block is one deeper).
    pub(super) ffn: [FfnNames; 2],
    /// Whether the projections (not the LM head) have biases.
    pub(super) bias: Bias,
    /// Whether an LM head of its own (`head`) has a bias beside it (when `logits_bias` is `None`).
    pub(super) head_bias: Bias,
    /// Embedding tables: the first of each list the checkpoint has (Marian: its own side's, else the shared one).
    pub(super) src_embed: &'static [&'static str],
    pub(super) tgt_embed: &'static [&'static str],
    /// Learned position tables of the encoder and the decoder ([`PositionKind::Learned`]).
    pub(super) positions: Option<[&'static str; 2]>,
    /// Norms of the embeddings (+ positions) of the encoder and the decoder (BART's `layernorm_embedding`).
    pub(super) embed_norms: Option<[&'static str; 2]>,
    /// The `[num_buckets, n_heads]` relative position bias tables of the encoder and the decoder
    /// ([`PositionKind::RelativeBias`]).
    pub(super) relative_bias: Option<[&'static str; 2]>,
    /// The final norms of the encoder and the decoder (pre-norm models).
    pub(super) final_norms: Option<[&'static str; 2]>,
    /// The LM head's matrix when it is not tied to the target embeddings.
    pub(super) head: &'static str,
    /// A separate `[1, vocab]` bias of the head, zeros when the file has none (Marian's `final_logits_bias`, which
    /// a tied head adds too); `None`: the bias beside `head` when the projections have biases (zeros for a tied
    /// head).
    pub(super) logits_bias: Option<&'static str>,
}

/// The tensors of a feed-forward block: its norm, up and down projections, and the gate of a gated one
/// ([`FfnKind::Gated`]: `act(gate(x)) * up(x)`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FfnNames {
    pub(super) norm: &'static str,
    pub(super) up: &'static str,
    pub(super) down: &'static str,
    pub(super) gate: Option<&'static str>,
}

/// The q, k and v projections of a self-attention block.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SelfProj {
    /// Three `[d, d]` matrices q, k, v.
    Separate([&'static str; 3]),
    /// One `[3d, d]` matrix whose output rows are q | k | v.
    Fused(&'static str),
}

/// The q (over the decoder) and k, v (over the encoder output) projections of a cross-attention block.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CrossProj {
    /// Three `[d, d]` matrices q, k, v.
    Separate([&'static str; 3]),
    /// q `[d, d]` and one `[2d, d]` matrix whose output rows are k | v.
    FusedKv([&'static str; 2]),
}

/// The feed-forward of Marian, BART, M2M100: `fc1`, `fc2`, `final_layer_norm`.
const FC_FFN: FfnNames = FfnNames {
    norm: "final_layer_norm",
    up: "fc1",
    down: "fc2",
    gate: None,
};

/// Hugging Face `MarianMTModel`: `model.encoder.layers.{l}.self_attn.q_proj.weight`, ... (BART and M2M100 name
/// their layers the same way: their schemes start from this one).
pub(super) const MARIAN: Naming = Naming {
    layers: ["model.encoder.layers.", "model.decoder.layers."],
    sep: ".",
    norm_params: [".weight", ".bias"],
    self_attn: ["self_attn_layer_norm", "self_attn.out_proj"],
    qkv: SelfProj::Separate(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
    cross_attn: ["encoder_attn_layer_norm", "encoder_attn.out_proj"],
    cross_qkv: CrossProj::Separate(["encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj"]),
    ffn: [FC_FFN, FC_FFN],
    bias: Bias::Required,
    head_bias: Bias::None,
    src_embed: &["model.encoder.embed_tokens.weight", "model.shared.weight"],
    tgt_embed: &["model.decoder.embed_tokens.weight", "model.shared.weight"],
    positions: None,
    embed_norms: None,
    relative_bias: None,
    final_norms: None,
    head: "lm_head.weight",
    logits_bias: Some("final_logits_bias"),
};

const CT2_FFN: FfnNames = FfnNames {
    norm: "ffn/layer_norm",
    up: "ffn/linear_0/weight",
    down: "ffn/linear_1/weight",
    gate: None,
};

/// CTranslate2 spec names: `encoder/layer_{l}/self_attention/linear_0/weight`, ...
const CT2: Naming = Naming {
    layers: ["encoder/layer_", "decoder/layer_"],
    sep: "/",
    norm_params: ["/gamma", "/beta"],
    self_attn: ["self_attention/layer_norm", "self_attention/linear_1/weight"],
    qkv: SelfProj::Fused("self_attention/linear_0/weight"),
    cross_attn: ["attention/layer_norm", "attention/linear_2/weight"],
    cross_qkv: CrossProj::FusedKv(["attention/linear_0/weight", "attention/linear_1/weight"]),
    ffn: [CT2_FFN, CT2_FFN],
    bias: Bias::Required,
    head_bias: Bias::Required,
    src_embed: &["encoder/embeddings/weight"],
    tgt_embed: &["decoder/embeddings/weight"],
    positions: None,
    embed_norms: None,
    relative_bias: None,
    final_norms: Some(["encoder/layer_norm", "decoder/layer_norm"]),
    head: "decoder/projection/weight",
    logits_bias: None,
};

// ---------------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------------

/// The q, k and v projections of a self-attention block: one `[3d, d]` matrix whose output rows are q | k | v
/// (CTranslate2's fused one, or Marian's three packed as one at load).
#[derive(Debug)]
struct QkvProj(Linear);

/// The k and v projections of a cross-attention block: one `[2d, d]` matrix whose output rows are k | v.
#[derive(Debug)]
struct KvProj(Linear);

/// Where q, k and v lie in the `[rows, 3d]` output of a [`QkvProj`] (read in place, not copied): offsets of each and
/// their shared position stride.
#[derive(Clone, Copy, Debug)]
struct Packed {
    q: usize,
    k: usize,
    v: usize,
    pos: usize,
}

impl QkvProj {
    /// Project `x[rows, d]` into `out` (`rows * 3d`) and say where q, k and v are.
    fn forward(&self, k: &Kernels, x: &[f32], rows: usize, d: usize, out: &mut [f32]) -> Packed {
        self.0.forward(k, x, rows, &mut out[..3 * rows * d]);
        Packed {
            q: 0,
            k: d,
            v: 2 * d,
            pos: 3 * d,
        }
    }
}

impl KvProj {
    /// Project `x[rows, d]` into `out` (`rows * 2d`); returns (k offset, v offset, position stride).
    fn forward(&self, k: &Kernels, x: &[f32], rows: usize, d: usize, out: &mut [f32]) -> (usize, usize, usize) {
        self.0.forward(k, x, rows, &mut out[..2 * rows * d]);
        (0, d, 2 * d)
    }
}

#[derive(Debug)]
struct SelfAttention {
    norm: Norm,
    qkv: QkvProj,
    out: Linear,
}

#[derive(Debug)]
struct CrossAttention {
    norm: Norm,
    q: Linear,
    kv: KvProj,
    out: Linear,
}

#[derive(Debug)]
struct FeedForward {
    norm: Norm,
    up: FfnUp,
    down: Linear,
}

/// A feed-forward's input projection.
#[derive(Debug)]
enum FfnUp {
    /// `[ffn_dim, d]`, then the activation.
    Plain(Linear),
    /// A gated feed-forward's gate and up packed as one `[2 ffn_dim, d]` matrix whose output rows are gate | up
    /// ([`FfnKind::Gated`]).
    Gated(Linear),
}

impl FfnUp {
    fn linear(&self) -> &Linear {
        match self {
            FfnUp::Plain(l) | FfnUp::Gated(l) => l,
        }
    }
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

/// The absolute positions added to the embeddings.
#[derive(Debug)]
enum PositionTables {
    /// `[positions.max, d_model]` shared by both stacks, row `p` = position `first + p`.
    Sinusoid(Vec<f32>),
    /// The encoder's and the decoder's learned tables, row `p + offset` = position `p`.
    Learned { tables: Box<[Embedding; 2]>, offset: usize },
    /// None (T5: a relative position bias instead).
    None,
}

/// Which stack a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    Encoder = 0,
    Decoder = 1,
}

impl Stack {
    /// How its self-attention sees the other positions.
    fn direction(self) -> Direction {
        match self {
            Stack::Encoder => Direction::Bidirectional,
            Stack::Decoder => Direction::Causal,
        }
    }
}

/// An encoder-decoder model with its weights bound (zero-copy) and its position table.
#[derive(Debug)]
pub(crate) struct Seq2Seq {
    cfg: Seq2SeqConfig,
    kernels: Kernels,
    src_embed: Embedding,
    tgt_embed: Embedding,
    positions: PositionTables,
    /// Norms of the embeddings of the encoder and the decoder (BART's `layernorm_embedding`).
    embed_norms: Option<Box<[Norm; 2]>>,
    /// The relative position bias of the encoder and the decoder self-attention (T5), computed once per stack at
    /// load.
    relative_bias: [Option<RelativeBias>; 2],
    encoder: Vec<EncoderLayer>,
    encoder_norm: Option<Norm>,
    decoder: Vec<DecoderLayer>,
    /// The decoder's final norm (pre-norm models) and the LM head.
    head: LmHead,
    /// Counts source-rows × decoder-layers projected to cross-attention K/V (tests check it is done once).
    cross_projections: AtomicUsize,
}

impl Seq2Seq {
    /// Bind every weight of `cfg` from `st` by the names of its scheme (shapes checked against the config, stored
    /// dtype kept), the linear layers (the LM head included, tied or not) held as `weights`.
    fn bind(st: &dyn TensorSource, cfg: Seq2SeqConfig, weights: Hold) -> Result<Self> {
        let kernels = weights.kernels;
        let names = cfg.names;
        let d = cfg.d_model;
        let bind = |name: &str, out_dim: usize, in_dim: usize| {
            Linear::bind(st, name, out_dim, in_dim, Layout::OutIn, names.bias)
        };
        let lin = |name: &str, out_dim: usize, in_dim: usize| bind(name, out_dim, in_dim)?.convert(st, weights);
        let norm = |name: &str| -> Result<Norm> {
            let [gamma, beta] = names.norm_params;
            let (g, b) = (format!("{name}{gamma}"), format!("{name}{beta}"));
            Ok(match cfg.norm_kind {
                NormKind::Layer => Norm::Layer(LayerNorm::bind_pair(st, &g, &b, d, cfg.layer_norm_eps)?),
                NormKind::Rms => Norm::Rms(RmsNorm::bind(st, &g, d, cfg.layer_norm_eps)?),
            })
        };
        // the first table of the list the checkpoint has (an error names the last one)
        let embedding = |candidates: &[&str], rows: usize| {
            let present = candidates.iter().copied().find(|n| st.contains(n));
            Embedding::bind(st, present.or(candidates.last().copied()).unwrap_or(""), rows, d)
        };
        let self_attn = |layer: &dyn Fn(&str) -> String, heads: usize| -> Result<SelfAttention> {
            let [norm_name, out] = names.self_attn;
            let inner = cfg.inner(heads);
            Ok(SelfAttention {
                norm: norm(&layer(norm_name))?,
                // q, k and v packed as one matrix, stored apart (Marian, BART, T5) or not
                qkv: QkvProj(match names.qkv {
                    SelfProj::Separate([q, k, v]) => {
                        let parts = vec![
                            bind(&layer(q), inner, d)?,
                            bind(&layer(k), inner, d)?,
                            bind(&layer(v), inner, d)?,
                        ];
                        Linear::stack(st, parts, weights)?
                    }
                    SelfProj::Fused(qkv) => lin(&layer(qkv), 3 * inner, d)?,
                }),
                out: lin(&layer(out), d, inner)?,
            })
        };
        let cross_attn = |layer: &dyn Fn(&str) -> String| -> Result<CrossAttention> {
            let [norm_name, out] = names.cross_attn;
            let inner = cfg.inner(cfg.n_decoder_heads);
            let norm = norm(&layer(norm_name))?;
            // k and v packed as one matrix
            let (q, kv) = match names.cross_qkv {
                CrossProj::Separate([q, k, v]) => (
                    lin(&layer(q), inner, d)?,
                    KvProj(Linear::stack(
                        st,
                        vec![bind(&layer(k), inner, d)?, bind(&layer(v), inner, d)?],
                        weights,
                    )?),
                ),
                CrossProj::FusedKv([q, kv]) => (lin(&layer(q), inner, d)?, KvProj(lin(&layer(kv), 2 * inner, d)?)),
            };
            Ok(CrossAttention {
                norm,
                q,
                kv,
                out: lin(&layer(out), d, inner)?,
            })
        };
        let ffn = |layer: &dyn Fn(&str) -> String, stack: Stack, ffn_dim: usize| -> Result<FeedForward> {
            let n = &names.ffn[stack as usize];
            let up = match (cfg.ffn, n.gate) {
                (FfnKind::Gated, Some(g)) => {
                    let parts = vec![bind(&layer(g), ffn_dim, d)?, bind(&layer(n.up), ffn_dim, d)?];
                    FfnUp::Gated(Linear::stack(st, parts, weights)?)
                }
                (FfnKind::Gated, None) => {
                    return Err(Error::Unsupported {
                        what: "a gated feed-forward in a checkpoint format without gates".into(),
                    })
                }
                (FfnKind::Plain, _) => FfnUp::Plain(lin(&layer(n.up), ffn_dim, d)?),
            };
            Ok(FeedForward {
                norm: norm(&layer(n.norm))?,
                up,
                down: lin(&layer(n.down), d, ffn_dim)?,
            })
        };

        let mut src_embed = embedding(names.src_embed, cfg.src_vocab_size)?;
        let mut tgt_embed = embedding(names.tgt_embed, cfg.tgt_vocab_size)?;
        let encoder = (0..cfg.n_encoder_layers)
            .map(|l| {
                let layer = |part: &str| format!("{}{l}{}{part}", names.layers[0], names.sep);
                Ok(EncoderLayer {
                    attn: self_attn(&layer, cfg.n_encoder_heads)?,
                    ffn: ffn(&layer, Stack::Encoder, cfg.encoder_ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.n_decoder_layers)
            .map(|l| {
                let layer = |part: &str| format!("{}{l}{}{part}", names.layers[1], names.sep);
                Ok(DecoderLayer {
                    attn: self_attn(&layer, cfg.n_decoder_heads)?,
                    cross: cross_attn(&layer)?,
                    ffn: ffn(&layer, Stack::Decoder, cfg.decoder_ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // pre-norm models end each stack with a norm; post-norm ones already normalised the last output
        let (encoder_norm, mut decoder_norm) = match (cfg.norm, names.final_norms) {
            (NormPlacement::PreNorm, Some([enc, dec])) => (Some(norm(enc)?), Some(norm(dec)?)),
            _ => (None, None),
        };
        // LM head: the decoder embeddings (tied) or its own matrix, and its bias
        let vocab = cfg.tgt_vocab_size;
        let logits_bias = |name: &str| -> Result<Vec<f32>> {
            Ok(if st.contains(name) {
                st.get_shaped(name, &[1, vocab])?.to_f32_vec()
            } else {
                vec![0.0; vocab]
            })
        };
        let tied = |bias: Option<Vec<f32>>| {
            let table = st.get_shaped(tgt_embed.name(), &[vocab, d])?;
            Linear::from_tensor(st, table, vocab, d, Layout::OutIn, bias)
        };
        let lm_head = match (cfg.head, names.logits_bias) {
            (HeadMatrix::TiedToTargetEmbeddings, bias) => tied(Some(match bias {
                Some(name) => logits_bias(name)?,
                None => vec![0.0; vocab],
            }))?,
            (HeadMatrix::TiedScaled { scale }, _) => {
                // norm(x) * scale as one norm: its gains times the scale
                decoder_norm = match decoder_norm {
                    Some(Norm::Rms(n)) => Some(Norm::Rms(n.scaled(scale))),
                    _ => {
                        return Err(Error::Unsupported {
                            what: "a scaled tied LM head without a final RMS norm".into(),
                        })
                    }
                };
                tied(None)?
            }
            (HeadMatrix::Own, Some(bias)) => {
                let bias = logits_bias(bias)?;
                let matrix = st.get_shaped(names.head, &[vocab, d])?;
                Linear::from_tensor(st, matrix, vocab, d, Layout::OutIn, Some(bias))?
            }
            (HeadMatrix::Own, None) => Linear::bind(st, names.head, vocab, d, Layout::OutIn, names.head_bias)?,
        }
        .convert(st, weights)?;
        // Packed as stored, a tied head is the one copy of the table (both tables when Marian shares one) that the
        // lookups read too; quantized to int8 it is its own copy and the lookups keep reading the stored table.
        tgt_embed.tie_to(&lm_head);
        src_embed.tie_to(&lm_head);
        let positions = match cfg.positions.kind {
            PositionKind::Sinusoid { kind, first } => {
                PositionTables::Sinusoid(sinusoidal_table(kind, cfg.positions.max, d, first))
            }
            PositionKind::Learned { offset } => {
                let Some([enc, dec]) = names.positions else {
                    return Err(Error::Unsupported {
                        what: "learned positions in a checkpoint format without position tables".into(),
                    });
                };
                let rows = cfg.positions.max + offset;
                PositionTables::Learned {
                    tables: Box::new([Embedding::bind(st, enc, rows, d)?, Embedding::bind(st, dec, rows, d)?]),
                    offset,
                }
            }
            PositionKind::RelativeBias(_) => PositionTables::None,
        };
        let embed_norms = match names.embed_norms {
            Some([enc, dec]) => Some(Box::new([norm(enc)?, norm(dec)?])),
            None => None,
        };
        let relative_bias = match (cfg.positions.kind, names.relative_bias) {
            (PositionKind::RelativeBias(buckets), Some([enc, dec])) => [
                Some(RelativeBias::bind(
                    st,
                    enc,
                    buckets,
                    cfg.n_encoder_heads,
                    Stack::Encoder.direction(),
                )?),
                Some(RelativeBias::bind(
                    st,
                    dec,
                    buckets,
                    cfg.n_decoder_heads,
                    Stack::Decoder.direction(),
                )?),
            ],
            _ => [None, None],
        };
        Ok(Self {
            cfg,
            kernels,
            src_embed,
            tgt_embed,
            positions,
            embed_norms,
            relative_bias,
            encoder,
            encoder_norm,
            decoder,
            head: LmHead {
                norm: decoder_norm,
                linear: lm_head,
                softcap: None,
            },
            cross_projections: AtomicUsize::new(0),
        })
    }

    pub(crate) fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    /// Bytes of the weights this model reads (norm gains and biases aside).
    pub(crate) fn weight_bytes(&self) -> WeightBytes {
        let mut linears: Vec<&Linear> = vec![&self.head.linear];
        for l in &self.encoder {
            linears.extend([&l.attn.qkv.0, &l.attn.out, l.ffn.up.linear(), &l.ffn.down]);
        }
        for l in &self.decoder {
            linears.extend([
                &l.attn.qkv.0,
                &l.cross.kv.0,
                &l.attn.out,
                &l.cross.q,
                &l.cross.out,
                l.ffn.up.linear(),
                &l.ffn.down,
            ]);
        }
        // a shared table (Marian's `model.shared`) counts once
        if self.src_embed.name() == self.tgt_embed.name() {
            WeightBytes::of(linears, &[&self.src_embed])
        } else {
            WeightBytes::of(linears, &[&self.src_embed, &self.tgt_embed])
        }
    }

    /// Source rows × decoder layers projected to cross-attention K/V since the model was loaded.
    pub(crate) fn cross_projection_count(&self) -> usize {
        self.cross_projections.load(Ordering::Relaxed)
    }

    /// The relative position bias tables built at load (one per stack of a T5 model, 0 otherwise): tests check
    /// that they are not rebuilt per layer or per step.
    pub(crate) fn position_bias_tables(&self) -> usize {
        self.relative_bias.iter().flatten().count()
    }

    /// The embeddings of `ids` (`rows` sequences of `n`) of `stack` at positions `p0 .. p0 + n`, into `x`
    /// `[rows * n, d]`: tokens times the embedding scale, plus the absolute positions, then the embedding norm.
    fn embed(&self, stack: Stack, ids: &[u32], rows: usize, n: usize, p0: usize, x: &mut [f32]) -> Result<()> {
        let k = &self.kernels;
        let d = self.cfg.d_model;
        let table = match stack {
            Stack::Encoder => &self.src_embed,
            Stack::Decoder => &self.tgt_embed,
        };
        table.forward(k, ids, self.cfg.embed_scale, x)?;
        if p0 + n > self.cfg.positions.max {
            return Err(Error::Request(format!(
                "sequence of {} positions is longer than the model's {} positions",
                p0 + n,
                self.cfg.positions.max
            )));
        }
        match &self.positions {
            PositionTables::Sinusoid(t) => {
                let table = &t[p0 * d..(p0 + n) * d]; // [n, d]
                for r in 0..rows {
                    k.add(&mut x[r * n * d..(r + 1) * n * d], table);
                }
            }
            PositionTables::Learned { tables, offset } => {
                let pos: Vec<u32> = (p0 + offset..p0 + offset + n).map(|p| p as u32).collect();
                let mut table = vec![0.0f32; n * d]; // [n, d]
                tables[stack as usize].forward(k, &pos, 1.0, &mut table)?;
                for r in 0..rows {
                    k.add(&mut x[r * n * d..(r + 1) * n * d], &table);
                }
            }
            PositionTables::None => {}
        }
        if let Some(norms) = &self.embed_norms {
            let mut h = vec![0.0f32; x.len()]; // [rows * n, d]
            norms[stack as usize].forward(k, x, &mut h);
            x.copy_from_slice(&h);
        }
        Ok(())
    }

    /// The self-attention arguments' scale and position bias of `stack`.
    fn self_attn_args<'a>(&'a self, stack: Stack, args: AttnArgs<'a>) -> AttnArgs<'a> {
        let args = match self.cfg.score_scale {
            ScoreScale::InvSqrtHeadDim => args,
            ScoreScale::One => args.with_scale(1.0),
        };
        args.with_position_bias(self.relative_bias[stack as usize].as_ref().map(RelativeBias::args))
    }

    /// Encode `sources` (token ids, any lengths) and project the result to every decoder layer's
    /// cross-attention K/V. The returned state has one decoder row per source; it can hold up to
    /// `room.max_rows` rows (e.g. sources × beams) and `room.max_new_tokens` decoder positions per row, its
    /// self-attention caches within `max_bytes`.
    /// The encoder's self-attention runs on `attn` (the fused kernels, or the recording path).
    pub(crate) fn start(
        &self,
        sources: &[&[u32]],
        room: Room,
        max_bytes: usize,
        attn: AttnPath<'_>,
    ) -> Result<Seq2SeqState> {
        on_pool(|| self.encode(sources, room, max_bytes, attn))
    }

    /// [`Self::start`].
    fn encode(&self, sources: &[&[u32]], room: Room, max_bytes: usize, attn: AttnPath<'_>) -> Result<Seq2SeqState> {
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

        // 1. token embeddings * scale + positions (+ embedding norm): x [n_src * len, d]
        let mut x = vec![0.0f32; rows * d];
        self.embed(Stack::Encoder, &ids, n_src, len, 0, &mut x)?;

        // 2. encoder layers, padded keys masked by `src_lens`
        let ffn_dim = self.cfg.encoder_ffn_dim;
        let inner = self.cfg.inner(self.cfg.n_encoder_heads);
        let mut buf = Buffers::new(rows, d, inner, ffn_dim);
        let heads = Heads::new(self.cfg.n_encoder_heads, self.cfg.head_dim);
        for layer in &self.encoder {
            // self-attention (bidirectional)                                      [n_src * len, d]
            let input = pre_norm(k, self.cfg.norm, &layer.attn.norm, &x, &mut buf.h);
            let p = layer.attn.qkv.forward(k, input, rows, inner, &mut buf.qkv);
            let packed = packed_strides(len, p.pos, heads.head_dim);
            let args = AttnArgs::bidirectional(heads, n_src, len, &src_lens)
                .with_q_strides(packed)
                .with_kv_strides(packed);
            let args = self.self_attn_args(Stack::Encoder, args);
            let attn_out = &mut buf.attn[..rows * inner]; // [n_src * len, inner]
            let qkv = [&buf.qkv[p.q..], &buf.qkv[p.k..], &buf.qkv[p.v..]];
            attn.attend(k, &mut buf.attn_scratch, AttnKind::Encoder, &args, qkv, attn_out);
            layer.attn.out.forward(k, attn_out, rows, &mut buf.o[..rows * d]);
            buf.residual(k, self.cfg.norm, &layer.attn.norm, &mut x);
            // feed-forward
            self.feed_forward(&layer.ffn, &mut buf, &mut x, rows);
        }
        if let Some(norm) = &self.encoder_norm {
            norm.forward(k, &x, &mut buf.h);
            std::mem::swap(&mut x, &mut buf.h);
        }

        // 3. cross-attention K/V of every decoder layer, once per source
        let inner = self.cfg.inner(self.cfg.n_decoder_heads);
        let cross = self
            .decoder
            .iter()
            .map(|layer| {
                let mut data = vec![0.0f32; 2 * rows * inner];
                let (k_off, v_off, pos) = layer.cross.kv.forward(k, &x, rows, inner, &mut data);
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
        let max_rows = room.max_rows.max(n_src);
        let heads = self.cfg.n_decoder_heads;
        let max_new_tokens = room.max_new_tokens.max(1);
        let shape = KvShape {
            max_batch: max_rows,
            n_kv_heads: heads,
            capacity: max_new_tokens.min(INITIAL_CACHE_FACTOR * len + INITIAL_CACHE_EXTRA),
            head_dim: self.cfg.head_dim,
        };
        let self_kv = KvCache::for_layers(self.decoder.len(), shape, n_src, max_bytes)?;
        Ok(Seq2SeqState {
            self_kv,
            cross,
            src_len: len,
            src_lens,
            memory: x,
            row_source: (0..n_src).collect(),
            buf: Buffers::new(max_rows, d, inner, self.cfg.decoder_ffn_dim),
            head: Scratch::default(),
            x: vec![0.0; max_rows * d],
            n_rows_max: max_rows,
            max_len: max_new_tokens,
            max_bytes,
        })
    }

    /// `x = x + ffn(x)` with the block's norm before or after.
    fn feed_forward(&self, ffn: &FeedForward, buf: &mut Buffers, x: &mut [f32], rows: usize) {
        let k = &self.kernels;
        let act = self.cfg.activation;
        let input = pre_norm(k, self.cfg.norm, &ffn.norm, x, &mut buf.h);
        let ffn_dim = ffn.down.in_dim;
        let hidden = &mut buf.ffn[..rows * ffn_dim]; // [rows, ffn_dim]
        match &ffn.up {
            FfnUp::Plain(up) => {
                up.forward(k, input, rows, hidden);
                k.activation(act, hidden);
            }
            FfnUp::Gated(gate_up) => {
                // hidden = act(gate(x)) * up(x), gate and up one matrix
                let gu = &mut buf.gate_up[..2 * rows * ffn_dim]; // [rows, 2 ffn_dim]: gate | up
                gate_up.forward(k, input, rows, gu);
                gated(k, act, gu, ffn_dim, hidden);
            }
        }
        ffn.down.forward(k, hidden, rows, &mut buf.o[..rows * self.cfg.d_model]);
        buf.residual(k, self.cfg.norm, &ffn.norm, x);
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
    /// The attention kernel's buffers (plan, partial sums, packed K/V).
    attn_scratch: kernels::AttnScratch,
    /// A gated FFN's gate and up projections. `[rows, 2 ffn_dim]`
    gate_up: Vec<f32>,
}

impl Buffers {
    /// Buffers for `rows` rows of width `d`, attention projections of width `inner`.
    fn new(rows: usize, d: usize, inner: usize, ffn_dim: usize) -> Self {
        let mut b = Self::default();
        b.ensure(rows, d, inner, ffn_dim);
        b
    }

    /// Make every buffer hold `rows` rows (no allocation when they already do).
    fn ensure(&mut self, rows: usize, d: usize, inner: usize, ffn_dim: usize) {
        for (v, n) in [
            (&mut self.h, rows * d),
            (&mut self.qkv, 3 * rows * inner),
            (&mut self.q, rows * inner),
            (&mut self.attn, rows * inner),
            (&mut self.o, rows * d),
            (&mut self.ffn, rows * ffn_dim),
            (&mut self.gate_up, 2 * rows * ffn_dim),
        ] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
    }

    /// `x = x + o` (pre-norm) or `x = norm(x + o)` (post-norm), `o` being the sublayer output in `self.o`.
    fn residual(&mut self, k: &Kernels, place: NormPlacement, norm: &Norm, x: &mut [f32]) {
        let n = x.len();
        k.add(x, &self.o[..n]);
        if place == NormPlacement::PostNorm {
            norm.forward(k, x, &mut self.h[..n]);
            x.copy_from_slice(&self.h[..n]);
        }
    }
}

/// The input of a sublayer: `norm(x)` (pre-norm, written to `h`) or `x` itself (post-norm).
fn pre_norm<'a>(k: &Kernels, place: NormPlacement, norm: &Norm, x: &'a [f32], h: &'a mut [f32]) -> &'a [f32] {
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
pub(crate) struct Seq2SeqState {
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
    /// Scratch of the final norm and LM head.
    head: Scratch,
    /// The decoder's residual stream. `[rows, d]`
    x: Vec<f32>,
    n_rows_max: usize,
    /// The most decoder positions asked for in `start`.
    max_len: usize,
    /// Cap on the bytes of the self-attention caches of every layer together.
    max_bytes: usize,
}

/// Room a state keeps for decoding: at most `max_rows` rows (sources × beams), `max_new_tokens` positions each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Room {
    pub(crate) max_rows: usize,
    pub(crate) max_new_tokens: usize,
}

impl Seq2SeqState {
    /// Re-allocate the self-attention caches with room for at least `needed` positions (doubling, at most
    /// `max_len`, within `max_bytes`), copying the filled positions.
    fn grow_caches(&mut self, needed: usize) -> Result<()> {
        let Some(first) = self.self_kv.first() else {
            return Ok(());
        };
        let shape = KvShape {
            capacity: needed.max(2 * first.capacity()).min(self.max_len),
            ..first.shape()
        };
        KvCache::check_layers(self.self_kv.len(), shape, self.max_bytes)?;
        for cache in &mut self.self_kv {
            let mut grown = KvCache::new(shape, cache.batch(), self.max_bytes)?;
            grown.append_strided(cache.k(), cache.v(), cache.strides(), cache.len())?;
            *cache = grown;
        }
        Ok(())
    }

    /// Decoder positions already fed to every row.
    pub(crate) fn len(&self) -> usize {
        self.self_kv.first().map_or(0, KvCache::len)
    }

    /// Decoder rows in use.
    pub(crate) fn batch(&self) -> usize {
        self.row_source.len()
    }

    /// The most decoder positions a row holds.
    pub(crate) fn capacity(&self) -> usize {
        self.max_len
    }

    /// Encoder output `[n_src, src_len, d_model]` (rows past a source's length are padding).
    pub(crate) fn encoder_output(&self) -> &[f32] {
        &self.memory
    }

    /// Padded source length.
    pub(crate) fn src_len(&self) -> usize {
        self.src_len
    }

    /// Each source's own length.
    pub(crate) fn src_lens(&self) -> &[usize] {
        &self.src_lens
    }

    /// Decoder row -> source index.
    pub(crate) fn row_sources(&self) -> &[usize] {
        &self.row_source
    }

    /// Bytes of the decoder's self-attention caches as allocated now.
    pub(crate) fn self_kv_bytes(&self) -> usize {
        self.self_kv.iter().map(KvCache::bytes).sum()
    }

    /// Bytes held by the cross-attention K/V (independent of the number of beams).
    pub(crate) fn cross_kv_bytes(&self) -> usize {
        self.cross.iter().map(|c| c.data.len() * 4).sum()
    }
}

impl Decoder for Seq2Seq {
    type Cache = Seq2SeqState;

    fn vocab_size(&self) -> usize {
        self.cfg.tgt_vocab_size
    }

    fn step(&self, st: &mut Seq2SeqState, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        self.forward(st, StepIo::last(tokens, n, logits))
    }

    fn reorder(&self, st: &mut Seq2SeqState, src: &[usize]) -> Result<()> {
        self.reorder_rows(st, src)
    }

    fn cached_len(&self, st: &Seq2SeqState) -> usize {
        st.len()
    }

    fn kernels(&self) -> Kernels {
        self.kernels
    }
}

impl Seq2Seq {
    /// `io.n` new tokens per row through the decoder, logits of the positions `io.which` asks for (on rayon's
    /// pool).
    pub(crate) fn forward(&self, st: &mut Seq2SeqState, io: StepIo<'_>) -> Result<()> {
        on_pool(|| self.decode(st, io))
    }

    /// [`Seq2Seq::forward`].
    fn decode(&self, st: &mut Seq2SeqState, io: StepIo<'_>) -> Result<()> {
        let k = &self.kernels;
        let d = self.cfg.d_model;
        let heads = Heads::new(self.cfg.n_decoder_heads, self.cfg.head_dim);
        let head_dim = heads.head_dim;
        let inner = self.cfg.inner(self.cfg.n_decoder_heads);
        let batch = st.row_source.len();
        let shape = io.shape(batch, self.cfg.tgt_vocab_size)?;
        let (tokens, n) = (io.tokens, io.n);
        let past = st.len();
        if past + n > st.max_len {
            return Err(Error::CacheFull {
                needed: past + n,
                capacity: st.max_len,
            });
        }
        if past + n > st.self_kv[0].capacity() {
            st.grow_caches(past + n)?;
        }
        let rows = shape.rows();
        st.buf.ensure(rows, d, inner, self.cfg.decoder_ffn_dim);
        let buf = &mut st.buf;

        // 1. token embeddings * scale + positions past .. past + n (+ embedding norm): x [batch * n, d]
        let mut x = std::mem::take(&mut st.x);
        x.resize(rows * d, 0.0);
        self.embed(Stack::Decoder, tokens, batch, n, past, &mut x)?;

        for (l, layer) in self.decoder.iter().enumerate() {
            // 2. causal self-attention over the cache (the new positions appended in place)
            let input = pre_norm(k, self.cfg.norm, &layer.attn.norm, &x, &mut buf.h);
            let p = layer.attn.qkv.forward(k, input, rows, inner, &mut buf.qkv);
            let cache = &mut st.self_kv[l];
            let src = packed_strides(n, p.pos, head_dim);
            cache.append_strided(&buf.qkv[p.k..], &buf.qkv[p.v..], src, n)?;
            let args = AttnArgs::causal(heads, batch, n, past + n)
                .with_q_strides(src)
                .with_kv_strides(cache.strides());
            let args = self.self_attn_args(Stack::Decoder, args);
            let qkv = [&buf.qkv[p.q..], cache.k(), cache.v()];
            io.attn.attend(
                k,
                &mut buf.attn_scratch,
                AttnKind::Decoder,
                &args,
                qkv,
                &mut buf.attn[..rows * inner],
            );
            layer
                .attn
                .out
                .forward(k, &buf.attn[..rows * inner], rows, &mut buf.o[..rows * d]);
            buf.residual(k, self.cfg.norm, &layer.attn.norm, &mut x);

            // 3. cross-attention: each run of rows of one source reads that source's K/V
            let input = pre_norm(k, self.cfg.norm, &layer.cross.norm, &x, &mut buf.h);
            layer.cross.q.forward(k, input, rows, &mut buf.q[..rows * inner]);
            let kv = &st.cross[l];
            let mut r0 = 0;
            while r0 < batch {
                let s = st.row_source[r0];
                let r1 = r0 + st.row_source[r0..].iter().take_while(|&&t| t == s).count();
                let base = s * st.src_len * kv.pos;
                // batch stride 0: every beam of the source reads the same K/V
                let args = AttnArgs::cross(heads, r1 - r0, n, st.src_lens[s]).with_kv_strides(Strides {
                    batch: 0,
                    pos: kv.pos,
                    head: head_dim,
                });
                let args = match self.cfg.score_scale {
                    ScoreScale::InvSqrtHeadDim => args,
                    ScoreScale::One => args.with_scale(1.0),
                };
                let qkv = [
                    &buf.q[r0 * n * inner..r1 * n * inner],
                    &kv.data[base + kv.k_off..],
                    &kv.data[base + kv.v_off..],
                ];
                io.attn.attend(
                    k,
                    &mut buf.attn_scratch,
                    AttnKind::Cross,
                    &args,
                    qkv,
                    &mut buf.attn[r0 * n * inner..r1 * n * inner],
                );
                r0 = r1;
            }
            layer
                .cross
                .out
                .forward(k, &buf.attn[..rows * inner], rows, &mut buf.o[..rows * d]);
            buf.residual(k, self.cfg.norm, &layer.cross.norm, &mut x);

            // 4. feed-forward
            self.feed_forward(&layer.ffn, buf, &mut x, rows);
        }

        // 5. (final norm) and LM head on the positions that need logits
        self.head.forward(k, &x, shape, io.which, &mut st.head, io.logits);
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
