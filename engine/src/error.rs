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
}
