//! GGUF v2/v3 reader over a memory map: header, metadata key/values, tensor infos, data offsets.
//!
//! Layout (little-endian), as llama.cpp's `gguf.cpp` writes it:
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv x (key: string, value_type u32, value)        string = len u64 + UTF-8 bytes
//! n_tensors x (name: string, n_dims u32, dims u64 x n_dims (ne[0] innermost), ggml_type u32, offset u64)
//! padding to `general.alignment` (default 32), then the data section; tensor offsets are relative to it
//! ```
//! Every count, length and offset is checked against the file size with checked arithmetic before anything is
//! allocated, so a hostile file gets a specific [`Error`] and never a panic, an out-of-bounds read or a huge allocation.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::{Dtype, Storage, Tensor};

use super::blocks::{as_blocks, QuantBlock};
use super::dequant;

/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Keys are at most 65535 bytes (GGUF spec).
const MAX_KEY_LEN: u64 = 65_535;
/// Arrays of arrays nest at most this deep (real files use one level; the cap bounds recursion).
const MAX_ARRAY_DEPTH: usize = 4;
/// Smallest possible metadata entry: key length (8) + value type (4) + a 1-byte value (an empty key is rejected
/// later); bounds `n_kv` by the file size.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: one element type, stored typed (so memory stays proportional to the file).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// The GGUF value type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in the file.
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 4 + 8,
        }
    }
}

impl GgufValue {
    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// Any integer value that is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A float value (f32 widened exactly).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `array[<element type>]`, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufArray::U8(_) => "array[u8]",
            GgufArray::I8(_) => "array[i8]",
            GgufArray::U16(_) => "array[u16]",
            GgufArray::I16(_) => "array[i16]",
            GgufArray::U32(_) => "array[u32]",
            GgufArray::I32(_) => "array[i32]",
            GgufArray::F32(_) => "array[f32]",
            GgufArray::Bool(_) => "array[bool]",
            GgufArray::String(_) => "array[string]",
            GgufArray::Array(_) => "array[array]",
            GgufArray::U64(_) => "array[u64]",
            GgufArray::I64(_) => "array[i64]",
            GgufArray::F64(_) => "array[f64]",
        }
    }
}

/// ggml tensor element types: (id, name, elements per block, bytes per block), as ggml defines them.
/// Every type is listed so sizes of any valid file can be checked; [`dequant`] supports a subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const Q8_K: GgmlType = GgmlType(15);
    pub const BF16: GgmlType = GgmlType(30);

    /// A known ggml type id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().any(|t| t.0 == id).then_some(GgmlType(id))
    }

    fn entry(self) -> &'static (u32, &'static str, u64, u64) {
        // Only `from_id` and the constants above build a GgmlType, so the id is in the table.
        GGML_TYPES.iter().find(|t| t.0 == self.0).unwrap_or(&GGML_TYPES[0])
    }

    pub fn id(self) -> u32 {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().3
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (ggml type {})", self.name(), self.0)
    }
}

/// One tensor's description, validated: its data lies inside the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape (outermost first), as PyTorch / Hugging Face see it: the reverse of `dims`.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim fits in usize: their product was checked against the file size at open.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// An open GGUF file: memory map, metadata and validated tensor infos.
pub struct GgufFile {
    path: PathBuf,
    /// The whole file, memory-mapped (shared with the tensors handed out by [`GgufFile::tensor`]).
    storage: Arc<Storage>,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and validate a GGUF file.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len == 0 {
            return Err(Error::GgufTruncated {
                path: path.to_path_buf(),
                what: "the magic".into(),
                offset: 0,
                needed: 4,
                file_len: 0,
            });
        }
        // SAFETY: the map is read-only and private to this struct; we never hand out references that outlive it.
        // As with every mmap, a concurrent truncation of the file by another process is outside our control
        // (the same contract as memmap2 users and the safetensors loader).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let parsed = parse(path, &mmap)?;
        let storage = Arc::new(Storage::Mmap(mmap));
        Ok(GgufFile {
            path: path.to_path_buf(),
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            by_name: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's raw bytes (bounds were checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        let end = start + info.n_bytes as usize;
        self.storage.bytes().get(start..end).unwrap_or(&[])
    }

    /// A quantised tensor's blocks in place over the memory map (no copy): `[rows * blocks_per_row]` blocks of
    /// `B`, row-major over [`TensorInfo::shape`]. An error naming the tensor when its type is not `B`'s.
    pub fn blocks<B: QuantBlock>(&self, info: &TensorInfo) -> Result<&[B]> {
        let err = |reason: String| Error::GgufTensorInfo {
            path: self.path.clone(),
            name: info.name.clone(),
            reason,
        };
        if info.ggml_type.id() != B::GGML_ID {
            return Err(err(format!("has type {}, not {}", info.ggml_type, B::NAME)));
        }
        as_blocks::<B>(self.tensor_bytes(info))
            .ok_or_else(|| err(format!("{} bytes are not whole {} blocks", info.n_bytes, B::NAME)))
    }

    /// A tensor's values as f32, in row-major order of [`TensorInfo::shape`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            hint: String::new(),
        })?;
        self.dequantize_info(info)
    }

    /// A tensor as a [`Tensor`] (row-major [`TensorInfo::shape`]): F32 / F16 / BF16 data zero-copy over the
    /// memory map (an aligned copy if the file's data is misaligned for the dtype), quantised types dequantised
    /// to an owned f32 tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            hint: String::new(),
        })?;
        let dtype = match info.ggml_type {
            GgmlType::F32 => Some(Dtype::F32),
            GgmlType::F16 => Some(Dtype::F16),
            GgmlType::BF16 => Some(Dtype::BF16),
            _ => None,
        };
        let tensor = match dtype {
            Some(dtype) => self.mapped(info, name, dtype),
            None => Tensor::from_f32(name, info.shape(), &self.dequantize_info(info)?),
        };
        tensor.ok_or_else(|| Error::GgufTensorInfo {
            path: self.path.clone(),
            name: name.to_string(),
            reason: "data does not fit its shape".into(),
        })
    }

    /// The data of `info` as a [`Tensor`] of `dtype` called `name`, zero-copy over the memory map (an aligned copy
    /// if the file's data is misaligned for the dtype); `None` unless its bytes are exactly the shape in `dtype`.
    pub fn mapped(&self, info: &TensorInfo, name: &str, dtype: Dtype) -> Option<Tensor> {
        // In bounds (checked at open); the size against the dtype is checked by `from_storage`.
        let start = usize::try_from(self.data_offset.checked_add(info.offset)?).ok()?;
        let range = start..start.checked_add(usize::try_from(info.n_bytes).ok()?)?;
        Tensor::from_storage(name, dtype, info.shape(), self.storage.clone(), range.clone()).or_else(|| {
            let bytes = self.storage.bytes().get(range)?;
            let owned = Arc::new(Storage::owned_copy(bytes));
            Tensor::from_storage(name, dtype, info.shape(), owned, 0..bytes.len())
        })
    }

    /// [`GgufFile::dequantize`] for an info of this file.
    pub fn dequantize_info(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        if !dequant::is_supported(info.ggml_type) {
            return Err(self.unsupported(info));
        }
        let mut out = vec![0f32; info.numel()];
        dequant::dequantize_into(info.ggml_type, self.tensor_bytes(info), &mut out).map_err(|e| match e {
            dequant::DequantError::Unsupported(_) => self.unsupported(info),
            // Sizes were checked at open; an info of another file could still get here.
            dequant::DequantError::Size { bytes, elems } => Error::GgufTensorInfo {
                path: self.path.clone(),
                name: info.name.clone(),
                reason: format!(
                    "{bytes} bytes of {} do not hold {elems} elements",
                    info.ggml_type.name()
                ),
            },
        })?;
        Ok(out)
    }

    pub(crate) fn unsupported(&self, info: &TensorInfo) -> Error {
        Error::GgufUnsupportedType {
            path: self.path.clone(),
            name: info.name.clone(),
            ggml_type: info.ggml_type.to_string(),
            supported: dequant::SUPPORTED
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&GgufValue> {
        self.metadata.get(key).ok_or_else(|| Error::GgufMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: "a value".into(),
            found: "no such key".into(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &GgufValue) -> Error {
        Error::GgufMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: match found {
                GgufValue::Array(a) => a.type_name().to_string(),
                GgufValue::String(s) => format!("string {s:?}"),
                v => format!("{} {v:?}", v.type_name()),
            },
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    /// A non-negative integer value (any integer type).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// A non-negative integer that fits in usize.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let n = self.get_u64(key)?;
        usize::try_from(n).map_err(|_| self.wrong_type(key, "an integer that fits in usize", &GgufValue::U64(n)))
    }

    /// A float value (f32 or f64).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "a float", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.get(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        let v = self.get(key)?;
        match v {
            GgufValue::Array(GgufArray::String(a)) => Ok(a),
            _ => Err(self.wrong_type(key, "an array of strings", v)),
        }
    }

    /// An array of integers (any integer element type), as i64.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.get(key)?;
        let out = match v {
            GgufValue::Array(GgufArray::I32(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::U32(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::I8(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::U8(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::I16(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::U16(a)) => a.iter().map(|&x| x.into()).collect(),
            GgufValue::Array(GgufArray::I64(a)) => a.clone(),
            _ => return Err(self.wrong_type(key, "an array of integers", v)),
        };
        Ok(out)
    }

    /// An array of floats, as f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.get(key)?;
        match v {
            GgufValue::Array(GgufArray::F32(a)) => Ok(a.clone()),
            GgufValue::Array(GgufArray::F64(a)) => Ok(a.iter().map(|&x| x as f32).collect()),
            _ => Err(self.wrong_type(key, "an array of floats", v)),
        }
    }
}

/// What [`parse`] finds in a file's bytes.
struct Parsed {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::GgufTruncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.buf.len() as u64,
            });
        }
        // n <= remaining, so it fits in usize and pos + n <= buf.len().
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string; the length is checked against the bytes left before reading.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > self.remaining() {
            return Err(Error::GgufCount {
                path: self.path.to_path_buf(),
                what: format!("the length of {} (at offset {})", what(), self.pos - 8),
                found: len,
                max: self.remaining(),
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::GgufInvalid {
            path: self.path.to_path_buf(),
            what: what(),
            reason: format!("not valid UTF-8 ({e})"),
        })
    }

    /// Check that `count` items of at least `min_size` bytes each can fit in what is left of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let max = self.remaining() / min_size;
        if count > max {
            return Err(Error::GgufCount {
                path: self.path.to_path_buf(),
                what: what(),
                found: count,
                max,
            });
        }
        // count <= remaining bytes, which fit in usize.
        Ok(count as usize)
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType> {
        let id = self.u32(&|| format!("the value type of {}", what()))?;
        ValueType::from_id(id).ok_or_else(|| Error::GgufInvalid {
            path: self.path.to_path_buf(),
            what: what(),
            reason: format!("unknown value type {id} (known: 0..=12)"),
        })
    }

    fn value(&mut self, ty: ValueType, depth: usize, what: &dyn Fn() -> String) -> Result<GgufValue> {
        use ValueType as T;
        Ok(match ty {
            T::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            T::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            T::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            T::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            T::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            T::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            T::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            T::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            T::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            T::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            T::Bool => GgufValue::Bool(self.bool(what)?),
            T::String => GgufValue::String(self.string(what)?),
            T::Array => GgufValue::Array(self.array_value(depth, what)?),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Result<bool> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::GgufInvalid {
                path: self.path.to_path_buf(),
                what: what(),
                reason: format!("bool byte is {b}, expected 0 or 1"),
            }),
        }
    }

    /// An array: element type u32, count u64, elements.
    fn array_value(&mut self, depth: usize, what: &dyn Fn() -> String) -> Result<GgufArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::GgufInvalid {
                path: self.path.to_path_buf(),
                what: what(),
                reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            });
        }
        let elem = self.value_type(&|| format!("the elements of {}", what()))?;
        let count = self.u64(&|| format!("the element count of {}", what()))?;
        let n = self.check_count(count, elem.min_size(), &|| format!("the element count of {}", what()))?;
        let item = |i: usize| move || format!("{}[{i}]", what());
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                // n * SIZE <= remaining: checked by check_count with min_size == SIZE.
                let bytes = self.take((n * SIZE) as u64, what)?;
                GgufArray::$variant(
                    bytes
                        .chunks_exact(SIZE)
                        .map(|c| {
                            let mut a = [0u8; SIZE];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => fixed!(U8, u8),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => GgufArray::Bool((0..n).map(|i| self.bool(&item(i))).collect::<Result<_>>()?),
            ValueType::String => GgufArray::String((0..n).map(|i| self.string(&item(i))).collect::<Result<_>>()?),
            ValueType::Array => GgufArray::Array(
                (0..n)
                    .map(|i| self.array_value(depth + 1, &item(i)))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// Parse and validate the header, metadata and tensor infos of a GGUF file held in `buf`.
fn parse(path: &Path, buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { path, buf, pos: 0 };
    let err_path = || path.to_path_buf();

    // Header: magic, version, counts.
    let magic: [u8; 4] = c.array(&|| "the magic".into())?;
    if &magic != b"GGUF" {
        return Err(Error::GgufBadMagic {
            path: err_path(),
            found: magic,
        });
    }
    let version = c.u32(&|| "the version".into())?;
    if (2..=3).contains(&version.swap_bytes()) {
        return Err(Error::GgufInvalid {
            path: err_path(),
            what: "the version".into(),
            reason: format!(
                "big-endian GGUF v{} is not supported (only little-endian)",
                version.swap_bytes()
            ),
        });
    }
    if !(2..=3).contains(&version) {
        return Err(Error::GgufVersion {
            path: err_path(),
            found: version,
        });
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;
    let n_kv = c.check_count(n_kv, MIN_KV_BYTES, &|| "the metadata key/value count".into())?;

    // Metadata key/values.
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        if key.is_empty() || key.len() as u64 > MAX_KEY_LEN {
            return Err(Error::GgufInvalid {
                path: err_path(),
                what: format!("metadata key #{i}"),
                reason: format!("key length {} is not in 1..={MAX_KEY_LEN}", key.len()),
            });
        }
        let what = || format!("metadata key {key:?}");
        let ty = c.value_type(&what)?;
        let value = c.value(ty, 0, &what)?;
        if metadata.contains_key(&key) {
            return Err(Error::GgufInvalid {
                path: err_path(),
                what: what(),
                reason: "duplicate key".into(),
            });
        }
        metadata.insert(key, value);
    }

    // Alignment of the data section and of every tensor's data.
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(Error::GgufMetadata {
                path: err_path(),
                key: "general.alignment".into(),
                expected: "a u32 power of two".into(),
                found: format!("{} {v:?}", v.type_name()),
            })
        }
    };

    // Tensor infos.
    let n_tensors = c.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, &|| "the tensor count".into())?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
    let mut seen = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"))?;
        let what = || format!("tensor {name:?}");
        let info_err = |reason: String| Error::GgufTensorInfo {
            path: err_path(),
            name: name.clone(),
            reason,
        };
        let n_dims = c.u32(&what)?;
        if n_dims as usize > MAX_DIMS {
            return Err(info_err(format!("has {n_dims} dimensions, at most {MAX_DIMS} allowed")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what)?);
        }
        let type_id = c.u32(&what)?;
        let offset = c.u64(&what)?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| Error::GgufUnsupportedType {
            path: err_path(),
            name: name.clone(),
            ggml_type: format!("unknown ggml type {type_id}"),
            supported: dequant::SUPPORTED
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        // Element count and byte size, with overflow checks (the bounds check below caps them by the file size).
        let numel = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| info_err(format!("dims {dims:?} overflow the element count")))?;
        let block = ggml_type.block_size();
        if !dims.first().copied().unwrap_or(1).is_multiple_of(block) {
            return Err(info_err(format!(
                "innermost dim {} is not a multiple of the {} block size {block}",
                dims.first().copied().unwrap_or(1),
                ggml_type.name()
            )));
        }
        let n_bytes = (numel / block)
            .checked_mul(ggml_type.type_size())
            .ok_or_else(|| info_err(format!("dims {dims:?} overflow the byte size")))?;
        if seen.insert(name.clone(), i).is_some() {
            return Err(info_err("appears twice".into()));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    // Data section: aligned after the infos; every tensor aligned and inside it.
    let file_len = buf.len() as u64;
    let pos = c.pos as u64;
    let data_offset = pos.div_ceil(alignment) * alignment; // pos <= file_len, so no overflow
    if data_offset > file_len && !tensors.is_empty() {
        return Err(Error::GgufTruncated {
            path: err_path(),
            what: "the padding before the data section".into(),
            offset: pos,
            needed: data_offset - pos,
            file_len,
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(Error::GgufMisaligned {
                path: err_path(),
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset.checked_add(t.n_bytes).filter(|&end| end <= data_len).is_none() {
            return Err(Error::GgufTensorBounds {
                path: err_path(),
                name: t.name.clone(),
                offset: t.offset,
                size: t.n_bytes,
                data_len,
            });
        }
        // numel <= n_bytes * block_size / type_size and n_bytes <= file size, so numel fits in usize on 64-bit;
        // on 32-bit targets check it explicitly.
        if usize::try_from(t.dims.iter().product::<u64>()).is_err() {
            return Err(Error::GgufTensorInfo {
                path: err_path(),
                name: t.name.clone(),
                reason: "element count does not fit in usize".into(),
            });
        }
    }
    check_packing(path, &tensors, alignment, data_len)?;

    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Tensor data is packed as llama.cpp writes (and requires) it: in offset order, the first at 0, each next one at
/// the end of the one before rounded up to the alignment, and the file ending within one alignment of the last.
/// A size implied by a type and dims that do not match the data (a Q4_K tensor holding Q6_K-sized data, dims that
/// claim more or fewer rows) shows as a gap or an overlap, named here. Every tensor is inside the data section.
fn check_packing(path: &Path, tensors: &[TensorInfo], alignment: u64, data_len: u64) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    let size_of = |t: &TensorInfo| {
        format!(
            "{} with dims {:?} is {} bytes ({} blocks of {} bytes)",
            t.ggml_type.name(),
            t.dims,
            t.n_bytes,
            t.n_bytes / t.ggml_type.type_size(),
            t.ggml_type.type_size()
        )
    };
    let err = |name: &str, reason: String| Error::GgufTensorInfo {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let mut prev: Option<&TensorInfo> = None;
    // Offsets and sizes are inside the data section (checked before), so these sums do not overflow.
    let padded_end = |t: &TensorInfo| (t.offset + t.n_bytes).div_ceil(alignment) * alignment;
    for t in order {
        let expected = prev.map_or(0, padded_end);
        match prev {
            None if t.offset != 0 => {
                return Err(err(
                    &t.name,
                    format!("the first tensor's data starts at offset {}, expected 0", t.offset),
                ))
            }
            Some(p) if t.offset < expected => {
                return Err(err(
                    &p.name,
                    format!(
                        "{}, so it overlaps tensor {:?} at offset {}: the type or dims do not match the data",
                        size_of(p),
                        t.name,
                        t.offset
                    ),
                ))
            }
            Some(p) if t.offset > expected => {
                return Err(err(
                    &p.name,
                    format!(
                        "{}, but the next tensor {:?} starts {} bytes after its start (expected {expected} with \
                         alignment {alignment}): the type or dims do not match the data",
                        size_of(p),
                        t.name,
                        t.offset - p.offset
                    ),
                ))
            }
            _ => {}
        }
        prev = Some(t);
    }
    if let Some(last) = prev {
        let end = last.offset + last.n_bytes;
        if data_len - end >= alignment {
            return Err(err(
                &last.name,
                format!(
                    "{}, but {} bytes of data follow it to the end of the file (at most {} of padding expected): \
                     the type or dims do not match the data",
                    size_of(last),
                    data_len - end,
                    alignment - 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_type_table_matches_ids() {
        assert_eq!(GgmlType::Q4_1.type_size(), 20);
        assert_eq!(GgmlType::Q8_0.block_size(), 32);
        assert_eq!(GgmlType::BF16.name(), "BF16");
        assert!(GgmlType::from_id(4).is_none()); // removed Q4_2
    }
}
