//! Beam-search bookkeeping: the top `k` of `rows x vocab` scores plus a per-row offset
//! (a beam's running score), in SIMD; the caller splits the work over threads ([`crate::Kernels::top_k_rows`]).

use std::cmp::Ordering;

use crate::simd::Simd;

/// A candidate: its value and flat index. Better = larger value (total order), then lower index.
#[inline(always)]
fn better(a: (u32, f32), b: (u32, f32)) -> bool {
    match a.1.total_cmp(&b.1) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.0 < b.0,
    }
}

/// A bounded heap of the `k` best candidates, kept in `v` with the worst at the root.
struct Worst<'a> {
    v: &'a mut Vec<(u32, f32)>,
    k: usize,
}

impl Worst<'_> {
    fn sift_down(&mut self, mut i: usize) {
        let n = self.v.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut w = i;
            if l < n && better(self.v[w], self.v[l]) {
                w = l;
            }
            if r < n && better(self.v[w], self.v[r]) {
                w = r;
            }
            if w == i {
                return;
            }
            self.v.swap(i, w);
            i = w;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if better(self.v[p], self.v[i]) {
                self.v.swap(p, i);
                i = p;
            } else {
                return;
            }
        }
    }

    /// Offer a candidate; returns the new admission threshold (the worst kept value once full, else `-inf`).
    fn offer(&mut self, c: (u32, f32)) -> f32 {
        if self.v.len() < self.k {
            self.v.push(c);
            let i = self.v.len() - 1;
            self.sift_up(i);
        } else if better(c, self.v[0]) {
            self.v[0] = c;
            self.sift_down(0);
        }
        self.threshold()
    }

    fn threshold(&self) -> f32 {
        if self.v.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.v[0].1
        }
    }
}

/// The `k` best `x[t] + offset` (`t` numbered from `first`) merged into `best` (a heap of at most `k`, see
/// [`Worst`]; start from an empty one). NaN values are skipped. The SIMD scan compares each vector with the
/// admission threshold; only lanes at or above it reach the heap.
#[inline(always)]
pub(crate) fn top_k_into<S: Simd>(s: S, x: &[f32], first: u32, offset: f32, k: usize, best: &mut Vec<(u32, f32)>) {
    if k == 0 {
        return;
    }
    let l = S::LANES;
    let mut heap = Worst { v: best, k };
    let off = s.splat(offset);
    let mut thr = heap.threshold();
    let mut buf = [0.0f32; crate::simd::MAX_LANES];
    let mut i = 0;
    while i < x.len() {
        let n = l.min(x.len() - i);
        let v = s.add(s.read_partial(&x[i..i + n]), off);
        // `>=` (IEEE) admits everything the total order could rank above the threshold (-0 vs +0 included);
        // NaN lanes compare false. Missing lanes of a partial read are masked off below.
        let mut mask = s.mask_ge(v, s.splat(thr)) & ((1u32 << n) - 1); // n <= 16 lanes
        if mask != 0 {
            s.write(&mut buf[..l], v);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if !buf[j].is_nan() {
                    thr = heap.offer((first + (i + j) as u32, buf[j]));
                }
            }
        }
        i += n;
    }
}

/// Sort a candidate heap best first (value descending, then index ascending).
pub(crate) fn sort_best_first(v: &mut [(u32, f32)]) {
    v.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Offer one candidate to the heap `best` of at most `k` (merging parts' results).
pub(crate) fn offer(best: &mut Vec<(u32, f32)>, k: usize, c: (u32, f32)) {
    Worst { v: best, k }.offer(c);
}
