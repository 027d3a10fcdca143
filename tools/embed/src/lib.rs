//! What the C ABI (`qkv-capi`) and the Python module (`qkv-python`) share over [`qkv::Model`]: the flat
//! options both expose (temperature 0 = greedy, an ISA by name, a thread count), a model with its own
//! thread pool, the streaming loop, and the error kinds both report (C: `qkv_status`; Python:
//! `QkvError.kind`).
//!
//! Only the high-level `qkv::Model` API is used: load, generate, stream, translate.

use std::fmt;
use std::path::Path;

use qkv::{
    GenerateOptions, Generator, Isa, Kernels, LoadOptions, Model, PromptAttention, PromptFormat, SampleParams,
    StopReason, Strategy, Timings, TokenEvent, TranslateOptions, Translation, TranslationAttention, WeightType,
};

/// What went wrong, as the bindings report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required pointer argument was null (C).
    NullPointer,
    /// A string argument is not valid UTF-8.
    InvalidUtf8,
    /// An option or argument is out of range, or the request does not fit the model (the engine's
    /// "invalid request": a prompt longer than the context, translate on a decoder-only model, ...).
    InvalidArgument,
    /// The model directory could not be loaded (missing or invalid files), or its tokenizer failed.
    Load,
    /// The instruction set asked for is unknown or not on this CPU.
    Isa,
    /// A memory limit (the KV cache cap) would be passed.
    Memory,
    /// Another failure of the engine.
    Engine,
    /// A panic inside qkv (a bug), caught at the boundary.
    Panic,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NullPointer,
        ErrorKind::InvalidUtf8,
        ErrorKind::InvalidArgument,
        ErrorKind::Load,
        ErrorKind::Isa,
        ErrorKind::Memory,
        ErrorKind::Engine,
        ErrorKind::Panic,
    ];

    /// The snake_case name (Python's `QkvError.kind`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NullPointer => "null_pointer",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Load => "load",
            ErrorKind::Isa => "isa",
            ErrorKind::Memory => "memory",
            ErrorKind::Engine => "engine",
            ErrorKind::Panic => "panic",
        }
    }
}

/// An error with its kind and the engine's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// A caught panic, with its payload when it is a string.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown payload".to_string());
        Self::new(
            ErrorKind::Panic,
            format!("internal error (a panic in qkv, please report it): {what}"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<qkv::Error> for Error {
    fn from(e: qkv::Error) -> Self {
        let kind = match &e {
            qkv::Error::Load(_) | qkv::Error::NonFinite { .. } => ErrorKind::Load,
            qkv::Error::Isa(_) => ErrorKind::Isa,
            qkv::Error::Request(_) => ErrorKind::InvalidArgument,
            qkv::Error::CacheFull { .. } | qkv::Error::CacheMemory { .. } => ErrorKind::Memory,
            _ => ErrorKind::Engine,
        };
        Self::new(kind, e.to_string())
    }
}

/// How a model is loaded, as the bindings take it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSpec {
    /// Worker threads of a pool of this model's own; `None`: rayon's global pool (one thread per core).
    pub threads: Option<usize>,
    pub weights: WeightType,
    /// The instruction set by name (`scalar`, `avx2`, `avx512`, `neon`); `None`: the best of this CPU, or
    /// `QKV_ISA`.
    pub isa: Option<String>,
    /// Cap on one generation's KV cache bytes; `None`: the engine's default.
    pub max_cache_bytes: Option<usize>,
}

/// `stored` or `int8` (any case).
pub fn parse_weights(name: &str) -> Result<WeightType> {
    name.parse()
        .map_err(|e: String| Error::invalid(format!("weights: {e}")))
}

/// The kernels of the instruction set `name`: an error naming it when qkv does not know it or this CPU lacks it.
pub fn kernels_for(name: &str) -> Result<Kernels> {
    let isa = Isa::ALL
        .into_iter()
        .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            let known: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
            Error::new(
                ErrorKind::Isa,
                format!(
                    "isa {name:?} is not an instruction set qkv knows ({})",
                    known.join(", ")
                ),
            )
        })?;
    Ok(Kernels::new(isa).map_err(qkv::Error::from)?)
}

/// Options of one generation, flat: temperature 0 (the default) is greedy, anything above samples with
/// the filters and the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSpec {
    pub max_new_tokens: usize,
    /// 0 = greedy; > 0 samples at this temperature.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Nucleus filter in (0, 1] (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the best one, in [0, 1] (0 = off).
    pub min_p: f32,
    pub seed: u64,
    /// HF repetition penalty (1 = off).
    pub repetition_penalty: f32,
    /// Stop when the text contains one of these (not returned).
    pub stop_strings: Vec<String>,
    /// Wrap the prompt in the model's chat template, as one user message.
    pub chat: bool,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        let g = GenerateOptions::default();
        let s = SampleParams::default();
        Self {
            max_new_tokens: g.max_new_tokens,
            temperature: 0.0,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            seed: s.seed,
            repetition_penalty: g.repetition_penalty,
            stop_strings: g.stop_strings,
            chat: false,
        }
    }
}

impl GenerateSpec {
    /// The engine's options; an error naming the first option out of range. The sampling filters are
    /// checked even when greedy, so a wrong value is never silently ignored.
    pub fn options(&self) -> Result<GenerateOptions> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature must be >= 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        let params = SampleParams {
            // the engine's check wants > 0; greedy is 0 here
            temperature: if self.temperature == 0.0 { 1.0 } else { self.temperature },
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed,
        };
        params.validate()?;
        Ok(GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            strategy: if self.temperature == 0.0 {
                Strategy::Greedy
            } else {
                Strategy::Sample(params)
            },
            repetition_penalty: self.repetition_penalty,
            stop_strings: self.stop_strings.clone(),
            prompt_format: if self.chat {
                PromptFormat::Chat
            } else {
                PromptFormat::Plain
            },
        })
    }
}

/// Why a generation ended: the engine's reasons, and a stop asked for by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finish {
    Eos,
    StopString,
    MaxTokens,
    /// The model's context is full.
    Length,
    /// The caller stopped it (a C callback returned non-zero; a Python stream closed early).
    Cancelled,
}

impl Finish {
    pub fn name(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::StopString => "stop_string",
            Finish::MaxTokens => "max_tokens",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

impl From<StopReason> for Finish {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Eos => Finish::Eos,
            StopReason::StopString => Finish::StopString,
            StopReason::MaxTokens => Finish::MaxTokens,
            StopReason::Length => Finish::Length,
        }
    }
}

/// A finished generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The generated text (no prompt, no stop string, no special tokens).
    pub text: String,
    /// The generated ids (EOS included when it ended the generation).
    pub tokens: Vec<u32>,
    pub finish: Finish,
    pub timings: Timings,
}

/// A loaded model and, when asked for, a thread pool of its own that all its computation runs on.
/// `Send + Sync`: one `Engine` serves many threads at once, each call with its own cache.
pub struct Engine {
    model: Model,
    pool: Option<rayon::ThreadPool>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("threads", &self.pool.as_ref().map(|p| p.current_num_threads()))
            .finish()
    }
}

impl Engine {
    pub fn load(dir: impl AsRef<Path>, spec: &LoadSpec) -> Result<Self> {
        let dir = dir.as_ref();
        let kernels = spec.isa.as_deref().map(kernels_for).transpose()?;
        let pool = match spec.threads {
            None => None,
            Some(0) => return Err(Error::invalid("threads must be at least 1 (or unset: one per core)")),
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("qkv-{i}"))
                    .build()
                    .map_err(|e| Error::new(ErrorKind::Engine, format!("cannot start {n} threads: {e}")))?,
            ),
        };
        let opts = LoadOptions {
            kernels,
            max_cache_bytes: spec.max_cache_bytes,
            weights: spec.weights,
            ..Default::default()
        };
        // int8 quantization at load runs on the pool too
        let model = in_pool(pool.as_ref(), || Model::load_with(dir, &opts))?;
        Ok(Self { model, pool })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Threads of this model's own pool (`None`: the global pool).
    pub fn threads(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.current_num_threads())
    }

    /// Run `f` on this model's pool (or on the caller's thread with the global pool).
    fn run<'s, R: Send>(&'s self, f: impl FnOnce(&'s Model) -> R + Send) -> R {
        in_pool(self.pool.as_ref(), || f(&self.model))
    }

    pub fn generate(&self, prompt: &str, spec: &GenerateSpec) -> Result<Outcome> {
        let opts = spec.options()?;
        let g = self.run(|m| m.generate(prompt, &opts))?;
        Ok(Outcome {
            text: g.text,
            tokens: g.tokens,
            finish: g.stop_reason.into(),
            timings: g.timings,
        })
    }

    /// Start a streamed generation: nothing is computed until [`Stream::next_event`].
    pub fn stream<'a>(&'a self, prompt: &str, spec: &GenerateSpec) -> Result<Stream<'a>> {
        let opts = spec.options()?;
        let generator = self.run(|m| m.stream(prompt, &opts))?;
        Ok(Stream {
            engine: self,
            generator,
            text: String::new(),
            tokens: Vec::new(),
            failed: false,
        })
    }

    /// Stream a generation to `on_token`, on the caller's thread; `on_token` returning
    /// [`std::ops::ControlFlow::Break`] ends it ([`Finish::Cancelled`]).
    pub fn generate_with(
        &self,
        prompt: &str,
        spec: &GenerateSpec,
        mut on_token: impl FnMut(&TokenEvent) -> std::ops::ControlFlow<()>,
    ) -> Result<Outcome> {
        let mut stream = self.stream(prompt, spec)?;
        while let Some(event) = stream.next_event() {
            if on_token(&event?).is_break() {
                return Ok(stream.outcome());
            }
        }
        Ok(stream.outcome())
    }

    /// Translate `texts` (best hypothesis each, input order).
    pub fn translate(&self, texts: &[&str], opts: &TranslateOptions) -> Result<Vec<Translation>> {
        Ok(self.run(|m| m.translate(texts, opts))?)
    }

    /// The self-attention probabilities of a decoder-only model over `prompt` ([`Model::attention`]).
    pub fn attention(&self, prompt: &str) -> Result<PromptAttention> {
        Ok(self.run(|m| m.attention(prompt))?)
    }

    /// [`Engine::attention`] of prompt ids.
    pub fn attention_ids(&self, ids: &[u32]) -> Result<PromptAttention> {
        Ok(self.run(|m| m.attention_ids(ids))?)
    }

    /// Translate `texts` and record each translation's attention ([`Model::translate_with_attention`]).
    pub fn translate_with_attention(
        &self,
        texts: &[&str],
        opts: &TranslateOptions,
    ) -> Result<Vec<(Translation, TranslationAttention)>> {
        Ok(self.run(|m| m.translate_with_attention(texts, opts))?)
    }
}

fn in_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// A running generation of an [`Engine`]. Each step computes on the engine's pool and returns on the
/// caller's thread, so a caller's callback never runs on a worker thread.
pub struct Stream<'a> {
    engine: &'a Engine,
    generator: Generator<'a>,
    text: String,
    tokens: Vec<u32>,
    failed: bool,
}

impl Stream<'_> {
    /// The next token and the text it completes; `None` at the end (or after an error).
    pub fn next_event(&mut self) -> Option<Result<TokenEvent>> {
        if self.failed {
            return None;
        }
        let generator = &mut self.generator;
        let event = in_pool(self.engine.pool.as_ref(), || generator.next())?;
        Some(match event {
            Ok(ev) => {
                self.text.push_str(&ev.text);
                self.tokens.push(ev.id);
                Ok(ev)
            }
            Err(e) => {
                self.failed = true;
                Err(e.into())
            }
        })
    }

    /// The ids generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Why it ended; `None` while it runs (or after an error).
    pub fn finish_reason(&self) -> Option<Finish> {
        self.generator.stop_reason().map(Finish::from)
    }

    /// What was generated: to the end, or up to here ([`Finish::Cancelled`]) when stopped early.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            finish: self.finish_reason().unwrap_or(Finish::Cancelled),
            timings: self.generator.timings(),
            text: self.text.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn engine_is_shared_and_streams_move_between_threads() {
        assert_send_sync::<Engine>();
        assert_send::<Stream<'static>>();
    }

    #[test]
    fn temperature_zero_is_greedy_and_bad_values_name_the_option() {
        let greedy = GenerateSpec::default().options().unwrap();
        assert_eq!(greedy.strategy, Strategy::Greedy);
        let sampled = GenerateSpec {
            temperature: 0.7,
            top_k: 5,
            seed: 3,
            ..Default::default()
        };
        match sampled.options().unwrap().strategy {
            Strategy::Sample(p) => assert_eq!((p.temperature, p.top_k, p.seed), (0.7, 5, 3)),
            other => panic!("{other:?}"),
        }
        for (spec, field) in [
            (
                GenerateSpec {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenerateSpec {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenerateSpec {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                GenerateSpec {
                    min_p: -0.1,
                    ..Default::default()
                },
                "min_p",
            ),
        ] {
            let e = spec.options().unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert!(e.message.contains(field), "{e}");
        }
    }

    #[test]
    fn names_of_weights_and_isas() {
        assert_eq!(parse_weights("INT8").unwrap(), WeightType::Int8);
        let e = parse_weights("int4").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("int4"), "{e}");
        assert_eq!(kernels_for("scalar").unwrap().isa(), Isa::Scalar);
        let e = kernels_for("avx1024").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Isa);
        assert!(e.message.contains("avx1024") && e.message.contains("avx512"), "{e}");
    }

    #[test]
    fn threads_zero_is_refused() {
        let e = Engine::load(
            "/nonexistent",
            &LoadSpec {
                threads: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("threads"), "{e}");
    }
}
