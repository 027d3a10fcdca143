//! The one error type of the `loaders` crate.

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
}
