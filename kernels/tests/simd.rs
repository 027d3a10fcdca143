//! The SIMD trait on every token the host supports: exp accuracy, dtype loads, partial loads/stores, reductions.
#![allow(clippy::needless_range_loop)]

use kernels::simd::{Scalar, Simd, MAX_LANES};
use kernels::{bf16, f16};

/// `exp` is a Cephes-style approximation: within this many ulp of the correctly rounded value.
const EXP_MAX_ULP: u32 = 2;

fn ulp_diff(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

fn lanes<S: Simd>(s: S, v: S::V) -> Vec<f32> {
    let mut out = vec![0.0f32; S::LANES];
    s.write(&mut out, v);
    out
}

fn check_token<S: Simd>(s: S) {
    let l = S::LANES;
    // exp: dense sweep of the normal-result range.
    let mut worst = 0;
    let mut x = -87.0f32;
    while x < 88.3 {
        let xs: Vec<f32> = (0..l).map(|i| x + i as f32 * 1e-3).collect();
        let got = lanes(s, s.exp(s.read(&xs)));
        for (&xi, &g) in xs.iter().zip(&got) {
            let want = (xi as f64).exp() as f32;
            worst = worst.max(ulp_diff(g, want));
        }
        x += if cfg!(miri) { 7.3 } else { 0.0173 };
    }
    assert!(worst <= EXP_MAX_ULP, "{:?}: exp off by {worst} ulp", S::ISA);
    // exp edge values.
    let edge = [f32::NEG_INFINITY, -1000.0, -88.5, 0.0, -0.0];
    for &e in &edge {
        let got = lanes(s, s.exp(s.splat(e)))[0];
        let want = (e as f64).exp() as f32;
        assert!(
            (got - want).abs() <= 1e-38,
            "{:?}: exp({e}) = {got}, want {want}",
            S::ISA
        );
    }
    assert_eq!(lanes(s, s.exp(s.splat(0.0)))[0], 1.0);

    // f16 / bf16 widening, including subnormals, infinities and NaN.
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        6.1e-5,
        5.96e-8,
        3.0e-6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-3,
        123.456,
        -7.75,
        0.1,
        1e30,
        -1e-30,
    ];
    let vals: Vec<f32> = (0..l).map(|i| specials[i % specials.len()]).collect();
    let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
    let got_h = lanes(s, s.read_f16(&h));
    let got_b = lanes(s, s.read_bf16(&b));
    for i in 0..l {
        assert_eq!(
            got_h[i].to_bits(),
            h[i].to_f32().to_bits(),
            "{:?}: f16 lane {i}",
            S::ISA
        );
        assert_eq!(
            got_b[i].to_bits(),
            b[i].to_f32().to_bits(),
            "{:?}: bf16 lane {i}",
            S::ISA
        );
    }
    let nan_h = vec![f16::NAN; l];
    assert!(lanes(s, s.read_f16(&nan_h)).iter().all(|v| v.is_nan()));

    // Partial loads and stores touch exactly `n` lanes.
    let src: Vec<f32> = (1..=MAX_LANES).map(|v| v as f32).collect();
    for n in 0..=l {
        let got = lanes(s, s.read_partial(&src[..n]));
        for (i, &g) in got.iter().enumerate() {
            assert_eq!(g, if i < n { src[i] } else { 0.0 }, "{:?}: partial load n={n}", S::ISA);
        }
        let mut dst = vec![-1.0f32; l + 1];
        s.write_partial(&mut dst[..n], s.splat(7.0));
        for (i, &d) in dst.iter().enumerate() {
            assert_eq!(d, if i < n { 7.0 } else { -1.0 }, "{:?}: partial store n={n}", S::ISA);
        }
    }

    // Reductions, arithmetic, rounding, pow2i.
    let v = s.read(&src);
    assert_eq!(s.reduce_sum(v), (l * (l + 1) / 2) as f32);
    assert_eq!(s.reduce_max(v), l as f32);
    let neg: Vec<f32> = src.iter().map(|v| -v).collect();
    assert_eq!(lanes(s, s.abs(s.read(&neg))), src[..l].to_vec());
    let halves: Vec<f32> = (0..l).map(|i| i as f32 + 0.5).collect();
    let rounded = lanes(s, s.round(s.read(&halves)));
    for i in 0..l {
        assert_eq!(rounded[i], (i as f32 + 0.5).round_ties_even());
    }
    let ns: Vec<f32> = (0..l).map(|i| i as f32 * 17.0 - 127.0).collect();
    let p = lanes(s, s.pow2i(s.read(&ns)));
    for i in 0..l {
        let want = if ns[i] == -127.0 { 0.0 } else { 2f32.powi(ns[i] as i32) };
        assert_eq!(p[i], want, "{:?}: pow2i({})", S::ISA, ns[i]);
    }
    let nan = s.splat(f32::NAN);
    assert_eq!(lanes(s, s.max(nan, s.splat(3.0)))[0], 3.0, "max(NaN, b) = b");
    assert_eq!(lanes(s, s.min(nan, s.splat(3.0)))[0], 3.0, "min(NaN, b) = b");
    let fma = lanes(s, s.fma(s.splat(2.0), s.splat(3.0), s.splat(1.0)));
    assert_eq!(fma[0], 7.0);
    assert_eq!(lanes(s, s.div(s.splat(1.0), s.splat(4.0)))[0], 0.25);
    assert_eq!(lanes(s, s.sub(s.splat(1.0), s.splat(4.0)))[0], -3.0);
}

#[test]
fn scalar_token() {
    check_token(Scalar);
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)] // miri reports no AVX
fn avx2_token() {
    match kernels::simd::Avx2::try_new() {
        Some(s) => {
            check_token(s);
            kernels::testing::ran("avx2_token", &[kernels::Isa::Avx2]);
        }
        None => kernels::testing::skip("avx2_token", kernels::Feature::Avx2),
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)] // miri reports no AVX-512
fn avx512_token() {
    match kernels::simd::Avx512::try_new() {
        Some(s) => {
            check_token(s);
            kernels::testing::ran("avx512_token", &[kernels::Isa::Avx512]);
        }
        None => kernels::testing::skip("avx512_token", kernels::Feature::Avx512),
    }
}

#[cfg(target_arch = "aarch64")]
#[test]
fn neon_token() {
    match kernels::simd::Neon::try_new() {
        Some(s) => {
            check_token(s);
            kernels::testing::ran("neon_token", &[kernels::Isa::Neon]);
        }
        None => kernels::testing::skip("neon_token", kernels::Feature::Neon),
    }
}
