//! M2M100 / NLLB (`M2M100ForConditionalGeneration`): the pre-norm Transformer of fairseq's many-to-many
//! translation models. Embeddings scaled by `sqrt(d_model)` (`scale_embedding`), sinusoidal positions of the
//! tensor2tensor kind offset by the padding id (the first token is at position `pad + 1`; the sinusoids are
//! computed, not stored), pre-norm layers with a final norm per stack, ReLU feed-forward, head tied to the shared
//! embeddings. The source starts with its language token and the target language is forced as the first
//! generated token (`forced_bos_token_id`, from the generation config or a call's `SearchOptions::rules`; no CLI
//! flag sets it yet). A configuration of the
//! shared encoder-decoder runtime ([`super::seq2seq`]), named like Marian.

use super::seq2seq::{
    self, BartLikeConfig, BartLikeDefaults, ConfigGeneration, FairseqLayout, Naming, NormPlacement, PositionKind,
    MARIAN,
};
use super::{Loaded, Source};
use crate::Result;
use kernels::Sinusoid;

/// `model.encoder.layers.{l}...` as Marian, plus the final norms of each stack.
const M2M100: Naming = Naming {
    final_norms: Some(["model.encoder.layer_norm", "model.decoder.layer_norm"]),
    logits_bias: None,
    ..MARIAN
};

/// transformers' `M2M100Config` defaults that differ from BART's (facebook/m2m100_418M's).
const DEFAULTS: BartLikeDefaults = BartLikeDefaults {
    vocab_size: 128112,
    activation_function: "relu",
    scale_embedding: true,
};

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let file = src.config.path();
    let c: BartLikeConfig = src.config.parse()?;
    let generation: ConfigGeneration = src.config.parse()?;
    let layout = FairseqLayout {
        names: &M2M100,
        norm: NormPlacement::PreNorm,
        positions: PositionKind::Sinusoid {
            kind: Sinusoid::Tensor2Tensor,
            first: c.pad_token_id as usize + 1,
        },
    };
    let cfg = seq2seq::fairseq_config(file, &c.shape(&DEFAULTS), layout)?.validate(file)?;
    seq2seq::load(src, cfg, seq2seq::hf_defaults(&generation, src.generation))
}
