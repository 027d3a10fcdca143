//! What every decoder-only family shares, written once: the step checks, the KV caches (their shape and the
//! memory cap), the final norm + LM head on the positions [`crate::LogitsFor`] asks for, and the [`Decoder`]
//! implementation. A family ([`Blocks`]) only says how its embeddings and blocks turn token ids into the
//! residual stream.

use kernels::{AttnArgs, AttnScratch, Heads, Kernels, Strides};
use rayon::prelude::*;

use crate::attention::{AttnKind, AttnPath};
use crate::cache::{KvCache, KvShape, Scratch};
use crate::decoder::{on_pool, Decoder};
use crate::layers::{LmHead, WeightBytes};
use crate::step::{LogitsFor, Span, StepIo, StepShape};
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

/// One step as a family's blocks see it: `tokens` (`shape.rows()` of them) at the positions `pos` says, on
/// kernels `k`. A family reaches its sequences through [`Step::spans`], [`Step::append_kv`] and
/// [`Step::attention`], which read the same for a session's uniform batch and a scheduler's ragged one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step<'a> {
    pub(crate) k: &'a Kernels,
    pub(crate) tokens: &'a [u32],
    /// `[batch, n]` for a uniform step; `[1, total]` for a ragged one (its spans say where each sequence is).
    pub(crate) shape: StepShape,
    pub(crate) pos: Positions<'a>,
    /// The fused attention, or the recording path.
    pub(crate) attn: AttnPath<'a>,
}

/// Where the rows of a step sit in their sequences.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Positions<'a> {
    /// Every row of the batch at `pos0 .. pos0 + n` (the positions already in the cache come first).
    Uniform { pos0: usize },
    /// Each sequence its own rows, cache row and first position ([`crate::Scheduler`]).
    Ragged(&'a [Span]),
}

impl Step<'_> {
    /// Each sequence of the step: its rows `start .. start + n`, cache row and first position.
    pub(crate) fn spans(&self) -> impl Iterator<Item = Span> + '_ {
        let (uniform, ragged) = match self.pos {
            Positions::Uniform { pos0 } => {
                let StepShape { batch, n } = self.shape;
                (
                    Some((0..batch).map(move |b| Span {
                        row: b,
                        start: b * n,
                        n,
                        pos0,
                    })),
                    None,
                )
            }
            Positions::Ragged(spans) => (None, Some(spans.iter().copied())),
        };
        uniform.into_iter().flatten().chain(ragged.into_iter().flatten())
    }

    /// Append the step's keys and values (position `t` of head `h` at `src.offset(b, t, h)` for a uniform batch,
    /// `src.offset(0, row, h)` over the flat rows of a ragged one) to each sequence's cache row.
    pub(crate) fn append_kv(&self, kv: &mut KvCache, k_src: &[f32], v_src: &[f32], src: Strides) -> Result<()> {
        match self.pos {
            Positions::Uniform { .. } => kv.append_strided(k_src, v_src, src, self.shape.n),
            Positions::Ragged(spans) => kv.append_spans(k_src, v_src, src, spans),
        }
    }

    /// Causal self-attention of the step's queries `q` over the cache `kv` (after [`Step::append_kv`]) into `out`
    /// (`[rows, out_row]`). `args(batch, q_len, kv_len)` gives the family's call (heads, scale, query strides, a
    /// query row `q_row` values apart); a ragged step makes one call per sequence, on its own rows and cache row
    /// (the sequences in parallel). `sc` holds the kernel's buffers, one per sequence, kept by the session: grown
    /// the first time a step needs more, then reused.
    pub(crate) fn attention<'q>(
        &self,
        sc: &mut Vec<AttnScratch>,
        kv: &KvCache,
        args: impl Fn(usize, usize, usize) -> AttnArgs<'q> + Sync,
        (q, q_row): (&[f32], usize),
        (out, out_row): (&mut [f32], usize),
    ) {
        let k = self.k;
        match self.pos {
            Positions::Uniform { .. } => {
                let StepShape { batch, n } = self.shape;
                let a = args(batch, n, kv.held(0)).with_kv_strides(kv.strides());
                if sc.is_empty() {
                    sc.push(AttnScratch::default());
                }
                self.attn
                    .attend(k, &mut sc[0], AttnKind::Decoder, &a, [q, kv.k(), kv.v()], out);
            }
            Positions::Ragged(spans) => {
                // Each sequence's rows of `out` (the spans are consecutive: `forward_ragged` lays them out so).
                let mut rest = out;
                let mut jobs = Vec::with_capacity(spans.len());
                for s in spans {
                    let (rows, tail) = std::mem::take(&mut rest).split_at_mut(s.n * out_row);
                    rest = tail;
                    jobs.push((s, rows));
                }
                let (st, attn) = (kv.strides(), self.attn);
                let one = |sc: &mut AttnScratch, (s, rows): (&Span, &mut [f32])| {
                    let a = args(1, s.n, kv.held(s.row)).with_kv_strides(st);
                    let at = s.row * st.batch;
                    let qkv = [&q[s.start * q_row..], &kv.k()[at..], &kv.v()[at..]];
                    attn.attend(k, sc, AttnKind::Decoder, &a, qkv, rows);
                };
                if sc.len() < jobs.len() {
                    sc.resize_with(jobs.len(), AttnScratch::default);
                }
                // The sequences in parallel: each call alone is the size of one sequence's decode step.
                if jobs.len() > 1 {
                    jobs.into_par_iter()
                        .zip(sc.par_iter_mut())
                        .for_each(|(j, sc)| one(sc, j));
                } else {
                    jobs.into_iter().zip(sc.iter_mut()).for_each(|(j, sc)| one(sc, j));
                }
            }
        }
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

    /// The sliding window of each layer whose every attention has one (its cache then keeps only the last
    /// positions: [`KvCache::windowed`]); `None` for the others. Default: none.
    fn layer_windows(&self) -> Vec<Option<usize>> {
        vec![None; self.dims().n_layers]
    }
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
    /// The last row of each sequence of a ragged step, `[sequences, hidden_size]`
    last: Vec<f32>,
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

    /// Positions already fed to row `row` (of a ragged cache, [`CausalLm::forward_ragged`]).
    pub(crate) fn row_len(&self, row: usize) -> usize {
        self.kv.first().map_or(0, |c| c.row_len(row))
    }

    /// Empty row `row` of every layer, for another sequence to use.
    pub(crate) fn clear_row(&mut self, row: usize) {
        self.kv.iter_mut().for_each(|c| c.clear_row(row));
    }

    /// The most positions a row holds.
    pub(crate) fn capacity(&self) -> usize {
        self.kv.first().map_or(0, KvCache::capacity)
    }

    /// Bytes of the KV caches of every layer as allocated now.
    pub(crate) fn kv_bytes(&self) -> usize {
        self.kv.iter().map(KvCache::bytes).sum()
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
            kv: KvCache::for_windowed_layers(&self.blocks.layer_windows(), shape, batch, max_bytes)?,
            x: Vec::new(),
            last: Vec::new(),
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
                pos: Positions::Uniform { pos0: cache.len() },
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

    /// A ragged step: `rows[i] = (cache row, n)` feeds the next `n` ids of `tokens` (the sequences' new tokens one
    /// after another) to that cache row after the positions it holds, and writes the logits of each sequence's
    /// last new position into `logits` (`[rows.len(), vocab]`). A sequence's tokens see only its own row. Checked
    /// (distinct rows that exist and have room, `n > 0`, ids in the vocabulary) before anything is written.
    pub(crate) fn forward_ragged(
        &self,
        cache: &mut CausalCache,
        tokens: &[u32],
        rows: &[(usize, usize)],
        logits: &mut [f32],
    ) -> Result<()> {
        let d = self.dims();
        let total: usize = rows.iter().map(|r| r.1).sum();
        if rows.is_empty() || total != tokens.len() || rows.iter().any(|r| r.1 == 0) {
            return Err(Error::Request(format!(
                "ragged step: {} tokens given for {} sequences of {total} new tokens (each > 0)",
                tokens.len(),
                rows.len()
            )));
        }
        if logits.len() != rows.len() * d.vocab_size {
            return Err(Error::Request(format!(
                "ragged step: logits buffer holds {} values, expected {} x vocab {}",
                logits.len(),
                rows.len(),
                d.vocab_size
            )));
        }
        let mut seen = vec![false; cache.batch()];
        let mut spans = Vec::with_capacity(rows.len());
        let mut start = 0;
        for &(row, n) in rows {
            match seen.get_mut(row) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::Request(format!(
                        "ragged step: cache row {row} is missing or given twice (the cache has {})",
                        cache.batch()
                    )))
                }
            }
            if let Some(c) = cache.kv.first() {
                c.check_row_room(c.row_len(row), n)?;
            }
            spans.push(Span {
                row,
                start,
                n,
                pos0: cache.row_len(row),
            });
            start += n;
        }
        on_pool(|| {
            let k = &self.kernels;
            let step = Step {
                k,
                tokens,
                shape: StepShape { batch: 1, n: total },
                pos: Positions::Ragged(&spans),
                attn: AttnPath::Fused,
            };
            cache.x.resize(total * d.hidden_size, 0.0);
            self.blocks
                .forward(&step, &mut cache.kv, &mut cache.scratch, &mut cache.x)?;
            // Final norm and LM head on each sequence's last row                  [rows.len(), vocab]
            let h = d.hidden_size;
            cache.last.clear();
            for s in &spans {
                let t = (s.start + s.n - 1) * h;
                cache.last.extend_from_slice(&cache.x[t..t + h]);
            }
            let shape = StepShape {
                batch: spans.len(),
                n: 1,
            };
            self.head
                .forward(k, &cache.last, shape, LogitsFor::Last, &mut cache.scratch, logits);
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
