//! T5 and Flan-T5 (`T5ForConditionalGeneration`): no absolute positions but a learned relative position bias
//! of the self-attention scores (log-spaced distance buckets, bidirectional in the encoder, causal in the decoder,
//! the first layer's table shared by its whole stack: [`super::relative_position`]), unscaled scores, RMS norms
//! without bias (`T5LayerNorm`), pre-norm with a final norm per stack, no biases anywhere, a ReLU feed-forward
//! (T5) or a gated GELU one (v1.1 / Flan-T5 `gated-gelu`), attention width `num_heads * d_kv` (which need not be
//! d_model), and a head tied to the shared embeddings whose input is scaled by `d_model^-0.5` (untied in v1.1 /
//! Flan-T5, unscaled). A configuration of the shared encoder-decoder runtime ([`super::seq2seq`]).

use serde::Deserialize;

use super::relative_position::RelativeBuckets;
use super::seq2seq::{
    self, ConfigGeneration, CrossProj, FfnKind, FfnNames, HeadMatrix, Naming, NormKind, NormPlacement, PositionKind,
    Positions, ScoreScale, SelfProj, Seq2SeqConfig,
};
use super::{Loaded, Source};
use crate::layers::Bias;
use crate::{Error, Result};

/// Positions a T5 model is given: it has no learned limit (the bias saturates past `max_distance`); this bounds
/// one sequence of the encoder or the decoder.
const T5_MAX_POSITIONS: usize = 1 << 14;

/// `encoder.block.{l}.layer.0.SelfAttention.q.weight`, ...: the encoder block has self-attention (layer 0) and
/// the feed-forward (layer 1), the decoder block self-attention, cross-attention (layer 1) and feed-forward
/// (layer 2).
const T5: Naming = Naming {
    layers: ["encoder.block.", "decoder.block."],
    sep: ".",
    norm_params: [".weight", ".bias"],
    self_attn: ["layer.0.layer_norm", "layer.0.SelfAttention.o"],
    qkv: SelfProj::Separate([
        "layer.0.SelfAttention.q",
        "layer.0.SelfAttention.k",
        "layer.0.SelfAttention.v",
    ]),
    cross_attn: ["layer.1.layer_norm", "layer.1.EncDecAttention.o"],
    cross_qkv: CrossProj::Separate([
        "layer.1.EncDecAttention.q",
        "layer.1.EncDecAttention.k",
        "layer.1.EncDecAttention.v",
    ]),
    ffn: [
        FfnNames {
            norm: "layer.1.layer_norm",
            up: "layer.1.DenseReluDense.wi",
            down: "layer.1.DenseReluDense.wo",
            gate: None,
        },
        FfnNames {
            norm: "layer.2.layer_norm",
            up: "layer.2.DenseReluDense.wi",
            down: "layer.2.DenseReluDense.wo",
            gate: None,
        },
    ],
    bias: Bias::None,
    head_bias: Bias::None,
    src_embed: &["encoder.embed_tokens.weight", "shared.weight"],
    tgt_embed: &["decoder.embed_tokens.weight", "shared.weight"],
    positions: None,
    embed_norms: None,
    relative_bias: Some([
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ]),
    final_norms: Some(["encoder.final_layer_norm", "decoder.final_layer_norm"]),
    head: "lm_head.weight",
    logits_bias: None,
};

/// T5's, with the gated feed-forward: `wo(act(wi_0 x) * wi_1 x)`.
const T5_GATED: Naming = Naming {
    ffn: [
        FfnNames {
            norm: "layer.1.layer_norm",
            up: "layer.1.DenseReluDense.wi_1",
            down: "layer.1.DenseReluDense.wo",
            gate: Some("layer.1.DenseReluDense.wi_0"),
        },
        FfnNames {
            norm: "layer.2.layer_norm",
            up: "layer.2.DenseReluDense.wi_1",
            down: "layer.2.DenseReluDense.wo",
            gate: Some("layer.2.DenseReluDense.wi_0"),
        },
    ],
    ..T5
};

/// transformers' `T5Config` (defaults: t5-small's shape).
#[derive(Deserialize)]
struct T5Config {
    #[serde(default = "d::vocab_size")]
    vocab_size: usize,
    #[serde(default = "d::d_model")]
    d_model: usize,
    #[serde(default = "d::d_kv")]
    d_kv: usize,
    #[serde(default = "d::d_ff")]
    d_ff: usize,
    #[serde(default = "d::num_layers")]
    num_layers: usize,
    #[serde(default)]
    num_decoder_layers: Option<usize>,
    #[serde(default = "d::num_heads")]
    num_heads: usize,
    #[serde(default = "d::num_buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "d::max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "d::eps")]
    layer_norm_epsilon: f32,
    #[serde(default = "d::feed_forward_proj")]
    feed_forward_proj: String,
    #[serde(default = "d::yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default)]
    decoder_start_token_id: u32,
}

mod d {
    pub(super) fn vocab_size() -> usize {
        32128
    }
    pub(super) fn d_model() -> usize {
        512
    }
    pub(super) fn d_kv() -> usize {
        64
    }
    pub(super) fn d_ff() -> usize {
        2048
    }
    pub(super) fn num_layers() -> usize {
        6
    }
    pub(super) fn num_heads() -> usize {
        8
    }
    pub(super) fn num_buckets() -> usize {
        32
    }
    pub(super) fn max_distance() -> usize {
        128
    }
    pub(super) fn eps() -> f32 {
        1e-6
    }
    pub(super) fn feed_forward_proj() -> String {
        "relu".into()
    }
    pub(super) fn yes() -> bool {
        true
    }
}

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let file = src.config.path();
    let c: T5Config = src.config.parse()?;
    let generation: ConfigGeneration = src.config.parse()?;
    // "relu", "gated-gelu", "gated-silu", ...: transformers' reading, where gated-gelu means gelu_new
    let (ffn, act) = match c.feed_forward_proj.split_once('-') {
        Some(("gated", act)) => (FfnKind::Gated, if act == "gelu" { "gelu_new" } else { act }),
        None => (FfnKind::Plain, c.feed_forward_proj.as_str()),
        Some(_) => {
            return Err(Error::InvalidConfig {
                file: file.to_path_buf(),
                field: "feed_forward_proj".into(),
                reason: format!("expected ACT or gated-ACT, found {:?}", c.feed_forward_proj),
            })
        }
    };
    let cfg = Seq2SeqConfig {
        names: match ffn {
            FfnKind::Plain => &T5,
            FfnKind::Gated => &T5_GATED,
        },
        d_model: c.d_model,
        n_encoder_layers: c.num_layers,
        n_decoder_layers: c.num_decoder_layers.unwrap_or(c.num_layers),
        n_encoder_heads: c.num_heads,
        n_decoder_heads: c.num_heads,
        head_dim: c.d_kv,
        encoder_ffn_dim: c.d_ff,
        decoder_ffn_dim: c.d_ff,
        activation: super::activation(file, "feed_forward_proj", act)?,
        ffn,
        norm: NormPlacement::PreNorm,
        norm_kind: NormKind::Rms,
        layer_norm_eps: c.layer_norm_epsilon,
        score_scale: ScoreScale::One,
        embed_scale: 1.0,
        positions: Positions {
            kind: PositionKind::RelativeBias(RelativeBuckets {
                num_buckets: c.relative_attention_num_buckets,
                max_distance: c.relative_attention_max_distance,
            }),
            max: T5_MAX_POSITIONS,
        },
        src_vocab_size: c.vocab_size,
        tgt_vocab_size: c.vocab_size,
        head: if c.tie_word_embeddings {
            HeadMatrix::TiedScaled {
                scale: (c.d_model as f32).powf(-0.5),
            }
        } else if src.weights.contains(T5.head) {
            HeadMatrix::Own
        } else {
            // untied but saved without a head: transformers 5 ties it to the shared table on load, unscaled
            HeadMatrix::TiedToTargetEmbeddings
        },
        decoder_start_token_id: c.decoder_start_token_id,
        pad_token_id: c.pad_token_id,
    }
    .validate(file)?;
    seq2seq::load(src, cfg, seq2seq::hf_defaults(&generation, src.generation))
}
