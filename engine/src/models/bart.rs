//! BART and mBART (`BartForConditionalGeneration`, `MBartForConditionalGeneration`): learned positions (each
//! stack its own table, position `p` at row `p + 2`), a norm of the embeddings (`layernorm_embedding`), GELU
//! feed-forward, head tied to the shared embeddings plus `final_logits_bias`. BART is post-norm with unscaled
//! embeddings; mBART is pre-norm with a final norm per stack and (mBART-50) `sqrt(d_model)`-scaled embeddings,
//! and translates into the language forced as the first generated token (`forced_bos_token_id`, which
//! `qkv translate --target-lang` sets). Configurations of the shared encoder-decoder runtime
//! ([`super::seq2seq`]), named like Marian.

use serde::Deserialize;

use super::seq2seq::{
    self, ConfigGeneration, FfnKind, HeadMatrix, Naming, NormKind, NormPlacement, PositionKind, Positions, ScoreScale,
    Seq2SeqConfig, MARIAN,
};
use super::{Loaded, Source};
use crate::Result;

/// BART's offset of the learned positions (`BartLearnedPositionalEmbedding.offset`).
const POSITION_OFFSET: usize = 2;

/// Marian's layer names, plus the learned positions and the embedding norms.
const BART: Naming = Naming {
    positions: Some([
        "model.encoder.embed_positions.weight",
        "model.decoder.embed_positions.weight",
    ]),
    embed_norms: Some(["model.encoder.layernorm_embedding", "model.decoder.layernorm_embedding"]),
    ..MARIAN
};

/// BART's, plus the final norms of each stack.
const MBART: Naming = Naming {
    final_norms: Some(["model.encoder.layer_norm", "model.decoder.layer_norm"]),
    ..BART
};

/// transformers' `BartConfig` / `MBartConfig` (defaults: bart-large's shape).
#[derive(Deserialize)]
struct BartConfig {
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
    #[serde(default)]
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
        50265
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
        "gelu".into()
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

/// The two variants: where the norms sit, and whether the stacks end with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Bart,
    MBart,
}

/// The registry's loader for `bart`.
pub(crate) fn load_bart(src: &Source<'_>) -> Result<Loaded> {
    load(src, Variant::Bart)
}

/// The registry's loader for `mbart`.
pub(crate) fn load_mbart(src: &Source<'_>) -> Result<Loaded> {
    load(src, Variant::MBart)
}

fn load(src: &Source<'_>, variant: Variant) -> Result<Loaded> {
    let file = src.config.path();
    let c: BartConfig = src.config.parse()?;
    let generation: ConfigGeneration = src.config.parse()?;
    let (names, norm) = match variant {
        Variant::Bart => (&BART, NormPlacement::PostNorm),
        Variant::MBart => (&MBART, NormPlacement::PreNorm),
    };
    let cfg = Seq2SeqConfig {
        names,
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
        norm,
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
            kind: PositionKind::Learned {
                offset: POSITION_OFFSET,
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
