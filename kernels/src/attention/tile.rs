//! One work item: a block of query rows against a range of keys, tile by tile, with online softmax.
//!
//! The algorithm is written once here; the inner loops are the [`TileOps`] of one ISA.

use std::ops::Range;

use super::{Block, Ctx, TILE_KEYS};

/// The inner loops of attention on one instruction set. Slices are row-major; `TILE_KEYS` is the
/// row stride of score tiles.
pub(super) trait TileOps {
    /// `dst = src * scale`.
    fn scale_copy(src: &[f32], scale: f32, dst: &mut [f32]);

    /// Scores from a packed panel: `s[r, c] = q[r] · kt[:, c]` for `r < n_rows`, `c < n_keys`.
    /// `q` is `[n_rows, head_dim]`, `kt` is `[head_dim, TILE_KEYS]`, `s` is `[n_rows, TILE_KEYS]`.
    /// Columns `n_keys..TILE_KEYS` of `s` may be written with anything.
    fn qk_packed(q: &[f32], n_rows: usize, head_dim: usize, kt: &[f32], n_keys: usize, s: &mut [f32]);

    /// Scores from K rows in place: `s[r, c] = q[r] · k[c * k_stride ..][..head_dim]`.
    fn qk_rows(q: &[f32], n_rows: usize, head_dim: usize, k: &[f32], k_stride: usize, n_keys: usize, s: &mut [f32]);

    /// Largest value of `x` (`-inf` for an empty slice).
    fn max(x: &[f32]) -> f32;

    /// `x = exp(x - m)` in place; returns the sum of the new values.
    fn exp_sub_sum(x: &mut [f32], m: f32) -> f32;

    /// `x *= c`.
    fn scale(x: &mut [f32], c: f32);

    /// `acc[r] += Σ_c p[r, c] · v[c * v_stride ..][..head_dim]` for `r < n_rows`, `c < n_keys`.
    /// `p` is `[n_rows, TILE_KEYS]`, `acc` is `[n_rows, head_dim]`.
    fn pv(p: &[f32], n_rows: usize, n_keys: usize, v: &[f32], v_stride: usize, head_dim: usize, acc: &mut [f32]);
}

/// Unnormalised softmax state of each row of a block over some keys: running max `m`,
/// sum of `exp(s - m)` and `acc = Σ exp(s - m) · v`.
#[derive(Clone, Debug)]
pub(super) struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
    head_dim: usize,
}

impl Partial {
    fn empty(n_rows: usize, head_dim: usize) -> Self {
        Self {
            m: vec![f32::NEG_INFINITY; n_rows],
            l: vec![0.0; n_rows],
            acc: vec![0.0; n_rows * head_dim],
            head_dim,
        }
    }

    /// Combine the partials of one block over disjoint key ranges.
    pub(super) fn merge(parts: &[Partial]) -> std::borrow::Cow<'_, Partial> {
        if parts.len() == 1 {
            return std::borrow::Cow::Borrowed(&parts[0]);
        }
        let d = parts[0].head_dim;
        let n_rows = parts[0].m.len();
        let mut out = Partial::empty(n_rows, d);
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
        std::borrow::Cow::Owned(out)
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

/// Attention of the rows of `block` over keys `keys` (whose start is a multiple of `TILE_KEYS`).
pub(super) fn run_item<O: TileOps>(ctx: &Ctx<'_>, block: &Block, keys: Range<usize>) -> Partial {
    let a = ctx.a;
    let d = a.head_dim;
    let rows = &ctx.rows[block.rows.clone()];
    let n_rows = rows.len();
    debug_assert_eq!(keys.start % TILE_KEYS, 0);

    // Queries of the block, times the scale: [n_rows, head_dim]
    let mut q = vec![0.0f32; n_rows * d];
    for (row, dst) in rows.iter().zip(q.chunks_exact_mut(d)) {
        O::scale_copy(&ctx.q[row.q..row.q + d], a.scale, dst);
    }

    let mut part = Partial::empty(n_rows, d);
    let mut s = vec![0.0f32; n_rows * TILE_KEYS]; // scores, then probabilities: [n_rows, TILE_KEYS]
    let kv_base = a.kv_strides.offset(block.b, 0, block.kv_head);
    let kv_stride = a.kv_strides.pos;
    let end = keys.end.min(block.max_lim);
    let mut t0 = keys.start;
    while t0 < end {
        let n_keys = (end - t0).min(TILE_KEYS);
        // K and V rows t0..t0 + n_keys of this head (the last row is only head_dim long).
        let span = (n_keys - 1) * kv_stride + d;
        let k_tile = &ctx.k[kv_base + t0 * kv_stride..][..span];
        let v_tile = &ctx.v[kv_base + t0 * kv_stride..][..span];

        // Scores: s = q · kᵀ  [n_rows, n_keys]
        match ctx.kt {
            Some(kt) => {
                let pair = block.b * a.n_kv_heads + block.kv_head;
                let panel = &kt[(pair * ctx.n_tiles + t0 / TILE_KEYS) * d * TILE_KEYS..][..d * TILE_KEYS];
                O::qk_packed(&q, n_rows, d, panel, n_keys, &mut s);
            }
            None => O::qk_rows(&q, n_rows, d, k_tile, kv_stride, n_keys, &mut s),
        }

        // Online softmax: mask each row's tail, update max and sum, rescale the accumulator.
        for (r, row) in rows.iter().enumerate() {
            let s_row = &mut s[r * TILE_KEYS..r * TILE_KEYS + n_keys];
            let n_valid = row.lim.saturating_sub(t0).min(n_keys);
            if n_valid == 0 {
                s_row.fill(0.0); // row sees none of these keys
                continue;
            }
            let m_new = part.m[r].max(O::max(&s_row[..n_valid]));
            if m_new == f32::NEG_INFINITY {
                s_row.fill(0.0); // only -inf scores so far: nothing to add
                continue;
            }
            let sum = O::exp_sub_sum(&mut s_row[..n_valid], m_new);
            s_row[n_valid..].fill(0.0);
            let corr = (part.m[r] - m_new).exp(); // 0 on the first visible tile
            if corr != 1.0 {
                O::scale(&mut part.acc[r * d..(r + 1) * d], corr);
            }
            part.l[r] = part.l[r] * corr + sum;
            part.m[r] = m_new;
        }

        // acc += p · v  [n_rows, head_dim]
        O::pv(&s, n_rows, n_keys, v_tile, kv_stride, d, &mut part.acc);
        t0 += n_keys;
    }
    part
}
