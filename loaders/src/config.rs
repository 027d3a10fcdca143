//! Model configs, deserialized straight from `config.json` with the defaults Hugging Face uses.
//!
//! Each struct mirrors one `transformers` configuration class (`configuration_llama.py`,
//! `configuration_gpt2.py`, `configuration_marian.py`): a key absent from the file takes the value
//! that class gives it, and an explicit `null` means what it means there (for example no BOS id).
//! Fields HF derives (`head_dim`, `num_key_value_heads`, `decoder_vocab_size`) are resolved here.
//! Unknown keys are ignored, as HF does.
//!
//! A config is untrusted input too: after parsing, every struct is checked for values that would make
//! a model inconsistent or index out of bounds (zero sizes, heads that do not divide the width, ids
//! beyond the vocabulary, ...). Errors name the file and the field: [`Error::ConfigJson`] (not JSON),
//! [`Error::InvalidConfig`] (a field of the wrong type or an inconsistent value), and
//! [`Error::UnknownModelType`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Result};

/// The model types qkv reads (`model_type` in config.json).
pub const KNOWN_MODEL_TYPES: &str = "marian, llama, gpt2, ct2_transformer_seq2seq";

/// A parsed and validated `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    Marian(MarianConfig),
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
    Ct2Transformer(Ct2Config),
}

impl ModelConfig {
    /// Read `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_raw(&RawConfig::from_dir(dir)?)
    }

    /// Parse config JSON; `path` only names the file in errors. The model is chosen by `model_type`,
    /// or, when that key is absent, by `architectures` (as `AutoConfig` does for old files).
    pub fn from_json(path: &Path, json: &str) -> Result<Self> {
        Self::from_raw(&RawConfig::from_json(path, json)?)
    }

    /// The typed config of a [`RawConfig`], chosen by its `model_type` (or its first architecture).
    pub fn from_raw(raw: &RawConfig) -> Result<Self> {
        let kind = match raw.model_type() {
            Some(t) => t,
            None => match raw.architectures().first().map(String::as_str) {
                Some("MarianMTModel" | "MarianModel") => "marian",
                Some("LlamaForCausalLM" | "LlamaModel") => "llama",
                Some("GPT2LMHeadModel" | "GPT2Model") => "gpt2",
                _ => "",
            },
        };
        match kind {
            "marian" => Ok(ModelConfig::Marian(MarianConfig::from_raw(raw)?)),
            "llama" => Ok(ModelConfig::Llama(LlamaConfig::from_raw(raw)?)),
            "gpt2" => Ok(ModelConfig::Gpt2(Gpt2Config::from_raw(raw)?)),
            "ct2_transformer_seq2seq" => Ok(ModelConfig::Ct2Transformer(Ct2Config::from_raw(raw)?)),
            _ => Err(Error::UnknownModelType {
                path: raw.path.clone(),
                found: raw.model_type.clone(),
                architectures: raw.architectures.clone(),
                known: KNOWN_MODEL_TYPES,
            }),
        }
    }

    /// The `model_type` string of this config.
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Marian(_) => "marian",
            ModelConfig::Llama(_) => "llama",
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Ct2Transformer(_) => "ct2_transformer_seq2seq",
        }
    }
}

/// `config.json` read as a JSON object but not yet as one model's config: its `model_type` and `architectures`
/// say which model family reads it, and that family reads its own typed config from it ([`RawConfig::parse`], or
/// `from_raw` of the configs here). This is what lets a model registry (the engine's) add a family without a new
/// variant of [`ModelConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct RawConfig {
    path: PathBuf,
    value: Value,
    model_type: Option<String>,
    architectures: Vec<String>,
}

impl RawConfig {
    /// Read `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&path, &text)
    }

    /// Parse config JSON (an object, with a string `model_type` if any); `path` only names the file in errors.
    pub fn from_json(path: &Path, json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(|e| Error::ConfigJson {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(obj) = &value else {
            return Err(Error::ConfigJson {
                path: path.to_path_buf(),
                reason: format!("expected a JSON object, found {}", json_kind(&value)),
            });
        };
        let architectures: Vec<String> = match obj.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let model_type = match obj.get("model_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(invalid(path, "model_type", format!("expected a string, found {other}")));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            value,
            model_type,
            architectures,
        })
    }

    /// The file, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `model_type`, when the file has one.
    pub fn model_type(&self) -> Option<&str> {
        self.model_type.as_deref()
    }

    /// `architectures` (class names such as `LlamaForCausalLM`), empty when absent.
    pub fn architectures(&self) -> &[String] {
        &self.architectures
    }

    /// The file as `T` (serde defaults for absent keys); an error naming the file and the field that does not fit.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        typed(&self.path, self.value.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Llama (LlamaForCausalLM, SmolLM2, TinyLlama, llama2.c conversions)
// ---------------------------------------------------------------------------------------------

/// `LlamaConfig` (transformers `configuration_llama.py`), defaults as there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: defaults to `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Defaults to `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    /// From `rope_theta`, or `rope_parameters.rope_theta` (transformers 5); default 10000.
    pub rope_theta: f64,
    /// Non-default RoPE (`rope_scaling`, or `rope_parameters` with a `rope_type` other than "default").
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// An int or a list in the file; empty when `null`.
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub hidden_act: String,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// `torch_dtype` (or `dtype`, transformers 5), e.g. "float32", "bfloat16".
    pub torch_dtype: Option<String>,
}

/// RoPE scaling parameters (`rope_type` "linear", "dynamic", "llama3", "yarn", ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    /// LongRoPE (Phi-3 128k): per-pair divisors of the frequencies, for sequences within / beyond the original
    /// context.
    pub short_factor: Option<Vec<f64>>,
    pub long_factor: Option<Vec<f64>>,
    /// LongRoPE / YaRN: multiplies `cos` and `sin` (derived from the context ratio when absent).
    pub attention_factor: Option<f64>,
}

/// `rope_parameters` (transformers 5) or `rope_scaling` (older), read leniently.
#[derive(Deserialize)]
struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
    short_factor: Option<Vec<f64>>,
    long_factor: Option<Vec<f64>>,
    attention_factor: Option<f64>,
}

impl RawRope {
    /// `None` for plain RoPE.
    fn scaling(&self) -> Option<RopeScaling> {
        let t = self.rope_type.as_deref().unwrap_or("default");
        (t != "default").then(|| RopeScaling {
            rope_type: t.to_string(),
            factor: self.factor,
            low_freq_factor: self.low_freq_factor,
            high_freq_factor: self.high_freq_factor,
            original_max_position_embeddings: self.original_max_position_embeddings,
            short_factor: self.short_factor.clone(),
            long_factor: self.long_factor.clone(),
            attention_factor: self.attention_factor,
        })
    }
}

#[derive(Deserialize)]
struct RawLlama {
    #[serde(default = "llama_defaults::hidden_size")]
    hidden_size: usize,
    #[serde(default = "llama_defaults::intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "llama_defaults::num_hidden_layers")]
    num_hidden_layers: usize,
    #[serde(default = "llama_defaults::num_attention_heads")]
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "llama_defaults::vocab_size")]
    vocab_size: usize,
    #[serde(default = "llama_defaults::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "llama_defaults::rms_norm_eps")]
    rms_norm_eps: f32,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<RawRope>,
    #[serde(default)]
    rope_scaling: Option<RawRope>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "llama_defaults::bos_token_id")]
    bos_token_id: Option<u32>,
    #[serde(default = "llama_defaults::eos_token_id", deserialize_with = "ids_one_or_many")]
    eos_token_id: Vec<u32>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "llama_defaults::hidden_act")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default, alias = "dtype")]
    torch_dtype: Option<String>,
}

/// `LlamaConfig` defaults (transformers `configuration_llama.py`).
mod llama_defaults {
    pub fn hidden_size() -> usize {
        4096
    }
    pub fn intermediate_size() -> usize {
        11008
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn vocab_size() -> usize {
        32000
    }
    pub fn max_position_embeddings() -> usize {
        2048
    }
    pub fn rms_norm_eps() -> f32 {
        1e-6
    }
    pub fn bos_token_id() -> Option<u32> {
        Some(1)
    }
    pub fn eos_token_id() -> Vec<u32> {
        vec![2]
    }
    pub fn hidden_act() -> String {
        "silu".into()
    }
}

/// RoPE base when a config names none (transformers `RotaryEmbeddingConfigMixin.default_theta`).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl LlamaConfig {
    /// This config from a [`RawConfig`] (checked as [`ModelConfig::from_json`] checks it).
    pub fn from_raw(raw: &RawConfig) -> Result<Self> {
        Self::from_value(&raw.path, raw.value.clone())
    }

    fn from_value(path: &Path, value: Value) -> Result<Self> {
        let raw: RawLlama = typed(path, value)?;
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None => raw.hidden_size.checked_div(raw.num_attention_heads).unwrap_or(0),
        };
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA);
        let rope_scaling = raw
            .rope_parameters
            .as_ref()
            .and_then(RawRope::scaling)
            .or_else(|| raw.rope_scaling.as_ref().and_then(RawRope::scaling));
        let c = LlamaConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw.eos_token_id,
            pad_token_id: raw.pad_token_id,
            hidden_act: raw.hidden_act,
            attention_bias: raw.attention_bias,
            mlp_bias: raw.mlp_bias,
            torch_dtype: raw.torch_dtype,
        };
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        positive(path, "hidden_size", self.hidden_size)?;
        positive(path, "intermediate_size", self.intermediate_size)?;
        positive(path, "num_hidden_layers", self.num_hidden_layers)?;
        positive(path, "num_attention_heads", self.num_attention_heads)?;
        positive(path, "num_key_value_heads", self.num_key_value_heads)?;
        positive(path, "vocab_size", self.vocab_size)?;
        positive(path, "max_position_embeddings", self.max_position_embeddings)?;
        divides(
            path,
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        divides(
            path,
            "num_attention_heads",
            self.num_attention_heads,
            "num_key_value_heads",
            self.num_key_value_heads,
        )?;
        positive(path, "head_dim", self.head_dim)?;
        for (field, heads) in [
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ] {
            if heads.checked_mul(self.head_dim).is_none() {
                return Err(invalid(
                    path,
                    field,
                    format!("{heads} x head_dim {} overflows", self.head_dim),
                ));
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(invalid(
                path,
                "head_dim",
                format!("{} is odd; RoPE rotates pairs", self.head_dim),
            ));
        }
        positive_float(path, "rms_norm_eps", self.rms_norm_eps as f64)?;
        positive_float(path, "rope_theta", self.rope_theta)?;
        id_in_vocab(path, "bos_token_id", self.bos_token_id, self.vocab_size)?;
        for &id in &self.eos_token_id {
            id_in_vocab(path, "eos_token_id", Some(id), self.vocab_size)?;
        }
        id_in_vocab(path, "pad_token_id", self.pad_token_id, self.vocab_size)?;
        Ok(())
    }

    /// Query heads per KV head (grouped-query attention).
    pub fn n_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

// ---------------------------------------------------------------------------------------------
// GPT-2
// ---------------------------------------------------------------------------------------------

/// `GPT2Config` (transformers `configuration_gpt2.py`), defaults as there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    #[serde(default = "gpt2_defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "gpt2_defaults::n_positions")]
    pub n_positions: usize,
    #[serde(default = "gpt2_defaults::n_embd")]
    pub n_embd: usize,
    #[serde(default = "gpt2_defaults::n_layer")]
    pub n_layer: usize,
    #[serde(default = "gpt2_defaults::n_head")]
    pub n_head: usize,
    /// Feed-forward width; `None` means 4 * n_embd (see [`Gpt2Config::inner_dim`]).
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "gpt2_defaults::layer_norm_epsilon")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "gpt2_defaults::activation_function")]
    pub activation_function: String,
    #[serde(default = "gpt2_defaults::token_id")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "gpt2_defaults::eos_token_id", deserialize_with = "ids_one_or_many")]
    pub eos_token_id: Vec<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Scales attention by 1/(layer+1) as well: changes the math, engines must honour or reject it.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
}

mod gpt2_defaults {
    pub fn vocab_size() -> usize {
        50257
    }
    pub fn n_positions() -> usize {
        1024
    }
    pub fn n_embd() -> usize {
        768
    }
    pub fn n_layer() -> usize {
        12
    }
    pub fn n_head() -> usize {
        12
    }
    pub fn layer_norm_epsilon() -> f32 {
        1e-5
    }
    pub fn activation_function() -> String {
        "gelu_new".into()
    }
    pub fn token_id() -> Option<u32> {
        Some(50256)
    }
    pub fn eos_token_id() -> Vec<u32> {
        vec![50256]
    }
}

impl Gpt2Config {
    /// This config from a [`RawConfig`] (checked as [`ModelConfig::from_json`] checks it).
    pub fn from_raw(raw: &RawConfig) -> Result<Self> {
        Self::from_value(&raw.path, raw.value.clone())
    }

    fn from_value(path: &Path, value: Value) -> Result<Self> {
        let c: Gpt2Config = typed(path, value)?;
        positive(path, "vocab_size", c.vocab_size)?;
        positive(path, "n_positions", c.n_positions)?;
        positive(path, "n_embd", c.n_embd)?;
        positive(path, "n_layer", c.n_layer)?;
        positive(path, "n_head", c.n_head)?;
        divides(path, "n_embd", c.n_embd, "n_head", c.n_head)?;
        if c.n_inner.is_none() && c.n_embd.checked_mul(4).is_none() {
            return Err(invalid(
                path,
                "n_embd",
                format!("4 x {} (the default n_inner) overflows", c.n_embd),
            ));
        }
        if c.n_inner == Some(0) {
            return Err(invalid(
                path,
                "n_inner",
                "must be positive (or null for 4 * n_embd)".into(),
            ));
        }
        positive_float(path, "layer_norm_epsilon", c.layer_norm_epsilon as f64)?;
        id_in_vocab(path, "bos_token_id", c.bos_token_id, c.vocab_size)?;
        for &id in &c.eos_token_id {
            id_in_vocab(path, "eos_token_id", Some(id), c.vocab_size)?;
        }
        id_in_vocab(path, "pad_token_id", c.pad_token_id, c.vocab_size)?;
        Ok(c)
    }

    /// The feed-forward width: `n_inner`, or 4 * n_embd.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

// ---------------------------------------------------------------------------------------------
// Marian (MarianMTModel, opus-mt)
// ---------------------------------------------------------------------------------------------

/// `MarianConfig` (transformers `configuration_marian.py`), defaults as there. The generation keys
/// (`num_beams`, `max_length`, `bad_words_ids`) come from older config.json files; their defaults are
/// those of transformers 4's `PretrainedConfig` (1, 20, none). `generation_config.json`, when present,
/// takes precedence over them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarianConfig {
    pub vocab_size: usize,
    /// Defaults to `vocab_size`.
    pub decoder_vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub activation_function: String,
    pub max_position_embeddings: usize,
    pub scale_embedding: bool,
    /// HF's Marian always uses static sinusoidal positions whatever this says (it reads the key from
    /// no code path); kept for inspection, default true.
    pub static_position_embeddings: bool,
    pub share_encoder_decoder_embeddings: bool,
    pub tie_word_embeddings: bool,
    /// HF's Marian is always post-norm whatever this says (the key is ignored there); default false.
    pub normalize_before: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    pub forced_eos_token_id: Option<u32>,
    pub bad_words_ids: Vec<Vec<u32>>,
    pub num_beams: usize,
    pub max_length: usize,
    pub torch_dtype: Option<String>,
}

#[derive(Deserialize)]
struct RawMarian {
    #[serde(default = "marian_defaults::vocab_size")]
    vocab_size: usize,
    #[serde(default)]
    decoder_vocab_size: Option<usize>,
    #[serde(default = "marian_defaults::d_model")]
    d_model: usize,
    #[serde(default = "marian_defaults::layers")]
    encoder_layers: usize,
    #[serde(default = "marian_defaults::layers")]
    decoder_layers: usize,
    #[serde(default = "marian_defaults::heads")]
    encoder_attention_heads: usize,
    #[serde(default = "marian_defaults::heads")]
    decoder_attention_heads: usize,
    #[serde(default = "marian_defaults::ffn_dim")]
    encoder_ffn_dim: usize,
    #[serde(default = "marian_defaults::ffn_dim")]
    decoder_ffn_dim: usize,
    #[serde(default = "marian_defaults::activation_function")]
    activation_function: String,
    #[serde(default = "marian_defaults::max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    scale_embedding: bool,
    #[serde(default = "yes")]
    static_position_embeddings: bool,
    #[serde(default = "yes")]
    share_encoder_decoder_embeddings: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    normalize_before: bool,
    #[serde(default = "marian_defaults::pad_token_id")]
    pad_token_id: Option<u32>,
    #[serde(default = "marian_defaults::eos_token_id", deserialize_with = "ids_one_or_many")]
    eos_token_id: Vec<u32>,
    #[serde(default = "marian_defaults::decoder_start_token_id")]
    decoder_start_token_id: Option<u32>,
    #[serde(
        default = "marian_defaults::forced_eos_token_id",
        deserialize_with = "ids_one_or_many"
    )]
    forced_eos_token_id: Vec<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    bad_words_ids: Vec<Vec<u32>>,
    #[serde(default = "marian_defaults::num_beams")]
    num_beams: usize,
    #[serde(default = "marian_defaults::max_length")]
    max_length: usize,
    #[serde(default, alias = "dtype")]
    torch_dtype: Option<String>,
}

mod marian_defaults {
    pub fn vocab_size() -> usize {
        58101
    }
    pub fn d_model() -> usize {
        1024
    }
    pub fn layers() -> usize {
        12
    }
    pub fn heads() -> usize {
        16
    }
    pub fn ffn_dim() -> usize {
        4096
    }
    pub fn activation_function() -> String {
        "gelu".into()
    }
    pub fn max_position_embeddings() -> usize {
        1024
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(58100)
    }
    pub fn eos_token_id() -> Vec<u32> {
        vec![0]
    }
    pub fn decoder_start_token_id() -> Option<u32> {
        Some(58100)
    }
    pub fn forced_eos_token_id() -> Vec<u32> {
        vec![0]
    }
    pub fn num_beams() -> usize {
        1
    }
    pub fn max_length() -> usize {
        20
    }
}

impl MarianConfig {
    /// This config from a [`RawConfig`] (checked as [`ModelConfig::from_json`] checks it).
    pub fn from_raw(raw: &RawConfig) -> Result<Self> {
        Self::from_value(&raw.path, raw.value.clone())
    }

    fn from_value(path: &Path, value: Value) -> Result<Self> {
        let raw: RawMarian = typed(path, value)?;
        let required =
            |field: &str, v: Option<u32>| v.ok_or_else(|| invalid(path, field, "must be set, not null".into()));
        let single = |field: &str, v: Vec<u32>| match v.as_slice() {
            [id] => Ok(*id),
            _ => Err(invalid(path, field, format!("expected one token id, found {v:?}"))),
        };
        let forced_eos_token_id = match raw.forced_eos_token_id.as_slice() {
            [] => None,
            [id] => Some(*id),
            v => {
                return Err(invalid(
                    path,
                    "forced_eos_token_id",
                    format!("expected one token id, found {v:?}"),
                ))
            }
        };
        let c = MarianConfig {
            vocab_size: raw.vocab_size,
            decoder_vocab_size: raw.decoder_vocab_size.unwrap_or(raw.vocab_size),
            d_model: raw.d_model,
            encoder_layers: raw.encoder_layers,
            decoder_layers: raw.decoder_layers,
            encoder_attention_heads: raw.encoder_attention_heads,
            decoder_attention_heads: raw.decoder_attention_heads,
            encoder_ffn_dim: raw.encoder_ffn_dim,
            decoder_ffn_dim: raw.decoder_ffn_dim,
            activation_function: raw.activation_function,
            max_position_embeddings: raw.max_position_embeddings,
            scale_embedding: raw.scale_embedding,
            static_position_embeddings: raw.static_position_embeddings,
            share_encoder_decoder_embeddings: raw.share_encoder_decoder_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            normalize_before: raw.normalize_before,
            pad_token_id: required("pad_token_id", raw.pad_token_id)?,
            eos_token_id: single("eos_token_id", raw.eos_token_id)?,
            decoder_start_token_id: required("decoder_start_token_id", raw.decoder_start_token_id)?,
            forced_eos_token_id,
            bad_words_ids: raw.bad_words_ids,
            num_beams: raw.num_beams,
            max_length: raw.max_length,
            torch_dtype: raw.torch_dtype,
        };
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        positive(path, "vocab_size", self.vocab_size)?;
        positive(path, "decoder_vocab_size", self.decoder_vocab_size)?;
        positive(path, "d_model", self.d_model)?;
        positive(path, "encoder_layers", self.encoder_layers)?;
        positive(path, "decoder_layers", self.decoder_layers)?;
        positive(path, "encoder_attention_heads", self.encoder_attention_heads)?;
        positive(path, "decoder_attention_heads", self.decoder_attention_heads)?;
        positive(path, "encoder_ffn_dim", self.encoder_ffn_dim)?;
        positive(path, "decoder_ffn_dim", self.decoder_ffn_dim)?;
        positive(path, "max_position_embeddings", self.max_position_embeddings)?;
        positive(path, "num_beams", self.num_beams)?;
        positive(path, "max_length", self.max_length)?;
        divides(
            path,
            "d_model",
            self.d_model,
            "encoder_attention_heads",
            self.encoder_attention_heads,
        )?;
        divides(
            path,
            "d_model",
            self.d_model,
            "decoder_attention_heads",
            self.decoder_attention_heads,
        )?;
        if self.share_encoder_decoder_embeddings && self.decoder_vocab_size != self.vocab_size {
            return Err(invalid(
                path,
                "decoder_vocab_size",
                format!(
                    "{} differs from vocab_size {} but share_encoder_decoder_embeddings is true",
                    self.decoder_vocab_size, self.vocab_size
                ),
            ));
        }
        let v = self.decoder_vocab_size;
        id_in_vocab(path, "pad_token_id", Some(self.pad_token_id), v.min(self.vocab_size))?;
        id_in_vocab(path, "eos_token_id", Some(self.eos_token_id), v)?;
        id_in_vocab(path, "decoder_start_token_id", Some(self.decoder_start_token_id), v)?;
        id_in_vocab(path, "forced_eos_token_id", self.forced_eos_token_id, v)?;
        for ids in &self.bad_words_ids {
            for &id in ids {
                id_in_vocab(path, "bad_words_ids", Some(id), v)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The custom CTranslate2 TransformerBase description (shared/models/aren-transliteration-ct2)
// ---------------------------------------------------------------------------------------------

/// How embeddings are scaled before positions are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingScale {
    #[serde(rename = "sqrt(d_model)")]
    SqrtDModel,
    #[serde(rename = "none")]
    None,
}

/// Names of the final layer norms (`{"encoder": "...", "decoder": "..."}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalLayerNorm {
    pub encoder: String,
    pub decoder: String,
}

/// Position encoding description; only `sinusoidal_tensor2tensor` is defined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionEncoding {
    #[serde(rename = "type")]
    pub kind: String,
    /// The position of the first token (1 for OpenNMT-tf / CTranslate2).
    pub first_position: usize,
}

/// The custom description of a CTranslate2 "TransformerBase" encoder-decoder written for this project
/// (no HF class matches it). Every field is required: there are no upstream defaults to follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ct2Config {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub activation: String,
    pub pre_norm: bool,
    pub layer_norm_eps: f32,
    pub final_layer_norm: FinalLayerNorm,
    pub scale_embeddings: EmbeddingScale,
    pub position_encoding: PositionEncoding,
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    pub src_vocab_file: String,
    pub tgt_vocab_file: String,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    /// Whether `<s>` / `</s>` are added to the source (both false for the aren model).
    #[serde(default)]
    pub source_bos: bool,
    #[serde(default)]
    pub source_eos: bool,
    #[serde(default)]
    pub dtype: Option<String>,
}

impl Ct2Config {
    /// This config from a [`RawConfig`] (checked as [`ModelConfig::from_json`] checks it).
    pub fn from_raw(raw: &RawConfig) -> Result<Self> {
        Self::from_value(&raw.path, raw.value.clone())
    }

    fn from_value(path: &Path, value: Value) -> Result<Self> {
        let c: Ct2Config = typed(path, value)?;
        positive(path, "d_model", c.d_model)?;
        positive(path, "encoder_layers", c.encoder_layers)?;
        positive(path, "decoder_layers", c.decoder_layers)?;
        positive(path, "num_heads", c.num_heads)?;
        positive(path, "head_dim", c.head_dim)?;
        positive(path, "ffn_dim", c.ffn_dim)?;
        positive(path, "src_vocab_size", c.src_vocab_size)?;
        positive(path, "tgt_vocab_size", c.tgt_vocab_size)?;
        if c.num_heads.checked_mul(c.head_dim) != Some(c.d_model) {
            return Err(invalid(
                path,
                "head_dim",
                format!(
                    "num_heads {} x head_dim {} != d_model {}",
                    c.num_heads, c.head_dim, c.d_model
                ),
            ));
        }
        if c.position_encoding.kind != "sinusoidal_tensor2tensor" {
            return Err(invalid(
                path,
                "position_encoding.type",
                format!(
                    "{:?} is unknown; expected \"sinusoidal_tensor2tensor\"",
                    c.position_encoding.kind
                ),
            ));
        }
        if !c.d_model.is_multiple_of(2) || c.d_model < 4 {
            return Err(invalid(
                path,
                "d_model",
                format!("{} cannot hold sin/cos position pairs (even, >= 4)", c.d_model),
            ));
        }
        positive_float(path, "layer_norm_eps", c.layer_norm_eps as f64)?;
        id_in_vocab(
            path,
            "decoder_start_token_id",
            Some(c.decoder_start_token_id),
            c.tgt_vocab_size,
        )?;
        id_in_vocab(path, "eos_token_id", Some(c.eos_token_id), c.tgt_vocab_size)?;
        id_in_vocab(
            path,
            "pad_token_id",
            Some(c.pad_token_id),
            c.tgt_vocab_size.min(c.src_vocab_size),
        )?;
        for (field, file) in [
            ("src_vocab_file", &c.src_vocab_file),
            ("tgt_vocab_file", &c.tgt_vocab_file),
        ] {
            plain_file_name(path, field, file)?;
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------------------------------------
// generation_config.json
// ---------------------------------------------------------------------------------------------

/// `early_stopping`: a bool or "never".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `false`: stop beams with a heuristic on the best reachable score.
    Heuristic,
    /// `true`: stop as soon as `num_beams` finished candidates exist.
    WhenNumBeamsDone,
    /// `"never"`: the canonical beam search, which stops only when no better candidate can appear.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::Heuristic => s.serialize_bool(false),
            EarlyStopping::WhenNumBeamsDone => s.serialize_bool(true),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(EarlyStopping::Heuristic),
            Value::Bool(true) => Ok(EarlyStopping::WhenNumBeamsDone),
            Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(serde::de::Error::custom(format!(
                "expected true, false or \"never\", found {other}"
            ))),
        }
    }
}

/// `generation_config.json` (transformers `GenerationConfig`): every field optional, as there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f32>,
    pub early_stopping: Option<EarlyStopping>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<usize>,
    pub bos_token_id: Option<u32>,
    /// An int or a list in the file.
    #[serde(default, deserialize_with = "opt_ids_one_or_many")]
    pub eos_token_id: Option<Vec<u32>>,
    pub pad_token_id: Option<u32>,
    pub decoder_start_token_id: Option<u32>,
    #[serde(default, deserialize_with = "opt_ids_one_or_many")]
    pub forced_eos_token_id: Option<Vec<u32>>,
    pub forced_bos_token_id: Option<u32>,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub num_return_sequences: Option<usize>,
    pub renormalize_logits: Option<bool>,
    pub transformers_version: Option<String>,
}

impl GenerationConfig {
    /// Read `dir/generation_config.json`; `Ok(None)` when the file does not exist.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("generation_config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_json(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Parse generation config JSON; `path` only names the file in errors.
    pub fn from_json(path: &Path, json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(|e| Error::ConfigJson {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        if !value.is_object() {
            return Err(Error::ConfigJson {
                path: path.to_path_buf(),
                reason: format!("expected a JSON object, found {}", json_kind(&value)),
            });
        }
        let c: GenerationConfig = typed(path, value)?;
        for (field, v) in [
            ("num_beams", c.num_beams),
            ("max_length", c.max_length),
            ("num_return_sequences", c.num_return_sequences),
        ] {
            if v == Some(0) {
                return Err(invalid(path, field, "must be positive".into()));
            }
        }
        if let Some(t) = c.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(invalid(path, "temperature", format!("{t} is not a finite value >= 0")));
            }
        }
        for (field, p) in [("top_p", c.top_p), ("min_p", c.min_p)] {
            if let Some(p) = p {
                if !(0.0..=1.0).contains(&p) {
                    return Err(invalid(path, field, format!("{p} is outside [0, 1]")));
                }
            }
        }
        if let Some(r) = c.repetition_penalty {
            positive_float(path, "repetition_penalty", r as f64)?;
        }
        if let Some(l) = c.length_penalty {
            if !l.is_finite() {
                return Err(invalid(path, "length_penalty", format!("{l} is not finite")));
            }
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deserialize a typed struct from a JSON value; a failure names the field's path (`rope_scaling.factor`).
fn typed<T: DeserializeOwned>(path: &Path, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let reason = e.into_inner().to_string();
        // A missing field is reported at its parent; name the field itself.
        let missing = reason
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(|f| if at == "." { f.to_string() } else { format!("{at}.{f}") });
        let field = match missing {
            Some(f) => f,
            None if at == "." => "<top level>".to_string(),
            None => at,
        };
        invalid(path, &field, reason)
    })
}

fn invalid(path: &Path, field: &str, reason: String) -> Error {
    Error::InvalidConfig {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn positive(path: &Path, field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(invalid(path, field, "must be positive, found 0".into()));
    }
    Ok(())
}

fn positive_float(path: &Path, field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(
            path,
            field,
            format!("must be a finite positive number, found {v}"),
        ));
    }
    Ok(())
}

/// `a % b == 0` (`a` a width, `b` a head count), reported on field `b`: the head count is what
/// disagrees with the width.
fn divides(path: &Path, a_field: &str, a: usize, b_field: &str, b: usize) -> Result<()> {
    if b == 0 || !a.is_multiple_of(b) {
        return Err(invalid(
            path,
            b_field,
            format!("{a_field} ({a}) is not divisible by {b_field} ({b})"),
        ));
    }
    Ok(())
}

fn id_in_vocab(path: &Path, field: &str, id: Option<u32>, vocab_size: usize) -> Result<()> {
    match id {
        Some(id) if id as usize >= vocab_size => Err(invalid(
            path,
            field,
            format!("token id {id} is outside the vocabulary (size {vocab_size})"),
        )),
        _ => Ok(()),
    }
}

/// A file named by a config must sit beside it: no directories, no `..`.
fn plain_file_name(path: &Path, field: &str, name: &str) -> Result<()> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(()),
        _ => Err(invalid(path, field, format!("{name:?} is not a plain file name"))),
    }
}

fn yes() -> bool {
    true
}

/// A token id field that is an int, a list of ints, or null (empty).
fn ids_one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    Ok(opt_ids_one_or_many(d)?.unwrap_or_default())
}

fn opt_ids_one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<u32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(id)) => Some(vec![id]),
        Some(OneOrMany::Many(ids)) => Some(ids),
    })
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
