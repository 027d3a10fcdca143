//! bf16 and f16 checkpoints end to end, on every ISA the host has.
//!
//! The f32 fixture checkpoints (llama-tiny-gqa, gpt2-tiny, marian-tiny, the shared stories260k and the SmolLM2 GGUF
//! imported to f32) are converted here to bf16 and to f16 safetensors (round to nearest even, as torch does), loaded
//! with `Model::load_with` and run with the kernels of each ISA forced. The reference
//! (tools/scripts/make_dtype_fixtures.py) is Hugging Face transformers computing in f32 on the same rounded weights:
//! qkv reads bf16/f16 weights as stored and widens them exactly in registers, so the rounding is on both sides and
//! the logits must agree as closely as the f32 fixtures do; 40 greedy tokens must be identical.

mod decoder_support;

use std::path::{Path, PathBuf};

use decoder_support::{check_greedy, ids, json, max_abs, smollm2_dir, tensor};
use kernels::{bf16, f16, Isa};
use loaders::safetensors::SafeTensors;
use qkv::{Activations, BatchOptions, GenerateOptions, Kernels, LoadOptions, LogitsFor, Model, Session};

/// Max-abs logit difference for the tiny models: the tolerance of their f32 fixtures (f32 math in another order).
const TINY_LOGITS_TOL: f32 = 1e-4;
/// SmolLM2 (30 layers, logits O(10)): the tolerance of its f32 fixture.
const SMOLLM2_LOGITS_TOL: f32 = 1e-3;
/// bf16 activations (`Activations::Reduced`, `vdpbf16ps`) against f32 activations on the same bf16 weights, max-abs
/// logit difference over the row's logit range. Each product term moves by at most 2^-9 relative (x rounded to
/// nearest bf16), i.e. a linear output by about `2^-9 / √3 · ‖w‖‖x‖` for independent roundings, 0.1% of a typical
/// output; through the layers (7 linear maps deep on stories260k, 30 x 4 on SmolLM2) norms and attention can
/// amplify it. Seen on Zen 4: 0.27% (stories260k) and 0.76% (SmolLM2) of the range; the bound sits 2x above the
/// worst (`vdpbf16ps` is specified bit for bit, so other CPUs with AVX512_BF16 give the same logits).
const BF16_ACTS_TOL_OF_RANGE: f32 = 0.015;
/// Greedy decoding with bf16 activations agrees with f32 activations for at least this many of the 40 reference
/// tokens on average over a model's runs (a near-tie would part them; seen: all equal, the SmolLM2 runs ending at
/// their end-of-sequence token after 30 and 8).
const BF16_ACTS_MIN_AGREE: usize = 24;

#[derive(Clone, Copy, Debug)]
enum Half {
    Bf16,
    F16,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Bf16 => "bf16",
            Half::F16 => "f16",
        }
    }
}

/// `src` copied to a fresh directory with every f32 tensor of its safetensors files rounded to `dtype`.
fn convert(src: &Path, dtype: Half) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let st = SafeTensors::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = vec![];
            for n in st.names() {
                let t = st.get(n).unwrap();
                assert_eq!(t.dtype(), loaders::Dtype::F32, "{}: {n} is not f32", path.display());
                let v = t.to_f32_vec();
                let (bytes, dt) = match dtype {
                    Half::Bf16 => (
                        v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
                        safetensors::Dtype::BF16,
                    ),
                    Half::F16 => (
                        v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
                        safetensors::Dtype::F16,
                    ),
                };
                tensors.push((n.to_string(), t.shape().to_vec(), bytes, dt));
            }
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
                .iter()
                .map(|(n, shape, bytes, dt)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &out.path().join(&name)).unwrap();
        } else if path.is_file() {
            std::fs::copy(&path, out.path().join(&name)).unwrap();
        }
    }
    out
}

/// What one model's runs are checked against.
struct Refs {
    meta: serde_json::Value,
    tensors: SafeTensors,
}

impl Refs {
    /// The token ids of a model's reference inputs.
    fn inputs(&self, name: &str) -> Vec<Vec<u32>> {
        self.meta["models"][name]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect()
    }
}

fn refs() -> Refs {
    let dir = loaders::paths::fixture("dtypes");
    Refs {
        meta: json(&dir.join("reference.json")),
        tensors: SafeTensors::open(&dir.join("reference.safetensors")).unwrap_or_else(|e| panic!("{e}")),
    }
}

/// Every ISA of the host (the ones it lacks reported as skipped), for `test`.
fn each_kernels(test: &str) -> Vec<Kernels> {
    kernels::testing::kernels(test)
}

/// Load `dir` with the kernels `k`; the linear weights must be held in the checkpoint's dtype (half of f32's bytes).
fn load(dir: &Path, k: Kernels, f32_linear_bytes: usize) -> Model {
    let m = Model::load_with(
        dir,
        &LoadOptions {
            kernels: Some(k),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.kernels().isa(), k.isa());
    assert_eq!(
        2 * m.weight_bytes().linear,
        f32_linear_bytes,
        "{}: linear weights not held as 16-bit",
        dir.display()
    );
    m
}

fn f32_linear_bytes(dir: &Path) -> usize {
    Model::load_with(
        dir,
        &LoadOptions {
            kernels: Some(Kernels::scalar()),
            ..Default::default()
        },
    )
    .unwrap()
    .weight_bytes()
    .linear
}

/// A decoder-only model: its runs' step logits (first steps) and 40 greedy tokens, for both dtypes, every ISA.
fn check_decoder_only(name: &str, f32_dir: &Path) {
    let r = refs();
    let f32_bytes = f32_linear_bytes(f32_dir);
    let inputs = r.inputs(name);
    for dtype in [Half::Bf16, Half::F16] {
        let dir = convert(f32_dir, dtype);
        for k in each_kernels(&format!("{name}_{}_end_to_end", dtype.name())) {
            let m = load(dir.path(), k, f32_bytes);
            for (i, prompt) in inputs.iter().enumerate() {
                let want_tokens = ids(&r.meta["models"][name]["runs"][dtype.name()][i]);
                let key = format!("{name}.{}.run{i}", dtype.name());
                let what = format!("{key} on {}", k.isa());
                let mut cache = m.session(1, prompt.len() + want_tokens.len()).unwrap();
                let worst = run_decoder(&what, &mut cache, prompt, &want_tokens, &r, &key);
                eprintln!(
                    "{what}: {} greedy tokens equal, logits max-abs {worst:.2e}",
                    want_tokens.len()
                );
            }
        }
    }
}

/// Greedy decoding of one run through `cache`, checked step by step.
fn run_decoder(what: &str, cache: &mut Session<'_>, prompt: &[u32], want_tokens: &[u32], r: &Refs, key: &str) -> f32 {
    let vocab = cache.vocab_size();
    let full = format!("{key}.step_logits");
    if r.tensors.names().contains(&full.as_str()) {
        return check_greedy(
            what,
            vocab,
            |t, l| cache.step(t, t.len(), LogitsFor::Last, l).unwrap(),
            prompt,
            want_tokens,
            &tensor(&r.tensors, &full),
            TINY_LOGITS_TOL,
        );
    }
    // SmolLM2: the reference keeps each step's top-256 logits and their ids.
    let top_ids = tensor(&r.tensors, &format!("{key}.topk_ids"));
    let top_vals = tensor(&r.tensors, &format!("{key}.topk_values"));
    let n_steps = r.meta["n_logit_steps"].as_u64().unwrap() as usize;
    let n_top = top_ids.len() / n_steps;
    let mut step = 0;
    let mut worst = 0.0f32;
    check_greedy(
        what,
        vocab,
        |t, l| {
            cache.step(t, t.len(), LogitsFor::Last, l).unwrap();
            if step < n_steps {
                let span = step * n_top..(step + 1) * n_top;
                let ours: Vec<f32> = top_ids[span.clone()].iter().map(|&id| l[id as usize]).collect();
                let diff = max_abs(&ours, &top_vals[span]);
                assert!(
                    diff <= SMOLLM2_LOGITS_TOL,
                    "{what} step {step}: top-{n_top} logits differ by {diff}"
                );
                worst = worst.max(diff);
            }
            step += 1;
        },
        prompt,
        want_tokens,
        &[],
        SMOLLM2_LOGITS_TOL,
    );
    worst
}

#[test]
fn llama_tiny_gqa_bf16_f16() {
    check_decoder_only("llama-tiny-gqa", &loaders::paths::fixture("llama-tiny-gqa"));
}

#[test]
fn gpt2_tiny_bf16_f16() {
    check_decoder_only("gpt2-tiny", &loaders::paths::fixture("gpt2-tiny"));
}

#[test]
fn stories260k_bf16_f16() {
    check_decoder_only(
        "stories260k",
        &loaders::paths::shared_model("stories260k").expect("the shared stories260k model"),
    );
}

/// SmolLM2 on the fastest ISA only (the tiny models cover every ISA): 30 layers x 2 dtypes x 2 prompts.
#[test]
fn smollm2_bf16_f16() {
    let f32_dir: PathBuf = smollm2_dir();
    let r = refs();
    let f32_bytes = f32_linear_bytes(&f32_dir);
    let name = "smollm2";
    let k = Kernels::new(Isa::best()).unwrap();
    for dtype in [Half::Bf16, Half::F16] {
        let dir = convert(&f32_dir, dtype);
        let m = load(dir.path(), k, f32_bytes);
        assert_eq!(m.info().architecture, "llama", "smollm2 is a Llama");
        for (i, prompt) in r.meta["models"][name]["inputs"].as_array().unwrap().iter().enumerate() {
            let prompt = ids(prompt);
            let want_tokens = ids(&r.meta["models"][name]["runs"][dtype.name()][i]);
            let key = format!("{name}.{}.run{i}", dtype.name());
            let what = format!("{key} on {}", k.isa());
            let mut cache = m.session(1, prompt.len() + want_tokens.len()).unwrap();
            let worst = run_decoder(&what, &mut cache, &prompt, &want_tokens, &r, &key);
            eprintln!(
                "{what}: {} greedy tokens equal, top-256 logits max-abs {worst:.2e}",
                want_tokens.len()
            );
        }
    }
}

/// Marian (encoder-decoder): raw-argmax decoding over each source, both dtypes, every ISA.
#[test]
fn marian_tiny_bf16_f16() {
    let name = "marian-tiny";
    let f32_dir = loaders::paths::fixture(name);
    let r = refs();
    let f32_bytes = f32_linear_bytes(&f32_dir);
    let sources: Vec<Vec<u32>> = r.meta["models"][name]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    for dtype in [Half::Bf16, Half::F16] {
        let dir = convert(&f32_dir, dtype);
        for k in each_kernels(&format!("marian_tiny_{}_end_to_end", dtype.name())) {
            let m = load(dir.path(), k, f32_bytes);
            assert_eq!(
                m.info().kind,
                qkv::ModelKind::EncoderDecoder,
                "marian-tiny is an encoder-decoder"
            );
            for (i, src) in sources.iter().enumerate() {
                let want_tokens = ids(&r.meta["models"][name]["runs"][dtype.name()][i]);
                let key = format!("{name}.{}.run{i}", dtype.name());
                let what = format!("{key} on {}", k.isa());
                let mut state = m.encode(&[src.as_slice()], 1, want_tokens.len()).unwrap();
                let start = [m.info().decoder_start_token_id.unwrap()];
                let worst = run_decoder(&what, &mut state, &start, &want_tokens, &r, &key);
                eprintln!(
                    "{what}: {} greedy tokens equal, logits max-abs {worst:.2e}",
                    want_tokens.len()
                );
            }
        }
    }
}

/// `Activations::Reduced` on bf16 weights (AVX512_BF16 only: `vdpbf16ps`): the logits along each reference run
/// (teacher forced) within [`BF16_ACTS_TOL_OF_RANGE`] of f32 activations on the same weights, free-running greedy
/// agreeing for [`BF16_ACTS_MIN_AGREE`] tokens, and greedy batches equal to each sequence alone (batch invariance,
/// which the server relies on).
#[test]
fn bf16_reduced_activations() {
    use kernels::Feature;
    if !kernels::testing::require("bf16_reduced_activations", Feature::Avx512Bf16) {
        return;
    }
    let r = refs();
    let k = Kernels::new(Isa::Avx512).unwrap();
    for (name, f32_dir) in [
        (
            "stories260k",
            loaders::paths::shared_model("stories260k").expect("the shared stories260k model"),
        ),
        ("smollm2", smollm2_dir()),
    ] {
        let f32_bytes = f32_linear_bytes(&f32_dir);
        let dir = convert(&f32_dir, Half::Bf16);
        let exact = load(dir.path(), k, f32_bytes);
        let reduced = load(dir.path(), Activations::Reduced.apply(k), f32_bytes);
        assert_eq!(reduced.kernels().bf16_gemv(), kernels::Bf16Gemv::DotBf16);
        let vocab = exact.info().vocab_size;
        let inputs = r.inputs(name);
        let mut worst = 0.0f32;
        let mut agreed = vec![];
        for (i, prompt) in inputs.iter().enumerate() {
            let path = ids(&r.meta["models"][name]["runs"]["bf16"][i]);
            let logits = |m: &Model| {
                let mut c = m.session(1, prompt.len() + path.len()).unwrap();
                let mut all = vec![0.0f32; (path.len() + 1) * vocab];
                c.step(prompt, prompt.len(), LogitsFor::Last, &mut all[..vocab])
                    .unwrap();
                for (t, &tok) in path.iter().enumerate() {
                    c.step(&[tok], 1, LogitsFor::Last, &mut all[(t + 1) * vocab..(t + 2) * vocab])
                        .unwrap();
                }
                all
            };
            let (want, got) = (logits(&exact), logits(&reduced));
            for (row, (g, w)) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)).enumerate() {
                let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let rel = max_abs(g, w) / (hi - lo).max(f32::MIN_POSITIVE);
                assert!(
                    rel <= BF16_ACTS_TOL_OF_RANGE,
                    "{name} run {i} row {row}: bf16 activations off by {:.3}% of the range",
                    100.0 * rel
                );
                worst = worst.max(rel);
            }
            let opts = GenerateOptions {
                max_new_tokens: path.len(),
                ..Default::default()
            };
            let free = reduced.stream_ids(prompt.clone(), &opts).unwrap().run().unwrap().tokens;
            let agree = free.iter().zip(&path).take_while(|(a, b)| a == b).count();
            // The reference runs a fixed number of tokens past an end-of-sequence token; `stream_ids` stops there.
            let stopped = agree == free.len() && free.len() < path.len();
            if agree < path.len() && !stopped {
                // Where they part, f32 activations' top two logits must have been a near-tie: within twice the
                // tolerance (the most two logits can move against each other), on the same prefix.
                let w = &want[agree * vocab..(agree + 1) * vocab];
                let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let mut top = w.to_vec();
                top.sort_by(|a, b| b.total_cmp(a));
                let margin = top[0] - top[1];
                assert!(
                    margin <= 2.0 * BF16_ACTS_TOL_OF_RANGE * (hi - lo),
                    "{name} run {i}: greedy parts at token {agree} where the top two logits were {margin} apart"
                );
                eprintln!(
                    "{name} run {i}: bf16 activations part from f32 activations at token {agree} of {}, a near-tie \
                     (top-2 margin {margin:.2e}, {:.3}% of the range)",
                    path.len(),
                    100.0 * margin / (hi - lo)
                );
            } else {
                eprintln!("{name} run {i}: bf16 activations: all {agree} greedy tokens equal f32 activations' (then stopped: {stopped})");
            }
            agreed.push(if stopped { path.len() } else { agree });
        }
        assert!(
            agreed.iter().sum::<usize>() >= BF16_ACTS_MIN_AGREE * agreed.len(),
            "{name}: greedy agreement {agreed:?}"
        );
        eprintln!(
            "{name}: bf16 vs f32 activations, logits max-abs {:.3}% of the range",
            100.0 * worst
        );
        let opts = GenerateOptions {
            max_new_tokens: 16,
            ..Default::default()
        };
        let serial: Vec<Vec<u32>> = inputs
            .iter()
            .map(|p| reduced.stream_ids(p.clone(), &opts).unwrap().run().unwrap().tokens)
            .collect();
        let batch = BatchOptions {
            max_seqs: 4,
            prefill_chunk: 3,
            ..Default::default()
        };
        for (g, s) in reduced
            .generate_batch_ids(&inputs, &opts, batch)
            .unwrap()
            .iter()
            .zip(&serial)
        {
            assert_eq!(
                &g.tokens, s,
                "{name}: bf16 activations, batched greedy differs from serial"
            );
        }
    }
}
