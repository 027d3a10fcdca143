//! Weights bound by name, checked once at load, and the small layers every architecture is built from:
//! [`Linear`] (projections, feed-forward, LM head), [`Norm`] (layer or RMS norm), [`Embedding`] (token and learned
//! position tables) and [`LmHead`] (final norm + LM head, on the positions that need logits).
//!
//! The matrix of a [`Linear`] is packed once at load ([`Linear::convert`]) into the panel layout of the model's
//! kernels ([`kernels::PackedWeight`]) in its stored dtype (`F32`, `F16` or `BF16`), or quantized to int8 first
//! with [`WeightType::Int8`]; every GEMV and GEMM reads those panels, nothing repacks them. Matrices a family
//! stores apart but multiplies by the same input (q/k/v, gate/up) are packed as one ([`Linear::stack`]). Embedding
//! tables stay zero-copy over the memory map, except a table tied to a packed LM head, whose rows are read from the
//! head's panels ([`Embedding::tie_to`]); only the small vectors (biases, norm gains) are widened to f32. Every
//! check of the files (presence, shape, dtype) happens in `bind`; `forward` only asserts what a caller could get
//! wrong.
//!
//! **One copy of each weight.** A packed matrix owns its panels and drops the mapped tensor it was packed from (a
//! panel layout is never the stored one: panels interleave `NR` output rows), so once a model is loaded the memory
//! map is held only by the untied embedding tables that read it row by row (when every table is tied or none is
//! left, the files are unmapped).

use std::path::PathBuf;
use std::sync::Arc;

use kernels::{quantize_i8, Kernels, Layout, PackedWeight, Weight, WeightData};
use loaders::safetensors::SafeTensors;
use loaders::{Dtype, Tensor, TensorData};

use crate::cache::Scratch;
use crate::step::{LogitsFor, StepShape};
use crate::{Error, Result};

/// Where named tensors come from: a safetensors file or set of shards, or tensors built in memory.
///
/// `loaders::safetensors::SafeTensors` implements it, so `&SafeTensors` can be passed wherever a
/// `&dyn TensorSource` is asked for.
pub(crate) trait TensorSource: Send + Sync {
    /// The tensor called `name`, or an error naming the file and the tensor.
    fn get(&self, name: &str) -> loaders::Result<Tensor>;
    /// Whether a tensor called `name` exists.
    fn contains(&self, name: &str) -> bool;
    /// The tensor called `name`, checked to have `shape`.
    fn get_shaped(&self, name: &str, shape: &[usize]) -> loaders::Result<Tensor> {
        let t = self.get(name)?;
        if t.shape() != shape {
            return Err(loaders::Error::TensorShape {
                path: self.origin(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        Ok(t)
    }
    /// The file or directory the tensors come from, for error messages.
    fn origin(&self) -> PathBuf;
}

impl TensorSource for SafeTensors {
    fn get(&self, name: &str) -> loaders::Result<Tensor> {
        SafeTensors::get(self, name)
    }

    fn contains(&self, name: &str) -> bool {
        SafeTensors::contains(self, name)
    }

    fn get_shaped(&self, name: &str, shape: &[usize]) -> loaders::Result<Tensor> {
        SafeTensors::get_shaped(self, name, shape)
    }

    fn origin(&self) -> PathBuf {
        self.path().to_path_buf()
    }
}

/// The name of a weight tensor: `name` itself when it ends in `weight` (`a.b.weight`, `a/b/weight`),
/// else `name.weight`.
fn weight_name(name: &str) -> String {
    if name.ends_with("weight") {
        name.to_string()
    } else {
        format!("{name}.weight")
    }
}

/// The bias beside a weight: `...weight` -> `...bias`.
fn bias_name(weight_name: &str) -> String {
    match weight_name.strip_suffix("weight") {
        Some(stem) => format!("{stem}bias"),
        None => format!("{weight_name}.bias"),
    }
}

/// Check that a weight tensor is in a dtype the kernels read directly (GGUF blocks of a [`kernels::BlockType`]).
fn check_float(st: &dyn TensorSource, t: &Tensor) -> Result<()> {
    match t.dtype() {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        Dtype::Blocks(_) if block_type(t).is_some() => Ok(()),
        other => Err(loaders::Error::TensorDtype {
            path: st.origin(),
            name: t.name().to_string(),
            expected: "F32, F16, BF16 or GGUF blocks of Q8_0, Q4_0, Q4_1".to_string(),
            found: other.to_string(),
        }
        .into()),
    }
}

/// The kernels' block type of a tensor in GGUF blocks (`None` for other dtypes and block types no kernel runs).
fn block_type(t: &Tensor) -> Option<kernels::BlockType> {
    match t.dtype() {
        Dtype::Blocks(g) => kernels::BlockType::from_ggml_type(g.id()),
        _ => None,
    }
}

/// An error unless `t` holds an `[out_dim, in_dim]` matrix of blocks of `ty` (whole blocks per row, exact size).
fn check_blocks(
    st: &dyn TensorSource,
    t: &Tensor,
    ty: kernels::BlockType,
    out_dim: usize,
    in_dim: usize,
) -> Result<()> {
    ty.check(t.bytes().len(), out_dim, in_dim)
        .map_err(|e| Error::InvalidConfig {
            file: st.origin(),
            field: t.name().to_string(),
            reason: e.to_string(),
        })
}

/// A float tensor's data as kernel weight data (`None` for integer dtypes, which `check_float` refused).
fn weight_data(t: &Tensor) -> Option<WeightData<'_>> {
    match t.data() {
        TensorData::F32(s) => Some(WeightData::F32(s)),
        TensorData::F16(s) => Some(WeightData::F16(s)),
        TensorData::BF16(s) => Some(WeightData::Bf16(s)),
        TensorData::I8(_) | TensorData::U8(_) | TensorData::Blocks(..) => None,
    }
}

/// A small vector (bias, norm gain) of length `n`, widened to f32.
fn bind_vector(st: &dyn TensorSource, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = st.get_shaped(name, &[n])?;
    check_float(st, &t)?;
    let v = t.to_f32_vec();
    check_finite(st, name, v.iter().copied())?;
    Ok(v)
}

/// An error naming the first NaN or infinity of `values` (a corrupt or badly converted file). Checked at
/// load for the tensors that are cheap to scan (norm gains, biases, embedding tables); the big matrices
/// are not scanned (it would read every weight at load), so a NaN there shows up as NaN logits.
fn check_finite(st: &dyn TensorSource, name: &str, values: impl Iterator<Item = f32>) -> Result<()> {
    match values.enumerate().find(|(_, x)| !x.is_finite()) {
        None => Ok(()),
        Some((index, value)) => Err(Error::NonFinite {
            path: st.origin(),
            tensor: name.to_string(),
            index,
            value,
        }),
    }
}

/// Whether a linear layer has a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bias {
    /// No bias (a bias tensor in the file is ignored).
    None,
    /// The bias tensor must be present.
    Required,
    /// Use the bias tensor when the file has one.
    #[cfg_attr(not(test), allow(dead_code))]
    IfPresent,
}

/// How the matrices of the linear layers (projections, feed-forward, LM head) are held after loading.
/// Embedding tables used for lookup, norms and biases are not affected.
///
/// ```
/// use qkv::{LoadOptions, Model, WeightType};
///
/// let weights: WeightType = "int8".parse().map_err(qkv::Error::Request)?; // e.g. from a command line
/// let model = Model::load_with(qkv::loaders::paths::fixture("gpt2-tiny"), &LoadOptions { weights, ..Default::default() })?;
/// assert_eq!(model.weight_type(), WeightType::Int8);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// As stored in the files (f32, f16 or bf16), zero-copy over the memory map.
    #[default]
    Stored,
    /// Quantized at load to int8 with one scale per output row (`kernels::quantize_i8`), in owned memory:
    /// a quarter of f32's bytes (half of f16's), so batch-1 decoding reads 4x (2x) fewer weight bytes.
    /// Each weight is off by at most half its row's step (`max|w_row| / 254`).
    Int8,
    /// Quantized at load to GGUF's Q8_0 blocks as llama.cpp's quantizer does (32 weights, one f16 scale
    /// `max|w| / 127`: 8.5 bits per weight); the activations are quantized to Q8 blocks per step and each block's
    /// dot product is an integer one ([`kernels::BlockType`]). A matrix whose `in_dim` is not whole blocks of 32
    /// stays as stored.
    Q8_0,
    /// Quantized at load to GGUF's Q4_0 blocks (32 weights in `-8 ..= 7` times one f16 scale: 4.5 bits per
    /// weight), as [`WeightType::Q8_0`] otherwise. Logits move by several percent of their spread.
    Q4_0,
    /// Quantized at load to GGUF's Q4_K super-blocks as llama.cpp's `quantize_row_q4_K_ref` does (256 weights in
    /// 8 sub-blocks of 32 with 6-bit scales and mins: 4.5 bits per weight); activations as ggml's Q8_K. A matrix
    /// whose `in_dim` is not whole super-blocks of 256 (SmolLM2's 576) gets Q4_0 instead (llama.cpp falls back to
    /// Q5_0 there, which qkv does not quantize to).
    Q4K,
}

impl WeightType {
    pub const ALL: [WeightType; 5] = [
        WeightType::Stored,
        WeightType::Int8,
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4K,
    ];

    /// `stored`, `int8`, `q8_0`, `q4_0` or `q4_k`.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::Stored => "stored",
            WeightType::Int8 => "int8",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4K => "q4_k",
        }
    }

    /// The GGUF block type of a block-quantized weight type.
    pub(crate) fn block_type(self) -> Option<kernels::BlockType> {
        match self {
            WeightType::Q8_0 => Some(kernels::BlockType::Q8_0),
            WeightType::Q4_0 => Some(kernels::BlockType::Q4_0),
            WeightType::Q4K => Some(kernels::BlockType::Q4_K),
            WeightType::Stored | WeightType::Int8 => None,
        }
    }
}

impl std::fmt::Display for WeightType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightType {
    type Err = String;

    /// `stored`, `int8`, `q8_0`, `q4_0` or `q4_k` (any case), e.g. from a command line.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        WeightType::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not a weight type (stored, int8, q8_0, q4_0 or q4_k)"))
    }
}

/// What the linear layers multiply their matrices by.
///
/// ```
/// use qkv::{Activations, LoadOptions, Model, WeightType};
///
/// let dir = qkv::loaders::paths::fixture("gpt2-tiny");
/// let opts = LoadOptions { weights: WeightType::Int8, activations: Activations::Reduced, ..Default::default() };
/// let model = Model::load_with(&dir, &opts)?;
/// assert_eq!(model.kernels().i8_activations(), qkv::kernels::I8Activations::Int8);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activations {
    /// f32 (default): the weights are widened to f32 in registers, so every product is f32 arithmetic on the
    /// stored (or int8) weights.
    #[default]
    F32,
    /// Rounded to the weights' class where the CPU multiplies it natively, as PyTorch (bf16) and llama.cpp /
    /// CTranslate2 (int8) do: bf16 for bf16 matrices on CPUs with AVX512_BF16 (`vdpbf16ps`, [`kernels::Bf16Gemv`]),
    /// int8 per row for int8 matrices (exact integer sums, [`kernels::I8Activations`]); f32 for the others. Batches,
    /// beams and prompts run up to 2x (bf16) / 3x (int8) faster; batch-1 decoding, bound by memory, barely moves.
    /// Each row's arithmetic still depends on that row alone, so outputs do not depend on the batch.
    Reduced,
}

impl Activations {
    pub const ALL: [Activations; 2] = [Activations::F32, Activations::Reduced];

    /// `f32` or `reduced`.
    pub fn name(self) -> &'static str {
        match self {
            Activations::F32 => "f32",
            Activations::Reduced => "reduced",
        }
    }

    /// `k` set to multiply as these activations say (`F32` leaves `k` as given).
    pub fn apply(self, k: Kernels) -> Kernels {
        match self {
            Activations::F32 => k,
            Activations::Reduced => k
                .with_bf16_gemv(kernels::Bf16Gemv::DotBf16)
                .with_i8_activations(kernels::I8Activations::Int8),
        }
    }
}

impl std::fmt::Display for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activations {
    type Err = String;

    /// `f32` or `reduced` (any case), e.g. from a command line.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Activations::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not an activation precision (f32 or reduced)"))
    }
}

/// Bytes of weights a model holds, by kind (what [`crate::Model::weight_bytes`] reports).
///
/// ```
/// use qkv::{LoadOptions, Model, WeightType};
///
/// let dir = qkv::loaders::paths::fixture("gpt2-tiny");
/// let f32 = Model::load(&dir)?.weight_bytes();
/// let int8 = Model::load_with(&dir, &LoadOptions { weights: WeightType::Int8, ..Default::default() })?.weight_bytes();
/// // A byte per weight instead of four, plus a scale per row; embeddings stay as stored.
/// assert!(int8.linear * 3 < f32.linear && int8.embedding == f32.embedding);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightBytes {
    /// The matrices of the linear layers, LM head included (int8: values and scales): what one decoding step
    /// reads.
    pub linear: usize,
    /// Embedding tables used for lookup (token, learned positions), as stored.
    pub embedding: usize,
    /// Of `linear`, the bytes that are an embedding table too (a tied LM head kept as stored shares its memory).
    pub shared: usize,
    /// Of `linear`, the bytes held in GGUF blocks ([`kernels::BlockType`]: a GGUF's as stored, or quantized at load),
    /// which the block kernels read as they are.
    pub blocks: usize,
}

impl WeightBytes {
    /// Sum over linear layers and embedding tables.
    pub(crate) fn of<'a>(linears: impl IntoIterator<Item = &'a Linear>, embeddings: &[&Embedding]) -> Self {
        let mut b = Self {
            embedding: embeddings.iter().map(|e| e.weight_bytes()).sum(),
            ..Self::default()
        };
        for l in linears {
            b.linear += l.weight_bytes();
            if l.packed().is_some_and(|w| w.block_type().is_some()) {
                b.blocks += l.weight_bytes();
            }
            if embeddings.iter().any(|e| e.is_tied_to(l)) {
                b.shared += l.weight_bytes();
            }
        }
        b
    }

    /// Bytes held: linear matrices and embedding tables, shared ones once.
    pub fn total(&self) -> usize {
        self.linear + self.embedding - self.shared
    }
}

/// The shape an `[out_dim, in_dim]` matrix is stored in.
fn stored_shape(layout: Layout, out_dim: usize, in_dim: usize) -> [usize; 2] {
    match layout {
        Layout::OutIn => [out_dim, in_dim],
        Layout::InOut => [in_dim, out_dim],
    }
}

/// How the matrices of the linear layers are held: their [`WeightType`] and the kernels whose panel layout they are
/// packed in (the model's: a packed matrix runs only on the ISA it was packed for).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    pub(crate) weights: WeightType,
    pub(crate) kernels: Kernels,
}

/// The matrix of a [`Linear`].
#[derive(Clone, Debug)]
enum LinearData {
    /// The tensor as bound (zero-copy), in the layer's layout: only until [`Linear::convert`] packs it (and in unit
    /// tests of the unpacked path).
    Stored(Tensor),
    /// Packed at load in the stored dtype or int8 ([`Hold`]); the mapped tensor is dropped.
    Packed {
        w: Arc<PackedWeight>,
        /// The source tensor's name (stacked matrices: the first one's).
        name: String,
        weights: WeightType,
        /// Bytes of the values (int8: and the row scales), panel padding aside.
        bytes: usize,
    },
}

/// `y = x · Wᵀ + b` with `W` packed at load in its stored dtype (or int8, see [`Linear::convert`]).
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    data: LinearData,
    bias: Option<Vec<f32>>,
    pub(crate) out_dim: usize,
    pub(crate) in_dim: usize,
    /// The layout of the stored matrix (packed matrices have their own, see [`kernels::PackedWeight`]).
    layout: Layout,
}

impl Linear {
    /// Bind `name` (a tensor name ending in `weight`, or a prefix to which `.weight` is added) as an
    /// `[out_dim, in_dim]` matrix (`Layout::OutIn`, stored `[out, in]`) or `Layout::InOut` (stored
    /// `[in, out]`, GPT-2's Conv1D). The bias, if any, is the `...bias` tensor beside the weight.
    pub(crate) fn bind(
        st: &dyn TensorSource,
        name: &str,
        out_dim: usize,
        in_dim: usize,
        layout: Layout,
        bias: Bias,
    ) -> Result<Self> {
        let wname = weight_name(name);
        let weight = st.get_shaped(&wname, &stored_shape(layout, out_dim, in_dim))?;
        let bname = bias_name(&wname);
        let bias = match bias {
            Bias::None => None,
            Bias::Required => Some(bind_vector(st, &bname, out_dim)?),
            Bias::IfPresent if st.contains(&bname) => Some(bind_vector(st, &bname, out_dim)?),
            Bias::IfPresent => None,
        };
        Self::from_tensor(st, weight, out_dim, in_dim, layout, bias)
    }

    /// A linear layer over an already bound tensor (e.g. a tied embedding table used as the LM head).
    pub(crate) fn from_tensor(
        st: &dyn TensorSource,
        weight: Tensor,
        out_dim: usize,
        in_dim: usize,
        layout: Layout,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let shape = stored_shape(layout, out_dim, in_dim);
        if weight.shape() != shape {
            return Err(loaders::Error::TensorShape {
                path: st.origin(),
                name: weight.name().to_string(),
                expected: shape.to_vec(),
                found: weight.shape().to_vec(),
            }
            .into());
        }
        check_float(st, &weight)?;
        if let Some(ty) = block_type(&weight) {
            if layout != Layout::OutIn {
                return Err(Error::InvalidConfig {
                    file: st.origin(),
                    field: weight.name().to_string(),
                    reason: format!("{ty} blocks run as an [out, in] matrix, not [in, out]"),
                });
            }
            check_blocks(st, &weight, ty, out_dim, in_dim)?;
        }
        if let Some(b) = &bias {
            if b.len() != out_dim {
                return Err(Error::InvalidConfig {
                    file: st.origin(),
                    field: weight.name().to_string(),
                    reason: format!("its bias has {} values, expected {out_dim}", b.len()),
                });
            }
        }
        Ok(Self {
            data: LinearData::Stored(weight),
            bias,
            out_dim,
            in_dim,
            layout,
        })
    }

    /// This layer packed as `hold` says: `Stored` packs the matrix in its stored dtype, `Int8` quantizes it first
    /// (one scale per output row). An error naming the tensor (and `st`'s origin) when an int8 row holds a NaN or
    /// an infinity, which int8 cannot represent. A packed layer is returned as it is.
    pub(crate) fn convert(self, st: &dyn TensorSource, hold: Hold) -> Result<Self> {
        Self::stack(st, vec![self], hold)
    }

    /// The layers `parts` (one `in_dim`, bound but not packed) packed as one matrix whose outputs are theirs side by
    /// side (`[rows, Σ out_dim]`: fused q/k/v, gate/up); a bias where any part has one (zeros for the others).
    /// Parts of different stored dtypes are widened to f32 together (a checkpoint that mixes them).
    pub(crate) fn stack(st: &dyn TensorSource, parts: Vec<Linear>, hold: Hold) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Request("Linear::stack: no matrices".into()));
        };
        if parts.len() == 1 && matches!(first.data, LinearData::Packed { .. }) {
            return Ok(parts.into_iter().next().unwrap_or_else(|| unreachable!("one part")));
        }
        let in_dim = first.in_dim;
        let name = first.name().to_string();
        if let Some(p) = parts
            .iter()
            .find(|p| p.in_dim != in_dim || matches!(p.data, LinearData::Packed { .. }))
        {
            return Err(Error::InvalidConfig {
                file: st.origin(),
                field: p.name().to_string(),
                reason: format!(
                    "cannot be packed with {name:?} ({} inputs, expected {in_dim})",
                    p.in_dim
                ),
            });
        }
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        let bias = parts.iter().any(|p| p.bias.is_some()).then(|| {
            parts
                .iter()
                .flat_map(|p| match &p.bias {
                    Some(b) => b.clone(),
                    None => vec![0.0; p.out_dim],
                })
                .collect::<Vec<f32>>()
        });
        let pack_error = |e: kernels::PackError| Error::InvalidConfig {
            file: st.origin(),
            field: name.clone(),
            reason: e.to_string(),
        };
        let k = &hold.kernels;
        // GGUF blocks: as stored (rows of one block type side by side, bytes moved, never dequantized) when the
        // hold keeps them; else (another weight type asked for, or parts of different block types) widened to f32
        // with the loaders' exact dequantizers, and held as asked.
        let tys: Vec<Option<kernels::BlockType>> = parts.iter().map(Linear::block_type).collect();
        if let Some(ty) = tys[0].filter(|&t| {
            tys.iter().all(|&u| u == Some(t))
                && (hold.weights == WeightType::Stored || hold.weights.block_type() == Some(t))
        }) {
            let blocks: Vec<&[u8]> = parts.iter().filter_map(|p| p.stored().map(Tensor::bytes)).collect();
            let joined: Vec<u8>;
            let bytes: &[u8] = match blocks.as_slice() {
                [one] => one,
                _ => {
                    joined = blocks.concat();
                    &joined
                }
            };
            let w = PackedWeight::from_blocks(k, ty, bytes, out_dim, in_dim).map_err(pack_error)?;
            return Ok(Self {
                data: LinearData::Packed {
                    w: Arc::new(w),
                    name,
                    weights: hold.weights,
                    bytes: bytes.len(),
                },
                bias,
                out_dim,
                in_dim,
                layout: Layout::OutIn,
            });
        }
        let widened: Vec<Linear>;
        let parts = if tys.iter().any(Option::is_some) {
            widened = parts.iter().map(|p| p.dequantized(st)).collect::<Result<_>>()?;
            &widened
        } else {
            &parts
        };
        // Block types need whole blocks of 32 inputs (Q4_K: 256, else Q4_0); other matrices stay as stored (as
        // llama.cpp falls back).
        let weights = match hold.weights.block_type() {
            Some(ty) if !in_dim.is_multiple_of(ty.block_size()) && ty.block_size() > kernels::QK => WeightType::Q4_0,
            _ => hold.weights,
        };
        let weights = match weights.block_type() {
            Some(_) if !in_dim.is_multiple_of(kernels::QK) => WeightType::Stored,
            _ => weights,
        };
        let (w, bytes) = match weights {
            WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q4K => {
                let ty = weights.block_type().unwrap_or_else(|| unreachable!("a block type"));
                for p in parts {
                    p.check_finite_rows(st)?;
                }
                let ws: Vec<Weight<'_>> = parts.iter().map(Linear::weight).collect();
                let w = PackedWeight::quantize_blocks(k, &ws, ty).map_err(pack_error)?;
                // The blocks' own bytes (as the other types count theirs), without the groups' zero rows.
                let bytes = ty.matrix_bytes(w.out_dim(), in_dim).map_err(|e| pack_error(e.into()))?;
                (w, bytes)
            }
            WeightType::Int8 => {
                let qs = parts
                    .iter()
                    .map(|p| p.quantize(st))
                    .collect::<Result<Vec<kernels::QuantizedI8>>>()?;
                let ws: Vec<Weight<'_>> = qs.iter().map(|q| q.weight()).collect();
                let bytes = ws.iter().map(|w| w.data.bytes()).sum();
                (PackedWeight::stack(k, &ws).map_err(pack_error)?, bytes)
            }
            WeightType::Stored => {
                let ws: Vec<Weight<'_>> = parts.iter().map(Linear::weight).collect();
                let bytes = ws.iter().map(|w| w.data.bytes()).sum();
                let one_dtype = ws
                    .iter()
                    .all(|w| std::mem::discriminant(&w.data) == std::mem::discriminant(&ws[0].data));
                let packed = if one_dtype {
                    PackedWeight::stack(k, &ws)
                } else {
                    let widened: Vec<Vec<f32>> = ws
                        .iter()
                        .map(|w| {
                            (0..w.out_dim)
                                .flat_map(|o| (0..w.in_dim).map(move |i| w.at(o, i)))
                                .collect()
                        })
                        .collect();
                    let ws: Vec<Weight<'_>> = widened
                        .iter()
                        .zip(&ws)
                        .map(|(v, w)| Weight {
                            data: WeightData::F32(v),
                            out_dim: w.out_dim,
                            in_dim: w.in_dim,
                            layout: Layout::OutIn,
                        })
                        .collect();
                    PackedWeight::stack(k, &ws)
                };
                (packed.map_err(pack_error)?, bytes)
            }
        };
        Ok(Self {
            data: LinearData::Packed {
                w: Arc::new(w),
                name,
                weights,
                bytes,
            },
            bias,
            out_dim,
            in_dim,
            layout: Layout::OutIn,
        })
    }

    /// The block type of a bound matrix stored in GGUF blocks.
    fn block_type(&self) -> Option<kernels::BlockType> {
        self.stored().and_then(block_type)
    }

    /// The bound tensor (`None` once packed).
    fn stored(&self) -> Option<&Tensor> {
        match &self.data {
            LinearData::Stored(t) => Some(t),
            LinearData::Packed { .. } => None,
        }
    }

    /// A bound matrix of GGUF blocks as an f32 one (the loaders' dequantizer, bit for bit as ggml's); others as
    /// they are.
    fn dequantized(&self, st: &dyn TensorSource) -> Result<Linear> {
        let Some(t) = self.stored().filter(|t| block_type(t).is_some()) else {
            return Ok(self.clone());
        };
        let values = t.to_f32_vec();
        let f32 = Tensor::from_f32(t.name(), t.shape().to_vec(), &values).ok_or_else(|| Error::InvalidConfig {
            file: st.origin(),
            field: t.name().to_string(),
            reason: format!("{} values do not fill its shape {:?}", values.len(), t.shape()),
        })?;
        Ok(Linear {
            data: LinearData::Stored(f32),
            ..self.clone()
        })
    }

    /// The stored matrix quantized to int8 (an error naming the first non-finite element of a row).
    fn quantize(&self, st: &dyn TensorSource) -> Result<kernels::QuantizedI8> {
        let q = quantize_i8(&self.weight());
        match q.scales.iter().position(|s| !s.is_finite()) {
            Some(o) => Err(self.non_finite(st, o..o + 1)),
            None => Ok(q),
        }
    }

    /// An error unless every element of the stored matrix is finite (quantized blocks cannot hold the others).
    fn check_finite_rows(&self, st: &dyn TensorSource) -> Result<()> {
        let w = self.weight();
        let finite = |o: usize| (0..w.in_dim).all(|i| w.at(o, i).is_finite());
        match (0..w.out_dim).find(|&o| !finite(o)) {
            Some(o) => Err(self.non_finite(st, o..o + 1)),
            None => Ok(()),
        }
    }

    /// The error naming the first non-finite element of output rows `rows`, as the loader's checks name them
    /// (its index in the stored order).
    fn non_finite(&self, st: &dyn TensorSource, rows: std::ops::Range<usize>) -> Error {
        let w = self.weight();
        let (o, i, value) = rows
            .flat_map(|o| (0..w.in_dim).map(move |i| (o, i)))
            .map(|(o, i)| (o, i, w.at(o, i)))
            .find(|(_, _, v)| !v.is_finite())
            .unwrap_or((0, 0, f32::NAN));
        let index = match w.layout {
            Layout::OutIn => o * w.in_dim + i,
            Layout::InOut => i * w.out_dim + o,
        };
        Error::NonFinite {
            path: st.origin(),
            tensor: self.name().to_string(),
            index,
            value,
        }
    }

    /// The stored weight as the kernels see it (empty once packed: see [`Linear::packed`]).
    fn weight(&self) -> Weight<'_> {
        let data = match &self.data {
            // `bind` / `from_tensor` checked the dtype (float) and the element count (out_dim * in_dim).
            LinearData::Stored(t) => weight_data(t).unwrap_or(WeightData::F32(&[])),
            LinearData::Packed { .. } => WeightData::F32(&[]),
        };
        Weight {
            data,
            out_dim: self.out_dim,
            in_dim: self.in_dim,
            layout: self.layout,
        }
    }

    /// The packed matrix (`None` before [`Linear::convert`]).
    pub(crate) fn packed(&self) -> Option<&Arc<PackedWeight>> {
        match &self.data {
            LinearData::Packed { w, .. } => Some(w),
            LinearData::Stored(_) => None,
        }
    }

    pub(crate) fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The name of the weight tensor in the files (a stack: its first part's).
    pub(crate) fn name(&self) -> &str {
        match &self.data {
            LinearData::Stored(t) => t.name(),
            LinearData::Packed { name, .. } => name,
        }
    }

    /// How the matrix is held.
    pub(crate) fn weight_type(&self) -> WeightType {
        match self.data {
            LinearData::Stored(_) => WeightType::Stored,
            LinearData::Packed { weights, .. } => weights,
        }
    }

    /// Bytes of the matrix one forward pass reads: its values in the stored dtype (int8: values and row scales),
    /// without the bias and without the panel padding (zeros up to a whole panel of `NR` outputs and to the
    /// dtype's input group, at most one panel per matrix).
    pub(crate) fn weight_bytes(&self) -> usize {
        match &self.data {
            LinearData::Stored(t) if block_type(t).is_some() => t.bytes().len(),
            LinearData::Stored(_) => self.weight().data.bytes(),
            LinearData::Packed { bytes, .. } => *bytes,
        }
    }

    /// `y[rows, out_dim] = x[rows, in_dim] · Wᵀ + b`.
    pub(crate) fn forward(&self, k: &Kernels, x: &[f32], rows: usize, y: &mut [f32]) {
        match &self.data {
            LinearData::Packed { w, .. } => k.linear_packed(x, rows, w, self.bias(), y),
            LinearData::Stored(_) => k.linear(x, rows, &self.weight(), self.bias(), y),
        }
    }
}

/// Copy the column blocks of `y` (`[rows, Σ widths]`, the output of a stacked [`Linear`]) into `outs` (`[rows,
/// width]` each, in order): q, k and v of a fused projection.
pub(crate) fn split_columns<const N: usize>(y: &[f32], rows: usize, mut outs: [&mut [f32]; N]) {
    let widths: [usize; N] = std::array::from_fn(|i| outs[i].len() / rows.max(1));
    let total: usize = widths.iter().sum();
    assert_eq!(y.len(), rows * total, "split_columns: y is not [rows, Σ widths]");
    for (r, yr) in y.chunks_exact(total.max(1)).take(rows).enumerate() {
        let mut c = 0;
        for (out, &w) in outs.iter_mut().zip(&widths) {
            out[r * w..(r + 1) * w].copy_from_slice(&yr[c..c + w]);
            c += w;
        }
    }
}

/// `out[rows, ff] = act(gate) * up` of a stacked gate/up output `gate_up` (`[rows, 2 ff]`: gate, then up, per row):
/// SwiGLU with SiLU, GeGLU with tanh GELU. The gate half is overwritten.
pub(crate) fn gated(k: &Kernels, act: kernels::Activation, gate_up: &mut [f32], ff: usize, out: &mut [f32]) {
    for (gu, o) in gate_up.chunks_exact_mut(2 * ff).zip(out.chunks_exact_mut(ff)) {
        let (gate, up) = gu.split_at_mut(ff);
        match act {
            kernels::Activation::Silu => k.swiglu(gate, up, o),
            _ => {
                k.activation(act, gate);
                for ((o, g), u) in o.iter_mut().zip(gate.iter()).zip(up.iter()) {
                    *o = g * u;
                }
            }
        }
    }
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` over rows of `dim`.
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Bind `prefix.weight` and `prefix.bias` (or, for a name ending in `weight`, that and its `...bias`).
    pub(crate) fn bind(st: &dyn TensorSource, name: &str, dim: usize, eps: f32) -> Result<Self> {
        let wname = weight_name(name);
        Self::bind_pair(st, &wname, &bias_name(&wname), dim, eps)
    }

    /// Bind the gain `gamma` and the shift `beta` by their full names (e.g. CTranslate2's `.../gamma`, `.../beta`).
    pub(crate) fn bind_pair(st: &dyn TensorSource, gamma: &str, beta: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            gamma: bind_vector(st, gamma, dim)?,
            beta: bind_vector(st, beta, dim)?,
            eps,
        })
    }

    #[cfg(test)]
    pub(crate) fn dim(&self) -> usize {
        self.gamma.len()
    }

    /// `out[rows, dim] = layer_norm(x[rows, dim])`.
    pub(crate) fn forward(&self, k: &Kernels, x: &[f32], out: &mut [f32]) {
        k.layer_norm(x, &self.gamma, &self.beta, self.eps, out);
    }
}

/// `y = x / sqrt(mean(x²) + eps) * weight` over rows of `dim`.
#[derive(Clone, Debug)]
pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn bind(st: &dyn TensorSource, name: &str, dim: usize, eps: f32) -> Result<Self> {
        Self::bind_offset(st, name, dim, eps, 0.0)
    }

    /// A norm whose gain is `offset + weight` (Gemma stores `w` and multiplies by `1 + w`, added in f32 once here
    /// as transformers adds it on every call).
    pub(crate) fn bind_offset(st: &dyn TensorSource, name: &str, dim: usize, eps: f32, offset: f32) -> Result<Self> {
        let mut weight = bind_vector(st, &weight_name(name), dim)?;
        if offset != 0.0 {
            weight.iter_mut().for_each(|w| *w += offset);
        }
        Ok(Self { weight, eps })
    }

    /// The same norm with its output multiplied by `factor` (folded into the gains: T5's scaled tied head).
    pub(crate) fn scaled(mut self, factor: f32) -> Self {
        self.weight.iter_mut().for_each(|w| *w *= factor);
        self
    }

    /// A norm over given gains (tests).
    #[cfg(test)]
    pub(crate) fn from_gains(weight: Vec<f32>, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// `out[rows, dim] = rms_norm(x[rows, dim])`.
    pub(crate) fn forward(&self, k: &Kernels, x: &[f32], out: &mut [f32]) {
        k.rms_norm(x, &self.weight, self.eps, out);
    }
}

/// Where an [`Embedding`]'s rows are read.
#[derive(Clone, Debug)]
enum Table {
    /// The stored tensor (zero-copy over the memory map; a lookup touches only its rows).
    Stored(Tensor),
    /// The panels of the LM head the table is tied to (one copy of the matrix for both).
    Packed(Arc<PackedWeight>),
}

/// A `[n_rows, dim]` lookup table (token or learned position embeddings) in its stored dtype.
#[derive(Clone, Debug)]
pub(crate) struct Embedding {
    table: Table,
    name: String,
    /// Bytes of the table as stored.
    bytes: usize,
    n_rows: usize,
    dim: usize,
}

impl Embedding {
    pub(crate) fn bind(st: &dyn TensorSource, name: &str, n_rows: usize, dim: usize) -> Result<Self> {
        let table = st.get_shaped(&weight_name(name), &[n_rows, dim])?;
        check_float(st, &table)?;
        match weight_data(&table) {
            Some(WeightData::F32(s)) => check_finite(st, table.name(), s.iter().copied())?,
            Some(WeightData::F16(s)) => check_finite(st, table.name(), s.iter().map(|x| x.to_f32()))?,
            Some(WeightData::Bf16(s)) => check_finite(st, table.name(), s.iter().map(|x| x.to_f32()))?,
            // `weight_data` never gives int8 (a file's I8 tensors are refused by `check_float`); GGUF blocks are
            // not scanned (a lookup dequantizes only its rows)
            Some(WeightData::I8 { .. }) | None => {}
        }
        if let Some(ty) = block_type(&table) {
            check_blocks(st, &table, ty, n_rows, dim)?;
        }
        let bytes = match block_type(&table) {
            Some(_) => table.bytes().len(),
            None => weight_data(&table).map_or(0, |d| d.bytes()),
        };
        Ok(Self {
            name: table.name().to_string(),
            table: Table::Stored(table),
            bytes,
            n_rows,
            dim,
        })
    }

    /// The bound table tensor, for an LM head tied to it (`None` once tied: see [`Embedding::tie_to`]).
    pub(crate) fn tensor(&self) -> Option<&Tensor> {
        match &self.table {
            Table::Stored(t) => Some(t),
            Table::Packed(_) => None,
        }
    }

    /// The table's tensor name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Read the rows from the panels of `head` when it is this table packed as stored (a tied head): the mapped
    /// table is dropped, one copy serves both. A head quantized to int8, or another matrix, changes nothing (the
    /// lookups keep reading the stored table).
    pub(crate) fn tie_to(&mut self, head: &Linear) {
        if let (Some(w), WeightType::Stored) = (head.packed(), head.weight_type()) {
            if head.name() == self.name && (w.out_dim(), w.in_dim()) == (self.n_rows, self.dim) {
                self.table = Table::Packed(Arc::clone(w));
            }
        }
    }

    /// Whether `l` holds this table's matrix in the same memory (a head tied by [`Embedding::tie_to`]).
    pub(crate) fn is_tied_to(&self, l: &Linear) -> bool {
        match (&self.table, l.packed()) {
            (Table::Packed(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Bytes of the table (as stored).
    pub(crate) fn weight_bytes(&self) -> usize {
        self.bytes
    }

    /// `out[ids.len(), dim] = table[ids] * scale`; an error for an id outside the table.
    pub(crate) fn forward(&self, k: &Kernels, ids: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.n_rows) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the embedding table {:?} ({} rows)",
                self.name, self.n_rows
            )));
        }
        match &self.table {
            Table::Stored(t) if block_type(t).is_some() => {
                // GGUF blocks (checked in `bind`: `n_rows` rows of whole blocks): each row dequantized as ggml does.
                let row_bytes = t.bytes().len() / self.n_rows.max(1);
                let Dtype::Blocks(g) = t.dtype() else {
                    unreachable!("a block type")
                };
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.dim.max(1))) {
                    let src = &t.bytes()[id as usize * row_bytes..(id as usize + 1) * row_bytes];
                    loaders::gguf::dequant::dequantize_into(g, src, row)
                        .map_err(|e| Error::Request(format!("embedding table {:?}: {e:?}", self.name)))?;
                    row.iter_mut().for_each(|v| *v *= scale);
                }
            }
            Table::Stored(t) => {
                // `bind` checked the dtype (float) and the shape.
                let data = weight_data(t).unwrap_or(WeightData::F32(&[]));
                let w = Weight {
                    data,
                    out_dim: self.n_rows,
                    in_dim: self.dim,
                    layout: Layout::OutIn,
                };
                k.embed(&w, ids, scale, out);
            }
            Table::Packed(w) => w.gather_rows(ids, scale, out),
        }
        Ok(())
    }
}

/// A normalisation layer: LayerNorm (GPT-2, Marian, the CTranslate2 Transformer) or RMSNorm (Llama).
#[derive(Clone, Debug)]
pub(crate) enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    /// `out[rows, dim] = norm(x[rows, dim])`.
    pub(crate) fn forward(&self, k: &Kernels, x: &[f32], out: &mut [f32]) {
        match self {
            Norm::Layer(n) => n.forward(k, x, out),
            Norm::Rms(n) => n.forward(k, x, out),
        }
    }
}

/// The end of every decoder: the final norm (when the architecture has one), then the LM head, applied only to
/// the positions that need logits.
#[derive(Debug)]
pub(crate) struct LmHead {
    pub(crate) norm: Option<Norm>,
    pub(crate) linear: Linear,
    /// Gemma 2's final logit soft-capping: `logits = cap · tanh(logits / cap)` ([`kernels::softcap`]).
    pub(crate) softcap: Option<f32>,
}

impl LmHead {
    /// `logits` (`[which.rows(shape), vocab]`) of the residual stream `x` (`[shape.rows(), d]`) after the last block.
    pub(crate) fn forward(
        &self,
        k: &Kernels,
        x: &[f32],
        shape: StepShape,
        which: LogitsFor,
        scratch: &mut Scratch,
        logits: &mut [f32],
    ) {
        let d = self.linear.in_dim;
        let StepShape { batch, n } = shape;
        match which {
            LogitsFor::All => {
                let rows = shape.rows();
                let [h] = scratch.take([rows * d]); // [rows, d]
                let input: &[f32] = match &self.norm {
                    Some(norm) => {
                        norm.forward(k, x, h);
                        h
                    }
                    None => x,
                };
                self.linear.forward(k, input, rows, logits); // [rows, vocab]
                if let Some(cap) = self.softcap {
                    kernels::softcap(cap, &mut logits[..rows * self.linear.out_dim]);
                }
            }
            LogitsFor::Last => {
                let [last] = scratch.take([batch * d]); // [batch, d]
                for b in 0..batch {
                    let t = (b * n + n - 1) * d;
                    let (src, dst) = (&x[t..t + d], &mut last[b * d..(b + 1) * d]);
                    match &self.norm {
                        Some(norm) => norm.forward(k, src, dst),
                        None => dst.copy_from_slice(src),
                    }
                }
                self.linear.forward(k, last, batch, logits); // [batch, vocab]
                if let Some(cap) = self.softcap {
                    kernels::softcap(cap, &mut logits[..batch * self.linear.out_dim]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    /// Tensors held in memory by name (unit tests).
    #[derive(Clone, Debug, Default)]
    pub(crate) struct TensorMap {
        origin: PathBuf,
        tensors: HashMap<String, Tensor>,
    }

    impl TensorMap {
        /// An empty map; `origin` names it in error messages.
        pub(crate) fn new(origin: impl AsRef<Path>) -> Self {
            Self {
                origin: origin.as_ref().to_path_buf(),
                tensors: HashMap::new(),
            }
        }

        /// Add (or replace) a tensor under its own name.
        pub(crate) fn insert(&mut self, t: Tensor) {
            self.tensors.insert(t.name().to_string(), t);
        }

        /// Add an f32 tensor; an error if `values` does not have `shape`'s element count.
        pub(crate) fn insert_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
            let t = Tensor::from_f32(name, shape.to_vec(), values).ok_or_else(|| loaders::Error::TensorShape {
                path: self.origin.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: vec![values.len()],
            })?;
            self.insert(t);
            Ok(())
        }
    }

    impl TensorSource for TensorMap {
        fn get(&self, name: &str) -> loaders::Result<Tensor> {
            self.tensors
                .get(name)
                .cloned()
                .ok_or_else(|| loaders::Error::MissingTensor {
                    path: self.origin.clone(),
                    name: name.to_string(),
                    hint: String::new(),
                })
        }

        fn contains(&self, name: &str) -> bool {
            self.tensors.contains_key(name)
        }

        fn origin(&self) -> PathBuf {
            self.origin.clone()
        }
    }

    fn map() -> TensorMap {
        let mut m = TensorMap::new("mem");
        m.insert_f32("l.weight", &[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        m.insert_f32("l.bias", &[2], &[0.5, -0.5]).unwrap();
        m.insert_f32("c/weight", &[3, 2], &[1., 4., 2., 5., 3., 6.]).unwrap();
        m.insert_f32("n.weight", &[3], &[1., 1., 1.]).unwrap();
        m.insert_f32("n.bias", &[3], &[0., 0., 0.]).unwrap();
        m
    }

    /// The same `[2, 3]` matrix bound `OutIn` with a bias (`l`) and `InOut` without (`c/weight`).
    fn both_layouts(m: &TensorMap) -> (Linear, Linear) {
        (
            Linear::bind(m, "l", 2, 3, Layout::OutIn, Bias::Required).unwrap(),
            Linear::bind(m, "c/weight", 2, 3, Layout::InOut, Bias::IfPresent).unwrap(),
        )
    }

    #[test]
    fn linear_layouts_agree() {
        let m = map();
        let k = Kernels::scalar();
        let (a, b) = both_layouts(&m);
        assert!(b.bias().is_none());
        let x = [1.0, 0.0, -1.0];
        let (mut ya, mut yb) = ([0.0; 2], [0.0; 2]);
        a.forward(&k, &x, 1, &mut ya);
        b.forward(&k, &x, 1, &mut yb);
        assert_eq!(ya, [-2.0 + 0.5, -2.0 - 0.5]);
        assert_eq!(yb, [-2.0, -2.0]);
    }

    #[test]
    fn bind_errors_name_the_tensor() {
        let m = map();
        let e = Linear::bind(&m, "l", 3, 2, Layout::OutIn, Bias::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"l.weight\"") && e.contains("[3, 2]"), "{e}");
        let e = Linear::bind(&m, "missing", 2, 3, Layout::OutIn, Bias::None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.weight"), "{e}");
        let e = Linear::bind(&m, "c/weight", 2, 3, Layout::InOut, Bias::Required)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c/bias"), "{e}");
    }

    fn hold(weights: WeightType, kernels: Kernels) -> Hold {
        Hold { weights, kernels }
    }

    #[test]
    fn int8_conversion() {
        let m = map();
        let k = Kernels::scalar();
        let (a, b) = both_layouts(&m);
        let (qa, qb) = (
            a.clone().convert(&m, hold(WeightType::Int8, k)).unwrap(),
            b.clone().convert(&m, hold(WeightType::Int8, k)).unwrap(),
        );
        // The InOut (Conv1D) matrix is read as OutIn; both hold the same int8 values (times their row scales).
        assert_eq!(qb.weight_type(), WeightType::Int8);
        assert_eq!(qb.name(), "c/weight");
        let q = [[42.0f32, 85.0, 127.0], [85.0, 106.0, 127.0]];
        for (o, scale) in [3.0f32 / 127.0, 6.0 / 127.0].into_iter().enumerate() {
            for (i, &qv) in q[o].iter().enumerate() {
                for l in [&qa, &qb] {
                    let got = l.packed().unwrap().at(o, i);
                    // the kernels' scale is max / 127 in f32: one rounding away from `scale` here
                    assert!((got - qv * scale).abs() <= 1e-6, "({o}, {i}): {got} vs {}", qv * scale);
                }
            }
        }
        // Rows [1 2 3] and [4 5 6]: scales 3/127 and 6/127; each output within Σ|x| * scale / 2 of f32's.
        let x = [1.0, 0.5, -1.0];
        let (mut yf, mut yq) = ([0.0; 2], [0.0; 2]);
        a.forward(&k, &x, 1, &mut yf);
        qa.forward(&k, &x, 1, &mut yq);
        for (o, scale) in [3.0f32 / 127.0, 6.0 / 127.0].into_iter().enumerate() {
            assert!((yf[o] - yq[o]).abs() <= 2.5 * scale / 2.0, "{yf:?} vs {yq:?}");
        }
        assert_eq!(qa.bias(), a.bias());
        assert_eq!((a.weight_bytes(), qa.weight_bytes()), (24, 6 + 8));
        // Converting again changes nothing; Stored packs the f32 values as they are.
        let again = qa.clone().convert(&m, hold(WeightType::Int8, k)).unwrap();
        assert_eq!(again.weight_bytes(), qa.weight_bytes());
        let fa = a.clone().convert(&m, hold(WeightType::Stored, k)).unwrap();
        assert_eq!((fa.weight_type(), fa.weight_bytes()), (WeightType::Stored, 24));
        let mut yp = [0.0; 2];
        fa.forward(&k, &x, 1, &mut yp);
        assert_eq!(yp, yf);
    }

    /// Matrices packed as one give, column block by column block, exactly what each gives packed alone (the panels
    /// of a column do not depend on its neighbours), with and without biases, on every ISA and both weight types.
    #[test]
    fn stacked_matrices_give_each_part() {
        let (d, rows) = (37, 11);
        let mut m = TensorMap::new("mem");
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0)
                .collect()
        };
        for (name, out_dim, seed) in [("q", 40, 1), ("k", 9, 2), ("v", 9, 3)] {
            m.insert_f32(&format!("{name}.weight"), &[out_dim, d], &vals(out_dim * d, seed))
                .unwrap();
        }
        m.insert_f32("q.bias", &[40], &vals(40, 4)).unwrap();
        let x = vals(rows * d, 5);
        for k in kernels::testing::kernels("layers::stacked_matrices_give_each_part") {
            for weights in WeightType::ALL {
                let bind =
                    |name: &str, out_dim| Linear::bind(&m, name, out_dim, d, Layout::OutIn, Bias::IfPresent).unwrap();
                let parts = [bind("q", 40), bind("k", 9), bind("v", 9)];
                let fused = Linear::stack(&m, parts.to_vec(), hold(weights, k)).unwrap();
                assert_eq!((fused.out_dim, fused.name()), (58, "q.weight"));
                let mut y = vec![0.0; rows * 58];
                fused.forward(&k, &x, rows, &mut y);
                let (mut q, mut kk, mut v) = (vec![0.0; rows * 40], vec![0.0; rows * 9], vec![0.0; rows * 9]);
                split_columns(&y, rows, [&mut q, &mut kk, &mut v]);
                for (part, got) in parts.into_iter().zip([q, kk, v]) {
                    let alone = part.convert(&m, hold(weights, k)).unwrap();
                    let mut want = vec![0.0; got.len()];
                    alone.forward(&k, &x, rows, &mut want);
                    assert_eq!(got, want, "{} {weights}: {}", k.isa(), alone.name());
                }
            }
        }
    }

    /// A table tied to a head packed as stored reads its rows from the head's panels (the mapped table dropped), and
    /// finds the same values; an int8 head leaves the table as stored.
    #[test]
    fn tied_table_reads_the_packed_head() {
        let m = map();
        for k in kernels::testing::kernels("layers::tied_table_reads_the_packed_head") {
            for weights in WeightType::ALL {
                let mut e = Embedding::bind(&m, "l", 2, 3).unwrap();
                let t = e.tensor().unwrap().clone();
                let head = Linear::from_tensor(&m, t, 2, 3, Layout::OutIn, None)
                    .unwrap()
                    .convert(&m, hold(weights, k))
                    .unwrap();
                e.tie_to(&head);
                // A block type on 3 inputs (not whole blocks) keeps the head as stored: tied too.
                let stored = head.weight_type() == WeightType::Stored;
                assert_eq!(stored, weights == WeightType::Stored || weights.block_type().is_some());
                assert_eq!(e.is_tied_to(&head), stored);
                assert_eq!(e.tensor().is_none(), stored);
                let mut out = [0.0; 6];
                e.forward(&k, &[1, 0], 2.0, &mut out).unwrap();
                assert_eq!(out, [8., 10., 12., 2., 4., 6.]);
                assert!(e.forward(&k, &[2], 1.0, &mut out[..3]).is_err());
                let b = WeightBytes::of([&head], &[&e]);
                assert_eq!((b.embedding, b.shared), (24, if e.is_tied_to(&head) { 24 } else { 0 }));
            }
        }
    }

    #[test]
    fn weight_type_names() {
        for w in WeightType::ALL {
            assert_eq!(w.to_string().parse::<WeightType>(), Ok(w));
        }
        assert_eq!(" INT8".parse::<WeightType>(), Ok(WeightType::Int8));
        assert_eq!("Q4_0".parse::<WeightType>(), Ok(WeightType::Q4_0));
        assert!("int4"
            .parse::<WeightType>()
            .unwrap_err()
            .contains("stored, int8, q8_0, q4_0 or q4_k"));
    }

    #[test]
    fn int8_conversion_refuses_non_finite_rows() {
        let mut m = map();
        m.insert_f32("bad.weight", &[3, 2], &[1., 2., 3., f32::INFINITY, 5., 6.])
            .unwrap();
        let l = Linear::bind(&m, "bad", 3, 2, Layout::OutIn, Bias::None).unwrap();
        let e = l.convert(&m, hold(WeightType::Int8, Kernels::scalar())).unwrap_err();
        assert!(
            matches!(&e, Error::NonFinite { tensor, index: 3, value, .. } if tensor == "bad.weight" && value.is_infinite()),
            "{e}"
        );
        // InOut: element index in the stored [in, out] order.
        let l = Linear::bind(&m, "bad", 2, 3, Layout::InOut, Bias::None).unwrap();
        let e = l.convert(&m, hold(WeightType::Int8, Kernels::scalar())).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 3, .. }), "{e}");
    }

    #[test]
    fn q4_k_conversion_and_fallback() {
        // Whole super-blocks: Q4_K blocks as the kernels' quantizer makes them, run by the K-quant products; a row
        // of 64 (not whole super-blocks): Q4_0.
        let w: Vec<f32> = (0..2 * 256).map(|j| ((j * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let mut m = map();
        m.insert_f32("k.weight", &[2, 256], &w).unwrap();
        m.insert_f32("s.weight", &[2, 64], &w[..128]).unwrap();
        let k = Kernels::scalar();
        let a = Linear::bind(&m, "k", 2, 256, Layout::OutIn, Bias::None).unwrap();
        let a = a.convert(&m, hold(WeightType::Q4K, k)).unwrap();
        assert_eq!(a.packed().unwrap().block_type(), Some(kernels::BlockType::Q4_K));
        let mut blocks = vec![0u8; kernels::BlockType::Q4_K.matrix_bytes(2, 256).unwrap()];
        kernels::BlockType::Q4_K.quantize(&w, &mut blocks).unwrap();
        let want = PackedWeight::from_blocks(&k, kernels::BlockType::Q4_K, &blocks, 2, 256).unwrap();
        let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
        let (mut y, mut y_want) = ([0.0f32; 2], [0.0f32; 2]);
        k.linear_packed(&x, 1, &want, None, &mut y_want);
        a.forward(&k, &x, 1, &mut y);
        assert_eq!(y, y_want);
        let b = Linear::bind(&m, "s", 2, 64, Layout::OutIn, Bias::None).unwrap();
        let b = b.convert(&m, hold(WeightType::Q4K, k)).unwrap();
        assert_eq!(b.packed().unwrap().block_type(), Some(kernels::BlockType::Q4_0));
    }

    #[test]
    fn block_conversion() {
        // A [3, 64] matrix (two blocks per row) and its transpose stored [64, 3] (Conv1D), packed as Q8_0 / Q4_0:
        // the blocks are the kernels' quantizer's, the products the kernels' block products.
        let (out_dim, in_dim) = (3usize, 64usize);
        let w: Vec<f32> = (0..out_dim * in_dim)
            .map(|j| ((j * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let wt: Vec<f32> = (0..w.len()).map(|j| w[(j % out_dim) * in_dim + j / out_dim]).collect();
        let mut m = map();
        m.insert_f32("q.weight", &[out_dim, in_dim], &w).unwrap();
        m.insert_f32("qt.weight", &[in_dim, out_dim], &wt).unwrap();
        m.insert_f32("bad.weight", &[1, in_dim], &[f32::NAN; 64]).unwrap();
        let k = Kernels::scalar();
        let x: Vec<f32> = (0..in_dim).map(|i| (i as f32 * 0.37).sin()).collect();
        for weights in [WeightType::Q8_0, WeightType::Q4_0] {
            let ty = weights.block_type().unwrap();
            let a = Linear::bind(&m, "q", out_dim, in_dim, Layout::OutIn, Bias::None).unwrap();
            let b = Linear::bind(&m, "qt", out_dim, in_dim, Layout::InOut, Bias::None).unwrap();
            let (qa, qb) = (
                a.convert(&m, hold(weights, k)).unwrap(),
                b.convert(&m, hold(weights, k)).unwrap(),
            );
            let mut blocks = vec![0u8; ty.matrix_bytes(out_dim, in_dim).unwrap()];
            ty.quantize(&w, &mut blocks).unwrap();
            assert_eq!((qa.weight_type(), qa.weight_bytes()), (weights, blocks.len()));
            let want = PackedWeight::from_blocks(&k, ty, &blocks, out_dim, in_dim).unwrap();
            let mut xq = kernels::QuantizedBlocks::default();
            k.quantize_blocks(&x, in_dim, &mut xq);
            let mut y_want = [0.0f32; 3];
            k.linear_blocks(&xq, &want, None, &mut y_want);
            for l in [&qa, &qb] {
                assert_eq!(l.packed().unwrap().block_type(), Some(ty));
                let mut y = [0.0f32; 3];
                l.forward(&k, &x, 1, &mut y);
                assert_eq!(y, y_want, "{weights}");
            }
            // Not whole blocks: kept as stored; a NaN: an error naming the tensor.
            let small = Linear::bind(&m, "l", 2, 3, Layout::OutIn, Bias::Required).unwrap();
            assert_eq!(
                small.convert(&m, hold(weights, k)).unwrap().weight_type(),
                WeightType::Stored
            );
            let bad = Linear::bind(&m, "bad", 1, in_dim, Layout::OutIn, Bias::None).unwrap();
            let e = bad.convert(&m, hold(weights, k)).unwrap_err();
            assert!(
                matches!(&e, Error::NonFinite { tensor, index: 0, .. } if tensor == "bad.weight"),
                "{e}"
            );
        }
    }

    #[test]
    fn embedding_rejects_bad_ids() {
        let m = map();
        let k = Kernels::scalar();
        let e = Embedding::bind(&m, "l", 2, 3).unwrap();
        let mut out = [0.0; 3];
        e.forward(&k, &[1], 1.0, &mut out).unwrap();
        assert_eq!(out, [4., 5., 6.]);
        assert!(e.forward(&k, &[2], 1.0, &mut out).is_err());
        let n = LayerNorm::bind(&m, "n", 3, 1e-5).unwrap();
        assert_eq!(n.dim(), 3);
    }
}
