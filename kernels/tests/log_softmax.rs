//! `Kernels::log_softmax` on every ISA of the host against `reference::log_softmax`: edge lengths, masked (`-inf`)
//! and NaN entries, an all-masked row.

use kernels::reference;

/// Max-abs error of a log-probability. `(x - max) - lse` rounds twice in f32 where the reference rounds once (values
/// here reach -64: ulp 3.8e-6); `lse` itself is within a few ulp of the f64 one (the SIMD `exp` is within 2 ulp and
/// the f32 sum is dominated by its largest terms). Seen: 1.9e-6 (AVX-512 host).
const LOG_SOFTMAX_TOL: f32 = 8e-6;

const LENS: [usize; 10] = [1, 2, 7, 15, 16, 17, 63, 65, 1000, 1029];

/// Values in [-scale, scale], spread without a pattern the lanes could share.
fn row(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.618 + 0.3).sin() * 1.7).sin() * scale)
        .collect()
}

#[test]
fn log_softmax_matches_reference() {
    for n in LENS {
        for scale in [1.0f32, 30.0] {
            let mut x = row(n, scale);
            // Masked entries stay -inf, NaN entries stay NaN; the others are normalised without them.
            for i in (1..n).step_by(5) {
                x[i] = f32::NEG_INFINITY;
            }
            if n > 3 {
                x[3] = f32::NAN;
            }
            let mut want = x.clone();
            reference::log_softmax(&mut want);
            kernels::testing::each_isa("log_softmax", true, |k| {
                // At offset 1 of its buffer: an unaligned row.
                let mut buf = vec![0.0f32; n + 1];
                buf[1..].copy_from_slice(&x);
                k.log_softmax(&mut buf[1..]);
                for (i, (&g, &w)) in buf[1..].iter().zip(&want).enumerate() {
                    if w.is_nan() || w == f32::NEG_INFINITY {
                        assert!(
                            g.is_nan() == w.is_nan() && (g == w || g.is_nan()),
                            "{:?} n={n} [{i}]: {g} vs {w}",
                            k.isa()
                        );
                    } else {
                        let e = (g - w).abs();
                        assert!(
                            e <= LOG_SOFTMAX_TOL,
                            "{:?} n={n} scale={scale} [{i}]: {g} vs {w} ({e:e})",
                            k.isa()
                        );
                    }
                }
            });
            // A distribution: the probabilities sum to 1.
            let total: f64 = want.iter().filter(|v| !v.is_nan()).map(|&v| (v as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "n={n}: Σ p = {total}");
        }
    }
}

#[test]
fn log_softmax_leaves_an_all_masked_row() {
    kernels::testing::each_isa("log_softmax", true, |k| {
        let mut x = vec![f32::NEG_INFINITY; 17];
        k.log_softmax(&mut x);
        assert!(x.iter().all(|&v| v == f32::NEG_INFINITY));
    });
}
