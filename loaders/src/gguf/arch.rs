//! The GGUF architectures the importer reads, each mapped onto the Hugging Face config and tensor names of the
//! transformers class qkv runs it as:
//!
//! | `general.architecture` | Hugging Face | what differs from `llama` in the file |
//! | --- | --- | --- |
//! | `llama` | `LlamaForCausalLM`, or `MistralForCausalLM` with `llama.attention.sliding_window` | q/k rows permuted (below) |
//! | `qwen2` | `Qwen2ForCausalLM` | q/k/v biases (`attn_q.bias` ...) |
//! | `qwen3` | `Qwen3ForCausalLM` | per-head `attn_q_norm` / `attn_k_norm` |
//! | `phi3` | `Phi3ForCausalLM` | fused `attn_qkv` (rows q, k, v) and `ffn_up` (rows gate, up); LongRoPE factors as `rope_factors_long/short` tensors |
//! | `gemma2` | `Gemma2ForCausalLM` | norms stored as `1 + w`; `post_attention_norm`, `post_ffw_norm`; soft-capping keys; sliding window |
//! | `gemma3` | `Gemma3ForCausalLM` | as gemma2 without attention soft-capping, with q/k norms and a local RoPE base |
//!
//! llama.cpp's conventions, from its converter (`convert_hf_to_gguf.py`) and loader, that the mapping undoes:
//! - Only `llama` permutes q/k: its RoPE rotates adjacent pairs where transformers' Llama rotates halves, so the
//!   converter reorders the rows of each head (GGUF row `2i + s` holds HF row `s * head_dim/2 + i`). qwen2, qwen3,
//!   phi3 and gemma use llama.cpp's NEOX RoPE, which rotates halves as transformers does: their rows are as in HF.
//! - Gemma's RMSNorm multiplies by `1 + w`; the converter stores `1 + w` (every `*norm.weight`, q/k norms too), so
//!   the import subtracts 1. In f32 that is exact (Sterbenz: `1 + w` is within a factor 2 of 1) and gives back
//!   the `w'` whose `1 + w'` is the stored value, so a model adding 1 again sees the file's gains bit for bit.
//! - Which Gemma layers slide: `{arch}.attention.sliding_window_pattern`, per layer (bools) or a period `n`
//!   (layer `l` slides when `l % n < n - 1`); absent, llama.cpp's defaults 2 (gemma2) and 6 (gemma3). Gemma 3
//!   without `sliding_window` has no local layers.
//! - Gemma's query scale: llama.cpp's `1/sqrt(head_dim)`, except its 27B models (46 blocks for gemma2, 62 for
//!   gemma3): `1/sqrt(hidden / heads)`; written as `query_pre_attn_scalar`.
//! - Defaults of absent keys are llama.cpp's: gemma2 soft-caps 50 (attention) and 30 (final), window 4096; gemma3's
//!   local RoPE base 1e4.

use serde_json::{json, Map, Value};

use super::import::LlamaParams;
use super::reader::GgufFile;
use crate::error::{Error, Result};

/// A GGUF architecture the importer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
    Gemma3,
}

/// Every architecture, in the order errors list them.
pub const ARCHS: [Arch; 6] = [
    Arch::Llama,
    Arch::Qwen2,
    Arch::Qwen3,
    Arch::Phi3,
    Arch::Gemma2,
    Arch::Gemma3,
];

impl Arch {
    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// The architecture `general.architecture` names, or an error naming it and what is supported.
    pub fn of(gguf: &GgufFile) -> Result<Arch> {
        let name = gguf.get_str("general.architecture")?;
        ARCHS.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            let known: Vec<&str> = ARCHS.iter().map(|a| a.name()).collect();
            import_err(
                gguf,
                format!(
                    "architecture {name:?} is not supported (supported: {})",
                    known.join(", ")
                ),
            )
        })
    }

    fn gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }
}

fn import_err(gguf: &GgufFile, reason: String) -> Error {
    Error::GgufImport {
        path: gguf.path().to_path_buf(),
        reason,
    }
}

fn meta_err(gguf: &GgufFile, key: &str, expected: impl Into<String>, found: impl ToString) -> Error {
    Error::GgufMetadata {
        path: gguf.path().to_path_buf(),
        key: key.to_string(),
        expected: expected.into(),
        found: found.to_string(),
    }
}

/// What the import does to a tensor's values on the way to its Hugging Face tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Copy,
    /// Undo llama.cpp's q/k row permutation, with this many heads.
    Unpermute(usize),
    /// Gemma's norms: stored `1 + w`, written `w`.
    MinusOne,
}

/// One GGUF tensor and the Hugging Face tensor it becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub gguf: String,
    pub hf: String,
    /// The Hugging Face shape (`[out, in]` for a matrix; the GGUF shape reversed).
    pub shape: Vec<usize>,
    pub transform: Transform,
}

/// Every tensor `arch` has in a file with these sizes, mapped to its Hugging Face name (`output.weight` only when
/// the file has it: else the head is tied). Tensors that become config values (Phi-3's LongRoPE factors) are not
/// in it: [`config_tensors`] lists them.
pub fn tensors(gguf: &GgufFile, arch: Arch, p: &LlamaParams) -> Vec<Mapping> {
    let (d, ff, hd) = (p.hidden_size, p.intermediate_size, p.head_dim);
    let (q_dim, kv_dim) = (p.n_heads * hd, p.n_kv_heads * hd);
    let norm = if arch.gemma() {
        Transform::MinusOne
    } else {
        Transform::Copy
    };
    let (q_t, k_t) = match arch {
        Arch::Llama => (Transform::Unpermute(p.n_heads), Transform::Unpermute(p.n_kv_heads)),
        _ => (Transform::Copy, Transform::Copy),
    };
    let m = |g: String, h: String, shape: Vec<usize>, transform| Mapping {
        gguf: g,
        hf: h,
        shape,
        transform,
    };
    let mut out = vec![m(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![p.vocab_size, d],
        Transform::Copy,
    )];
    for l in 0..p.n_layers {
        let t = |g: &str, h: &str, shape: Vec<usize>, tr| {
            m(format!("blk.{l}.{g}"), format!("model.layers.{l}.{h}"), shape, tr)
        };
        out.push(t("attn_norm.weight", "input_layernorm.weight", vec![d], norm));
        if arch == Arch::Phi3 {
            out.push(t(
                "attn_qkv.weight",
                "self_attn.qkv_proj.weight",
                vec![q_dim + 2 * kv_dim, d],
                Transform::Copy,
            ));
        } else {
            out.extend([
                t("attn_q.weight", "self_attn.q_proj.weight", vec![q_dim, d], q_t),
                t("attn_k.weight", "self_attn.k_proj.weight", vec![kv_dim, d], k_t),
                t(
                    "attn_v.weight",
                    "self_attn.v_proj.weight",
                    vec![kv_dim, d],
                    Transform::Copy,
                ),
            ]);
        }
        if arch == Arch::Qwen2 {
            out.extend([
                t("attn_q.bias", "self_attn.q_proj.bias", vec![q_dim], Transform::Copy),
                t("attn_k.bias", "self_attn.k_proj.bias", vec![kv_dim], Transform::Copy),
                t("attn_v.bias", "self_attn.v_proj.bias", vec![kv_dim], Transform::Copy),
            ]);
        }
        if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
            out.extend([
                t("attn_q_norm.weight", "self_attn.q_norm.weight", vec![hd], norm),
                t("attn_k_norm.weight", "self_attn.k_norm.weight", vec![hd], norm),
            ]);
        }
        out.push(t(
            "attn_output.weight",
            "self_attn.o_proj.weight",
            vec![d, q_dim],
            Transform::Copy,
        ));
        if arch.gemma() {
            out.extend([
                t(
                    "post_attention_norm.weight",
                    "post_attention_layernorm.weight",
                    vec![d],
                    norm,
                ),
                t("ffn_norm.weight", "pre_feedforward_layernorm.weight", vec![d], norm),
                t(
                    "post_ffw_norm.weight",
                    "post_feedforward_layernorm.weight",
                    vec![d],
                    norm,
                ),
            ]);
        } else {
            out.push(t("ffn_norm.weight", "post_attention_layernorm.weight", vec![d], norm));
        }
        if arch == Arch::Phi3 {
            out.push(t(
                "ffn_up.weight",
                "mlp.gate_up_proj.weight",
                vec![2 * ff, d],
                Transform::Copy,
            ));
        } else {
            out.extend([
                t("ffn_gate.weight", "mlp.gate_proj.weight", vec![ff, d], Transform::Copy),
                t("ffn_up.weight", "mlp.up_proj.weight", vec![ff, d], Transform::Copy),
            ]);
        }
        out.push(t(
            "ffn_down.weight",
            "mlp.down_proj.weight",
            vec![d, ff],
            Transform::Copy,
        ));
    }
    out.push(m(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![d],
        norm,
    ));
    if gguf.tensor_info("output.weight").is_some() {
        out.push(m(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![p.vocab_size, d],
            Transform::Copy,
        ));
    }
    out
}

/// The tensors `arch` reads into its config rather than its weights.
pub fn config_tensors(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Phi3 => &["rope_factors_long.weight", "rope_factors_short.weight"],
        _ => &[],
    }
}

/// Reads the optional keys of one file's architecture.
struct Keys<'a> {
    gguf: &'a GgufFile,
    arch: Arch,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch.name())
    }
    fn has(&self, k: &str) -> bool {
        self.gguf.metadata().contains_key(&self.key(k))
    }
    /// A finite positive float, if the key is present.
    fn positive_f64(&self, k: &str) -> Result<Option<f64>> {
        if !self.has(k) {
            return Ok(None);
        }
        let v = self.gguf.get_f64(&self.key(k))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(meta_err(self.gguf, &self.key(k), "a finite positive float", v));
        }
        Ok(Some(v))
    }
    fn usize(&self, k: &str) -> Result<Option<usize>> {
        if !self.has(k) {
            return Ok(None);
        }
        self.gguf.get_usize(&self.key(k)).map(Some)
    }
    /// A sliding window: absent or 0 (llama.cpp's "none") is `None`.
    fn window(&self) -> Result<Option<usize>> {
        Ok(self.usize("attention.sliding_window")?.filter(|&w| w > 0))
    }
}

/// Which layers slide (see the module doc): per-layer bools, or a period, else `default_period`.
fn sliding_layers(keys: &Keys<'_>, n_layers: usize, default_period: usize) -> Result<Vec<bool>> {
    let k = "attention.sliding_window_pattern";
    let key = keys.key(k);
    match keys.gguf.metadata().get(&key) {
        Some(super::reader::GgufValue::Array(super::reader::GgufArray::Bool(v))) => {
            if v.len() != n_layers {
                return Err(meta_err(
                    keys.gguf,
                    &key,
                    format!("one bool per block ({n_layers})"),
                    format!("{} bools", v.len()),
                ));
            }
            Ok(v.clone())
        }
        Some(_) => {
            let n = keys.gguf.get_usize(&key)?;
            if n == 0 {
                return Err(meta_err(keys.gguf, &key, "a positive period or one bool per block", 0));
            }
            Ok((0..n_layers).map(|l| l % n < n - 1).collect())
        }
        None => Ok((0..n_layers).map(|l| l % default_period < default_period - 1).collect()),
    }
}

fn layer_types(sliding: &[bool]) -> Value {
    let names: Vec<&str> = sliding
        .iter()
        .map(|&s| if s { "sliding_attention" } else { "full_attention" })
        .collect();
    json!(names)
}

/// The RoPE scaling: none, `linear` (any architecture), or Phi-3's `longrope` from its factor tensors (`factors`:
/// the dequantised `rope_factors_long` and `rope_factors_short`). Returns `rope_scaling` and, for LongRoPE, the
/// top-level `original_max_position_embeddings`.
fn rope_scaling(
    keys: &Keys<'_>,
    p: &LlamaParams,
    factors: Option<(Vec<f32>, Vec<f32>)>,
) -> Result<(Value, Option<usize>)> {
    let gguf = keys.gguf;
    let kind = if keys.has("rope.scaling.type") {
        gguf.get_str(&keys.key("rope.scaling.type"))?.to_string()
    } else if factors.is_some() {
        "longrope".to_string()
    } else {
        "none".to_string()
    };
    match (kind.as_str(), factors) {
        ("none", None) => Ok((Value::Null, None)),
        ("linear", None) => {
            let factor = keys.positive_f64("rope.scaling.factor")?.ok_or_else(|| {
                meta_err(
                    gguf,
                    &keys.key("rope.scaling.factor"),
                    "a factor for linear RoPE scaling",
                    "none",
                )
            })?;
            Ok((json!({"rope_type": "linear", "factor": factor}), None))
        }
        ("longrope", Some((long, short))) => {
            let original = keys.usize("rope.scaling.original_context_length")?.unwrap_or(4096);
            if original == 0 || original > p.max_position_embeddings {
                return Err(meta_err(
                    gguf,
                    &keys.key("rope.scaling.original_context_length"),
                    format!("a length in 1..={} (the context length)", p.max_position_embeddings),
                    original,
                ));
            }
            // transformers derives the attention factor from the two lengths; a file with another one is a
            // model transformers' config cannot say.
            let scale = p.max_position_embeddings as f64 / original as f64;
            let expected = if scale > 1.0 {
                (1.0 + scale.ln() / (original as f64).ln()).sqrt()
            } else {
                1.0
            };
            if let Some(found) = keys.positive_f64("rope.scaling.attn_factor")? {
                // written as f32 by the converter
                if (found - expected).abs() > 1e-6 * expected {
                    return Err(meta_err(
                        gguf,
                        &keys.key("rope.scaling.attn_factor"),
                        format!("{expected} (sqrt(1 + ln(context / original context) / ln(original context)))"),
                        found,
                    ));
                }
            }
            let scaling = json!({"type": "longrope", "long_factor": long, "short_factor": short});
            Ok((scaling, Some(original)))
        }
        ("longrope", None) => Err(import_err(
            gguf,
            "LongRoPE scaling without rope_factors_long.weight / rope_factors_short.weight".into(),
        )),
        (other, _) => Err(import_err(
            gguf,
            format!("RoPE scaling {other:?} is not supported here (supported: none, linear; longrope for phi3)"),
        )),
    }
}

/// The Hugging Face `config.json` of `arch` (without the special token ids and dtype, which the caller adds).
/// `factors`: Phi-3's LongRoPE factor tensors, dequantised, when the file has them.
pub fn config(
    gguf: &GgufFile,
    arch: Arch,
    p: &LlamaParams,
    factors: Option<(Vec<f32>, Vec<f32>)>,
) -> Result<Map<String, Value>> {
    let keys = Keys { gguf, arch };
    let (rope_scaling, original) = rope_scaling(&keys, p, factors)?;
    let base = json!({
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.n_layers,
        "num_attention_heads": p.n_heads,
        "num_key_value_heads": p.n_kv_heads,
        "head_dim": p.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": p.max_position_embeddings,
        "vocab_size": p.vocab_size,
        "tie_word_embeddings": p.tie_word_embeddings,
        "attention_bias": arch == Arch::Qwen2,
        "mlp_bias": false,
    });
    let mut c = base.as_object().cloned().unwrap_or_default();
    let mut set = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    let (class, model_type) = match arch {
        Arch::Llama => match keys.window()? {
            // Mistral v0.1 as llama.cpp's converter writes it has no window key (llama.cpp runs it without
            // one); a file that has it is a Mistral.
            Some(w) => {
                set("sliding_window", json!(w));
                ("MistralForCausalLM", "mistral")
            }
            None => ("LlamaForCausalLM", "llama"),
        },
        Arch::Qwen2 => {
            set("use_sliding_window", json!(false));
            ("Qwen2ForCausalLM", "qwen2")
        }
        Arch::Qwen3 => {
            set("use_sliding_window", json!(false));
            ("Qwen3ForCausalLM", "qwen3")
        }
        Arch::Phi3 => {
            set("sliding_window", json!(keys.window()?));
            if let Some(o) = original {
                set("original_max_position_embeddings", json!(o));
            }
            ("Phi3ForCausalLM", "phi3")
        }
        Arch::Gemma2 | Arch::Gemma3 => {
            let two = arch == Arch::Gemma2;
            set("hidden_activation", json!("gelu_pytorch_tanh"));
            set("hidden_act", json!("gelu_pytorch_tanh"));
            let big = p.n_layers == if two { 46 } else { 62 };
            let scalar = if big { p.hidden_size / p.n_heads } else { p.head_dim };
            set("query_pre_attn_scalar", json!(scalar));
            let final_cap = keys.positive_f64("final_logit_softcapping")?;
            let attn_cap = keys.positive_f64("attn_logit_softcapping")?;
            let window = if two {
                Some(keys.window()?.unwrap_or(4096))
            } else {
                keys.window()?
            };
            let sliding = match window {
                Some(_) => sliding_layers(&keys, p.n_layers, if two { 2 } else { 6 })?,
                None => vec![false; p.n_layers],
            };
            set("sliding_window", json!(window));
            set("layer_types", layer_types(&sliding));
            if two {
                set("attn_logit_softcapping", json!(attn_cap.unwrap_or(50.0)));
                set("final_logit_softcapping", json!(final_cap.unwrap_or(30.0)));
                ("Gemma2ForCausalLM", "gemma2")
            } else {
                if let Some(cap) = attn_cap {
                    return Err(meta_err(
                        gguf,
                        &keys.key("attn_logit_softcapping"),
                        "no attention soft-capping (Gemma 3 has none)",
                        cap,
                    ));
                }
                set("attn_logit_softcapping", Value::Null);
                set("final_logit_softcapping", json!(final_cap));
                set(
                    "rope_local_base_freq",
                    json!(keys.positive_f64("rope.freq_base_swa")?.unwrap_or(1e4)),
                );
                ("Gemma3ForCausalLM", "gemma3_text")
            }
        }
    };
    set("architectures", json!([class]));
    set("model_type", json!(model_type));
    Ok(c)
}
