//! M2M100 / NLLB (`M2M100ForConditionalGeneration`): the pre-norm Transformer of fairseq's many-to-many
//! translation models. Embeddings scaled by `sqrt(d_model)` (`scale_embedding`), sinusoidal positions of the
//! tensor2tensor kind offset by the padding id (the first token is at position `pad + 1`; the sinusoids are
//! computed, not stored), pre-norm layers with a final norm per stack, ReLU feed-forward, head tied to the shared
//! embeddings. The source starts with its language token and the target language is forced as the first
//! generated token (`forced_bos_token_id`, which `qkv translate --target-lang` sets). A configuration of the
//! shared encoder-decoder runtime ([`super::seq2seq`]), named like Marian.

use kernels::Sinusoid;
use serde::Deserialize;

use super::seq2seq::{
    self, ConfigGeneration, FfnKind, HeadMatrix, Naming, NormKind, NormPlacement, PositionKind, Positions, ScoreScale,
    Seq2SeqConfig, MARIAN,
};
use super::{Loaded, Source};
use crate::Result;

/// `model.encoder.layers.{l}...` as Marian, plus the final norms of each stack.
const M2M100: Naming = Naming {
    final_norms: Some(["model.encoder.layer_norm", "model.decoder.layer_norm"]),
    logits_bias: None,
    ..MARIAN
};

/// transformers' `M2M100Config` (its defaults are facebook/m2m100_418M's shape).
#[derive(Deserialize)]
struct M2M100Config {
    #[serde(default = "d::vocab_size")]
    vocab_size: usize,
    #[serde(default = "d::d_model")]
    d_model: usize,
    #[serde(default = "d::layers")]
    encoder_layers: usize,
    #[serde(default = "d::layers")]
    decoder_layers: usize,
    #[serde(default = "d::heads")]
    encoder_attention_heads: usize,
    #[serde(default = "d::heads")]
    decoder_attention_heads: usize,
    #[serde(default = "d::ffn_dim")]
    encoder_ffn_dim: usize,
    #[serde(default = "d::ffn_dim")]
    decoder_ffn_dim: usize,
    #[serde(default = "d::activation_function")]
    activation_function: String,
    #[serde(default = "d::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "d::yes")]
    scale_embedding: bool,
    #[serde(default = "d::yes")]
    tie_word_embeddings: bool,
    #[serde(default = "d::pad")]
    pad_token_id: u32,
    #[serde(default = "d::eos")]
    decoder_start_token_id: u32,
}

mod d {
    pub(super) fn vocab_size() -> usize {
        128112
    }
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
    pub(super) fn activation_function() -> String {
        "relu".into()
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

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let file = src.config.path();
    let c: M2M100Config = src.config.parse()?;
    let generation: ConfigGeneration = src.config.parse()?;
    let cfg = Seq2SeqConfig {
        names: &M2M100,
        d_model: c.d_model,
        n_encoder_layers: c.encoder_layers,
        n_decoder_layers: c.decoder_layers,
        n_encoder_heads: c.encoder_attention_heads,
        n_decoder_heads: c.decoder_attention_heads,
        head_dim: c.d_model / c.encoder_attention_heads.max(1),
        encoder_ffn_dim: c.encoder_ffn_dim,
        decoder_ffn_dim: c.decoder_ffn_dim,
        activation: super::activation(file, "activation_function", &c.activation_function)?,
        ffn: FfnKind::Plain,
        norm: NormPlacement::PreNorm,
        norm_kind: NormKind::Layer,
        // torch.nn.LayerNorm's default
        layer_norm_eps: 1e-5,
        score_scale: ScoreScale::InvSqrtHeadDim,
        embed_scale: if c.scale_embedding {
            (c.d_model as f32).sqrt()
        } else {
            1.0
        },
        positions: Positions {
            kind: PositionKind::Sinusoid {
                kind: Sinusoid::Tensor2Tensor,
                first: c.pad_token_id as usize + 1,
            },
            max: c.max_position_embeddings,
        },
        src_vocab_size: c.vocab_size,
        tgt_vocab_size: c.vocab_size,
        head: if c.tie_word_embeddings {
            HeadMatrix::TiedToTargetEmbeddings
        } else {
            HeadMatrix::Own
        },
        decoder_start_token_id: c.decoder_start_token_id,
        pad_token_id: c.pad_token_id,
    }
    .validate(file)?;
    seq2seq::load(src, cfg, seq2seq::hf_defaults(&generation, src.generation))
}
