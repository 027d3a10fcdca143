//! GEMM throughput A/B: `cargo run --release -p kernels --example gemm [isa] [threads] [m n k]`.
//! Prints GFLOP/s per wall second and per CPU second (this process's threads, from Linux schedstat: on a loaded
//! machine CPU time is the fairer figure), next to an FMA peak measured the same way on the same threads.

use std::time::Instant;

use kernels::{quantize_i8, I8Dot, I8Range, Isa, Kernels, Layout, PackedWeight, QuantizedRows, Weight, WeightData};

/// Run time of every thread of this process so far, in seconds (Linux schedstat; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// (best wall seconds, CPU seconds per run over the timed runs) of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let c0 = cpu_seconds();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let s = Instant::now();
        f();
        best = best.min(s.elapsed().as_secs_f64());
    }
    (best, (cpu_seconds() - c0) / reps as f64)
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// FMA peak of one thread (12 independent chains of the ISA's widest vector), per CPU second; the same loop as
/// `qkv-bench machine`.
fn fma_peak(isa: Isa) -> f64 {
    let iters = 50_000_000usize;
    let c0 = cpu_seconds();
    let lanes: usize = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the ISA was checked by `Kernels::new` in main.
        Isa::Avx512 => unsafe { x86::fma_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::fma_avx2(iters) },
        _ => return f64::NAN,
    };
    (iters * 12 * lanes * 2) as f64 / (cpu_seconds() - c0) / 1e9
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512(iters: usize) -> usize {
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        let mut r = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in r.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(&r);
        16
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2(iters: usize) -> usize {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut r = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in r.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(&r);
        8
    }
}

/// Batch-1..4 GEMV over `copies` matrices taken in turn (so each call reads DRAM when they exceed L3): stored layout
/// (`linear`) vs packed (`linear_packed`), GB/s of weights per wall second.
fn gemv(ks: Kernels, threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    for &(out_dim, in_dim, total_mb) in &[(2048usize, 8192usize, 512usize), (1536, 576, 0)] {
        let vals = rand_vec(out_dim * in_dim, 3);
        let q = quantize_i8(&Weight::new(WeightData::F32(&vals), out_dim, in_dim, Layout::OutIn).unwrap());
        let wb: Vec<kernels::bf16> = vals.iter().map(|&v| kernels::bf16::from_f32(v)).collect();
        let wh: Vec<kernels::f16> = vals.iter().map(|&v| kernels::f16::from_f32(v)).collect();
        let dtypes: Vec<(&str, WeightData<'_>)> = vec![
            ("f32", WeightData::F32(&vals)),
            ("bf16", WeightData::Bf16(&wb)),
            ("f16", WeightData::F16(&wh)),
            ("i8", q.weight().data),
        ];
        for (name, data) in dtypes {
            let w = Weight::new(data, out_dim, in_dim, Layout::OutIn).unwrap();
            let n_copies = ((total_mb << 20) / data.bytes()).max(1);
            let packed: Vec<PackedWeight> = (0..n_copies).map(|_| PackedWeight::new(&ks, &w).unwrap()).collect();
            // Stored copies: the packed weights' own storage is not a `Weight`, so copy the stored bytes.
            let stored_f32: Vec<Vec<f32>>;
            let stored_h: Vec<Vec<kernels::f16>>;
            let stored_b: Vec<Vec<kernels::bf16>>;
            let stored_q: Vec<kernels::QuantizedI8>;
            let stored: Vec<Weight<'_>> = match data {
                WeightData::F32(d) => {
                    stored_f32 = (0..n_copies).map(|_| d.to_vec()).collect();
                    stored_f32
                        .iter()
                        .map(|d| Weight::new(WeightData::F32(d), out_dim, in_dim, Layout::OutIn).unwrap())
                        .collect()
                }
                WeightData::F16(d) => {
                    stored_h = (0..n_copies).map(|_| d.to_vec()).collect();
                    stored_h
                        .iter()
                        .map(|d| Weight::new(WeightData::F16(d), out_dim, in_dim, Layout::OutIn).unwrap())
                        .collect()
                }
                WeightData::Bf16(d) => {
                    stored_b = (0..n_copies).map(|_| d.to_vec()).collect();
                    stored_b
                        .iter()
                        .map(|d| Weight::new(WeightData::Bf16(d), out_dim, in_dim, Layout::OutIn).unwrap())
                        .collect()
                }
                WeightData::I8 { .. } => {
                    stored_q = (0..n_copies).map(|_| q.clone()).collect();
                    stored_q.iter().map(|q| q.weight()).collect()
                }
            };
            let rows_list: Vec<usize> = std::env::var("QKV_GEMV_ROWS")
                .map(|v| v.split(',').filter_map(|r| r.parse().ok()).collect())
                .unwrap_or_else(|_| vec![1, 4]);
            for &rows in &rows_list {
                let x = rand_vec(rows * in_dim, 4);
                let mut y = vec![0.0f32; rows * out_dim];
                let reps = 4 * n_copies.max(50);
                let gbs = |secs: f64| data.bytes() as f64 / secs / 1e9;
                pool.install(|| {
                    let mut i = 0;
                    let (ws, _) = time(reps, || {
                        ks.linear(&x, rows, &stored[i % n_copies], None, &mut y);
                        i += 1;
                    });
                    let mut i = 0;
                    let (wp, _) = time(reps, || {
                        ks.linear_packed(&x, rows, &packed[i % n_copies], None, &mut y);
                        i += 1;
                    });
                    let q_line = if packed[0].is_i8() {
                        let mut xq = QuantizedRows::default();
                        let range = I8Range::fastest_for(&ks);
                        let mut i = 0;
                        let (wq, _) = time(reps, || {
                            ks.quantize_rows(&x, in_dim, range, &mut xq);
                            ks.linear_q(&xq, &packed[i % n_copies], None, &mut y);
                            i += 1;
                        });
                        format!("  int8 x int8 ({range:?}) {:6.1} GB/s", gbs(wq))
                    } else {
                        String::new()
                    };
                    println!(
                        "gemv {name:<4} {out_dim}x{in_dim} rows {rows} {:>4} copies: stored {:6.1} GB/s  packed {:6.1} GB/s{q_line}",
                        n_copies,
                        gbs(ws),
                        gbs(wp)
                    );
                });
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gemv") {
        let isa = args.get(2).map_or(Isa::best(), |n| Isa::parse(n).expect("isa"));
        let threads: usize = args.get(3).map_or(2, |t| t.parse().expect("threads"));
        return gemv(Kernels::new(isa).expect("supported"), threads);
    }
    let isa = args.get(1).map_or(Isa::best(), |n| Isa::parse(n).expect("isa"));
    let threads: usize = args.get(2).map_or(2, |t| t.parse().expect("threads"));
    let (m, n, k) = match args.get(3..6) {
        Some([m, n, k]) => (m.parse().unwrap(), n.parse().unwrap(), k.parse().unwrap()),
        _ => (512usize, 2048usize, 2048usize),
    };
    let ks = Kernels::new(isa).expect("supported");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let x = rand_vec(m * k, 1);
    let wv = rand_vec(n * k, 2);
    let w = Weight::new(WeightData::F32(&wv), n, k, Layout::OutIn).unwrap();
    let pw = PackedWeight::new(&ks, &w).unwrap();
    let mut y0 = vec![0.0f32; m * n];
    let mut y1 = vec![0.0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    let reps = ((2e10 / flop) as usize).clamp(3, 200);
    let peak = fma_peak(isa);
    println!("{isa} threads {threads} shape {m}x{n}x{k}, reps {reps}; FMA peak {peak:.1} GFLOP/s per CPU-s (one thread), x{threads} = {:.1}", peak * threads as f64);
    pool.install(|| {
        let mut y2 = vec![0.0f32; m * n];
        let row = |name: &str, (wall, cpu): (f64, f64)| {
            println!(
                "{name:<28} {:7.1} GFLOP/s wall {:7.1} per CPU-s x{threads}",
                flop / wall / 1e9,
                flop / cpu / 1e9 * threads as f64
            )
        };
        // matrixmultiply's sgemm (packs the weights on every call), split over the pool's threads by columns as
        // the old `linear` did.
        row(
            "matrixmultiply (per call)",
            time(reps, || {
                use rayon::prelude::*;
                let chunk = n.div_ceil(threads);
                let yp = y2.as_mut_ptr() as usize;
                (0..threads).into_par_iter().for_each(|t| {
                    let c0 = t * chunk;
                    let nc = chunk.min(n - c0);
                    // SAFETY: x is [m, k], wv [n, k] read transposed for columns c0 .. c0 + nc, y [m, n]; tasks write
                    // disjoint columns.
                    unsafe {
                        matrixmultiply::sgemm(
                            m,
                            k,
                            nc,
                            1.0,
                            x.as_ptr(),
                            k as isize,
                            1,
                            wv.as_ptr().add(c0 * k),
                            1,
                            k as isize,
                            0.0,
                            (yp as *mut f32).add(c0),
                            n as isize,
                            1,
                        )
                    }
                })
            }),
        );
        row(
            "linear (stored, per call)",
            time(reps, || ks.linear(&x, m, &w, None, &mut y0)),
        );
        row(
            "linear_packed (at load)",
            time(reps, || ks.linear_packed(&x, m, &pw, None, &mut y1)),
        );
        let wb: Vec<kernels::bf16> = wv.iter().map(|&v| kernels::bf16::from_f32(v)).collect();
        let pb = PackedWeight::new(&ks, &Weight::new(WeightData::Bf16(&wb), n, k, Layout::OutIn).unwrap()).unwrap();
        let mut y5 = vec![0.0f32; m * n];
        row(
            "linear_packed bf16 (widen)",
            time(reps, || ks.linear_packed(&x, m, &pb, None, &mut y5)),
        );
        let kb = ks.with_bf16_gemv(kernels::Bf16Gemv::DotBf16);
        row(
            "linear_packed bf16 DotBf16",
            time(reps, || kb.linear_packed(&x, m, &pb, None, &mut y5)),
        );
        let qw = quantize_i8(&w);
        let pq = PackedWeight::new(&ks, &qw.weight()).unwrap();
        let mut xq = QuantizedRows::default();
        let mut y3 = vec![0.0f32; m * n];
        let mut y4 = vec![0.0f32; m * n];
        row(
            "linear_packed int8 w, f32 x",
            time(reps, || ks.linear_packed(&x, m, &pq, None, &mut y4)),
        );
        for (dot, range) in [
            (I8Dot::Best, I8Range::Full),
            (I8Dot::Base, I8Range::Full),
            (I8Dot::Best, I8Range::Reduced),
        ] {
            let kd = ks.with_i8_dot(dot);
            row(
                &format!("linear_q int8 x int8 {dot:?} {range:?}"),
                time(reps, || {
                    kd.quantize_rows(&x, k, range, &mut xq);
                    kd.linear_q(&xq, &pq, None, &mut y3)
                }),
            );
        }
        let err = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!(
            "max|diff| vs matrixmultiply: stored {:e}, packed {:e}, int8 w {:e}, int8 x int8 {:e}",
            err(&y0, &y2),
            err(&y1, &y2),
            err(&y4, &y2),
            err(&y3, &y2)
        );
    });
}
