//! `qkv::Model`: the one front door. Load a model directory of any supported family once (weights memory-mapped,
//! tokenizer and chat template read once), then generate (decoder-only), translate (encoder-decoder) or drive
//! [`Session`]s step by step, from many threads.

use std::path::{Path, PathBuf};

use kernels::Kernels;
use loaders::config::{GenerationConfig, RawConfig};
use loaders::safetensors::SafeTensors;
use loaders::tokenizer::{self, Tokenizer};

use crate::attention::{self, PromptAttention, TranslationAttention};
use crate::cache::DEFAULT_MAX_CACHE_BYTES;
use crate::chat::{ChatTemplate, GenerationPrompt, Message, SpecialTokens};
use crate::explain::{self, Trace, TraceInput};
use crate::generate::{Decoding, GenerateOptions, Generation, Generator, PromptFormat};
use crate::gguf::GgufModel;
use crate::languages::{with_source_language, LanguageCodes, Side};
use crate::layers::{Activations, TensorSource, WeightBytes, WeightType};
use crate::models::decoder_only::CausalLm;
use crate::models::seq2seq::{Room, Seq2Seq};
use crate::models::{self, Loaded, Network, Source, State};
use crate::search::{Hypothesis, SearchOptions};
use crate::session::Session;
use crate::step::LogitsFor;
use crate::text::{NoText, Text, TokenDecoder};
use crate::translate::{Job, TranslateOptions, Translation};
use crate::{Error, Result};

/// How a model is loaded.
///
/// ```
/// use qkv::{Activations, Kernels, LoadOptions, WeightType};
///
/// // The scalar kernels, int8 linear layers with f32 activations, at most 1 GiB of KV cache per session.
/// let opts = LoadOptions {
///     kernels: Some(Kernels::scalar()),
///     weights: WeightType::Int8,
///     max_cache_bytes: Some(1 << 30),
///     activations: Activations::F32,
/// };
/// assert_eq!(opts.resolve_kernels()?, Kernels::scalar());
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// The kernels to run on (default: the best ISA of this CPU, or `QKV_ISA`).
    pub kernels: Option<Kernels>,
    /// Cap on the KV cache bytes of one session (K and V of every layer): a generation, a [`Model::session`], a
    /// batch of a translation. A request that would need more fails with [`Error::CacheMemory`] before
    /// allocating. Default: [`DEFAULT_MAX_CACHE_BYTES`].
    pub max_cache_bytes: Option<usize>,
    /// How the linear layers' matrices are held: as stored (default) or quantized to int8 at load
    /// (see [`WeightType`]); either way packed once at load for the kernels' ISA ([`kernels::PackedWeight`]) and
    /// multiplied with f32 activations (int8 widened in registers, times its row scales). With `Int8` and
    /// `kernels: None` the kernels also carry [`kernels::I8Gemv::DotI16`], which only the unpacked
    /// [`Kernels::linear`] reads (no model layer calls it since the weights are packed).
    pub weights: WeightType,
    /// What the linear layers multiply by: f32 activations (default) or activations reduced to the weights' class
    /// (see [`Activations`]), applied on top of `kernels`.
    pub activations: Activations,
}

impl LoadOptions {
    /// The kernels a load runs on: `kernels`, else the best of this CPU (or `QKV_ISA`), with
    /// [`kernels::I8Gemv::DotI16`] for int8 weights.
    pub fn resolve_kernels(&self) -> Result<Kernels> {
        let k = match self.kernels {
            Some(k) => k,
            None if self.weights == WeightType::Int8 => Kernels::detect()?.with_i8_gemv(kernels::I8Gemv::DotI16),
            None => Kernels::detect()?,
        };
        Ok(self.activations.apply(k))
    }
}

/// The two shapes of model, and the calls each offers.
///
/// ```
/// use qkv::{Model, ModelKind};
///
/// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
/// match model.info().kind {
///     ModelKind::DecoderOnly => println!("generate"),
///     ModelKind::EncoderDecoder => println!("translate, from {}", model.info().decoder_start_token_id.unwrap()),
/// }
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Generates after a prompt ([`Model::generate`], [`Model::stream`], [`Model::session`]): Llama, GPT-2.
    DecoderOnly,
    /// Translates a source ([`Model::translate`], [`Model::encode`]): Marian, the CTranslate2 Transformer, BART /
    /// mBART, M2M100 / NLLB, T5; [`Model::generate`] encodes the prompt and decodes (T5's text-to-text prompts).
    EncoderDecoder,
}

/// What a loaded model is, as a caller sizing requests and sessions needs it.
///
/// ```
/// use qkv::Model;
///
/// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
/// let info = model.info();
/// assert_eq!(info.architecture, "llama");
/// assert!(info.n_kv_heads < info.n_heads, "grouped-query attention");
/// // How many sequences of 16 positions fit in 1 MiB of KV cache:
/// println!("{}", (1 << 20) / (16 * info.kv_bytes_per_position()));
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The family (`config.json`'s `model_type`): `llama`, `gpt2`, `marian`, `ct2_transformer_seq2seq`.
    pub architecture: &'static str,
    pub kind: ModelKind,
    /// Logits per position: the (target) vocabulary.
    pub vocab_size: usize,
    /// Ids a source may hold (an encoder-decoder's source vocabulary; `vocab_size` for a decoder-only model).
    pub src_vocab_size: usize,
    /// The longest sequence a row holds: prompt + generated tokens (decoder-only), or a source and the decoder's
    /// positions (encoder-decoder).
    pub max_positions: usize,
    /// Width of the residual stream (`hidden_size`, `d_model`).
    pub hidden_size: usize,
    /// Decoder layers (each with a self-attention KV cache).
    pub n_layers: usize,
    /// Query heads of the decoder's self-attention.
    pub n_heads: usize,
    /// KV heads of the decoder's self-attention (fewer than `n_heads` with grouped-query attention).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// The token an encoder-decoder model's decoding starts with.
    pub decoder_start_token_id: Option<u32>,
    /// A GGUF model's tensors whose type no kernel runs as stored, dequantized to f32 at load (`name (TYPE)`,
    /// GGUF names); empty for safetensors and for a GGUF run fully on the block kernels.
    pub dequantized: Vec<String>,
}

impl ModelInfo {
    fn of(architecture: &'static str, net: &Network) -> Self {
        match net {
            Network::DecoderOnly(m) => {
                let d = m.dims();
                Self {
                    architecture,
                    kind: ModelKind::DecoderOnly,
                    vocab_size: d.vocab_size,
                    src_vocab_size: d.vocab_size,
                    max_positions: d.max_positions,
                    hidden_size: d.hidden_size,
                    n_layers: d.n_layers,
                    n_heads: d.heads.n_heads,
                    n_kv_heads: d.heads.n_kv_heads,
                    head_dim: d.heads.head_dim,
                    decoder_start_token_id: None,
                    dequantized: Vec::new(),
                }
            }
            Network::EncoderDecoder { net, .. } => {
                let c = net.config();
                Self {
                    architecture,
                    kind: ModelKind::EncoderDecoder,
                    vocab_size: c.tgt_vocab_size,
                    src_vocab_size: c.src_vocab_size,
                    max_positions: c.positions.max,
                    hidden_size: c.d_model,
                    n_layers: c.n_decoder_layers,
                    n_heads: c.n_decoder_heads,
                    n_kv_heads: c.n_decoder_heads,
                    head_dim: c.head_dim,
                    decoder_start_token_id: Some(c.decoder_start_token_id),
                    dequantized: Vec::new(),
                }
            }
        }
    }

    /// Bytes of KV cache one position of one row takes: K and V (f32) of every decoder layer.
    pub fn kv_bytes_per_position(&self) -> usize {
        self.n_layers * 2 * self.n_kv_heads * self.head_dim * std::mem::size_of::<f32>()
    }
}

/// A loaded model of any supported family: weights (memory-mapped), tokenizer, chat template and generation
/// defaults. `Send + Sync`: share one `Model` (e.g. in an `Arc`) between threads; each call has its own caches.
///
/// ```no_run
/// use qkv::{GenerateOptions, Model, SampleParams, TranslateOptions};
///
/// let model = Model::load("models/smollm2-135m-instruct")?; // decoder-only
/// let out = model.generate("Once upon a time", &GenerateOptions { max_new_tokens: 32, ..Default::default() })?;
/// println!("{} ({:.1} tok/s)", out.text, out.timings.decode_tok_per_s());
/// let opts = GenerateOptions::sampled(SampleParams { temperature: 0.8, top_p: 0.9, seed: 7, ..Default::default() });
/// for event in model.stream("The capital of France is", &opts)? {
///     print!("{}", event?.text); // streamed, valid UTF-8 deltas
/// }
///
/// let marian = Model::load("models/opus-mt-en-de")?; // encoder-decoder
/// for t in marian.translate(&["Hello world", "How are you?"], &TranslateOptions::default())? {
///     println!("{} ({:.3})", t.text, t.score);
/// }
/// # Ok::<(), qkv::Error>(())
/// ```
///
/// A call the model's kind does not offer (generate on a translation model, translate on a decoder-only one) is
/// an [`Error::Request`] naming the architecture. A directory without tokenizer files still loads: it works on
/// token ids ([`Model::stream_ids`], [`Model::translate_ids`], sessions), and the text entry points fail, naming
/// the directory.
pub struct Model {
    dir: PathBuf,
    net: Network,
    info: ModelInfo,
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
            .field("info", &self.info)
            .field("eos", &self.eos)
            .field("isa", &self.kernels.isa())
            .field("weights", &self.weights)
            .finish()
    }
}

impl Model {
    /// Load `dir` (config.json, *.safetensors, generation_config.json and tokenizer files when present), the
    /// family chosen by `config.json`, on the best kernels of this CPU. `dir` may also be a GGUF file (an
    /// architecture `qkv import-gguf` reads), run in place: its config, tokenizer and chat template from its
    /// metadata, F32/F16/BF16 tensors zero-copy and the block types the kernels run (Q8_0, Q4_0, Q4_1) packed
    /// from the file's blocks, never dequantized; other types are dequantized to f32 and listed in
    /// [`ModelInfo::dequantized`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, &LoadOptions::default())
    }

    /// [`Model::load`] with [`LoadOptions`]: forced kernels, int8 weights, a KV cache cap.
    ///
    /// ```
    /// use qkv::{LoadOptions, Model, ModelKind};
    ///
    /// let opts = LoadOptions { kernels: Some(qkv::Kernels::scalar()), ..Default::default() };
    /// let model = Model::load_with(qkv::loaders::paths::fixture("marian-tiny"), &opts)?;
    /// assert_eq!((model.info().architecture, model.info().kind), ("marian", ModelKind::EncoderDecoder));
    /// assert_eq!(model.kernels(), qkv::Kernels::scalar());
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn load_with(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let kernels = opts.resolve_kernels()?;
        // A GGUF file, or a directory of config.json, safetensors and tokenizer files.
        let (gguf, gguf_text, gguf_source) = match crate::gguf::is_gguf(dir) {
            true => {
                let (g, s) = GgufModel::open(dir)?;
                let GgufModel {
                    config,
                    generation,
                    tokenizer,
                    chat_template,
                } = g;
                (Some((config, generation)), Some((tokenizer, chat_template)), Some(s))
            }
            false => (None, None, None),
        };
        let (dir_config, dir_generation, safetensors);
        let (config, generation, weights): (&RawConfig, Option<&GenerationConfig>, &dyn TensorSource) =
            match (&gguf, &gguf_source) {
                (Some((c, g)), Some(s)) => (c, Some(g), s),
                _ => {
                    dir_config = RawConfig::from_dir(dir)?;
                    models::family(&dir_config)?;
                    dir_generation = GenerationConfig::from_dir(dir)?;
                    safetensors = SafeTensors::open_dir(dir)?;
                    (&dir_config, dir_generation.as_ref(), &safetensors)
                }
            };
        let family = models::family(config)?;
        let Loaded { network, bos, mut eos } = family.load(&Source {
            config,
            generation,
            weights,
            kernels,
            weight_type: opts.weights,
        })?;
        // generation_config.json's EOS ids join config.json's.
        for &id in generation.iter().flat_map(|g| g.eos_token_id.iter().flatten()) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let mut info = ModelInfo::of(family.model_type, &network);
        info.dequantized = gguf_source.as_ref().map(|s| s.dequantized()).unwrap_or_default();
        let (text, chat_template) = match gguf_text {
            Some((tokenizer, template)) => (Some(Text::new(tokenizer)), template),
            None => {
                let text = match tokenizer::load_tokenizer(dir) {
                    Ok(t) => Some(Text::new(t)),
                    Err(loaders::Error::NoTokenizer { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                (text, tokenizer::chat_template(dir)?)
            }
        };
        if let (Some(t), ModelKind::EncoderDecoder) = (&text, info.kind) {
            if t.tokenizer().vocab_size() > info.vocab_size {
                return Err(Error::InvalidConfig {
                    file: config.path().to_path_buf(),
                    field: "target vocabulary".into(),
                    reason: format!(
                        "the tokenizer has {} target ids, the model {}",
                        t.tokenizer().vocab_size(),
                        info.vocab_size
                    ),
                });
            }
        }
        let chat_template = chat_template.map(|s| ChatTemplate::new(&s, dir)).transpose()?;
        let name = |id: Option<u32>| {
            id.and_then(|i| text.as_ref().and_then(|t| t.tokenizer().id_to_token(i)))
                .unwrap_or_default()
        };
        let special = SpecialTokens {
            bos_token: name(bos),
            eos_token: name(eos.first().copied()),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            net: network,
            info,
            text,
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

    /// The family, kind and sizes of the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer (an error naming the directory when it has no tokenizer files).
    pub fn tokenizer(&self) -> Result<&dyn Tokenizer> {
        self.text().map(Text::tokenizer)
    }

    fn text(&self) -> Result<&Text> {
        self.text.as_ref().ok_or_else(|| {
            Error::Request(format!(
                "{}: no tokenizer files, so only token ids can be used (stream_ids, translate_ids, sessions)",
                self.dir.display()
            ))
        })
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Bytes of the weights the model reads, by kind (int8 matrices count their values and scales).
    pub fn weight_bytes(&self) -> WeightBytes {
        match &self.net {
            Network::DecoderOnly(m) => m.weight_bytes(),
            Network::EncoderDecoder { net, .. } => net.weight_bytes(),
        }
    }

    /// How the linear layers' matrices are held (as asked in [`LoadOptions::weights`]).
    pub fn weight_type(&self) -> WeightType {
        self.weights
    }

    /// Every end-of-sequence id (config.json and generation_config.json; for an encoder-decoder model, those of
    /// its search defaults).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The KV cache cap of one session (see [`LoadOptions::max_cache_bytes`]).
    pub fn max_cache_bytes(&self) -> usize {
        self.max_cache_bytes
    }

    /// The decoder-only network, or an error naming the architecture for `call`.
    pub(crate) fn decoder_only(&self, call: &str) -> Result<&CausalLm> {
        match &self.net {
            Network::DecoderOnly(m) => Ok(m),
            Network::EncoderDecoder { .. } => Err(Error::Request(format!(
                "{}: {call} needs a decoder-only model, and {} is an encoder-decoder (translation) model: use \
                 translate",
                self.dir.display(),
                self.info.architecture
            ))),
        }
    }

    /// The encoder-decoder network and its search defaults, or an error naming the architecture for `call`.
    fn encoder_decoder(&self, call: &str) -> Result<(&Seq2Seq, &SearchOptions)> {
        match &self.net {
            Network::EncoderDecoder { net, defaults } => Ok((net, defaults)),
            Network::DecoderOnly(_) => Err(Error::Request(format!(
                "{}: {call} needs an encoder-decoder model, and {} is not an encoder-decoder (it is decoder-only: \
                 use generate)",
                self.dir.display(),
                self.info.architecture
            ))),
        }
    }

    // --- decoder-only ---------------------------------------------------------------------------------

    /// The model input for `prompt`: the text itself, or the chat template around it.
    pub fn prompt_ids(&self, prompt: &str, format: PromptFormat) -> Result<Vec<u32>> {
        let text = self.text()?;
        match format {
            PromptFormat::Plain => text.encode(prompt),
            PromptFormat::Chat => self.chat_prompt_ids(&[("user", prompt)]),
        }
    }

    /// Token ids of `(role, content)` messages rendered through the chat template, assistant header appended.
    pub(crate) fn chat_prompt_ids(&self, messages: &[(&str, &str)]) -> Result<Vec<u32>> {
        let text = self.text()?;
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::Request(format!(
                "{}: the model has no chat template (tokenizer_config.json chat_template)",
                self.dir.display()
            ))
        })?;
        let messages: Vec<Message> = messages.iter().map(|(r, c)| Message::new(r, c)).collect();
        let rendered = template.render(&messages, &self.special, GenerationPrompt::Add)?;
        let mut ids = text.encode(&rendered)?;
        // The template already wrote BOS; the tokenizer may have added a second one.
        if let Some(b) = self.bos {
            if ids.len() >= 2 && ids[0] == b && ids[1] == b {
                ids.remove(0);
            }
        }
        Ok(ids)
    }

    /// What turns generated ids into text: the tokenizer, or nothing (ids only) for a directory without one; an
    /// error for stop strings without a tokenizer.
    pub(crate) fn text_for(&self, opts: &GenerateOptions) -> Result<&dyn TokenDecoder> {
        match &self.text {
            Some(t) => Ok(t),
            None if opts.stop_strings.is_empty() => Ok(&NoText),
            None => Err(Error::Request(format!(
                "{}: stop strings need a tokenizer, and the directory has no tokenizer files",
                self.dir.display()
            ))),
        }
    }

    /// The tokenizer as the scheduler decodes with it (nothing, for a directory without one).
    pub(crate) fn token_decoder(&self) -> &dyn TokenDecoder {
        match &self.text {
            Some(t) => t,
            None => &NoText,
        }
    }

    /// Generate after `prompt` and return the whole text (decoder-only).
    pub fn generate(&self, prompt: &str, opts: &GenerateOptions) -> Result<Generation> {
        self.stream(prompt, opts)?.run()
    }

    /// Stream the generation after `prompt`: one [`crate::TokenEvent`] per generated token. An encoder-decoder
    /// model (T5's text-to-text prompts: "translate English to German: ...", "summarize: ...") encodes the prompt
    /// and decodes from its decoder start token, as transformers' `generate` does.
    pub fn stream<'a>(&'a self, prompt: &str, opts: &GenerateOptions) -> Result<Generator<'a>> {
        let ids = self.prompt_ids(prompt, opts.prompt_format)?;
        self.stream_ids(ids, opts)
    }

    /// Stream the generation after prompt ids (decoder-only; works without tokenizer files, with empty text).
    ///
    /// ```
    /// use qkv::{GenerateOptions, Model, StopReason};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?; // no tokenizer files: ids only
    /// let g = model.stream_ids(vec![1, 2, 3], &GenerateOptions { max_new_tokens: 4, ..Default::default() })?.run()?;
    /// assert_eq!((g.tokens.len(), g.stop_reason, g.text.as_str()), (4, StopReason::MaxTokens, ""));
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn stream_ids<'a>(&'a self, prompt: Vec<u32>, opts: &GenerateOptions) -> Result<Generator<'a>> {
        if let Network::EncoderDecoder { net, .. } = &self.net {
            return self.stream_encoded(net, &prompt, opts);
        }
        // The cache holds the prompt and the new tokens, up to the model's context.
        let capacity = prompt
            .len()
            .saturating_add(opts.max_new_tokens)
            .min(self.info.max_positions);
        let session = self.session(1, capacity)?;
        let text = self.text_for(opts)?;
        let seq = Decoding::new(text, self.kernels, prompt, self.eos.clone(), capacity, opts)?;
        Ok(Generator::new(Box::new(session), seq))
    }

    /// An encoder-decoder generation: `source` encoded once, the decoder fed its start token then each generated
    /// one (at most `max_new_tokens` decoder positions, or the model's).
    fn stream_encoded<'a>(&'a self, net: &Seq2Seq, source: &[u32], opts: &GenerateOptions) -> Result<Generator<'a>> {
        if source.is_empty() {
            return Err(Error::Request("the prompt has no tokens".to_string()));
        }
        let room = Room {
            max_rows: 1,
            max_new_tokens: opts.max_new_tokens.min(self.info.max_positions),
        };
        let state = net.start(&[source], room, self.max_cache_bytes, Default::default())?;
        let session = Session::new(&self.net, State::EncoderDecoder(Box::new(state)));
        let text = self.text_for(opts)?;
        // the decoder's "prompt" is its start token; one position more than it generates
        let start = vec![net.config().decoder_start_token_id];
        let seq = Decoding::new(
            text,
            self.kernels,
            start,
            self.eos.clone(),
            room.max_new_tokens + 1,
            opts,
        )?
        .with_prompt_tokens(source.len());
        Ok(Generator::new(Box::new(session), seq))
    }

    /// The beam search of a decoder-only model as transformers' `generate(num_beams=...)` runs it (length
    /// penalty 1, `early_stopping=False`, the model's EOS ids), `max_new_tokens` at most; change the fields of the
    /// result for another search.
    /// An encoder-decoder model: its translation search ([`Model::search_defaults`]) with these two.
    pub fn beam_options(&self, num_beams: usize, max_new_tokens: usize) -> SearchOptions {
        if let Network::EncoderDecoder { defaults, .. } = &self.net {
            return SearchOptions {
                num_beams,
                max_new_tokens,
                num_return_sequences: 1,
                ..(**defaults).clone()
            };
        }
        SearchOptions {
            num_beams,
            max_new_tokens,
            num_return_sequences: 1,
            rules: crate::search::LogitsRules {
                eos: self.eos.clone(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Beam search after prompt ids: up to `opts.num_return_sequences` hypotheses, best first, each
    /// the generated ids (EOS kept when emitted) and transformers' score (sum of log-probabilities over
    /// `generated^length_penalty`). The prompt but its last token is fed once, then its last token starts the
    /// search; the cache holds `num_beams` rows. An encoder-decoder model takes the prompt as its source
    /// ([`Model::translate_ids_with`]).
    ///
    /// ```
    /// use qkv::Model;
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
    /// let opts = qkv::search::SearchOptions { num_return_sequences: 2, ..model.beam_options(4, 6) };
    /// let hyps = model.generate_beam_ids(&[1, 158, 66], &opts)?;
    /// assert!(hyps.len() == 2 && hyps[0].score >= hyps[1].score && hyps[0].tokens.len() <= 6);
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn generate_beam_ids(&self, prompt: &[u32], opts: &SearchOptions) -> Result<Vec<Hypothesis>> {
        if let Network::EncoderDecoder { .. } = &self.net {
            // an encoder-decoder model: the prompt is the source
            return Ok(self.translate_ids_with(&[prompt.to_vec()], 1, opts)?.swap_remove(0));
        }
        let m = self.decoder_only("generate")?;
        let Some((&last, head)) = prompt.split_last() else {
            return Err(Error::Request(
                "beam search needs a prompt of at least one token".into(),
            ));
        };
        let capacity = prompt.len().saturating_add(opts.max_new_tokens);
        let cache = m.new_cache_rows(1, opts.num_beams.max(1), capacity, self.max_cache_bytes)?;
        let mut session = Session::new(&self.net, State::DecoderOnly(cache));
        if !head.is_empty() {
            let mut logits = vec![0.0; m.dims().vocab_size];
            session.step(head, head.len(), LogitsFor::Last, &mut logits)?;
        }
        Ok(session.search(&[last], opts)?.swap_remove(0))
    }

    /// A decoding session of a decoder-only model: `batch` sequences of up to `capacity` positions each, its KV
    /// caches allocated now (an error before allocating when they would pass [`Model::max_cache_bytes`], or when
    /// `capacity` passes the model's context). See [`Session`].
    ///
    /// ```
    /// use qkv::{LogitsFor, Model};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
    /// let mut s = model.session(1, 16)?;
    /// let mut logits = vec![0.0; model.info().vocab_size];
    /// s.step(&[1, 158, 66], 3, LogitsFor::Last, &mut logits)?; // prefill: logits of the last position
    /// let next = model.kernels().argmax(&logits).unwrap() as u32;
    /// s.step(&[next], 1, LogitsFor::Last, &mut logits)?; // one token
    /// assert_eq!(s.len(), 4);
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn session(&self, batch: usize, capacity: usize) -> Result<Session<'_>> {
        let cache = self
            .decoder_only("session")?
            .new_cache(batch, capacity, self.max_cache_bytes)?;
        Ok(Session::new(&self.net, State::DecoderOnly(cache)))
    }

    // --- encoder-decoder ------------------------------------------------------------------------------

    /// Encode source ids for decoding (encoder-decoder): the session has one decoder row per source and room for
    /// `max_rows` rows (sources × beams) of `max_new_tokens` decoder positions; the encoder output is projected
    /// to every decoder layer's cross-attention keys and values here, once per source.
    ///
    /// ```
    /// use qkv::{LogitsFor, Model};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
    /// let mut s = model.encode(&[&[3, 4, 5, 0], &[6, 0]], 2, 8)?;
    /// assert_eq!(s.encoder().unwrap().src_lens(), [4, 2]);
    /// // Teacher forcing: the decoder start token, then a target token, logits at both positions.
    /// let start = model.info().decoder_start_token_id.unwrap();
    /// let mut logits = vec![0.0; 2 * 2 * model.info().vocab_size];
    /// s.step(&[start, 7, start, 9], 2, LogitsFor::All, &mut logits)?;
    /// // Or a search from the start token (here greedy, at most 8 tokens).
    /// let mut s = model.encode(&[&[3, 4, 5, 0]], 1, 8)?;
    /// let opts = qkv::search::SearchOptions { num_beams: 1, max_new_tokens: 8, ..model.search_defaults()?.clone() };
    /// let best = &s.search(&[start], &opts)?[0][0];
    /// assert!(!best.tokens.is_empty() && best.tokens.len() <= 8);
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn encode(&self, sources: &[&[u32]], max_rows: usize, max_new_tokens: usize) -> Result<Session<'_>> {
        let (net, _) = self.encoder_decoder("encode")?;
        let room = Room {
            max_rows,
            max_new_tokens,
        };
        let state = net.start(sources, room, self.max_cache_bytes, Default::default())?;
        Ok(Session::new(&self.net, State::EncoderDecoder(Box::new(state))))
    }

    /// The search a translation runs unless told otherwise (encoder-decoder): for Hugging Face Marian, what
    /// transformers' `generate` reads from generation_config.json (else config.json); for the CTranslate2
    /// Transformer, `translate_batch`'s defaults.
    pub fn search_defaults(&self) -> Result<&SearchOptions> {
        Ok(self.encoder_decoder("translate")?.1)
    }

    /// The search options of a translation call: [`Model::search_defaults`] overridden by `opts`, the target
    /// language's token forced first (`opts.target_lang`).
    pub fn search_options(&self, opts: &TranslateOptions) -> Result<SearchOptions> {
        let mut s = opts.search_options(self.search_defaults()?);
        if let Some(code) = &opts.target_lang {
            s.rules.forced_bos = Some(self.language_id(Side::Target, code)?);
        }
        Ok(s)
    }

    /// The languages a multilingual translation model knows (mBART-50, M2M100, NLLB: the codes
    /// [`TranslateOptions::source_lang`] and [`TranslateOptions::target_lang`] take), in token id order; an error
    /// for any other model.
    ///
    /// ```
    /// use qkv::Model;
    ///
    /// // (an NLLB model lists eng_Latn, fra_Latn, ...; engine/tests/seq2seq_text.rs)
    /// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
    /// assert!(model.languages().unwrap_err().to_string().contains("not a multilingual"));
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn languages(&self) -> Result<Vec<String>> {
        Ok(self.language_codes()?.languages(self.tokenizer()?))
    }

    /// The family's language codes, or an error naming the architecture.
    fn language_codes(&self) -> Result<LanguageCodes> {
        LanguageCodes::of(self.info.architecture).ok_or_else(|| {
            Error::Request(format!(
                "{}: {} is not a multilingual translation model: source and target languages apply to mBART-50 \
                 (mbart), M2M100 and NLLB (m2m_100)",
                self.dir.display(),
                self.info.architecture
            ))
        })
    }

    /// The token id of language `code` on `side`, or an error naming the code and how to list the valid ones.
    fn language_id(&self, side: Side, code: &str) -> Result<u32> {
        self.language_codes()?.id(self.tokenizer()?, side, code)
    }

    /// Translate sentences (the best hypothesis of each), in input order (encoder-decoder).
    pub fn translate(&self, texts: &[&str], opts: &TranslateOptions) -> Result<Vec<Translation>> {
        let opts = TranslateOptions {
            num_hypotheses: 1,
            ..opts.clone()
        };
        Ok(self
            .translate_n_best(texts, &opts)?
            .into_iter()
            .map(|mut v| v.swap_remove(0))
            .collect())
    }

    /// Translate sentences, `opts.num_hypotheses` per sentence, best first, in input order (encoder-decoder).
    pub fn translate_n_best(&self, texts: &[&str], opts: &TranslateOptions) -> Result<Vec<Vec<Translation>>> {
        let (net, _) = self.encoder_decoder("translate")?;
        let text = self.text()?;
        let search = self.search_options(opts)?;
        let sources = texts
            .iter()
            .map(|t| self.source_ids(t, opts))
            .collect::<Result<Vec<_>>>()?;
        self.job(net, &search, opts.batch_size).texts(text, &sources)
    }

    /// A sentence as a translation encodes it (encoder-decoder): the tokenizer's ids, special tokens included, with
    /// `opts.source_lang`'s token in place of the tokenizer's default language token.
    pub fn source_ids(&self, text: &str, opts: &TranslateOptions) -> Result<Vec<u32>> {
        let ids = self.text()?.encode(text)?;
        let Some(code) = &opts.source_lang else {
            return Ok(ids);
        };
        let (codes, tokenizer) = (self.language_codes()?, self.tokenizer()?);
        let lang = codes.id(tokenizer, Side::Source, code)?;
        Ok(with_source_language(ids, lang, |id| {
            codes.is_language_token(tokenizer, id)
        }))
    }

    /// Translate source ids: up to `opts.num_hypotheses` hypotheses per source, best first, in input order
    /// (encoder-decoder; works without tokenizer files).
    ///
    /// ```
    /// use qkv::{Model, TranslateOptions};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
    /// let opts = TranslateOptions { beam_size: Some(2), num_hypotheses: 2, max_length: Some(6), ..Default::default() };
    /// let out = model.translate_ids(&[vec![3, 4, 5, 0], vec![6, 0]], &opts)?;
    /// assert!(out.iter().all(|h| h.len() == 2 && h[0].score >= h[1].score));
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn translate_ids(&self, sources: &[Vec<u32>], opts: &TranslateOptions) -> Result<Vec<Vec<Hypothesis>>> {
        let (net, _) = self.encoder_decoder("translate")?;
        if let Some(code) = &opts.source_lang {
            return Err(Error::Request(format!(
                "translate_ids: source_lang {code:?} applies to text; source ids carry their own language token"
            )));
        }
        self.job(net, &self.search_options(opts)?, opts.batch_size).ids(sources)
    }

    /// [`Model::translate_ids`] with a whole [`SearchOptions`] of your own (another beam style, patience, rules),
    /// `batch_size` sources at a time.
    pub fn translate_ids_with(
        &self,
        sources: &[Vec<u32>],
        batch_size: usize,
        search: &SearchOptions,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let (net, _) = self.encoder_decoder("translate")?;
        self.job(net, search, batch_size).ids(sources)
    }

    fn job<'a>(&self, net: &'a Seq2Seq, search: &'a SearchOptions, batch_size: usize) -> Job<'a> {
        Job {
            net,
            search,
            batch_size,
            max_cache_bytes: self.max_cache_bytes,
        }
    }

    // --- attention you can see -------------------------------------------------------------------------

    /// Each id's token as the tokenizer spells it (`source`: the source side of a translation model), or the id
    /// itself when there is no tokenizer or it does not know the id.
    pub fn token_strings(&self, ids: &[u32], source: bool) -> Vec<String> {
        let name = |id: u32| {
            let t = self.text.as_ref()?.tokenizer();
            if source {
                t.source_id_to_token(id)
            } else {
                t.id_to_token(id)
            }
        };
        ids.iter()
            .map(|&id| name(id).unwrap_or_else(|| id.to_string()))
            .collect()
    }

    /// The causal self-attention probabilities of every layer and head over `prompt` (decoder-only; the prompt
    /// encoded as [`Model::generate`] encodes a plain prompt), from one forward pass on the recording path (the
    /// naive attention that keeps its probabilities; generation never runs it).
    ///
    /// ```
    /// use qkv::Model;
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
    /// let att = model.attention_ids(&[1, 2, 3])?;
    /// let [layers, heads, queries, keys] = att.self_attention.shape();
    /// assert_eq!((layers, heads, queries, keys), (2, 4, 3, 3));
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn attention(&self, prompt: &str) -> Result<PromptAttention> {
        self.decoder_only("attention")?;
        if prompt.is_empty() {
            return Err(Error::Request("attention: the prompt is empty".into()));
        }
        self.attention_ids(&self.prompt_ids(prompt, PromptFormat::Plain)?)
    }

    /// [`Model::attention`] of prompt ids (works without tokenizer files).
    pub fn attention_ids(&self, ids: &[u32]) -> Result<PromptAttention> {
        let m = self.decoder_only("attention")?;
        let (rec, _) = attention::record_prompt(m, ids, self.max_cache_bytes)?;
        Ok(PromptAttention {
            ids: ids.to_vec(),
            tokens: self.token_strings(ids, false),
            self_attention: rec.maps(attention::AttnKind::Decoder, self.info.n_layers)?,
        })
    }

    /// The encoder, decoder and cross-attention probabilities of a translation (encoder-decoder): `source` ids and
    /// the `target` a search produced (cut at its first EOS), teacher-forced through the recording path; one
    /// target row per target token, the decoder position whose output produced it.
    ///
    /// ```
    /// use qkv::{Model, TranslateOptions};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
    /// let source = [3, 4, 5, 0];
    /// let best = &model.translate_ids(&[source.to_vec()], &TranslateOptions::default())?[0][0];
    /// let att = model.translation_attention(&source, &best.tokens)?;
    /// let [layers, heads, targets, sources] = att.cross.shape();
    /// assert_eq!((layers, heads, sources), (2, 4, 4));
    /// assert_eq!(targets, att.target_ids.len());
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn translation_attention(&self, source: &[u32], target: &[u32]) -> Result<TranslationAttention> {
        let (net, defaults) = self.encoder_decoder("translation_attention")?;
        let (encoder, decoder, cross) =
            attention::record_translation(net, source, target, &defaults.rules.eos, self.max_cache_bytes)?;
        let (_, targets) = attention::teacher_forced(net.config().decoder_start_token_id, target, &defaults.rules.eos);
        Ok(TranslationAttention {
            source_ids: source.to_vec(),
            source_tokens: self.token_strings(source, true),
            target_tokens: self.token_strings(&targets, false),
            target_ids: targets,
            encoder,
            decoder,
            cross,
        })
    }

    /// The trace of one forward pass over `prompt` (decoder-only; encoded as a plain prompt) at `layer` and `head`:
    /// embeddings and positions, the head's Q, K, V, scores, mask, softmax weights and weighted sum, the norms'
    /// inputs, the feed-forward and the next tokens (see [`Trace`]). An error names a layer or head out of range.
    ///
    /// ```
    /// use qkv::Model;
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
    /// let t = model.explain_ids(&[1, 158, 66], 1, 5)?;
    /// assert_eq!((t.position_kind.as_str(), t.weights[0][1]), ("rotary", 0.0)); // the mask: exactly 0
    /// assert!(t.row_sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
    /// assert!(model.explain_ids(&[1, 158, 66], 2, 0).unwrap_err().to_string().contains("layer 2"));
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn explain(&self, prompt: &str, layer: usize, head: usize) -> Result<Trace> {
        self.decoder_only("explain")?;
        if prompt.is_empty() {
            return Err(Error::Request("explain: the prompt is empty".into()));
        }
        self.explain_ids(&self.prompt_ids(prompt, PromptFormat::Plain)?, layer, head)
    }

    /// [`Model::explain`] of prompt ids.
    pub fn explain_ids(&self, ids: &[u32], layer: usize, head: usize) -> Result<Trace> {
        let m = self.decoder_only("explain")?;
        let info = &self.info;
        if layer >= info.n_layers {
            return Err(Error::Request(format!(
                "explain: layer {layer} is out of range (the model has {} layers, 0..={})",
                info.n_layers,
                info.n_layers - 1
            )));
        }
        if head >= info.n_heads {
            return Err(Error::Request(format!(
                "explain: head {head} is out of range (the model has {} heads per layer, 0..={})",
                info.n_heads,
                info.n_heads - 1
            )));
        }
        let (rec, logits) = attention::record_prompt(m, ids, self.max_cache_bytes)?;
        let input = TraceInput {
            architecture: info.architecture,
            ids,
            tokens: self.token_strings(ids, false),
            d_model: info.hidden_size,
            n_layers: info.n_layers,
            layer,
            head,
            // GPT-2 normalises with LayerNorm, every other decoder-only family with RMSNorm
            norm_kind: if info.architecture == "gpt2" {
                "LayerNorm"
            } else {
                "RMSNorm"
            },
            logits: &logits,
            vocab: info.vocab_size,
        };
        explain::from_recording(&rec, input, |id| self.token_strings(&[id], false).remove(0))
    }

    /// Translate sentences ([`Model::translate`]) and record each translation's attention
    /// ([`Model::translation_attention`]).
    pub fn translate_with_attention(
        &self,
        texts: &[&str],
        opts: &TranslateOptions,
    ) -> Result<Vec<(Translation, TranslationAttention)>> {
        let translations = self.translate(texts, opts)?;
        texts
            .iter()
            .zip(translations)
            .map(|(src, t)| {
                let att = self.translation_attention(&self.source_ids(src, opts)?, &t.tokens)?;
                Ok((t, att))
            })
            .collect()
    }

    /// Source rows × decoder layers whose cross-attention keys and values were projected since the model was
    /// loaded (0 for a decoder-only model): a diagnostic showing that a source is projected once, whatever the
    /// number of beams and steps.
    pub fn cross_projection_count(&self) -> usize {
        match &self.net {
            Network::EncoderDecoder { net, .. } => net.cross_projection_count(),
            Network::DecoderOnly(_) => 0,
        }
    }

    /// Relative position bias tables built since the model was loaded: one per stack of a T5 model, built at
    /// load (0 for every other family): a diagnostic showing that the bias is computed once per stack, not per
    /// layer, step or sequence.
    pub fn position_bias_tables(&self) -> usize {
        match &self.net {
            Network::EncoderDecoder { net, .. } => net.position_bias_tables(),
            Network::DecoderOnly(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn model_is_send_and_sync_and_sessions_send() {
        assert_send_sync::<Model>();
        assert_send::<Session<'static>>();
    }
}
