//! Mistral (`MistralForCausalLM`): the Llama block with a sliding window on every layer (`sliding_window`:
//! 4096 in Mistral 7B v0.1, `null` from v0.2 on): each query sees the `sliding_window` newest keys, enforced by
//! the attention mask (`kernels::Mask::SlidingWindow`) over the cache. A configuration of the shared rotary
//! decoder.

use loaders::config::{LlamaConfig, RawConfig};
use serde::Deserialize;

use super::rotary::{self, Spec};
use super::{Loaded, Source};
use crate::Result;

/// The `MistralConfig` key the Llama reading does not cover (transformers default 4096).
#[derive(Deserialize)]
struct Extra {
    #[serde(default = "sliding_window")]
    sliding_window: Option<usize>,
}

fn sliding_window() -> Option<usize> {
    Some(4096)
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
    let window = x.sliding_window;
    let layers = rotary::layer_kinds(file, None, c.num_hidden_layers, |_| window.is_some(), window, 0)?;
    Ok((Spec::llama_like(file, &c, layers, rotary::rope(file, &c, None)?)?, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<(Spec, LlamaConfig)> {
        rotary::read_test_config("mistral", &format!(r#","num_hidden_layers":2{extra}"#), spec)
    }

    #[test]
    fn every_layer_slides() {
        let (s, _) = config("").unwrap();
        assert!(s.layers.iter().all(|l| l.window == Some(4096)));
        let (s, _) = config(r#","sliding_window":null"#).unwrap();
        assert!(s.layers.iter().all(|l| l.window.is_none()));
    }

    #[test]
    fn refuses_inconsistent_shapes() {
        let e = config(r#","sliding_window":0"#).unwrap_err();
        assert!(e.to_string().contains("sliding_window"), "{e}");
        let e = config(r#","hidden_size":66"#).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
    }
}
