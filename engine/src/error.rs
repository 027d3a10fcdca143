//! The one error type of the engine.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Load(#[from] loaders::Error),
    #[error(transparent)]
    Isa(#[from] kernels::IsaError),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("KV cache full: {needed} positions needed, capacity is {capacity}")]
    CacheFull { needed: usize, capacity: usize },
    #[error("{}: tensor {tensor:?} holds {value} at element {index} (weights must be finite)", path.display())]
    NonFinite {
        path: std::path::PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("{what}: {bytes} bytes needed, the memory limit is {limit} bytes")]
    CacheMemory { bytes: usize, limit: usize, what: String },
}
