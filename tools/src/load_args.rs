//! The model-loading options every command takes (`--weights`, `--activations`), flattened into each one's
//! arguments.

use qkv::{Activations, LoadOptions, WeightType};

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LoadArgs {
    /// Weights of the linear layers: as stored in the files, or int8 (quantized at load, per output row:
    /// about 4x fewer bytes than f32 to read per token; outputs may differ where scores are close), or GGUF's
    /// q8_0 / q4_0 / q4_k blocks (quantized at load as llama.cpp does; integer block products on Q8 / Q8_K
    /// activations).
    #[arg(long, default_value_t = WeightType::Stored, value_name = "stored|int8|q8_0|q4_0|q4_k")]
    pub weights: WeightType,
    /// What the linear layers multiply by: f32 activations, or activations reduced to the weights' class (bf16
    /// for bf16 weights on CPUs with AVX512_BF16, int8 per row for int8 weights), as PyTorch and llama.cpp do:
    /// batches, beams and prompts up to 2-3x faster, outputs may differ where scores are close.
    #[arg(long, default_value_t = Activations::F32, value_name = "f32|reduced")]
    pub activations: Activations,
}

impl LoadArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            weights: self.weights,
            activations: self.activations,
            ..Default::default()
        }
    }
}
