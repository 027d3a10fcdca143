//! The generation loop of decoder-only models: prefill, then sample / feed one token at a time,
//! streaming text deltas that are always valid UTF-8 and never run past a stop string.

use std::time::Instant;

use kernels::Kernels;
use serde::Serialize;

use crate::search::stop::{Emit, Pushed, StopFilter};
use crate::search::{SampleParams, Sampler, Strategy};
use crate::text::TokenDecoder;
use crate::{Error, Result};

/// How the prompt is turned into model input.
///
/// ```no_run
/// use qkv::{GenerateOptions, Model, PromptFormat};
///
/// let model = Model::load("models/smollm2-135m-instruct")?;
/// // The prompt as one user message in the model's chat template, with the assistant header after it.
/// let chat = GenerateOptions { prompt_format: PromptFormat::Chat, ..Default::default() };
/// println!("{}", model.generate("What is the capital of France?", &chat)?.text);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptFormat {
    /// The prompt text as is.
    #[default]
    Plain,
    /// The prompt as one user message in the model's chat template (with the assistant header).
    Chat,
}

/// Options of one generation.
///
/// ```
/// use qkv::{GenerateOptions, SampleParams, Strategy};
///
/// // Greedy, 32 tokens, stop at a blank line.
/// let greedy = GenerateOptions { max_new_tokens: 32, stop_strings: vec!["\n\n".into()], ..Default::default() };
/// assert_eq!(greedy.strategy, Strategy::Greedy);
/// // Sampled with nucleus filtering and a seed (the same seed gives the same tokens on every run).
/// let sampled = GenerateOptions::sampled(SampleParams { temperature: 0.7, top_p: 0.9, seed: 42, ..Default::default() });
/// assert!(matches!(sampled.strategy, Strategy::Sample(p) if p.seed == 42));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (EOS included).
    pub max_new_tokens: usize,
    /// Greedy or sampled (with its filters and seed).
    pub strategy: Strategy,
    /// HF repetition penalty over prompt and generated ids (1 = off).
    pub repetition_penalty: f32,
    /// Stop when the text contains one of these (the stop string itself is not returned).
    pub stop_strings: Vec<String>,
    pub prompt_format: PromptFormat,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            strategy: Strategy::Greedy,
            repetition_penalty: 1.0,
            stop_strings: Vec::new(),
            prompt_format: PromptFormat::Plain,
        }
    }
}

impl GenerateOptions {
    /// Sampling with `params` (temperature, top-k, top-p, min-p, seed).
    pub fn sampled(params: SampleParams) -> Self {
        Self {
            strategy: Strategy::Sample(params),
            ..Self::default()
        }
    }
}

/// Why generation ended.
///
/// ```
/// use qkv::{GenerateOptions, Model, StopReason};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let g = model.stream_ids(vec![1, 2], &GenerateOptions { max_new_tokens: 3, ..Default::default() })?.run()?;
/// assert_eq!(g.stop_reason, StopReason::MaxTokens);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token was generated.
    Eos,
    /// The text reached a stop string.
    StopString,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The model's context (max positions) is full.
    Length,
}

/// Where the time went, in seconds.
///
/// ```
/// use qkv::{GenerateOptions, Model};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let t = model.stream_ids(vec![1, 2, 3], &GenerateOptions { max_new_tokens: 5, ..Default::default() })?.run()?.timings;
/// assert_eq!((t.prompt_tokens, t.generated_tokens), (3, 5));
/// assert!(t.ttft_s <= t.total_s && t.decode_tok_per_s() >= 0.0);
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Feeding the prompt (prefill).
    pub prefill_s: f64,
    /// From the start of generation to the first generated token.
    pub ttft_s: f64,
    /// From the first generated token to the last.
    pub decode_s: f64,
    pub total_s: f64,
}

impl Timings {
    /// Prompt tokens per second of prefill.
    pub fn prompt_tok_per_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_s)
    }

    /// Generated tokens per second after the first one.
    pub fn decode_tok_per_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_s)
    }
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// The result of a whole generation ([`crate::Model::generate`], [`Generator::run`]).
///
/// ```
/// use qkv::{GenerateOptions, Model};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let g = model.stream_ids(vec![1, 2, 3], &GenerateOptions { max_new_tokens: 4, ..Default::default() })?.run()?;
/// assert_eq!(g.tokens.len(), 4);
/// assert!(g.text.is_empty(), "gpt2-tiny has no tokenizer: ids only");
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Generation {
    /// The generated text (without the prompt, the stop string or special tokens).
    pub text: String,
    /// The generated ids (EOS included when it ended the generation).
    pub tokens: Vec<u32>,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

/// One generated token and the text it completes (possibly empty: an incomplete UTF-8 character,
/// or text that may begin a stop string, is held back until it is known).
///
/// ```no_run
/// use qkv::{GenerateOptions, Model};
///
/// let model = Model::load("models/smollm2-135m-instruct")?;
/// let mut text = String::new();
/// for event in model.stream("Once upon a time", &GenerateOptions::default())? {
///     let event = event?; // an error ends the stream
///     text.push_str(&event.text); // valid UTF-8 at every event
///     println!("token {} -> {:?}", event.id, event.text);
/// }
/// # Ok::<(), qkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenEvent {
    pub id: u32,
    pub text: String,
}

/// What the generator needs of a model: feed tokens after the ones already fed, get the logits of the last.
pub(crate) trait Feed: Send {
    fn vocab_size(&self) -> usize;
    /// Feed `tokens` after the cached ones; write the logits of the last one (`[vocab]`).
    fn feed(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<()>;
}

/// Incremental detokenization: decode a window of recent ids and emit what it adds, holding back
/// text that ends in an incomplete character (U+FFFD) — the method of HF `TextStreamer` / TGI.
#[derive(Debug, Default)]
struct TextDelta {
    /// Start of the context window (a few ids before the first new one, for spacing rules).
    prefix_offset: usize,
    /// Ids before this are already emitted.
    read_offset: usize,
}

/// Ids of the prompt kept as left context when decoding the first generated ids.
const DECODE_CONTEXT: usize = 4;

impl TextDelta {
    fn new(n_prompt: usize) -> Self {
        Self {
            prefix_offset: n_prompt.saturating_sub(DECODE_CONTEXT),
            read_offset: n_prompt,
        }
    }

    /// The text `ids[read_offset..]` adds; [`Emit::All`] emits even an incomplete final character.
    fn next(&mut self, tok: &dyn TokenDecoder, ids: &[u32], emit: Emit) -> Result<String> {
        if self.read_offset >= ids.len() {
            return Ok(String::new());
        }
        let prefix = tok.decode_text(&ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode_text(&ids[self.prefix_offset..])?;
        let complete = !full.ends_with('\u{FFFD}') || emit == Emit::All;
        match full.get(prefix.len()..) {
            Some(delta) if complete && full.starts_with(&prefix) && full.len() > prefix.len() => {
                let delta = delta.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = ids.len();
                Ok(delta)
            }
            _ => Ok(String::new()),
        }
    }
}

/// A running generation: an iterator of [`TokenEvent`]s ([`crate::Model::stream`]). Prefill happens on the first
/// `next()`.
///
/// ```
/// use qkv::{GenerateOptions, Model};
///
/// let model = Model::load(qkv::loaders::paths::fixture("gpt2-tiny"))?;
/// let mut g = model.stream_ids(vec![1, 2, 3], &GenerateOptions { max_new_tokens: 6, ..Default::default() })?;
/// let first = g.next().expect("a first token")?;
/// assert_eq!(g.generated(), [first.id]);
/// let rest: Vec<u32> = g.by_ref().map(|e| e.map(|e| e.id)).collect::<qkv::Result<_>>()?;
/// assert_eq!((rest.len(), g.stop_reason()), (5, Some(qkv::StopReason::MaxTokens)));
/// # Ok::<(), qkv::Error>(())
/// ```
pub struct Generator<'a> {
    session: Box<dyn Feed + 'a>,
    logits: Vec<f32>,
    seq: Decoding<'a>,
    failed: bool,
}

impl<'a> Generator<'a> {
    /// Generate `seq` with `session`.
    pub(crate) fn new(session: Box<dyn Feed + 'a>, seq: Decoding<'a>) -> Self {
        let vocab = session.vocab_size();
        Self {
            session,
            logits: vec![0.0; vocab],
            seq,
            failed: false,
        }
    }

    /// Ids generated so far.
    pub fn generated(&self) -> &[u32] {
        self.seq.generated()
    }

    /// Why generation ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.seq.done
    }

    pub fn timings(&self) -> Timings {
        self.seq.timings
    }

    /// Run to the end and collect the text.
    pub fn run(mut self) -> Result<Generation> {
        let mut text = String::new();
        for ev in self.by_ref() {
            text.push_str(&ev?.text);
        }
        Ok(self.seq.result(text))
    }

    /// One step: feed what the model has not seen, choose the next token, and its text.
    fn advance(&mut self) -> Result<TokenEvent> {
        let start = self.seq.begin();
        // Feed the prompt (prefill) or the last generated token (decode).
        let ids = &self.seq.ids;
        if ids.len() == self.seq.n_prompt {
            self.session.feed(ids, &mut self.logits)?;
            self.seq.timings.prefill_s = start.elapsed().as_secs_f64();
        } else {
            self.session.feed(&ids[ids.len() - 1..], &mut self.logits)?;
        }
        self.seq.accept(&mut self.logits)
    }
}

/// One sequence being generated, whoever runs the model: the prompt and generated ids, the sampler, the text
/// deltas, stop strings and the decision to stop. A [`Generator`] feeds it from its own session; a
/// [`crate::Scheduler`] from its rows of a batch.
pub(crate) struct Decoding<'a> {
    tok: &'a dyn TokenDecoder,
    kernels: Kernels,
    sampler: Sampler,
    eos: Vec<u32>,
    max_new_tokens: usize,
    /// Positions the model can hold; generation stops before feeding beyond it.
    max_positions: usize,
    /// Prompt then generated ids.
    ids: Vec<u32>,
    n_prompt: usize,
    delta: TextDelta,
    stop: StopFilter,
    done: Option<StopReason>,
    timings: Timings,
    start: Option<Instant>,
    first_token: Option<Instant>,
}

impl<'a> Decoding<'a> {
    /// A sequence after `prompt` (ids), up to `max_positions` in all. `eos` lists every end-of-sequence id.
    pub(crate) fn new(
        tok: &'a dyn TokenDecoder,
        kernels: Kernels,
        prompt: Vec<u32>,
        eos: Vec<u32>,
        max_positions: usize,
        opts: &GenerateOptions,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::Request("the prompt has no tokens".to_string()));
        }
        if prompt.len() > max_positions {
            return Err(Error::Request(format!(
                "the prompt has {} tokens, the model holds at most {max_positions}",
                prompt.len()
            )));
        }
        let n_prompt = prompt.len();
        Ok(Self {
            tok,
            kernels,
            sampler: Sampler::new(opts.strategy, opts.repetition_penalty)?,
            eos,
            max_new_tokens: opts.max_new_tokens,
            max_positions,
            ids: prompt,
            n_prompt,
            delta: TextDelta::new(n_prompt),
            stop: StopFilter::new(&opts.stop_strings),
            done: if opts.max_new_tokens == 0 {
                Some(StopReason::MaxTokens)
            } else {
                None
            },
            timings: Timings {
                prompt_tokens: n_prompt,
                ..Timings::default()
            },
            start: None,
            first_token: None,
        })
    }

    /// Prompt then generated ids.
    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub(crate) fn n_prompt(&self) -> usize {
        self.n_prompt
    }

    /// Count `n` prompt tokens in the timings (an encoder-decoder's source, which is encoded, not fed here).
    pub(crate) fn with_prompt_tokens(mut self, n: usize) -> Self {
        self.timings.prompt_tokens = n;
        self
    }

    /// Ids generated so far.
    pub(crate) fn generated(&self) -> &[u32] {
        &self.ids[self.n_prompt..]
    }

    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.done
    }

    /// When the generation started (now, the first time it is asked).
    pub(crate) fn begin(&mut self) -> Instant {
        *self.start.get_or_insert_with(Instant::now)
    }

    /// The prompt is in the cache: the prefill time.
    pub(crate) fn prefilled(&mut self) {
        let start = self.begin();
        self.timings.prefill_s = start.elapsed().as_secs_f64();
    }

    /// The logits of the last fed position are `logits` (`[vocab]`, overwritten): choose the next token, decide
    /// whether it is the last one, and give its text.
    pub(crate) fn accept(&mut self, logits: &mut [f32]) -> Result<TokenEvent> {
        let start = self.begin();
        // Choose the next token.
        let id = self.sampler.sample(&self.kernels, logits, &self.ids)?;
        self.ids.push(id);
        let now = Instant::now();
        let first = *self.first_token.get_or_insert(now);
        self.timings.generated_tokens = self.ids.len() - self.n_prompt;
        self.timings.ttft_s = (first - start).as_secs_f64();
        self.timings.decode_s = (now - first).as_secs_f64();
        self.timings.total_s = (now - start).as_secs_f64();
        // Decide whether this is the last one.
        let n_new = self.ids.len() - self.n_prompt;
        if self.eos.contains(&id) {
            self.done = Some(StopReason::Eos);
        } else if n_new >= self.max_new_tokens {
            self.done = Some(StopReason::MaxTokens);
        } else if self.ids.len() > self.max_positions {
            self.done = Some(StopReason::Length);
        }
        // Its text: everything complete so far, or everything at the end.
        let emit = if self.done.is_some() { Emit::All } else { Emit::Settled };
        let delta = self.delta.next(self.tok, &self.ids, emit)?;
        let text = match self.stop.push(&delta, emit) {
            Pushed::Text(text) => text,
            Pushed::Stopped(text) => {
                self.done = Some(StopReason::StopString);
                text
            }
        };
        Ok(TokenEvent { id, text })
    }

    /// The finished generation, whose streamed text was `text`.
    pub(crate) fn result(&self, text: String) -> Generation {
        Generation {
            text,
            tokens: self.generated().to_vec(),
            stop_reason: self.done.unwrap_or(StopReason::MaxTokens),
            timings: self.timings,
        }
    }
}

impl Iterator for Generator<'_> {
    type Item = Result<TokenEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.seq.done.is_some() || self.failed {
            return None;
        }
        let ev = self.advance();
        // An error ends the generation.
        self.failed = ev.is_err();
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are bytes (id = byte + 3; 0..3 are special).
    struct Bytes;
    impl TokenDecoder for Bytes {
        fn decode_text(&self, ids: &[u32]) -> Result<String> {
            let b: Vec<u8> = ids.iter().filter(|&&i| i >= 3).map(|&i| (i - 3) as u8).collect();
            Ok(String::from_utf8_lossy(&b).into_owned())
        }
    }

    /// A "model" that always predicts a fixed script of tokens, one per position.
    struct Script {
        script: Vec<u32>,
        pos: usize,
    }
    impl Feed for Script {
        fn vocab_size(&self) -> usize {
            259
        }
        fn feed(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<()> {
            self.pos += tokens.len();
            logits.fill(0.0);
            let next = self.script.get(self.pos - 1).copied().unwrap_or(2);
            logits[next as usize] = 1.0;
            Ok(())
        }
    }

    fn run(text: &str, stops: &[&str], max_new: usize) -> (Vec<String>, Generation) {
        // The prompt is one token; position p predicts byte p of `text`, then EOS.
        let mut script: Vec<u32> = text.bytes().map(|b| b as u32 + 3).collect();
        script.push(2);
        let s = Script { script, pos: 0 };
        let opts = GenerateOptions {
            max_new_tokens: max_new,
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let seq = Decoding::new(&Bytes, Kernels::scalar(), vec![1], vec![2], 1000, &opts).unwrap();
        let g = Generator::new(Box::new(s), seq);
        let mut events = vec![];
        let mut g = g;
        for ev in g.by_ref() {
            events.push(ev.unwrap().text);
        }
        let gen = Generation {
            text: events.concat(),
            tokens: g.generated().to_vec(),
            stop_reason: g.stop_reason().unwrap(),
            timings: g.timings(),
        };
        (events, gen)
    }

    #[test]
    fn deltas_are_whole_characters() {
        let (events, g) = run("aé€😀b", &[], 100);
        assert_eq!(g.text, "aé€😀b");
        assert_eq!(g.stop_reason, StopReason::Eos);
        assert_eq!(*g.tokens.last().unwrap(), 2);
        // Multi-byte characters arrive whole on their last byte, never split.
        assert_eq!(events, ["a", "", "é", "", "", "€", "", "", "", "😀", "b", ""]);
    }

    #[test]
    fn stop_strings_end_generation_and_are_not_emitted() {
        let (events, g) = run("hello END world", &["END", "xyz"], 100);
        assert_eq!(g.text, "hello ");
        assert_eq!(g.stop_reason, StopReason::StopString);
        // "E" and "EN" are held back until "END" is known.
        assert_eq!(events.concat(), "hello ");
        let (_, g) = run("hello EN", &["END"], 100);
        assert_eq!(g.text, "hello EN", "a partial stop string is flushed at the end");
    }

    #[test]
    fn max_tokens_flushes_incomplete_text() {
        let (_, g) = run("ab€", &[], 3);
        assert_eq!(g.stop_reason, StopReason::MaxTokens);
        assert_eq!(g.tokens.len(), 3);
        assert_eq!(g.text, "ab\u{FFFD}");
    }
}
