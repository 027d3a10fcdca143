//! qkv: a hand-tuned CPU inference engine for Transformer models.
//!
//! One front door, [`Model`], opens a model directory of any supported family (`config.json`, memory-mapped
//! `*.safetensors`, tokenizer files) and offers what its kind does: [`Model::generate`] / [`Model::stream`] for a
//! decoder-only model (Llama, Qwen2/3, Mistral, Phi-3, Gemma 2/3, GPT-2; [`Model::generate_beam_ids`] for beam
//! search), [`Model::translate`] for an encoder-decoder one (Marian, the CTranslate2
//! Transformer), and [`Session`]s ([`Model::session`], [`Model::encode`]) to decode step by step.
//!
//! ```no_run
//! use qkv::{GenerateOptions, Model, TranslateOptions};
//!
//! let model = Model::load("models/smollm2-135m-instruct")?; // mmap + validate; Send + Sync
//! let out = model.generate("Once upon a time", &GenerateOptions { max_new_tokens: 32, ..Default::default() })?;
//! println!("{}", out.text);
//! let marian = Model::load("models/opus-mt-en-de")?;
//! println!("{}", marian.translate(&["Hello world"], &TranslateOptions::default())?[0].text);
//! # Ok::<(), qkv::Error>(())
//! ```
//!
//! # Layout
//!
//! | module | what |
//! | --- | --- |
//! | `model.rs` | [`Model`], [`LoadOptions`], [`ModelInfo`]: load a directory once, generate, translate, open sessions |
//! | `batch.rs` | continuous batching: [`Scheduler`] (ragged rows, each its own position and cache row; chunked prefill), [`Model::generate_batch`] |
//! | `session.rs`, `step.rs` | [`Session`]: a batch of sequences fed step by step ([`LogitsFor`]), reordered, searched |
//! | `generate.rs` | the generation loop: prefill, sample, stream valid UTF-8 ([`Generator`], [`GenerateOptions`]) |
//! | `translate.rs` | the translation driver: sources batched by length, encoded once, searched ([`TranslateOptions`]) |
//! | `languages.rs` | the language codes of mBART-50, NLLB and M2M100: the source language's token placed as their tokenizers place it, the target's forced first ([`TranslateOptions::source_lang`], [`Model::languages`]) |
//! | `models/` | the family registry (`models/mod.rs`) and one file per architecture: `llama.rs`, `gpt2.rs`, `qwen2.rs`, `qwen3.rs`, `mistral.rs`, `phi3.rs`, `gemma.rs`, `seq2seq.rs` (Marian and CTranslate2 by naming scheme); `decoder_only.rs` is what every decoder-only family shares, `rotary.rs` the rotary GQA decoder the newer families configure, `rope.rs` RoPE frequencies and their scalings |
//! | `search/` | greedy and beam search ([`search::search`]), sampling ([`search::Sampler`]), stop strings |
//! | `layers.rs` | weights bound by name and checked at load: linear layers packed once at load (`kernels::PackedWeight`, stored dtype or int8; q/k/v and gate/up stacked into one matrix), norms, embeddings (a tied table read from the packed head), final norm + LM head |
//! | `cache.rs` | KV caches (preallocated, written in place, reordered for beams; the memory cap) and scratch buffers |
//! | `decoder.rs` | the [`Decoder`] trait every search runs against |
//! | `chat.rs`, `text.rs` | chat templates; the tokenizer as the engine uses it |
//! | `attention.rs`, `explain.rs` | attention you can see: the recording path ([`Model::attention`], [`Model::translation_attention`]: [`AttentionMaps`] `[layer][head][query][key]`) and the trace of one forward pass ([`Model::explain`], [`Trace::toy`]) |
//!
//! The numeric kernels (GEMV/GEMM, fused attention, norms, activations, RoPE, log-softmax) are the `kernels`
//! crate's, reached through [`Kernels`]; files (safetensors, configs, tokenizers, GGUF) are read by [`loaders`].
//!
//! # Where each Transformer concept lives
//!
//! | concept | decoder-only (Llama, GPT-2) | encoder-decoder (Marian, CTranslate2) | kernel |
//! | --- | --- | --- | --- |
//! | token embedding | `models/llama.rs`, `models/gpt2.rs` (`Embedding`, `layers.rs`) | `models/seq2seq.rs` (scaled by `embed_scale`) | `Kernels::embed` |
//! | positional encodings | RoPE: `models/rope.rs` (plain, `linear`, `llama3`, `longrope` frequencies; per-layer tables in `models/rotary.rs`); learned: `models/gpt2.rs` (`wpe`) | sinusoids: `models/seq2seq.rs` (`pos_table`) | `Kernels::rope`, `kernels::sinusoidal_table` |
//! | Q/K/V projections | `models/llama.rs`, `models/rotary.rs` (`q_proj`, `k_proj`, `v_proj` packed as one `qkv_proj` at load, outputs split by `layers::split_columns`), `models/gpt2.rs` (fused `c_attn`) | `models/seq2seq.rs` (`QkvProj`: one matrix, stored separate or fused per naming scheme) | `Kernels::linear_packed` (`layers.rs` `Linear`) |
//! | attention | every family builds `AttnArgs` and calls the fused kernel through its step's `AttnPath` (`attention.rs`: fused, or the recording path that keeps the probabilities); Gemma 2's score soft-capping `AttnArgs::with_softcap`, per-head q/k norm in `models/rotary.rs` | the same | `Kernels::attention` (`kernels/src/attention/`); recording: `kernels::reference::attention_probs` |
//! | masking | causal: `AttnArgs::causal` over the KV cache (`cache.rs`); sliding windows: `AttnArgs::with_window` (Mistral, Gemma's local layers) | padding: `AttnArgs::bidirectional` (`key_lens`) in the encoder; causal in the decoder | `kernels::Mask`, `AttnArgs::visible` |
//! | cross-attention | — | `models/seq2seq.rs`: K/V projected once per source (`CrossKv`), `AttnArgs::cross`, shared by beams | `Kernels::attention` |
//! | residual + norm | pre-norm: `x += f(norm(x))` in each family's `forward` (`Norm`, `layers.rs`) | pre- or post-norm (`NormPlacement`, `Buffers::residual`) | `Kernels::add`, `rms_norm`, `layer_norm` |
//! | feed-forward | SwiGLU (`models/llama.rs`, `models/rotary.rs`), GeGLU (`models/rotary.rs`, Gemma): gate and up one packed matrix, `layers::gated`; GELU MLP (`models/gpt2.rs`) | `FeedForward` in `models/seq2seq.rs` | `Kernels::swiglu`, `activation` |
//! | LM head | `LmHead` (`layers.rs`): final norm + projection on the positions `LogitsFor` asks for, shared by every family | the same `LmHead` (+ Marian's `final_logits_bias`) | `Kernels::linear` |
//! | search | `search/sampling.rs` (greedy, sampling) + `search/stop.rs`, driven by `generate.rs`; beam: `search/beam.rs` via `Model::generate_beam_ids` | `search/beam.rs` (greedy, beam) driven by `translate.rs` | `Kernels::log_softmax_rows`, `top_k_rows`, `argmax` |
//!
//! # Errors
//!
//! Every fallible call returns [`Result`] with the one [`Error`] enum: load problems name the file, tensor or
//! field (expected against found), [`Error::Unsupported`] names what this engine does not run, and
//! [`Error::Request`] a bad argument of a call. The library does not panic on input.

mod attention;
mod batch;
mod cache;
mod chat;
mod decoder;
mod error;
pub mod explain;
mod generate;
mod gguf;
mod languages;
mod layers;
mod model;
mod models;
pub mod search;
mod session;
mod step;
mod text;
mod translate;

pub use attention::{AttentionMaps, PromptAttention, TranslationAttention};
pub use batch::{BatchEvent, BatchOptions, Scheduler, SeqId};
pub use cache::DEFAULT_MAX_CACHE_BYTES;
pub use decoder::Decoder;
pub use error::{Error, Result};
pub use explain::Trace;
pub use generate::{GenerateOptions, Generation, Generator, PromptFormat, StopReason, Timings, TokenEvent};
pub use kernels::{self, Isa, Kernels};
pub use layers::{Activations, WeightBytes, WeightType};
pub use loaders;
pub use model::{LoadOptions, Model, ModelInfo, ModelKind};
pub use search::{SampleParams, Strategy};
pub use session::{Encoded, Session};
pub use step::LogitsFor;
pub use translate::{TranslateOptions, Translation};
