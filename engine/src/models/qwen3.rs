//! Qwen3 (`Qwen3ForCausalLM`): the Llama block without biases, with a per-head RMSNorm of q and k before RoPE
//! (`self_attn.q_norm`, `self_attn.k_norm`, `[head_dim]` gains) and an explicit `head_dim` (128 in every size,
//! so `num_attention_heads * head_dim` need not be `hidden_size`). Sliding windows as Qwen2's (off in every
//! published model). A configuration of the shared rotary decoder.

use super::rotary::{self, Norms, Spec};
use super::{Loaded, Source};
use crate::Result;
use loaders::config::{LlamaConfig, RawConfig};

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    rotary::load(src, spec)
}

fn spec(raw: &RawConfig) -> Result<(Spec, LlamaConfig)> {
    let file = raw.path();
    let c = LlamaConfig::from_raw(raw)?;
    rotary::no_attention_bias(file, &c)?;
    let layers = super::qwen2::qwen_layers(raw, &c)?;
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
    use super::*;
    use crate::Error;

    fn config(extra: &str) -> Result<(Spec, LlamaConfig)> {
        let extra = format!(r#","num_hidden_layers":2,"num_key_value_heads":2,"head_dim":32{extra}"#);
        rotary::read_test_config("qwen3", &extra, spec)
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
