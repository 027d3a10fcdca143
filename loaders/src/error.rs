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
}
