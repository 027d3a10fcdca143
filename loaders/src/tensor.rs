//! A tensor handle: name, dtype, shape and its bytes, zero-copy over a memory map.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};

use crate::gguf::GgmlType;

/// Stored element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    I8,
    U8,
    /// A GGUF quantized type, in ggml's blocks (a row of the innermost dimension is whole blocks, read in place).
    Blocks(GgmlType),
}

impl Dtype {
    /// Bytes per element; for [`Dtype::Blocks`], bytes per block (see [`Dtype::n_bytes`]).
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::Blocks(t) => t.type_size() as usize,
        }
    }

    /// Bytes of `n` elements (`None` on overflow, or for blocks when `n` is not whole blocks).
    pub fn n_bytes(self, n: usize) -> Option<usize> {
        match self {
            Dtype::Blocks(t) => {
                let per = t.block_size() as usize;
                n.is_multiple_of(per).then_some(())?;
                (n / per).checked_mul(t.type_size() as usize)
            }
            _ => n.checked_mul(self.size()),
        }
    }

    /// The alignment the data needs to be cast in place (blocks are read as bytes).
    fn align(self) -> usize {
        match self {
            Dtype::Blocks(_) => 1,
            _ => self.size(),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Blocks(t) => t.name(),
        })
    }
}

/// Where a tensor's bytes live.
pub(crate) enum Storage {
    /// A read-only memory map of a whole file.
    Mmap(memmap2::Mmap),
    /// An owned, 8-byte-aligned buffer: the fallback for data whose offset in the file is not
    /// aligned for its dtype (never cast unaligned), and for tensors built in memory.
    Owned(Vec<u64>),
}

impl Storage {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => bytemuck::cast_slice(v),
        }
    }

    /// An owned, aligned copy of `bytes`.
    pub(crate) fn owned_copy(bytes: &[u8]) -> Storage {
        let mut v = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
        Storage::Owned(v)
    }
}

/// A typed, shaped view of one tensor. Cheap to clone (the storage is shared).
///
/// Invariant (checked when built): `range` lies inside the storage, its start is aligned for
/// `dtype`, and its length is `shape.product() * dtype.size()`.
#[derive(Clone)]
pub struct Tensor {
    name: Arc<str>,
    dtype: Dtype,
    shape: Vec<usize>,
    storage: Arc<Storage>,
    range: Range<usize>,
}

/// Typed slices of a tensor, in its stored dtype.
#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I8(&'a [i8]),
    U8(&'a [u8]),
    /// GGUF blocks of this type, as ggml stores them.
    Blocks(GgmlType, &'a [u8]),
}

impl Tensor {
    /// Build from storage; `None` if the invariant does not hold (callers turn that into an Error).
    pub(crate) fn from_storage(
        name: &str,
        dtype: Dtype,
        shape: Vec<usize>,
        storage: Arc<Storage>,
        range: Range<usize>,
    ) -> Option<Tensor> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let ok = range.start <= range.end
            && range.end <= storage.bytes().len()
            && shape.last().is_none_or(|&row| dtype.n_bytes(row).is_some())
            && dtype.n_bytes(n)? == range.len()
            && (storage.bytes().as_ptr() as usize + range.start).is_multiple_of(dtype.align());
        ok.then(|| Tensor {
            name: name.into(),
            dtype,
            shape,
            storage,
            range,
        })
    }

    /// A tensor over an owned copy of `values` (tests, importers, converted weights).
    pub fn from_f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Option<Tensor> {
        let storage = Arc::new(Storage::owned_copy(bytemuck::cast_slice(values)));
        let len = std::mem::size_of_val(values);
        Tensor::from_storage(name, Dtype::F32, shape, storage, 0..len)
    }

    /// A tensor over an owned, aligned copy of `bytes` (little-endian, in `dtype`); `None` if the
    /// length is not `shape.product() * dtype.size()`. Also the fallback for misaligned mapped data.
    pub fn from_bytes(name: &str, dtype: Dtype, shape: Vec<usize>, bytes: &[u8]) -> Option<Tensor> {
        let storage = Arc::new(Storage::owned_copy(bytes));
        Tensor::from_storage(name, dtype, shape, storage, 0..bytes.len())
    }

    /// Rows `rows` of this tensor along its first dimension, zero-copy (the same storage), under the same name;
    /// `None` for a scalar or rows past the end. Fused matrices (Phi-3's `qkv_proj`, `gate_up_proj`) are bound
    /// as one view per projection.
    pub fn rows(&self, rows: Range<usize>) -> Option<Tensor> {
        let (&n, rest) = self.shape.split_first()?;
        if rows.start > rows.end || rows.end > n {
            return None;
        }
        let row_bytes = self.dtype.n_bytes(rest.iter().product::<usize>())?;
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        let start = self.range.start + rows.start * row_bytes;
        Tensor::from_storage(
            &self.name,
            self.dtype,
            shape,
            self.storage.clone(),
            start..start + rows.len() * row_bytes,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.range.clone()]
    }

    /// Whether the bytes are read straight from the memory map (no copy was made).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.storage, Storage::Mmap(_))
    }

    /// The data as slices of its stored type (zero-copy; alignment was checked at construction).
    pub fn data(&self) -> TensorData<'_> {
        let b = self.bytes();
        // Alignment and length are guaranteed by `from_storage`, so these casts cannot fail.
        match self.dtype {
            Dtype::F32 => TensorData::F32(bytemuck::cast_slice(b)),
            Dtype::F16 => TensorData::F16(bytemuck::cast_slice(b)),
            Dtype::BF16 => TensorData::BF16(bytemuck::cast_slice(b)),
            Dtype::I8 => TensorData::I8(bytemuck::cast_slice(b)),
            Dtype::U8 => TensorData::U8(b),
            Dtype::Blocks(t) => TensorData::Blocks(t, b),
        }
    }

    /// The data as f32, or `None` for another dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self.data() {
            TensorData::F32(s) => Some(s),
            _ => None,
        }
    }

    /// The data widened (blocks: dequantized bit for bit as ggml does) to f32 (a copy; for small tensors such as
    /// norms and biases). A block type with no dequantizer gives NaNs (which the loaders' finiteness checks name).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.data() {
            TensorData::F32(s) => s.to_vec(),
            TensorData::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
            TensorData::BF16(s) => s.iter().map(|v| v.to_f32()).collect(),
            TensorData::I8(s) => s.iter().map(|&v| v as f32).collect(),
            TensorData::U8(s) => s.iter().map(|&v| v as f32).collect(),
            TensorData::Blocks(t, b) => {
                let mut out = vec![0f32; self.numel()];
                if crate::gguf::dequant::dequantize_into(t, b, &mut out).is_err() {
                    out.fill(f32::NAN);
                }
                out
            }
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}
