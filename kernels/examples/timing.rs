//! Quick throughput numbers: `cargo run --release -p kernels --example timing [isa]`.
//! GEMV GB/s (weight bytes streamed per second), GEMM GFLOP/s, on every ISA of this host (or the one named).

use std::time::Instant;

use kernels::{bf16, f16, quantize_i8, Bf16Gemv, I8Gemv, Isa, Kernels, Layout, Weight, WeightData};

/// Run time of every thread of this process so far, in seconds (Linux schedstat; 0 elsewhere).
/// On a loaded machine wall time overstates a kernel's cost; CPU time does not (idle rayon workers
/// spin a little, so it slightly overstates instead).
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// (median wall seconds, mean CPU seconds) of `f` over `reps` runs (after one warm-up).
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let c0 = cpu_seconds();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = (cpu_seconds() - c0) / reps as f64;
    t.sort_by(f64::total_cmp);
    (t[reps / 2], cpu)
}

fn main() {
    let isas: Vec<Isa> = match std::env::args().nth(1) {
        Some(n) => vec![Isa::parse(&n).expect("isa name")],
        None => Isa::available(),
    };
    let vals: Vec<f32> = (0..8192 * 2048)
        .map(|i: u64| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let w32 = vals.clone();
    let w16: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
    let wb16: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
    for isa in isas {
        let k = Kernels::new(isa).expect("supported");
        println!("threads: {}", rayon::current_num_threads());
        for &(out_dim, in_dim) in &[(8192usize, 2048usize), (2048, 8192), (2048, 2048), (1536, 576)] {
            let n = out_dim * in_dim;
            let qi8 = quantize_i8(&Weight::new(WeightData::F32(&w32[..n]), out_dim, in_dim, Layout::OutIn).unwrap());
            for layout in [Layout::OutIn, Layout::InOut] {
                let mut line = format!("{isa:>6} gemv {out_dim}x{in_dim} {layout:?}:");
                let mut dtypes = vec![
                    ("f32", WeightData::F32(&w32[..n]), 4),
                    ("f16", WeightData::F16(&w16[..n]), 2),
                    ("bf16", WeightData::Bf16(&wb16[..n]), 2),
                ];
                // int8 is OutIn only (scales: 4 bytes per row, not counted)
                if layout == Layout::OutIn {
                    dtypes.push(("i8", qi8.weight().data, 1));
                }
                for (name, data, bytes) in dtypes {
                    let w = Weight::new(data, out_dim, in_dim, layout).unwrap();
                    for rows in [1usize, 4] {
                        let x = vec![0.25f32; rows * in_dim];
                        let mut y = vec![0.0f32; rows * out_dim];
                        let reps = if isa == Isa::Scalar { 3 } else { 30 };
                        let (t, cpu) = time(reps, || k.linear(&x, rows, &w, None, &mut y));
                        line += &format!(
                            "  {name} r{rows} {:.1} GB/s ({:.1}/cpu-s)",
                            (n * bytes) as f64 / t / 1e9,
                            (n * bytes) as f64 / cpu / 1e9,
                        );
                        if name == "i8" && isa == Isa::Avx512 && Isa::has_avx512_vnni() {
                            let kd = k.with_i8_gemv(I8Gemv::DotI16);
                            let (t, cpu) = time(reps, || kd.linear(&x, rows, &w, None, &mut y));
                            line += &format!(
                                "  i8-dot r{rows} {:.1} GB/s ({:.1}/cpu-s)",
                                (n * bytes) as f64 / t / 1e9,
                                (n * bytes) as f64 / cpu / 1e9,
                            );
                        }
                        if name == "bf16" && isa == Isa::Avx512 && Isa::has_avx512_bf16() && layout == Layout::OutIn {
                            let kd = k.with_bf16_gemv(Bf16Gemv::DotBf16);
                            let (t, cpu) = time(reps, || kd.linear(&x, rows, &w, None, &mut y));
                            line += &format!(
                                "  bf16-dot r{rows} {:.1} GB/s ({:.1}/cpu-s)",
                                (n * bytes) as f64 / t / 1e9,
                                (n * bytes) as f64 / cpu / 1e9,
                            );
                        }
                    }
                }
                println!("{line}");
            }
        }
        if isa == Isa::Scalar {
            continue;
        }
        let (m, kd, nd) = (512usize, 2048usize, 2048usize);
        let x: Vec<f32> = vals[..m * kd].to_vec();
        let mut y = vec![0.0f32; m * nd];
        // matrixmultiply (threaded) on the same product, for comparison.
        let (t, cpu) = time(5, || {
            // SAFETY: x is [m, kd], w32 holds >= nd * kd (read as [kd, nd] transposed), y is [m, nd].
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    kd,
                    nd,
                    1.0,
                    x.as_ptr(),
                    kd as isize,
                    1,
                    w32.as_ptr(),
                    1,
                    kd as isize,
                    0.0,
                    y.as_mut_ptr(),
                    nd as isize,
                    1,
                )
            }
        });
        let flop = 2.0 * (m * kd * nd) as f64;
        println!(
            "matrixmultiply sgemm {m}x{kd}x{nd}: {:.1} GFLOP/s wall, {:.1} GFLOP per cpu-second",
            flop / t / 1e9,
            flop / cpu / 1e9
        );
        let qg = quantize_i8(&Weight::new(WeightData::F32(&w32[..nd * kd]), nd, kd, Layout::OutIn).unwrap());
        for (name, data) in [
            ("f32", WeightData::F32(&w32[..nd * kd])),
            ("bf16", WeightData::Bf16(&wb16[..nd * kd])),
            ("i8", qg.weight().data),
        ] {
            for layout in [Layout::OutIn, Layout::InOut] {
                if name == "i8" && layout == Layout::InOut {
                    continue;
                }
                let w = Weight::new(data, nd, kd, layout).unwrap();
                let (t, cpu) = time(5, || k.linear(&x, m, &w, None, &mut y));
                let flop = 2.0 * (m * kd * nd) as f64;
                println!(
                    "{isa:>6} gemm {m}x{kd}x{nd} {name} {layout:?}: {:.1} GFLOP/s wall, {:.1} GFLOP per cpu-second",
                    flop / t / 1e9,
                    flop / cpu / 1e9
                );
            }
        }
    }
}
