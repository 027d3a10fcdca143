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

use super::arch::{self, Arch, Transform};
use super::dequant;
use super::reader::{GgufFile, TensorInfo};
use super::tokenizer;
use crate::config::{GenerationConfig, LlamaConfig, RawConfig};
use crate::error::{Error, Result};
use crate::tensor::Dtype;

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

/// One output tensor: where it comes from and what to do with it.
struct Planned<'a> {
    hf_name: String,
    info: &'a TensorInfo,
    transform: Transform,
}

/// Map every GGUF tensor of `arch` to its HF name, checking shapes; every GGUF tensor must be used (by the
/// weights, or by the config: [`arch::config_tensors`]).
fn plan<'a>(gguf: &'a GgufFile, a: Arch, p: &LlamaParams) -> Result<Vec<Planned<'a>>> {
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
        out.push(Planned {
            hf_name: h,
            info,
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

/// Undo llama.cpp's q/k permutation: `src` is `[n_heads * head_dim, row_len]` in GGUF row order.
pub fn unpermute_rows(src: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
    let n_rows = src.len() / row_len;
    let head_dim = n_rows / n_heads;
    let half = head_dim / 2;
    let mut dst = vec![0f32; src.len()];
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

/// A tensor dequantised (and converted) only when the safetensors writer asks for its bytes.
struct LazyTensor<'a> {
    gguf: &'a GgufFile,
    plan: &'a Planned<'a>,
    shape: Vec<usize>,
    dtype: Dtype,
    /// The first conversion error (the writer's `View::data` cannot return one).
    failed: &'a RefCell<Option<Error>>,
}

impl LazyTensor<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        let mut values = self.gguf.dequantize_info(self.plan.info)?; // [rows, row_len]
        match self.plan.transform {
            Transform::Copy => {}
            Transform::Unpermute(n_heads) => {
                let row_len = self.shape.get(1).copied().unwrap_or(1);
                values = unpermute_rows(&values, n_heads, row_len);
            }
            Transform::MinusOne => values.iter_mut().for_each(|v| *v -= 1.0),
        }
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

/// Phi-3's LongRoPE factors (`rope_factors_long.weight`, `rope_factors_short.weight`: `head_dim / 2` each), when
/// the file has them; both or neither.
fn rope_factors(gguf: &GgufFile, a: Arch, p: &LlamaParams) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let names = arch::config_tensors(a);
    let [long, short] = names else {
        return Ok(None);
    };
    let (l, s) = (gguf.tensor_info(long), gguf.tensor_info(short));
    let (l, s) = match (l, s) {
        (None, None) => return Ok(None),
        (Some(l), Some(s)) => (l, s),
        (l, _) => {
            let missing = if l.is_none() { long } else { short };
            return Err(Error::MissingTensor {
                path: gguf.path().to_path_buf(),
                name: missing.to_string(),
                hint: " (LongRoPE needs both factor lists)".into(),
            });
        }
    };
    for t in [l, s] {
        if t.shape() != [p.head_dim / 2] {
            return Err(Error::TensorShape {
                path: gguf.path().to_path_buf(),
                name: t.name.clone(),
                expected: vec![p.head_dim / 2],
                found: t.shape(),
            });
        }
    }
    Ok(Some((gguf.dequantize_info(l)?, gguf.dequantize_info(s)?)))
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
    let a = Arch::of(gguf)?;
    let p = LlamaParams::read(gguf, a.name())?;
    let factors = rope_factors(gguf, a, &p)?;
    let mut config = arch::config(gguf, a, &p, factors)?;
    let planned = plan(gguf, a, &p)?;
    let special = |key: &str| -> Result<Option<u64>> {
        match gguf.metadata().get(key) {
            None => Ok(None),
            Some(_) => gguf.get_u64(key).map(Some),
        }
    };
    let bos = special("tokenizer.ggml.bos_token_id")?;
    let eos = special("tokenizer.ggml.eos_token_id")?;
    let pad = special("tokenizer.ggml.padding_token_id")?;
    let torch_dtype = match opts.dtype {
        Dtype::BF16 => "bfloat16",
        _ => "float32",
    };
    for (k, v) in [("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)] {
        config.insert(k.into(), json!(v));
    }
    config.insert("torch_dtype".into(), json!(torch_dtype));
    let config = serde_json::Value::Object(config);
    let mut gen = serde_json::Map::new();
    gen.insert("_from_model_config".into(), json!(true));
    for (k, v) in [("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)] {
        if let Some(v) = v {
            gen.insert(k.into(), json!(v));
        }
    }
    let gen = serde_json::Value::Object(gen);
    // The config files, checked by the loaders' own config parser before anything is written: an import must
    // never produce a directory that does not load. Every architecture here is read as a Llama-shaped config
    // (what the engine's rotary families read first; their own keys are checked when the engine loads).
    let config_path = out_dir.join("config.json");
    let generation_path = out_dir.join("generation_config.json");
    RawConfig::from_json(&config_path, &config.to_string())
        .and_then(|raw| LlamaConfig::from_raw(&raw))
        .and_then(|_| GenerationConfig::from_json(&generation_path, &gen.to_string()))
        .map_err(|e| import_err(gguf, format!("the metadata gives an invalid config: {e}")))?;
    let tok = tokenizer::build(gguf)?;
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
