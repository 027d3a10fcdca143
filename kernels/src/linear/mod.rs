//! `linear`: GEMV (one to [`GEMV_MAX_ROWS`] rows, memory bound) and GEMM (more rows, compute bound).

use half::{bf16, f16};
use rayon::prelude::*;

use crate::simd::{dispatch, Simd, MAX_LANES};
use crate::types::{Layout, Weight, WeightData};
use crate::Kernels;

#[cfg(target_arch = "x86_64")]
mod bf16dot;
pub(crate) mod blocks;
pub(crate) mod driver;
mod gemv;
#[cfg(target_arch = "x86_64")]
mod i8dot;
pub(crate) mod kblocks;
pub(crate) mod packed;
pub(crate) mod qgemm;
pub(crate) mod tile;

pub use blocks::{
    f16_bits_to_f32, ActBlocks, BlockError, BlockLayout, BlockType, QuantizedBlocks, MAX_BLOCK_BYTES, QK,
};
pub use driver::{Part, SharedOut, MAX_PARTS};
pub use kblocks::QK_K;
pub use packed::{PackError, PackedWeight};
pub use qgemm::{I8Range, QuantizedRows, I8_DOT_MAX_IN};

/// Up to this many `x` rows, `linear` runs the GEMV (weights streamed once per 4 rows); beyond, the GEMM.
pub const GEMV_MAX_ROWS: usize = 8;
/// Below this many weight elements a GEMV runs on the calling thread (rayon's fork/join costs more).
const GEMV_PAR_MIN_WEIGHTS: usize = 1 << 17;
/// Smallest share of output rows (OutIn) or columns (InOut) one GEMV task takes.
const GEMV_MIN_CHUNK: usize = 64;

/// A weight element type, widened to f32 in registers.
pub(crate) trait WElem: Copy + Send + Sync + 'static {
    /// Read `S::LANES` elements at `p`, widened.
    ///
    /// # Safety
    /// `p .. p + S::LANES` must be readable.
    unsafe fn load<S: Simd>(s: S, p: *const Self) -> S::V;
    fn to_f32(self) -> f32;

    /// Read `S::LANES` elements from the start of `w` (panics if shorter).
    #[inline(always)]
    fn read<S: Simd>(s: S, w: &[Self]) -> S::V {
        assert!(w.len() >= S::LANES);
        // SAFETY: just checked that `w` holds LANES elements.
        unsafe { Self::load(s, w.as_ptr()) }
    }

    /// Read up to `S::LANES` elements of `w`; missing lanes are zero.
    #[inline(always)]
    fn read_partial<S: Simd>(s: S, w: &[Self]) -> S::V {
        let mut buf = [0.0f32; MAX_LANES];
        for (b, &v) in buf.iter_mut().zip(w.iter().take(S::LANES)) {
            *b = v.to_f32();
        }
        s.read(&buf)
    }
}

impl WElem for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const f32) -> S::V {
        // SAFETY: forwarded contract: LANES floats readable at `p`.
        unsafe { s.loadu(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn read_partial<S: Simd>(s: S, w: &[f32]) -> S::V {
        s.read_partial(w)
    }
}

impl WElem for f16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const f16) -> S::V {
        // SAFETY: forwarded contract: LANES halves readable at `p`.
        unsafe { s.load_f16(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl WElem for bf16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const bf16) -> S::V {
        // SAFETY: forwarded contract: LANES bf16 readable at `p`.
        unsafe { s.load_bf16(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl WElem for i8 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const i8) -> S::V {
        // SAFETY: forwarded contract: LANES bytes readable at `p`.
        unsafe { s.load_i8(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// `dst = src * scale`, widening `src` (used by the GEMM's panel conversion and by `embed`).
#[inline(always)]
pub(crate) fn widen<S: Simd, T: WElem>(s: S, src: &[T], scale: f32, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let l = S::LANES;
    let n = src.len();
    let k = s.splat(scale);
    let mut i = 0;
    while i + l <= n {
        s.write(&mut dst[i..], s.mul(T::read(s, &src[i..]), k));
        i += l;
    }
    if i < n {
        s.write_partial(&mut dst[i..], s.mul(T::read_partial(s, &src[i..]), k));
    }
}

/// Runs `$body` with `$d` bound to the weight slice, `$s` to the per-row scales (`Option<&[f32]>`: `Some`
/// for int8 only) and `$t` a block-local alias of the element type.
macro_rules! each_dtype {
    ($data:expr, $d:ident, $s:ident, $t:ident => $body:block) => {
        match $data {
            $crate::types::WeightData::F32($d) => {
                #[allow(dead_code)]
                type $t = f32;
                let $s: Option<&[f32]> = None;
                $body
            }
            $crate::types::WeightData::F16($d) => {
                #[allow(dead_code)]
                type $t = half::f16;
                let $s: Option<&[f32]> = None;
                $body
            }
            $crate::types::WeightData::Bf16($d) => {
                #[allow(dead_code)]
                type $t = half::bf16;
                let $s: Option<&[f32]> = None;
                $body
            }
            $crate::types::WeightData::I8 { q: $d, scales } => {
                #[allow(dead_code)]
                type $t = i8;
                let $s: Option<&[f32]> = Some(scales);
                $body
            }
        }
    };
}
pub(crate) use each_dtype;

/// Split `y[n_rows, out_dim]` into column shares of `chunk`: one `(first column, rows)` per task.
fn split_columns(y: &mut [f32], out_dim: usize, chunk: usize) -> Vec<(usize, Vec<&mut [f32]>)> {
    let n_tasks = out_dim.div_ceil(chunk);
    let mut tasks: Vec<(usize, Vec<&mut [f32]>)> = (0..n_tasks).map(|t| (t * chunk, Vec::new())).collect();
    for row in y.chunks_exact_mut(out_dim) {
        for (t, part) in row.chunks_mut(chunk).enumerate() {
            tasks[t].1.push(part);
        }
    }
    tasks
}

/// `y[rows, out] = x[rows, in] · Wᵀ + bias` (see [`Kernels::linear`]).
pub(crate) fn linear(k: Kernels, x: &[f32], rows: usize, w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    assert_eq!(
        w.data.len(),
        out_dim * in_dim,
        "linear: weight data is not [out_dim, in_dim]"
    );
    assert_eq!(x.len(), rows * in_dim, "linear: x is not [rows, in_dim]");
    assert_eq!(y.len(), rows * out_dim, "linear: y is not [rows, out_dim]");
    if let Some(b) = bias {
        assert_eq!(b.len(), out_dim, "linear: bias is not [out_dim]");
    }
    if let WeightData::I8 { scales, .. } = w.data {
        assert_eq!(w.layout, Layout::OutIn, "linear: int8 weights must be OutIn");
        assert_eq!(scales.len(), out_dim, "linear: int8 scales are not [out_dim]");
    }
    if rows == 0 || out_dim == 0 {
        return;
    }
    if in_dim == 0 {
        for yr in y.chunks_exact_mut(out_dim) {
            match bias {
                Some(b) => yr.copy_from_slice(b),
                None => yr.fill(0.0),
            }
        }
        return;
    }
    if rows <= GEMV_MAX_ROWS {
        gemv(k, x, w, bias, y)
    } else {
        gemm_stored(k, x, w, bias, y)
    }
}

/// Output share per task: at least [`GEMV_MIN_CHUNK`], about 4 tasks per thread, a multiple of `align`.
fn gemv_chunk(out_dim: usize, in_dim: usize, align: usize) -> usize {
    if out_dim * in_dim < GEMV_PAR_MIN_WEIGHTS {
        return out_dim;
    }
    let n_tasks = 4 * rayon::current_num_threads();
    out_dim.div_ceil(n_tasks).max(GEMV_MIN_CHUNK).next_multiple_of(align)
}

fn gemv(k: Kernels, x: &[f32], w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    match w.layout {
        #[cfg(target_arch = "x86_64")]
        Layout::OutIn if dot_bf16(k, w) => {
            let WeightData::Bf16(data) = w.data else {
                unreachable!("dot_bf16 checks the dtype")
            };
            let (xb, in_pad) = bf16dot::x_to_bf16(x, in_dim);
            let tasks = split_columns(y, out_dim, gemv_chunk(out_dim, in_dim, 4));
            let run = |(o0, mut ys): (usize, Vec<&mut [f32]>)| {
                let n = ys[0].len();
                crate::isa::note_exercised(crate::Isa::Avx512);
                // SAFETY: `dot_bf16` checked that this Kernels runs AVX-512 and the CPU has AVX512_BF16.
                unsafe {
                    bf16dot::outin(
                        &xb,
                        in_pad,
                        in_dim,
                        &data[o0 * in_dim..(o0 + n) * in_dim],
                        bias.map(|b| &b[o0..o0 + n]),
                        &mut ys,
                    )
                }
            };
            if tasks.len() == 1 {
                tasks.into_iter().for_each(run)
            } else {
                tasks.into_par_iter().for_each(run)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Layout::OutIn if dot_i16(k, w) => {
            let WeightData::I8 { q, scales } = w.data else {
                unreachable!("dot_i16 checks the dtype")
            };
            let (xq, x_scales, in_pad) = i8dot::x_to_i16(x, in_dim);
            let tasks = split_columns(y, out_dim, gemv_chunk(out_dim, in_dim, 8));
            let run = |(o0, mut ys): (usize, Vec<&mut [f32]>)| {
                let n = ys[0].len();
                let rs = gemv::RowScale {
                    scales: Some(&scales[o0..o0 + n]),
                    bias: bias.map(|b| &b[o0..o0 + n]),
                };
                crate::isa::note_exercised(crate::Isa::Avx512);
                // SAFETY: `dot_i16` checked that this Kernels runs AVX-512 and the CPU has AVX512_VNNI.
                unsafe {
                    i8dot::outin(
                        &xq,
                        &x_scales,
                        in_pad,
                        in_dim,
                        &q[o0 * in_dim..(o0 + n) * in_dim],
                        rs,
                        &mut ys,
                    )
                }
            };
            if tasks.len() == 1 {
                tasks.into_iter().for_each(run)
            } else {
                tasks.into_par_iter().for_each(run)
            }
        }
        Layout::OutIn => {
            let chunk = gemv_chunk(out_dim, in_dim, 8);
            let tasks = split_columns(y, out_dim, chunk);
            each_dtype!(w.data, data, scales, T => {
                let run = |(o0, mut ys): (usize, Vec<&mut [f32]>)| {
                    let n = ys[0].len();
                    let w: &[T] = &data[o0 * in_dim..(o0 + n) * in_dim];
                    let rows = gemv::RowScale { scales: scales.map(|s| &s[o0..o0 + n]), bias: bias.map(|b| &b[o0..o0 + n]) };
                    let ys: &mut [&mut [f32]] = &mut ys;
                    dispatch!(k, gemv::outin, (x: &[f32], in_dim: usize, w: &[T], rows: gemv::RowScale<'_>,
                        ys: &mut [&mut [f32]]))
                };
                if tasks.len() == 1 { tasks.into_iter().for_each(run) } else { tasks.into_par_iter().for_each(run) }
            })
        }
        Layout::InOut => {
            // Threads split the input rows of w (contiguous memory) and each sums into its own
            // [n_x, out_dim] partial; the partials are added at the end.
            let n_x = y.len() / out_dim;
            for yr in y.chunks_exact_mut(out_dim) {
                match bias {
                    Some(b) => yr.copy_from_slice(b),
                    None => yr.fill(0.0),
                }
            }
            let n_tasks = if out_dim * in_dim < GEMV_PAR_MIN_WEIGHTS {
                1
            } else {
                rayon::current_num_threads().min(in_dim.div_ceil(GEMV_MIN_CHUNK))
            };
            let per_task = in_dim.div_ceil(n_tasks);
            each_dtype!(w.data, data, _scales, T => {
                let w: &[T] = data;
                let run = |rows: std::ops::Range<usize>, acc: &mut [f32]| {
                    dispatch!(k, gemv::inout_rows, (x: &[f32], w: &[T], out_dim: usize, rows: std::ops::Range<usize>,
                        acc: &mut [f32]))
                };
                if n_tasks == 1 {
                    run(0..in_dim, y);
                } else {
                    let (_, partials) = rayon::join(
                        || run(0..per_task.min(in_dim), &mut *y),
                        || {
                            (1..n_tasks)
                                .into_par_iter()
                                .map(|t| {
                                    let mut acc = vec![0.0f32; n_x * out_dim];
                                    run(t * per_task..((t + 1) * per_task).min(in_dim), &mut acc);
                                    acc
                                })
                                .collect::<Vec<Vec<f32>>>()
                        },
                    );
                    for p in &partials {
                        k.add(y, p);
                    }
                }
            })
        }
    }
}

/// Whether this GEMV takes the `vpdpwssd` (x as i16) path for int8 weights.
#[cfg(target_arch = "x86_64")]
fn dot_i16(k: Kernels, w: &Weight<'_>) -> bool {
    k.i8_gemv() == crate::I8Gemv::DotI16
        && k.isa() == crate::Isa::Avx512
        && matches!(w.data, WeightData::I8 { .. })
        && crate::Isa::has_avx512_vnni()
}

/// Whether this GEMV takes the `vdpbf16ps` path.
#[cfg(target_arch = "x86_64")]
fn dot_bf16(k: Kernels, w: &Weight<'_>) -> bool {
    k.bf16_gemv() == crate::Bf16Gemv::DotBf16
        && k.isa() == crate::Isa::Avx512
        && matches!(w.data, WeightData::Bf16(_))
        && crate::Isa::has_avx512_bf16()
}

/// Runs `$body` with `$d` bound to the panels of a [`packed::Panels`] as a slice, `$s` to the int8 row scales
/// (`Option<&[f32]>`) and `$t` a block-local alias of the element type.
macro_rules! each_panels {
    ($panels:expr, $d:ident, $s:ident, $t:ident => $body:block) => {
        match $panels {
            packed::Panels::F32(b) => {
                #[allow(dead_code)]
                type $t = f32;
                let $d: &[f32] = b.as_slice();
                let $s: Option<&[f32]> = None;
                $body
            }
            packed::Panels::F16(b) => {
                #[allow(dead_code)]
                type $t = half::f16;
                let $d: &[half::f16] = b.as_slice();
                let $s: Option<&[f32]> = None;
                $body
            }
            packed::Panels::Bf16(b) => {
                #[allow(dead_code)]
                type $t = half::bf16;
                let $d: &[half::bf16] = b.as_slice();
                let $s: Option<&[f32]> = None;
                $body
            }
            packed::Panels::I8 { q, scales, .. } => {
                #[allow(dead_code)]
                type $t = i8;
                let $d: &[i8] = q.as_slice();
                let $s: Option<&[f32]> = Some(scales);
                $body
            }
            packed::Panels::Blocks { .. } | packed::Panels::Groups { .. } => {
                unreachable!("block matrices run linear_blocks")
            }
        }
    };
}

/// Fill every `[out_dim]` row of `y` with the bias (or zeros).
fn fill_bias(y: &mut [f32], out_dim: usize, bias: Option<&[f32]>) {
    for yr in y.chunks_exact_mut(out_dim) {
        match bias {
            Some(b) => yr.copy_from_slice(b),
            None => yr.fill(0.0),
        }
    }
}

/// Which parts of a split one call runs: all of them (over rayon) or one (a team thread's).
#[derive(Clone, Copy)]
enum Parts {
    All,
    One(Part),
}

impl Parts {
    /// Run `f(p)` for the selected parts of a split into `n` parts (a team's part beyond `n` has nothing to do).
    fn run(self, n: usize, f: impl Fn(usize) + Sync + Send) {
        match self {
            Parts::All => driver::run_parts(n, f),
            Parts::One(part) if part.index < n => f(part.index),
            Parts::One(_) => {}
        }
    }

    /// Threads the split is made for.
    fn threads(self) -> usize {
        match self {
            Parts::All => rayon::current_num_threads(),
            Parts::One(part) => part.count,
        }
    }
}

/// Shapes of `linear_packed`, checked.
fn check_packed(k: Kernels, x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>, y_len: usize, what: &str) {
    assert_eq!(
        w.isa,
        k.isa(),
        "{what}: the weight is packed for {}, the kernels run {}",
        w.isa,
        k.isa()
    );
    assert_eq!(x.len(), m * w.in_dim, "{what}: x is not [rows, in_dim]");
    assert_eq!(y_len, m * w.out_dim, "{what}: y is not [rows, out_dim]");
    if let Some(b) = bias {
        assert_eq!(b.len(), w.out_dim, "{what}: bias is not [out_dim]");
    }
}

/// `y[rows, out] = x[rows, in] · Wᵀ + bias` on a packed matrix (see [`Kernels::linear_packed`]).
pub(crate) fn linear_packed(k: Kernels, x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
    check_packed(k, x, m, w, bias, y.len(), "linear_packed");
    if m == 0 || w.out_dim == 0 {
        return;
    }
    if w.in_dim == 0 {
        return fill_bias(y, w.out_dim, bias);
    }
    if takes_int8(k, w) {
        return with_local_rows(k, x, w.in_dim, |xq| {
            let panels = check_q(k, xq, w, bias, y.len(), "linear_packed");
            q_parts(k, xq, w, panels, bias, driver::OutPtr(y.as_mut_ptr()), Parts::All)
        });
    }
    if let Some(ty) = w.block_type() {
        return with_local_blocks(|xq| {
            quantize_blocks(k, x, w.in_dim, ty.activations(), xq);
            blocks_parts(k, xq, w, bias, driver::OutPtr(y.as_mut_ptr()), Parts::All)
        });
    }
    packed_parts(k, x, m, w, bias, driver::OutPtr(y.as_mut_ptr()), Parts::All)
}

/// Whether a packed product on `w` quantizes its activations ([`crate::I8Activations::Int8`] on an int8 matrix
/// within the exact range of i32 sums).
fn takes_int8(k: Kernels, w: &PackedWeight) -> bool {
    k.i8_activations() == crate::I8Activations::Int8 && w.is_i8() && w.in_dim <= I8_DOT_MAX_IN
}

thread_local! {
    /// The calling thread's quantized activations of [`crate::I8Activations::Int8`] (grown once, then reused).
    static LOCAL_ROWS: std::cell::Cell<QuantizedRows> = std::cell::Cell::new(QuantizedRows::default());
}

/// Run `f` with this thread's buffer in `slot` (an empty one if a caller up the stack holds it), then put it back:
/// the activation buffers of the quantized products, grown once per thread and reused.
fn with_local<T: Default, R>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buf = slot.with(|c| c.take());
    let r = f(&mut buf);
    slot.with(|c| c.set(buf));
    r
}

/// `f(x quantized per row)`, in this thread's buffer. Always the full range: the same integers, so the same
/// outputs, on every ISA (AVX2's faster reduced range would double the activations' rounding error).
fn with_local_rows<R>(k: Kernels, x: &[f32], in_dim: usize, f: impl FnOnce(&QuantizedRows) -> R) -> R {
    with_local(&LOCAL_ROWS, |xq| {
        quantize_rows(k, x, in_dim, I8Range::Full, xq);
        f(xq)
    })
}

/// One part of [`linear_packed`] (see [`Kernels::linear_packed_part`]).
pub(crate) fn linear_packed_part(
    k: Kernels,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &SharedOut<'_>,
    part: Part,
) {
    check_packed(k, x, m, w, bias, y.len(), "linear_packed_part");
    let yp = y.take(part);
    if m == 0 || w.out_dim == 0 {
        return;
    }
    if w.in_dim == 0 {
        // The bias rows go to part 0.
        if part.index == 0 {
            // SAFETY: `y` holds m · out_dim floats (checked) and part 0 was taken by this caller alone.
            let y = unsafe { std::slice::from_raw_parts_mut(yp.0, m * w.out_dim) };
            fill_bias(y, w.out_dim, bias);
        }
        return;
    }
    if takes_int8(k, w) {
        // Every part quantizes the whole x (the same rows, so the same values) and runs its own share.
        return with_local_rows(k, x, w.in_dim, |xq| {
            let panels = check_q(k, xq, w, bias, y.len(), "linear_packed_part");
            q_parts(k, xq, w, panels, bias, yp, Parts::One(part))
        });
    }
    if let Some(ty) = w.block_type() {
        return with_local_blocks(|xq| {
            quantize_blocks(k, x, w.in_dim, ty.activations(), xq);
            blocks_parts(k, xq, w, bias, yp, Parts::One(part))
        });
    }
    packed_parts(k, x, m, w, bias, yp, Parts::One(part))
}

/// The split of a `[m, out_dim]` product over `threads` (rows parts, panel parts).
fn packed_split(w: &PackedWeight, m: usize, threads: usize, mr: usize) -> (usize, usize) {
    driver::split(m, w.n_panels(), w.in_dim, w.out_dim, threads, mr)
}

fn packed_parts(
    k: Kernels,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    yp: driver::OutPtr,
    parts: Parts,
) {
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    let geom = w.geom;
    let n_panels = w.n_panels();
    let blk = driver::Blocking::of(k, geom);
    let (rp, cp) = packed_split(w, m, parts.threads(), geom.mr);
    #[cfg(target_arch = "x86_64")]
    if let packed::Panels::Bf16(data) = &w.panels {
        if k.isa() == crate::Isa::Avx512 && k.bf16_gemv() == crate::Bf16Gemv::DotBf16 && crate::Isa::has_avx512_bf16() {
            let job = driver::Job::<half::bf16> {
                x,
                m,
                in_dim,
                out_dim,
                b: driver::BView::Packed {
                    panels: data.as_slice(),
                    in_pad: w.in_pad,
                },
                scales: None,
                bias,
                y: yp,
            };
            let job = &job;
            return parts.run(rp * cp, |p| {
                let (rows, panels) = driver::part_block(m, n_panels, rp, cp, p);
                crate::isa::note_exercised(crate::Isa::Avx512);
                // SAFETY: checked just above: AVX-512 kernels (so AVX-512 panels) and AVX512_BF16 on this CPU.
                unsafe { bf16dot::gemm_share(job, rows, panels, blk) }
            });
        }
    }
    each_panels!(&w.panels, data, scales, E => {
        let job = driver::Job::<E> {
            x, m, in_dim, out_dim,
            b: driver::BView::Packed { panels: data, in_pad: w.in_pad },
            scales, bias, y: yp,
        };
        let job = &job;
        parts.run(rp * cp, |p| {
            let (rows, panels) = driver::part_block(m, n_panels, rp, cp, p);
            dispatch!(k, driver::run_share, (job: &driver::Job<'_, E>, rows: std::ops::Range<usize>,
                panels: std::ops::Range<usize>, blk: driver::Blocking))
        })
    })
}

/// The GEMM of [`Kernels::linear`] on a stored matrix: the packed driver, each share packing its weight blocks
/// (per call: the engine packs its weights once with [`PackedWeight`] instead). Measured against matrixmultiply's
/// sgemm (which also packs per call), 512x2048x2048 f32 on one Zen 4 core: 92-96 vs 81-83 GFLOP per CPU-second
/// (AVX-512), 86-88 vs 83-88 (AVX2); so matrixmultiply is gone.
fn gemm_stored(k: Kernels, x: &[f32], w: &Weight<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    let m = y.len() / out_dim;
    let geom = packed::Geometry::of(k.isa());
    let n_panels = out_dim.div_ceil(geom.nr());
    let blk = driver::Blocking::of(k, geom);
    let (rp, cp) = driver::split(m, n_panels, in_dim, out_dim, rayon::current_num_threads(), geom.mr);
    let yp = driver::OutPtr(y.as_mut_ptr());
    let layout = w.layout;
    each_dtype!(w.data, data, scales, E => {
        let job = driver::Job::<E> {
            x, m, in_dim, out_dim,
            b: driver::BView::Stored(packed::Source { w: data, layout, out_dim, in_dim }),
            scales, bias, y: yp,
        };
        let job = &job;
        driver::run_parts(rp * cp, |p| {
            let rows = driver::block(m, rp, p / cp);
            let panels = driver::block(n_panels, cp, p % cp);
            dispatch!(k, driver::run_share, (job: &driver::Job<'_, E>, rows: std::ops::Range<usize>,
                panels: std::ops::Range<usize>, blk: driver::Blocking))
        })
    })
}

/// Run the int8 generic `$f(d: D, nv, args..)` on the int8 dot-product token of the [`Kernels`] `$k` (its ISA, the
/// ISA's extension unless [`crate::I8Dot::Base`], the AVX2 kernel for the activations' [`I8Range`] `$range`), through
/// a `#[target_feature]` wrapper.
macro_rules! dispatch_i8 {
    ($k:expr, $range:expr, $f:path, ($($arg:ident : $ty:ty),* $(,)?)) => {{
        let k: Kernels = $k;
        let isa = k.isa();
        crate::isa::note_exercised(isa);
        let ext = k.i8_dot() == crate::I8Dot::Best;
        let reduced = $range == crate::I8Range::Reduced;
        let _ = reduced; // only x86-64 has a kernel of its own for the reduced range
        match isa {
            crate::Isa::Scalar => $f(crate::simd::Scalar, packed::SCALAR.nv, $($arg),*),
            #[cfg(target_arch = "x86_64")]
            crate::Isa::Avx2 if reduced => {
                #[target_feature(enable = "avx2,fma,f16c")]
                fn run(d: crate::simd::Avx2Reduced, $($arg: $ty),*) {
                    $f(d, packed::AVX2.nv, $($arg),*)
                }
                // SAFETY: a `Kernels` holds `Isa::Avx2` only after `Isa::check_supported` (AVX2, FMA, F16C).
                unsafe { run(crate::simd::Avx2Reduced::new_unchecked(), $($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            crate::Isa::Avx2 => {
                #[target_feature(enable = "avx2,fma,f16c")]
                fn run(d: crate::simd::Avx2, $($arg: $ty),*) {
                    $f(d, packed::AVX2.nv, $($arg),*)
                }
                // SAFETY: a `Kernels` holds `Isa::Avx2` only after `Isa::check_supported` (AVX2, FMA, F16C).
                unsafe { run(crate::simd::Avx2::new_unchecked(), $($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            crate::Isa::Avx512 if ext && crate::Feature::Avx512Vnni.is_present() => {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
                fn run(d: crate::simd::Avx512Vnni, $($arg: $ty),*) {
                    $f(d, packed::AVX512.nv, $($arg),*)
                }
                // SAFETY: `Isa::Avx512` was checked by `Kernels::new`, AVX512_VNNI just above.
                unsafe { run(crate::simd::Avx512Vnni::new_unchecked(), $($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            crate::Isa::Avx512 => {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                fn run(d: crate::simd::Avx512, $($arg: $ty),*) {
                    $f(d, packed::AVX512.nv, $($arg),*)
                }
                // SAFETY: a `Kernels` holds `Isa::Avx512` only after `Isa::check_supported`.
                unsafe { run(crate::simd::Avx512::new_unchecked(), $($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            crate::Isa::Neon if ext && crate::Feature::NeonDot.is_present() => {
                #[target_feature(enable = "neon,dotprod")]
                fn run(d: crate::simd::NeonDot, $($arg: $ty),*) {
                    $f(d, packed::NEON.nv, $($arg),*)
                }
                // SAFETY: `Isa::Neon` was checked by `Kernels::new`, `dotprod` just above.
                unsafe { run(crate::simd::NeonDot::new_unchecked(), $($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            crate::Isa::Neon => {
                #[target_feature(enable = "neon")]
                fn run(d: crate::simd::Neon, $($arg: $ty),*) {
                    $f(d, packed::NEON.nv, $($arg),*)
                }
                // SAFETY: a `Kernels` holds `Isa::Neon` only after `Isa::check_supported`.
                unsafe { run(crate::simd::Neon::new_unchecked(), $($arg),*) }
            }
            #[allow(unreachable_patterns)]
            other => unreachable!("Kernels holds {other}, which this target cannot run"),
        }
    }};
}

/// Quantize `x[rows, in_dim]` per row into `out` (see [`QuantizedRows`]).
pub(crate) fn quantize_rows(k: Kernels, x: &[f32], in_dim: usize, range: I8Range, out: &mut QuantizedRows) {
    assert!(
        in_dim > 0 || x.is_empty(),
        "quantize_rows: in_dim 0 with {} values",
        x.len()
    );
    let rows = x.len().checked_div(in_dim).unwrap_or(0);
    assert_eq!(x.len(), rows * in_dim, "quantize_rows: x is not [rows, in_dim]");
    out.shape(rows, in_dim, range);
    if rows > 0 {
        dispatch!(k, qgemm::quantize_rows, (x: &[f32], in_dim: usize, out: &mut QuantizedRows))
    }
}

/// Shapes of `linear_q`, checked; the int8 panels.
fn check_q<'w>(
    k: Kernels,
    x: &QuantizedRows,
    w: &'w PackedWeight,
    bias: Option<&[f32]>,
    y_len: usize,
    what: &str,
) -> (&'w packed::AlignedBuf<i8>, &'w [f32], &'w [i32]) {
    assert_eq!(
        w.isa,
        k.isa(),
        "{what}: the weight is packed for {}, the kernels run {}",
        w.isa,
        k.isa()
    );
    let packed::Panels::I8 { q, scales, col_sums } = &w.panels else {
        panic!("{what}: the weight is not int8 (use linear_packed)")
    };
    assert_eq!(
        x.in_dim, w.in_dim,
        "{what}: x rows have {} inputs, the weight {}",
        x.in_dim, w.in_dim
    );
    assert!(
        w.in_dim <= I8_DOT_MAX_IN,
        "{what}: {} inputs; at most {I8_DOT_MAX_IN} keep the i32 sums exact",
        w.in_dim
    );
    assert_eq!(y_len, x.rows * w.out_dim, "{what}: y is not [rows, out_dim]");
    if let Some(b) = bias {
        assert_eq!(b.len(), w.out_dim, "{what}: bias is not [out_dim]");
    }
    (q, scales, col_sums)
}

/// `y[rows, out] = dequant(x) · Wᵀ + bias` for int8 rows and int8 weights (see [`Kernels::linear_q`]).
pub(crate) fn linear_q(k: Kernels, x: &QuantizedRows, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
    let panels = check_q(k, x, w, bias, y.len(), "linear_q");
    if x.rows == 0 || w.out_dim == 0 {
        return;
    }
    if w.in_dim == 0 {
        return fill_bias(y, w.out_dim, bias);
    }
    q_parts(k, x, w, panels, bias, driver::OutPtr(y.as_mut_ptr()), Parts::All)
}

/// One part of [`linear_q`] (see [`Kernels::linear_q_part`]).
pub(crate) fn linear_q_part(
    k: Kernels,
    x: &QuantizedRows,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &SharedOut<'_>,
    part: Part,
) {
    let panels = check_q(k, x, w, bias, y.len(), "linear_q_part");
    let yp = y.take(part);
    if x.rows == 0 || w.out_dim == 0 {
        return;
    }
    if w.in_dim == 0 {
        if part.index == 0 {
            // SAFETY: `y` holds rows · out_dim floats (checked) and part 0 was taken by this caller alone.
            let y = unsafe { std::slice::from_raw_parts_mut(yp.0, x.rows * w.out_dim) };
            fill_bias(y, w.out_dim, bias);
        }
        return;
    }
    q_parts(k, x, w, panels, bias, yp, Parts::One(part))
}

fn q_parts(
    k: Kernels,
    x: &QuantizedRows,
    w: &PackedWeight,
    (q, scales, col_sums): (&packed::AlignedBuf<i8>, &[f32], &[i32]),
    bias: Option<&[f32]>,
    yp: driver::OutPtr,
    parts: Parts,
) {
    let (m, n_panels) = (x.rows, w.n_panels());
    let blk = driver::Blocking::of(k, w.geom);
    let (rp, cp) = packed_split(w, m, parts.threads(), w.geom.mr_i8);
    let job = qgemm::QJob {
        x,
        out_dim: w.out_dim,
        panels: q.as_slice(),
        scales,
        col_sums,
        bias,
        y: yp,
    };
    let job = &job;
    parts.run(rp * cp, |p| {
        let (rows, panels) = driver::part_block(m, n_panels, rp, cp, p);
        dispatch_i8!(k, x.range(), qgemm::run_share, (job: &qgemm::QJob<'_>, rows: std::ops::Range<usize>,
            panels: std::ops::Range<usize>, blk: driver::Blocking))
    })
}

thread_local! {
    /// The activations of `linear_packed` on a block matrix, quantized on the calling thread (reused).
    static LOCAL_BLOCKS: std::cell::Cell<QuantizedBlocks> = std::cell::Cell::new(QuantizedBlocks::default());
}

/// Run `f` with this thread's [`QuantizedBlocks`] (see [`with_local`]).
fn with_local_blocks<R>(f: impl FnOnce(&mut QuantizedBlocks) -> R) -> R {
    with_local(&LOCAL_BLOCKS, f)
}

/// Quantize `x[rows, in_dim]` into Q8 (or Q8_K) blocks in `out` (see [`QuantizedBlocks`]).
pub(crate) fn quantize_blocks(k: Kernels, x: &[f32], in_dim: usize, acts: ActBlocks, out: &mut QuantizedBlocks) {
    let block = match acts {
        ActBlocks::Q8 => QK,
        ActBlocks::Q8K => QK_K,
    };
    assert!(
        in_dim > 0 && in_dim.is_multiple_of(block),
        "quantize_blocks: in_dim {in_dim} is not whole blocks of {block}"
    );
    let rows = x.len() / in_dim;
    assert_eq!(x.len(), rows * in_dim, "quantize_blocks: x is not [rows, in_dim]");
    out.shape(rows, in_dim, acts);
    if rows > 0 {
        match acts {
            ActBlocks::Q8 => dispatch!(k, blocks::quantize_x, (x: &[f32], out: &mut QuantizedBlocks)),
            ActBlocks::Q8K => kblocks::quantize_q8k(x, out),
        }
    }
}

/// Shapes of `linear_blocks`, checked; the block type and bytes.
fn check_blocks<'w>(
    k: Kernels,
    x: &QuantizedBlocks,
    w: &'w PackedWeight,
    bias: Option<&[f32]>,
    y_len: usize,
    what: &str,
) -> (BlockType, BlockData<'w>) {
    assert_eq!(
        w.isa,
        k.isa(),
        "{what}: the weight is packed for {}, the kernels run {}",
        w.isa,
        k.isa()
    );
    let (ty, data) = match &w.panels {
        packed::Panels::Blocks { ty, data } => (*ty, BlockData::Rows(data.as_slice())),
        packed::Panels::Groups { ty, q, s } => (
            *ty,
            BlockData::Groups {
                q: q.as_slice(),
                s: s.as_slice(),
            },
        ),
        _ => panic!("{what}: the weight is not a block matrix (use linear_packed)"),
    };
    assert_eq!(
        x.in_dim, w.in_dim,
        "{what}: x rows have {} inputs, the weight {}",
        x.in_dim, w.in_dim
    );
    assert_eq!(
        x.acts,
        ty.activations(),
        "{what}: {ty} weights need {:?} activations (Kernels::quantize_blocks_for)",
        ty.activations()
    );
    assert_eq!(y_len, x.rows * w.out_dim, "{what}: y is not [rows, out_dim]");
    if let Some(b) = bias {
        assert_eq!(b.len(), w.out_dim, "{what}: bias is not [out_dim]");
    }
    (ty, data)
}

/// The bytes of a block matrix in its layout.
enum BlockData<'w> {
    Rows(&'w [u8]),
    Groups { q: &'w [u8], s: &'w [u16] },
}

/// `y[rows, out] = x · Wᵀ + bias` for Q8 blocks of activations and a block matrix (see [`Kernels::linear_blocks`]).
pub(crate) fn linear_blocks(k: Kernels, x: &QuantizedBlocks, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
    check_blocks(k, x, w, bias, y.len(), "linear_blocks");
    blocks_parts(k, x, w, bias, driver::OutPtr(y.as_mut_ptr()), Parts::All)
}

/// One part of [`linear_blocks`] (see [`Kernels::linear_blocks_part`]).
pub(crate) fn linear_blocks_part(
    k: Kernels,
    x: &QuantizedBlocks,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &SharedOut<'_>,
    part: Part,
) {
    check_blocks(k, x, w, bias, y.len(), "linear_blocks_part");
    blocks_parts(k, x, w, bias, y.take(part), Parts::One(part))
}

fn blocks_parts(
    k: Kernels,
    x: &QuantizedBlocks,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    yp: driver::OutPtr,
    parts: Parts,
) {
    let (ty, data) = check_blocks(k, x, w, bias, x.rows * w.out_dim, "linear_blocks");
    if x.rows == 0 || w.out_dim == 0 {
        return;
    }
    // The split's unit: a group of 16 output rows (either layout).
    let units = w.out_dim.div_ceil(crate::simd::GROUP);
    let n = if w.out_dim * w.in_dim * x.rows.min(GEMV_MAX_ROWS) < GEMV_PAR_MIN_WEIGHTS {
        1
    } else {
        parts.threads().min(units)
    };
    type R = std::ops::Range<usize>;
    match data {
        BlockData::Rows(data) => {
            let job = blocks::BJob {
                x,
                w: data,
                out_dim: w.out_dim,
                bias,
                y: yp,
            };
            let job = &job;
            parts.run(n, |p| {
                let u = driver::block(units, n, p);
                let outs = u.start * crate::simd::GROUP..(u.end * crate::simd::GROUP).min(w.out_dim);
                match ty {
                    BlockType::Q8_0 => dispatch_i8!(k, I8Range::Full, blocks_share::<blocks::KQ8_0>,
                        (job: &blocks::BJob<'_>, outs: R)),
                    BlockType::Q4_0 => dispatch_i8!(k, I8Range::Full, blocks_share::<blocks::KQ4_0>,
                        (job: &blocks::BJob<'_>, outs: R)),
                    BlockType::Q4_1 => dispatch_i8!(k, I8Range::Full, blocks_share::<blocks::KQ4_1>,
                        (job: &blocks::BJob<'_>, outs: R)),
                    BlockType::Q4_K => dispatch_i8!(k, I8Range::Full, kblocks_share::<kblocks::KQ4_K>,
                        (job: &blocks::BJob<'_>, outs: R)),
                    BlockType::Q5_K => dispatch_i8!(k, I8Range::Full, kblocks_share::<kblocks::KQ5_K>,
                        (job: &blocks::BJob<'_>, outs: R)),
                    BlockType::Q6_K => dispatch_i8!(k, I8Range::Full, kblocks_share::<kblocks::KQ6_K>,
                        (job: &blocks::BJob<'_>, outs: R)),
                }
            })
        }
        BlockData::Groups { q, s } => {
            let job = blocks::GJob {
                x,
                q,
                s,
                out_dim: w.out_dim,
                bias,
                y: yp,
            };
            let job = &job;
            parts.run(n, |p| {
                let groups = driver::block(units, n, p);
                match ty {
                    BlockType::Q8_0 => dispatch_i8!(k, I8Range::Full, groups_share::<blocks::KQ8_0>,
                        (job: &blocks::GJob<'_>, groups: R)),
                    BlockType::Q4_0 => dispatch_i8!(k, I8Range::Full, groups_share::<blocks::KQ4_0>,
                        (job: &blocks::GJob<'_>, groups: R)),
                    BlockType::Q4_1 => dispatch_i8!(k, I8Range::Full, groups_share::<blocks::KQ4_1>,
                        (job: &blocks::GJob<'_>, groups: R)),
                    BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => {
                        unreachable!("K-quant matrices are not grouped")
                    }
                }
            })
        }
    }
}

/// [`blocks::run_groups`] in the shape `dispatch_i8!` calls (it passes the panel width, unused here).
#[inline(always)]
fn groups_share<K: blocks::GKind>(
    d: impl crate::simd::DotG,
    _nv: usize,
    job: &blocks::GJob<'_>,
    groups: std::ops::Range<usize>,
) {
    blocks::run_groups::<_, K>(d, job, groups)
}

/// [`blocks::run_share`] in the shape `dispatch_i8!` calls (it passes the panel width, unused here).
#[inline(always)]
fn blocks_share<K: blocks::Kind>(
    d: impl crate::simd::DotQ,
    _nv: usize,
    job: &blocks::BJob<'_>,
    outs: std::ops::Range<usize>,
) {
    blocks::run_share::<_, K>(d, job, outs)
}

/// [`kblocks::run_share`] in the shape `dispatch_i8!` calls (it passes the panel width, unused here).
#[inline(always)]
fn kblocks_share<K: kblocks::KKind>(
    d: impl crate::simd::DotK,
    _nv: usize,
    job: &blocks::BJob<'_>,
    outs: std::ops::Range<usize>,
) {
    kblocks::run_share::<_, K>(d, job, outs)
}
