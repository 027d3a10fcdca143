//! `qkv::Model`: load a model directory once, generate from many threads.
//!
//! ```no_run
//! use qkv::{GenerateOptions, Model, SampleParams};
//!
//! # fn main() -> qkv::Result<()> {
//! let model = Model::load("models/smollm2-135m-instruct")?;
//! // Whole generation at once.
//! let out = model.generate("Once upon a time", &GenerateOptions { max_new_tokens: 32, ..Default::default() })?;
//! println!("{} ({:.1} tok/s)", out.text, out.timings.decode_tok_per_s());
//! // Streaming, sampled with a seed.
//! let opts = GenerateOptions::sampled(SampleParams { temperature: 0.8, top_p: 0.9, seed: 7, ..Default::default() });
//! for event in model.stream("The capital of France is", &opts)? {
//!     print!("{}", event?.text);
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use kernels::Kernels;
use loaders::config::{GenerationConfig, ModelConfig};
use loaders::safetensors::SafeTensors;
use loaders::tokenizer::{self, Tokenizer};

use crate::cache::{KvShape, DEFAULT_MAX_CACHE_BYTES};
use crate::chat::{ChatTemplate, GenerationPrompt, Message, SpecialTokens};
use crate::generate::{DecoderSession, GenerateOptions, Generation, Generator, PromptFormat, Session, TokenDecoder};
use crate::gpt2::{Gpt2, Gpt2Params};
use crate::layers::{WeightBytes, WeightType};
use crate::llama::{Llama, LlamaParams};
use crate::translate::Translator;
use crate::{Error, Result};

/// The network of a loaded model. Encoder-decoder architectures (Marian, CTranslate2 Transformer)
/// are added here by the translation side of the engine.
#[derive(Debug)]
pub enum Architecture {
    Llama(Llama),
    Gpt2(Gpt2),
    /// Marian or the CTranslate2 Transformer: see [`Model::translate`].
    Seq2Seq(Box<Translator>),
}

impl Architecture {
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Llama(_) => "llama",
            Architecture::Gpt2(_) => "gpt2",
            Architecture::Seq2Seq(_) => "seq2seq",
        }
    }
}

/// How a model is loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// The kernels to run on (default: the best ISA of this CPU, or `QKV_ISA`).
    pub kernels: Option<Kernels>,
    /// Cap on the KV cache bytes of one generation (K and V of every layer); a request that would need
    /// more fails with [`Error::CacheMemory`] before allocating. Default:
    /// [`crate::cache::DEFAULT_MAX_CACHE_BYTES`].
    pub max_cache_bytes: Option<usize>,
    /// How the linear layers' matrices are held: as stored (default) or quantized to int8 at load
    /// (see [`WeightType`]). With `Int8` and `kernels: None`, the int8 GEMVs round `x` to i16 on AVX-512 VNNI
    /// CPUs ([`kernels::I8Gemv::DotI16`]: as fast as the memory allows, an extra error under a tenth of int8's
    /// own); pass `kernels` to choose.
    pub weights: WeightType,
}

impl LoadOptions {
    /// The kernels a load runs on: `kernels`, else the best of this CPU (or `QKV_ISA`), with
    /// [`kernels::I8Gemv::DotI16`] for int8 weights.
    pub fn resolve_kernels(&self) -> Result<Kernels> {
        Ok(match self.kernels {
            Some(k) => k,
            None if self.weights == WeightType::Int8 => Kernels::detect()?.with_i8_gemv(kernels::I8Gemv::DotI16),
            None => Kernels::detect()?,
        })
    }
}

/// The tokenizer as the generator sees it (special tokens skipped when decoding).
struct Text(Box<dyn Tokenizer>);

impl TokenDecoder for Text {
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        Ok(self.0.decode(ids, true)?)
    }
}

/// A model directory without tokenizer files generates ids only: their text is empty.
struct NoText;

impl TokenDecoder for NoText {
    fn decode_text(&self, _ids: &[u32]) -> Result<String> {
        Ok(String::new())
    }
}

/// A loaded model: weights (memory-mapped), tokenizer, chat template and generation defaults.
/// `Send + Sync`: share one `Model` (e.g. in an `Arc`) between threads; each generation has its own cache.
///
/// A directory without tokenizer files still loads: it generates from token ids ([`Model::stream_ids`]), with
/// empty text in its events; the text entry points ([`Model::generate`], [`Model::stream`]) then fail, naming it.
pub struct Model {
    dir: PathBuf,
    arch: Architecture,
    text: Option<Text>,
    chat_template: Option<ChatTemplate>,
    special: SpecialTokens,
    bos: Option<u32>,
    eos: Vec<u32>,
    kernels: Kernels,
    max_cache_bytes: usize,
    weights: WeightType,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("dir", &self.dir)
            .field("arch", &self.arch.name())
            .field("eos", &self.eos)
            .field("isa", &self.kernels.isa())
            .field("weights", &self.weights)
            .finish()
    }
}

impl Model {
    /// Load `dir` (config.json, *.safetensors, tokenizer files), detecting the architecture.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, &LoadOptions::default())
    }

    pub fn load_with(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let kernels = opts.resolve_kernels()?;
        let config = ModelConfig::from_dir(dir)?;
        let gen = GenerationConfig::from_dir(dir)?;
        let weights = SafeTensors::open_dir(dir)?;
        let (arch, bos, mut eos) = match &config {
            ModelConfig::Llama(c) => {
                let m = Llama::new_with(&weights, &LlamaParams::try_from(c)?, kernels, opts.weights)?;
                (Architecture::Llama(m), c.bos_token_id, c.eos_token_id.clone())
            }
            ModelConfig::Gpt2(c) => {
                let m = Gpt2::new_with(&weights, &Gpt2Params::try_from(c)?, kernels, opts.weights)?;
                (Architecture::Gpt2(m), c.bos_token_id, c.eos_token_id.clone())
            }
            ModelConfig::Marian(_) | ModelConfig::Ct2Transformer(_) => {
                let t = Translator::from_parts(dir, &config, gen.as_ref(), kernels, opts.weights)?;
                let eos = t.defaults().rules.eos.clone();
                (Architecture::Seq2Seq(Box::new(t)), None, eos)
            }
        };
        // generation_config.json's EOS ids join config.json's.
        if let Some(g) = &gen {
            for &id in g.eos_token_id.iter().flatten() {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        let tok = match tokenizer::load_tokenizer(dir) {
            Ok(t) => Some(t),
            Err(loaders::Error::NoTokenizer { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let chat_template = tokenizer::chat_template(dir)?
            .map(|s| ChatTemplate::new(&s))
            .transpose()?;
        let name = |id: Option<u32>| {
            id.and_then(|i| tok.as_ref().and_then(|t| t.id_to_token(i)))
                .unwrap_or_default()
        };
        let special = SpecialTokens {
            bos_token: name(bos),
            eos_token: name(eos.first().copied()),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            arch,
            text: tok.map(Text),
            chat_template,
            special,
            bos,
            eos,
            kernels,
            max_cache_bytes: opts.max_cache_bytes.unwrap_or(DEFAULT_MAX_CACHE_BYTES),
            weights: opts.weights,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The tokenizer (an error naming the directory when it has no tokenizer files).
    pub fn tokenizer(&self) -> Result<&dyn Tokenizer> {
        self.text.as_ref().map(|t| t.0.as_ref()).ok_or_else(|| {
            Error::Request(format!(
                "{}: no tokenizer files, so only token ids can be generated (stream_ids)",
                self.dir.display()
            ))
        })
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Bytes of the weights the model reads, by kind (int8 matrices count their values and scales).
    pub fn weight_bytes(&self) -> WeightBytes {
        match &self.arch {
            Architecture::Llama(m) => m.weight_bytes(),
            Architecture::Gpt2(m) => m.weight_bytes(),
            Architecture::Seq2Seq(t) => t.model().weight_bytes(),
        }
    }

    /// How the linear layers' matrices are held (as asked in [`LoadOptions::weights`]).
    pub fn weight_type(&self) -> WeightType {
        self.weights
    }

    /// Every end-of-sequence id (config.json and generation_config.json).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The model input for `prompt`: the text itself, or the chat template around it.
    pub fn prompt_ids(&self, prompt: &str, format: PromptFormat) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        match format {
            PromptFormat::Plain => Ok(tok.encode(prompt)?),
            PromptFormat::Chat => {
                let template = self.chat_template.as_ref().ok_or_else(|| {
                    Error::Request(format!(
                        "{}: the model has no chat template (tokenizer_config.json chat_template)",
                        self.dir.display()
                    ))
                })?;
                let text = template.render(&[Message::new("user", prompt)], &self.special, GenerationPrompt::Add)?;
                let mut ids = tok.encode(&text)?;
                // The template already wrote BOS; the tokenizer may have added a second one.
                if let Some(b) = self.bos {
                    if ids.len() >= 2 && ids[0] == b && ids[1] == b {
                        ids.remove(0);
                    }
                }
                Ok(ids)
            }
        }
    }

    /// Stream the generation after `prompt`: one [`crate::TokenEvent`] per generated token.
    pub fn stream<'a>(&'a self, prompt: &str, opts: &GenerateOptions) -> Result<Generator<'a>> {
        let ids = self.prompt_ids(prompt, opts.prompt_format)?;
        self.stream_ids(ids, opts)
    }

    /// Stream the generation after prompt ids.
    pub fn stream_ids<'a>(&'a self, prompt: Vec<u32>, opts: &GenerateOptions) -> Result<Generator<'a>> {
        // The cache holds the prompt and the new tokens, up to the model's context.
        let want = prompt.len().saturating_add(opts.max_new_tokens);
        self.check_cache_memory(want)?;
        let (session, capacity): (Box<dyn Session + 'a>, usize) = match &self.arch {
            Architecture::Llama(m) => {
                let cap = want.min(m.max_positions());
                (
                    Box::new(DecoderSession {
                        model: m,
                        cache: m.new_cache(1, cap)?,
                    }),
                    cap,
                )
            }
            Architecture::Gpt2(m) => {
                let cap = want.min(m.max_positions());
                (
                    Box::new(DecoderSession {
                        model: m,
                        cache: m.new_cache(1, cap)?,
                    }),
                    cap,
                )
            }
            Architecture::Seq2Seq(_) => {
                return Err(Error::Request(format!(
                    "{}: this is an encoder-decoder (translation) model: use translate, not generate",
                    self.dir.display()
                )))
            }
        };
        let text: &dyn TokenDecoder = match &self.text {
            Some(t) => t,
            None if opts.stop_strings.is_empty() => &NoText,
            None => {
                return Err(Error::Request(format!(
                    "{}: stop strings need a tokenizer, and the directory has no tokenizer files",
                    self.dir.display()
                )))
            }
        };
        Generator::new(session, text, self.kernels, prompt, self.eos.clone(), capacity, opts)
    }

    /// The KV cache cap of this model (see [`LoadOptions::max_cache_bytes`]).
    pub fn max_cache_bytes(&self) -> usize {
        self.max_cache_bytes
    }

    /// An error if a cache of `want` positions (clamped to the context) would pass the memory cap.
    fn check_cache_memory(&self, want: usize) -> Result<()> {
        let (n_layers, n_kv_heads, head_dim, max_positions) = match &self.arch {
            Architecture::Llama(m) => {
                let p = m.params();
                (p.n_layers, p.n_kv_heads, p.head_dim, m.max_positions())
            }
            Architecture::Gpt2(m) => {
                let p = m.params();
                (p.n_layer, p.n_head, p.n_embd / p.n_head.max(1), m.max_positions())
            }
            // translation sizes its own caches per batch (see `seq2seq`); `generate` refuses this architecture
            Architecture::Seq2Seq(_) => return Ok(()),
        };
        let shape = KvShape {
            max_batch: 1,
            n_kv_heads,
            capacity: want.min(max_positions),
            head_dim,
        };
        let bytes = shape
            .bytes()
            .and_then(|b| b.checked_mul(n_layers))
            .unwrap_or(usize::MAX);
        if bytes > self.max_cache_bytes {
            return Err(Error::CacheMemory {
                bytes,
                limit: self.max_cache_bytes,
                what: format!("KV cache of {} positions x {n_layers} layers", shape.capacity),
            });
        }
        Ok(())
    }

    /// Generate after `prompt` and return the whole text.
    pub fn generate(&self, prompt: &str, opts: &GenerateOptions) -> Result<Generation> {
        self.stream(prompt, opts)?.run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<Model>();
    }
}
