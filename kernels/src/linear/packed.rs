//! Weights packed once, at load, into the layout the GEMM and the GEMV read ([`PackedWeight`]).
//!
//! A matrix `W[out_dim, in_dim]` (any stored dtype or layout) becomes `ceil(out_dim / NR)` **panels** of `NR` output
//! columns each (`NR` = vectors per panel × lanes of the ISA: 32 on AVX-512, 16 on AVX2, 12 on NEON, 4 scalar).
//! A panel is `in_pad × NR` elements, input-major, in **groups** of `G` consecutive inputs per column so that one
//! vector load feeds one instruction of the ISA:
//!
//! ```text
//! element (input i, column c) of panel j  at  j·in_pad·NR + (i / G)·NR·G + c·G + i % G
//! G = 1: f32, f16      (a vector holds LANES columns of one input: FMA with x[i] broadcast)
//! G = 2: bf16          (LANES columns × 2 inputs: `vdpbf16ps`, or widened with a shift and a mask)
//! G = 4: int8          (LANES columns × 4 inputs: `vpdpbusd` / `sdot` / `vpmaddubsw`, or widened with shifts)
//! ```
//!
//! Columns past `out_dim` and inputs past `in_dim` are zeros (`in_pad` = `in_dim` rounded up to `G`). The values
//! keep their stored dtype (f16/bf16 are converted in registers, int8 keeps one scale per output row), so a packed
//! matrix takes the bytes of the stored one plus at most one panel of padding: it *replaces* the stored copy.
//! The GEMV (1 to 8 rows) reads the same panels: a panel is one contiguous stream, each `x[i]` broadcast once per
//! panel and the accumulators are output columns (no horizontal sums), so batch-1 decoding streams the weights at
//! the memory's pace from the same single copy the GEMM uses.

use std::marker::PhantomData;

use half::{bf16, f16};
use rayon::prelude::*;

use super::blocks::{self as blk, BlockError, BlockLayout, BlockType, MAX_BLOCK_BYTES};
use crate::isa::Isa;
use crate::simd::GROUP;
use crate::types::{Layout, Weight, WeightData};

/// Register tiling of one ISA: panels of `nv` vectors of `lanes`, `mr` rows per f32 tile, `mr_i8` per int8 tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub lanes: usize,
    pub nv: usize,
    pub mr: usize,
    pub mr_i8: usize,
}

/// Most vectors per panel of any ISA (array bound of the tile accumulators).
pub(crate) const NV_MAX: usize = 4;

/// Scalar: 4 x 4 (16 accumulators in general-purpose float registers).
pub(crate) const SCALAR: Geometry = Geometry {
    lanes: 1,
    nv: 4,
    mr: 4,
    mr_i8: 4,
};
/// AVX2 (16 registers): f32 6 x 16 (12 accumulators, 2 weight vectors, 1 broadcast); int8 4 x 16 (8 accumulators,
/// 2 weight vectors, |x| and sign broadcasts, the ones for `vpmaddwd`, 2 temporaries).
pub(crate) const AVX2: Geometry = Geometry {
    lanes: 8,
    nv: 2,
    mr: 6,
    mr_i8: 4,
};
/// AVX-512 (32 registers): 14 x 32 (28 accumulators, 2 weight vectors, 1 broadcast) for f32 and int8.
pub(crate) const AVX512: Geometry = Geometry {
    lanes: 16,
    nv: 2,
    mr: 14,
    mr_i8: 14,
};
/// NEON (32 registers): 8 x 12 (24 accumulators, 3 weight vectors, broadcasts).
pub(crate) const NEON: Geometry = Geometry {
    lanes: 4,
    nv: 3,
    mr: 8,
    mr_i8: 8,
};

impl Geometry {
    pub(crate) const fn of(isa: Isa) -> Geometry {
        match isa {
            Isa::Scalar => SCALAR,
            Isa::Avx2 => AVX2,
            Isa::Avx512 => AVX512,
            Isa::Neon => NEON,
        }
    }

    /// Output columns per panel.
    pub(crate) const fn nr(&self) -> usize {
        self.lanes * self.nv
    }
}

/// A cache line of zeros: the unit of [`AlignedBuf`] (64-byte aligned panels never straddle lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);
// SAFETY: 64 bytes, no padding (size = alignment = 64); all-zero bytes are a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; any bit pattern is a valid `[u8; 64]`.
unsafe impl bytemuck::Pod for Line {}

/// A zero-initialised, 64-byte aligned buffer of `len` plain values.
pub(crate) struct AlignedBuf<T> {
    lines: Vec<Line>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> AlignedBuf<T> {
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        Self {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
            len,
            _t: PhantomData,
        }
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl<T: bytemuck::Pod> Default for AlignedBuf<T> {
    fn default() -> Self {
        Self::zeroed(0)
    }
}

impl<T: bytemuck::Pod> Clone for AlignedBuf<T> {
    fn clone(&self) -> Self {
        Self {
            lines: self.lines.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for AlignedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf<{}>[{}]", std::any::type_name::<T>(), self.len)
    }
}

/// A stored element type as it sits in a panel.
pub(crate) trait Elem: bytemuck::Pod + Send + Sync + 'static {
    /// Inputs per group (see the module docs).
    const G: usize;
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    const G: usize = 1;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for f16 {
    const G: usize = 1;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Elem for bf16 {
    const G: usize = 2;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem for i8 {
    const G: usize = 4;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// A stored matrix as the packer reads it: `W(o, i)` in its own dtype.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a, T> {
    pub w: &'a [T],
    pub layout: Layout,
    pub out_dim: usize,
    pub in_dim: usize,
}

impl<T: Copy> Source<'_, T> {
    #[inline(always)]
    fn at(&self, o: usize, i: usize) -> T {
        match self.layout {
            Layout::OutIn => self.w[o * self.in_dim + i],
            Layout::InOut => self.w[i * self.out_dim + o],
        }
    }
}

/// Pack panels `p0 .. p0 + n` of `src`, inputs `k0 .. k0 + kc` (`k0` and `kc` multiples of `T::G`, or `kc` reaching
/// the padded end), into `dst` (`n` consecutive `[kc, NR]` blocks in the group layout; padding is zero).
pub(crate) fn pack_panels<T: Elem>(
    src: Source<'_, T>,
    nr: usize,
    p0: usize,
    n: usize,
    k0: usize,
    kc: usize,
    dst: &mut [T],
) {
    let g = T::G;
    assert!(k0.is_multiple_of(g) && kc.is_multiple_of(g) && dst.len() >= n * kc * nr);
    let zero = T::zeroed();
    for (j, panel) in dst.chunks_exact_mut(kc * nr).take(n).enumerate() {
        let o0 = (p0 + j) * nr;
        let cols = nr.min(src.out_dim.saturating_sub(o0));
        let k_end = (k0 + kc).min(src.in_dim).max(k0);
        if cols < nr || k_end < k0 + kc {
            panel.fill(zero);
        }
        match src.layout {
            // Each output row is contiguous over the inputs: walk a row, scatter into its column.
            Layout::OutIn => {
                for c in 0..cols {
                    let row = &src.w[(o0 + c) * src.in_dim + k0..(o0 + c) * src.in_dim + k_end];
                    for (p, &v) in row.iter().enumerate() {
                        panel[(p / g) * nr * g + c * g + p % g] = v;
                    }
                }
            }
            // Each input row is contiguous over the outputs.
            Layout::InOut => {
                for p in 0..k_end - k0 {
                    for c in 0..cols {
                        panel[(p / g) * nr * g + c * g + p % g] = src.at(o0 + c, k0 + p);
                    }
                }
            }
        }
    }
}

/// Why a matrix cannot be packed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// The AVX2 int8 kernels take `|x|` times `±w`: `-128` has no positive twin (int8 weights from
    /// [`crate::quantize_i8`] stay within `±127`).
    #[error("int8 weight value -128 at output row {row}, input {col}: packed int8 weights must lie in -127..=127")]
    I8Min { row: usize, col: usize },
    #[error(transparent)]
    Blocks(#[from] BlockError),
    #[error("weight data holds {found} values, expected out_dim {out_dim} x in_dim {in_dim}")]
    Shape {
        out_dim: usize,
        in_dim: usize,
        found: usize,
    },
}

/// The panels of a packed matrix, in its stored dtype.
#[derive(Clone, Debug)]
pub(crate) enum Panels {
    F32(AlignedBuf<f32>),
    F16(AlignedBuf<f16>),
    Bf16(AlignedBuf<bf16>),
    /// Symmetric int8 with one scale per output row (`W(o, i) = q · scales[o]`); `col_sums[o] = Σ_i q(o, i)` (for
    /// kernels that take the activations as `x + 128`). Both padded with zeros to whole panels.
    I8 {
        q: AlignedBuf<i8>,
        scales: Vec<f32>,
        col_sums: Vec<i32>,
    },
    /// GGUF blocks ([`super::blocks`]): `out_dim` rows of `in_dim / 32` blocks each, as ggml stores them (not in
    /// panels: a row is one contiguous stream).
    Blocks {
        ty: BlockType,
        data: AlignedBuf<u8>,
    },
    /// GGUF blocks in groups of 16 interleaved rows ([`BlockLayout::Groups`]): `q` `[groups, nb, quant bytes]`,
    /// `s` `[groups, nb, 16 scales (Q4_1: then 16 mins)]` as f16 bits; rows past `out_dim` are zeros.
    Groups {
        ty: BlockType,
        q: AlignedBuf<u8>,
        s: AlignedBuf<u16>,
    },
}

/// A weight matrix packed once (at load) into the panel layout of one ISA (see the module docs). It replaces the
/// stored matrix: the GEMV and the GEMM both read it, nothing repacks it. Build it with the [`crate::Kernels`] that
/// will run it; multiply with [`crate::Kernels::linear_packed`] (f32 activations) or
/// [`crate::Kernels::linear_q`] (int8 activations, int8 weights).
#[derive(Clone, Debug)]
pub struct PackedWeight {
    pub(crate) isa: Isa,
    pub(crate) geom: Geometry,
    pub(crate) out_dim: usize,
    pub(crate) in_dim: usize,
    /// `in_dim` rounded up to the dtype's group.
    pub(crate) in_pad: usize,
    pub(crate) panels: Panels,
}

/// Panels packed per rayon task at load.
const PANELS_PER_TASK: usize = 8;

fn pack_all<T: Elem>(src: Source<'_, T>, geom: Geometry) -> (AlignedBuf<T>, usize) {
    let nr = geom.nr();
    let in_pad = src.in_dim.next_multiple_of(T::G);
    let n_panels = src.out_dim.div_ceil(nr);
    let mut buf = AlignedBuf::<T>::zeroed(n_panels * in_pad * nr);
    let per = PANELS_PER_TASK * in_pad * nr;
    if per > 0 {
        buf.as_mut_slice().par_chunks_mut(per).enumerate().for_each(|(t, dst)| {
            let p0 = t * PANELS_PER_TASK;
            pack_panels(src, nr, p0, PANELS_PER_TASK.min(n_panels - p0), 0, in_pad, dst)
        });
    }
    (buf, in_pad)
}

impl PackedWeight {
    /// Pack `w` (f32, f16, bf16 or int8, either layout) for the ISA of `k`.
    pub fn new(k: &crate::Kernels, w: &Weight<'_>) -> Result<Self, PackError> {
        Self::stack(k, std::slice::from_ref(w))
    }

    /// Pack matrices with one `in_dim` and one dtype stacked along the outputs (fused q/k/v or gate/up): output
    /// columns `[0, out_0)` are the first matrix's, then the second's, and so on.
    pub fn stack(k: &crate::Kernels, ws: &[Weight<'_>]) -> Result<Self, PackError> {
        let geom = Geometry::of(k.isa());
        let first = ws.first().expect("PackedWeight::stack: no matrices");
        let in_dim = first.in_dim;
        for w in ws {
            let n = w.out_dim.checked_mul(w.in_dim);
            if n != Some(w.data.len()) {
                return Err(PackError::Shape {
                    out_dim: w.out_dim,
                    in_dim: w.in_dim,
                    found: w.data.len(),
                });
            }
            assert_eq!(w.in_dim, in_dim, "PackedWeight::stack: matrices of different in_dim");
            assert_eq!(
                std::mem::discriminant(&w.data),
                std::mem::discriminant(&first.data),
                "PackedWeight::stack: matrices of different dtypes"
            );
        }
        let out_dim: usize = ws.iter().map(|w| w.out_dim).sum();
        // One matrix packs straight from its storage; a stack is gathered into one OutIn matrix first (load time).
        fn gather<'a, T: Copy + 'a>(ws: &[Weight<'a>], data: impl Fn(&Weight<'a>) -> &'a [T]) -> Vec<T> {
            let mut out = Vec::with_capacity(ws.iter().map(|w| w.data.len()).sum());
            for w in ws {
                let src = Source {
                    w: data(w),
                    layout: w.layout,
                    out_dim: w.out_dim,
                    in_dim: w.in_dim,
                };
                for o in 0..w.out_dim {
                    out.extend((0..w.in_dim).map(|i| src.at(o, i)));
                }
            }
            out
        }
        macro_rules! src {
            ($variant:ident, $t:ty) => {{
                let single = ws.len() == 1;
                let owned: Vec<$t> = if single {
                    Vec::new()
                } else {
                    gather(ws, |w| match w.data {
                        WeightData::$variant(d) => d,
                        _ => unreachable!("dtypes checked above"),
                    })
                };
                let (w, layout): (&[$t], Layout) = match (single, first.data) {
                    (true, WeightData::$variant(d)) => (d, first.layout),
                    _ => (&owned, Layout::OutIn),
                };
                pack_all(
                    Source {
                        w,
                        layout,
                        out_dim,
                        in_dim,
                    },
                    geom,
                )
            }};
        }
        let (panels, in_pad) = match first.data {
            WeightData::F32(_) => {
                let (b, p) = src!(F32, f32);
                (Panels::F32(b), p)
            }
            WeightData::F16(_) => {
                let (b, p) = src!(F16, f16);
                (Panels::F16(b), p)
            }
            WeightData::Bf16(_) => {
                let (b, p) = src!(Bf16, bf16);
                (Panels::Bf16(b), p)
            }
            WeightData::I8 { .. } => {
                let mut scales = Vec::with_capacity(out_dim);
                let mut q_all: Vec<i8> = Vec::with_capacity(out_dim * in_dim);
                for w in ws {
                    let WeightData::I8 { q, scales: s } = w.data else {
                        unreachable!("dtypes checked above")
                    };
                    assert_eq!(w.layout, Layout::OutIn, "PackedWeight: int8 weights must be OutIn");
                    assert_eq!(s.len(), w.out_dim, "PackedWeight: int8 scales are not [out_dim]");
                    scales.extend_from_slice(s);
                    q_all.extend_from_slice(q);
                }
                if let Some(pos) = q_all.iter().position(|&v| v == i8::MIN) {
                    return Err(PackError::I8Min {
                        row: pos / in_dim.max(1),
                        col: pos % in_dim.max(1),
                    });
                }
                // Scales and column sums padded to whole panels (the kernels read them a vector at a time).
                let padded = out_dim.div_ceil(geom.nr()) * geom.nr();
                let mut col_sums: Vec<i32> = if in_dim == 0 {
                    vec![0; out_dim]
                } else {
                    q_all
                        .chunks_exact(in_dim)
                        .map(|r| r.iter().map(|&v| v as i32).sum())
                        .collect()
                };
                col_sums.resize(padded, 0);
                scales.resize(padded, 0.0);
                let (q, in_pad) = pack_all(
                    Source {
                        w: &q_all,
                        layout: Layout::OutIn,
                        out_dim,
                        in_dim,
                    },
                    geom,
                );
                (Panels::I8 { q, scales, col_sums }, in_pad)
            }
        };
        Ok(Self {
            isa: k.isa(),
            geom,
            out_dim,
            in_dim,
            in_pad,
            panels,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The ISA whose panel layout this is (the kernels that run it must use the same one).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Output columns per panel.
    pub fn panel_width(&self) -> usize {
        self.geom.nr()
    }

    /// Number of panels (the unit a thread's share of the outputs is made of).
    pub fn n_panels(&self) -> usize {
        self.out_dim.div_ceil(self.geom.nr())
    }

    /// A matrix of GGUF blocks of type `ty`, `[out_dim, in_dim]`, from its bytes as ggml stores them (a GGUF
    /// tensor's data), interleaved into groups of 16 rows ([`BlockLayout::Groups`], the fast layout; the
    /// K-quants keep ggml's row order, [`BlockLayout::Rows`]). An error unless `bytes` holds exactly `out_dim`
    /// rows of `in_dim / block_size` blocks ([`BlockError`]: a row not whole blocks, or the byte count).
    pub fn from_blocks(
        k: &crate::Kernels,
        ty: BlockType,
        bytes: &[u8],
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, PackError> {
        Self::from_blocks_in(k, ty, BlockLayout::Groups, bytes, out_dim, in_dim)
    }

    /// [`PackedWeight::from_blocks`] in a chosen layout ([`BlockLayout::Rows`]: copied as they are).
    pub fn from_blocks_in(
        k: &crate::Kernels,
        ty: BlockType,
        layout: BlockLayout,
        bytes: &[u8],
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, PackError> {
        ty.check(bytes.len(), out_dim, in_dim)?;
        let panels = match blk::layout_of(ty, layout) {
            BlockLayout::Rows => {
                let mut data = AlignedBuf::<u8>::zeroed(bytes.len());
                data.as_mut_slice().copy_from_slice(bytes);
                Panels::Blocks { ty, data }
            }
            BlockLayout::Groups => {
                let rb = ty.matrix_bytes(1, in_dim)?;
                grouped(k.isa(), ty, out_dim, in_dim, |g, rows| {
                    rows.copy_from_slice(&bytes[g * GROUP * rb..(g * GROUP * rb + rows.len())]);
                })
            }
        };
        Ok(Self::blocks(k, panels, out_dim, in_dim))
    }

    /// Matrices with one `in_dim` (f32, f16 or bf16, either layout, as [`PackedWeight::stack`] takes them)
    /// quantized into GGUF blocks of type `ty` as llama.cpp's quantizer does ([`BlockType::quantize_block`]),
    /// stacked along the outputs. An error when `in_dim` is not whole blocks of the type's block size, or when
    /// qkv has no quantizer for the type ([`BlockType::can_quantize`]: Q5_K, Q6_K).
    pub fn quantize_blocks(k: &crate::Kernels, ws: &[Weight<'_>], ty: BlockType) -> Result<Self, PackError> {
        let in_dim = ws.first().expect("PackedWeight::quantize_blocks: no matrices").in_dim;
        let out_dim: usize = ws.iter().map(|w| w.out_dim).sum();
        if !ty.can_quantize() {
            return Err(BlockError::NoQuantizer { ty }.into());
        }
        ty.matrix_bytes(out_dim, in_dim)?;
        // Each output row's source matrix and row within it.
        let mut rows: Vec<(&Weight<'_>, usize)> = Vec::with_capacity(out_dim);
        for w in ws {
            if w.out_dim.checked_mul(w.in_dim) != Some(w.data.len()) {
                return Err(PackError::Shape {
                    out_dim: w.out_dim,
                    in_dim: w.in_dim,
                    found: w.data.len(),
                });
            }
            assert_eq!(
                w.in_dim, in_dim,
                "PackedWeight::quantize_blocks: matrices of different in_dim"
            );
            assert!(
                !matches!(w.data, WeightData::I8 { .. }),
                "PackedWeight::quantize_blocks: int8 weights"
            );
            rows.extend((0..w.out_dim).map(|o| (w, o)));
        }
        let rb = ty.matrix_bytes(1, in_dim)?;
        let quantize_rows = |first: usize, dst: &mut [u8]| {
            let mut x = vec![0.0f32; in_dim];
            for (r, out) in dst.chunks_exact_mut(rb).enumerate() {
                let (w, o) = rows[first + r];
                x.iter_mut().enumerate().for_each(|(i, v)| *v = w.at(o, i));
                ty.quantize(&x, out).expect("sizes checked above");
            }
        };
        let panels = match blk::layout_of(ty, BlockLayout::Groups) {
            BlockLayout::Groups => grouped(k.isa(), ty, out_dim, in_dim, |g, dst| quantize_rows(g * GROUP, dst)),
            BlockLayout::Rows => {
                let mut data = AlignedBuf::<u8>::zeroed(out_dim * rb);
                if rb > 0 {
                    data.as_mut_slice()
                        .par_chunks_mut(GROUP * rb)
                        .enumerate()
                        .for_each(|(g, dst)| quantize_rows(g * GROUP, dst));
                }
                Panels::Blocks { ty, data }
            }
        };
        Ok(Self::blocks(k, panels, out_dim, in_dim))
    }

    fn blocks(k: &crate::Kernels, panels: Panels, out_dim: usize, in_dim: usize) -> Self {
        Self {
            isa: k.isa(),
            geom: Geometry::of(k.isa()),
            out_dim,
            in_dim,
            in_pad: in_dim,
            panels,
        }
    }

    /// The GGUF block type, for a matrix of blocks ([`PackedWeight::from_blocks`], [`PackedWeight::quantize_blocks`]).
    pub fn block_type(&self) -> Option<BlockType> {
        match self.panels {
            Panels::Blocks { ty, .. } | Panels::Groups { ty, .. } => Some(ty),
            _ => None,
        }
    }

    /// The layout of a matrix of blocks.
    pub fn block_layout(&self) -> Option<BlockLayout> {
        match self.panels {
            Panels::Blocks { .. } => Some(BlockLayout::Rows),
            Panels::Groups { .. } => Some(BlockLayout::Groups),
            _ => None,
        }
    }

    /// Block `b` of row `o` of a block matrix, as ggml stores it, into `out[..block_bytes]` (`None` for other
    /// matrices).
    pub fn block_bytes_at(&self, o: usize, b: usize, out: &mut [u8; MAX_BLOCK_BYTES]) -> Option<BlockType> {
        let nb = self.in_dim / self.block_type()?.block_size();
        assert!(o < self.out_dim && b < nb, "block_bytes_at: ({o}, {b}) out of range");
        match &self.panels {
            Panels::Blocks { ty, data } => {
                let bb = ty.block_bytes();
                out[..bb].copy_from_slice(&data.as_slice()[(o * nb + b) * bb..(o * nb + b + 1) * bb]);
                Some(*ty)
            }
            Panels::Groups { ty, q, s } => {
                let g = o / GROUP;
                let (qg, sg) = (nb * blk::group_quant_bytes(*ty), nb * blk::group_scales(*ty));
                let (q, s) = (&q.as_slice()[g * qg..(g + 1) * qg], &s.as_slice()[g * sg..(g + 1) * sg]);
                blk::group_block(*ty, blk::q8_offset(self.isa), q, s, b, o % GROUP, out);
                Some(*ty)
            }
            _ => None,
        }
    }

    /// Row `o` of a block matrix dequantized into `row` (`false` for other matrices).
    fn dequantize_row(&self, o: usize, row: &mut [f32]) -> bool {
        let Some(ty) = self.block_type() else {
            return false;
        };
        let mut bytes = [0u8; MAX_BLOCK_BYTES];
        for (b, dst) in row.chunks_exact_mut(ty.block_size()).enumerate() {
            self.block_bytes_at(o, b, &mut bytes);
            ty.dequantize_block(&bytes[..ty.block_bytes()], dst);
        }
        true
    }

    /// Whether the values are int8 (with per-output-row scales).
    pub fn is_i8(&self) -> bool {
        matches!(self.panels, Panels::I8 { .. })
    }

    /// Bytes held (panels with their padding; int8: values, scales and column sums).
    pub fn bytes(&self) -> usize {
        match &self.panels {
            Panels::F32(b) => std::mem::size_of_val(b.as_slice()),
            Panels::F16(b) => std::mem::size_of_val(b.as_slice()),
            Panels::Bf16(b) => std::mem::size_of_val(b.as_slice()),
            Panels::I8 { q, scales, col_sums } => {
                q.as_slice().len()
                    + std::mem::size_of_val(scales.as_slice())
                    + std::mem::size_of_val(col_sums.as_slice())
            }
            Panels::Blocks { data, .. } => data.as_slice().len(),
            Panels::Groups { q, s, .. } => q.as_slice().len() + std::mem::size_of_val(s.as_slice()),
        }
    }

    /// Element `(o, i)` as f32 (int8: times its row's scale), read from the panels.
    pub fn at(&self, o: usize, i: usize) -> f32 {
        assert!(
            o < self.out_dim && i < self.in_dim,
            "PackedWeight::at: ({o}, {i}) out of range"
        );
        let nr = self.geom.nr();
        let idx = |g: usize| (o / nr) * self.in_pad * nr + (i / g) * nr * g + (o % nr) * g + i % g;
        match &self.panels {
            Panels::F32(b) => b.as_slice()[idx(1)],
            Panels::F16(b) => b.as_slice()[idx(1)].to_f32(),
            Panels::Bf16(b) => b.as_slice()[idx(2)].to_f32(),
            Panels::I8 { q, scales, .. } => q.as_slice()[idx(4)] as f32 * scales[o],
            Panels::Blocks { .. } | Panels::Groups { .. } => {
                let ty = self.block_type().expect("a block matrix");
                let (mut bytes, mut buf) = ([0u8; MAX_BLOCK_BYTES], [0.0f32; super::kblocks::QK_K]);
                let n = ty.block_size();
                self.block_bytes_at(o, i / n, &mut bytes);
                ty.dequantize_block(&bytes[..ty.block_bytes()], &mut buf[..n]);
                buf[i % n]
            }
        }
    }

    /// Rows `ids` of the matrix (`[vocab, dim]` as an embedding table: a head tied to its embeddings keeps one
    /// packed copy) times `scale`, into `out[ids.len(), in_dim]`. Panics on an id `>= out_dim`.
    pub fn gather_rows(&self, ids: &[u32], scale: f32, out: &mut [f32]) {
        let dim = self.in_dim;
        assert_eq!(out.len(), ids.len() * dim, "gather_rows: out is not [ids, in_dim]");
        let nr = self.geom.nr();
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))) {
            let o = id as usize;
            assert!(o < self.out_dim, "gather_rows: id {o} out of range");
            if self.dequantize_row(o, row) {
                row.iter_mut().for_each(|v| *v *= scale);
                continue;
            }
            let base = (o / nr) * self.in_pad * nr;
            let c = o % nr;
            // Input i of column c in the group layout of group size g.
            let at = |i: usize, g: usize| base + (i / g) * nr * g + c * g + i % g;
            macro_rules! gather {
                ($b:expr, $g:expr, $s:expr) => {{
                    let b = $b.as_slice();
                    for (i, v) in row.iter_mut().enumerate() {
                        *v = b[at(i, $g)].to_f32() * $s;
                    }
                }};
            }
            match &self.panels {
                Panels::F32(b) => gather!(b, 1, scale),
                Panels::F16(b) => gather!(b, 1, scale),
                Panels::Bf16(b) => gather!(b, 2, scale),
                Panels::I8 { q, scales, .. } => gather!(q, 4, scales[o] * scale),
                Panels::Blocks { .. } | Panels::Groups { .. } => unreachable!("gathered above"),
            }
        }
    }
}

/// Group rows of a block matrix at load: `fill(g, rows)` writes group `g`'s rows (`rows.len() / row bytes` of
/// them, ggml's order) into a scratch buffer, which is interleaved into the group ([`BlockLayout::Groups`]).
/// Groups are filled in parallel.
fn grouped(isa: Isa, ty: BlockType, out_dim: usize, in_dim: usize, fill: impl Fn(usize, &mut [u8]) + Sync) -> Panels {
    let nb = in_dim / ty.block_size();
    let rb = nb * ty.block_bytes();
    let n_groups = out_dim.div_ceil(GROUP);
    let (qg, sg) = (nb * blk::group_quant_bytes(ty), nb * blk::group_scales(ty));
    let mut q = AlignedBuf::<u8>::zeroed(n_groups * qg);
    let mut s = AlignedBuf::<u16>::zeroed(n_groups * sg);
    let off = blk::q8_offset(isa);
    if qg > 0 {
        q.as_mut_slice()
            .par_chunks_mut(qg)
            .zip(s.as_mut_slice().par_chunks_mut(sg))
            .enumerate()
            .for_each_init(Vec::new, |rows, (g, (q, s))| {
                let n = GROUP.min(out_dim - g * GROUP);
                rows.resize(n * rb, 0);
                fill(g, rows);
                blk::interleave_group(ty, off, rows, nb, blk::GroupMut { q, s });
            });
    }
    Panels::Groups { ty, q, s }
}
