//! Gemma 2 (`Gemma2ForCausalLM`) and Gemma 3 text (`Gemma3ForCausalLM`, model_type `gemma3_text`): embeddings
//! scaled by `sqrt(hidden_size)`, RMSNorm gains stored as `w` and applied as `(1 + w)`, GeGLU (tanh GELU gate),
//! sandwich norms (after attention and after the feed-forward as well as before them), queries scaled by
//! `query_pre_attn_scalar^-0.5`, local sliding-window layers alternating with global ones (Gemma 2: every other
//! layer; Gemma 3: five local to one global), tied head. Gemma 2 soft-caps attention scores (50) and the final
//! logits (30); Gemma 3 instead normalizes q and k per head and gives local and global layers their own RoPE
//! (bases 1e4 and 1e6, the global one optionally linearly scaled). A configuration of the shared rotary decoder.

use loaders::config::{LlamaConfig, RawConfig};
use serde::Deserialize;
use serde_json::Value;

use super::rope::{Rope, Scaling};
use super::rotary::{self, NormStyle, Norms, Spec};
use super::{Loaded, Source};
use crate::{Error, Result};

/// The Gemma config keys the Llama reading does not cover (transformers defaults in the loaders below).
#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default = "query_pre_attn_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "sliding_window")]
    sliding_window: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default = "sliding_window_pattern")]
    sliding_window_pattern: usize,
}

fn yes() -> bool {
    true
}
fn query_pre_attn_scalar() -> f64 {
    256.0
}
fn sliding_window() -> Option<usize> {
    Some(4096)
}
fn sliding_window_pattern() -> usize {
    6
}

/// Which Gemma.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Two,
    Three,
}

/// The registry's loader for `gemma2`.
pub(crate) fn load_gemma2(src: &Source<'_>) -> Result<Loaded> {
    rotary::load(src, |raw| spec(raw, Version::Two))
}

/// The registry's loader for `gemma3_text`.
pub(crate) fn load_gemma3(src: &Source<'_>) -> Result<Loaded> {
    rotary::load(src, |raw| spec(raw, Version::Three))
}

/// A soft-capping value: the config's (`null`: none), or `default` when the key is absent.
fn softcap(file: &std::path::Path, json: &Value, key: &str, default: Option<f32>) -> Result<Option<f32>> {
    match json.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
            _ => Err(Error::InvalidConfig {
                file: file.to_path_buf(),
                field: key.to_string(),
                reason: format!("{v} is not a positive number"),
            }),
        },
    }
}

/// Gemma 3's two RoPEs: global (`rope_theta`, default 1e6, with `rope_scaling`) and local (`rope_local_base_freq`,
/// default 1e4, unscaled), or transformers 5's `rope_parameters: {full_attention: {...}, sliding_attention: {...}}`.
fn gemma3_ropes(file: &std::path::Path, json: &Value, c: &LlamaConfig) -> Result<Vec<Rope>> {
    let cx = super::rope::ScalingContext {
        file,
        max_position_embeddings: c.max_position_embeddings,
        original_max_position_embeddings: None,
    };
    let theta_of = |v: Option<&Value>, default: f64| v.and_then(Value::as_f64).unwrap_or(default);
    let nested = json
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some());
    let (global_theta, local_theta, scaling) = match nested {
        Some(p) => {
            let (full, local) = (&p["full_attention"], p.get("sliding_attention"));
            let scaling: Option<loaders::config::RopeScaling> =
                serde_json::from_value(full.clone()).map_err(|e| Error::InvalidConfig {
                    file: file.to_path_buf(),
                    field: "rope_parameters.full_attention".into(),
                    reason: e.to_string(),
                })?;
            (
                theta_of(full.get("rope_theta"), 1e6),
                theta_of(local.and_then(|l| l.get("rope_theta")), 1e4),
                scaling,
            )
        }
        None => (
            theta_of(json.get("rope_theta"), 1e6),
            theta_of(json.get("rope_local_base_freq"), 1e4),
            c.rope_scaling.clone(),
        ),
    };
    for (field, t) in [("rope_theta", global_theta), ("rope_local_base_freq", local_theta)] {
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::InvalidConfig {
                file: file.to_path_buf(),
                field: field.into(),
                reason: format!("{t} is not a positive number"),
            });
        }
    }
    let rope = |theta, scaling| Rope {
        head_dim: c.head_dim,
        theta,
        scaling,
    };
    Ok(vec![
        rope(global_theta, Scaling::from_config(scaling.as_ref(), c.head_dim, &cx)?),
        rope(local_theta, Scaling::None),
    ])
}

fn spec(raw: &RawConfig, version: Version) -> Result<(Spec, LlamaConfig)> {
    let file = raw.path();
    let c = LlamaConfig::from_raw(raw)?;
    rotary::no_attention_bias(file, &c)?;
    let x: Extra = raw.parse()?;
    let json: Value = raw.parse()?;
    if !(x.query_pre_attn_scalar.is_finite() && x.query_pre_attn_scalar > 0.0) {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            field: "query_pre_attn_scalar".into(),
            reason: format!("{} is not a positive number", x.query_pre_attn_scalar),
        });
    }
    if x.sliding_window_pattern == 0 {
        return Err(Error::InvalidConfig {
            file: file.to_path_buf(),
            field: "sliding_window_pattern".into(),
            reason: "0: the pattern is a number of layers".into(),
        });
    }
    let act_name = x
        .hidden_activation
        .or(x.hidden_act)
        .unwrap_or_else(|| "gelu_pytorch_tanh".into());
    let (pattern, local_rope, ropes, caps) = match version {
        // transformers: layer i slides when (i + 1) % pattern != 0
        Version::Two => (2, 0, vec![rotary::rope(file, &c, None)?], (Some(50.0), Some(30.0))),
        Version::Three => (
            x.sliding_window_pattern,
            1,
            gemma3_ropes(file, &json, &c)?,
            (None, None),
        ),
    };
    let layers = rotary::layer_kinds(
        file,
        x.layer_types.as_deref(),
        c.num_hidden_layers,
        |l| (l + 1) % pattern != 0,
        x.sliding_window,
        local_rope,
    )?;
    let base = Spec::llama_like(file, &c, layers, ropes[0].clone())?;
    let spec = Spec {
        act: super::activation(file, "hidden_activation", &act_name)?,
        norms: Norms {
            style: NormStyle::Sandwich,
            gain_offset: 1.0,
            qk_norm: version == Version::Three,
        },
        // transformers rounds sqrt(hidden_size) to the activations' dtype (f32 here)
        embed_scale: (c.hidden_size as f64).sqrt() as f32,
        attn_scale: x.query_pre_attn_scalar.powf(-0.5) as f32,
        attn_softcap: softcap(file, &json, "attn_logit_softcapping", caps.0)?,
        final_softcap: softcap(file, &json, "final_logit_softcapping", caps.1)?,
        ropes,
        tie_word_embeddings: x.tie_word_embeddings,
        ..base
    };
    Ok((spec, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model_type: &str, extra: &str) -> Result<(Spec, LlamaConfig)> {
        let extra =
            format!(r#","num_hidden_layers":6,"num_key_value_heads":1,"head_dim":32,"sliding_window":16{extra}"#);
        let read: rotary::ReadSpec = match model_type {
            "gemma2" => |raw| spec(raw, Version::Two),
            _ => |raw| spec(raw, Version::Three),
        };
        rotary::read_test_config(model_type, &extra, read)
    }

    #[test]
    fn gemma2_defaults() {
        let (s, _) = config("gemma2", "").unwrap();
        assert_eq!((s.attn_softcap, s.final_softcap), (Some(50.0), Some(30.0)));
        assert_eq!(s.attn_scale, 1.0 / 16.0);
        assert_eq!(s.embed_scale, 8.0);
        assert!(s.tie_word_embeddings && !s.norms.qk_norm && s.norms.gain_offset == 1.0);
        let w: Vec<_> = s.layers.iter().map(|l| l.window).collect();
        assert_eq!(w, [Some(16), None, Some(16), None, Some(16), None]);
        let (s, _) = config("gemma2", r#","attn_logit_softcapping":null"#).unwrap();
        assert_eq!(s.attn_softcap, None);
    }

    #[test]
    fn gemma3_local_and_global_layers() {
        let (s, _) = config("gemma3_text", r#","rope_scaling":{"rope_type":"linear","factor":8.0}"#).unwrap();
        assert!(s.norms.qk_norm && s.attn_softcap.is_none());
        let kinds: Vec<_> = s.layers.iter().map(|l| (l.window, l.rope)).collect();
        assert_eq!(kinds[4..], [(Some(16), 1), (None, 0)]);
        assert_eq!((s.ropes[0].theta, s.ropes[1].theta), (1e6, 1e4));
        assert_eq!(s.ropes[0].scaling, Scaling::Linear { factor: 8.0 });
        assert_eq!(s.ropes[1].scaling, Scaling::None);
        // transformers 5's nested form.
        let nested = r#","rope_parameters":{"full_attention":{"rope_type":"default","rope_theta":5e5},
            "sliding_attention":{"rope_type":"default","rope_theta":2e4}}"#;
        let (s, _) = config("gemma3_text", nested).unwrap();
        assert_eq!((s.ropes[0].theta, s.ropes[1].theta), (5e5, 2e4));
    }

    #[test]
    fn refuses_inconsistent_shapes() {
        let e = config("gemma2", r#","sliding_window":null"#).unwrap_err();
        assert!(e.to_string().contains("sliding_window"), "{e}");
        let e = config("gemma3_text", r#","layer_types":["full_attention"]"#).unwrap_err();
        assert!(e.to_string().contains("layer_types"), "{e}");
        let e = config("gemma2", r#","query_pre_attn_scalar":0"#).unwrap_err();
        assert!(e.to_string().contains("query_pre_attn_scalar"), "{e}");
        let e = config("gemma2", r#","final_logit_softcapping":-3"#).unwrap_err();
        assert!(e.to_string().contains("final_logit_softcapping"), "{e}");
        let e = config("gemma3_text", r#","hidden_activation":"gelu_quick""#).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("gelu_quick")),
            "{e}"
        );
        let e = config("gemma3_text", r#","num_attention_heads":3"#).unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
    }
}
