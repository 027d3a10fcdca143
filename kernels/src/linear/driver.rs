//! The packed GEMM/GEMV with f32 activations: a static split of the output over threads, then per share BLIS-style
//! loops over cache blocks (sizes from [`crate::cache::CacheSizes`]) around the register tiles of [`super::tile`].
//!
//! ```text
//! share = (rows, panels)                             static: part p of P gets one block of each
//! rows <= 8 (GEMV):  for each panel: for each row tile: all inputs at once, x read in place
//! more rows (GEMM):  for NC panels: for KC inputs: [pack this KC block of weights, if not packed at load]
//!                      for MC rows: pack x[MC, KC] into row tiles (contiguous, zero padded)
//!                        for each panel: for each row tile: MR x NR tile over KC, added to y
//! ```
#![allow(clippy::needless_range_loop)] // register tiles read best with indices
#![allow(clippy::too_many_arguments)] // the share runners take the job's parts flat, as the tiles do

use std::cell::Cell;
use std::ops::Range;

use super::packed::{pack_panels, Geometry, Line, Source};
use super::tile::{self, Cols, PanelElem, Store, Tile};
use crate::cache::CacheSizes;

/// Up to this many rows a share runs as a GEMV: `x` read in place, all inputs of a panel in one pass.
pub(crate) const GEMV_ROWS: usize = 8;
/// Below this many multiply-adds a call runs on the calling thread (rayon's fork/join costs more).
pub(crate) const PAR_MIN_MACS: usize = 1 << 17;

/// Cache blocking of one ISA (in elements of f32 activations).
///
/// Measured on a Zen 4 core (L1d 32 KiB, L2 1 MiB), 512x2048x2048: long input blocks win (KC 128 → 2048: 74% → 88%
/// of the FMA peak), so KC is sized by L2 rather than L1: a `[KC, NR]` weight block takes a quarter of L2 (streamed
/// from there by every row tile), the packed `[MC, KC]` block of `x` half of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Most inputs per block.
    pub kc: usize,
    /// Bytes the packed `x` block may take.
    pub a_bytes: usize,
    /// Rows per block, when fixed ([`crate::GemmBlocking`]).
    pub mc: Option<usize>,
    /// Panels per block: a `[KC, NC·NR]` block of weights takes half of this core's share of L3.
    pub ncp: usize,
}

impl Blocking {
    /// The blocking `k` runs: its [`crate::GemmBlocking`] if set, else `QKV_GEMM_BLOCKING=kc,mc,ncp` if set (read
    /// once, for tuning), else derived from this CPU's caches.
    pub(crate) fn of(k: crate::Kernels, geom: Geometry) -> Blocking {
        if let Some(b) = k.gemm_blocking() {
            return Blocking::fixed(b);
        }
        static ENV: std::sync::OnceLock<Option<crate::GemmBlocking>> = std::sync::OnceLock::new();
        let env = ENV.get_or_init(|| {
            let v = std::env::var("QKV_GEMM_BLOCKING").ok()?;
            let f: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            match f[..] {
                [kc, mc, ncp] => Some(crate::GemmBlocking { kc, mc, ncp }),
                _ => None,
            }
        });
        if let Some(b) = env {
            return Blocking::fixed(*b);
        }
        let c = CacheSizes::get();
        let nr = geom.nr();
        let kc = ((c.l2 / 4) / (nr * 4)).clamp(256, 4096) / 8 * 8;
        Blocking {
            kc,
            a_bytes: c.l2 / 2,
            mc: None,
            ncp: ((c.l3_per_core / 2) / (kc * nr * 4)).clamp(1, 4096),
        }
    }

    fn fixed(b: crate::GemmBlocking) -> Blocking {
        let kc = b.kc.max(4).next_multiple_of(4);
        let mc = b.mc.max(1);
        Blocking {
            kc,
            a_bytes: mc * kc * 4,
            mc: Some(mc),
            ncp: b.ncp.max(1),
        }
    }

    /// Rows per block for f32 blocks of `kc` inputs.
    pub(crate) fn mc(&self, kc: usize, mr: usize) -> usize {
        self.mc
            .unwrap_or_else(|| (self.a_bytes / (kc.max(1) * 4)).clamp(mr, 4096))
    }

    /// Rows per block for int8 rows of `in_pad` inputs (all inputs at once).
    pub(crate) fn mc_i8(&self, in_pad: usize, mr: usize) -> usize {
        self.mc
            .unwrap_or_else(|| (self.a_bytes / in_pad.max(1)).clamp(mr, 4096))
    }
}

/// The weights of a job.
pub(crate) enum BView<'a, E> {
    /// Packed at load: every panel, `in_pad` inputs each.
    Packed { panels: &'a [E], in_pad: usize },
    /// As stored: each share packs its blocks into scratch (the path of [`crate::Kernels::linear`]).
    Stored(Source<'a, E>),
}

/// One `y[m, out_dim] = x[m, in_dim] · Wᵀ (· scales) + bias` call.
pub(crate) struct Job<'a, E> {
    pub x: &'a [f32],
    pub m: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub b: BView<'a, E>,
    /// int8 weights: one scale per output.
    pub scales: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub y: OutPtr,
}

/// The output pointer shared by shares that write disjoint `(rows, panels)` blocks of one `[m, out_dim]` buffer.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: only used by this module's share runners, which write disjoint blocks of a buffer that outlives them.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// How many parts along the rows and along the panels a call is split into.
pub(crate) fn split(
    m: usize,
    n_panels: usize,
    in_dim: usize,
    out_dim: usize,
    threads: usize,
    mr: usize,
) -> (usize, usize) {
    let macs = m.saturating_mul(in_dim).saturating_mul(out_dim);
    let parts = if macs < PAR_MIN_MACS { 1 } else { threads.max(1) };
    let col_parts = parts.min(n_panels).max(1);
    let row_parts = (parts / col_parts).min(m.div_ceil(mr)).max(1);
    (row_parts, col_parts)
}

/// Block `i` of `n` nearly equal blocks of `0 .. len`.
pub(crate) fn block(len: usize, n: usize, i: usize) -> Range<usize> {
    let (base, extra) = (len / n, len % n);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// Run `f(part)` for every part, on rayon's pool when there is more than one.
pub(crate) fn run_parts(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n <= 1 {
        f(0)
    } else {
        use rayon::prelude::*;
        (0..n).into_par_iter().with_max_len(1).for_each(f)
    }
}

/// Row tiles of a block of `m` rows: `ceil(m / mr)` tiles of nearly equal height (`(first row, height)`).
#[inline(always)]
pub(crate) fn row_tiles(m: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = m.div_ceil(mr).max(1);
    (0..n).map(move |i| {
        let r = block(m, n, i);
        (r.start, r.len())
    })
}

/// Thread-local scratch: packed `x` blocks and (for stored weights) packed weight blocks. Grows, never shrinks,
/// so a warm thread allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) a: Vec<Line>,
    pub(crate) b: Vec<Line>,
}

/// `len` values of `T` at the start of `lines`, grown as needed.
pub(crate) fn take<T: bytemuck::Pod>(lines: &mut Vec<Line>, len: usize) -> &mut [T] {
    let n = (len * std::mem::size_of::<T>()).div_ceil(64);
    if lines.len() < n {
        lines.resize(n, Line([0; 64]));
    }
    &mut bytemuck::cast_slice_mut(&mut lines[..n])[..len]
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

impl Scratch {
    /// This thread's scratch (empty if it is already taken, e.g. by a caller up the stack).
    pub(crate) fn take_local() -> Scratch {
        SCRATCH.with(|c| c.take())
    }

    /// Give the scratch back to this thread (the bigger of the two is kept).
    pub(crate) fn put_local(self) {
        SCRATCH.with(|c| {
            let old = c.take();
            c.set(if old.a.len() + old.b.len() > self.a.len() + self.b.len() {
                old
            } else {
                self
            });
        })
    }
}

/// Call `$body` with `$h` a const equal to the runtime `$n` (1 ..= MR_MAX).
macro_rules! with_rows {
    ($n:expr, $h:ident => $body:expr) => {
        match $n {
            1 => {
                const $h: usize = 1;
                $body
            }
            2 => {
                const $h: usize = 2;
                $body
            }
            3 => {
                const $h: usize = 3;
                $body
            }
            4 => {
                const $h: usize = 4;
                $body
            }
            5 => {
                const $h: usize = 5;
                $body
            }
            6 => {
                const $h: usize = 6;
                $body
            }
            7 => {
                const $h: usize = 7;
                $body
            }
            8 => {
                const $h: usize = 8;
                $body
            }
            9 => {
                const $h: usize = 9;
                $body
            }
            10 => {
                const $h: usize = 10;
                $body
            }
            11 => {
                const $h: usize = 11;
                $body
            }
            12 => {
                const $h: usize = 12;
                $body
            }
            13 => {
                const $h: usize = 13;
                $body
            }
            14 => {
                const $h: usize = 14;
                $body
            }
            n => unreachable!("tile of {n} rows"),
        }
    };
}
pub(crate) use with_rows;

/// Per-column data of panel `j` (columns `j·NR ..`, `n` of them).
#[inline(always)]
fn cols<'a, E>(job: &Job<'a, E>, c0: usize, n: usize) -> Cols<'a> {
    Cols {
        scales: job.scales.map(|s| &s[c0..c0 + n]),
        bias: job.bias.map(|b| &b[c0..c0 + n]),
    }
}

/// Rows `rows` x panels `panels` of `job` (one share).
#[inline(always)]
pub(crate) fn run_share<S: Tile, E: PanelElem>(
    s: S,
    job: &Job<'_, E>,
    rows: Range<usize>,
    panels: Range<usize>,
    blk: Blocking,
) {
    let geom = S::GEOM;
    let nr = geom.nr();
    let (in_dim, out_dim) = (job.in_dim, job.out_dim);
    assert!(job.x.len() == job.m * in_dim && rows.end <= job.m && panels.end * nr < out_dim + nr);
    if rows.is_empty() || panels.is_empty() {
        return;
    }
    let y = job.y.0;
    match &job.b {
        BView::Packed { panels: data, in_pad } if rows.len() <= GEMV_ROWS => {
            let in_pad = *in_pad;
            assert!(data.len() >= panels.end * in_pad * nr && in_pad >= in_dim);
            for j in panels {
                let c0 = j * nr;
                let n = nr.min(out_dim - c0);
                let cols = cols(job, c0, n);
                let bp = data[j * in_pad * nr..].as_ptr();
                for (r0, h) in row_tiles(rows.len(), geom.mr) {
                    let r0 = rows.start + r0;
                    let xp = job.x[r0 * in_dim..].as_ptr();
                    // SAFETY: x rows r0 .. r0 + h (< m) hold in_dim values each; panel j holds in_pad >= in_dim
                    // inputs; y rows r0 .. r0 + h, columns c0 .. c0 + n < out_dim belong to this share.
                    unsafe {
                        with_rows!(h, H => {
                            let mut acc = tile::zero_acc::<S, H>(s);
                            tile::tile::<S, E, H>(s, xp, in_dim, 1, bp, in_dim, &mut acc);
                            for r in 0..H {
                                tile::store_row(s, &acc[r], y.add((r0 + r) * out_dim + c0), n, Store::Final, cols);
                            }
                        })
                    }
                }
            }
        }
        b => {
            // The scratch is taken out of the thread-local and put back after: the SIMD code must not sit in a
            // closure (closures do not inherit the wrapper's `target_feature`s, so nothing would inline).
            let mut sc = Scratch::take_local();
            let Scratch { a: a_lines, b: b_lines } = &mut sc;
            let g = E::G;
            let in_pad = in_dim.next_multiple_of(g);
            let kc_max = blk.kc.next_multiple_of(4).min(in_pad);
            let mc_max = blk.mc(kc_max, geom.mr).min(rows.len());
            let ncp = blk.ncp.min(panels.len());
            let a_pack: &mut [f32] = take(a_lines, mc_max.next_multiple_of(geom.mr) * kc_max);
            let b_pack: &mut [E] = match b {
                BView::Stored(_) => take(b_lines, ncp * kc_max * nr),
                BView::Packed { .. } => &mut [],
            };
            let mut jc = panels.start;
            while jc < panels.end {
                let jn = ncp.min(panels.end - jc);
                let mut pc = 0;
                while pc < in_pad {
                    let kc = kc_max.min(in_pad - pc);
                    let (bblock, stride): (*const E, usize) = match b {
                        BView::Packed {
                            panels: data,
                            in_pad: ip,
                        } => {
                            assert!(data.len() >= (jc + jn) * ip * nr);
                            (data[jc * ip * nr + pc * nr..].as_ptr(), ip * nr)
                        }
                        BView::Stored(src) => {
                            pack_panels(*src, nr, jc, jn, pc, kc, b_pack);
                            (b_pack.as_ptr(), kc * nr)
                        }
                    };
                    let mode = if pc + kc >= in_pad {
                        Store::Final
                    } else {
                        Store::Partial
                    };
                    let mut ic = rows.start;
                    while ic < rows.end {
                        let mc = mc_max.min(rows.end - ic);
                        // Pack x[ic .. ic + mc, pc .. pc + kc] tile by tile: tile (r0, h) at offset r0·kc, [kc, h].
                        for (r0, h) in row_tiles(mc, geom.mr) {
                            let dst = &mut a_pack[r0 * kc..(r0 + h) * kc];
                            let k_end = (pc + kc).min(in_dim);
                            for r in 0..h {
                                let xr = &job.x[(ic + r0 + r) * in_dim..(ic + r0 + r + 1) * in_dim];
                                for (p, &v) in xr[pc..k_end].iter().enumerate() {
                                    dst[p * h + r] = v;
                                }
                                for p in k_end - pc..kc {
                                    dst[p * h + r] = 0.0;
                                }
                            }
                        }
                        for j in 0..jn {
                            let c0 = (jc + j) * nr;
                            let n = nr.min(out_dim - c0);
                            let cols = cols(job, c0, n);
                            // SAFETY: block j of bblock holds kc inputs of NR columns (packed at load: inside
                            // `data`, asserted; or just packed into `b_pack`, which holds jn blocks).
                            let bp = unsafe { bblock.add(j * stride) };
                            for (r0, h) in row_tiles(mc, geom.mr) {
                                let ap = a_pack[r0 * kc..].as_ptr();
                                // SAFETY: the packed tile holds [kc, h] floats; y rows ic + r0 .. + h and columns
                                // c0 .. c0 + n belong to this share.
                                unsafe {
                                    with_rows!(h, H => {
                                        let mut acc = tile::zero_acc::<S, H>(s);
                                        if pc > 0 {
                                            // Continue the sums of the previous input blocks (one FMA chain each).
                                            for r in 0..H {
                                                acc[r] = tile::load_row(s, y.add((ic + r0 + r) * out_dim + c0), n);
                                            }
                                        }
                                        tile::tile::<S, E, H>(s, ap, 1, H, bp, kc, &mut acc);
                                        for r in 0..H {
                                            let yr = y.add((ic + r0 + r) * out_dim + c0);
                                            tile::store_row(s, &acc[r], yr, n, mode, cols);
                                        }
                                    })
                                }
                            }
                        }
                        ic += mc;
                    }
                    pc += kc;
                }
                jc += jn;
            }
            sc.put_local();
        }
    }
}

/// One share of a static split: part `index` of `count` (the engine's thread team runs one part per thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

/// Most parts a [`SharedOut`] hands out.
pub const MAX_PARTS: usize = 256;

/// A `[rows, out_dim]` output shared by the threads of a team, each writing the block of its [`Part`]. Every part
/// index can be taken once (a second take panics), so two threads never write the same block; make one per call.
pub struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    taken: [std::sync::atomic::AtomicU64; MAX_PARTS / 64],
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is reached only through `take`, which gives each part index out once; parts of one split write
// disjoint blocks (see `Kernels::linear_packed_part`).
unsafe impl Sync for SharedOut<'_> {}
// SAFETY: as above; the borrow of `y` moves with it.
unsafe impl Send for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub fn new(y: &'a mut [f32]) -> Self {
        Self {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            taken: Default::default(),
            _y: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The output pointer for part `index`; panics if that part was taken already or is out of range.
    pub(crate) fn take(&self, part: Part) -> OutPtr {
        assert!(
            part.count >= 1 && part.count <= MAX_PARTS && part.index < part.count,
            "SharedOut: part {} of {} (at most {MAX_PARTS} parts)",
            part.index,
            part.count
        );
        let bit = 1u64 << (part.index % 64);
        let prev = self.taken[part.index / 64].fetch_or(bit, std::sync::atomic::Ordering::AcqRel);
        assert!(prev & bit == 0, "SharedOut: part {} taken twice", part.index);
        OutPtr(self.ptr)
    }
}

/// The `(rows, panels)` block of part `p` of a call split into `rp x cp` parts.
pub(crate) fn part_block(m: usize, n_panels: usize, rp: usize, cp: usize, p: usize) -> (Range<usize>, Range<usize>) {
    (block(m, rp, p / cp), block(n_panels, cp, p % cp))
}
