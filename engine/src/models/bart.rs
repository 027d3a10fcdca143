//! BART and mBART (`BartForConditionalGeneration`, `MBartForConditionalGeneration`): learned positions (each
//! stack its own table, position `p` at row `p + 2`), a norm of the embeddings (`layernorm_embedding`), GELU
//! feed-forward, head tied to the shared embeddings plus `final_logits_bias`. BART is post-norm with unscaled
//! embeddings; mBART is pre-norm with a final norm per stack and (mBART-50) `sqrt(d_model)`-scaled embeddings,
//! and translates into the language forced as the first generated token (`forced_bos_token_id`, from the
//! generation config or a call's `SearchOptions::rules`; no CLI flag sets it yet). Configurations of the shared encoder-decoder runtime
//! ([`super::seq2seq`]), named like Marian.

use super::seq2seq::{
    self, BartLikeConfig, BartLikeDefaults, ConfigGeneration, FairseqLayout, Naming, NormPlacement, PositionKind,
    MARIAN,
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

/// transformers' `BartConfig` / `MBartConfig` defaults that differ from M2M100's (bart-large's).
const DEFAULTS: BartLikeDefaults = BartLikeDefaults {
    vocab_size: 50265,
    activation_function: "gelu",
    scale_embedding: false,
};

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
    let c: BartLikeConfig = src.config.parse()?;
    let generation: ConfigGeneration = src.config.parse()?;
    let (names, norm) = match variant {
        Variant::Bart => (&BART, NormPlacement::PostNorm),
        Variant::MBart => (&MBART, NormPlacement::PreNorm),
    };
    let layout = FairseqLayout {
        names,
        norm,
        positions: PositionKind::Learned {
            offset: POSITION_OFFSET,
        },
    };
    let cfg = seq2seq::fairseq_config(file, &c.shape(&DEFAULTS), layout)?.validate(file)?;
    seq2seq::load(src, cfg, seq2seq::hf_defaults(&generation, src.generation))
}
