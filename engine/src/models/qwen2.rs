//! Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): the Llama block with a bias on q, k and v (none on o), RoPE base 1e6,
//! tied head in the small models, and optional sliding windows on the layers from `max_window_layers` on (off
//! in every published model: `use_sliding_window: false`). A configuration of the shared rotary decoder.

use loaders::config::{LlamaConfig, RawConfig};
use serde::Deserialize;

use super::rotary::{self, LayerKind, Qkv, Spec};
use super::{Loaded, Source};
use crate::Result;

/// The sliding-window keys of `Qwen2Config` and `Qwen3Config` (transformers defaults): windows only with
/// `use_sliding_window`, on the layers from `max_window_layers` on, unless `layer_types` says otherwise.
#[derive(Deserialize)]
struct QwenWindows {
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

/// The layers of a Qwen2 or Qwen3 config (see [`QwenWindows`]).
pub(super) fn qwen_layers(raw: &RawConfig, c: &LlamaConfig) -> Result<Vec<LayerKind>> {
    let x: QwenWindows = raw.parse()?;
    let window = x.sliding_window.filter(|_| x.use_sliding_window);
    rotary::layer_kinds(
        raw.path(),
        x.layer_types.as_deref(),
        c.num_hidden_layers,
        |l| window.is_some() && l >= x.max_window_layers,
        window,
        0,
    )
}

/// The registry's loader.
pub(crate) fn load(src: &Source<'_>) -> Result<Loaded> {
    rotary::load(src, spec)
}

/// The decoder `config.json` describes (checked: shapes by the Llama reading, windows and RoPE here).
fn spec(raw: &RawConfig) -> Result<(Spec, LlamaConfig)> {
    let file = raw.path();
    let c = LlamaConfig::from_raw(raw)?;
    let layers = qwen_layers(raw, &c)?;
    let spec = Spec {
        qkv: Qkv::Separate { bias: true },
        ..Spec::llama_like(file, &c, layers, rotary::rope(file, &c, None)?)?
    };
    Ok((spec, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn config(extra: &str) -> Result<(Spec, LlamaConfig)> {
        let extra = format!(r#","num_hidden_layers":4,"num_key_value_heads":2,"rope_theta":1e6{extra}"#);
        rotary::read_test_config("qwen2", &extra, spec)
    }

    #[test]
    fn windows_from_max_window_layers() {
        let (s, _) = config("").unwrap();
        assert!(s.layers.iter().all(|l| l.window.is_none()));
        assert_eq!(s.qkv, Qkv::Separate { bias: true });
        let (s, _) = config(r#","use_sliding_window":true,"sliding_window":16,"max_window_layers":2"#).unwrap();
        let w: Vec<_> = s.layers.iter().map(|l| l.window).collect();
        assert_eq!(w, [None, None, Some(16), Some(16)]);
    }

    #[test]
    fn refuses_inconsistent_shapes() {
        let e = config(r#","num_key_value_heads":3"#).unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
        let e = config(r#","layer_types":["full_attention"]"#).unwrap_err();
        assert!(
            e.to_string().contains("layer_types") && e.to_string().contains("4"),
            "{e}"
        );
        let e = config(r#","layer_types":["full_attention","chunked_attention","full_attention","full_attention"]"#)
            .unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("chunked_attention")),
            "{e}"
        );
        let e = config(r#","rope_scaling":{"type":"yarn","factor":4.0}"#).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("yarn")),
            "{e}"
        );
        let e = config(r#","hidden_act":"mish""#).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what } if what.contains("mish")),
            "{e}"
        );
    }
}
