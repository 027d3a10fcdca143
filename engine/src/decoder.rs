//! The one decoding interface shared by every architecture and every search.
//!
//! Greedy search, sampling and beam search are written once against [`Decoder`]; a decoder-only
//! model (Llama, GPT-2) and the decoder half of an encoder-decoder model (Marian) both implement it.

use crate::Result;

/// A model that turns the next tokens of a batch of sequences into logits over its vocabulary.
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
}

/// Run `f` on a thread of rayon's pool (at once when this already is one).
///
/// A model step makes hundreds of parallel kernel calls. Called from outside the pool, each of them queues its
/// tasks and puts the caller to sleep until they are done, then wakes it: two context switches per GEMV, tens
/// of microseconds each on a virtual machine. From inside the pool the caller works on its own tasks while the
/// other threads steal theirs. Every [`Decoder::step`] (and the encoder of a translation) runs through here.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
