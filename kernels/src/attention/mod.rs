//! Fused scaled-dot-product attention with online softmax (FlashAttention-2 style, on CPU).
//!
//! The contract is [`crate::reference::attention`]; this module computes the same thing without
//! ever holding a `[q_len, kv_len]` score matrix:
//!
//! 1. Plan. Every mask qkv knows (causal, sliding window, padding `key_lens`, `kv_len`) lets query row
//!    `i` see a *range* of the keys, `lo(i) <= j < lim(b, i)` (`lo` is 0 but for a sliding window). The query rows that share one KV head (the `n_heads /
//!    n_kv_heads` heads of a GQA group, all positions) are cut into blocks of at most
//!    [`BLOCK_ROWS`] rows, position-major, so every K/V row a block loads serves all of its heads.
//! 2. Split. A block's keys may be split into chunks (decode over a long cache with fewer blocks
//!    than threads); each chunk yields a partial `(max, sum, acc)` per row, merged at the end.
//! 3. Tile. A work item (block, key chunk) walks its keys in tiles of [`TILE_KEYS`]: scores
//!    `S = Q·Kᵀ` for the tile (`[rows, TILE_KEYS]`, a few KiB), masks the tail of each row, updates
//!    the running max / sum, rescales the accumulator and adds `P·V`. Tiles past the largest
//!    limit of the block are never visited (causal prefill skips the upper triangle).
//! 4. Merge and write. Partials of one block are reduced and divided by the sum; rows that see
//!    no key get zeros.
//!
//! Blocks with many rows (prefill, encoder) read `Kᵀ` packed once per (batch row, KV head) into
//! `[tile, head_dim, TILE_KEYS]` panels, so the score micro-kernel is a small GEMM; blocks with
//! few rows (decode) read K rows in place with dot products. Items run in parallel with rayon
//! when the problem is large enough.

mod ops;
mod tile;

use std::ops::Range;

use rayon::prelude::*;

use crate::simd::dispatch;
use crate::types::AttnArgs;
use crate::Kernels;

use tile::Partial;

/// Keys per tile: scores `[rows, TILE_KEYS]` and one `Kᵀ` panel `[head_dim, TILE_KEYS]` stay in L1/L2.
pub(crate) const TILE_KEYS: usize = 64;
/// Most query rows in one block (rows share each K/V tile load).
const BLOCK_ROWS: usize = 32;
/// A KV head with fewer query rows than this (decode, even with 8 query heads per KV head) reads K and V
/// in place: packing costs a transposed copy of K per call, which pays off only when many rows reuse it.
const PACK_MIN_ROWS: usize = 16;
/// A block's keys are split across threads only from this many keys on.
const SPLIT_MIN_KEYS: usize = 1024;
/// Smallest key chunk of a split (a multiple of [`TILE_KEYS`]).
const SPLIT_CHUNK_MIN: usize = 4 * TILE_KEYS;
/// Below this many multiply-adds the whole call runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 19;

/// One query row: offsets of its `q` and `out` vectors and the keys it sees (`lo <= j < lim`; `lo` is 0 but for a
/// sliding window).
#[derive(Clone, Copy, Debug)]
struct Row {
    q: usize,
    out: usize,
    lo: usize,
    lim: usize,
    /// Query head and position (for a [`crate::PositionBias`]).
    head: usize,
    pos: usize,
}

/// Query rows of one (batch row, KV head) pair that are processed together.
#[derive(Clone, Debug)]
struct Block {
    b: usize,
    kv_head: usize,
    /// Into [`Plan::rows`].
    rows: Range<usize>,
    /// Largest `lim` of the rows: keys at or past it are never read.
    max_lim: usize,
    /// Smallest `lo` of the rows: keys before it are never read (its tile is the first one visited).
    min_lo: usize,
}

/// One unit of parallel work: the keys `keys` of block `block`.
#[derive(Clone, Debug)]
struct Item {
    block: usize,
    keys: Range<usize>,
}

/// Everything a work item reads.
struct Ctx<'a> {
    a: &'a AttnArgs<'a>,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    rows: &'a [Row],
    /// K and V packed per (batch row, KV head), or `None` to read them in place.
    packed: Option<&'a Packed>,
}

/// K and V of every (batch row, KV head) pair, packed for the prefill micro-kernels.
#[derive(Default)]
struct Packed {
    n_tiles: usize,
    /// `Kᵀ` panels: `[batch, n_kv_heads, n_tiles, head_dim, TILE_KEYS]`.
    kt: Vec<f32>,
    /// V rows, dense: `[batch, n_kv_heads, n_tiles * TILE_KEYS, head_dim]`.
    v: Vec<f32>,
}

/// Whether a call's work items run on rayon's pool or on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    /// Too little work to pay for fork/join, or a single thread.
    Serial,
    Parallel,
}

/// The buffers of attention calls, reused: the plan (rows, blocks, work items), each item's partial state and
/// scratch, and packed K/V. They grow to the largest call and are kept, so a warm scratch allocates nothing. Owned
/// by the caller ([`crate::Kernels::attention_in`]: a session keeps one for its steps); [`crate::Kernels::attention`]
/// makes a fresh one per call.
#[derive(Default)]
pub struct AttnScratch {
    rows: Vec<Row>,
    blocks: Vec<Block>,
    items: Vec<Item>,
    parts: Vec<Partial>,
    merged: Partial,
    packed: Packed,
}

impl std::fmt::Debug for AttnScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttnScratch({} items)", self.parts.len())
    }
}

/// Fused attention on the ISA of `k` (a [`Kernels`] holds only ISAs the CPU supports), with the buffers of `sc`.
pub(crate) fn attention(
    k: Kernels,
    sc: &mut AttnScratch,
    a: &AttnArgs<'_>,
    q: &[f32],
    keys: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    check_shapes(a, q, keys, v, out);
    if a.batch == 0 || a.n_heads == 0 || a.q_len == 0 || a.head_dim == 0 {
        // Nothing to compute and no work item to dispatch: the call still counts as one on its ISA.
        crate::isa::note_exercised(k.isa());
        return;
    }
    // Plan: rows, blocks and work items.
    let AttnScratch {
        rows,
        blocks,
        items,
        parts,
        merged,
        packed,
    } = sc;
    plan_rows(a, rows);
    plan_blocks(a, rows, blocks);
    let macs: usize = blocks
        .iter()
        .map(|bl| bl.rows.len() * bl.max_lim * a.head_dim * 2)
        .sum();
    let schedule = if macs >= PAR_MIN_MACS && rayon::current_num_threads() > 1 {
        Schedule::Parallel
    } else {
        Schedule::Serial
    };
    let n_threads = match schedule {
        Schedule::Parallel => rayon::current_num_threads(),
        Schedule::Serial => 1,
    };
    plan_items(blocks, n_threads, items);

    // Pack Kᵀ for blocks with many rows.
    let rows_per_kv_head = a.q_len * (a.n_heads / a.n_kv_heads);
    let kv_end = (0..a.batch).map(|b| key_end(a, b)).max().unwrap_or(0);
    let n_tiles = kv_end.div_ceil(TILE_KEYS);
    let use_packed = rows_per_kv_head >= PACK_MIN_ROWS && n_tiles > 0;
    if use_packed {
        pack_kv(a, keys, v, n_tiles, schedule, packed);
    }

    let ctx = Ctx {
        a,
        q,
        k: keys,
        v,
        rows,
        packed: use_packed.then_some(&*packed),
    };
    // Each item runs the generic `tile::run_item` compiled for the ISA, like every other kernel, into its partial.
    if parts.len() < items.len() {
        parts.resize_with(items.len(), Partial::default);
    }
    let blocks = &*blocks;
    let work = |(it, part): (&Item, &mut Partial)| {
        let (ctx, block, keys) = (&ctx, &blocks[it.block], it.keys.clone());
        dispatch!(k, tile::run_item, (ctx: &Ctx<'_>, block: &Block, keys: Range<usize>, part: &mut Partial))
    };
    let partials = &mut parts[..items.len()];
    match schedule {
        Schedule::Parallel => items.par_iter().zip(partials.par_iter_mut()).for_each(work),
        Schedule::Serial => items.iter().zip(partials.iter_mut()).for_each(work),
    }

    // Merge the partials of each block and write normalised rows.
    let d = a.head_dim;
    let mut i = 0;
    while i < items.len() {
        let block = &blocks[items[i].block];
        let n = items[i..].iter().take_while(|it| it.block == items[i].block).count();
        let merged = Partial::merge(&parts[i..i + n], merged);
        for (r, row) in rows[block.rows.clone()].iter().enumerate() {
            merged.write_row(r, &mut out[row.out..row.out + d]);
        }
        i += n;
    }
}

/// Assert the contract of [`AttnArgs`]: slices cover every addressed vector.
fn check_shapes(a: &AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    assert!(
        a.n_kv_heads > 0 && a.n_heads.is_multiple_of(a.n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads"
    );
    if let Some(l) = a.key_lens {
        assert_eq!(l.len(), a.batch, "attention: key_lens is not [batch]");
    }
    if let Some(pb) = a.position_bias {
        assert!(
            pb.table.len() >= a.n_heads * pb.width(),
            "attention: position_bias table is not [n_heads, 2 * max_distance + 1]"
        );
    }
    if a.batch == 0 || a.head_dim == 0 {
        return;
    }
    // Offsets grow with every index, so the last vector of each tensor is the furthest one.
    let end =
        |s: &crate::types::Strides, len: usize, heads: usize| s.offset(a.batch - 1, len - 1, heads - 1) + a.head_dim;
    if a.q_len > 0 && a.n_heads > 0 {
        assert!(
            q.len() >= end(&a.q_strides, a.q_len, a.n_heads),
            "attention: q too short for its strides"
        );
        assert!(
            out.len() >= end(&a.out_strides, a.q_len, a.n_heads),
            "attention: out too short for its strides"
        );
    }
    if a.kv_len > 0 {
        let kv_end = end(&a.kv_strides, a.kv_len, a.n_kv_heads);
        assert!(k.len() >= kv_end, "attention: k too short for its strides");
        assert!(v.len() >= kv_end, "attention: v too short for its strides");
    }
}

/// Keys batch row `b` may see at all: `min(kv_len, key_lens[b])`.
fn key_end(a: &AttnArgs<'_>, b: usize) -> usize {
    a.key_lens.map_or(a.kv_len, |l| l[b].min(a.kv_len))
}

/// Every query row into `rows`, grouped by (batch row, KV head), position-major then head within the group.
fn plan_rows(a: &AttnArgs<'_>, rows: &mut Vec<Row>) {
    let group = a.n_heads / a.n_kv_heads;
    rows.clear();
    for b in 0..a.batch {
        let end = key_end(a, b);
        for kv_head in 0..a.n_kv_heads {
            for i in 0..a.q_len {
                let keys = a.mask.keys(i);
                let lim = end.min(keys.end);
                for h in kv_head * group..(kv_head + 1) * group {
                    rows.push(Row {
                        q: a.q_strides.offset(b, i, h),
                        out: a.out_strides.offset(b, i, h),
                        lo: keys.start.min(lim),
                        lim,
                        head: h,
                        pos: a.mask.query_pos(i),
                    });
                }
            }
        }
    }
}

/// Cut the rows of each (batch row, KV head) pair into `blocks` of at most [`BLOCK_ROWS`].
fn plan_blocks(a: &AttnArgs<'_>, rows: &[Row], blocks: &mut Vec<Block>) {
    let per_pair = a.q_len * (a.n_heads / a.n_kv_heads);
    blocks.clear();
    for b in 0..a.batch {
        for kv_head in 0..a.n_kv_heads {
            let first = (b * a.n_kv_heads + kv_head) * per_pair;
            for start in (first..first + per_pair).step_by(BLOCK_ROWS) {
                let range = start..(start + BLOCK_ROWS).min(first + per_pair);
                let max_lim = rows[range.clone()].iter().map(|r| r.lim).max().unwrap_or(0);
                let min_lo = rows[range.clone()].iter().map(|r| r.lo).min().unwrap_or(0);
                blocks.push(Block {
                    b,
                    kv_head,
                    rows: range,
                    max_lim,
                    min_lo,
                });
            }
        }
    }
}

/// One item per block, or several key chunks per block when there are fewer blocks than
/// `2 * n_threads` and the keys are long (decode over a long cache), into `items`. Items of a block are adjacent.
fn plan_items(blocks: &[Block], n_threads: usize, items: &mut Vec<Item>) {
    let want = 2 * n_threads;
    let split = n_threads > 1 && blocks.len() < want;
    items.clear();
    for (i, bl) in blocks.iter().enumerate() {
        let n_chunks = if split && bl.max_lim >= SPLIT_MIN_KEYS {
            want.div_ceil(blocks.len()).min(bl.max_lim / SPLIT_CHUNK_MIN).max(1)
        } else {
            1
        };
        let chunk = bl.max_lim.div_ceil(n_chunks).next_multiple_of(TILE_KEYS).max(TILE_KEYS);
        // Tiles wholly before every row's window are skipped (a chunk starts on a tile boundary).
        let mut start = bl.min_lo / TILE_KEYS * TILE_KEYS;
        loop {
            let end = (start + chunk).min(bl.max_lim);
            items.push(Item {
                block: i,
                keys: start..end,
            });
            start = end;
            if start >= bl.max_lim {
                break;
            }
        }
    }
}

/// Pack K as `Kᵀ` panels and V as dense rows, per (batch row, KV head) (zeros past each batch row's keys), into
/// `out` (its buffers reused).
fn pack_kv(a: &AttnArgs<'_>, k: &[f32], v: &[f32], n_tiles: usize, schedule: Schedule, out: &mut Packed) {
    let d = a.head_dim;
    let pair_len = n_tiles * TILE_KEYS * d;
    let n_pairs = a.batch * a.n_kv_heads;
    let Packed {
        n_tiles: tiles,
        kt,
        v: vd,
    } = out;
    *tiles = n_tiles;
    for buf in [&mut *kt, &mut *vd] {
        buf.clear();
        buf.resize(n_pairs * pair_len, 0.0);
    }
    let pack = |(p, (kt, vd)): (usize, (&mut [f32], &mut [f32]))| {
        let (b, kv_head) = (p / a.n_kv_heads, p % a.n_kv_heads);
        for j in 0..key_end(a, b) {
            let at = a.kv_strides.offset(b, j, kv_head);
            // Kᵀ panel of tile j / TILE_KEYS: [head_dim, TILE_KEYS]
            let panel = &mut kt[(j / TILE_KEYS) * d * TILE_KEYS..][..d * TILE_KEYS];
            for (x, &val) in k[at..at + d].iter().enumerate() {
                panel[x * TILE_KEYS + j % TILE_KEYS] = val;
            }
            vd[j * d..(j + 1) * d].copy_from_slice(&v[at..at + d]);
        }
    };
    match schedule {
        Schedule::Parallel => kt
            .par_chunks_mut(pair_len)
            .zip(vd.par_chunks_mut(pair_len))
            .enumerate()
            .for_each(pack),
        Schedule::Serial => kt
            .chunks_mut(pair_len)
            .zip(vd.chunks_mut(pair_len))
            .enumerate()
            .for_each(pack),
    }
}
