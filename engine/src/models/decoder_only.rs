//! What every decoder-only family shares, written once: the step checks, the KV caches (their shape and the
//! memory cap), the final norm + LM head on the positions [`crate::LogitsFor`] asks for, and the [`Decoder`]
//! implementation. A family ([`Blocks`]) only says how its embeddings and blocks turn token ids into the
//! residual stream.

use kernels::{Heads, Kernels};

use crate::attention::{AttnKind, AttnPath};
use crate::cache::{KvCache, KvShape, Scratch};
use crate::decoder::{on_pool, Decoder};
use crate::layers::{LmHead, WeightBytes};
use crate::step::{StepIo, StepShape};
use crate::{Error, Result};

/// The sizes of a decoder-only family that the shared plumbing (and [`crate::ModelInfo`]) needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub(crate) hidden_size: usize,
    pub(crate) n_layers: usize,
    /// Query and KV heads of the self-attention (fewer KV heads with grouped-query attention: the cache holds
    /// those).
    pub(crate) heads: Heads,
    pub(crate) vocab_size: usize,
    /// The longest sequence (prompt + generated) the family positions.
    pub(crate) max_positions: usize,
}

/// One step as a family's blocks see it: `tokens` (`[batch, n]`) at positions `pos0 .. pos0 + n` of every row,
/// on kernels `k`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step<'a> {
    pub(crate) k: &'a Kernels,
    pub(crate) tokens: &'a [u32],
    pub(crate) shape: StepShape,
    /// Positions already in the cache: the position of each row's first new token.
    pub(crate) pos0: usize,
    /// The fused attention, or the recording path.
    pub(crate) attn: AttnPath<'a>,
}

impl Step<'_> {
    /// Causal self-attention `out = attention(q, k, v)` on this step's attention path.
    pub(crate) fn attention(&self, args: &kernels::AttnArgs<'_>, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        self.attn.attend(self.k, AttnKind::Decoder, args, [q, k, v], out);
    }
}

/// A decoder-only family: how its embeddings and blocks turn token ids into the residual stream.
pub(crate) trait Blocks: Send + Sync + std::fmt::Debug {
    fn dims(&self) -> Dims;

    /// Run the embeddings and every block on `step`: append each layer's new keys and values to `kv[l]`
    /// (checked to have room) and leave the residual stream after the last block in `x` (`[rows, hidden_size]`).
    fn forward(&self, step: &Step<'_>, kv: &mut [KvCache], scratch: &mut Scratch, x: &mut [f32]) -> Result<()>;

    /// Bytes of the weights the family reads with `head` (norm gains and biases aside).
    fn weight_bytes(&self, head: &LmHead) -> WeightBytes;
}

/// A decoder-only (causal) language model: one family's [`Blocks`], the final norm and LM head after them, and
/// the kernels they run on.
#[derive(Debug)]
pub(crate) struct CausalLm {
    blocks: Box<dyn Blocks>,
    head: LmHead,
    kernels: Kernels,
}

/// The state of one decoder-only session: the KV cache of every layer, the residual stream and the scratch
/// buffers (sized by the first, largest step, then reused).
#[derive(Debug)]
pub(crate) struct CausalCache {
    kv: Vec<KvCache>,
    /// `[rows, hidden_size]`
    x: Vec<f32>,
    scratch: Scratch,
}

impl CausalCache {
    /// Rows (sequences) of the batch.
    pub(crate) fn batch(&self) -> usize {
        self.kv.first().map_or(0, KvCache::batch)
    }

    /// Positions already fed to every row.
    pub(crate) fn len(&self) -> usize {
        self.kv.first().map_or(0, KvCache::len)
    }

    /// The most positions a row holds.
    pub(crate) fn capacity(&self) -> usize {
        self.kv.first().map_or(0, KvCache::capacity)
    }
}

impl CausalLm {
    pub(crate) fn new(blocks: Box<dyn Blocks>, head: LmHead, kernels: Kernels) -> Self {
        Self { blocks, head, kernels }
    }

    pub(crate) fn dims(&self) -> Dims {
        self.blocks.dims()
    }

    pub(crate) fn weight_bytes(&self) -> WeightBytes {
        self.blocks.weight_bytes(&self.head)
    }

    /// A cache for `batch` sequences of up to `capacity` positions each; an error before allocating when that is
    /// more positions than the model runs, or when K and V of every layer need more than `max_bytes`.
    pub(crate) fn new_cache(&self, batch: usize, capacity: usize, max_bytes: usize) -> Result<CausalCache> {
        self.new_cache_rows(batch, batch, capacity, max_bytes)
    }

    /// [`CausalLm::new_cache`] with room for `max_batch` rows (a beam search grows one prompt row to its beams).
    pub(crate) fn new_cache_rows(
        &self,
        batch: usize,
        max_batch: usize,
        capacity: usize,
        max_bytes: usize,
    ) -> Result<CausalCache> {
        let d = self.dims();
        if capacity > d.max_positions {
            return Err(Error::Request(format!(
                "{capacity} positions asked for, the model runs at most {}",
                d.max_positions
            )));
        }
        let shape = KvShape {
            max_batch: max_batch.max(batch),
            n_kv_heads: d.heads.n_kv_heads,
            capacity,
            head_dim: d.heads.head_dim,
        };
        Ok(CausalCache {
            kv: KvCache::for_layers(d.n_layers, shape, batch, max_bytes)?,
            x: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    /// Feed `io.tokens` (`[batch, n]`) after the cached positions and write the logits of the positions
    /// `io.which` asks for (on rayon's pool: see [`on_pool`]). A refused step (bad shape, id outside the
    /// vocabulary, no room) leaves the cache as it was.
    pub(crate) fn forward(&self, cache: &mut CausalCache, io: StepIo<'_>) -> Result<()> {
        on_pool(|| {
            let d = self.dims();
            let shape = io.shape(cache.batch(), d.vocab_size)?;
            if let Some(c) = cache.kv.first() {
                c.check_room(shape.n)?;
            }
            let k = &self.kernels;
            let step = Step {
                k,
                tokens: io.tokens,
                shape,
                pos0: cache.len(),
                attn: io.attn,
            };
            cache.x.resize(shape.rows() * d.hidden_size, 0.0);
            self.blocks
                .forward(&step, &mut cache.kv, &mut cache.scratch, &mut cache.x)?;
            // Final norm and LM head, on the rows that need logits
            self.head
                .forward(k, &cache.x, shape, io.which, &mut cache.scratch, io.logits);
            Ok(())
        })
    }
}

impl Decoder for CausalLm {
    type Cache = CausalCache;

    fn vocab_size(&self) -> usize {
        self.dims().vocab_size
    }

    fn step(&self, cache: &mut CausalCache, tokens: &[u32], n: usize, logits: &mut [f32]) -> Result<()> {
        self.forward(cache, StepIo::last(tokens, n, logits))
    }

    fn reorder(&self, cache: &mut CausalCache, src: &[usize]) -> Result<()> {
        cache.kv.iter_mut().try_for_each(|c| c.reorder(src))
    }

    fn cached_len(&self, cache: &CausalCache) -> usize {
        cache.len()
    }

    fn kernels(&self) -> Kernels {
        self.kernels
    }
}
