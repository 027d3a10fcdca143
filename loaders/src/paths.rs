//! Where the repository keeps fixtures, and where the shared models live.

use std::path::{Path, PathBuf};

/// The repository root (the workspace this crate was built in).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `tools/fixtures/<name>`: small reference fixtures committed with the code.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tools").join("fixtures").join(name)
}

/// The shared models directory: `$QKV_SHARED_MODELS`, else `../shared/models` beside the repository.
pub fn shared_models_dir() -> PathBuf {
    match std::env::var_os("QKV_SHARED_MODELS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("..").join("shared").join("models"),
    }
}

/// `../shared/models/<name>`, or a message that says it is missing and how to get it.
pub fn shared_model(name: &str) -> Result<PathBuf, String> {
    let p = shared_models_dir().join(name);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(format!(
            "shared model {name:?} is missing: expected it at {} (the repository must sit beside \
             `shared/`, or set QKV_SHARED_MODELS to the models directory)",
            p.display()
        ))
    }
}

/// Copy the regular files of model directory `src` (not subdirectories) into `dst`: tests that damage a model
/// work on such a copy.
pub fn copy_files(src: &Path, dst: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name()))?;
        }
    }
    Ok(())
}
