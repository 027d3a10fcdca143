//! One decoder step per model family, on random weights of the real shapes (no files needed):
//! Llama (SmolLM2-135M: 30 layers, d 576, GQA 9/3 heads, vocab 49152), GPT-2 small (12 layers, d 768,
//! vocab 50257) and Marian (opus-mt base: 6+6 layers, d 512, vocab 58101, post-norm, cross-attention).
//! f32 and bf16 weights, batch 1 and 8, about 128 positions in the cache.
//!
//! A step is one new token per row through every layer and the LM head — the unit of batch-1 decoding, bound
//! by reading the weights once (bytes of weights ÷ bandwidth). Criterion reports the time of one step; the
//! cache is refilled (untimed) every `STEPS_PER_FILL` steps so its length stays within 128..192.
//!
//! `cargo bench -p bench --bench decoder_step` (add `-- llama` etc. to pick a family)

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use kernels::{Activation, Kernels, Sinusoid};
use loaders::{Dtype, Tensor};
use qkv::gpt2::{Gpt2, Gpt2Params};
use qkv::llama::{Llama, LlamaParams};
use qkv::seq2seq::{NormPlacement, Positions, Seq2Seq, Seq2SeqConfig, WeightNames};
use qkv::{Decoder, TensorMap};

/// Positions in the cache before the timed steps (prompt or source length).
const CONTEXT: usize = 128;
/// Steps between two refills of the cache.
const STEPS_PER_FILL: usize = 64;

/// Random weights in [-0.05, 0.05) (a fixed xorshift stream), stored as `dtype`.
struct Random {
    map: TensorMap,
    state: u64,
    dtype: Dtype,
}

impl Random {
    fn new(dtype: Dtype) -> Self {
        Self {
            map: TensorMap::new("random weights"),
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
        let t = match self.dtype {
            Dtype::BF16 => {
                let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                Tensor::from_bytes(name, Dtype::BF16, shape.to_vec(), bytemuck::cast_slice(&b))
            }
            _ => Tensor::from_f32(name, shape.to_vec(), &v),
        };
        self.map.insert(t.expect("shape and bytes agree"));
    }

    /// A norm scale or a bias: f32, near `center`.
    fn vector(&mut self, name: &str, n: usize, center: f32) {
        let v: Vec<f32> = self.values(n).iter().map(|x| center + x).collect();
        self.map.insert_f32(name, &[n], &v).expect("shape");
    }
}

fn smollm2_135m(dtype: Dtype, kernels: Kernels) -> Llama {
    let p = LlamaParams {
        hidden_size: 576,
        intermediate_size: 1536,
        n_layers: 30,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        max_positions: 8192,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        tie_word_embeddings: true,
        attention_bias: false,
        mlp_bias: false,
    };
    let (d, q, kv, ff) = (
        p.hidden_size,
        p.n_heads * p.head_dim,
        p.n_kv_heads * p.head_dim,
        p.intermediate_size,
    );
    let mut w = Random::new(dtype);
    w.weight("model.embed_tokens.weight", &[p.vocab_size, d]);
    for l in 0..p.n_layers {
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
    Llama::new(&w.map, &p, kernels).expect("SmolLM2-135M shape")
}

fn gpt2_small(dtype: Dtype, kernels: Kernels) -> Gpt2 {
    let p = Gpt2Params {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        n_inner: 3072,
        layer_norm_epsilon: 1e-5,
        activation: Activation::GeluTanh,
        scale_attn_weights: true,
    };
    let (d, ff) = (p.n_embd, p.n_inner);
    let mut w = Random::new(dtype);
    w.weight("wte.weight", &[p.vocab_size, d]);
    w.weight("wpe.weight", &[p.n_positions, d]);
    for l in 0..p.n_layer {
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
    Gpt2::new(&w.map, &p, kernels).expect("GPT-2 small shape")
}

fn marian_base(dtype: Dtype, kernels: Kernels) -> Seq2Seq {
    let cfg = Seq2SeqConfig {
        names: WeightNames::Marian,
        d_model: 512,
        n_encoder_layers: 6,
        n_decoder_layers: 6,
        n_encoder_heads: 8,
        n_decoder_heads: 8,
        encoder_ffn_dim: 2048,
        decoder_ffn_dim: 2048,
        activation: Activation::Silu,
        norm: NormPlacement::PostNorm,
        layer_norm_eps: 1e-5,
        embed_scale: (512f32).sqrt(),
        positions: Positions {
            kind: Sinusoid::Marian,
            first: 0,
            max: 512,
        },
        src_vocab_size: 58101,
        tgt_vocab_size: 58101,
        tied_lm_head: true,
        decoder_start_token_id: 58100,
        eos_token_id: 0,
        pad_token_id: 58100,
    };
    let (d, ff) = (cfg.d_model, cfg.encoder_ffn_dim);
    let mut w = Random::new(dtype);
    w.weight("model.shared.weight", &[cfg.src_vocab_size, d]);
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
    for l in 0..cfg.n_encoder_layers {
        let pre = format!("model.encoder.layers.{l}");
        block(&mut w, &pre, &attn);
        block(&mut w, &pre, &ffn);
    }
    for l in 0..cfg.n_decoder_layers {
        let pre = format!("model.decoder.layers.{l}");
        block(&mut w, &pre, &attn);
        block(&mut w, &pre, &cross);
        block(&mut w, &pre, &ffn);
        block(&mut w, &pre, &["encoder_attn_layer_norm"]);
    }
    Seq2Seq::load(&w.map, cfg, kernels).expect("Marian base shape")
}

/// Token ids of a row (not special ones: 3..).
fn tokens(batch: usize, n: usize, vocab: usize) -> Vec<u32> {
    (0..batch * n).map(|i| 3 + (i * 7919 % (vocab - 3)) as u32).collect()
}

/// Time `iters` decoder steps, refilling the cache (untimed) with `fill` every `STEPS_PER_FILL` steps.
fn time_steps<D: Decoder>(dec: &D, batch: usize, iters: u64, fill: &dyn Fn() -> D::Cache) -> Duration {
    let vocab = dec.vocab_size();
    let mut logits = vec![0.0f32; batch * vocab];
    let next = tokens(batch, 1, vocab);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let mut cache = fill();
        let n = STEPS_PER_FILL.min((iters - done) as usize);
        let t = Instant::now();
        for _ in 0..n {
            dec.step(&mut cache, &next, 1, &mut logits).expect("step");
        }
        total += t.elapsed();
        std::hint::black_box(&logits);
        done += n as u64;
    }
    total
}

const DTYPES: [(Dtype, &str); 2] = [(Dtype::F32, "f32"), (Dtype::BF16, "bf16")];
const BATCHES: [usize; 2] = [1, 8];

/// A decoder-only family: `build` makes the model for a weight dtype, `new_cache` a cache for (batch, capacity).
fn bench_decoder_only<D: Decoder>(
    c: &mut Criterion,
    group: &str,
    build: impl Fn(Dtype, Kernels) -> D,
    new_cache: impl Fn(&D, usize, usize) -> D::Cache,
) {
    let kernels = Kernels::detect().expect("kernels");
    let mut g = c.benchmark_group(group);
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (dtype, dname) in DTYPES {
        let m = build(dtype, kernels);
        for batch in BATCHES {
            let prompt = tokens(batch, CONTEXT, m.vocab_size());
            let fill = || {
                let mut cache = new_cache(&m, batch, CONTEXT + STEPS_PER_FILL);
                let mut logits = vec![0.0f32; batch * m.vocab_size()];
                m.step(&mut cache, &prompt, CONTEXT, &mut logits).expect("prefill");
                cache
            };
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(dname, format!("batch{batch}")), |b| {
                b.iter_custom(|iters| time_steps(&m, batch, iters, &fill))
            });
        }
    }
    g.finish();
}

fn bench_llama(c: &mut Criterion) {
    bench_decoder_only(c, "llama_smollm2_135m_step", smollm2_135m, |m, b, n| {
        m.new_cache(b, n).expect("cache")
    });
}

fn bench_gpt2(c: &mut Criterion) {
    bench_decoder_only(c, "gpt2_small_step", gpt2_small, |m, b, n| {
        m.new_cache(b, n).expect("cache")
    });
}

/// Marian: the decoder step after the source (CONTEXT tokens) is encoded and its cross K/V projected; the
/// cache holds the decoder positions so far (0..64), the cross-attention reads all CONTEXT source positions.
fn bench_marian(c: &mut Criterion) {
    let kernels = Kernels::detect().expect("kernels");
    let mut g = c.benchmark_group("marian_base_step");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (dtype, dname) in DTYPES {
        let m = marian_base(dtype, kernels);
        let src_vocab = m.config().src_vocab_size;
        for batch in BATCHES {
            let sources: Vec<Vec<u32>> = (0..batch)
                .map(|b| {
                    let mut s = tokens(1, CONTEXT - 1, src_vocab);
                    s.rotate_left(b);
                    s.push(m.config().eos_token_id);
                    s
                })
                .collect();
            let refs: Vec<&[u32]> = sources.iter().map(|s| s.as_slice()).collect();
            let fill = || m.start(&refs, batch, STEPS_PER_FILL).expect("encode");
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(dname, format!("batch{batch}")), |b| {
                b.iter_custom(|iters| time_steps(&m, batch, iters, &fill))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_llama, bench_gpt2, bench_marian);
criterion_main!(benches);
