//! The memory of a session: the self-attention KV cache of each layer (preallocated, written in place, reordered
//! for beams) and the scratch buffers of the forward pass.
//!
//! The cache layout is head-major, `[batch, n_kv_heads, slots, head_dim]` (see
//! [`kernels::Strides::head_major`]), so the keys of one head are contiguous for the attention kernel.
//! Projections arrive token-major (`[batch, n_new, n_kv_heads * head_dim]`) and are scattered in place.
//!
//! A layer whose every attention has a sliding window of `w` positions (Mistral's layers, Gemma's local ones:
//! [`KvCache::windowed`]) never again reads a key more than `w - 1` positions before the newest query, so its
//! cache keeps only a window's worth: `slots = min(capacity, 2w)` positions per row, the newest at the end. When
//! a step's keys do not fit after the held ones, the row is compacted first to its last `w - 1` positions (the
//! oldest the step's first query sees), moved to the front: one copy of `w - 1` positions every `w + 1` or so
//! appended, so memory is bounded by the window, not the context. The attention kernel reads the held positions
//! as it reads an unbounded cache's: its causal and sliding-window masks are relative to the newest key
//! (`q_offset = kv_len - q_len`), which compaction preserves ([`KvCache::held`] is the `kv_len` to give it). A
//! single step longer than the slots allow (a long prompt) grows the row to hold it, within the session's byte
//! cap.

use kernels::Strides;

use crate::step::Span;
use crate::{Error, Result};

/// Default cap on the bytes of the KV caches of one session (K and V, every layer): 8 GiB. See
/// [`crate::LoadOptions::max_cache_bytes`].
pub const DEFAULT_MAX_CACHE_BYTES: usize = 8 << 30;

/// The first `n` values of a scratch buffer, grown (never shrunk) to hold them: buffers sized by the
/// first (largest) step of a generation are reused by every later step.
fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// The scratch buffers of one session's forward pass: a step asks for the buffers it needs by length
/// ([`Scratch::take`]); they are sized by the first (largest) step and reused by every later one.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    bufs: Vec<Vec<f32>>,
    ids: Vec<u32>,
    /// The attention kernel's buffers (plan, partial sums, packed K/V), reused by every step: one per sequence of a
    /// ragged step (its sequences run in parallel), the first serving a uniform step.
    attn: Vec<kernels::AttnScratch>,
}

impl Scratch {
    /// `N` distinct buffers of the given lengths (their contents are left over from earlier steps).
    pub(crate) fn take<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [f32]; N] {
        take_bufs(&mut self.bufs, lens)
    }

    /// [`Scratch::take`], and the attention kernel's buffers.
    pub(crate) fn take_with_attn<const N: usize>(
        &mut self,
        lens: [usize; N],
    ) -> ([&mut [f32]; N], &mut Vec<kernels::AttnScratch>) {
        let Self { bufs, attn, .. } = self;
        (take_bufs(bufs, lens), attn)
    }

    /// [`Scratch::take`], the ids `ids` (positions, for a learned position table looked up like tokens) and the
    /// attention kernel's buffers.
    pub(crate) fn take_with_ids<const N: usize>(
        &mut self,
        lens: [usize; N],
        ids: impl IntoIterator<Item = usize>,
    ) -> ([&mut [f32]; N], &[u32], &mut Vec<kernels::AttnScratch>) {
        let out = take_bufs(&mut self.bufs, lens);
        self.ids.clear();
        self.ids.extend(ids.into_iter().map(|t| t as u32));
        (out, &self.ids, &mut self.attn)
    }
}

/// `N` distinct buffers of `bufs` of the given lengths.
fn take_bufs<const N: usize>(bufs: &mut Vec<Vec<f32>>, lens: [usize; N]) -> [&mut [f32]; N] {
    if bufs.len() < N {
        bufs.resize_with(N, Vec::new);
    }
    let mut bufs = bufs.iter_mut();
    lens.map(|n| match bufs.next() {
        Some(b) => grow(b, n),
        None => unreachable!("resized to N buffers above"),
    })
}

/// The shape of one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvShape {
    /// The most sequences (rows) the cache holds at once.
    pub max_batch: usize,
    pub n_kv_heads: usize,
    /// The most positions per sequence.
    pub capacity: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// f32 elements of K (or V): `max_batch * n_kv_heads * capacity * head_dim`, `None` on overflow.
    fn elems(&self) -> Option<usize> {
        self.max_batch
            .checked_mul(self.n_kv_heads)?
            .checked_mul(self.capacity)?
            .checked_mul(self.head_dim)
    }

    /// Bytes of K and V together, `None` on overflow.
    pub(crate) fn bytes(&self) -> Option<usize> {
        self.elems()?.checked_mul(2 * std::mem::size_of::<f32>())
    }
}

/// One layer's K and V for a batch of sequences: all of the same length (a [`crate::Session`]'s batch, beams), or
/// each row its own (the ragged rows of a [`crate::Scheduler`], [`KvCache::append_spans`]).
#[derive(Debug)]
pub(crate) struct KvCache {
    shape: KvShape,
    /// The sliding window of every attention over this cache, if any: the cache then holds the last positions
    /// only (see the module doc).
    window: Option<usize>,
    /// Positions held per row (`shape.capacity` for an unbounded cache).
    slots: usize,
    /// The cap on this cache's bytes (a windowed cache grows only within it).
    max_bytes: usize,
    /// The batch rows in use (`<= shape.max_batch`).
    batch: usize,
    /// Positions fed to each row (`[max_batch]`; equal over the rows in use unless the steps were ragged).
    lens: Vec<usize>,
    /// The position held in slot 0 of each row (`[max_batch]`; 0 unless a windowed row was compacted).
    starts: Vec<usize>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// One batch row of K and of V, for breaking cycles in `reorder`.
    spare_k: Vec<f32>,
    spare_v: Vec<f32>,
}

/// Allocate `n` zeroed f32s, or an error instead of aborting when the allocator refuses. Zeroed allocation: a large
/// cache takes fresh pages from the OS, which cost memory only once a step writes them (a cache sized for
/// `max_new_tokens` that stops at EOS holds only what it used).
fn try_zeroed(n: usize, what: &str) -> Result<Vec<f32>> {
    let alloc_failed = || Error::CacheMemory {
        bytes: n.saturating_mul(4),
        limit: 0,
        what: format!("{what}: allocation failed"),
    };
    if n.checked_mul(std::mem::size_of::<f32>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(alloc_failed());
    }
    bytemuck::allocation::try_zeroed_vec(n).map_err(|_| alloc_failed())
}

impl KvCache {
    /// A cache of `shape` with `batch` rows in use; an error if it would take more than `max_bytes`
    /// (or the allocation fails).
    pub(crate) fn new(shape: KvShape, batch: usize, max_bytes: usize) -> Result<Self> {
        Self::windowed(shape, None, batch, max_bytes)
    }

    /// The positions a row of a cache of `shape` holds when its attention slides over `window` positions.
    fn slots_for(shape: KvShape, window: Option<usize>) -> usize {
        match window {
            Some(w) => shape.capacity.min(w.saturating_mul(2)),
            None => shape.capacity,
        }
    }

    /// [`KvCache::new`] for a layer whose every attention slides over `window` positions (`None`: unbounded):
    /// it holds `min(capacity, 2 window)` positions per row.
    pub(crate) fn windowed(shape: KvShape, window: Option<usize>, batch: usize, max_bytes: usize) -> Result<Self> {
        if window == Some(0) {
            return Err(Error::Request("KV cache: a sliding window of 0 positions".into()));
        }
        let slots = Self::slots_for(shape, window);
        let held = KvShape {
            capacity: slots,
            ..shape
        };
        let mut c = Self::allocate(held, batch, max_bytes)?;
        c.shape = shape;
        c.window = window;
        c.max_bytes = max_bytes;
        Ok(c)
    }

    /// A cache holding `shape.capacity` positions per row.
    fn allocate(shape: KvShape, batch: usize, max_bytes: usize) -> Result<Self> {
        if batch > shape.max_batch {
            return Err(Error::Request(format!(
                "KV cache: batch {batch} is larger than its maximum {}",
                shape.max_batch
            )));
        }
        let bytes = shape.bytes().unwrap_or(usize::MAX);
        if bytes > max_bytes {
            return Err(Error::CacheMemory {
                bytes,
                limit: max_bytes,
                what: format!("KV cache {shape:?}"),
            });
        }
        let n = shape.elems().unwrap_or(usize::MAX);
        let row = shape.n_kv_heads * shape.capacity * shape.head_dim;
        let (k, v) = (try_zeroed(n, "KV cache K")?, try_zeroed(n, "KV cache V")?);
        let mut lens = Vec::new();
        lens.try_reserve_exact(shape.max_batch)
            .map_err(|_| Error::CacheMemory {
                bytes: shape.max_batch.saturating_mul(std::mem::size_of::<usize>()),
                limit: 0,
                what: "KV cache row lengths: allocation failed".into(),
            })?;
        lens.resize(shape.max_batch, 0);
        Ok(Self {
            shape,
            window: None,
            slots: shape.capacity,
            max_bytes,
            batch,
            starts: lens.clone(),
            lens,
            k,
            v,
            spare_k: try_zeroed(row, "KV cache spare row")?,
            spare_v: try_zeroed(row, "KV cache spare row")?,
        })
    }

    /// One cache per layer, `max_bytes` bounding all of them together.
    pub(crate) fn for_layers(n_layers: usize, shape: KvShape, batch: usize, max_bytes: usize) -> Result<Vec<Self>> {
        Self::for_windowed_layers(&vec![None; n_layers], shape, batch, max_bytes)
    }

    /// One cache per layer, layer `l` sliding over `windows[l]` positions ([`KvCache::windowed`]), `max_bytes`
    /// bounding all of them together.
    pub(crate) fn for_windowed_layers(
        windows: &[Option<usize>],
        shape: KvShape,
        batch: usize,
        max_bytes: usize,
    ) -> Result<Vec<Self>> {
        Self::check_windowed_layers(windows, shape, max_bytes)?;
        windows
            .iter()
            .map(|&w| Self::windowed(shape, w, batch, max_bytes))
            .collect()
    }

    /// An error if `n_layers` caches of `shape` would take more than `max_bytes` together.
    pub(crate) fn check_layers(n_layers: usize, shape: KvShape, max_bytes: usize) -> Result<()> {
        Self::check_windowed_layers(&vec![None; n_layers], shape, max_bytes)
    }

    /// An error if the caches of [`KvCache::for_windowed_layers`] would take more than `max_bytes` together.
    fn check_windowed_layers(windows: &[Option<usize>], shape: KvShape, max_bytes: usize) -> Result<()> {
        let total = windows
            .iter()
            .map(|&w| {
                KvShape {
                    capacity: Self::slots_for(shape, w),
                    ..shape
                }
                .bytes()
            })
            .try_fold(0usize, |sum, b| sum.checked_add(b?))
            .unwrap_or(usize::MAX);
        if total > max_bytes {
            return Err(Error::CacheMemory {
                bytes: total,
                limit: max_bytes,
                what: format!("KV caches of {} layers, each {shape:?}", windows.len()),
            });
        }
        Ok(())
    }

    /// Bytes of K and V as allocated now (a windowed cache: bounded by its window, not its capacity).
    pub(crate) fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }

    /// Positions of row `row` held in the cache, the newest last: every position fed, or (a windowed cache) at
    /// least the last `window - 1` of them. The `kv_len` the attention kernel reads ([`KvCache::k`]).
    pub(crate) fn held(&self, row: usize) -> usize {
        self.row_len(row) - self.starts.get(row).copied().unwrap_or(0)
    }

    pub(crate) fn shape(&self) -> KvShape {
        self.shape
    }

    /// Positions filled in each row (of row 0: the length of every row unless the steps were ragged).
    pub(crate) fn len(&self) -> usize {
        self.lens.first().copied().unwrap_or(0)
    }

    /// Positions filled in row `row`.
    pub(crate) fn row_len(&self, row: usize) -> usize {
        self.lens.get(row).copied().unwrap_or(0)
    }

    /// Empty row `row` (its slot is reused by another sequence).
    pub(crate) fn clear_row(&mut self, row: usize) {
        if let Some(l) = self.lens.get_mut(row) {
            *l = 0;
        }
        if let Some(s) = self.starts.get_mut(row) {
            *s = 0;
        }
    }

    /// The most positions a row can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.shape.capacity
    }

    /// Batch rows in use.
    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Strides of `k()` / `v()` for the attention kernel.
    pub(crate) fn strides(&self) -> Strides {
        Strides::head_major(self.shape.n_kv_heads, self.slots, self.shape.head_dim)
    }

    /// Keys, `[max_batch, n_kv_heads, slots, head_dim]` (the first `held(b)` slots of each of the first `batch()`
    /// rows are valid).
    pub(crate) fn k(&self) -> &[f32] {
        &self.k
    }

    /// Values, same layout as [`KvCache::k`].
    pub(crate) fn v(&self) -> &[f32] {
        &self.v
    }

    /// An error if `n_new` more positions do not fit in every row in use.
    pub(crate) fn check_room(&self, n_new: usize) -> Result<()> {
        let longest = self.lens[..self.batch].iter().copied().max().unwrap_or(0);
        self.check_row_room(longest, n_new)
    }

    /// An error if `n_new` more positions do not fit after `len`.
    pub(crate) fn check_row_room(&self, len: usize, n_new: usize) -> Result<()> {
        match len.checked_add(n_new) {
            Some(needed) if needed <= self.shape.capacity => Ok(()),
            _ => Err(Error::CacheFull {
                needed: len.saturating_add(n_new),
                capacity: self.shape.capacity,
            }),
        }
    }

    /// Append `n_new` positions from token-major projections `k_new`, `v_new`
    /// (`[batch, n_new, n_kv_heads * head_dim]`, contiguous).
    #[cfg(test)]
    pub(crate) fn append(&mut self, k_new: &[f32], v_new: &[f32], n_new: usize) -> Result<()> {
        let src = Strides::token_major(n_new, self.shape.n_kv_heads, self.shape.head_dim);
        self.append_strided(k_new, v_new, src, n_new)
    }

    /// Append `n_new` positions read from `k_src`, `v_src` with `src` strides: element `(b, t, h, :)`
    /// is at `src.offset(b, t, h)` (e.g. K and V inside a fused QKV projection).
    pub(crate) fn append_strided(&mut self, k_src: &[f32], v_src: &[f32], src: Strides, n_new: usize) -> Result<()> {
        self.check_room(n_new)?;
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        if self.batch > 0 && n_new > 0 && n_kv_heads > 0 {
            // The last element read must be inside both sources.
            let last = src.offset(self.batch - 1, n_new - 1, n_kv_heads - 1) + head_dim;
            assert!(
                last <= k_src.len() && last <= v_src.len(),
                "KvCache::append: sources hold fewer than [batch, n_new, n_kv_heads, head_dim]"
            );
        }
        self.make_room((0..self.batch).map(|b| (b, n_new)))?;
        for b in 0..self.batch {
            self.copy_in(k_src, v_src, |t, h| src.offset(b, t, h), b, n_new);
        }
        Ok(())
    }

    /// Room after the held positions of each `(row, n_new)`: a windowed row that would overflow its slots is
    /// compacted to its last `window - 1` positions (all the step's queries can see), and the slots grow when even
    /// those and the step do not fit (within `max_bytes`). An unbounded cache always has room (its slots are its
    /// capacity, checked by `check_room`).
    /// (Allocates nothing unless it grows: decode steps allocate nothing.)
    fn make_room(&mut self, rows: impl Iterator<Item = (usize, usize)> + Clone) -> Result<()> {
        let Some(window) = self.window else {
            return Ok(());
        };
        let keep = |c: &Self, b: usize| c.held(b).min(window - 1);
        let needed = rows
            .clone()
            .map(|(b, n)| {
                if self.held(b) + n > self.slots {
                    keep(self, b) + n
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        if needed > self.slots {
            self.grow(needed)?;
        }
        for (b, n) in rows {
            if self.held(b) + n > self.slots {
                let drop = self.held(b) - keep(self, b);
                self.shift_row(b, drop);
            }
        }
        Ok(())
    }

    /// Forget the oldest `drop` held positions of row `b`, moving the others to the front.
    fn shift_row(&mut self, b: usize, drop: usize) {
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        let (st, kept) = (self.strides(), self.held(b) - drop);
        for h in 0..n_kv_heads {
            let d = st.offset(b, 0, h);
            let s = st.offset(b, drop, h);
            self.k.copy_within(s..s + kept * head_dim, d);
            self.v.copy_within(s..s + kept * head_dim, d);
        }
        self.starts[b] += drop;
    }

    /// Re-lay the cache out with `slots` positions per row (more than now), keeping what every row holds.
    fn grow(&mut self, slots: usize) -> Result<()> {
        let shape = KvShape {
            capacity: slots,
            ..self.shape
        };
        let bytes = shape.bytes().unwrap_or(usize::MAX);
        if bytes > self.max_bytes {
            return Err(Error::CacheMemory {
                bytes,
                limit: self.max_bytes,
                what: format!("windowed KV cache grown to {slots} positions for one step"),
            });
        }
        let mut grown = Self::allocate(shape, self.batch, self.max_bytes)?;
        let (old, new) = (self.strides(), grown.strides());
        let head_dim = self.shape.head_dim;
        for b in 0..self.shape.max_batch {
            let n = self.held(b) * head_dim;
            for h in 0..self.shape.n_kv_heads {
                let (s, d) = (old.offset(b, 0, h), new.offset(b, 0, h));
                grown.k[d..d + n].copy_from_slice(&self.k[s..s + n]);
                grown.v[d..d + n].copy_from_slice(&self.v[s..s + n]);
            }
        }
        self.k = grown.k;
        self.v = grown.v;
        self.spare_k = grown.spare_k;
        self.spare_v = grown.spare_v;
        self.slots = slots;
        Ok(())
    }

    /// Append the positions of each span of a ragged step: `span.n` positions to row `span.row`, read at
    /// `src.offset(0, span.start + t, h)` of `k_src`, `v_src` (the step's rows one after another). Checked to fit
    /// (rows and room) before anything is written.
    pub(crate) fn append_spans(&mut self, k_src: &[f32], v_src: &[f32], src: Strides, spans: &[Span]) -> Result<()> {
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        for s in spans {
            if s.row >= self.batch {
                return Err(Error::Request(format!(
                    "ragged step: cache row {} does not exist (the cache has {})",
                    s.row, self.batch
                )));
            }
            self.check_row_room(self.lens[s.row], s.n)?;
            if s.n > 0 && n_kv_heads > 0 {
                let last = src.offset(0, s.start + s.n - 1, n_kv_heads - 1) + head_dim;
                assert!(
                    last <= k_src.len() && last <= v_src.len(),
                    "KvCache::append_spans: sources hold fewer positions than the spans"
                );
            }
        }
        self.make_room(spans.iter().map(|s| (s.row, s.n)))?;
        for s in spans {
            self.copy_in(k_src, v_src, |t, h| src.offset(0, s.start + t, h), s.row, s.n);
        }
        Ok(())
    }

    /// Write `n_new` positions after the held ones of row `b` (room made), position `t` of head `h` read at
    /// `at(t, h)`.
    fn copy_in(&mut self, k_src: &[f32], v_src: &[f32], at: impl Fn(usize, usize) -> usize, b: usize, n_new: usize) {
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        let (dst, len) = (self.strides(), self.held(b));
        for h in 0..n_kv_heads {
            for t in 0..n_new {
                let s = at(t, h);
                let d = dst.offset(b, len + t, h);
                self.k[d..d + head_dim].copy_from_slice(&k_src[s..s + head_dim]);
                self.v[d..d + head_dim].copy_from_slice(&v_src[s..s + head_dim]);
            }
        }
        self.lens[b] += n_new;
    }

    /// Make row `i` a copy of old row `src[i]`; the batch becomes `src.len()` (beam search: expand
    /// one prompt to n beams, or follow the surviving beams). Copies only the filled positions, in
    /// place, using one spare row to break cycles.
    pub(crate) fn reorder(&mut self, src: &[usize]) -> Result<()> {
        let new_batch = src.len();
        if new_batch > self.shape.max_batch {
            return Err(Error::Request(format!(
                "KV cache reorder: {new_batch} rows asked for, the cache holds at most {}",
                self.shape.max_batch
            )));
        }
        if let Some(&bad) = src.iter().find(|&&s| s >= self.batch) {
            return Err(Error::Request(format!(
                "KV cache reorder: source row {bad} does not exist (batch is {})",
                self.batch
            )));
        }
        // Where each destination reads from; `None` once written. A source may be the spare row.
        #[derive(Clone, Copy, PartialEq)]
        enum From {
            Row(usize),
            Spare,
        }
        let old_lens = self.lens.clone();
        let old_starts = self.starts.clone();
        let held: Vec<usize> = (0..self.lens.len()).map(|b| self.held(b)).collect();
        let mut pending: Vec<Option<From>> = src
            .iter()
            .enumerate()
            .map(|(i, &s)| (s != i).then_some(From::Row(s)))
            .collect();
        // readers[j]: pending destinations that still read old row j.
        let mut readers = vec![0usize; self.batch.max(new_batch)];
        for f in pending.iter().flatten() {
            if let From::Row(j) = f {
                readers[*j] += 1;
            }
        }
        let mut spare_len = 0;
        loop {
            let mut progressed = false;
            for i in 0..new_batch {
                let Some(from) = pending[i] else { continue };
                // Row i may be overwritten only when nobody still needs its old content.
                if i < readers.len() && readers[i] > 0 {
                    continue;
                }
                let (row, len) = match from {
                    From::Row(j) => (Some(j), held[j]),
                    From::Spare => (None, spare_len),
                };
                self.copy_row(row, i, len);
                pending[i] = None;
                if let From::Row(j) = from {
                    readers[j] -= 1;
                }
                progressed = true;
            }
            if pending.iter().all(Option::is_none) {
                break;
            }
            if !progressed {
                // Only cycles remain: park one cycle member in the spare row and redirect its readers.
                let Some(j) =
                    (0..readers.len()).find(|&j| readers[j] > 0 && pending.get(j).is_some_and(Option::is_some))
                else {
                    break;
                };
                spare_len = held[j];
                self.save_spare(j, spare_len);
                for p in pending.iter_mut() {
                    if *p == Some(From::Row(j)) {
                        *p = Some(From::Spare);
                    }
                }
                readers[j] = 0;
            }
        }
        for (i, &s) in src.iter().enumerate() {
            self.lens[i] = old_lens[s];
            self.starts[i] = old_starts[s];
        }
        self.batch = new_batch;
        Ok(())
    }

    /// Copy the filled positions of row `from` (or the spare row, for `None`) into row `to`.
    fn copy_row(&mut self, from: Option<usize>, to: usize, len: usize) {
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        let st = self.strides();
        for h in 0..n_kv_heads {
            let d = st.offset(to, 0, h);
            match from {
                Some(j) => {
                    let s = st.offset(j, 0, h);
                    self.k.copy_within(s..s + len * head_dim, d);
                    self.v.copy_within(s..s + len * head_dim, d);
                }
                None => {
                    let s = st.offset(0, 0, h);
                    self.k[d..d + len * head_dim].copy_from_slice(&self.spare_k[s..s + len * head_dim]);
                    self.v[d..d + len * head_dim].copy_from_slice(&self.spare_v[s..s + len * head_dim]);
                }
            }
        }
    }

    /// Copy the `len` filled positions of row `j` into the spare row.
    fn save_spare(&mut self, j: usize, len: usize) {
        let (n_kv_heads, head_dim) = (self.shape.n_kv_heads, self.shape.head_dim);
        let st = self.strides();
        for h in 0..n_kv_heads {
            let s = st.offset(j, 0, h);
            let d = st.offset(0, 0, h);
            self.spare_k[d..d + len * head_dim].copy_from_slice(&self.k[s..s + len * head_dim]);
            self.spare_v[d..d + len * head_dim].copy_from_slice(&self.v[s..s + len * head_dim]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape {
        max_batch: 4,
        n_kv_heads: 2,
        capacity: 5,
        head_dim: 3,
    };

    /// A cache whose row `b` holds values `100 * b + position-and-feature index`.
    fn filled(batch: usize, len: usize) -> KvCache {
        let mut c = KvCache::new(SHAPE, batch, usize::MAX).unwrap();
        let row = SHAPE.n_kv_heads * SHAPE.head_dim;
        let k: Vec<f32> = (0..batch * len * row)
            .map(|i| (100 * (i / (len * row)) + i % (len * row)) as f32)
            .collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        c.append(&k, &v, len).unwrap();
        c
    }

    /// Row `b`'s filled K values in token-major order.
    fn row_k(c: &KvCache, b: usize) -> Vec<f32> {
        let st = c.strides();
        let mut out = vec![];
        for t in 0..c.len() {
            for h in 0..SHAPE.n_kv_heads {
                let o = st.offset(b, t, h);
                out.extend_from_slice(&c.k()[o..o + SHAPE.head_dim]);
            }
        }
        out
    }

    #[test]
    fn append_scatters_token_major_to_head_major() {
        let c = filled(2, 3);
        assert_eq!(c.len(), 3);
        let expect: Vec<f32> = (0..18).map(|i| (100 + i) as f32).collect();
        assert_eq!(row_k(&c, 1), expect);
        let st = c.strides();
        // (b=1, t=2, h=1) starts at feature 2*6 + 3 of row 1.
        assert_eq!(c.k()[st.offset(1, 2, 1)], 115.0);
        assert_eq!(c.v()[st.offset(1, 2, 1)], -115.0);
    }

    #[test]
    fn reorder_matches_a_copy_for_every_pattern() {
        let patterns: &[&[usize]] = &[
            &[0, 1, 2],
            &[1, 0, 2],
            &[1, 2, 0],
            &[2, 2, 2],
            &[0, 0, 1, 1],
            &[2, 0, 1, 0],
            &[1],
            &[0, 0, 0, 0],
            &[1, 0, 3, 2],
            &[3, 2, 1, 0],
            &[1, 2, 3, 0],
            &[1, 1, 3, 2],
        ];
        for &p in patterns {
            let mut c = filled(4, 2);
            let before: Vec<Vec<f32>> = (0..4).map(|b| row_k(&c, b)).collect();
            c.reorder(p).unwrap();
            assert_eq!(c.batch(), p.len());
            for (i, &s) in p.iter().enumerate() {
                assert_eq!(row_k(&c, i), before[s], "pattern {p:?} row {i}");
            }
        }
    }

    /// Row `b`'s held K values in token-major order, and the position of the first.
    fn held_k(c: &KvCache, b: usize) -> (usize, Vec<f32>) {
        let (st, mut out) = (c.strides(), vec![]);
        for t in 0..c.held(b) {
            for h in 0..SHAPE.n_kv_heads {
                let o = st.offset(b, t, h);
                out.extend_from_slice(&c.k()[o..o + SHAPE.head_dim]);
            }
        }
        (c.row_len(b) - c.held(b), out)
    }

    /// A windowed cache fed in steps of every size (single positions, steps longer than its slots) holds, at every
    /// step, the newest positions of an unbounded cache fed alike: at least the `window - 1` before the step and
    /// the step's own; its bytes stay at `2 window` positions a row except while a step needs more; beams reorder
    /// it as they do the unbounded one.
    #[test]
    fn windowed_cache_holds_the_window_of_an_unbounded_one() {
        let window = 4;
        let shape = KvShape {
            max_batch: 3,
            capacity: 64,
            ..SHAPE
        };
        let row = SHAPE.n_kv_heads * SHAPE.head_dim;
        let mut full = KvCache::new(shape, 2, usize::MAX).unwrap();
        let mut win = KvCache::windowed(shape, Some(window), 2, usize::MAX).unwrap();
        let slot_bytes = 2 * shape.max_batch * row * std::mem::size_of::<f32>();
        assert_eq!(win.bytes(), 2 * window * slot_bytes);
        let mut fed = 0;
        for (i, n) in [3, 1, 1, 1, 5, 1, 9, 1, 1, 1, 2, 1, 1, 6, 1].into_iter().enumerate() {
            let k: Vec<f32> = (0..2 * n * row).map(|j| (1000 * i + j) as f32).collect();
            let v: Vec<f32> = k.iter().map(|x| -x).collect();
            full.append(&k, &v, n).unwrap();
            win.append(&k, &v, n).unwrap();
            fed += n;
            for b in 0..2 {
                assert_eq!(win.row_len(b), fed);
                let (start, held) = held_k(&win, b);
                assert!(
                    win.held(b) >= (window - 1 + n).min(fed),
                    "step {i}: holds {}",
                    win.held(b)
                );
                assert_eq!(held, row_k(&full, b)[start * row..], "step {i} row {b}");
            }
            // 9 positions after 3 held: 3 + 9 = 12 slots for that step, then it stays there.
            let slots = if i < 6 { 2 * window } else { 12 };
            assert_eq!(win.bytes(), slots * slot_bytes, "step {i}");
        }
        full.reorder(&[1, 0, 1]).unwrap();
        win.reorder(&[1, 0, 1]).unwrap();
        for b in 0..3 {
            let (start, held) = held_k(&win, b);
            assert_eq!(held, row_k(&full, b)[start * row..], "reordered row {b}");
        }
        assert!(KvCache::windowed(shape, Some(0), 1, usize::MAX).is_err());
        // The byte cap counts the window, and bounds a step that grows the cache.
        assert!(KvCache::for_windowed_layers(&[Some(window); 2], shape, 1, 2 * 2 * window * slot_bytes).is_ok());
        let mut small = KvCache::windowed(shape, Some(window), 1, 2 * window * slot_bytes).unwrap();
        let n = 2 * window + 1;
        let e = small.append(&vec![0.0; n * row], &vec![0.0; n * row], n).unwrap_err();
        assert!(matches!(e, Error::CacheMemory { .. }), "{e}");
    }

    #[test]
    fn errors_instead_of_overflow() {
        let mut c = filled(1, 4);
        let e = c.append(&[0.0; 12], &[0.0; 12], 2).unwrap_err();
        assert!(matches!(e, Error::CacheFull { needed: 6, capacity: 5 }), "{e}");
        assert!(c.reorder(&[1]).is_err());
        assert!(c.reorder(&[0; 5]).is_err());
        let big = KvShape {
            max_batch: 1 << 20,
            n_kv_heads: 1 << 20,
            capacity: 1 << 20,
            head_dim: 1 << 20,
        };
        assert!(matches!(
            KvCache::new(big, 1, DEFAULT_MAX_CACHE_BYTES),
            Err(Error::CacheMemory { .. })
        ));
        assert!(KvCache::for_layers(1000, SHAPE, 1, 1000).is_err());
    }
}
