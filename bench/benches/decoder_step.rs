//! One decoder step per model family, on random weights of the real shapes (written to a scratch directory with
//! a config.json, then opened with `Model::load_with` like any model):
//! Llama (SmolLM2-135M: 30 layers, d 576, GQA 9/3 heads, vocab 49152), GPT-2 small (12 layers, d 768,
//! vocab 50257) and Marian (opus-mt base: 6+6 layers, d 512, vocab 58101, post-norm, cross-attention).
//! f32 and bf16 weights, int8 at load, each with f32 or reduced activations (`bf16-dot`, `int8-x`), batch 1 and
//! 16, about 128 positions in the cache.
//!
//! A step is one new token per row through every layer and the LM head — the unit of batch-1 decoding, bound
//! by reading the weights once (bytes of weights ÷ bandwidth). Criterion reports the time of one step; the
//! session is refilled (untimed) every `STEPS_PER_FILL` steps so its cache length stays within 128..192.
//!
//! `cargo bench -p bench --bench decoder_step` (add `-- llama` etc. to pick a family)

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use kernels::Kernels;
use loaders::Dtype;
use qkv::{Activations, LoadOptions, LogitsFor, Model, Session, WeightType};
use serde_json::json;

/// Positions in the cache before the timed steps (prompt or source length).
const CONTEXT: usize = 128;
/// Steps between two refills of the cache.
const STEPS_PER_FILL: usize = 64;

/// Random weights in [-0.05, 0.05) (a fixed xorshift stream), stored as `dtype`, written with a config.json to a
/// model directory that `Model::load_with` opens like any other.
struct Random {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    state: u64,
    dtype: Dtype,
}

impl Random {
    fn new(dtype: Dtype) -> Self {
        Self {
            tensors: Vec::new(),
            state: 0x9e37_79b9_7f4a_7c15,
            dtype,
        }
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                ((self.state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }

    /// A matrix (or embedding) in the model's weight dtype.
    fn weight(&mut self, name: &str, shape: &[usize]) {
        let v = self.values(shape.iter().product());
        let (dtype, bytes) = match self.dtype {
            Dtype::BF16 => {
                let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                (Dtype::BF16, bytemuck::cast_slice(&b).to_vec())
            }
            _ => (Dtype::F32, bytemuck::cast_slice(&v).to_vec()),
        };
        self.tensors.push((name.to_string(), dtype, shape.to_vec(), bytes));
    }

    /// A norm scale or a bias: f32, near `center`.
    fn vector(&mut self, name: &str, n: usize, center: f32) {
        let v: Vec<f32> = self.values(n).iter().map(|x| center + x).collect();
        self.tensors
            .push((name.to_string(), Dtype::F32, vec![n], bytemuck::cast_slice(&v).to_vec()));
    }

    /// Write `config` and the weights into `dir` and load it with `opts`.
    fn load(self, dir: &Path, config: serde_json::Value, opts: &LoadOptions) -> Model {
        std::fs::write(dir.join("config.json"), config.to_string()).expect("write config.json");
        loaders::safetensors::write(&dir.join("model.safetensors"), &self.tensors, None).expect("write weights");
        drop(self);
        Model::load_with(dir, opts).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// SmolLM2-135M's shape.
fn smollm2_135m(dtype: Dtype, opts: &LoadOptions, dir: &Path) -> Model {
    let (d, n_layers, n_heads, n_kv, hd, ff, vocab) = (576, 30, 9, 3, 64, 1536, 49152);
    let config = json!({
        "model_type": "llama", "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads, "num_key_value_heads": n_kv, "head_dim": hd, "vocab_size": vocab,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true,
    });
    let (q, kv) = (n_heads * hd, n_kv * hd);
    let mut w = Random::new(dtype);
    w.weight("model.embed_tokens.weight", &[vocab, d]);
    for l in 0..n_layers {
        let n = |s: &str| format!("model.layers.{l}.{s}");
        w.vector(&n("input_layernorm.weight"), d, 1.0);
        w.vector(&n("post_attention_layernorm.weight"), d, 1.0);
        for (name, out, inp) in [
            ("self_attn.q_proj", q, d),
            ("self_attn.k_proj", kv, d),
            ("self_attn.v_proj", kv, d),
            ("self_attn.o_proj", d, q),
            ("mlp.gate_proj", ff, d),
            ("mlp.up_proj", ff, d),
            ("mlp.down_proj", d, ff),
        ] {
            w.weight(&n(&format!("{name}.weight")), &[out, inp]);
        }
    }
    w.vector("model.norm.weight", d, 1.0);
    w.load(dir, config, opts)
}

/// GPT-2 small's shape.
fn gpt2_small(dtype: Dtype, opts: &LoadOptions, dir: &Path) -> Model {
    let (vocab, n_positions, d, n_layer, ff) = (50257, 1024, 768, 12, 3072);
    let config = json!({
        "model_type": "gpt2", "vocab_size": vocab, "n_positions": n_positions, "n_embd": d, "n_layer": n_layer,
        "n_head": 12, "n_inner": ff, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "scale_attn_weights": true,
    });
    let mut w = Random::new(dtype);
    w.weight("wte.weight", &[vocab, d]);
    w.weight("wpe.weight", &[n_positions, d]);
    for l in 0..n_layer {
        let n = |s: &str| format!("h.{l}.{s}");
        for ln in ["ln_1", "ln_2"] {
            w.vector(&n(&format!("{ln}.weight")), d, 1.0);
            w.vector(&n(&format!("{ln}.bias")), d, 0.0);
        }
        // Conv1D: [in, out]
        for (name, inp, out) in [
            ("attn.c_attn", d, 3 * d),
            ("attn.c_proj", d, d),
            ("mlp.c_fc", d, ff),
            ("mlp.c_proj", ff, d),
        ] {
            w.weight(&n(&format!("{name}.weight")), &[inp, out]);
            w.vector(&n(&format!("{name}.bias")), out, 0.0);
        }
    }
    w.vector("ln_f.weight", d, 1.0);
    w.vector("ln_f.bias", d, 0.0);
    w.load(dir, config, opts)
}

/// opus-mt base's shape (Marian: post-norm, tied embeddings shared by both sides).
fn marian_base(dtype: Dtype, opts: &LoadOptions, dir: &Path) -> Model {
    let (vocab, d, n_layers, ff) = (58101, 512, 6, 2048);
    let config = json!({
        "model_type": "marian", "vocab_size": vocab, "d_model": d, "encoder_layers": n_layers,
        "decoder_layers": n_layers, "encoder_attention_heads": 8, "decoder_attention_heads": 8,
        "encoder_ffn_dim": ff, "decoder_ffn_dim": ff, "activation_function": "swish",
        "max_position_embeddings": 512, "scale_embedding": true, "tie_word_embeddings": true,
        "share_encoder_decoder_embeddings": true, "decoder_start_token_id": 58100, "eos_token_id": 0,
        "pad_token_id": 58100,
    });
    let mut w = Random::new(dtype);
    w.weight("model.shared.weight", &[vocab, d]);
    let block = |w: &mut Random, pre: &str, parts: &[&str]| {
        for part in parts {
            let n = format!("{pre}.{part}");
            let (out, inp) = match *part {
                "fc1" => (ff, d),
                "fc2" => (d, ff),
                _ => (d, d),
            };
            if part.ends_with("layer_norm") {
                w.vector(&format!("{n}.weight"), d, 1.0);
                w.vector(&format!("{n}.bias"), d, 0.0);
            } else {
                w.weight(&format!("{n}.weight"), &[out, inp]);
                w.vector(&format!("{n}.bias"), out, 0.0);
            }
        }
    };
    let attn = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
    ];
    let cross = [
        "encoder_attn.q_proj",
        "encoder_attn.k_proj",
        "encoder_attn.v_proj",
        "encoder_attn.out_proj",
    ];
    let ffn = ["fc1", "fc2", "self_attn_layer_norm", "final_layer_norm"];
    for l in 0..n_layers {
        let pre = format!("model.encoder.layers.{l}");
        block(&mut w, &pre, &attn);
        block(&mut w, &pre, &ffn);
    }
    for l in 0..n_layers {
        let pre = format!("model.decoder.layers.{l}");
        block(&mut w, &pre, &attn);
        block(&mut w, &pre, &cross);
        block(&mut w, &pre, &ffn);
        block(&mut w, &pre, &["encoder_attn_layer_norm"]);
    }
    w.load(dir, config, opts)
}

/// Token ids of a row (not special ones: 3..).
fn tokens(batch: usize, n: usize, vocab: usize) -> Vec<u32> {
    (0..batch * n).map(|i| 3 + (i * 7919 % (vocab - 3)) as u32).collect()
}

/// Time `iters` decoder steps, refilling the session (untimed) with `fill` every `STEPS_PER_FILL` steps.
fn time_steps<'m>(vocab: usize, batch: usize, iters: u64, fill: &dyn Fn() -> Session<'m>) -> Duration {
    let mut logits = vec![0.0f32; batch * vocab];
    let next = tokens(batch, 1, vocab);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let mut session = fill();
        let n = STEPS_PER_FILL.min((iters - done) as usize);
        let t = Instant::now();
        for _ in 0..n {
            session.step(&next, 1, LogitsFor::Last, &mut logits).expect("step");
        }
        total += t.elapsed();
        std::hint::black_box(&logits);
        done += n as u64;
    }
    total
}

/// The weight variants: stored dtype, how the linear layers hold and multiply it, and the benchmark's name.
const VARIANTS: [(Dtype, WeightType, Activations, &str); 5] = [
    (Dtype::F32, WeightType::Stored, Activations::F32, "f32"),
    (Dtype::BF16, WeightType::Stored, Activations::F32, "bf16"),
    (Dtype::BF16, WeightType::Stored, Activations::Reduced, "bf16-dot"),
    (Dtype::F32, WeightType::Int8, Activations::F32, "int8"),
    (Dtype::F32, WeightType::Int8, Activations::Reduced, "int8-x"),
];
/// Rows per step: batch 1 (decoding one sequence) and 16 (a server's batch, or 4 beams x 4).
const BATCHES: [usize; 2] = [1, 16];

/// A family of random weights, built (and written to a scratch directory) once per variant.
type Build = fn(Dtype, &LoadOptions, &Path) -> Model;

/// The load options of a variant on `kernels`.
fn options(kernels: Kernels, weights: WeightType, activations: Activations) -> LoadOptions {
    LoadOptions {
        kernels: Some(kernels),
        weights,
        activations,
        ..Default::default()
    }
}

/// A decoder-only family: the session is refilled with a `CONTEXT`-token prompt per row.
fn bench_decoder_only(c: &mut Criterion, group: &str, build: Build) {
    let kernels = Kernels::detect().expect("kernels");
    let mut g = c.benchmark_group(group);
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (dtype, weights, acts, dname) in VARIANTS {
        let dir = tempfile::tempdir().expect("scratch directory");
        let m = build(dtype, &options(kernels, weights, acts), dir.path());
        let vocab = m.info().vocab_size;
        for batch in BATCHES {
            let prompt = tokens(batch, CONTEXT, vocab);
            let fill = || {
                let mut session = m.session(batch, CONTEXT + STEPS_PER_FILL).expect("session");
                let mut logits = vec![0.0f32; batch * vocab];
                session
                    .step(&prompt, CONTEXT, LogitsFor::Last, &mut logits)
                    .expect("prefill");
                session
            };
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(dname, format!("batch{batch}")), |b| {
                b.iter_custom(|iters| time_steps(vocab, batch, iters, &fill))
            });
        }
    }
    g.finish();
}

fn bench_llama(c: &mut Criterion) {
    bench_decoder_only(c, "llama_smollm2_135m_step", smollm2_135m);
}

fn bench_gpt2(c: &mut Criterion) {
    bench_decoder_only(c, "gpt2_small_step", gpt2_small);
}

/// Marian: the decoder step after the source (CONTEXT tokens) is encoded and its cross K/V projected; the
/// session holds the decoder positions so far (0..64), the cross-attention reads all CONTEXT source positions.
fn bench_marian(c: &mut Criterion) {
    let kernels = Kernels::detect().expect("kernels");
    let mut g = c.benchmark_group("marian_base_step");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (dtype, weights, acts, dname) in VARIANTS {
        let dir = tempfile::tempdir().expect("scratch directory");
        let m = marian_base(dtype, &options(kernels, weights, acts), dir.path());
        let (src_vocab, vocab) = (m.info().src_vocab_size, m.info().vocab_size);
        let eos = m.eos_ids()[0];
        for batch in BATCHES {
            let sources: Vec<Vec<u32>> = (0..batch)
                .map(|b| {
                    let mut s = tokens(1, CONTEXT - 1, src_vocab);
                    s.rotate_left(b);
                    s.push(eos);
                    s
                })
                .collect();
            let refs: Vec<&[u32]> = sources.iter().map(|s| s.as_slice()).collect();
            let fill = || m.encode(&refs, batch, STEPS_PER_FILL).expect("encode");
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(dname, format!("batch{batch}")), |b| {
                b.iter_custom(|iters| time_steps(vocab, batch, iters, &fill))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_llama, bench_gpt2, bench_marian);
criterion_main!(benches);
