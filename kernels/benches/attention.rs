//! Fused attention against `reference::attention`: causal prefill of 2048 tokens and decode over
//! 2048 / 8192-entry caches (8 heads, head_dim 64), on every ISA this CPU has.
//!
//! `cargo bench -p kernels --bench attention`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::{reference, AttnArgs, Isa, Kernels, Mask, Strides};

const N_HEADS: usize = 8;
const HEAD_DIM: usize = 64;

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn args(q_len: usize, kv_len: usize, kv_strides: Strides, mask: Mask) -> AttnArgs<'static> {
    let q_strides = Strides::token_major(q_len, N_HEADS, HEAD_DIM);
    AttnArgs {
        batch: 1,
        n_heads: N_HEADS,
        n_kv_heads: N_HEADS,
        head_dim: HEAD_DIM,
        q_len,
        kv_len,
        scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        softcap: None,
        position_bias: None,
        mask,
        key_lens: None,
        q_strides,
        kv_strides,
        out_strides: q_strides,
    }
}

/// Causal self-attention over 2048 tokens (decoder prefill).
fn prefill(c: &mut Criterion) {
    let len = 2048;
    let a = args(
        len,
        len,
        Strides::token_major(len, N_HEADS, HEAD_DIM),
        Mask::Causal { q_offset: 0 },
    );
    let n = len * N_HEADS * HEAD_DIM;
    let (q, k, v) = (data(n, 1), data(n, 2), data(n, 3));
    let mut out = vec![0.0f32; n];
    let mut g = c.benchmark_group("attention_causal_2048x8x64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(len as u64));
    g.bench_function("reference", |bch| {
        bch.iter(|| reference::attention(&a, &q, &k, &v, &mut out))
    });
    for isa in Isa::available() {
        let kern = Kernels::new(isa).unwrap();
        g.bench_function(BenchmarkId::new("fused", isa), |bch| {
            bch.iter(|| kern.attention(&a, &q, &k, &v, &mut out))
        });
    }
    g.finish();
}

/// One query token over a head-major cache of 8192 positions holding `kv_len` entries.
fn decode(c: &mut Criterion) {
    let capacity = 8192;
    let kv_strides = Strides::head_major(N_HEADS, capacity, HEAD_DIM);
    let (k, v) = (
        data(N_HEADS * capacity * HEAD_DIM, 2),
        data(N_HEADS * capacity * HEAD_DIM, 3),
    );
    let q = data(N_HEADS * HEAD_DIM, 1);
    let mut out = vec![0.0f32; N_HEADS * HEAD_DIM];
    for kv_len in [2048, 8192] {
        let a = args(1, kv_len, kv_strides, Mask::Causal { q_offset: kv_len - 1 });
        let mut g = c.benchmark_group(format!("attention_decode_{kv_len}x8x64"));
        g.throughput(Throughput::Elements(kv_len as u64));
        g.bench_function("reference", |bch| {
            bch.iter(|| reference::attention(&a, &q, &k, &v, &mut out))
        });
        for isa in Isa::available() {
            let kern = Kernels::new(isa).unwrap();
            g.bench_function(BenchmarkId::new("fused", isa), |bch| {
                bch.iter(|| kern.attention(&a, &q, &k, &v, &mut out))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, prefill, decode);
criterion_main!(benches);
