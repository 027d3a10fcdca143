//! A GGUF file run in place: the Hugging Face model it holds ([`loaders::gguf::HfModel`], the importer's own
//! mapping: config from the metadata, tensor names, llama's q/k row order, tokenizer), its tensors read from the
//! memory map.
//!
//! F32 / F16 / BF16 tensors are zero-copy views; tensors of a block type the kernels run
//! ([`kernels::BlockType::from_ggml_type`]) are handed to the layers as GGUF blocks ([`loaders::Dtype::Blocks`]),
//! which pack them as they are (q/k rows moved whole, never dequantized). Any other type (Q5_0, Q5_1, the
//! K-quants until their kernels exist) is dequantized to f32 with the loaders' exact dequantizers, and listed in
//! [`GgufSource::dequantized`] ([`crate::ModelInfo::dequantized`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use loaders::config::{GenerationConfig, RawConfig};
use loaders::gguf::{GgmlType, GgufFile, HfModel, HfTensor};
use loaders::tokenizer::{self, HfTokenizer, Tokenizer};
use loaders::Tensor;

use crate::layers::TensorSource;
use crate::Result;

/// Whether a path names a GGUF file (a file whose first four bytes are `GGUF`).
pub(crate) fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

/// What a GGUF file gives a load besides its tensors ([`GgufSource`]): config, generation config, tokenizer and
/// chat template.
pub(crate) struct GgufModel {
    pub(crate) config: RawConfig,
    pub(crate) generation: GenerationConfig,
    pub(crate) tokenizer: Box<dyn Tokenizer>,
    pub(crate) chat_template: Option<String>,
}

impl GgufModel {
    /// Open and check `path` (every check of the importer: architecture, metadata, tensor names and shapes).
    pub(crate) fn open(path: &Path) -> Result<(Self, GgufSource)> {
        let file = GgufFile::open(path)?;
        let hf = HfModel::read(&file)?;
        let config_json = serde_json::Value::Object(hf.config).to_string();
        let config = RawConfig::from_json(path, &config_json)?;
        let generation = GenerationConfig::from_json(path, &hf.generation.to_string())?;
        let tok_config = hf.tokenizer.tokenizer_config.as_object();
        let tokenizer: Box<dyn Tokenizer> = Box::new(HfTokenizer::from_values(
            path,
            &hf.tokenizer.tokenizer_json,
            tok_config,
        )?);
        let chat_template = match tok_config {
            Some(c) => tokenizer::chat_template_of(path, c)?,
            None => None,
        };
        let by_name = hf.tensors.into_iter().map(|t| (t.hf_name.clone(), t)).collect();
        let source = GgufSource {
            file,
            by_name,
            dequantized: Mutex::new(Vec::new()),
        };
        Ok((
            Self {
                config,
                generation,
                tokenizer,
                chat_template,
            },
            source,
        ))
    }
}

/// The tensors of a GGUF file under their Hugging Face names.
pub(crate) struct GgufSource {
    file: GgufFile,
    by_name: HashMap<String, HfTensor>,
    /// GGUF tensors no kernel runs as stored, dequantized to f32 at load: `name (TYPE)`.
    dequantized: Mutex<Vec<String>>,
}

impl GgufSource {
    /// The GGUF tensors read so far that were dequantized to f32 (no kernel runs their type), `name (TYPE)`.
    pub(crate) fn dequantized(&self) -> Vec<String> {
        self.dequantized.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// A type read in place: the plain floats, and the block types the kernels run.
fn runs_as_stored(t: GgmlType) -> bool {
    matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || kernels::BlockType::from_ggml_type(t.id()).is_some()
}

impl TensorSource for GgufSource {
    fn get(&self, name: &str) -> loaders::Result<Tensor> {
        let t = self.by_name.get(name).ok_or_else(|| loaders::Error::MissingTensor {
            path: self.file.path().to_path_buf(),
            name: name.to_string(),
            hint: " (no GGUF tensor maps to this Hugging Face name)".into(),
        })?;
        let ty = t.info.ggml_type;
        if !runs_as_stored(ty) {
            if let Ok(mut d) = self.dequantized.lock() {
                d.push(format!("{} ({})", t.info.name, ty.name()));
            }
        }
        t.tensor(&self.file, &|ty| kernels::BlockType::from_ggml_type(ty.id()).is_some())
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn origin(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }
}
