//! The one error type of the engine.
//!
//! Which variant says whose problem it is: the files ([`Error::Load`], [`Error::InvalidConfig`],
//! [`Error::NonFinite`]), this engine ([`Error::Unsupported`]), the call ([`Error::Request`]) or memory
//! ([`Error::CacheFull`], [`Error::CacheMemory`]). Every message names the file, tensor, field or argument, and
//! what was expected against what was found.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ```
/// use qkv::{Error, Model};
///
/// match Model::load("/nonexistent/model") {
///     Err(Error::Load(e)) => assert!(e.to_string().contains("/nonexistent/model")),
///     other => panic!("expected a load error naming the directory, got {other:?}"),
/// }
/// let gpt2 = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let wrong = gpt2.translate_ids(&[vec![1]], &Default::default()).unwrap_err();
/// assert!(matches!(wrong, Error::Request(_)) && wrong.to_string().contains("gpt2"));
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file could not be read or is malformed (the loaders' error, which names the file).
    #[error(transparent)]
    Load(#[from] loaders::Error),
    /// `QKV_ISA` or a forced ISA this CPU does not have.
    #[error(transparent)]
    Isa(#[from] kernels::IsaError),
    /// A config file parses but its values do not fit together (or do not fit the weights or the tokenizer).
    #[error("{}: {field}: {reason}", file.display())]
    InvalidConfig {
        file: PathBuf,
        field: String,
        reason: String,
    },
    /// Something a model asks for that this engine does not run: an architecture, an activation, a RoPE
    /// scaling, a position encoding. `what` names it and where it comes from.
    #[error("not supported: {what}")]
    Unsupported { what: String },
    /// A bad argument of a call: shapes, token ids, search options, or a call the model's architecture does not
    /// offer (generate on a translation model).
    #[error("invalid request: {0}")]
    Request(String),
    #[error("KV cache full: {needed} positions needed, capacity is {capacity}")]
    CacheFull { needed: usize, capacity: usize },
    #[error("{}: tensor {tensor:?} holds {value} at element {index} (weights must be finite)", path.display())]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("{what}: {bytes} bytes needed, the memory limit is {limit} bytes")]
    CacheMemory { bytes: usize, limit: usize, what: String },
}
