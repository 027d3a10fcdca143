//! Qwen3 (`Qwen3ForCausalLM`): the Llama block without biases, with a per-head RMSNorm of q and k before RoPE
//! (`self_attn.q_norm`, `self_attn.k_norm`, `[head_dim]` gains) and an explicit `head_dim` (128 in every size,
//! so `num_attention_heads * head_dim` need not be `hidden_size`). Sliding windows as Qwen2's (off in every
//! published model). A configuration of the shared rotary decoder.

use loaders::config::{LlamaConfig, RawConfig};
use serde::Deserialize;

use super::rotary::{self, Norms, Spec};
use super::{Loaded, Source};
use crate::Result;

/// The `Qwen3Config` keys the Llama reading does not cover (transformers defaults).
#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default = "max_window_layers")]
    max_window_layers: usize,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

fn max_window_layers() -> usize {
    28
}

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    let (spec, c) = spec(src.config)?;
    rotary::load(src, spec, c.bos_token_id, c.eos_token_id)
}

fn spec(raw: &RawConfig) -> Result<(Spec, LlamaConfig)> {
    let file = raw.path();
    let c = LlamaConfig::from_raw(raw)?;
    rotary::no_attention_bias(file, &c)?;
    let x: Extra = raw.parse()?;
    let window = x.sliding_window.filter(|_| x.use_sliding_window);
    let layers = rotary::layer_kinds(
        file,
        x.layer_types.as_deref(),
        c.num_hidden_layers,
        |l| window.is_some() && l >= x.max_window_layers,
        window,
        0,
    )?;
    let base = Spec::llama_like(file, &c, layers, rotary::rope(file, &c, None)?)?;
    let spec = Spec {
        norms: Norms {
            qk_norm: true,
            ..base.norms
        },
        ..base
    };
    Ok((spec, c))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Error;

    fn config(extra: &str) -> Result<(Spec, LlamaConfig)> {
        let json = format!(
            r#"{{"model_type":"qwen3","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
                "num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"vocab_size":100,
                "bos_token_id":1,"eos_token_id":2{extra}}}"#
        );
        spec(&RawConfig::from_json(Path::new("qwen3/config.json"), &json).unwrap())
    }

    #[test]
    fn qk_norm_and_explicit_head_dim() {
        let (s, _) = config("").unwrap();
        assert!(s.norms.qk_norm);
        // 4 heads of 32: q is 128 wide on a 64-wide residual stream.
        assert_eq!((s.shape.heads.head_dim, s.shape.hidden_size), (32, 64));
    }

    #[test]
    fn refuses_inconsistent_shapes() {
        let e = config(r#","head_dim":33"#).unwrap_err();
        assert!(e.to_string().contains("head_dim"), "{e}");
        let e = config(r#","num_key_value_heads":0"#).unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
        let e = config(r#","attention_bias":true"#).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("attention_bias")),
            "{e}"
        );
    }
}
