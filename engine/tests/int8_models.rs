//! Int8 weights (`WeightType::Int8`, quantized at load) against the same model with its weights as stored
//! (f32): logits on the tiny fixtures (Llama GQA and tied, GPT-2, Marian) and on the real stories260k model,
//! greedy agreement on stories260k, and the bytes a quantized model holds.
//!
//! Why the tolerances: int8 moves each weight by at most half its row's step, `max|w_row| / 254`. A linear
//! output `y = Σ w x` then moves by `Σ Δw x`; with rounding errors spread uniformly over ±step/2 that is about
//! `step / √12 · ‖x‖` against a typical `|y| ≈ rms(w) · ‖x‖`, i.e. a relative error of
//! `max|w| / (127 · √12 · rms(w))` ≈ 0.5–1% for rows whose largest weight is 2–4 times their RMS. A logit
//! goes through every linear layer of the model (15–36 here); the errors add up (roughly in quadrature, and
//! norms and attention can amplify them), so an error of a few percent of the logit spread is expected. Seen
//! (AVX-512 host): max-abs 1.3% of the logit range on the trained stories260k, 1.8–4.2% on the random-weight
//! fixtures (whose logits are nearly flat, so their range is small); NMSE (against the logits' variance)
//! 1.4e-3–6.2e-3. The constants below sit about 1.5x above the worst of those. Both int8 GEMV modes are checked
//! (x kept f32, and x rounded to i16, `Model`'s default for int8): they agree to the digits shown.

mod decoder_support;

use decoder_support::{ids, json, load_as};
use kernels::I8Gemv;
use qkv::search::SearchOptions;
use qkv::{Activations, Kernels, LoadOptions, LogitsFor, Model, TranslateOptions, WeightType};

/// Max |int8 logit - stored logit| as a fraction of that row's stored logit range (see the module notes).
const LOGIT_TOL_OF_RANGE: f32 = 0.06;
/// Squared error of the int8 logits over the variance of the stored ones (per compared row).
const LOGIT_NMSE_TOL: f64 = 1e-2;
/// With int8 activations too (`Activations::Reduced`): each activation moves by at most half its row's step
/// (`max|x_row| / 254`), an error of the same kind and size as the weights' own, independent of it, so the output
/// errors add in quadrature: about √2 those of int8 weights alone, more where the activations have outliers (seen,
/// Zen 4: max-abs 2.1% of the range on stories260k, 3.6-8.3% on the random fixtures with their nearly flat logits;
/// NMSE up to 1.45e-2). The constants sit about 1.5x above the worst.
const LOGIT_TOL_OF_RANGE_INT8_X: f32 = 0.12;
const LOGIT_NMSE_TOL_INT8_X: f64 = 2.5e-2;
/// stories260k, greedy from each of the 4 reference prompts: int8 chooses the same tokens as f32 for at least
/// this many steps of 64 (seen: 61, 57, 22 and 55; a near-tie decides where they part).
const STORIES_MIN_AGREE: usize = 16;

/// Worst relative max-abs and NMSE over the compared rows, checked against `tol` (max-abs of range, NMSE).
#[derive(Debug, Clone, Copy)]
struct Gap {
    rel: f32,
    nmse: f64,
    rows: usize,
    tol: (f32, f64),
}

impl Default for Gap {
    fn default() -> Self {
        Self::within(LOGIT_TOL_OF_RANGE, LOGIT_NMSE_TOL)
    }
}

impl Gap {
    /// The bounds of an int8 mode (see [`int8_modes`]).
    fn of(mode: &str) -> Gap {
        match mode {
            "int8-x" => Gap::within(LOGIT_TOL_OF_RANGE_INT8_X, LOGIT_NMSE_TOL_INT8_X),
            _ => Gap::default(),
        }
    }

    fn within(of_range: f32, nmse: f64) -> Self {
        Self {
            rel: 0.0,
            nmse: 0.0,
            rows: 0,
            tol: (of_range, nmse),
        }
    }

    /// Compare one row of logits (int8 `got` against stored `want`).
    fn add(&mut self, what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        let (lo, hi) = want
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let range = (hi - lo).max(f32::MIN_POSITIVE);
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let mean = want.iter().map(|&v| v as f64).sum::<f64>() / want.len() as f64;
        let den: f64 = want.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        let nmse = num / den.max(f64::MIN_POSITIVE);
        assert!(
            diff <= self.tol.0 * range,
            "{what}: quantized logits differ by {diff} (range {range}, {:.2}%)",
            100.0 * diff / range
        );
        assert!(nmse <= self.tol.1, "{what}: quantized logits NMSE {nmse:e}");
        self.rel = self.rel.max(diff / range);
        self.nmse = self.nmse.max(nmse);
        self.rows += 1;
    }
}

/// A decoder-only model run twice: as stored and with int8 weights.
trait Pair {
    fn vocab(&self) -> usize;
    /// Feed `tokens` to a fresh cache of `cap` positions, then `more` one at a time (teacher forcing), and
    /// return the logits of every prompt position and of each step after it, for (stored, int8).
    fn run(&self, prompt: &[u32], more: &[u32]) -> (Vec<f32>, Vec<f32>);
}

macro_rules! decoder_pair {
    ($name:ident, $ty:ty, $vocab:expr) => {
        struct $name {
            stored: $ty,
            int8: $ty,
        }
        impl Pair for $name {
            fn vocab(&self) -> usize {
                $vocab(&self.stored)
            }
            fn run(&self, prompt: &[u32], more: &[u32]) -> (Vec<f32>, Vec<f32>) {
                let v = self.vocab();
                let go = |m: &$ty| {
                    let mut c = m.session(1, prompt.len() + more.len()).unwrap();
                    let mut all = vec![0.0; (prompt.len() + more.len()) * v];
                    c.step(prompt, prompt.len(), LogitsFor::All, &mut all[..prompt.len() * v])
                        .unwrap();
                    for (t, &tok) in more.iter().enumerate() {
                        let o = (prompt.len() + t) * v;
                        c.step(&[tok], 1, LogitsFor::Last, &mut all[o..o + v]).unwrap();
                    }
                    all
                };
                (go(&self.stored), go(&self.int8))
            }
        }
    };
}

decoder_pair!(LlamaPair, Model, |m: &Model| m.info().vocab_size);
decoder_pair!(Gpt2Pair, Model, |m: &Model| m.info().vocab_size);

/// The int8 modes: x kept f32 (the kernels' default), x rounded to i16 (`Model`'s default for int8 on AVX-512
/// VNNI; the same as the first elsewhere), and x quantized to int8 per row (`Activations::Reduced`: int8 x int8
/// products on every ISA).
fn int8_modes() -> [(&'static str, Kernels); 3] {
    let k = Kernels::detect().unwrap();
    [
        ("widen", k),
        ("dot-i16", k.with_i8_gemv(I8Gemv::DotI16)),
        ("int8-x", Activations::Reduced.apply(k)),
    ]
}

fn llama_pair(dir: &std::path::Path, int8_kernels: Kernels) -> LlamaPair {
    LlamaPair {
        stored: load_as(dir, Kernels::detect().unwrap(), WeightType::Stored),
        int8: load_as(dir, int8_kernels, WeightType::Int8),
    }
}

fn gpt2_pair(dir: &std::path::Path, int8_kernels: Kernels) -> Gpt2Pair {
    Gpt2Pair {
        stored: load_as(dir, Kernels::detect().unwrap(), WeightType::Stored),
        int8: load_as(dir, int8_kernels, WeightType::Int8),
    }
}

/// Every prompt of a fixture's reference.json, continued by its greedy tokens (teacher forced, so both
/// models see the same inputs): every logit row compared.
fn check_fixture(name: &str, mode: &str, pair: &dyn Pair) {
    let meta = json(&loaders::paths::fixture(name).join("reference.json"));
    let prompts: Vec<Vec<u32>> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let v = pair.vocab();
    let mut gap = Gap::of(mode);
    for (i, prompt) in prompts.iter().enumerate() {
        let more = ids(&meta["greedy_tokens"][i]);
        let (want, got) = pair.run(prompt, &more);
        for (r, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
            gap.add(&format!("{name} ({mode}) prompt {i} row {r}"), g, w);
        }
    }
    eprintln!(
        "{name} ({mode}): int8 vs stored logits over {} rows: max-abs {:.2}% of the range, NMSE {:.1e}",
        gap.rows,
        100.0 * gap.rel,
        gap.nmse
    );
}

#[test]
fn llama_tiny_gqa_int8_logits() {
    for (mode, k) in int8_modes() {
        check_fixture(
            "llama-tiny-gqa",
            mode,
            &llama_pair(&loaders::paths::fixture("llama-tiny-gqa"), k),
        );
    }
}

#[test]
fn llama_tiny_tied_int8_logits() {
    for (mode, k) in int8_modes() {
        check_fixture(
            "llama-tiny-tied",
            mode,
            &llama_pair(&loaders::paths::fixture("llama-tiny-tied"), k),
        );
    }
}

#[test]
fn gpt2_tiny_int8_logits() {
    for (mode, k) in int8_modes() {
        check_fixture("gpt2-tiny", mode, &gpt2_pair(&loaders::paths::fixture("gpt2-tiny"), k));
    }
}

/// The real stories260k: logits along the f32 model's greedy path (teacher forced), and free-running greedy
/// agreement of int8 with f32.
#[test]
fn stories260k_int8_logits_and_greedy_agreement() {
    for (mode, k) in int8_modes() {
        stories260k_int8(mode, k);
    }
}

fn stories260k_int8(mode: &str, int8_kernels: Kernels) {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let pair = llama_pair(&dir, int8_kernels);
    let v = pair.vocab();
    let meta = json(&loaders::paths::fixture("stories260k").join("reference.json"));
    let mut gap = Gap::of(mode);
    let mut agreed = vec![];
    for (i, run) in meta["runs"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&run["prompt_ids"]);
        let n_new = ids(&run["greedy_ids"]).len();
        // Free-running greedy, each model on its own tokens.
        let greedy = |m: &Model| {
            let mut c = m.session(1, prompt.len() + n_new).unwrap();
            let mut logits = vec![0.0; v];
            c.step(&prompt, prompt.len(), LogitsFor::Last, &mut logits).unwrap();
            let mut out = vec![];
            for t in 0..n_new {
                let next = Kernels::scalar().argmax(&logits).unwrap() as u32;
                out.push(next);
                if t + 1 < n_new {
                    c.step(&[next], 1, LogitsFor::Last, &mut logits).unwrap();
                }
            }
            out
        };
        let (f32_tokens, int8_tokens) = (greedy(&pair.stored), greedy(&pair.int8));
        let same = f32_tokens.iter().zip(&int8_tokens).take_while(|(a, b)| a == b).count();
        agreed.push(same);
        assert!(
            same >= STORIES_MIN_AGREE,
            "stories260k ({mode}) run {i}: int8 greedy leaves f32's after {same} tokens\n f32 {f32_tokens:?}\nint8 {int8_tokens:?}"
        );
        // Logits along the f32 path.
        let (want, got) = pair.run(&prompt, &f32_tokens[..n_new - 1]);
        for (r, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
            gap.add(&format!("stories260k ({mode}) run {i} row {r}"), g, w);
        }
    }
    eprintln!(
        "stories260k ({mode}): int8 greedy equals f32 for {agreed:?} of 64 tokens; logits over {} rows: max-abs {:.2}% of \
         the range, NMSE {:.1e}",
        gap.rows,
        100.0 * gap.rel,
        gap.nmse
    );
}

/// marian-tiny: teacher-forced decoder logits of a batch of sources, and greedy search.
#[test]
fn marian_tiny_int8_logits_and_greedy() {
    let dir = loaders::paths::fixture("marian-tiny");
    let load = |weights| {
        let opts = LoadOptions {
            weights,
            ..Default::default()
        };
        Model::load_with(&dir, &opts).unwrap()
    };
    let (stored, int8) = (load(WeightType::Stored), load(WeightType::Int8));
    let meta = json(&dir.join("reference.json"));
    let rows: Vec<Vec<u32>> = serde_json::from_value(meta["source_ids"].clone()).unwrap();
    let lens = ids(&meta["source_lengths"]);
    let sources: Vec<&[u32]> = rows.iter().zip(&lens).map(|(r, &l)| &r[..l as usize]).collect();
    let dec_in = ids(&meta["teacher_forced_decoder_input_ids"]);
    let batch = sources.len();
    let run = |t: &Model| {
        let v = t.info().vocab_size;
        let mut st = t.encode(&sources, batch, dec_in.len()).unwrap();
        let mut all = vec![];
        let mut logits = vec![0.0f32; batch * v];
        for &tok in &dec_in {
            st.step(&vec![tok; batch], 1, LogitsFor::Last, &mut logits).unwrap();
            all.extend_from_slice(&logits);
        }
        all
    };
    let (want, got) = (run(&stored), run(&int8));
    let v = stored.info().vocab_size;
    let mut gap = Gap::of("widen");
    for (r, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
        gap.add(&format!("marian-tiny row {r}"), g, w);
    }
    // Greedy search on both: how long they agree is reported (random weights: near-ties are common).
    let opts: SearchOptions = stored
        .search_options(&TranslateOptions {
            beam_size: Some(1),
            ..Default::default()
        })
        .unwrap();
    let greedy = |t: &Model| {
        let mut st = t.encode(&sources, batch, opts.max_new_tokens).unwrap();
        let start = vec![t.info().decoder_start_token_id.unwrap(); batch];
        st.search(&start, &opts).unwrap()
    };
    let (gs, gi) = (greedy(&stored), greedy(&int8));
    let same: Vec<usize> = gs
        .iter()
        .zip(&gi)
        .map(|(a, b)| a[0].tokens.iter().zip(&b[0].tokens).take_while(|(x, y)| x == y).count())
        .collect();
    eprintln!(
        "marian-tiny: int8 vs stored logits over {} rows: max-abs {:.2}% of the range, NMSE {:.1e}; greedy \
         prefixes equal for {same:?} tokens (of {:?})",
        gap.rows,
        100.0 * gap.rel,
        gap.nmse,
        gs.iter().map(|h| h[0].tokens.len()).collect::<Vec<_>>()
    );
}

/// A quantized model holds a quarter of the f32 bytes of its linear layers (plus one f32 scale per row).
#[test]
fn int8_models_hold_a_quarter_of_the_linear_bytes() {
    let stories = loaders::paths::shared_model("stories260k").expect("shared model");
    for dir in [
        stories,
        loaders::paths::fixture("llama-tiny-tied"),
        loaders::paths::fixture("gpt2-tiny"),
        loaders::paths::fixture("marian-tiny"),
    ] {
        let load = |weights| {
            let opts = LoadOptions {
                weights,
                ..Default::default()
            };
            Model::load_with(&dir, &opts).unwrap()
        };
        let (f, q) = (load(WeightType::Stored), load(WeightType::Int8));
        assert_eq!(
            (f.weight_type(), q.weight_type()),
            (WeightType::Stored, WeightType::Int8)
        );
        let (fb, qb) = (f.weight_bytes(), q.weight_bytes());
        let ratio = qb.linear as f64 / fb.linear as f64;
        // 1 byte instead of 4 per weight, plus a 4-byte scale per row of at least 32 inputs (the fixtures'
        // smallest in_dim): at most 1/4 + 1/32 of the f32 bytes.
        assert!(
            (0.25..=0.25 + 1.0 / 32.0).contains(&ratio),
            "{}: int8 linear bytes {} vs f32 {} (ratio {ratio:.4})",
            dir.display(),
            qb.linear,
            fb.linear
        );
        // Embedding tables stay as stored; a tied head is no longer shared.
        assert_eq!(qb.embedding, fb.embedding);
        assert_eq!(qb.shared, 0);
        eprintln!(
            "{}: linear bytes f32 {} -> int8 {} ({ratio:.3}); everything held {} -> {} ({:.3})",
            dir.file_name().unwrap().to_string_lossy(),
            fb.linear,
            qb.linear,
            fb.total(),
            qb.total(),
            qb.total() as f64 / fb.total() as f64
        );
    }
}

/// `Model::load_with` + `generate` with int8 weights: the same greedy tokens as the int8 `Llama` built directly
/// (the option reaches the model), and text.
#[test]
fn model_generate_with_int8_weights() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model");
    let opts = LoadOptions {
        weights: WeightType::Int8,
        ..Default::default()
    };
    let m = Model::load_with(&dir, &opts).unwrap();
    let prompt = "Once upon a time";
    let n_new = 24;
    let gen_opts = qkv::GenerateOptions {
        max_new_tokens: n_new,
        ..Default::default()
    };
    let out = m.generate(prompt, &gen_opts).unwrap();
    // The same prompt ids, greedy on the int8 Llama on the same kernels (no EOS stop: compare the common length).
    let ids = m.prompt_ids(prompt, gen_opts.prompt_format).unwrap();
    let llama = load_as(&dir, m.kernels(), WeightType::Int8);
    let mut c = llama.session(1, ids.len() + n_new).unwrap();
    let mut logits = vec![0.0; llama.info().vocab_size];
    c.step(&ids, ids.len(), LogitsFor::Last, &mut logits).unwrap();
    let mut direct = vec![];
    for _ in 0..out.tokens.len() {
        let next = Kernels::scalar().argmax(&logits).unwrap() as u32;
        direct.push(next);
        c.step(&[next], 1, LogitsFor::Last, &mut logits).unwrap();
    }
    assert!(
        !out.tokens.is_empty() && !out.text.trim().is_empty(),
        "int8 stories260k generated nothing"
    );
    assert_eq!(out.tokens, direct, "Model int8 vs Llama int8 greedy tokens");
    eprintln!("stories260k int8: {prompt}{}", out.text);
}

// ---- GGUF blocks (WeightType::Q8_0, Q4_0) ----
//
// Q8_0 rounds each weight to half a step of its block of 32 (`max|w_block| / 254`, finer than int8's row step), and
// the activations are rounded the same way per block of 32 (`max|x_block| / 254`): where a block holds one of
// SmolLM2's outlier activations its other values lose most of their bits, as in llama.cpp. Q4_0's step is
// `max|w_block| / 8` (16x int8's). Measured here (AVX-512 host; the tests print theirs): Q8_0 max-abs 4.7-7.1% of
// the logit range, NMSE up to 7.1e-2 (SmolLM2; llama.cpp's own Q8_0 of the same weights, requantized by
// `llama_model_quantize`, shows NMSE up to 2.4e-2 against HF f32 on 11 prompt rows, and its Q4_1 file, on exactly
// the weights HF runs, up to 3.9e-2: the activations' rounding); Q4_0 max-abs 48-58%, NMSE up to 7.3 (llama.cpp's
// Q4_0: up to 1.4 on those rows, with a different argmax on 3 of 11). The constants sit about 1.5x above what was
// seen: for Q4_0 they only catch non-finite or unrelated logits (the kernels' tests check its arithmetic exactly).
// With the row-interleaved layout (groups of 16) the AVX-512 run reached NMSE 0.132 on one row (scalar / AVX2:
// 8.4e-2): the f32 reference's greedy path differs between ISAs, and the Q8 activations turn the ISAs' last-bit
// differences in the f32 parts into whole quantization steps (SmolLM2's Q8_0 logits differ by up to 0.87 between
// scalar and AVX-512 after one prefill, though each kernel is bit-identical across ISAs: not understood yet, #18).
// The NMSE bound is 1.5x the AVX-512 figure until that is explained.

/// Q8_0: max |block logit - stored logit| of the logit range, and NMSE.
const Q8_0_TOL: (f32, f64) = (0.11, 0.2);
/// Q4_0 (see above): as loose as 4-bit round-to-nearest weights on these small models are.
const Q4_0_TOL: (f32, f64) = (0.9, 11.0);
/// SmolLM2 Q8_0 greedy: at least this many of 16 tokens equal f32's from each prompt (seen: 16, 16, 8).
const SMOLLM2_Q8_0_MIN_AGREE: usize = 4;

fn block_tol(w: WeightType) -> (f32, f64) {
    match w {
        WeightType::Q8_0 => Q8_0_TOL,
        _ => Q4_0_TOL,
    }
}

/// A decoder fixture's logits with block weights against stored: every prompt, teacher forced on its greedy tokens.
fn check_fixture_blocks(name: &str, weights: WeightType) {
    let dir = loaders::paths::fixture(name);
    let k = Kernels::detect().unwrap();
    let pair = LlamaPair {
        stored: load_as(&dir, k, WeightType::Stored),
        int8: load_as(&dir, k, weights),
    };
    assert_eq!(pair.int8.weight_type(), weights);
    let meta = json(&dir.join("reference.json"));
    let prompts: Vec<Vec<u32>> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let v = pair.vocab();
    let (r, n) = block_tol(weights);
    let mut gap = Gap::within(r, n);
    for (i, prompt) in prompts.iter().enumerate() {
        let more = ids(&meta["greedy_tokens"][i]);
        let (want, got) = pair.run(prompt, &more);
        for (row, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
            gap.add(&format!("{name} ({weights}) prompt {i} row {row}"), g, w);
        }
    }
    eprintln!(
        "{name} ({weights}): vs stored logits over {} rows: max-abs {:.2}% of the range, NMSE {:.1e}",
        gap.rows,
        100.0 * gap.rel,
        gap.nmse
    );
}

#[test]
fn llama_tiny_block_logits() {
    for w in [WeightType::Q8_0, WeightType::Q4_0] {
        check_fixture_blocks("llama-tiny-gqa", w);
        check_fixture_blocks("llama-tiny-tied", w);
    }
}

/// The real SmolLM2-135M (every matrix whole blocks of 32): Q8_0 and Q4_0 against the f32 import of the shipped
/// GGUF, logits teacher forced along f32's greedy path, free-running greedy agreement, and the bytes held.
#[test]
fn smollm2_block_logits_greedy_and_bytes() {
    let dir = decoder_support::smollm2_dir();
    let k = Kernels::detect().unwrap();
    let v = load_as(&dir, k, WeightType::Stored).info().vocab_size;
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
    ];
    let n_new = 16;
    let greedy = |m: &Model, prompt: &[u32]| {
        let mut c = m.session(1, prompt.len() + n_new).unwrap();
        let mut logits = vec![0.0; v];
        c.step(prompt, prompt.len(), LogitsFor::Last, &mut logits).unwrap();
        let mut out = vec![];
        for t in 0..n_new {
            let next = Kernels::scalar().argmax(&logits).unwrap() as u32;
            out.push(next);
            if t + 1 < n_new {
                c.step(&[next], 1, LogitsFor::Last, &mut logits).unwrap();
            }
        }
        out
    };
    for weights in [WeightType::Q8_0, WeightType::Q4_0] {
        let pair = LlamaPair {
            stored: load_as(&dir, k, WeightType::Stored),
            int8: load_as(&dir, k, weights),
        };
        let (fb, qb) = (pair.stored.weight_bytes(), pair.int8.weight_bytes());
        // 34 (Q8_0) or 18 (Q4_0) bytes per 32 weights instead of 128.
        let per = if weights == WeightType::Q8_0 { 34.0 } else { 18.0 } / 128.0;
        let ratio = qb.linear as f64 / fb.linear as f64;
        assert!(
            (ratio - per).abs() < 1e-9,
            "{weights}: linear bytes {} vs f32 {}",
            qb.linear,
            fb.linear
        );
        let (r, n) = block_tol(weights);
        let mut gap = Gap::within(r, n);
        let mut agreed = vec![];
        for p in prompts {
            let ids = pair.stored.prompt_ids(p, qkv::PromptFormat::Plain).unwrap();
            let f32_tokens = greedy(&pair.stored, &ids);
            let q_tokens = greedy(&pair.int8, &ids);
            agreed.push(f32_tokens.iter().zip(&q_tokens).take_while(|(a, b)| a == b).count());
            let (want, got) = pair.run(&ids, &f32_tokens[..n_new - 1]);
            for (row, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
                gap.add(&format!("smollm2 ({weights}) {p:?} row {row}"), g, w);
            }
        }
        if weights == WeightType::Q8_0 {
            assert!(
                agreed.iter().all(|&a| a >= SMOLLM2_Q8_0_MIN_AGREE),
                "smollm2 q8_0 greedy parts early: {agreed:?}"
            );
        }
        eprintln!(
            "smollm2 ({weights}): greedy equals f32 for {agreed:?} of {n_new} tokens; logits over {} rows: max-abs \
             {:.2}% of the range, NMSE {:.1e}; linear bytes {} -> {} ({ratio:.4})",
            gap.rows,
            100.0 * gap.rel,
            gap.nmse,
            fb.linear,
            qb.linear
        );
    }
}
