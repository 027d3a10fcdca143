//! Import a GGUF (the architectures of [`super::arch`]) into a Hugging Face model directory.
//!
//! Writes `config.json` (the architecture's transformers class), `generation_config.json`, `model.safetensors` (HF tensor names,
//! f32 or bf16), `tokenizer.json` and `tokenizer_config.json` (with the chat template). Tensors are dequantised
//! one at a time while the safetensors file is written, so peak memory is about one tensor, not the model.
//!
//! llama.cpp's converter permutes the rows of `attn_q` / `attn_k` so that RoPE rotates adjacent pairs
//! (`x[2i], x[2i+1]`); Hugging Face's Llama rotates halves (`x[i], x[i + head_dim/2]`). Per head, GGUF row
//! `2i + s` holds HF row `s * head_dim/2 + i` (s in {0, 1}); the import moves rows back.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use serde_json::json;

use super::arch::{self, Arch, RopeFactors, Transform};
use super::dequant;
use super::reader::{GgmlType, GgufFile, TensorInfo};
use super::tokenizer;
use crate::config::{GenerationConfig, LlamaConfig, RawConfig};
use crate::error::{Error, Result};
use crate::tensor::{Dtype, Tensor};

/// How to import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Stored dtype of the weights: F32 (exact dequantised values) or BF16 (rounded to nearest even).
    pub dtype: Dtype,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { dtype: Dtype::F32 }
    }
}

/// The fewest tensors a block has in any architecture read here (Phi-3's: two norms, fused q|k|v, o, fused
/// gate|up, down).
const TENSORS_PER_BLOCK: usize = 6;

/// The hyper-parameters every architecture has, read from `{arch}.*` metadata (llama.cpp's key names).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
}

fn import_err(gguf: &GgufFile, reason: String) -> Error {
    Error::GgufImport {
        path: gguf.path().to_path_buf(),
        reason,
    }
}

fn meta_err(gguf: &GgufFile, key: &str, expected: String, found: String) -> Error {
    Error::GgufMetadata {
        path: gguf.path().to_path_buf(),
        key: key.to_string(),
        expected,
        found,
    }
}

impl LlamaParams {
    /// Read and check the hyper-parameters (`arch` is the `general.architecture` prefix of the keys).
    pub fn read(gguf: &GgufFile, arch: &str) -> Result<LlamaParams> {
        let key = |k: &str| format!("{arch}.{k}");
        let has = |k: &str| gguf.metadata().contains_key(&key(k));
        let positive = |k: &str| -> Result<usize> {
            let v = gguf.get_usize(&key(k))?;
            if v == 0 {
                return Err(meta_err(gguf, &key(k), "a positive integer".into(), "0".into()));
            }
            Ok(v)
        };
        let hidden_size = positive("embedding_length")?;
        let n_heads = positive("attention.head_count")?;
        let n_kv_heads = if has("attention.head_count_kv") {
            positive("attention.head_count_kv")?
        } else {
            n_heads
        };
        if !n_heads.is_multiple_of(n_kv_heads) {
            return Err(meta_err(
                gguf,
                &key("attention.head_count_kv"),
                format!("a divisor of the head count {n_heads}"),
                n_kv_heads.to_string(),
            ));
        }
        // The head size: key_length, else the RoPE dimension count (equal to it for llama), else hidden / heads.
        let head_dim_key = ["attention.key_length", "rope.dimension_count"]
            .into_iter()
            .find(|k| has(k));
        let head_dim = match head_dim_key {
            Some(k) => positive(k)?,
            None => hidden_size / n_heads,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(meta_err(
                gguf,
                &key(head_dim_key.unwrap_or("embedding_length")),
                "an even head size".into(),
                head_dim.to_string(),
            ));
        }
        // A partial rotary embedding (fewer rotated dimensions than the head size) is not run here.
        if has("rope.dimension_count") && head_dim_key == Some("attention.key_length") {
            let rot = gguf.get_usize(&key("rope.dimension_count"))?;
            if rot != head_dim {
                return Err(meta_err(
                    gguf,
                    &key("rope.dimension_count"),
                    format!("the head size {head_dim} (partial rotary embeddings are not supported)"),
                    rot.to_string(),
                ));
            }
        }
        let rope_theta = if has("rope.freq_base") {
            gguf.get_f64(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        let rms_norm_eps = gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
        // config.json holds rms_norm_eps as f32: it must stay finite and positive there too.
        for (k, v) in [
            ("rope.freq_base", rope_theta),
            ("attention.layer_norm_rms_epsilon", rms_norm_eps),
        ] {
            if !(v.is_finite() && v > 0.0 && (v as f32).is_finite() && v as f32 > 0.0) {
                return Err(meta_err(
                    gguf,
                    &key(k),
                    "a finite positive float (as f32)".into(),
                    v.to_string(),
                ));
            }
        }
        // The vocabulary size is the embedding's row count; a `vocab_size` key must agree with it.
        let embd = gguf
            .tensor_info("token_embd.weight")
            .ok_or_else(|| import_err(gguf, "no tensor \"token_embd.weight\"".into()))?;
        let vocab_size = embd.shape().first().copied().unwrap_or(0);
        if has("vocab_size") {
            let v = gguf.get_usize(&key("vocab_size"))?;
            if v != vocab_size {
                return Err(meta_err(
                    gguf,
                    &key("vocab_size"),
                    format!("{vocab_size} (the rows of token_embd.weight)"),
                    v.to_string(),
                ));
            }
        }
        // Sizes that index or allocate: q/k/v widths must not overflow, and the block count is bounded by the
        // tensors present (each block has TENSORS_PER_BLOCK) before anything is built per block.
        if n_heads.checked_mul(head_dim).is_none() {
            return Err(meta_err(
                gguf,
                &key("attention.head_count"),
                format!("a head count whose product with the head size {head_dim} fits in usize"),
                n_heads.to_string(),
            ));
        }
        let n_layers = positive("block_count")?;
        let max_layers = gguf.tensor_infos().len() / TENSORS_PER_BLOCK;
        if n_layers > max_layers {
            return Err(meta_err(
                gguf,
                &key("block_count"),
                format!(
                    "at most {max_layers} ({} tensors, {TENSORS_PER_BLOCK} per block)",
                    gguf.tensor_infos().len()
                ),
                n_layers.to_string(),
            ));
        }
        for (k, n) in [
            ("attention.head_count", n_heads),
            ("attention.head_count_kv", n_kv_heads),
        ] {
            if n.checked_mul(head_dim).is_none() {
                return Err(meta_err(
                    gguf,
                    &key(k),
                    format!("heads x head size {head_dim} to fit in usize"),
                    n.to_string(),
                ));
            }
        }
        Ok(LlamaParams {
            hidden_size,
            intermediate_size: positive("feed_forward_length")?,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: positive("context_length")?,
            vocab_size,
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
        })
    }
}

/// One Hugging Face tensor of a GGUF file: the GGUF tensor it comes from and what to do with it.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    pub hf_name: String,
    pub info: TensorInfo,
    pub transform: Transform,
}

/// Map every GGUF tensor of `arch` to its HF name, checking shapes; every GGUF tensor must be used (by the
/// weights, or by the config: [`arch::config_tensors`]).
fn plan(gguf: &GgufFile, a: Arch, p: &LlamaParams) -> Result<Vec<HfTensor>> {
    let wanted = arch::tensors(gguf, a, p);
    let mut out = Vec::with_capacity(wanted.len());
    for arch::Mapping {
        gguf: g,
        hf: h,
        shape,
        transform,
    } in wanted
    {
        let info = gguf.tensor_info(&g).ok_or_else(|| Error::MissingTensor {
            path: gguf.path().to_path_buf(),
            name: g.clone(),
            hint: format!(" (needed for {h})"),
        })?;
        if info.shape() != shape {
            return Err(Error::TensorShape {
                path: gguf.path().to_path_buf(),
                name: g,
                expected: shape,
                found: info.shape(),
            });
        }
        if !dequant::is_supported(info.ggml_type) {
            return Err(gguf.unsupported(info));
        }
        out.push(HfTensor {
            hf_name: h,
            info: info.clone(),
            transform,
        });
    }
    let mut used: HashSet<&str> = out.iter().map(|t| t.info.name.as_str()).collect();
    used.extend(arch::config_tensors(a));
    let unused: Vec<&str> = gguf
        .tensor_infos()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !used.contains(n))
        .collect();
    if !unused.is_empty() {
        return Err(import_err(
            gguf,
            format!("tensors with no Hugging Face {} counterpart: {unused:?}", a.name()),
        ));
    }
    Ok(out)
}

/// Undo llama.cpp's q/k permutation: `src` is `[n_heads * head_dim, row_len]` in GGUF row order. Rows move whole,
/// so `src` may be values (`row_len` of them a row) or the bytes of quantized rows (`row_len` bytes of blocks).
pub fn unpermute_rows<T: Copy + Default>(src: &[T], n_heads: usize, row_len: usize) -> Vec<T> {
    let n_rows = src.len() / row_len.max(1);
    let head_dim = n_rows / n_heads.max(1);
    let half = head_dim / 2;
    let mut dst = vec![T::default(); src.len()];
    for h in 0..n_heads {
        for s in 0..2 {
            for i in 0..half {
                let from = h * head_dim + 2 * i + s; // GGUF row
                let to = h * head_dim + s * half + i; // HF row
                dst[to * row_len..(to + 1) * row_len].copy_from_slice(&src[from * row_len..(from + 1) * row_len]);
            }
        }
    }
    dst
}

impl HfTensor {
    /// The Hugging Face tensor's values, dequantised to f32 (row-major over its shape) and transformed.
    pub fn values(&self, gguf: &GgufFile) -> Result<Vec<f32>> {
        let mut values = gguf.dequantize_info(&self.info)?; // [rows, row_len]
        match self.transform {
            Transform::Copy => {}
            Transform::Unpermute(n_heads) => {
                let row_len = self.info.shape().get(1).copied().unwrap_or(1);
                values = unpermute_rows(&values, n_heads, row_len);
            }
            Transform::MinusOne => values.iter_mut().for_each(|v| *v -= 1.0),
        }
        Ok(values)
    }

    /// The Hugging Face tensor (named `hf_name`) as a [`Tensor`]: F32 / F16 / BF16 data, and the block types
    /// `keep_blocks` accepts ([`Dtype::Blocks`]), as stored, zero-copy over the memory map (q/k rows
    /// un-permuted: a copy that moves whole rows, blocks included, never dequantising); any other type, or a
    /// transform that changes values, dequantised to f32 ([`HfTensor::values`]).
    pub fn tensor(&self, gguf: &GgufFile, keep_blocks: &dyn Fn(GgmlType) -> bool) -> Result<Tensor> {
        let ty = self.info.ggml_type;
        let stored = match ty {
            GgmlType::F32 => Some(Dtype::F32),
            GgmlType::F16 => Some(Dtype::F16),
            GgmlType::BF16 => Some(Dtype::BF16),
            t if keep_blocks(t) => Some(Dtype::Blocks(t)),
            _ => None,
        };
        let (name, shape) = (self.hf_name.as_str(), self.info.shape());
        let tensor = match (stored, self.transform) {
            (Some(dtype), Transform::Copy) => gguf.mapped(&self.info, name, dtype),
            (Some(dtype), Transform::Unpermute(n_heads)) => {
                let bytes = gguf.tensor_bytes(&self.info);
                let rows = shape.first().copied().unwrap_or(1).max(1);
                let moved = unpermute_rows(bytes, n_heads, bytes.len() / rows);
                Tensor::from_bytes(name, dtype, shape, &moved)
            }
            _ => Tensor::from_f32(name, shape, &self.values(gguf)?),
        };
        tensor.ok_or_else(|| Error::GgufTensorInfo {
            path: gguf.path().to_path_buf(),
            name: self.info.name.clone(),
            reason: format!(
                "its {} bytes do not hold {:?} of {ty}",
                self.info.n_bytes,
                self.info.shape()
            ),
        })
    }
}

/// A GGUF file read as the Hugging Face model it holds: `config.json` (without `torch_dtype`),
/// `generation_config.json`, the tokenizer files and every weight under its Hugging Face name. The importer
/// writes it out; the engine runs it in place.
pub struct HfModel {
    pub config: serde_json::Map<String, serde_json::Value>,
    pub generation: serde_json::Value,
    pub tokenizer: tokenizer::TokenizerFiles,
    pub tensors: Vec<HfTensor>,
}

impl HfModel {
    /// Read `gguf` (an architecture of [`arch::ARCHS`]): every check the import makes, nothing written.
    pub fn read(gguf: &GgufFile) -> Result<HfModel> {
        let a = Arch::of(gguf)?;
        let p = LlamaParams::read(gguf, a.name())?;
        let factors = rope_factors(gguf, a, &p)?;
        let mut config = arch::config(gguf, a, &p, factors)?;
        let tensors = plan(gguf, a, &p)?;
        let special = |key: &str| -> Result<Option<u64>> {
            match gguf.metadata().get(key) {
                None => Ok(None),
                Some(_) => gguf.get_u64(key).map(Some),
            }
        };
        let bos = special("tokenizer.ggml.bos_token_id")?;
        let eos = special("tokenizer.ggml.eos_token_id")?;
        let pad = special("tokenizer.ggml.padding_token_id")?;
        for (k, v) in [("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)] {
            config.insert(k.into(), json!(v));
        }
        let mut gen = serde_json::Map::new();
        gen.insert("_from_model_config".into(), json!(true));
        for (k, v) in [("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)] {
            if let Some(v) = v {
                gen.insert(k.into(), json!(v));
            }
        }
        let generation = serde_json::Value::Object(gen);
        // Checked by the loaders' own config parser: a GGUF must never give a config that does not load. Every
        // architecture here is read as a Llama-shaped config (what the engine's rotary families read first; their
        // own keys are checked when the engine loads).
        RawConfig::from_json(
            &gguf.path().join("config.json"),
            &serde_json::Value::Object(config.clone()).to_string(),
        )
        .and_then(|raw| LlamaConfig::from_raw(&raw))
        .and_then(|_| GenerationConfig::from_json(&gguf.path().join("generation_config.json"), &generation.to_string()))
        .map_err(|e| import_err(gguf, format!("the metadata gives an invalid config: {e}")))?;
        Ok(HfModel {
            config,
            generation,
            tokenizer: tokenizer::build(gguf)?,
            tensors,
        })
    }
}

/// A tensor dequantised (and converted) only when the safetensors writer asks for its bytes.
struct LazyTensor<'a> {
    gguf: &'a GgufFile,
    plan: &'a HfTensor,
    shape: Vec<usize>,
    dtype: Dtype,
    /// The first conversion error (the writer's `View::data` cannot return one).
    failed: &'a RefCell<Option<Error>>,
}

impl LazyTensor<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        let values = self.plan.values(self.gguf)?;
        Ok(match self.dtype {
            Dtype::BF16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }
}

impl safetensors::View for LazyTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            Dtype::BF16 => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self.bytes() {
            Ok(b) => Cow::Owned(b),
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    fs::write(path, text + "\n").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The RoPE factor tensors of [`arch::config_tensors`], when the file has them: Phi-3's LongRoPE lists (both or
/// neither, any dequantisable type) or llama's `rope_freqs.weight` (F32, as llama.cpp's converter writes it and its
/// RoPE requires); each `head_dim / 2` finite positive values, checked here so that an error names the tensor.
fn rope_factors(gguf: &GgufFile, a: Arch, p: &LlamaParams) -> Result<Option<RopeFactors>> {
    let read = |t: &TensorInfo| -> Result<Vec<f32>> {
        if t.shape() != [p.head_dim / 2] {
            return Err(Error::TensorShape {
                path: gguf.path().to_path_buf(),
                name: t.name.clone(),
                expected: vec![p.head_dim / 2],
                found: t.shape(),
            });
        }
        let v = gguf.dequantize_info(t)?;
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !(x.is_finite() && **x > 0.0)) {
            return Err(import_err(
                gguf,
                format!(
                    "tensor {:?}: value {i} is {x}, expected a finite positive RoPE frequency divisor",
                    t.name
                ),
            ));
        }
        Ok(v)
    };
    match a {
        Arch::Llama => {
            let freqs = arch::ROPE_FREQS_TENSOR;
            let Some(t) = gguf.tensor_info(freqs) else {
                return Ok(None);
            };
            if t.ggml_type != GgmlType::F32 {
                return Err(import_err(
                    gguf,
                    format!(
                        "tensor {freqs:?}: type {}, expected F32 (llama.cpp's RoPE reads it as F32)",
                        t.ggml_type
                    ),
                ));
            }
            Ok(Some(RopeFactors::PerFrequency(read(t)?)))
        }
        Arch::Phi3 => {
            let [long, short] = arch::LONGROPE_TENSORS;
            match (gguf.tensor_info(long), gguf.tensor_info(short)) {
                (None, None) => Ok(None),
                (Some(l), Some(s)) => Ok(Some(RopeFactors::LongRope {
                    long: read(l)?,
                    short: read(s)?,
                })),
                (l, _) => Err(Error::MissingTensor {
                    path: gguf.path().to_path_buf(),
                    name: (if l.is_none() { long } else { short }).to_string(),
                    hint: " (LongRoPE needs both factor lists)".into(),
                }),
            }
        }
        _ => Ok(None),
    }
}

/// Import `gguf` (an architecture of [`arch::ARCHS`]) into `out_dir` as a Hugging Face model directory.
pub fn import_to_hf_dir(gguf: &Path, out_dir: &Path, opts: &ImportOptions) -> Result<()> {
    let file = GgufFile::open(gguf)?;
    let gguf = &file;
    if !matches!(opts.dtype, Dtype::F32 | Dtype::BF16) {
        return Err(import_err(
            gguf,
            format!("output dtype {} (supported: F32, BF16)", opts.dtype),
        ));
    }
    let HfModel {
        mut config,
        generation: gen,
        tokenizer: tok,
        tensors: planned,
    } = HfModel::read(gguf)?;
    let torch_dtype = match opts.dtype {
        Dtype::BF16 => "bfloat16",
        _ => "float32",
    };
    config.insert("torch_dtype".into(), json!(torch_dtype));
    let config = serde_json::Value::Object(config);
    let config_path = out_dir.join("config.json");
    let generation_path = out_dir.join("generation_config.json");
    fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;

    // Weights, converted one tensor at a time by the writer.
    let st_path = out_dir.join("model.safetensors");
    let failed = RefCell::new(None);
    let views = planned.iter().map(|t| {
        (
            t.hf_name.clone(),
            LazyTensor {
                gguf,
                plan: t,
                shape: t.info.shape(),
                dtype: opts.dtype,
                failed: &failed,
            },
        )
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &st_path).map_err(|e| Error::Io {
        path: st_path.clone(),
        source: std::io::Error::other(e),
    })?;
    if let Some(e) = failed.into_inner() {
        let _ = fs::remove_file(&st_path);
        return Err(e);
    }

    write_json(&config_path, &config)?;
    write_json(&generation_path, &gen)?;
    write_json(&out_dir.join("tokenizer.json"), &tok.tokenizer_json)?;
    write_json(&out_dir.join("tokenizer_config.json"), &tok.tokenizer_config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, head_dim/2, cols).swapaxes(1, 2): HF row s*half+i -> GGUF row 2i+s.
        let (n_heads, head_dim, cols) = (3, 8, 2);
        let half = head_dim / 2;
        let hf: Vec<f32> = (0..n_heads * head_dim * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_heads {
            for s in 0..2 {
                for i in 0..half {
                    let hf_row = h * head_dim + s * half + i;
                    let g_row = h * head_dim + 2 * i + s;
                    gguf[g_row * cols..(g_row + 1) * cols].copy_from_slice(&hf[hf_row * cols..(hf_row + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, n_heads, cols), hf);
    }
}
