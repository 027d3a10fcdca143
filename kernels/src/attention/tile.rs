//! One work item: a block of query rows against a range of keys, tile by tile, with online softmax.
//!
//! The algorithm is written once here, generic over [`Simd`]; the inner loops are in [`super::ops`].

use std::ops::Range;

use super::ops::{self, KvRows};
use super::{Block, Ctx, TILE_KEYS};
use crate::simd::Simd;

/// Unnormalised softmax state of each row of a block over some keys: running max `m`,
/// sum of `exp(s - m)` and `acc = Σ exp(s - m) · v`.
///
/// Its buffers are reused from call to call (see [`super::AttnScratch`]): `reset` reshapes without allocating once
/// they have held as much. `q` and `sc` are the work item's own scratch (scaled queries, scores).
#[derive(Clone, Debug, Default)]
pub(super) struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
    head_dim: usize,
    q: Vec<f32>,
    sc: Vec<f32>,
}

impl Partial {
    /// Empty state for `n_rows` rows of `head_dim` (no key seen).
    fn reset(&mut self, n_rows: usize, head_dim: usize) {
        let fill = |v: &mut Vec<f32>, n: usize, x: f32| {
            v.clear();
            v.resize(n, x);
        };
        fill(&mut self.m, n_rows, f32::NEG_INFINITY);
        fill(&mut self.l, n_rows, 0.0);
        fill(&mut self.acc, n_rows * head_dim, 0.0);
        self.head_dim = head_dim;
    }

    /// Combine the partials of one block over disjoint key ranges (into `out` when there are several).
    pub(super) fn merge<'p>(parts: &'p [Partial], out: &'p mut Partial) -> &'p Partial {
        if parts.len() == 1 {
            return &parts[0];
        }
        let d = parts[0].head_dim;
        let n_rows = parts[0].m.len();
        out.reset(n_rows, d);
        for r in 0..n_rows {
            // Global max over the parts, then every part rescaled to it.
            let m = parts.iter().map(|p| p.m[r]).fold(f32::NEG_INFINITY, f32::max);
            if m == f32::NEG_INFINITY {
                continue; // no visible key in any part
            }
            let acc = &mut out.acc[r * d..(r + 1) * d];
            let mut l = 0.0;
            for p in parts {
                if p.m[r] == f32::NEG_INFINITY {
                    continue;
                }
                let c = (p.m[r] - m).exp();
                l += p.l[r] * c;
                for (o, &x) in acc.iter_mut().zip(&p.acc[r * d..(r + 1) * d]) {
                    *o += x * c;
                }
            }
            out.m[r] = m;
            out.l[r] = l;
        }
        out
    }

    /// Normalised output of row `r` (zeros when the row saw no key).
    pub(super) fn write_row(&self, r: usize, out: &mut [f32]) {
        let d = self.head_dim;
        if self.l[r] > 0.0 {
            let inv = 1.0 / self.l[r];
            for (o, &x) in out.iter_mut().zip(&self.acc[r * d..(r + 1) * d]) {
                *o = x * inv;
            }
        } else {
            out.fill(0.0);
        }
    }
}

/// Attention of the rows of `block` over keys `keys` (whose start is a multiple of `TILE_KEYS`), into `part`.
#[inline(always)]
pub(super) fn run_item<'a, S: Simd>(s: S, ctx: &Ctx<'a>, block: &Block, keys: Range<usize>, part: &mut Partial) {
    let a = ctx.a;
    let d = a.head_dim;
    let rows = &ctx.rows[block.rows.clone()];
    let n_rows = rows.len();
    debug_assert_eq!(keys.start % TILE_KEYS, 0);

    part.reset(n_rows, d);
    let (mut q, mut sc) = (std::mem::take(&mut part.q), std::mem::take(&mut part.sc));
    // Queries of the block, times the scale: [n_rows, head_dim]
    q.clear();
    q.resize(n_rows * d, 0.0);
    for (row, dst) in rows.iter().zip(q.chunks_exact_mut(d)) {
        ops::scale_copy(s, &ctx.q[row.q..row.q + d], a.scale, dst);
    }
    sc.clear();
    sc.resize(n_rows * TILE_KEYS, 0.0); // scores, then probabilities: [n_rows, TILE_KEYS]
    let kv_base = a.kv_strides.offset(block.b, 0, block.kv_head);
    let kv_stride = a.kv_strides.pos;
    let end = keys.end.min(block.max_lim);
    let mut t0 = keys.start;
    while t0 < end {
        let n_keys = (end - t0).min(TILE_KEYS);
        let width = n_keys.next_multiple_of(S::LANES); // <= TILE_KEYS
                                                       // Scores sc = q · kᵀ [n_rows, n_keys]; this tile's V rows (packed: dense; else in place).
        let v_tile = match ctx.packed {
            Some(pk) => {
                let pair = block.b * a.n_kv_heads + block.kv_head;
                let tile = pair * pk.n_tiles + t0 / TILE_KEYS;
                ops::qk_packed(
                    s,
                    &q,
                    n_rows,
                    d,
                    &pk.kt[tile * d * TILE_KEYS..][..d * TILE_KEYS],
                    n_keys,
                    &mut sc,
                );
                KvRows {
                    data: &pk.v[tile * TILE_KEYS * d..][..n_keys * d],
                    stride: d,
                    n: n_keys,
                }
            }
            None => {
                // K and V rows t0 .. t0 + n_keys of this head (the last one only head_dim long).
                let at = kv_base + t0 * kv_stride;
                let span = (n_keys - 1) * kv_stride + d;
                let rows_at = |data: &'a [f32]| KvRows {
                    data: &data[at..at + span],
                    stride: kv_stride,
                    n: n_keys,
                };
                ops::qk_rows(s, &q, n_rows, d, rows_at(ctx.k), &mut sc);
                rows_at(ctx.v)
            }
        };

        // Online softmax: mask each row's tail, update max and sum, rescale the accumulator.
        for (r, row) in rows.iter().enumerate() {
            let s_row = &mut sc[r * TILE_KEYS..r * TILE_KEYS + width];
            let n_valid = row.lim.saturating_sub(t0).min(n_keys);
            // Keys before a sliding window's start.
            let n_before = row.lo.saturating_sub(t0).min(n_valid);
            if n_valid == n_before {
                s_row.fill(0.0); // row sees none of these keys
                continue;
            }
            if let Some(pb) = a.position_bias {
                for (c, x) in s_row[n_before..n_valid].iter_mut().enumerate() {
                    *x += pb.get(row.head, row.pos, t0 + n_before + c);
                }
            }
            if let Some(cap) = a.softcap {
                crate::types::softcap(cap, &mut s_row[n_before..n_valid]);
            }
            s_row[..n_before].fill(f32::NEG_INFINITY);
            s_row[n_valid..].fill(f32::NEG_INFINITY);
            let m_new = part.m[r].max(ops::max(s, s_row));
            if m_new == f32::NEG_INFINITY {
                s_row.fill(0.0); // only -inf scores so far: nothing to add
                continue;
            }
            let sum = ops::exp_sub_sum(s, s_row, m_new); // masked lanes: exp(-inf) = 0
            let corr = (part.m[r] - m_new).exp(); // 0 on the first visible tile
            if corr != 1.0 {
                ops::scale(s, &mut part.acc[r * d..(r + 1) * d], corr);
            }
            part.l[r] = part.l[r] * corr + sum;
            part.m[r] = m_new;
        }

        // acc += p · v  [n_rows, head_dim]
        ops::pv(s, &sc, n_rows, v_tile, d, &mut part.acc);
        t0 += n_keys;
    }
    (part.q, part.sc) = (q, sc);
}
