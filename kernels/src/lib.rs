//! Numeric kernels for qkv.
//!
//! Every kernel is reached through [`Kernels`], a small `Copy` handle that holds the
//! instruction set chosen at run time ([`Isa`]). `Kernels::detect()` picks the best ISA the
//! CPU has (overridable with `QKV_ISA`); `Kernels::new(isa)` forces one, which is how tests
//! and benches exercise every path. Each kernel has a plain scalar twin in [`reference`]
//! with the same contract: the references are the specification.
//!
//! Kernels work on slices. Shapes are checked with `assert!` (a shape mismatch is a bug in
//! the caller, never a property of user input: the engine validates models before it runs them).

mod attention;
pub mod isa;
pub mod reference;
mod types;

pub use half::{bf16, f16};
pub use isa::{Isa, IsaError};
pub use types::*;

/// The kernel dispatcher: every kernel, on one instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
}

impl Kernels {
    /// Use `isa`; an error if this CPU lacks it.
    pub fn new(isa: Isa) -> Result<Self, IsaError> {
        isa.check_supported()?;
        Ok(Self { isa })
    }

    /// The best ISA of this CPU, or the one `QKV_ISA` names (an error if the CPU lacks it
    /// or the value is unknown).
    pub fn detect() -> Result<Self, IsaError> {
        Ok(Self { isa: Isa::from_env()? })
    }

    /// The plain scalar path, available everywhere.
    pub fn scalar() -> Self {
        Self { isa: Isa::Scalar }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + bias`, for any weight dtype and layout.
    /// One row is a GEMV (memory bound), several rows a GEMM (compute bound).
    pub fn linear(&self, x: &[f32], rows: usize, w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
        reference::linear(x, rows, w, bias, y)
    }

    /// Fused scaled-dot-product attention (see [`AttnArgs`] for layouts and masks).
    pub fn attention(&self, a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        attention::attention(self.isa, a, q, k, v, out)
    }

    /// LayerNorm over rows of `gamma.len()`: `out = (x - mean) / sqrt(var + eps) * gamma + beta`.
    pub fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        reference::layer_norm(x, gamma, beta, eps, out)
    }

    /// RMSNorm over rows of `weight.len()`: `out = x / sqrt(mean(x²) + eps) * weight`.
    pub fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        reference::rms_norm(x, weight, eps, out)
    }

    /// Softmax of one row, in place.
    pub fn softmax(&self, x: &mut [f32]) {
        reference::softmax(x)
    }

    /// Apply an activation in place.
    pub fn activation(&self, act: Activation, x: &mut [f32]) {
        reference::activation(act, x)
    }

    /// `out = silu(gate) * up`.
    pub fn swiglu(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        reference::swiglu(gate, up, out)
    }

    /// `acc += x` (residual add).
    pub fn add(&self, acc: &mut [f32], x: &[f32]) {
        reference::add(acc, x)
    }

    /// Rotary position embedding in place on `x[len, n_heads, head_dim]`; row `t` has position `pos0 + t`.
    pub fn rope(&self, table: &RopeTable, layout: RopeLayout, x: &mut [f32], n_heads: usize, pos0: usize) {
        reference::rope(table, layout, x, n_heads, pos0)
    }

    /// Gather embedding rows (`table` is `[vocab, dim]`, OutIn) for `ids`, times `scale`, into `out[ids.len(), dim]`.
    pub fn embed(&self, table: &Weight<'_>, ids: &[u32], scale: f32, out: &mut [f32]) {
        reference::embed(table, ids, scale, out)
    }

    /// Index of the largest value (the first one on ties; NaN never wins). `None` for an empty row.
    pub fn argmax(&self, x: &[f32]) -> Option<usize> {
        reference::argmax(x)
    }

    /// The `k` largest values as `(index, value)`, largest first (lower index first on ties).
    pub fn top_k(&self, x: &[f32], k: usize) -> Vec<(u32, f32)> {
        reference::top_k(x, k)
    }
}
