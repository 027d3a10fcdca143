//! The one decoding interface shared by every architecture and every search.
//!
//! Greedy search and beam search ([`crate::search::search`]) are written once against [`Decoder`]; a
//! decoder-only model and the decoder half of an encoder-decoder model both implement it, and so can a
//! decoder of your own (a test double, a model run elsewhere).

use kernels::Kernels;

use crate::Result;

/// A model that turns the next tokens of a batch of sequences into logits over its vocabulary.
///
/// ```
/// use qkv::search::{search, SearchOptions};
/// use qkv::{Decoder, Result};
///
/// /// Always prefers token `(last + 1) % 4`; its cache is the tokens seen, per row.
/// struct Counter;
///
/// impl Decoder for Counter {
///     type Cache = Vec<Vec<u32>>;
///     fn vocab_size(&self) -> usize {
///         4
///     }
///     fn step(&self, rows: &mut Self::Cache, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
///         for (r, row) in rows.iter_mut().enumerate() {
///             row.extend_from_slice(&tokens[r * n..(r + 1) * n]);
///             let next = (row[row.len() - 1] + 1) % 4;
///             let out = &mut logits[r * 4..(r + 1) * 4];
///             out.fill(0.0);
///             out[next as usize] = 5.0;
///         }
///         Ok(())
///     }
///     fn reorder(&self, rows: &mut Self::Cache, src: &[usize]) -> Result<()> {
///         *rows = src.iter().map(|&s| rows[s].clone()).collect();
///         Ok(())
///     }
///     fn cached_len(&self, rows: &Self::Cache) -> usize {
///         rows.first().map_or(0, Vec::len)
///     }
/// }
///
/// let opts = SearchOptions { num_beams: 1, max_new_tokens: 3, ..Default::default() };
/// let out = search(&Counter, &mut vec![vec![]], &[1], &opts)?;
/// assert_eq!(out[0][0].tokens, [2, 3, 0]);
/// # Ok::<(), qkv::Error>(())
/// ```
pub trait Decoder: Send + Sync {
    /// Per-sequence-batch state: KV caches (and, for encoder-decoder models, the encoded source
    /// and its cross-attention K/V). Preallocated; written in place.
    type Cache: Send;

    fn vocab_size(&self) -> usize;

    /// Feed `tokens` (`[batch, n]`, row-major, the same `n` for every row) after the positions already
    /// in `cache`, and write the logits of each row's last position into `logits` (`[batch, vocab]`).
    fn step(&self, cache: &mut Self::Cache, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()>;

    /// Make row `i` of the cache a copy of old row `src[i]` (beam search). `src.len()` is the new batch.
    fn reorder(&self, cache: &mut Self::Cache, src: &[usize]) -> Result<()>;

    /// Number of positions already in the cache.
    fn cached_len(&self, cache: &Self::Cache) -> usize;

    /// The kernels the search runs its per-step bookkeeping on (log-softmax, argmax); the scalar ones unless the
    /// decoder says otherwise (the models of this crate give their own).
    fn kernels(&self) -> Kernels {
        Kernels::scalar()
    }
}

/// Run `f` on a thread of rayon's pool (at once when this already is one).
///
/// A model step makes hundreds of parallel kernel calls. Called from outside the pool, each of them queues its
/// tasks and puts the caller to sleep until they are done, then wakes it: two context switches per GEMV, tens
/// of microseconds each on a virtual machine. From inside the pool the caller works on its own tasks while the
/// other threads steal theirs. Every model step (and the encoder of a translation) runs through here.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
