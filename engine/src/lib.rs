//! qkv: a hand-tuned CPU inference engine for Transformer models.
//!
//! Re-exports what users need from the `kernels` and `loaders` crates.

pub mod beam;
pub mod cache;
pub mod chat;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod model;
pub mod sampling;
pub mod seq2seq;
pub mod translate;

pub use cache::{KvCache, KvShape};
pub use decoder::Decoder;
pub use error::{Error, Result};
pub use generate::{GenerateOptions, Generation, Generator, PromptFormat, StopReason, Timings, TokenEvent};
pub use kernels::{Isa, Kernels};
pub use layers::{Bias, Embedding, LayerNorm, Linear, RmsNorm, TensorMap, TensorSource, WeightBytes, WeightType};
pub use loaders;
pub use model::{Architecture, LoadOptions, Model};
pub use sampling::{SampleParams, Strategy};
pub use translate::{TranslateOptions, Translation, Translator};
