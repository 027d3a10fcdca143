//! Int8 weight quantization: symmetric, one scale per output row.
//!
//! Row `o` of the `[out_dim, in_dim]` matrix: `scale[o] = max_i |W(o, i)| / 127` and
//! `q[o, i] = round(W(o, i) / scale[o])` (nearest, ties to even) in `-127 ..= 127`, so that
//! `|W(o, i) - q[o, i] * scale[o]| <= scale[o] / 2` (up to f32 rounding). An all-zero row gets scale 0 and
//! zeros; a row holding a NaN or an infinity gets a NaN scale (its outputs are NaN, as they would be with
//! the float weights; a loader can refuse such rows by checking the scales).

use rayon::prelude::*;

use crate::linear::{each_dtype, WElem};
use crate::types::{Layout, Weight, WeightData};

/// Largest magnitude of a quantized value (symmetric: -127 ..= 127, -128 unused).
pub const I8_MAX: f32 = 127.0;

/// Output rows quantized per task (a block of an `InOut` matrix is transposed through the cache).
const ROWS_PER_TASK: usize = 64;

/// An int8 matrix owned in memory, `[out_dim, in_dim]` ([`Layout::OutIn`]) with one scale per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantizedI8 {
    /// `[out_dim, in_dim]`, row-major.
    pub q: Vec<i8>,
    /// `[out_dim]`.
    pub scales: Vec<f32>,
    pub out_dim: usize,
    pub in_dim: usize,
}

impl QuantizedI8 {
    /// The matrix as the kernels read it.
    pub fn weight(&self) -> Weight<'_> {
        Weight {
            data: WeightData::I8 {
                q: &self.q,
                scales: &self.scales,
            },
            out_dim: self.out_dim,
            in_dim: self.in_dim,
            layout: Layout::OutIn,
        }
    }

    /// Bytes held (values and scales).
    pub fn bytes(&self) -> usize {
        self.q.len() + std::mem::size_of_val(self.scales.as_slice())
    }
}

/// Quantize `w` (any dtype, any layout) to per-output-row int8, laid out `OutIn` (an `InOut` matrix is
/// transposed once here). Int8 input is dequantized and quantized again (a no-op for its own values).
pub fn quantize_i8(w: &Weight<'_>) -> QuantizedI8 {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    assert_eq!(
        w.data.len(),
        out_dim * in_dim,
        "quantize_i8: weight data is not [out_dim, in_dim]"
    );
    let mut q = vec![0i8; out_dim * in_dim];
    let mut scales = vec![0.0f32; out_dim];
    if in_dim > 0 {
        q.par_chunks_mut(ROWS_PER_TASK * in_dim)
            .zip(scales.par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .for_each(|(t, (q, scales))| {
                let o0 = t * ROWS_PER_TASK;
                match (w.data, w.layout) {
                    (WeightData::I8 { .. }, _) => quantize_rows(|o, i| w.at(o0 + o, i), in_dim, q, scales),
                    (_, Layout::OutIn) => each_dtype!(w.data, data, _s, T => {
                        let rows: &[T] = &data[o0 * in_dim..o0 * in_dim + q.len()];
                        quantize_rows(|o, i| rows[o * in_dim + i].to_f32(), in_dim, q, scales)
                    }),
                    (_, Layout::InOut) => each_dtype!(w.data, data, _s, T => {
                        let n = scales.len();
                        // Walk the input rows (contiguous `n` columns each); the `n` output rows stay in cache.
                        quantize_rows_by_column(|i, o| data[i * out_dim + o0 + o].to_f32(), n, in_dim, q, scales)
                    }),
                }
            });
    }
    QuantizedI8 {
        q,
        scales,
        out_dim,
        in_dim,
    }
}

/// The scale of a row whose largest magnitude is `max` (NaN when the row is not finite).
#[inline]
fn row_scale(max: f32, finite: bool) -> f32 {
    if finite {
        max / I8_MAX
    } else {
        f32::NAN
    }
}

/// `v / scale` rounded to the nearest integer (ties to even), clamped to `±127`; 0 for a zero or NaN scale.
#[inline]
fn quantize_one(v: f32, scale: f32) -> i8 {
    if scale > 0.0 {
        (v / scale).round_ties_even().clamp(-I8_MAX, I8_MAX) as i8
    } else {
        0
    }
}

/// Quantize rows `0 .. scales.len()` of `get(o, i)` (rows read one after the other).
fn quantize_rows(get: impl Fn(usize, usize) -> f32, in_dim: usize, q: &mut [i8], scales: &mut [f32]) {
    for (o, (qr, scale)) in q.chunks_exact_mut(in_dim).zip(scales.iter_mut()).enumerate() {
        let (mut max, mut finite) = (0.0f32, true);
        for i in 0..in_dim {
            let v = get(o, i);
            finite &= v.is_finite();
            max = max.max(v.abs());
        }
        *scale = row_scale(max, finite);
        for (i, qv) in qr.iter_mut().enumerate() {
            *qv = quantize_one(get(o, i), *scale);
        }
    }
}

/// Quantize `n` output rows read column-wise: `get(i, o)` for input `i` and output row `o` (InOut storage).
fn quantize_rows_by_column(
    get: impl Fn(usize, usize) -> f32,
    n: usize,
    in_dim: usize,
    q: &mut [i8],
    scales: &mut [f32],
) {
    let mut max = vec![0.0f32; n];
    let mut finite = vec![true; n];
    for i in 0..in_dim {
        for o in 0..n {
            let v = get(i, o);
            finite[o] &= v.is_finite();
            max[o] = max[o].max(v.abs());
        }
    }
    for o in 0..n {
        scales[o] = row_scale(max[o], finite[o]);
    }
    for i in 0..in_dim {
        for o in 0..n {
            q[o * in_dim + i] = quantize_one(get(i, o), scales[o]);
        }
    }
}
