//! The one error type of the `loaders` crate.
//!
//! Every variant names the file (and the tensor or field) and says what was expected versus
//! what was found, so a user can tell a truncated download from a wrong model from a bug.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: tensor {name:?} not found{hint}")]
    MissingTensor { path: PathBuf, name: String, hint: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has dtype {found}, expected {expected}")]
    TensorDtype {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },

    // ---- safetensors files (loaders/src/safetensors.rs) ----
    #[error("{path}: the file is empty (0 bytes), expected a safetensors file")]
    EmptyFile { path: PathBuf },
    #[error("{path}: the file is truncated: it holds {found} bytes, its header describes {expected}")]
    Truncated { path: PathBuf, expected: u64, found: u64 },
    #[error("{path}: header length {header_len} is beyond the file (at most {max} bytes can be a header here)")]
    HeaderLength { path: PathBuf, header_len: u64, max: u64 },
    #[error("{path}: invalid safetensors header: {reason}")]
    InvalidHeader { path: PathBuf, reason: String },
    #[error("{path}: tensor {name:?} has unknown dtype {dtype:?}")]
    UnknownDtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor {name:?} has dtype {dtype}, which qkv does not load (supported: F32, F16, BF16, I8, U8)")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor {name:?} appears more than once")]
    DuplicateTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} has data_offsets [{begin}, {end}]: begin is after end")]
    InvalidOffsets {
        path: PathBuf,
        name: String,
        begin: u64,
        end: u64,
    },
    #[error(
        "{path}: tensor {name:?} has data_offsets [{begin}, {end}], out of bounds of the {data_len}-byte data section"
    )]
    TensorOutOfBounds {
        path: PathBuf,
        name: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("{path}: tensors {first:?} (ends at {first_end}) and {second:?} (begins at {second_begin}) overlap")]
    TensorOverlap {
        path: PathBuf,
        first: String,
        second: String,
        first_end: u64,
        second_begin: u64,
    },
    #[error("{path}: {gap} unused bytes in the data section between {after} and tensor {before:?} (at [{begin}, {end}])", gap = end - begin)]
    TensorGap {
        path: PathBuf,
        /// The tensor before the gap, or `<start of data>`.
        after: String,
        before: String,
        begin: u64,
        end: u64,
    },
    #[error("{path}: the data section is {data_len} bytes but its tensors end at {data_end}: trailing bytes")]
    TrailingData {
        path: PathBuf,
        data_end: u64,
        data_len: u64,
    },
    #[error(
        "{path}: tensor {name:?} ({dtype} {shape:?}) needs {expected} bytes but data_offsets span {found} \
         (shape x dtype size != byte length)"
    )]
    TensorSize {
        path: PathBuf,
        name: String,
        dtype: String,
        shape: Vec<usize>,
        expected: u64,
        found: u64,
    },
    #[error("{path}: tensor {name:?} has shape {shape:?}, whose byte size overflows")]
    ShapeOverflow {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
    },
    #[error("{dir}: no weights found: expected model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("{path}: invalid shard index: {reason}")]
    InvalidIndex { path: PathBuf, reason: String },
    #[error("{path}: tensor {name:?} is listed in shard {expected:?} but {found}")]
    IndexMismatch {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("{path}: cannot write safetensors: {reason}")]
    Write { path: PathBuf, reason: String },

    // ---- configs (loaders/src/config.rs) ----
    #[error("{path}: {reason}")]
    ConfigJson { path: PathBuf, reason: String },
    #[error("{path}: unknown model_type {found:?} (architectures {architectures:?}); qkv reads: {known}")]
    UnknownModelType {
        path: PathBuf,
        found: Option<String>,
        architectures: Vec<String>,
        known: &'static str,
    },
    #[error("{path}: field `{field}`: {reason}")]
    InvalidConfig {
        path: PathBuf,
        field: String,
        reason: String,
    },
    // ---- GGUF (loaders::gguf) ----
    #[error("{path}: not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    GgufBadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path}: GGUF version {found} is not supported (expected 2 or 3)")]
    GgufVersion { path: PathBuf, found: u32 },
    #[error("{path}: truncated while reading {what}: needs {needed} bytes at offset {offset}, file has {file_len}")]
    GgufTruncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },
    #[error("{path}: {what} is {found}, more than the file can hold (at most {max})")]
    GgufCount {
        path: PathBuf,
        what: String,
        found: u64,
        max: u64,
    },
    #[error("{path}: {what}: {reason}")]
    GgufInvalid {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("{path}: tensor {name:?}: {reason}")]
    GgufTensorInfo {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error(
        "{path}: tensor {name:?} data [{offset}, {offset}+{size}) lies outside the data section of {data_len} bytes"
    )]
    GgufTensorBounds {
        path: PathBuf,
        name: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    #[error("{path}: tensor {name:?} data offset {offset} is not a multiple of the alignment {alignment}")]
    GgufMisaligned {
        path: PathBuf,
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("{path}: tensor {name:?} has type {ggml_type}, which qkv cannot dequantise (supported: {supported})")]
    GgufUnsupportedType {
        path: PathBuf,
        name: String,
        ggml_type: String,
        supported: String,
    },
    #[error("{path}: metadata key {key:?}: expected {expected}, found {found}")]
    GgufMetadata {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
    #[error("{path}: cannot import: {reason}")]
    GgufImport { path: PathBuf, reason: String },
    /// A tokenizer file is malformed: truncated, a bad field, an inconsistent vocabulary.
    #[error("{path}: {message}")]
    TokenizerFile { path: PathBuf, message: String },
    /// A tokenizer feature these loaders do not implement.
    #[error("{path}: unsupported tokenizer: {message}")]
    TokenizerUnsupported { path: PathBuf, message: String },
    /// A directory holds none of the tokenizer files `load_tokenizer` knows.
    #[error("{dir}: no tokenizer found (looked for {looked_for})")]
    NoTokenizer { dir: PathBuf, looked_for: String },
    /// Encoding or decoding failed inside the `tokenizers` crate.
    #[error("{path}: tokenizer failed: {message}")]
    Tokenize { path: PathBuf, message: String },
    /// `decode` was given an id outside the vocabulary.
    #[error("{path}: token id {id} is out of range (the vocabulary has {vocab_size} ids)")]
    TokenIdOutOfRange { path: PathBuf, id: u32, vocab_size: usize },
    /// `decode` was given an id below the vocabulary size that names no token: the file's ids have a gap there.
    #[error("{path}: token id {id} names no token (the vocabulary's ids run to {vocab_size} with gaps)")]
    TokenIdUnassigned { path: PathBuf, id: u32, vocab_size: usize },
}
