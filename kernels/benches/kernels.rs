//! Each kernel on the detected ISA (`QKV_ISA` to force one) against its naive reference.
//! `cargo bench -p kernels --bench kernels`. Kept short: 10 samples, ~2 s per benchmark.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::{bf16, f16, reference, Activation, BlockType, Kernels, Layout, PackedWeight, Weight, WeightData};

fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

fn gemv(c: &mut Criterion) {
    let k = Kernels::detect().expect("ISA");
    let mut g = c.benchmark_group(format!("gemv/{}", k.isa()));
    for &(out_dim, in_dim) in &[(1536usize, 576usize), (2048, 2048), (2048, 8192)] {
        let v = vals(out_dim * in_dim, 1);
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let x = vals(in_dim, 2);
        let mut y = vec![0.0f32; out_dim];
        for (name, data, bytes) in [
            ("f32", WeightData::F32(&v), 4),
            ("f16", WeightData::F16(&h), 2),
            ("bf16", WeightData::Bf16(&b), 2),
        ] {
            let w = Weight::new(data, out_dim, in_dim, Layout::OutIn).unwrap();
            g.throughput(Throughput::Bytes((out_dim * in_dim * bytes) as u64));
            let id = format!("{name}/{out_dim}x{in_dim}");
            g.bench_function(BenchmarkId::new("kernel", &id), |bn| {
                bn.iter(|| k.linear(&x, 1, &w, None, &mut y))
            });
            if out_dim * in_dim <= 1 << 20 {
                g.bench_function(BenchmarkId::new("reference", &id), |bn| {
                    bn.iter(|| reference::linear(&x, 1, &w, None, &mut y))
                });
            }
        }
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let k = Kernels::detect().expect("ISA");
    let mut g = c.benchmark_group(format!("gemm/{}", k.isa()));
    let (m, kd, nd) = (512usize, 2048usize, 2048usize);
    let v = vals(nd * kd, 3);
    let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    let x = vals(m * kd, 4);
    let mut y = vec![0.0f32; m * nd];
    g.throughput(Throughput::Elements((2 * m * kd * nd) as u64));
    for (name, data) in [("f32", WeightData::F32(&v)), ("bf16", WeightData::Bf16(&b))] {
        let w = Weight::new(data, nd, kd, Layout::OutIn).unwrap();
        g.bench_function(format!("kernel/{name}/{m}x{kd}x{nd}"), |bn| {
            bn.iter(|| k.linear(&x, m, &w, None, &mut y))
        });
    }
    g.finish();
}

fn rows(c: &mut Criterion) {
    let k = Kernels::detect().expect("ISA");
    let mut g = c.benchmark_group(format!("rows/{}", k.isa()));
    let (n, n_rows) = (2048usize, 16usize);
    let x = vals(n * n_rows, 5);
    let gamma = vals(n, 6);
    let beta = vals(n, 7);
    let mut out = vec![0.0f32; n * n_rows];
    g.throughput(Throughput::Elements((n * n_rows) as u64));
    g.bench_function("layer_norm/kernel", |bn| {
        bn.iter(|| k.layer_norm(&x, &gamma, &beta, 1e-5, &mut out))
    });
    g.bench_function("layer_norm/reference", |bn| {
        bn.iter(|| reference::layer_norm(&x, &gamma, &beta, 1e-5, &mut out))
    });
    g.bench_function("rms_norm/kernel", |bn| {
        bn.iter(|| k.rms_norm(&x, &gamma, 1e-5, &mut out))
    });
    g.bench_function("rms_norm/reference", |bn| {
        bn.iter(|| reference::rms_norm(&x, &gamma, 1e-5, &mut out))
    });
    let mut s = vals(32000, 8);
    g.throughput(Throughput::Elements(s.len() as u64));
    g.bench_function("softmax_32000/kernel", |bn| bn.iter(|| k.softmax(&mut s)));
    g.bench_function("softmax_32000/reference", |bn| bn.iter(|| reference::softmax(&mut s)));
    let mut a = vals(8192, 9);
    g.throughput(Throughput::Elements(a.len() as u64));
    for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
        g.bench_function(format!("{act:?}_8192/kernel"), |bn| {
            bn.iter(|| k.activation(act, &mut a))
        });
        g.bench_function(format!("{act:?}_8192/reference"), |bn| {
            bn.iter(|| reference::activation(act, &mut a))
        });
    }
    let logits = vals(151_936, 10);
    g.throughput(Throughput::Elements(logits.len() as u64));
    g.bench_function("argmax_151936/kernel", |bn| bn.iter(|| k.argmax(&logits)));
    g.bench_function("argmax_151936/reference", |bn| bn.iter(|| reference::argmax(&logits)));
    g.bench_function("top_k50_151936/kernel", |bn| bn.iter(|| k.top_k(&logits, 50)));
    g.bench_function("top_k50_151936/reference", |bn| {
        bn.iter(|| reference::top_k(&logits, 50))
    });
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = gemv, gemm, rows, blocks }
criterion_main!(benches);

/// Batch-1 GEMV on packed weights, f32 against GGUF block types (activations quantized per call, as the engine
/// runs them), cold: each call reads the next of enough copies to exceed 256 MiB, so the weights come from DRAM.
fn blocks(c: &mut Criterion) {
    const COLD: usize = 256 << 20;
    let k = Kernels::detect().expect("ISA");
    let mut g = c.benchmark_group(format!("gemv_blocks/{}", k.isa()));
    let (out_dim, in_dim) = (2048usize, 8192usize);
    let v = vals(out_dim * in_dim, 5);
    let w = Weight::new(WeightData::F32(&v), out_dim, in_dim, Layout::OutIn).unwrap();
    let x = vals(in_dim, 6);
    let mut y = vec![0.0f32; out_dim];
    let kinds: [(&str, Option<BlockType>); 6] = [
        ("f32", None),
        ("q8_0", Some(BlockType::Q8_0)),
        ("q4_0", Some(BlockType::Q4_0)),
        ("q4_k", Some(BlockType::Q4_K)),
        ("q5_k", Some(BlockType::Q5_K)),
        ("q6_k", Some(BlockType::Q6_K)),
    ];
    for (name, ty) in kinds {
        let one = match ty {
            None => PackedWeight::new(&k, &w).unwrap(),
            Some(BlockType::Q5_K) | Some(BlockType::Q6_K) => {
                // No quantizer for these: random bytes with small finite scales (the speed does not depend on
                // the values).
                let ty = ty.unwrap();
                let mut bytes: Vec<u8> = (0..ty.matrix_bytes(out_dim, in_dim).unwrap())
                    .map(|i| (i * 7919 % 251) as u8)
                    .collect();
                let d = f16::from_f32(1e-3).to_bits().to_le_bytes();
                for blk in bytes.chunks_exact_mut(ty.block_bytes()) {
                    let at = if ty == BlockType::Q6_K { 208 } else { 0 };
                    blk[at..at + 2].copy_from_slice(&d);
                }
                PackedWeight::from_blocks(&k, ty, &bytes, out_dim, in_dim).unwrap()
            }
            Some(ty) => PackedWeight::quantize_blocks(&k, &[w], ty).unwrap(),
        };
        let bytes = one.bytes();
        let copies: Vec<PackedWeight> = (0..COLD.div_ceil(bytes)).map(|_| one.clone()).collect();
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut i = 0;
        g.bench_function(BenchmarkId::new("cold", format!("{name}/1x{out_dim}x{in_dim}")), |bn| {
            bn.iter(|| {
                i = (i + 1) % copies.len();
                k.linear_packed(&x, 1, &copies[i], None, &mut y)
            })
        });
    }
    g.finish();
}
