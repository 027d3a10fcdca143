//! Plain Rust inner loops, for every CPU (and the shape of what the SIMD versions do).

use super::tile::TileOps;
use super::TILE_KEYS;

pub(super) struct Scalar;

impl TileOps for Scalar {
    fn scale_copy(src: &[f32], scale: f32, dst: &mut [f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x * scale;
        }
    }

    fn qk_packed(q: &[f32], n_rows: usize, head_dim: usize, kt: &[f32], n_keys: usize, s: &mut [f32]) {
        for r in 0..n_rows {
            let s_row = &mut s[r * TILE_KEYS..][..n_keys];
            s_row.fill(0.0);
            for (x, &qx) in q[r * head_dim..(r + 1) * head_dim].iter().enumerate() {
                for (sc, &kc) in s_row.iter_mut().zip(&kt[x * TILE_KEYS..][..n_keys]) {
                    *sc += qx * kc;
                }
            }
        }
    }

    fn qk_rows(q: &[f32], n_rows: usize, head_dim: usize, k: &[f32], k_stride: usize, n_keys: usize, s: &mut [f32]) {
        for c in 0..n_keys {
            let k_row = &k[c * k_stride..][..head_dim];
            for r in 0..n_rows {
                let q_row = &q[r * head_dim..(r + 1) * head_dim];
                s[r * TILE_KEYS + c] = q_row.iter().zip(k_row).map(|(&a, &b)| a * b).sum();
            }
        }
    }

    fn max(x: &[f32]) -> f32 {
        x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let mut sum = 0.0;
        for v in x.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        sum
    }

    fn scale(x: &mut [f32], c: f32) {
        for v in x.iter_mut() {
            *v *= c;
        }
    }

    fn pv(p: &[f32], n_rows: usize, n_keys: usize, v: &[f32], v_stride: usize, head_dim: usize, acc: &mut [f32]) {
        for r in 0..n_rows {
            let acc_row = &mut acc[r * head_dim..(r + 1) * head_dim];
            for (c, &pc) in p[r * TILE_KEYS..][..n_keys].iter().enumerate() {
                for (o, &vx) in acc_row.iter_mut().zip(&v[c * v_stride..][..head_dim]) {
                    *o += pc * vx;
                }
            }
        }
    }
}
