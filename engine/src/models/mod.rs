//! The model families and their registry: one file per architecture, each with its config (read from
//! `config.json`) and its weight binding, and [`FAMILIES`], the one place that maps `config.json`'s
//! `model_type` (or, when it has none, its `architectures`) to a family.
//!
//! | file | families | shared with |
//! | --- | --- | --- |
//! | `llama.rs` | `llama`: RMSNorm, RoPE, grouped-query attention, SwiGLU | `decoder_only.rs` |
//! | `gpt2.rs` | `gpt2`: learned positions, fused QKV, GELU | `decoder_only.rs` |
//! | `qwen2.rs`, `qwen3.rs`, `mistral.rs`, `phi3.rs`, `gemma.rs` | `qwen2`, `qwen3`, `mistral`, `phi3`, `gemma2`, `gemma3_text`: each reads its config into a [`rotary::Spec`] | `rotary.rs` |
//! | `rotary.rs` | the rotary GQA decoder those families configure: q/k/v bias, fused projections, per-head q/k norm, sliding windows, soft-capping, sandwich and (1+w) norms, GeGLU, per-layer RoPE tables | `decoder_only.rs` |
//! | `rope.rs` | RoPE frequencies, plain or scaled (`linear`, `llama3`, `longrope`), for every family with RoPE | |
//! | `seq2seq.rs` | `marian`, `ct2_transformer_seq2seq`: one encoder-decoder runtime, a naming scheme per checkpoint format | |
//! | `decoder_only.rs` | the plumbing every decoder-only family shares: step checks, KV caches and their memory cap, final norm + LM head, the [`crate::Decoder`] implementation | |
//!
//! # Adding a decoder-only family
//!
//! When it is a rotary GQA decoder (most are), write `models/<family>.rs` that reads its `config.json` into a
//! [`rotary::Spec`] (`Spec::llama_like` and what differs, see `qwen3.rs`) and calls [`rotary::load`]; else:
//!
//! Write `models/<family>.rs` with a loader and a [`decoder_only::Blocks`] (its embeddings and blocks; it binds
//! its final norm and LM head, which the shared plumbing runs with the caches and step checks), then add one
//! line to [`FAMILIES`]:
//!
//! ```ignore
//! // models/falcon.rs
//! #[derive(serde::Deserialize)]
//! struct FalconConfig { hidden_size: usize, num_hidden_layers: usize, /* ... */ }
//!
//! pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
//!     let c: FalconConfig = src.config.parse()?; // an error names config.json and the field
//!     let (blocks, head) = Falcon::bind(src, &c)?; // impl Blocks for Falcon, and its LmHead
//!     Ok(src.decoder_only((blocks, head), c.bos_token_id, c.eos_token_id))
//! }
//!
//! // models/mod.rs: `mod falcon;` and, in FAMILIES,
//! Family::new("falcon", &["FalconForCausalLM"], falcon::load),
//! ```
//!
//! An encoder-decoder family in the Marian / CTranslate2 mould is a naming scheme in `seq2seq.rs` (the tensor
//! names of its layers) and a loader that turns its config into a `Seq2SeqConfig`.

mod bart;
pub(crate) mod decoder_only;
mod gemma;
mod gpt2;
mod llama;
mod m2m100;
mod mistral;
mod phi3;
mod qwen2;
mod qwen3;
mod relative_position;
mod rope;
mod rotary;
pub(crate) mod seq2seq;
mod t5;

use std::path::Path;

use kernels::{Activation, Kernels};
use loaders::config::{GenerationConfig, RawConfig};

use crate::decoder::Decoder;
use crate::layers::{LmHead, TensorSource, WeightType};
use crate::search::SearchOptions;
use crate::{Error, Result};
use decoder_only::{Blocks, CausalCache, CausalLm};
use seq2seq::{Seq2Seq, Seq2SeqState};

/// One entry of the registry: the `model_type` a family reads, the `architectures` names that mean it when a
/// config has no `model_type`, and its loader.
#[derive(Clone, Copy)]
pub(crate) struct Family {
    pub(crate) model_type: &'static str,
    architectures: &'static [&'static str],
    load: fn(&Source<'_>) -> Result<Loaded>,
}

impl Family {
    /// Load the model `src` describes (its config is one this family reads).
    pub(crate) fn load(&self, src: &Source<'_>) -> Result<Loaded> {
        (self.load)(src)
    }

    const fn new(
        model_type: &'static str,
        architectures: &'static [&'static str],
        load: fn(&Source<'_>) -> Result<Loaded>,
    ) -> Self {
        Self {
            model_type,
            architectures,
            load,
        }
    }
}

/// Every family this engine runs.
pub(crate) const FAMILIES: &[Family] = &[
    Family::new("llama", &["LlamaForCausalLM", "LlamaModel"], llama::load),
    Family::new("gpt2", &["GPT2LMHeadModel", "GPT2Model"], gpt2::load),
    Family::new("qwen2", &["Qwen2ForCausalLM"], qwen2::load),
    Family::new("qwen3", &["Qwen3ForCausalLM"], qwen3::load),
    Family::new("mistral", &["MistralForCausalLM"], mistral::load),
    Family::new("phi3", &["Phi3ForCausalLM"], phi3::load),
    Family::new("gemma2", &["Gemma2ForCausalLM"], gemma::load_gemma2),
    Family::new("gemma3_text", &["Gemma3ForCausalLM"], gemma::load_gemma3),
    Family::new("marian", &["MarianMTModel", "MarianModel"], seq2seq::load_marian),
    Family::new("ct2_transformer_seq2seq", &[], seq2seq::load_ct2),
    Family::new(
        "m2m_100",
        &["M2M100ForConditionalGeneration", "M2M100Model"],
        m2m100::load,
    ),
    Family::new("bart", &["BartForConditionalGeneration", "BartModel"], bart::load_bart),
    Family::new(
        "mbart",
        &["MBartForConditionalGeneration", "MBartModel"],
        bart::load_mbart,
    ),
    Family::new("t5", &["T5ForConditionalGeneration", "T5Model"], t5::load),
];

/// The family of a config: by `model_type`, else by its first architecture (as transformers' `AutoConfig` reads
/// old files); an error naming both and the families there are.
pub(crate) fn family(config: &RawConfig) -> Result<&'static Family> {
    let found = match config.model_type() {
        Some(t) => FAMILIES.iter().find(|f| f.model_type == t),
        None => config
            .architectures()
            .first()
            .and_then(|a| FAMILIES.iter().find(|f| f.architectures.contains(&a.as_str()))),
    };
    found.ok_or_else(|| {
        let known: Vec<&str> = FAMILIES.iter().map(|f| f.model_type).collect();
        Error::Unsupported {
            what: format!(
                "{}: model_type {:?} (architectures {:?}); qkv runs {}",
                config.path().display(),
                config.model_type().unwrap_or("(none)"),
                config.architectures(),
                known.join(", ")
            ),
        }
    })
}

/// What a family's loader reads.
pub(crate) struct Source<'a> {
    pub(crate) config: &'a RawConfig,
    /// `generation_config.json`, when the directory has one.
    pub(crate) generation: Option<&'a GenerationConfig>,
    /// The weights (memory-mapped safetensors).
    pub(crate) weights: &'a dyn TensorSource,
    pub(crate) kernels: Kernels,
    /// How the linear layers are held.
    pub(crate) weight_type: WeightType,
}

impl Source<'_> {
    /// How the linear layers are held: this source's weight type, packed for its kernels.
    pub(crate) fn hold(&self) -> crate::layers::Hold {
        crate::layers::Hold {
            weights: self.weight_type,
            kernels: self.kernels,
        }
    }

    /// A decoder-only family's blocks and final norm + LM head, with the shared plumbing around them, on this
    /// source's kernels.
    pub(crate) fn decoder_only(
        &self,
        (blocks, head): (impl Blocks + 'static, LmHead),
        bos: Option<u32>,
        eos: Vec<u32>,
    ) -> Loaded {
        Loaded {
            network: Network::DecoderOnly(Box::new(CausalLm::new(Box::new(blocks), head, self.kernels))),
            bos,
            eos,
        }
    }
}

/// A loaded network and the special ids `config.json` gives it.
pub(crate) struct Loaded {
    pub(crate) network: Network,
    pub(crate) bos: Option<u32>,
    /// `config.json`'s end-of-sequence ids (`generation_config.json`'s are added by [`crate::Model`]).
    pub(crate) eos: Vec<u32>,
}

/// The two shapes of network: every decoder-only family behind the shared [`CausalLm`], and the encoder-decoder
/// runtime with the search defaults its config gives.
#[derive(Debug)]
pub(crate) enum Network {
    DecoderOnly(Box<CausalLm>),
    EncoderDecoder {
        net: Box<Seq2Seq>,
        /// What `translate` does unless a call says otherwise.
        defaults: Box<SearchOptions>,
    },
}

/// The state of one session of a [`Network`] (see [`crate::Session`]).
#[derive(Debug)]
pub(crate) enum State {
    DecoderOnly(CausalCache),
    EncoderDecoder(Box<Seq2SeqState>),
}

/// A state of the other kind of network than the one it is given to (a bug of this crate, never of a caller:
/// a session holds the state its own network made).
fn foreign_state() -> Error {
    Error::Request("a session state used with another network than the one that made it".into())
}

impl Decoder for Network {
    type Cache = State;

    fn vocab_size(&self) -> usize {
        match self {
            Network::DecoderOnly(m) => m.vocab_size(),
            Network::EncoderDecoder { net, .. } => net.vocab_size(),
        }
    }

    fn step(&self, state: &mut State, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        match (self, state) {
            (Network::DecoderOnly(m), State::DecoderOnly(c)) => m.step(c, tokens, n, logits),
            (Network::EncoderDecoder { net, .. }, State::EncoderDecoder(s)) => net.step(s, tokens, n, logits),
            _ => Err(foreign_state()),
        }
    }

    fn reorder(&self, state: &mut State, src: &[usize]) -> Result<()> {
        match (self, state) {
            (Network::DecoderOnly(m), State::DecoderOnly(c)) => m.reorder(c, src),
            (Network::EncoderDecoder { net, .. }, State::EncoderDecoder(s)) => net.reorder(s, src),
            _ => Err(foreign_state()),
        }
    }

    fn cached_len(&self, state: &State) -> usize {
        match state {
            State::DecoderOnly(c) => c.len(),
            State::EncoderDecoder(s) => s.len(),
        }
    }

    fn kernels(&self) -> Kernels {
        match self {
            Network::DecoderOnly(m) => Decoder::kernels(m.as_ref()),
            Network::EncoderDecoder { net, .. } => net.kernels(),
        }
    }
}

/// The kernels' activation for a config's activation name (transformers' `ACT2FN` names), or an error naming the
/// file and the field.
pub(crate) fn activation(file: &Path, field: &str, name: &str) -> Result<Activation> {
    match name {
        "relu" => Ok(Activation::Relu),
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        other => Err(Error::Unsupported {
            what: format!(
                "{}: {field} {other:?} (qkv runs relu, silu/swish, gelu, gelu_new/gelu_pytorch_tanh/gelu_fast)",
                file.display()
            ),
        }),
    }
}
