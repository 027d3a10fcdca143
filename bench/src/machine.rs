//! The machine's own limits, measured with small kernels of our own: read bandwidth and FMA peak.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub threads: usize,
    pub features: Vec<String>,
    /// Best observed read bandwidth over a buffer far larger than the caches, all threads, GB/s.
    pub read_gbs: f64,
    /// Best observed f32 FMA throughput, all threads, GFLOP/s (2 flops per FMA lane).
    pub fma_gflops: f64,
}

pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => { $( if std::arch::is_x86_feature_detected!($name) { f.push($name.to_string()); } )* };
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512bf16",
            "avx512vnni",
            "avx512fp16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            f.push("neon".to_string());
        }
    }
    f
}

/// Sum a slice with 16 independent accumulators (the compiler vectorises it; the loads are the bottleneck).
fn sum_stream(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Read bandwidth over `bytes` of memory, all rayon threads, best of `reps`.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let n = bytes / 4;
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let chunk = n.div_ceil(rayon::current_num_threads() * 8).max(1 << 16);
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..reps {
        let t = Instant::now();
        sink += buf.par_chunks(chunk).map(sum_stream).sum::<f32>();
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    bytes as f64 / best / 1e9
}

/// Independent FMA chains on one core: flops per second.
fn fma_one_thread(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected on this CPU just above.
            return unsafe { x86::fma_avx512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected on this CPU just above.
            return unsafe { x86::fma_avx2(iters) };
        }
    }
    fma_portable(iters)
}

fn fma_portable(iters: usize) -> f64 {
    let mut acc = [[1.0f32; 8]; 8];
    let m = std::hint::black_box(0.999_999f32);
    let a = std::hint::black_box(1e-7f32);
    let t = Instant::now();
    for _ in 0..iters {
        for row in acc.iter_mut() {
            for v in row.iter_mut() {
                *v = v.mul_add(m, a);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (iters * 64 * 2) as f64 / secs
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// 12 independent 16-lane FMA chains (enough to cover FMA latency × throughput).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512(iters: usize) -> f64 {
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        let mut r = [_mm512_set1_ps(1.0); 12];
        let t = Instant::now();
        for _ in 0..iters {
            for v in r.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(&r);
        (iters * 12 * 16 * 2) as f64 / secs
    }

    /// 12 independent 8-lane FMA chains.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2(iters: usize) -> f64 {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut r = [_mm256_set1_ps(1.0); 12];
        let t = Instant::now();
        for _ in 0..iters {
            for v in r.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(&r);
        (iters * 12 * 8 * 2) as f64 / secs
    }
}

/// FMA peak over all rayon threads, best of `reps`.
pub fn fma_peak(reps: usize) -> f64 {
    let threads = rayon::current_num_threads();
    (0..reps)
        .map(|_| {
            (0..threads)
                .into_par_iter()
                .map(|_| fma_one_thread(20_000_000))
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
        / 1e9
}

pub fn measure(quick: bool) -> Machine {
    let (bytes, reps) = if quick { (256 << 20, 5) } else { (1 << 30, 10) };
    Machine {
        cpu: cpu_name(),
        threads: rayon::current_num_threads(),
        features: cpu_features(),
        read_gbs: read_bandwidth(bytes, reps),
        fma_gflops: fma_peak(if quick { 2 } else { 4 }),
    }
}
