//! Numeric kernels for qkv.
//!
//! Every kernel is reached through [`Kernels`], a small `Copy` handle that holds the
//! instruction set chosen at run time ([`Isa`]). `Kernels::detect()` picks the best ISA the
//! CPU has (overridable with `QKV_ISA`); `Kernels::new(isa)` forces one, which is how tests
//! and benches exercise every path. Each kernel has a plain scalar twin in [`reference`]
//! with the same contract: the references are the specification.
//!
//! Layout: `simd/` holds the [`simd::Simd`] trait and one file per ISA (the only place with
//! intrinsics, plus `linear/bf16dot.rs` for `vdpbf16ps` and `linear/i8dot.rs` for `vpdpwssd`); `linear/` the GEMV
//! and GEMM (`linear/blocks.rs`: GGUF's Q8_0/Q4_0/Q4_1 blocks, [`BlockType`]; `linear/kblocks.rs`: its K-quants
//! Q4_K/Q5_K/Q6_K on Q8_K activations); `quant.rs` int8 weight
//! quantization; `rows/` the row and elementwise kernels. Each algorithm is written once, generic over `Simd`, and reached
//! through `simd::dispatch!`, which also counts calls per ISA ([`isa::exercised`]).
//!
//! Tests: `cargo test -p kernels` runs every kernel on every ISA of the host against [`reference`].
//! Miri (scalar paths, small shapes; AVX and big tests are `cfg_attr(miri, ignore)`):
//! `QKV_ISA=scalar MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p kernels --test simd --test kernels`.
//!
//! Kernels work on slices. Shapes are checked with `assert!` (a shape mismatch is a bug in
//! the caller, never a property of user input: the engine validates models before it runs them).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod attention;
pub mod cache;
pub use attention::AttnScratch;
pub mod isa;
mod linear;
mod quant;
pub mod reference;
mod rows;
pub mod simd;
pub mod testing;
mod types;

pub use half::{bf16, f16};
pub use isa::{Feature, Isa, IsaError};
pub use linear::{
    f16_bits_to_f32, ActBlocks, BlockError, BlockLayout, BlockType, I8Range, PackError, PackedWeight, Part,
    QuantizedBlocks, QuantizedRows, SharedOut, GEMV_MAX_ROWS, I8_DOT_MAX_IN, MAX_BLOCK_BYTES, MAX_PARTS, QK, QK_K,
};
pub use quant::{quantize_i8, QuantizedI8, I8_MAX};
use rayon::prelude::*;
pub use types::*;

/// The kernel dispatcher: every kernel, on one instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
    bf16_gemv: Bf16Gemv,
    i8_gemv: I8Gemv,
    i8_dot: I8Dot,
    i8_acts: I8Activations,
    blocking: Option<GemmBlocking>,
}

/// Cache blocking of the GEMMs: inputs per block (`kc`), rows per block (`mc`), panels per block (`ncp`). Normally
/// derived from the detected cache sizes ([`cache::CacheSizes`]); fix it to test block boundaries or to tune
/// (`QKV_GEMM_BLOCKING=kc,mc,ncp` does the same for a whole process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmBlocking {
    pub kc: usize,
    pub mc: usize,
    pub ncp: usize,
}

/// Which integer dot products the int8 x int8 kernels ([`Kernels::linear_q`]) use. Both give the same integers
/// (exact sums); `Base` exists so every path can be tested on a CPU that has the extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum I8Dot {
    /// The ISA's extension where this CPU has it: `vpdpbusd` (AVX512_VNNI), `sdot` (NEON dot product).
    #[default]
    Best,
    /// The ISA's base instructions: `vpmaddubsw` + `vpmaddwd` (AVX-512BW, AVX2), `smull` + `sadalp` (NEON).
    Base,
}

/// How the GEMV treats int8 weights on CPUs with AVX-512 VNNI (elsewhere it is always [`I8Gemv::Widen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum I8Gemv {
    /// Widen the weights to f32 in registers (sign-extend, convert, FMA); `x` stays f32 (matches the reference
    /// to f32 rounding).
    #[default]
    Widen,
    /// `vpdpwssd` (AVX-512 VNNI only): each `x` row rounded to i16 with its own scale (`max|x_row| / 32767`),
    /// exact integer sums: an extra error of at most `scale_x / 2 · Σ|q|` per output, next to int8's own
    /// `scale_w / 2 · Σ|x|`. About 3x fewer instructions per weight.
    DotI16,
}

/// What the packed products on int8 weights ([`Kernels::linear_packed`], [`Kernels::linear_packed_part`]) multiply
/// the weights by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum I8Activations {
    /// The f32 activations (the weights widened in registers, times their row scales).
    #[default]
    F32,
    /// The activations quantized to int8 per row at each call ([`Kernels::quantize_rows`] in [`I8Range::Full`],
    /// into a buffer of the calling thread), then [`Kernels::linear_q`]: exact integer sums (`vpdpbusd`,
    /// `vpmaddubsw`, `sdot`), so the same outputs on every ISA, at several times the f32 GEMM's throughput on
    /// batches and prompts.
    /// Each output moves by at most `sx/2 · sw · Σ|qw|` against `F32` (see [`Kernels::linear_q`]). Matrices with
    /// more than [`I8_DOT_MAX_IN`] inputs stay on `F32`.
    Int8,
}

/// How the GEMV treats bf16 weights on CPUs with AVX512_BF16 (elsewhere it is always [`Bf16Gemv::Widen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Bf16Gemv {
    /// Widen the weights to f32 in registers; `x` stays f32 (matches the reference to f32 rounding).
    #[default]
    Widen,
    /// `vdpbf16ps` (AVX-512 BF16 only): `x` rounded to bf16 first, relative error up to 2^-8 per term (8 significant bits). Also the
    /// packed GEMM/GEMV on bf16 weights ([`Kernels::linear_packed`]): one instruction per 32 multiply-adds.
    DotBf16,
}

impl Kernels {
    /// Use `isa`; an error if this CPU lacks it.
    pub fn new(isa: Isa) -> Result<Self, IsaError> {
        isa.check_supported()?;
        Ok(Self {
            isa,
            bf16_gemv: Bf16Gemv::Widen,
            i8_gemv: I8Gemv::Widen,
            i8_dot: I8Dot::Best,
            i8_acts: I8Activations::F32,
            blocking: None,
        })
    }

    /// The best ISA of this CPU, or the one `QKV_ISA` names (an error if the CPU lacks it
    /// or the value is unknown).
    pub fn detect() -> Result<Self, IsaError> {
        Ok(Self {
            isa: Isa::from_env()?,
            bf16_gemv: Bf16Gemv::Widen,
            i8_gemv: I8Gemv::Widen,
            i8_dot: I8Dot::Best,
            i8_acts: I8Activations::F32,
            blocking: None,
        })
    }

    /// The plain scalar path, available everywhere.
    pub fn scalar() -> Self {
        Self {
            isa: Isa::Scalar,
            bf16_gemv: Bf16Gemv::Widen,
            i8_gemv: I8Gemv::Widen,
            i8_dot: I8Dot::Best,
            i8_acts: I8Activations::F32,
            blocking: None,
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Choose how bf16-weight GEMVs run (see [`Bf16Gemv`]); `DotBf16` takes effect only with
    /// [`Isa::Avx512`] on a CPU with AVX512_BF16.
    pub fn with_bf16_gemv(self, mode: Bf16Gemv) -> Self {
        Self {
            bf16_gemv: mode,
            ..self
        }
    }

    pub fn bf16_gemv(&self) -> Bf16Gemv {
        self.bf16_gemv
    }

    /// Choose how int8-weight GEMVs run (see [`I8Gemv`]); `DotI16` takes effect only with [`Isa::Avx512`] on a
    /// CPU with AVX512_VNNI.
    pub fn with_i8_gemv(self, mode: I8Gemv) -> Self {
        Self { i8_gemv: mode, ..self }
    }

    pub fn i8_gemv(&self) -> I8Gemv {
        self.i8_gemv
    }

    /// Choose the int8 x int8 dot products (see [`I8Dot`]).
    pub fn with_i8_dot(self, mode: I8Dot) -> Self {
        Self { i8_dot: mode, ..self }
    }

    pub fn i8_dot(&self) -> I8Dot {
        self.i8_dot
    }

    /// Choose what the packed int8 products multiply by (see [`I8Activations`]).
    pub fn with_i8_activations(self, mode: I8Activations) -> Self {
        Self { i8_acts: mode, ..self }
    }

    pub fn i8_activations(&self) -> I8Activations {
        self.i8_acts
    }

    /// Fix the GEMMs' cache blocking (see [`GemmBlocking`]).
    pub fn with_gemm_blocking(self, blocking: GemmBlocking) -> Self {
        Self {
            blocking: Some(blocking),
            ..self
        }
    }

    pub fn gemm_blocking(&self) -> Option<GemmBlocking> {
        self.blocking
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + bias`, for any weight dtype and layout.
    /// Up to [`GEMV_MAX_ROWS`] rows run the GEMV (memory bound; weights read once per 4 rows, in their
    /// stored dtype: int8 times its row scales), more rows the packed GEMM (compute bound; f16/bf16/int8 widened
    /// while packing). Both split the work over rayon's pool when it is big enough. See [`Bf16Gemv`] and
    /// [`I8Gemv`] for bf16 and int8 on AVX-512. Int8 weights must be [`Layout::OutIn`] (see [`quantize_i8`]).
    pub fn linear(&self, x: &[f32], rows: usize, w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
        linear::linear(*self, x, rows, w, bias, y)
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + bias` on a matrix packed at load ([`PackedWeight`], packed for this ISA).
    /// Up to 8 rows stream each panel once (the GEMV, memory bound); more rows run the cache-blocked GEMM. The work
    /// is split statically over rayon's threads. Int8 weights take f32 activations here (widened in registers,
    /// times the row scales) unless the kernels carry [`I8Activations::Int8`]; [`Kernels::linear_q`] takes int8
    /// activations quantized by the caller.
    pub fn linear_packed(&self, x: &[f32], rows: usize, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
        linear::linear_packed(*self, x, rows, w, bias, y)
    }

    /// Quantize the rows of `x` (`[rows, in_dim]`) to int8 in `range` with one scale per row, into `out` (reused:
    /// no allocation once it has held as many values). The input of [`Kernels::linear_q`]; one call serves every
    /// matrix that reads the same `x`. [`I8Range::fastest_for`] picks the range for these kernels.
    pub fn quantize_rows(&self, x: &[f32], in_dim: usize, range: I8Range, out: &mut QuantizedRows) {
        linear::quantize_rows(*self, x, in_dim, range, out)
    }

    /// `y[rows, out] = x · Wᵀ + bias` with int8 activations (`x` from [`Kernels::quantize_rows`]) and an int8
    /// [`PackedWeight`]: exact i32 sums, `y = Σ qx·qw · (sx · sw) + bias` (bit-identical on every ISA). Against
    /// f32 activations the extra error is at most `sx/2 · sw · Σ|qw|` per output (`sx`, `sw` the row scales).
    /// Panics when the weight is not int8 or has more than [`I8_DOT_MAX_IN`] inputs.
    pub fn linear_q(&self, x: &QuantizedRows, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
        linear::linear_q(*self, x, w, bias, y)
    }

    /// Part `part` of [`Kernels::linear_packed`] split statically into `part.count` parts, for a thread team that
    /// runs one part per thread (inside or outside rayon): every part of a call must run once, each on the same
    /// arguments and its own `part.index`, all writing into one [`SharedOut`] of `y`. The split (rows and panels)
    /// depends only on the shapes and `part.count`, so the team sees the same blocks at every step; parts past the
    /// split's own count (a small matrix is not split) do nothing. Results are identical to `linear_packed`'s.
    pub fn linear_packed_part(
        &self,
        x: &[f32],
        rows: usize,
        w: &PackedWeight,
        bias: Option<&[f32]>,
        y: &SharedOut<'_>,
        part: Part,
    ) {
        linear::linear_packed_part(*self, x, rows, w, bias, y, part)
    }

    /// Part `part` of [`Kernels::linear_q`] (see [`Kernels::linear_packed_part`]).
    pub fn linear_q_part(
        &self,
        x: &QuantizedRows,
        w: &PackedWeight,
        bias: Option<&[f32]>,
        y: &SharedOut<'_>,
        part: Part,
    ) {
        linear::linear_q_part(*self, x, w, bias, y, part)
    }

    /// Quantize the rows of `x` (`[rows, in_dim]`, `in_dim` a multiple of [`QK`]) to Q8 blocks of 32 with one f32
    /// scale each, into `out` (reused: no allocation once it has held as many values). The input of
    /// [`Kernels::linear_blocks`]; the same bits on every ISA.
    pub fn quantize_blocks(&self, x: &[f32], in_dim: usize, out: &mut QuantizedBlocks) {
        linear::quantize_blocks(*self, x, in_dim, ActBlocks::Q8, out)
    }

    /// [`Kernels::quantize_blocks`] as the products with `ty` weights want them: Q8 blocks of 32 for Q8_0, Q4_0,
    /// Q4_1; ggml's Q8_K for the K-quants (see [`QuantizedBlocks`]; in_dim whole blocks of
    /// [`BlockType::block_size`]).
    pub fn quantize_blocks_for(&self, ty: BlockType, x: &[f32], in_dim: usize, out: &mut QuantizedBlocks) {
        linear::quantize_blocks(*self, x, in_dim, ty.activations(), out)
    }

    /// `y[rows, out] = x · Wᵀ + bias` for Q8 blocks of activations (from [`Kernels::quantize_blocks`]) and a
    /// matrix of GGUF blocks ([`PackedWeight::from_blocks`], [`PackedWeight::quantize_blocks`]): per block an exact
    /// integer dot product, scaled by `d_w · d_x` in f32 (Q4_1: plus `m_w · d_x · Σ q_x`). [`Kernels::linear_packed`]
    /// on a block matrix quantizes `x` itself and runs this. Panics when the weight is not a block matrix.
    pub fn linear_blocks(&self, x: &QuantizedBlocks, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
        linear::linear_blocks(*self, x, w, bias, y)
    }

    /// Part `part` of [`Kernels::linear_blocks`] (see [`Kernels::linear_packed_part`]).
    pub fn linear_blocks_part(
        &self,
        x: &QuantizedBlocks,
        w: &PackedWeight,
        bias: Option<&[f32]>,
        y: &SharedOut<'_>,
        part: Part,
    ) {
        linear::linear_blocks_part(*self, x, w, bias, y, part)
    }

    /// Fused scaled-dot-product attention (see [`AttnArgs`] for layouts and masks).
    pub fn attention(&self, a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        attention::attention(*self, &mut AttnScratch::default(), a, q, k, v, out)
    }

    /// [`Kernels::attention`] with the caller's buffers (the plan, partial sums, packed K/V): once they have served
    /// a call as large, a call allocates nothing. Results are identical.
    pub fn attention_in(
        &self,
        scratch: &mut AttnScratch,
        a: &AttnArgs<'_>,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) {
        attention::attention(*self, scratch, a, q, k, v, out)
    }

    /// LayerNorm over rows of `gamma.len()`: `out = (x - mean) / sqrt(var + eps) * gamma + beta`.
    pub fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let n = gamma.len();
        assert!(
            n > 0 && x.len().is_multiple_of(n) && beta.len() == n && out.len() == x.len(),
            "layer_norm: bad shapes"
        );
        let k = *self;
        par_rows(
            x,
            out,
            n,
            |x, out| simd::dispatch!(k, rows::layer_norm, (x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32])),
        )
    }

    /// RMSNorm over rows of `weight.len()`: `out = x / sqrt(mean(x²) + eps) * weight`.
    pub fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let n = weight.len();
        assert!(
            n > 0 && x.len().is_multiple_of(n) && out.len() == x.len(),
            "rms_norm: bad shapes"
        );
        let k = *self;
        par_rows(
            x,
            out,
            n,
            |x, out| simd::dispatch!(k, rows::rms_norm, (x: &[f32], weight: &[f32], eps: f32, out: &mut [f32])),
        )
    }

    /// Softmax of one row, in place.
    pub fn softmax(&self, x: &mut [f32]) {
        simd::dispatch!(self, rows::softmax, (x: &mut [f32]))
    }

    /// Log-softmax of one row, in place (log-probabilities of logits; see [`reference::log_softmax`]).
    pub fn log_softmax(&self, x: &mut [f32]) {
        simd::dispatch!(self, rows::log_softmax, (x: &mut [f32]))
    }

    /// Apply an activation in place.
    pub fn activation(&self, act: Activation, x: &mut [f32]) {
        let k = *self;
        par_elems(
            x,
            |x| simd::dispatch!(k, rows::activation, (act: Activation, x: &mut [f32])),
        )
    }

    /// `out = silu(gate) * up`.
    pub fn swiglu(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        assert!(gate.len() == up.len() && out.len() == gate.len(), "swiglu: bad shapes");
        simd::dispatch!(self, rows::swiglu, (gate: &[f32], up: &[f32], out: &mut [f32]))
    }

    /// `acc += x` (residual add).
    pub fn add(&self, acc: &mut [f32], x: &[f32]) {
        assert_eq!(acc.len(), x.len(), "add: lengths differ");
        simd::dispatch!(self, rows::add, (acc: &mut [f32], x: &[f32]))
    }

    /// Rotary position embedding in place on `x[len, n_heads, head_dim]`; row `t` has position `pos0 + t`.
    pub fn rope(&self, table: &RopeTable, layout: RopeLayout, x: &mut [f32], n_heads: usize, pos0: usize) {
        let d = table.head_dim;
        let row = n_heads * d;
        assert!(
            row > 0 && x.len().is_multiple_of(row),
            "rope: x is not [len, n_heads, head_dim]"
        );
        let len = x.len() / row;
        assert!(pos0 + len <= table.max_pos, "rope: position beyond the table");
        assert!(
            d.is_multiple_of(2) && table.cos.len() >= table.max_pos * (d / 2) && table.sin.len() == table.cos.len(),
            "rope: bad table"
        );
        match layout {
            RopeLayout::Half => simd::dispatch!(self, rows::rope_half,
                (table: &RopeTable, x: &mut [f32], n_heads: usize, pos0: usize)),
            // Adjacent pairs need a lane shuffle the SIMD trait does not have; this kernel is tiny next to
            // the projections, so it stays scalar.
            RopeLayout::Interleaved => reference::rope(table, layout, x, n_heads, pos0),
        }
    }

    /// Gather embedding rows (`table` is `[vocab, dim]`, OutIn) for `ids`, times `scale`, into `out[ids.len(), dim]`.
    pub fn embed(&self, table: &Weight<'_>, ids: &[u32], scale: f32, out: &mut [f32]) {
        let dim = table.in_dim;
        assert_eq!(table.layout, Layout::OutIn, "embed: table must be [vocab, dim]");
        assert_eq!(
            table.data.len(),
            table.out_dim * dim,
            "embed: table data is not [vocab, dim]"
        );
        assert_eq!(out.len(), ids.len() * dim, "embed: out is not [ids, dim]");
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.out_dim) {
            panic!("embed: id {id} out of range");
        }
        if dim == 0 {
            return;
        }
        linear::each_dtype!(table.data, data, row_scales, T => {
            let table: &[T] = data;
            simd::dispatch!(self, rows::embed, (table: &[T], row_scales: Option<&[f32]>, dim: usize, ids: &[u32],
                scale: f32, out: &mut [f32]))
        })
    }

    /// Index of the largest value (the first one on ties; NaN never wins). `None` for an empty row.
    pub fn argmax(&self, x: &[f32]) -> Option<usize> {
        simd::dispatch!(self, rows::argmax, (x: &[f32]) -> Option<usize>)
    }

    /// The `k` largest values as `(index, value)`, largest first (lower index first on ties).
    pub fn top_k(&self, x: &[f32], k: usize) -> Vec<(u32, f32)> {
        rows::top_k(x, k)
    }

    /// `log_softmax` of every row of `x` (rows of `n_cols`), in place: `x - max - ln Σ exp(x - max)`, as torch. A
    /// row whose largest value is `-inf` is left as it is. Rows run in parallel when there are enough values.
    pub fn log_softmax_rows(&self, x: &mut [f32], n_cols: usize) {
        assert!(
            n_cols > 0 && x.len().is_multiple_of(n_cols),
            "log_softmax_rows: {} values are not rows of {n_cols}",
            x.len()
        );
        let k = *self;
        let run = |row: &mut [f32]| simd::dispatch!(k, rows::log_softmax, (row: &mut [f32]));
        if x.len() < PAR_MIN_ELEMS || x.len() == n_cols {
            x.chunks_exact_mut(n_cols).for_each(run);
        } else {
            let rows_per_task = PAR_MIN_ELEMS.div_ceil(4 * n_cols).max(1);
            x.par_chunks_mut(n_cols).with_min_len(rows_per_task).for_each(run);
        }
    }

    /// The `k` best of `scores[r, t] + offsets[r]` over every row `r` and column `t` (`scores` is `[rows, n_cols]`:
    /// beams x vocabulary, `offsets` the beams' running scores, or none), as `(r · n_cols + t, value)` into `out`,
    /// best first; ties go to the lower flat index (as `torch.topk` over the flattened scores); NaN never
    /// appears. The sum `scores + offset` is the f32 addition a caller would do first. Rows and column chunks are
    /// split over rayon's threads when there are enough values (each part keeps its own `k` best, merged here).
    pub fn top_k_rows(
        &self,
        scores: &[f32],
        n_cols: usize,
        offsets: Option<&[f32]>,
        k: usize,
        out: &mut Vec<(u32, f32)>,
    ) {
        out.clear();
        if scores.is_empty() || k == 0 {
            return;
        }
        assert!(
            n_cols > 0 && scores.len().is_multiple_of(n_cols),
            "top_k_rows: {} values are not rows of {n_cols}",
            scores.len()
        );
        assert!(
            u32::try_from(scores.len()).is_ok(),
            "top_k_rows: {} values do not fit u32 indices",
            scores.len()
        );
        let rows = scores.len() / n_cols;
        if let Some(o) = offsets {
            assert_eq!(o.len(), rows, "top_k_rows: offsets are not [rows]");
        }
        let kk = *self;
        let offset = |r: usize| offsets.map_or(0.0, |o| o[r]);
        let threads = rayon::current_num_threads();
        if scores.len() < PAR_MIN_ELEMS || threads == 1 {
            for (r, x) in scores.chunks_exact(n_cols).enumerate() {
                let (first, off) = ((r * n_cols) as u32, offset(r));
                simd::dispatch!(kk, rows::beam::top_k_into, (x: &[f32], first: u32, off: f32, k: usize,
                    out: &mut Vec<(u32, f32)>));
            }
        } else {
            // Pieces of about equal size, each within one row: 2 per thread.
            let per_row = (2 * threads).div_ceil(rows).max(1);
            let chunk = n_cols.div_ceil(per_row);
            let pieces: Vec<(usize, usize)> = (0..rows)
                .flat_map(|r| (0..n_cols).step_by(chunk).map(move |c| (r, c)))
                .collect();
            let parts: Vec<Vec<(u32, f32)>> = pieces
                .par_iter()
                .map(|&(r, c0)| {
                    let x = &scores[r * n_cols + c0..r * n_cols + (c0 + chunk).min(n_cols)];
                    let (first, off) = ((r * n_cols + c0) as u32, offset(r));
                    let mut best = Vec::with_capacity(k.min(x.len()));
                    let best_ref = &mut best;
                    simd::dispatch!(kk, rows::beam::top_k_into, (x: &[f32], first: u32, off: f32, k: usize,
                        best_ref: &mut Vec<(u32, f32)>));
                    best
                })
                .collect();
            for c in parts.into_iter().flatten() {
                rows::beam::offer(out, k, c);
            }
        }
        rows::beam::sort_best_first(out);
    }
}

/// Below this many elements, row kernels run on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 16;

/// Run `f` on row-aligned shares of `(x, out)` (rows of `n`), in parallel when there is enough work.
fn par_rows(x: &[f32], out: &mut [f32], n: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    let n_rows = x.len() / n;
    if x.len() < PAR_MIN_ELEMS || n_rows < 2 {
        return f(x, out);
    }
    let rows_per_task = n_rows
        .div_ceil(4 * rayon::current_num_threads())
        .max(PAR_MIN_ELEMS.div_ceil(4 * n));
    x.par_chunks(rows_per_task * n)
        .zip(out.par_chunks_mut(rows_per_task * n))
        .for_each(|(x, out)| f(x, out));
}

/// Run `f` on shares of `x` in place, in parallel when there is enough work.
fn par_elems(x: &mut [f32], f: impl Fn(&mut [f32]) + Sync) {
    if x.len() < PAR_MIN_ELEMS {
        return f(x);
    }
    let chunk = x
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(PAR_MIN_ELEMS / 4)
        .next_multiple_of(64);
    x.par_chunks_mut(chunk).for_each(&f);
}
