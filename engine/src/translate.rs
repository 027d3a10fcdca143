//! Translation: load an encoder-decoder model directory, translate sentences in batches.
//!
//! ```no_run
//! use qkv::{Model, TranslateOptions};
//!
//! # fn main() -> qkv::Result<()> {
//! let model = Model::load("models/opus-mt-en-de")?; // or qkv::Translator::load
//! assert!(model.translator().is_ok());
//! let out = model.translate(&["Hello world", "How are you?"], &TranslateOptions::default())?;
//! for t in &out {
//!     println!("{} ({:.3})", t.text, t.score);
//! }
//! // Greedy, at most 64 tokens per sentence:
//! let opts = TranslateOptions { beam_size: Some(1), max_length: Some(64), ..Default::default() };
//! let fast = model.translate(&["Good morning"], &opts)?;
//! # Ok(())
//! # }
//! ```
//!
//! Search defaults come from the model: for Hugging Face Marian, `generation_config.json` (else
//! `config.json`) as transformers' `generate` reads them (num_beams, max_length, min_length,
//! length_penalty, early_stopping, bad_words_ids, forced_eos_token_id, renormalize_logits) and its beam
//! search semantics; for the CTranslate2 Transformer, `translate_batch`'s defaults (beam 2, length
//! penalty 1, at most 256 tokens, at least 1) and CTranslate2's beam search semantics (see [`crate::beam`]).

use std::path::{Path, PathBuf};

use kernels::{Activation, Kernels, Sinusoid};
use loaders::config::{Ct2Config, EmbeddingScale, GenerationConfig, MarianConfig, ModelConfig};
use loaders::safetensors::SafeTensors;
use loaders::tokenizer::{self, Tokenizer};

use crate::beam::{search, BeamStyle, EarlyStopping, Hypothesis, LogitsRules, SearchOptions};
use crate::layers::WeightType;
use crate::model::LoadOptions;
use crate::seq2seq::{NormPlacement, Positions, Seq2Seq, Seq2SeqConfig, WeightNames};
use crate::{Error, Result};

/// Positions of the CTranslate2 Transformer's sinusoid table (it has no learned limit): CTranslate2's
/// default `max_input_length` (1024) plus its default `max_decoding_length` (256).
const CT2_MAX_POSITIONS: usize = 1024 + 256;

/// Per-call translation options; `None` keeps the model's default.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslateOptions {
    /// 1 = greedy search.
    pub beam_size: Option<usize>,
    /// Most tokens generated per sentence, EOS included.
    pub max_length: Option<usize>,
    /// Fewest tokens generated before EOS is allowed.
    pub min_length: Option<usize>,
    pub length_penalty: Option<f32>,
    /// Hypotheses returned per sentence by [`Translator::translate_n_best`] (at most `beam_size`).
    pub num_hypotheses: usize,
    /// Sentences encoded and decoded together (sorted by length first, to limit padding).
    pub batch_size: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            beam_size: None,
            max_length: None,
            min_length: None,
            length_penalty: None,
            num_hypotheses: 1,
            batch_size: 32,
        }
    }
}

/// One translation.
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// Decoded text (special tokens skipped).
    pub text: String,
    /// Generated target ids (EOS included when emitted).
    pub tokens: Vec<u32>,
    /// Length-normalised log-probability (see [`crate::beam`]).
    pub score: f32,
}

/// An encoder-decoder model, its tokenizer and its search defaults. `Send + Sync`.
pub struct Translator {
    dir: PathBuf,
    model: Seq2Seq,
    /// `None` when the directory has no tokenizer files (id-level use only).
    tokenizer: Option<Box<dyn Tokenizer>>,
    defaults: SearchOptions,
}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator")
            .field("dir", &self.dir)
            .field("config", self.model.config())
            .field("defaults", &self.defaults)
            .finish()
    }
}

/// The kernels' activation for a config's name.
fn activation(path: &Path, field: &str, name: &str) -> Result<Activation> {
    match name {
        "relu" => Ok(Activation::Relu),
        "swish" | "silu" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        other => Err(Error::Request(format!(
            "{}: {field} {other:?} is not supported (relu, swish/silu, gelu, gelu_new)",
            path.display()
        ))),
    }
}

/// The runtime description of a Hugging Face `MarianMTModel` config. transformers' Marian is always
/// post-norm with static sinusoidal positions (it ignores `normalize_before` and `static_position_embeddings`).
pub fn marian_config(path: &Path, c: &MarianConfig) -> Result<Seq2SeqConfig> {
    Ok(Seq2SeqConfig {
        names: WeightNames::Marian,
        d_model: c.d_model,
        n_encoder_layers: c.encoder_layers,
        n_decoder_layers: c.decoder_layers,
        n_encoder_heads: c.encoder_attention_heads,
        n_decoder_heads: c.decoder_attention_heads,
        encoder_ffn_dim: c.encoder_ffn_dim,
        decoder_ffn_dim: c.decoder_ffn_dim,
        activation: activation(path, "activation_function", &c.activation_function)?,
        norm: NormPlacement::PostNorm,
        // torch.nn.LayerNorm's default
        layer_norm_eps: 1e-5,
        embed_scale: if c.scale_embedding {
            (c.d_model as f32).sqrt()
        } else {
            1.0
        },
        positions: Positions {
            kind: Sinusoid::Marian,
            first: 0,
            max: c.max_position_embeddings,
        },
        src_vocab_size: c.vocab_size,
        tgt_vocab_size: c.decoder_vocab_size,
        tied_lm_head: c.tie_word_embeddings,
        decoder_start_token_id: c.decoder_start_token_id,
        eos_token_id: c.eos_token_id,
        pad_token_id: c.pad_token_id,
    })
}

/// The runtime description of the custom CTranslate2 Transformer config (model_type `ct2_transformer_seq2seq`).
pub fn ct2_config(path: &Path, c: &Ct2Config) -> Result<Seq2SeqConfig> {
    let bad = |field: &str, msg: String| Err(Error::Request(format!("{}: {field}: {msg}", path.display())));
    if c.position_encoding.kind != "sinusoidal_tensor2tensor" {
        return bad(
            "position_encoding.type",
            format!(
                "{:?} is not supported (sinusoidal_tensor2tensor)",
                c.position_encoding.kind
            ),
        );
    }
    if c.pre_norm
        && (c.final_layer_norm.encoder != "encoder/layer_norm" || c.final_layer_norm.decoder != "decoder/layer_norm")
    {
        return bad(
            "final_layer_norm",
            format!(
                "expected encoder/layer_norm and decoder/layer_norm, found {:?}",
                c.final_layer_norm
            ),
        );
    }
    Ok(Seq2SeqConfig {
        names: WeightNames::Ct2,
        d_model: c.d_model,
        n_encoder_layers: c.encoder_layers,
        n_decoder_layers: c.decoder_layers,
        n_encoder_heads: c.num_heads,
        n_decoder_heads: c.num_heads,
        encoder_ffn_dim: c.ffn_dim,
        decoder_ffn_dim: c.ffn_dim,
        activation: activation(path, "activation", &c.activation)?,
        norm: if c.pre_norm {
            NormPlacement::PreNorm
        } else {
            NormPlacement::PostNorm
        },
        layer_norm_eps: c.layer_norm_eps,
        embed_scale: match c.scale_embeddings {
            EmbeddingScale::SqrtDModel => (c.d_model as f32).sqrt(),
            EmbeddingScale::None => 1.0,
        },
        positions: Positions {
            kind: Sinusoid::Tensor2Tensor,
            first: c.position_encoding.first_position,
            max: CT2_MAX_POSITIONS,
        },
        src_vocab_size: c.src_vocab_size,
        tgt_vocab_size: c.tgt_vocab_size,
        tied_lm_head: false,
        decoder_start_token_id: c.decoder_start_token_id,
        eos_token_id: c.eos_token_id,
        pad_token_id: c.pad_token_id,
    })
}

/// transformers' `generate` defaults for a Marian model: generation_config.json over config.json.
pub fn marian_defaults(c: &MarianConfig, g: Option<&GenerationConfig>) -> SearchOptions {
    let g = g.cloned().unwrap_or_default();
    // lengths count the decoder start token in transformers
    let max_length = g.max_length.unwrap_or(c.max_length);
    let max_new_tokens = g.max_new_tokens.unwrap_or(max_length.saturating_sub(1)).max(1);
    let min_new_tokens = g.min_new_tokens.unwrap_or(g.min_length.unwrap_or(0).saturating_sub(1));
    let num_beams = g.num_beams.unwrap_or(c.num_beams).max(1);
    let early_stopping = match g.early_stopping {
        Some(loaders::config::EarlyStopping::WhenNumBeamsDone) => EarlyStopping::Eager,
        Some(loaders::config::EarlyStopping::Never) => EarlyStopping::Never,
        Some(loaders::config::EarlyStopping::Heuristic) | None => EarlyStopping::Heuristic,
    };
    SearchOptions {
        num_beams,
        max_new_tokens,
        min_new_tokens,
        length_penalty: g.length_penalty.unwrap_or(1.0),
        num_return_sequences: g.num_return_sequences.unwrap_or(1).clamp(1, num_beams),
        style: BeamStyle::HuggingFace { early_stopping },
        rules: LogitsRules {
            eos: g.eos_token_id.unwrap_or_else(|| vec![c.eos_token_id]),
            bad_words: g.bad_words_ids.unwrap_or_else(|| c.bad_words_ids.clone()),
            forced_eos: match g.forced_eos_token_id {
                Some(ids) => ids.first().copied(),
                None => c.forced_eos_token_id,
            },
            renormalize: g.renormalize_logits.unwrap_or(false),
        },
    }
}

/// CTranslate2 `translate_batch` defaults.
pub fn ct2_defaults(c: &Ct2Config) -> SearchOptions {
    SearchOptions {
        num_beams: 2,
        max_new_tokens: 256,
        min_new_tokens: 1,
        length_penalty: 1.0,
        num_return_sequences: 1,
        style: BeamStyle::CTranslate2 { patience: 1.0 },
        rules: LogitsRules {
            eos: vec![c.eos_token_id],
            ..LogitsRules::default()
        },
    }
}

impl Translator {
    /// Load `dir`: config.json (Marian or `ct2_transformer_seq2seq`), generation_config.json if any,
    /// the safetensors weights (memory-mapped) and the tokenizer, on the best kernels of this CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, Kernels::detect()?)
    }

    /// Load `dir` on `kernels`, weights as stored.
    pub fn load_with(dir: impl AsRef<Path>, kernels: Kernels) -> Result<Self> {
        let opts = LoadOptions {
            kernels: Some(kernels),
            ..Default::default()
        };
        Self::load_options(dir, &opts)
    }

    /// Load `dir` with [`LoadOptions`] (kernels, and weights as stored or int8; `max_cache_bytes` is for
    /// generation and is not used here: translation sizes its caches per batch).
    pub fn load_options(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let kernels = opts.resolve_kernels()?;
        let config = ModelConfig::from_dir(dir)?;
        let gen = GenerationConfig::from_dir(dir)?;
        Self::from_parts(dir, &config, gen.as_ref(), kernels, opts.weights)
    }

    /// Build from an already parsed config (e.g. by `qkv::Model`), the linear layers held as `weights`.
    pub fn from_parts(
        dir: &Path,
        config: &ModelConfig,
        gen: Option<&GenerationConfig>,
        kernels: Kernels,
        weights: WeightType,
    ) -> Result<Self> {
        let path = dir.join("config.json");
        let (cfg, defaults) = match config {
            ModelConfig::Marian(c) => (marian_config(&path, c)?, marian_defaults(c, gen)),
            ModelConfig::Ct2Transformer(c) => (ct2_config(&path, c)?, ct2_defaults(c)),
            _ => {
                return Err(Error::Request(format!(
                    "{}: not an encoder-decoder model (Marian or ct2_transformer_seq2seq)",
                    path.display()
                )))
            }
        };
        let model = Seq2Seq::load_with(&SafeTensors::open_dir(dir)?, cfg, kernels, weights)?;
        // a directory without tokenizer files still serves `translate_ids`
        let tokenizer = match tokenizer::load_tokenizer(dir) {
            Ok(t) => Some(t),
            Err(loaders::Error::NoTokenizer { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(t) = &tokenizer {
            if t.vocab_size() > model.config().tgt_vocab_size {
                return Err(Error::Request(format!(
                    "{}: the tokenizer has {} target ids, the model {}",
                    dir.display(),
                    t.vocab_size(),
                    model.config().tgt_vocab_size
                )));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            defaults,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network (for id-level use: [`Seq2Seq::start`] + [`crate::beam::search`]).
    pub fn model(&self) -> &Seq2Seq {
        &self.model
    }

    /// The tokenizer (an error naming the directory when it has none).
    pub fn tokenizer(&self) -> Result<&dyn Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| {
            Error::Request(format!(
                "{}: no tokenizer files, so only token ids can be translated (translate_ids)",
                self.dir.display()
            ))
        })
    }

    /// The model's default search options.
    pub fn defaults(&self) -> &SearchOptions {
        &self.defaults
    }

    /// The search options of a call: the model defaults overridden by `opts`.
    pub fn search_options(&self, opts: &TranslateOptions) -> SearchOptions {
        let mut s = self.defaults.clone();
        if let Some(b) = opts.beam_size {
            s.num_beams = b;
        }
        if let Some(m) = opts.max_length {
            s.max_new_tokens = m;
        }
        if let Some(m) = opts.min_length {
            s.min_new_tokens = m;
        }
        if let Some(lp) = opts.length_penalty {
            s.length_penalty = lp;
        }
        s.num_return_sequences = opts.num_hypotheses;
        s
    }

    /// Translate source token ids: up to `num_hypotheses` hypotheses per source, best first, in input order.
    pub fn translate_ids(&self, sources: &[Vec<u32>], opts: &TranslateOptions) -> Result<Vec<Vec<Hypothesis>>> {
        let search_opts = self.search_options(opts);
        translate_ids(&self.model, sources, opts.batch_size, &search_opts)
    }

    /// Translate sentences (the best hypothesis of each), in input order.
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

    /// Translate sentences, `opts.num_hypotheses` per sentence, best first, in input order.
    pub fn translate_n_best(&self, texts: &[&str], opts: &TranslateOptions) -> Result<Vec<Vec<Translation>>> {
        let tok = self.tokenizer()?;
        let sources = texts
            .iter()
            .map(|t| tok.encode(t))
            .collect::<loaders::Result<Vec<_>>>()?;
        self.translate_ids(&sources, opts)?
            .into_iter()
            .map(|hyps| {
                hyps.into_iter()
                    .map(|h| {
                        Ok(Translation {
                            text: tok.decode(&h.tokens, true)?,
                            tokens: h.tokens,
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Translation through [`crate::Model`] (which loads Marian and CTranslate2 directories as
/// [`crate::model::Architecture::Seq2Seq`]).
impl crate::model::Model {
    /// The translator of an encoder-decoder model (an error for a decoder-only model).
    pub fn translator(&self) -> Result<&Translator> {
        match self.architecture() {
            crate::model::Architecture::Seq2Seq(t) => Ok(t),
            other => Err(Error::Request(format!(
                "{}: a {} model cannot translate (it is decoder-only: use generate)",
                self.dir().display(),
                other.name()
            ))),
        }
    }

    /// Translate sentences (best hypothesis each, input order). See [`Translator::translate`].
    pub fn translate(&self, texts: &[&str], opts: &TranslateOptions) -> Result<Vec<Translation>> {
        self.translator()?.translate(texts, opts)
    }

    /// Translate source ids. See [`Translator::translate_ids`].
    pub fn translate_ids(&self, sources: &[Vec<u32>], opts: &TranslateOptions) -> Result<Vec<Vec<Hypothesis>>> {
        self.translator()?.translate_ids(sources, opts)
    }
}

/// Search every source with `opts`, `batch_size` sources at a time: sources are sorted by length (so a
/// batch pads little), each batch is encoded once and searched, and results come back in input order.
pub fn translate_ids(
    model: &Seq2Seq,
    sources: &[Vec<u32>],
    batch_size: usize,
    opts: &SearchOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    if batch_size == 0 {
        return Err(Error::Request("batch_size must be at least 1".into()));
    }
    // longest first: the first batch shows memory problems early
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out: Vec<Option<Vec<Hypothesis>>> = vec![None; sources.len()];
    let start = model.config().decoder_start_token_id;
    for chunk in order.chunks(batch_size) {
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| sources[i].as_slice()).collect();
        let mut state = model.start(&batch, batch.len() * opts.num_beams, opts.max_new_tokens)?;
        let hyps = search(model, &mut state, &vec![start; batch.len()], opts)?;
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = Some(h);
        }
    }
    Ok(out.into_iter().map(|h| h.unwrap_or_default()).collect())
}
