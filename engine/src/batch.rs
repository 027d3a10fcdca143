//! Continuous batching of decoder-only generation: a [`Scheduler`] decodes many sequences together, each at its
//! own position in its own cache row. Sequences join at any step (their prompt fed in chunks, interleaved with
//! the others' decoding, so a long prompt does not stall them) and leave when done (their row is freed and
//! reused). The weights are read once per step for every sequence of the batch, which is what makes serving
//! many clients from one CPU pay.
//!
//! A sequence's tokens see only its own cache row: what else is in the batch changes the rows its matrix
//! products run with (and so, by float rounding, at most the last bits of its logits), never what it attends to.

use std::collections::VecDeque;

use crate::generate::{Decoding, GenerateOptions, Generation, TokenEvent};
use crate::models::decoder_only::{CausalCache, CausalLm};
use crate::text::TokenDecoder;
use crate::{Error, Model, Result};

/// How a [`Scheduler`] batches.
///
/// ```
/// let opts = qkv::BatchOptions { max_seqs: 4, ..Default::default() };
/// assert_eq!((opts.max_seqs, opts.prefill_chunk), (4, 256));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Most sequences decoded together (rows of the KV cache); more wait in the scheduler's queue.
    pub max_seqs: usize,
    /// Most positions of one sequence, prompt and generated tokens together (the length of a cache row);
    /// `None`: the model's context.
    pub ctx: Option<usize>,
    /// Most prompt tokens one step feeds, over every sequence still reading its prompt: a long prompt is fed a
    /// chunk per step between the other sequences' decoding steps.
    pub prefill_chunk: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_seqs: 16,
            ctx: None,
            prefill_chunk: 256,
        }
    }
}

/// A sequence of a [`Scheduler`], as [`Scheduler::submit`] named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// What a [`Scheduler::step`] did to one sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchEvent {
    /// It generated a token (and the text it completes, as [`crate::Generator`] streams it).
    Token { seq: SeqId, event: TokenEvent },
    /// It is done (after its last `Token`): the whole generation; its cache row is free.
    Done { seq: SeqId, generation: Generation },
}

/// A sequence reading its prompt or generating, in cache row `row`.
struct Running<'m> {
    seq: SeqId,
    row: usize,
    decoding: Decoding<'m>,
    /// Positions of `decoding.ids()` already in the cache.
    fed: usize,
    /// The text streamed so far.
    text: String,
}

/// Continuous batching over one decoder-only [`Model`] ([`Model::scheduler`]): [`Scheduler::submit`] sequences
/// at any time, call [`Scheduler::step`] to advance every running one by a token (or a prompt chunk), read the
/// [`BatchEvent`]s. Greedy output does not depend on what else is in the batch (up to float rounding of the
/// logits: equal tokens unless two are within rounding of each other). `Send`: it can live on its own thread.
///
/// ```
/// use qkv::{BatchEvent, BatchOptions, GenerateOptions, Model};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let mut s = model.scheduler(BatchOptions { max_seqs: 2, ..Default::default() })?;
/// let opts = GenerateOptions { max_new_tokens: 5, ..Default::default() };
/// let a = s.submit(vec![1, 2, 3], &opts)?;
/// let b = s.submit(vec![4, 5], &opts)?;
/// let mut done = vec![];
/// while !s.is_idle() {
///     for ev in s.step()? {
///         if let BatchEvent::Done { seq, generation } = ev {
///             done.push((seq, generation.tokens));
///         }
///     }
/// }
/// done.sort();
/// assert_eq!(done[0].1, model.stream_ids(vec![1, 2, 3], &opts)?.run()?.tokens);
/// assert_eq!((done[0].0, done[1].0), (a, b));
/// # Ok::<(), qkv::Error>(())
/// ```
pub struct Scheduler<'m> {
    model: &'m Model,
    net: &'m CausalLm,
    tok: &'m dyn TokenDecoder,
    opts: BatchOptions,
    /// The most positions of a sequence (a cache row).
    ctx: usize,
    cache: CausalCache,
    running: Vec<Running<'m>>,
    waiting: VecDeque<(SeqId, Decoding<'m>)>,
    free_rows: Vec<usize>,
    next_seq: u64,
    /// `[running, vocab]`
    logits: Vec<f32>,
}

impl std::fmt::Debug for Scheduler<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("opts", &self.opts)
            .field("ctx", &self.ctx)
            .field("running", &self.running())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<'m> Scheduler<'m> {
    pub(crate) fn new(
        model: &'m Model,
        net: &'m CausalLm,
        tok: &'m dyn TokenDecoder,
        opts: BatchOptions,
    ) -> Result<Self> {
        let max_positions = net.dims().max_positions;
        let ctx = opts.ctx.unwrap_or(max_positions);
        if opts.max_seqs == 0 || opts.prefill_chunk == 0 || ctx == 0 {
            return Err(Error::Request(format!(
                "scheduler: max_seqs {}, prefill_chunk {} and ctx {ctx} must all be > 0",
                opts.max_seqs, opts.prefill_chunk
            )));
        }
        let cache = net.new_cache(opts.max_seqs, ctx, model.max_cache_bytes())?;
        Ok(Self {
            model,
            net,
            tok,
            opts,
            ctx,
            cache,
            running: Vec::new(),
            waiting: VecDeque::new(),
            // Rows are taken from the end: row 0 first.
            free_rows: (0..opts.max_seqs).rev().collect(),
            next_seq: 0,
            logits: Vec::new(),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> BatchOptions {
        self.opts
    }

    /// The most positions of one sequence (prompt and generated tokens).
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Sequences in the batch (reading their prompt or generating).
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for a free row.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no sequence is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Queue a generation after `prompt` (ids). It joins the batch at the next [`Scheduler::step`] with a free
    /// row. An error (nothing queued) for an empty prompt, an id outside the vocabulary, a prompt longer than
    /// [`Scheduler::ctx`] or bad options; a generation that would run past `ctx` stops there
    /// ([`crate::StopReason::Length`]).
    pub fn submit(&mut self, prompt: Vec<u32>, opts: &GenerateOptions) -> Result<SeqId> {
        let vocab = self.net.dims().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary ({vocab} ids)"
            )));
        }
        if prompt.len() > self.ctx {
            return Err(Error::Request(format!(
                "the prompt has {} tokens, the context (ctx) holds at most {}",
                prompt.len(),
                self.ctx
            )));
        }
        self.model.text_for(opts)?;
        // The sequence's positions: as `Model::stream_ids` sizes its cache, within a row.
        let capacity = prompt.len().saturating_add(opts.max_new_tokens).min(self.ctx);
        let decoding = Decoding::new(
            self.tok,
            self.model.kernels(),
            prompt,
            self.model.eos_ids().to_vec(),
            capacity,
            opts,
        )?;
        let seq = SeqId(self.next_seq);
        self.next_seq += 1;
        self.waiting.push_back((seq, decoding));
        Ok(seq)
    }

    /// [`Scheduler::submit`] with a text prompt, tokenized as [`Model::generate`] does (`opts.prompt_format`).
    pub fn submit_text(&mut self, prompt: &str, opts: &GenerateOptions) -> Result<SeqId> {
        let ids = self.model.prompt_ids(prompt, opts.prompt_format)?;
        self.submit(ids, opts)
    }

    /// Drop sequence `seq` (running or waiting), freeing its row; `false` if it is not there (done, or never
    /// submitted).
    pub fn cancel(&mut self, seq: SeqId) -> bool {
        if let Some(i) = self.running.iter().position(|r| r.seq == seq) {
            let r = self.running.remove(i);
            self.free(r.row);
            return true;
        }
        if let Some(i) = self.waiting.iter().position(|w| w.0 == seq) {
            self.waiting.remove(i);
            return true;
        }
        false
    }

    fn free(&mut self, row: usize) {
        self.cache.clear_row(row);
        self.free_rows.push(row);
    }

    /// One step of the batch: waiting sequences take free rows, every generating sequence is fed its last token
    /// and the ones reading their prompt its next chunk (at most `prefill_chunk` prompt tokens in all), then
    /// each sequence whose logits are ready picks its next token. Returns what happened to each sequence (nothing
    /// when idle). An error of the model step leaves every sequence as it was.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        let mut events = Vec::new();
        // Admit, and finish at once what needs no step (max_new_tokens 0).
        while !self.waiting.is_empty() {
            let Some(row) = self.free_rows.pop() else { break };
            let Some((seq, decoding)) = self.waiting.pop_front() else {
                break;
            };
            if decoding.stop_reason().is_some() {
                self.free_rows.push(row);
                events.push(BatchEvent::Done {
                    seq,
                    generation: decoding.result(String::new()),
                });
                continue;
            }
            self.running.push(Running {
                seq,
                row,
                decoding,
                fed: 0,
                text: String::new(),
            });
        }
        // What each sequence is fed: decoding ones their last token, prompt readers a chunk of the budget.
        let mut budget = self.opts.prefill_chunk;
        let mut tokens = Vec::new();
        let mut rows = Vec::new(); // (cache row, n)
        let mut fed = Vec::new(); // index into `running` of each entry of `rows`
        for (i, r) in self.running.iter_mut().enumerate() {
            let ids = r.decoding.ids();
            let prompt_left = r.decoding.n_prompt().saturating_sub(r.fed);
            let n = if prompt_left > 0 {
                let n = prompt_left.min(budget);
                budget -= n;
                n
            } else {
                ids.len() - r.fed
            };
            if n == 0 {
                continue;
            }
            tokens.extend_from_slice(&ids[r.fed..r.fed + n]);
            r.decoding.begin();
            rows.push((r.row, n));
            fed.push(i);
        }
        if rows.is_empty() {
            return Ok(events);
        }
        let vocab = self.net.dims().vocab_size;
        self.logits.resize(rows.len() * vocab, 0.0);
        self.net
            .forward_ragged(&mut self.cache, &tokens, &rows, &mut self.logits)?;
        // Each sequence whose prompt is all in picks its next token.
        let mut finished = Vec::new();
        for (&i, (&(_, n), logits)) in fed.iter().zip(rows.iter().zip(self.logits.chunks_exact_mut(vocab))) {
            let r = &mut self.running[i];
            r.fed += n;
            if r.fed < r.decoding.ids().len() {
                continue; // more prompt to read
            }
            if r.fed == r.decoding.n_prompt() {
                r.decoding.prefilled();
            }
            // A sampler error ends this sequence with what it has (none is possible for validated options).
            let event = match r.decoding.accept(logits) {
                Ok(ev) => ev,
                Err(_) => {
                    finished.push(i);
                    continue;
                }
            };
            r.text.push_str(&event.text);
            events.push(BatchEvent::Token { seq: r.seq, event });
            if r.decoding.stop_reason().is_some() {
                finished.push(i);
            }
        }
        for &i in finished.iter().rev() {
            let r = self.running.remove(i);
            self.free(r.row);
            events.push(BatchEvent::Done {
                seq: r.seq,
                generation: r.decoding.result(r.text),
            });
        }
        Ok(events)
    }

    /// Step until every sequence is done; the generations in the order they were submitted.
    pub fn run_to_end(&mut self) -> Result<Vec<(SeqId, Generation)>> {
        let mut out = Vec::new();
        while !self.is_idle() {
            for ev in self.step()? {
                if let BatchEvent::Done { seq, generation } = ev {
                    out.push((seq, generation));
                }
            }
        }
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out)
    }
}

impl Model {
    /// A [`Scheduler`] for continuous batching on this decoder-only model (an error for an encoder-decoder one).
    pub fn scheduler(&self, opts: BatchOptions) -> Result<Scheduler<'_>> {
        let net = self.decoder_only("scheduler")?;
        Scheduler::new(self, net, self.token_decoder(), opts)
    }

    /// Generate after each prompt, all in one batch (at most `opts.max_seqs` at a time, the rest joining as rows
    /// free up); the generations in the order of `prompts`, each what [`Model::generate`] gives for it alone.
    ///
    /// ```
    /// use qkv::{BatchOptions, GenerateOptions, Model};
    ///
    /// let model = Model::load(qkv::loaders::paths::fixture("llama-tiny-gqa"))?;
    /// let opts = GenerateOptions { max_new_tokens: 8, ..Default::default() };
    /// let prompts = [vec![1, 5, 9], vec![1, 7]];
    /// let batch = model.generate_batch_ids(&prompts, &opts, BatchOptions::default())?;
    /// assert_eq!(batch[1].tokens, model.stream_ids(vec![1, 7], &opts)?.run()?.tokens);
    /// # Ok::<(), qkv::Error>(())
    /// ```
    pub fn generate_batch_ids(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        batch: BatchOptions,
    ) -> Result<Vec<Generation>> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let ctx = longest
            .saturating_add(opts.max_new_tokens)
            .min(self.info().max_positions);
        let batch = BatchOptions {
            max_seqs: batch.max_seqs.min(prompts.len()).max(1),
            ctx: Some(batch.ctx.unwrap_or(ctx).max(1)),
            ..batch
        };
        let mut s = self.scheduler(batch)?;
        for p in prompts {
            s.submit(p.clone(), opts)?;
        }
        Ok(s.run_to_end()?.into_iter().map(|(_, g)| g).collect())
    }

    /// [`Model::generate_batch_ids`] on text prompts (tokenized as [`Model::generate`] does, with
    /// `opts.prompt_format`).
    pub fn generate_batch(
        &self,
        prompts: &[&str],
        opts: &GenerateOptions,
        batch: BatchOptions,
    ) -> Result<Vec<Generation>> {
        self.decoder_only("generate_batch")?;
        let ids = prompts
            .iter()
            .map(|p| self.prompt_ids(p, opts.prompt_format))
            .collect::<Result<Vec<_>>>()?;
        self.generate_batch_ids(&ids, opts, batch)
    }

    /// Token ids of a conversation (`(role, content)` messages) rendered through the model's chat template with
    /// the assistant header after it, as [`crate::PromptFormat::Chat`] renders one user message.
    pub fn chat_ids(&self, messages: &[(&str, &str)]) -> Result<Vec<u32>> {
        self.chat_prompt_ids(messages)
    }
}
