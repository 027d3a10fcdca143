//! Weights bound by name, checked once at load, and the small layers every architecture is built from:
//! [`Linear`] (projections, feed-forward, LM head), [`Norm`] (layer or RMS norm), [`Embedding`] (token and learned
//! position tables) and [`LmHead`] (final norm + LM head, on the positions that need logits).
//!
//! A layer holds its weights in their stored dtype (`F32`, `F16` or `BF16`, zero-copy over the memory
//! map); only the small vectors (biases, norm gains) are widened to f32. With [`WeightType::Int8`] a
//! [`Linear`] is quantized at load into owned memory instead ([`Linear::convert`]). Every check of the files
//! (presence, shape, dtype) happens in `bind`; `forward` only asserts what a caller could get wrong.

use std::path::PathBuf;

use kernels::{quantize_i8, Kernels, Layout, QuantizedI8, Weight, WeightData};
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

/// Check that a weight tensor is in a dtype the kernels read directly.
fn check_float(st: &dyn TensorSource, t: &Tensor) -> Result<()> {
    match t.dtype() {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        other => Err(loaders::Error::TensorDtype {
            path: st.origin(),
            name: t.name().to_string(),
            expected: "F32, F16 or BF16".to_string(),
            found: other.to_string(),
        }
        .into()),
    }
}

/// A float tensor's data as kernel weight data (`None` for integer dtypes, which `check_float` refused).
fn weight_data(t: &Tensor) -> Option<WeightData<'_>> {
    match t.data() {
        TensorData::F32(s) => Some(WeightData::F32(s)),
        TensorData::F16(s) => Some(WeightData::F16(s)),
        TensorData::BF16(s) => Some(WeightData::Bf16(s)),
        TensorData::I8(_) | TensorData::U8(_) => None,
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
}

impl WeightType {
    pub const ALL: [WeightType; 2] = [WeightType::Stored, WeightType::Int8];

    /// `stored` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::Stored => "stored",
            WeightType::Int8 => "int8",
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

    /// `stored` or `int8` (any case), e.g. from a command line.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        WeightType::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not a weight type (stored or int8)"))
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
            let tied = l
                .tensor()
                .is_some_and(|t| embeddings.iter().any(|e| e.tensor().name() == t.name()));
            if tied {
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

/// The matrix of a [`Linear`].
#[derive(Clone, Debug)]
enum LinearData {
    /// The tensor as stored (zero-copy), in the layer's layout.
    Stored(Tensor),
    /// Quantized at load (always `Layout::OutIn`); `name` is the source tensor's.
    Int8 {
        #[cfg_attr(not(test), allow(dead_code))]
        name: String,
        q: QuantizedI8,
    },
}

/// `y = x · Wᵀ + b` with `W` in its stored dtype and layout (or int8, see [`Linear::convert`]).
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    data: LinearData,
    bias: Option<Vec<f32>>,
    pub(crate) out_dim: usize,
    pub(crate) in_dim: usize,
    /// The layout of [`Linear::weight`] (`OutIn` once quantized).
    pub(crate) layout: Layout,
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

    /// This layer with its matrix held as `wt`: `Stored` keeps it as it is; `Int8` quantizes a stored matrix
    /// into owned memory (laid out `OutIn`, an `InOut` matrix transposed once). An error naming the tensor
    /// (and `st`'s origin) when a row holds a NaN or an infinity, which int8 cannot represent.
    pub(crate) fn convert(self, st: &dyn TensorSource, wt: WeightType) -> Result<Self> {
        let tensor = match (&self.data, wt) {
            (LinearData::Stored(t), WeightType::Int8) => t.clone(),
            _ => return Ok(self),
        };
        let w = self.weight();
        let q = quantize_i8(&w);
        if let Some(o) = q.scales.iter().position(|s| !s.is_finite()) {
            // The first non-finite element of that row, as the loader's checks name them.
            let (i, value) = (0..w.in_dim)
                .map(|i| (i, w.at(o, i)))
                .find(|(_, v)| !v.is_finite())
                .unwrap_or((0, f32::NAN));
            let index = match w.layout {
                Layout::OutIn => o * w.in_dim + i,
                Layout::InOut => i * w.out_dim + o,
            };
            return Err(Error::NonFinite {
                path: st.origin(),
                tensor: tensor.name().to_string(),
                index,
                value,
            });
        }
        Ok(Self {
            data: LinearData::Int8 {
                name: tensor.name().to_string(),
                q,
            },
            layout: Layout::OutIn,
            ..self
        })
    }

    /// The weight as the kernels see it.
    pub(crate) fn weight(&self) -> Weight<'_> {
        match &self.data {
            LinearData::Stored(t) => {
                // `bind` / `from_tensor` checked the dtype (float) and the element count (out_dim * in_dim).
                let data = weight_data(t).unwrap_or(WeightData::F32(&[]));
                Weight {
                    data,
                    out_dim: self.out_dim,
                    in_dim: self.in_dim,
                    layout: self.layout,
                }
            }
            LinearData::Int8 { q, .. } => q.weight(),
        }
    }

    pub(crate) fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The bound weight tensor, as stored (`None` once quantized: see [`Linear::weight`]).
    pub(crate) fn tensor(&self) -> Option<&Tensor> {
        match &self.data {
            LinearData::Stored(t) => Some(t),
            LinearData::Int8 { .. } => None,
        }
    }

    /// The name of the weight tensor in the files.
    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        match &self.data {
            LinearData::Stored(t) => t.name(),
            LinearData::Int8 { name, .. } => name,
        }
    }

    /// How the matrix is held.
    #[cfg(test)]
    pub(crate) fn weight_type(&self) -> WeightType {
        match self.data {
            LinearData::Stored(_) => WeightType::Stored,
            LinearData::Int8 { .. } => WeightType::Int8,
        }
    }

    /// Bytes of the matrix one forward pass reads (int8: values and scales; the bias is not counted).
    pub(crate) fn weight_bytes(&self) -> usize {
        self.weight().data.bytes()
    }

    /// `y[rows, out_dim] = x[rows, in_dim] · Wᵀ + b`.
    pub(crate) fn forward(&self, k: &Kernels, x: &[f32], rows: usize, y: &mut [f32]) {
        k.linear(x, rows, &self.weight(), self.bias(), y);
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

/// A `[n_rows, dim]` lookup table (token or learned position embeddings) in its stored dtype.
#[derive(Clone, Debug)]
pub(crate) struct Embedding {
    table: Tensor,
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
            // `weight_data` never gives int8 (a file's I8 tensors are refused by `check_float`)
            Some(WeightData::I8 { .. }) | None => {}
        }
        Ok(Self { table, n_rows, dim })
    }

    /// The table as a `[n_rows, dim]` OutIn weight (what a tied LM head multiplies by).
    pub(crate) fn weight(&self) -> Weight<'_> {
        // `bind` checked the dtype (float) and the shape.
        let data = weight_data(&self.table).unwrap_or(WeightData::F32(&[]));
        Weight {
            data,
            out_dim: self.n_rows,
            in_dim: self.dim,
            layout: Layout::OutIn,
        }
    }

    /// The bound table tensor.
    pub(crate) fn tensor(&self) -> &Tensor {
        &self.table
    }

    /// Bytes of the table (as stored).
    pub(crate) fn weight_bytes(&self) -> usize {
        self.weight().data.bytes()
    }

    /// `out[ids.len(), dim] = table[ids] * scale`; an error for an id outside the table.
    pub(crate) fn forward(&self, k: &Kernels, ids: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.n_rows) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the embedding table {:?} ({} rows)",
                self.table.name(),
                self.n_rows
            )));
        }
        k.embed(&self.weight(), ids, scale, out);
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

    #[test]
    fn int8_conversion() {
        let m = map();
        let k = Kernels::scalar();
        let (a, b) = both_layouts(&m);
        let (qa, qb) = (
            a.clone().convert(&m, WeightType::Int8).unwrap(),
            b.clone().convert(&m, WeightType::Int8).unwrap(),
        );
        // The InOut (Conv1D) matrix is transposed to OutIn; both hold the same int8 values.
        assert_eq!(
            (qa.layout, qb.layout, qb.weight_type()),
            (Layout::OutIn, Layout::OutIn, WeightType::Int8)
        );
        assert_eq!((qb.name(), qb.tensor().is_none()), ("c/weight", true));
        assert!(matches!(qb.weight().data, WeightData::I8 { q, .. } if q == [42, 85, 127, 85, 106, 127]));
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
        // Converting again, or to Stored, changes nothing.
        let again = qa.clone().convert(&m, WeightType::Int8).unwrap();
        assert_eq!(again.weight_bytes(), qa.weight_bytes());
        assert_eq!(
            a.convert(&m, WeightType::Stored).unwrap().weight_type(),
            WeightType::Stored
        );
    }

    #[test]
    fn weight_type_names() {
        for w in WeightType::ALL {
            assert_eq!(w.to_string().parse::<WeightType>(), Ok(w));
        }
        assert_eq!(" INT8".parse::<WeightType>(), Ok(WeightType::Int8));
        assert!("int4".parse::<WeightType>().unwrap_err().contains("stored or int8"));
    }

    #[test]
    fn int8_conversion_refuses_non_finite_rows() {
        let mut m = map();
        m.insert_f32("bad.weight", &[3, 2], &[1., 2., 3., f32::INFINITY, 5., 6.])
            .unwrap();
        let l = Linear::bind(&m, "bad", 3, 2, Layout::OutIn, Bias::None).unwrap();
        let e = l.convert(&m, WeightType::Int8).unwrap_err();
        assert!(
            matches!(&e, Error::NonFinite { tensor, index: 3, value, .. } if tensor == "bad.weight" && value.is_infinite()),
            "{e}"
        );
        // InOut: element index in the stored [in, out] order.
        let l = Linear::bind(&m, "bad", 2, 3, Layout::InOut, Bias::None).unwrap();
        let e = l.convert(&m, WeightType::Int8).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 3, .. }), "{e}");
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
