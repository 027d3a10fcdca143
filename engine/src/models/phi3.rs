//! Phi-3 / Phi-3.5 (`Phi3ForCausalLM`): the Llama block with q, k and v fused in one `qkv_proj` (rows q, then k,
//! then v) and gate and up in one `gate_up_proj` (rows gate, then up), bound as zero-copy views of those
//! matrices; `longrope` RoPE scaling in the 128k models (`models/rope.rs`), with `original_max_position_embeddings`
//! beside `rope_scaling`; a sliding window on every layer when the config sets one (2047 in Phi-3-mini-4k). A
//! configuration of the shared rotary decoder.

use loaders::config::{LlamaConfig, RawConfig};
use serde::Deserialize;

use super::rotary::{self, Mlp, Qkv, Spec};
use super::{Loaded, Source};
use crate::{Error, Result};

/// The `Phi3Config` keys the Llama reading does not cover (transformers defaults).
#[derive(Deserialize)]
struct Extra {
    #[serde(default = "original_max_position_embeddings")]
    original_max_position_embeddings: usize,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
}

#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
}

fn original_max_position_embeddings() -> usize {
    4096
}

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    rotary::load(src, spec)
}

fn spec(raw: &RawConfig) -> Result<(Spec, LlamaConfig)> {
    let file = raw.path();
    let c = LlamaConfig::from_raw(raw)?;
    rotary::no_attention_bias(file, &c)?;
    let x: Extra = raw.parse()?;
    let partial = x
        .rope_parameters
        .and_then(|r| r.partial_rotary_factor)
        .or(x.partial_rotary_factor)
        .unwrap_or(1.0);
    if partial != 1.0 {
        return Err(Error::Unsupported {
            what: format!(
                "{}: partial_rotary_factor {partial} (qkv rotates whole heads)",
                file.display()
            ),
        });
    }
    let window = x.sliding_window;
    let layers = rotary::layer_kinds(file, None, c.num_hidden_layers, |_| window.is_some(), window, 0)?;
    let rope = rotary::rope(file, &c, Some(x.original_max_position_embeddings))?;
    let spec = Spec {
        qkv: Qkv::Fused,
        mlp: Mlp::Fused,
        ..Spec::llama_like(file, &c, layers, rope)?
    };
    Ok((spec, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::rope::Scaling;

    fn config(extra: &str) -> Result<(Spec, LlamaConfig)> {
        let extra = format!(r#","num_hidden_layers":2,"max_position_embeddings":131072{extra}"#);
        rotary::read_test_config("phi3", &extra, spec)
    }

    const LONGROPE: &str = r#","rope_scaling":{"type":"longrope","short_factor":[1,1,1,1,1,1,1,1],
        "long_factor":[1,2,3,4,5,6,7,8]}"#;

    #[test]
    fn longrope_reads_the_top_level_original_context() {
        let (s, _) = config(LONGROPE).unwrap();
        assert_eq!((s.qkv, s.mlp), (Qkv::Fused, Mlp::Fused));
        match &s.ropes[0].scaling {
            Scaling::LongRope { original_context, .. } => assert_eq!(*original_context, 4096),
            other => panic!("{other:?}"),
        }
        let (s, _) = config(&format!("{LONGROPE},\"original_max_position_embeddings\":2048")).unwrap();
        assert!(matches!(
            &s.ropes[0].scaling,
            Scaling::LongRope {
                original_context: 2048,
                ..
            }
        ));
    }

    #[test]
    fn refuses_inconsistent_shapes() {
        // 16-wide heads: 8 factors expected.
        let bad = r#","rope_scaling":{"type":"longrope","short_factor":[1,1],"long_factor":[1,1]}"#;
        let e = config(bad).unwrap_err();
        assert!(e.to_string().contains("short_factor"), "{e}");
        let e = config(r#","partial_rotary_factor":0.5"#).unwrap_err();
        assert!(e.to_string().contains("partial_rotary_factor"), "{e}");
        let e = config(r#","num_key_value_heads":3"#).unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
    }
}
