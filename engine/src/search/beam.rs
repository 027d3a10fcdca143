//! Greedy and beam search over any [`Decoder`], for one or many sources at once.
//!
//! Two reference behaviours are reproduced, chosen by [`BeamStyle`]:
//!
//! * [`BeamStyle::HuggingFace`] — transformers `generate(num_beams=k)` (the vectorised beam search of
//!   transformers 4.5x/5.x): log-softmax, then the logits rules (bad words, min length, forced EOS at the
//!   last step, optional renormalisation), top `2k` continuations over all beams; of those, the ones within
//!   the first `k` that end (EOS or max length) enter a pool of `k` finished hypotheses scored
//!   `sum_logprobs / n_generated^length_penalty` (EOS counted); the best `k` that do not end keep running.
//!   `early_stopping` decides when a source is done: `true` as soon as `k` hypotheses are finished,
//!   `false` when the best running beam (scored at the current length) cannot beat the worst finished one,
//!   `"never"` the same with the best possible length when `length_penalty > 0`.
//! * [`BeamStyle::CTranslate2`] — CTranslate2 `translate_batch(beam_size=k)`: top `2k` candidates; a
//!   candidate among the first `k` that is EOS (or any of them at the last step) is registered with its raw
//!   cumulative log-prob and replaced by the next non-EOS candidate from the second half; a source is done
//!   once `round(k * patience)` hypotheses are registered (or, with `length_penalty == 0`, once the top beam
//!   finished). Hypotheses are then scored `sum_logprobs / n_generated^length_penalty` (EOS counted, as
//!   CTranslate2 4.x does) and sorted.
//!
//! Greedy search (`num_beams == 1`) takes the argmax of the processed scores and reports the same
//! normalised score. Log-probs are those of the processed scores: transformers applies its rules to
//! log-probs (and renormalises when asked), CTranslate2 applies them to logits then log-softmaxes.
//! Log-softmax (every row of a step at once, `Kernels::log_softmax_rows`), the top `2k` candidates of a source's
//! beams x vocabulary plus their running scores (`Kernels::top_k_rows`) and argmax are the kernels'
//! ([`Decoder::kernels`]): SIMD, split over rayon's threads when the rows are large.
//!
//! Sources are independent: each one leaves the batch (its cache rows are dropped with
//! [`Decoder::reorder`]) as soon as it is done, which does not change any other source's result.
//! The rows of one source stay contiguous, best beam first.

use kernels::Kernels;

use crate::decoder::Decoder;
use crate::{Error, Result};

/// Which reference beam search to reproduce (see [`SearchOptions`] for an example).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BeamStyle {
    /// transformers `generate` (see the module docs).
    HuggingFace { early_stopping: EarlyStopping },
    /// CTranslate2 `translate_batch` (see the module docs). `patience` is CT2's (1.0 by default).
    CTranslate2 { patience: f32 },
}

/// transformers' `early_stopping` generation option (see [`SearchOptions`] for an example).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `early_stopping=True`: a source is done as soon as `num_beams` hypotheses are finished.
    Eager,
    /// `early_stopping=False` (the default): stop when the best running beam, scored at the current
    /// length, can no longer beat the worst finished hypothesis.
    #[default]
    Heuristic,
    /// `early_stopping="never"`: as `Heuristic`, but with a positive length penalty the running beam is
    /// scored at the maximum length (the canonical beam search).
    Never,
}

/// How raw logits become next-token log-probabilities (transformers' logits processors used by Marian).
///
/// ```
/// use qkv::search::LogitsRules;
///
/// // EOS is id 0; never emit the pad id 7; force EOS at the last step; log-softmax again after the bans.
/// let rules = LogitsRules { eos: vec![0], bad_words: vec![vec![7]], forced_eos: Some(0), renormalize: true, ..Default::default() };
/// assert!(rules.bad_words.iter().all(|w| !w.is_empty()));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogitsRules {
    /// End-of-sequence ids (a hypothesis ends when it emits one of them).
    pub eos: Vec<u32>,
    /// Token sequences that may never be completed (`bad_words_ids`): the last token of each is banned
    /// when the hypothesis (decoder start token included) ends with the rest of it.
    pub bad_words: Vec<Vec<u32>>,
    /// Force this token at the last allowed step (`forced_eos_token_id`).
    pub forced_eos: Option<u32>,
    /// Force this token as the first generated one (`forced_bos_token_id`: mBART-50's and NLLB's target
    /// language).
    pub forced_bos: Option<u32>,
    /// Never repeat an n-gram of this size within a hypothesis, decoder start token included
    /// (`no_repeat_ngram_size`; 0: off).
    pub no_repeat_ngram: usize,
    /// Log-softmax again after the rules (`renormalize_logits`).
    pub renormalize: bool,
}

/// Search parameters, all lengths counted in generated tokens (the decoder start token excluded).
///
/// ```
/// use qkv::search::{BeamStyle, EarlyStopping, SearchOptions};
/// use qkv::{Model, TranslateOptions};
///
/// let model = Model::load(qkv::loaders::paths::fixture("marian-tiny"))?;
/// // The model's defaults with beam 3, then transformers' `early_stopping=True`.
/// let mut opts: SearchOptions = model.search_options(&TranslateOptions { beam_size: Some(3), ..Default::default() })?;
/// opts.style = BeamStyle::HuggingFace { early_stopping: EarlyStopping::Eager };
/// opts.max_new_tokens = 8;
/// let best = &model.translate_ids_with(&[vec![3, 4, 5, 0]], 4, &opts)?[0][0]; // a Hypothesis
/// assert!(best.tokens.len() <= 8 && best.score <= 0.0);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOptions {
    /// 1 = greedy search.
    pub num_beams: usize,
    /// Maximum number of generated tokens, EOS included (transformers: `max_length - 1` for an
    /// encoder-decoder model; CTranslate2: `max_decoding_length`).
    pub max_new_tokens: usize,
    /// EOS is banned while fewer than this many tokens are generated (transformers: `min_length - 1`;
    /// CTranslate2: `min_decoding_length`).
    pub min_new_tokens: usize,
    pub length_penalty: f32,
    /// Hypotheses returned per source, best first (at most `num_beams`).
    pub num_return_sequences: usize,
    pub style: BeamStyle,
    pub rules: LogitsRules,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            num_beams: 4,
            max_new_tokens: 256,
            min_new_tokens: 0,
            length_penalty: 1.0,
            num_return_sequences: 1,
            style: BeamStyle::HuggingFace {
                early_stopping: EarlyStopping::Heuristic,
            },
            rules: LogitsRules::default(),
        }
    }
}

/// One output sequence of a search (see [`SearchOptions`] and [`crate::Decoder`] for examples).
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated ids, without the decoder start token; the EOS is kept when one was emitted.
    pub tokens: Vec<u32>,
    /// The style's length-normalised score (see the module docs; greedy search uses the same formula).
    pub score: f32,
}

impl SearchOptions {
    /// Whether step `step` (0-based) generates the last token allowed.
    fn is_last_step(&self, step: usize) -> bool {
        step + 1 == self.max_new_tokens
    }

    fn validate(&self, vocab: usize) -> Result<()> {
        if self.num_beams == 0 {
            return Err(Error::Request("num_beams must be at least 1".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::Request("max_new_tokens must be at least 1".into()));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return Err(Error::Request(format!(
                "num_return_sequences is {}, expected 1..={} (num_beams)",
                self.num_return_sequences, self.num_beams
            )));
        }
        let bad_id = self
            .rules
            .eos
            .iter()
            .chain(self.rules.forced_eos.iter())
            .chain(self.rules.forced_bos.iter())
            .chain(self.rules.bad_words.iter().flatten());
        if let Some(&id) = bad_id.clone().find(|&&id| id as usize >= vocab) {
            return Err(Error::Request(format!(
                "token id {id} in the search options is outside the vocabulary ({vocab})"
            )));
        }
        if self.rules.bad_words.iter().any(|w| w.is_empty()) {
            return Err(Error::Request("bad_words_ids holds an empty sequence".into()));
        }
        Ok(())
    }
}

/// Search for the next tokens of every row of `cache` (one row per source, row `i` starting with
/// `start[i]`). Returns, per source, up to `num_return_sequences` hypotheses, best first. Any [`Decoder`] (see
/// its example); a [`crate::Session`] runs it on a model ([`crate::Session::search`]).
pub fn search<D: Decoder>(
    dec: &D,
    cache: &mut D::Cache,
    start: &[u32],
    opts: &SearchOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    opts.validate(dec.vocab_size())?;
    if start.is_empty() {
        return Ok(Vec::new());
    }
    if opts.num_beams == 1 {
        Ok(greedy(dec, cache, start, opts)?.into_iter().map(|h| vec![h]).collect())
    } else {
        beam(dec, cache, start, opts)
    }
}

/// Which rules apply to one row at one step.
struct StepCtx<'a> {
    /// Tokens of the hypothesis so far, decoder start token included.
    seq: &'a [u32],
    /// Number of tokens generated so far (this step generates token `n_generated + 1`).
    n_generated: usize,
}

impl LogitsRules {
    fn is_eos(&self, t: u32) -> bool {
        self.eos.contains(&t)
    }

    /// Ban and force tokens in `scores` (log-probs or logits) for one row.
    fn apply(&self, opts: &SearchOptions, ctx: &StepCtx<'_>, scores: &mut [f32]) {
        // no repeated n-gram: ban each token that would complete an n-gram the hypothesis already holds
        let n = self.no_repeat_ngram;
        if n > 0 && ctx.seq.len() + 1 >= n {
            let tail = &ctx.seq[ctx.seq.len() + 1 - n..];
            for w in ctx.seq.windows(n) {
                if &w[..n - 1] == tail {
                    scores[w[n - 1] as usize] = f32::NEG_INFINITY;
                }
            }
        }
        // bad words: ban the last token of every sequence whose prefix ends the hypothesis
        for w in &self.bad_words {
            if w.len() == 1 && self.is_eos(w[0]) {
                continue; // transformers never bans an EOS this way
            }
            let (last, prefix) = w.split_last().expect("validated non-empty");
            if ctx.seq.ends_with(prefix) {
                scores[*last as usize] = f32::NEG_INFINITY;
            }
        }
        // min length: no EOS yet
        if ctx.n_generated < opts.min_new_tokens {
            for &e in &self.eos {
                scores[e as usize] = f32::NEG_INFINITY;
            }
        }
        // forced BOS as the first generated token
        if let Some(f) = self.forced_bos {
            if ctx.n_generated == 0 {
                scores.fill(f32::NEG_INFINITY);
                scores[f as usize] = 0.0;
            }
        }
        // forced EOS at the last allowed step
        if let Some(f) = self.forced_eos {
            if ctx.n_generated + 1 == opts.max_new_tokens {
                scores.fill(f32::NEG_INFINITY);
                scores[f as usize] = 0.0;
            }
        }
    }
}

/// Length normalisation: `score / len^penalty`.
fn normalise(score: f32, len: usize, penalty: f32) -> f32 {
    score / (len as f32).powf(penalty)
}

/// Greedy search (argmax of the processed scores at each step).
fn greedy<D: Decoder>(dec: &D, cache: &mut D::Cache, start: &[u32], opts: &SearchOptions) -> Result<Vec<Hypothesis>> {
    let k = dec.kernels();
    let vocab = dec.vocab_size();
    let n_src = start.len();
    let mut seqs: Vec<Vec<u32>> = start.iter().map(|&s| vec![s]).collect();
    let mut sums = vec![0.0f32; n_src];
    let mut out: Vec<Option<Hypothesis>> = vec![None; n_src];
    // rows of the cache -> source
    let mut alive: Vec<usize> = (0..n_src).collect();
    let mut logits = vec![0.0f32; n_src * vocab];
    let mut tokens = vec![0u32; n_src];
    for step in 0..opts.max_new_tokens {
        for (r, &s) in alive.iter().enumerate() {
            tokens[r] = *seqs[s].last().expect("starts with the start token");
        }
        let rows = alive.len();
        dec.step(cache, &tokens[..rows], 1, &mut logits[..rows * vocab])?;
        // scores as the reference computes them: transformers processes logits then (if asked)
        // log-softmaxes; CTranslate2 log-softmaxes the processed logits (every row at once, on every thread)
        for (r, &s) in alive.iter().enumerate() {
            let ctx = StepCtx {
                seq: &seqs[s],
                n_generated: step,
            };
            opts.rules.apply(opts, &ctx, &mut logits[r * vocab..(r + 1) * vocab]);
        }
        k.log_softmax_rows(&mut logits[..rows * vocab], vocab);
        let mut keep = Vec::with_capacity(rows);
        for (r, &s) in alive.iter().enumerate() {
            let row = &logits[r * vocab..(r + 1) * vocab];
            // first on ties, NaN never wins; 0 for an all-NaN row
            let best = k.argmax(row).unwrap_or(0);
            sums[s] += row[best];
            seqs[s].push(best as u32);
            let is_eos = opts.rules.is_eos(best as u32);
            if is_eos || opts.is_last_step(step) {
                let tokens = seqs[s][1..].to_vec();
                let score = normalise(sums[s], tokens.len(), opts.length_penalty);
                out[s] = Some(Hypothesis { tokens, score });
            } else {
                keep.push(r);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() != rows {
            dec.reorder(cache, &keep)?;
            alive = keep.iter().map(|&r| alive[r]).collect();
        }
    }
    Ok(out
        .into_iter()
        .map(|h| h.expect("every source ends by the last step"))
        .collect())
}

/// A running beam: its tokens (start token included) and cumulative log-prob.
#[derive(Clone, Debug)]
struct Running {
    seq: Vec<u32>,
    score: f32,
}

/// A candidate continuation: beam `beam` (index within its source) extended by `token`.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f32,
    beam: usize,
    token: u32,
}

/// Per-source search state.
struct SourceBeams {
    running: Vec<Running>,
    /// transformers: the `k` best finished (normalised score, tokens), best first.
    /// CTranslate2: every registered hypothesis (raw score, tokens), normalised at the end.
    finished: Vec<(f32, Vec<u32>)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    can_improve: bool,
    /// CTranslate2: the best candidate of some step was a finished hypothesis.
    top_beam_finished: bool,
    done: bool,
}

impl SourceBeams {
    /// Make `next` the running beams (each extends the beam it names); return the old index of each new beam.
    fn follow(&mut self, next: &[Candidate]) -> Vec<usize> {
        self.running = next
            .iter()
            .map(|c| {
                let mut seq = self.running[c.beam].seq.clone();
                seq.push(c.token);
                Running { seq, score: c.score }
            })
            .collect();
        next.iter().map(|c| c.beam).collect()
    }
}

/// The top `n` of all `beams × vocab` scores of one source plus each beam's running score into `out`, best first
/// (ties: lower beam, then lower id, i.e. the lower flat index as `torch.topk` over the flattened scores), on every
/// thread in SIMD ([`Kernels::top_k_rows`]). `offsets` and `best` are scratch.
fn top_candidates(
    kernels: &Kernels,
    scores: &[f32],
    beams: &[Running],
    vocab: usize,
    n: usize,
    (offsets, best): (&mut Vec<f32>, &mut Vec<(u32, f32)>),
    out: &mut Vec<Candidate>,
) {
    offsets.clear();
    offsets.extend(beams.iter().map(|b| b.score));
    kernels.top_k_rows(scores, vocab, Some(offsets), n, best);
    out.clear();
    out.extend(best.iter().map(|&(i, score)| Candidate {
        score,
        beam: i as usize / vocab,
        token: (i as usize % vocab) as u32,
    }));
}

fn beam<D: Decoder>(
    dec: &D,
    cache: &mut D::Cache,
    start: &[u32],
    opts: &SearchOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    let kernels = dec.kernels();
    let vocab = dec.vocab_size();
    let k = opts.num_beams;
    let n_cand = 2 * k;
    let mut sources: Vec<SourceBeams> = start
        .iter()
        .map(|&s| SourceBeams {
            running: vec![Running {
                seq: vec![s],
                score: 0.0,
            }],
            finished: Vec::new(),
            can_improve: true,
            top_beam_finished: false,
            done: false,
        })
        .collect();
    // active sources, in cache order; each owns `running.len()` contiguous rows
    let mut active: Vec<usize> = (0..start.len()).collect();
    let mut logits = vec![0.0f32; start.len() * k * vocab];
    let mut tokens = Vec::with_capacity(start.len() * k);
    let mut cands = Vec::with_capacity(n_cand);
    let mut scratch = (Vec::with_capacity(k), Vec::with_capacity(n_cand));

    for step in 0..opts.max_new_tokens {
        // 1. one decoder step for every running beam of every active source
        tokens.clear();
        for &s in &active {
            tokens.extend(sources[s].running.iter().map(|b| *b.seq.last().expect("non-empty")));
        }
        let rows = tokens.len();
        dec.step(cache, &tokens, 1, &mut logits[..rows * vocab])?;

        // 2. scores of every row, each log-softmax over all rows at once (on every thread), the rules per beam:
        // transformers log-softmaxes, applies the rules on log-probs and optionally renormalises; CTranslate2
        // applies the rules on logits, then log-softmaxes
        let hf = matches!(opts.style, BeamStyle::HuggingFace { .. });
        if hf {
            kernels.log_softmax_rows(&mut logits[..rows * vocab], vocab);
        }
        let mut row0 = 0;
        for &s in &active {
            for beam in &sources[s].running {
                let ctx = StepCtx {
                    seq: &beam.seq,
                    n_generated: step,
                };
                opts.rules
                    .apply(opts, &ctx, &mut logits[row0 * vocab..(row0 + 1) * vocab]);
                row0 += 1;
            }
        }
        if !hf || opts.rules.renormalize {
            kernels.log_softmax_rows(&mut logits[..rows * vocab], vocab);
        }

        // 3. per source: candidates (scores plus the beams' running scores), finished hypotheses, next beams
        let mut row0 = 0;
        let mut reorder = Vec::with_capacity(rows);
        let mut still_active = Vec::with_capacity(active.len());
        for &s in &active {
            let src = &mut sources[s];
            let n_beams = src.running.len();
            let scores = &logits[row0 * vocab..(row0 + n_beams) * vocab];
            let sc = (&mut scratch.0, &mut scratch.1);
            top_candidates(&kernels, scores, &src.running, vocab, n_cand, sc, &mut cands);
            let next = match opts.style {
                BeamStyle::HuggingFace { early_stopping } => hf_step(src, &cands, step, opts, early_stopping),
                BeamStyle::CTranslate2 { patience } => ct2_step(src, &cands, step, opts, patience),
            };
            if src.running.is_empty() {
                src.done = true;
            }
            if !src.done {
                reorder.extend(next.iter().map(|&b| row0 + b));
                still_active.push(s);
            }
            row0 += n_beams;
        }
        if still_active.is_empty() {
            break;
        }
        dec.reorder(cache, &reorder)?;
        active = still_active;
    }

    // 4. the best hypotheses of every source
    let out: Result<Vec<Vec<Hypothesis>>> = sources
        .into_iter()
        .map(|src| {
            let mut hyps: Vec<Hypothesis> = match opts.style {
                BeamStyle::HuggingFace { .. } => src
                    .finished
                    .into_iter()
                    .map(|(score, seq)| Hypothesis {
                        tokens: seq[1..].to_vec(),
                        score,
                    })
                    .collect(),
                BeamStyle::CTranslate2 { .. } => {
                    let mut h: Vec<Hypothesis> = src
                        .finished
                        .into_iter()
                        .map(|(raw, seq)| Hypothesis {
                            score: normalise(raw, seq.len() - 1, opts.length_penalty),
                            tokens: seq[1..].to_vec(),
                        })
                        .collect();
                    // stable: equal scores keep registration order
                    h.sort_by(|a, b| b.score.total_cmp(&a.score));
                    h
                }
            };
            hyps.truncate(opts.num_return_sequences);
            if hyps.is_empty() {
                // only when every score was NaN (broken weights): an error, not an empty answer
                return Err(Error::Request(
                    "beam search found no hypothesis: the model's scores are NaN".into(),
                ));
            }
            Ok(hyps)
        })
        .collect();
    out
}

/// One transformers beam-search step for one source: update `src.finished` and `src.running`, return
/// the old beam index of each new running beam.
fn hf_step(
    src: &mut SourceBeams,
    cands: &[Candidate],
    step: usize,
    opts: &SearchOptions,
    stopping: EarlyStopping,
) -> Vec<usize> {
    let last_step = opts.is_last_step(step);
    let k = opts.num_beams;
    let n_generated = step + 1;
    // a candidate ends if it emits EOS or reaches the maximum length
    let ends = |c: &Candidate| opts.rules.is_eos(c.token) || last_step;
    // finished pool: only the first k candidates may enter, unless the source cannot accept more
    let full = src.finished.len() == k;
    let accept = src.can_improve && !(full && stopping == EarlyStopping::Eager);
    if accept {
        for c in cands.iter().take(k).filter(|c| ends(c)) {
            let score = normalise(c.score, n_generated, opts.length_penalty);
            let mut seq = src.running[c.beam].seq.clone();
            seq.push(c.token);
            // merge, keeping the k best (an earlier entry wins a tie, as torch.topk keeps the lower index)
            let pos = src.finished.partition_point(|(s, _)| *s >= score);
            if pos < k {
                src.finished.insert(pos, (score, seq));
                src.finished.truncate(k);
            }
        }
    }
    // next running beams: the best k candidates that did not end
    let mut next: Vec<Candidate> = cands.iter().filter(|c| !ends(c)).take(k).copied().collect();
    let all_end = next.is_empty();
    // (transformers keeps ended candidates as -1e9 beams when fewer than k continue; with one EOS id
    // that only happens at the last step, where the search stops anyway)
    if next.len() < k {
        next.extend(
            cands
                .iter()
                .filter(|c| ends(c))
                .take(k - next.len())
                .map(|c| Candidate {
                    score: c.score - 1.0e9,
                    ..*c
                }),
        );
    }
    let order = src.follow(&next);
    // can a running beam still beat the worst finished hypothesis?
    if src.finished.len() == k {
        let best_len = match stopping {
            EarlyStopping::Never if opts.length_penalty > 0.0 => opts.max_new_tokens,
            _ => n_generated,
        };
        let best_possible = normalise(src.running[0].score, best_len, opts.length_penalty);
        let worst = src.finished.last().map_or(f32::NEG_INFINITY, |f| f.0);
        src.can_improve &= best_possible > worst;
    }
    let full = src.finished.len() == k;
    src.done = !src.can_improve || (full && stopping == EarlyStopping::Eager) || all_end || last_step;
    order
}

/// One CTranslate2 beam-search step for one source (see the module docs).
fn ct2_step(
    src: &mut SourceBeams,
    cands: &[Candidate],
    step: usize,
    opts: &SearchOptions,
    patience: f32,
) -> Vec<usize> {
    let k = opts.num_beams;
    let last_step = opts.is_last_step(step);
    let max_candidates = ((k as f32) * patience).round() as usize;
    let mut secondary = k;
    let mut next = Vec::with_capacity(k);
    for i in 0..k.min(cands.len()) {
        let c = cands[i];
        let mut chosen = i;
        if opts.rules.is_eos(c.token) || last_step {
            if i == 0 {
                src.top_beam_finished = true;
            }
            let mut seq = src.running[c.beam].seq.clone();
            seq.push(c.token);
            src.finished.push((c.score, seq));
            // replace it by the next candidate of the second half that is not EOS
            if let Some(j) = (secondary..cands.len()).find(|&j| !opts.rules.is_eos(cands[j].token)) {
                chosen = j;
                secondary = j + 1;
            }
        }
        next.push(cands[chosen]);
    }
    let order = src.follow(&next);
    src.done = last_step
        || if opts.length_penalty == 0.0 {
            src.top_beam_finished && src.finished.len() >= opts.num_return_sequences
        } else {
            src.finished.len() >= max_candidates
        };
    order
}
