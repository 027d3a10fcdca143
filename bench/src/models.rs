//! End-to-end model throughput: prefill (prompt or encoder) and decode tokens/s, time to first
//! token, peak RSS — batch 1 and batched, greedy or beam.
//!
//! Token counts are forced (EOS is ignored for decoder-only models and banned until the last step
//! for encoder-decoder models) so that every engine is compared on the same amount of work.

use std::path::Path;
use std::time::Instant;

use qkv::search::SearchOptions;
use qkv::{Activations, Error, LoadOptions, LogitsFor, Model, ModelKind, Result, WeightType};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub arch: String,
    pub dtype: String,
    pub isa: String,
    pub threads: usize,
    pub batch: usize,
    pub beam: usize,
    /// Prompt length (decoder-only) or source length (encoder-decoder).
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub load_s: f64,
    /// Prompt (or source) tokens per second through the prefill (or encoder + cross-K/V projection).
    pub prefill_tok_s: f64,
    /// Generated tokens per second, all rows of the batch counted.
    pub decode_tok_s: f64,
    pub ttft_s: f64,
    pub peak_rss_mb: f64,
    pub runs: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub batch: usize,
    pub beam: usize,
    pub runs: usize,
    /// How the linear layers are held (as stored, or int8 quantized at load).
    pub weights: WeightType,
    /// What they multiply by (`reduced`: the dtype column gets a `-x` suffix, e.g. `int8-x`, `bfloat16-x`).
    pub activations: Activations,
}

/// Peak resident set size of this process (VmHWM), MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Deterministic token ids in `[lo, vocab)` that avoid `avoid` (EOS, pad, …).
fn ids(n: usize, seed: usize, lo: u32, vocab: usize, avoid: &[u32]) -> Vec<u32> {
    let span = (vocab as u32).saturating_sub(lo).max(1);
    let mut out = Vec::with_capacity(n);
    let mut i = seed;
    while out.len() < n {
        let id = lo + ((i * 7919 + 13) as u32 % span);
        i += 1;
        if !avoid.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Weight dtype: the weight type when quantized at load (`int8`, `q8_0`, `q4_0`), else as the config states it (the weights are used in
/// that dtype).
fn dtype_of(dir: &Path, weights: WeightType) -> String {
    if weights != WeightType::Stored {
        return weights.name().to_string(); // int8, q8_0, q4_0: quantized at load
    }
    if dir.is_file() {
        return "gguf".to_string(); // a GGUF file run in place: its own tensor types
    }
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| {
            v.get("torch_dtype")
                .or_else(|| v.get("dtype"))
                .and_then(|d| d.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "float32".to_string())
}

pub fn run(dir: &Path, w: Workload) -> Result<ModelRow> {
    let load = LoadOptions {
        weights: w.weights,
        activations: w.activations,
        ..Default::default()
    };
    let t = Instant::now();
    let model = Model::load_with(dir, &load)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut row = match model.info().kind {
        ModelKind::DecoderOnly => {
            if w.beam != 1 {
                return Err(Error::Request(format!(
                    "{}: beam search is benchmarked for encoder-decoder models only; use --beam 1",
                    dir.display()
                )));
            }
            let mut row = decoder_only(&model, w)?;
            row.arch = model.info().architecture.to_string();
            row
        }
        ModelKind::EncoderDecoder => encoder_decoder(&model, w)?,
    };
    row.isa = model.kernels().isa().to_string();
    row.load_s = load_s;
    row.model = dir.display().to_string();
    row.dtype = dtype_of(dir, w.weights);
    if w.activations == Activations::Reduced {
        row.dtype.push_str("-x");
    }
    row.threads = rayon::current_num_threads();
    row.peak_rss_mb = peak_rss_mb();
    Ok(row)
}

fn argmax_rows(logits: &[f32], vocab: usize, out: &mut [u32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &logits[r * vocab..(r + 1) * vocab];
        *o = kernels::reference::argmax(row).unwrap_or(0) as u32;
    }
}

/// Prefill `prompt_len` tokens per row, then decode `new_tokens` greedy steps (EOS ignored); best of `runs`.
fn decoder_only(model: &Model, w: Workload) -> Result<ModelRow> {
    let vocab = model.info().vocab_size;
    let prompt: Vec<u32> = (0..w.batch)
        .flat_map(|b| ids(w.prompt_len, b * 101, 3, vocab, model.eos_ids()))
        .collect();
    let mut logits = vec![0.0f32; w.batch * vocab];
    let mut next = vec![0u32; w.batch];
    let (mut best_prefill, mut best_decode, mut best_ttft) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..w.runs.max(1) {
        let mut session = model.session(w.batch, w.prompt_len + w.new_tokens)?;
        let t = Instant::now();
        session.step(&prompt, w.prompt_len, LogitsFor::Last, &mut logits)?;
        argmax_rows(&logits, vocab, &mut next);
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 1..w.new_tokens {
            session.step(&next, 1, LogitsFor::Last, &mut logits)?;
            argmax_rows(&logits, vocab, &mut next);
        }
        let decode = t.elapsed().as_secs_f64();
        best_prefill = best_prefill.min(prefill);
        best_ttft = best_ttft.min(prefill);
        best_decode = best_decode.min(decode);
    }
    // the first token comes out of the prefill; the decode loop makes the other new_tokens - 1
    let decoded = (w.batch * w.new_tokens.saturating_sub(1)) as f64;
    Ok(ModelRow {
        model: String::new(),
        arch: String::new(),
        dtype: String::new(),
        isa: String::new(),
        threads: 0,
        batch: w.batch,
        beam: 1,
        prompt_len: w.prompt_len,
        new_tokens: w.new_tokens,
        load_s: 0.0,
        prefill_tok_s: (w.batch * w.prompt_len) as f64 / best_prefill,
        decode_tok_s: if decoded > 0.0 { decoded / best_decode } else { 0.0 },
        ttft_s: best_ttft,
        peak_rss_mb: 0.0,
        runs: w.runs.max(1),
    })
}

/// Encode `batch` sources of `prompt_len` tokens, then search exactly `new_tokens` tokens per source
/// (greedy or beam; EOS is banned until the last step); best of `runs`.
fn encoder_decoder(model: &Model, w: Workload) -> Result<ModelRow> {
    let info = model.info();
    let start_id = info.decoder_start_token_id.unwrap_or(0);
    let mut opts: SearchOptions = model.search_defaults()?.clone();
    let eos = opts.rules.eos.first().copied().unwrap_or(0);
    let avoid = [eos, start_id];
    let sources: Vec<Vec<u32>> = (0..w.batch)
        .map(|b| {
            let mut s = ids(w.prompt_len.saturating_sub(1), b * 37, 1, info.src_vocab_size, &avoid);
            s.push(eos);
            s
        })
        .collect();
    let refs: Vec<&[u32]> = sources.iter().map(|s| s.as_slice()).collect();
    opts.num_beams = w.beam;
    opts.max_new_tokens = w.new_tokens;
    opts.min_new_tokens = w.new_tokens;
    opts.num_return_sequences = 1;
    let start = vec![start_id; w.batch];
    let (mut best_prefill, mut best_decode) = (f64::MAX, f64::MAX);
    for _ in 0..w.runs.max(1) {
        let t = Instant::now();
        let mut session = model.encode(&refs, w.batch * w.beam, w.new_tokens)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let hyps = session.search(&start, &opts)?;
        let decode = t.elapsed().as_secs_f64();
        std::hint::black_box(hyps);
        best_prefill = best_prefill.min(prefill);
        best_decode = best_decode.min(decode);
    }
    let generated = (w.batch * w.new_tokens) as f64;
    Ok(ModelRow {
        model: String::new(),
        arch: "encoder-decoder".into(),
        dtype: String::new(),
        isa: String::new(),
        threads: 0,
        batch: w.batch,
        beam: w.beam,
        prompt_len: w.prompt_len,
        new_tokens: w.new_tokens,
        load_s: 0.0,
        prefill_tok_s: (w.batch * w.prompt_len) as f64 / best_prefill,
        decode_tok_s: generated / best_decode,
        ttft_s: best_prefill + best_decode / w.new_tokens.max(1) as f64,
        peak_rss_mb: 0.0,
        runs: w.runs.max(1),
    })
}
