//! The Python module `qkv._qkv` (re-exported as `qkv`, typed by `python/qkv/_qkv.pyi`): `Model` over
//! [`qkv_embed::Engine`], with the GIL released while the engine computes, so threads sharing one
//! `Model` run in parallel. Engine errors raise `qkv.QkvError` with the engine's message and a `kind`.
//!
//! `.attention(...)` and `.translation_attention(...)` return attention probabilities as NumPy arrays
//! (`numpy` imported when first asked for).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::conversion::FromPyObjectOwned;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use qkv::{Timings as EngineTimings, TranslateOptions};
use qkv_embed::{Engine, Error, ErrorKind, Finish, GenerateSpec, LoadSpec, Outcome};

create_exception!(
    qkv,
    QkvError,
    PyException,
    "An error of qkv: `str(e)` is the engine's message (naming the file, tensor or option), `e.kind` its \
     kind: null_pointer, invalid_utf8, invalid_argument, load, isa, memory, engine or panic."
);

/// The Python exception of `e`, with `e.kind` set.
fn py_err(e: Error) -> PyErr {
    Python::attach(|py| {
        let err = QkvError::new_err(e.message);
        if let Err(set) = err.value(py).setattr("kind", e.kind.name()) {
            return set;
        }
        err
    })
}

/// A text argument: `str`, or `bytes` holding UTF-8 (bad UTF-8 raises QkvError, kind `invalid_utf8`).
fn text_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        // a str with lone surrogates has no UTF-8 form
        return s.to_cow().map(|c| c.into_owned()).map_err(|_| {
            py_err(Error::new(
                ErrorKind::InvalidUtf8,
                format!("{what} is not valid Unicode text (it has a lone surrogate)"),
            ))
        });
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return String::from_utf8(b.as_bytes().to_vec()).map_err(|e| {
            py_err(Error::new(
                ErrorKind::InvalidUtf8,
                format!(
                    "{what} is not valid UTF-8 (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ))
        });
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be str or bytes, not {}",
        obj.get_type().name()?
    )))
}

/// Where the time of a generation went, in seconds.
#[pyclass(module = "qkv", frozen, get_all)]
#[derive(Clone)]
struct Timings {
    prompt_tokens: usize,
    generated_tokens: usize,
    prefill_s: f64,
    ttft_s: f64,
    decode_s: f64,
    total_s: f64,
}

impl From<EngineTimings> for Timings {
    fn from(t: EngineTimings) -> Self {
        Self {
            prompt_tokens: t.prompt_tokens,
            generated_tokens: t.generated_tokens,
            prefill_s: t.prefill_s,
            ttft_s: t.ttft_s,
            decode_s: t.decode_s,
            total_s: t.total_s,
        }
    }
}

#[pymethods]
impl Timings {
    fn __repr__(&self) -> String {
        format!(
            "Timings(prompt_tokens={}, generated_tokens={}, prefill_s={:.6}, ttft_s={:.6}, decode_s={:.6}, total_s={:.6})",
            self.prompt_tokens, self.generated_tokens, self.prefill_s, self.ttft_s, self.decode_s, self.total_s
        )
    }
}

/// A finished generation.
#[pyclass(module = "qkv", frozen, get_all)]
#[derive(Clone)]
struct Generation {
    /// The generated text (no prompt, no stop string, no special tokens).
    text: String,
    /// The generated ids (EOS included when it ended the generation).
    tokens: Vec<u32>,
    /// eos, stop_string, max_tokens, length, or cancelled (a stream closed early).
    stop_reason: &'static str,
    timings: Timings,
}

impl From<Outcome> for Generation {
    fn from(o: Outcome) -> Self {
        Self {
            text: o.text,
            tokens: o.tokens,
            stop_reason: o.finish.name(),
            timings: o.timings.into(),
        }
    }
}

#[pymethods]
impl Generation {
    fn __repr__(&self) -> String {
        format!(
            "Generation(text={:?}, tokens=[{} ids], stop_reason={:?})",
            self.text,
            self.tokens.len(),
            self.stop_reason
        )
    }
}

/// One generated token and the text it completes (often empty: an incomplete character, or text that may
/// begin a stop string, is held back until it is known).
#[pyclass(module = "qkv", frozen, get_all)]
#[derive(Clone)]
struct TokenEvent {
    id: u32,
    text: String,
}

#[pymethods]
impl TokenEvent {
    fn __repr__(&self) -> String {
        format!("TokenEvent(id={}, text={:?})", self.id, self.text)
    }
}

/// One translation.
#[pyclass(module = "qkv", frozen, get_all)]
#[derive(Clone)]
struct Translation {
    text: String,
    /// The target ids (EOS included when emitted).
    tokens: Vec<u32>,
    /// Length-normalised log-probability.
    score: f32,
}

#[pymethods]
impl Translation {
    fn __repr__(&self) -> String {
        format!(
            "Translation(text={:?}, tokens=[{} ids], score={:.6})",
            self.text,
            self.tokens.len(),
            self.score
        )
    }
}

type EngineStream<'a> = qkv_embed::Stream<'a>;

self_cell::self_cell!(
    /// A running generation and the engine it borrows.
    struct LiveStream {
        owner: Arc<Engine>,
        #[not_covariant]
        dependent: EngineStream,
    }
);

enum StreamState {
    Running(LiveStream),
    Done(Generation),
    /// An error ended it (raised once from `__next__`).
    Failed,
}

/// A streamed generation: iterate it for `TokenEvent`s. Each step computes with the GIL released.
/// Leaving the loop early (or `close()`) ends it with stop_reason "cancelled".
#[pyclass(module = "qkv", frozen)]
struct Stream {
    state: Mutex<StreamState>,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // a panic while locked only happens inside the engine, and the state stays consistent
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End the stream (to the end or cancelled): its state becomes the generation.
    fn finish(state: &mut StreamState) {
        if let StreamState::Running(live) = state {
            let outcome = live.with_dependent(|_, s| s.outcome());
            *state = StreamState::Done(outcome.into());
        }
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<TokenEvent>> {
        // lock with the GIL released: a thread waiting here never holds the GIL the other one needs
        let step = py.detach(|| {
            let mut state = self.lock();
            let next = match &mut *state {
                StreamState::Running(live) => live.with_dependent_mut(|_, s| s.next_event()),
                StreamState::Done(_) | StreamState::Failed => return Ok(None),
            };
            match next {
                Some(Ok(ev)) => Ok(Some(TokenEvent {
                    id: ev.id,
                    text: ev.text,
                })),
                Some(Err(e)) => {
                    *state = StreamState::Failed;
                    Err(e)
                }
                None => {
                    Stream::finish(&mut state);
                    Ok(None)
                }
            }
        });
        step.map_err(py_err)
    }

    /// End the generation now (stop_reason "cancelled" unless it had finished).
    fn close(&self, py: Python<'_>) {
        py.detach(|| Stream::finish(&mut self.lock()));
    }

    /// The ids generated so far.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        match &*self.lock() {
            StreamState::Running(live) => live.with_dependent(|_, s| s.tokens().to_vec()),
            StreamState::Done(g) => g.tokens.clone(),
            StreamState::Failed => Vec::new(),
        }
    }

    /// Why it ended; None while it runs.
    #[getter]
    fn stop_reason(&self) -> Option<&'static str> {
        match &*self.lock() {
            StreamState::Done(g) => Some(g.stop_reason),
            StreamState::Running(_) | StreamState::Failed => None,
        }
    }

    /// The whole generation once the stream has ended (None while it runs).
    fn result(&self) -> Option<Generation> {
        match &*self.lock() {
            StreamState::Done(g) => Some(g.clone()),
            StreamState::Running(_) | StreamState::Failed => None,
        }
    }
}

/// A loaded model: a Llama or GPT-2 directory generates, a Marian or CTranslate2 one translates.
/// Thread-safe: share one Model between threads; each call releases the GIL while it computes.
#[pyclass(module = "qkv", frozen)]
struct Model {
    engine: Arc<Engine>,
    path: PathBuf,
}

/// `value` as `T`, or the error of its extraction naming the keyword `key` (same exception type).
fn keyword<'py, T>(key: &str, value: &Bound<'py, PyAny>) -> PyResult<T>
where
    T: FromPyObjectOwned<'py>,
    for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
{
    value.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        let py = value.py();
        PyErr::from_type(e.get_type(py), format!("{key}: {}", e.value(py)))
    })
}

/// Keywords of generate and stream.
const GENERATE_OPTIONS: [&str; 9] = [
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "repetition_penalty",
    "stop",
    "chat",
];
/// Keywords of translate.
const TRANSLATE_OPTIONS: [&str; 5] = ["beam_size", "max_length", "min_length", "length_penalty", "batch_size"];

/// Apply the keyword options `kwargs` of `what` (which takes the keywords `known`) with `apply(key, value)`.
/// An unknown keyword is a TypeError; a value of None keeps the default.
fn each_option<'py>(
    what: &str,
    known: &[&str],
    kwargs: Option<&Bound<'py, PyDict>>,
    mut apply: impl FnMut(&str, &Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    for (key, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = key.extract()?;
        if !known.contains(&key.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "{what}() got an unexpected keyword argument {key:?} (it takes {})",
                known.join(", ")
            )));
        }
        if !value.is_none() {
            apply(&key, &value)?;
        }
    }
    Ok(())
}

/// The options of generate and stream (see the stubs): missing or None keeps the default.
fn generate_spec(what: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<GenerateSpec> {
    let mut s = GenerateSpec::default();
    each_option(what, &GENERATE_OPTIONS, kwargs, |key, v| {
        match key {
            "max_new_tokens" => s.max_new_tokens = keyword(key, v)?,
            "temperature" => s.temperature = keyword(key, v)?,
            "top_k" => s.top_k = keyword(key, v)?,
            "top_p" => s.top_p = keyword(key, v)?,
            "min_p" => s.min_p = keyword(key, v)?,
            "seed" => s.seed = keyword(key, v)?,
            "repetition_penalty" => s.repetition_penalty = keyword(key, v)?,
            "stop" => s.stop_strings = keyword(key, v)?,
            "chat" => s.chat = keyword(key, v)?,
            _ => unreachable!("{key} is in GENERATE_OPTIONS"),
        }
        Ok(())
    })?;
    Ok(s)
}

/// The options of translate (see the stubs): missing or None keeps the model's default.
fn translate_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<TranslateOptions> {
    let mut o = TranslateOptions::default();
    each_option("translate", &TRANSLATE_OPTIONS, kwargs, |key, v| {
        match key {
            "beam_size" => o.beam_size = Some(keyword(key, v)?),
            "max_length" => o.max_length = Some(keyword(key, v)?),
            "min_length" => o.min_length = Some(keyword(key, v)?),
            "length_penalty" => o.length_penalty = Some(keyword(key, v)?),
            "batch_size" => o.batch_size = keyword(key, v)?,
            _ => unreachable!("{key} is in TRANSLATE_OPTIONS"),
        }
        Ok(())
    })?;
    Ok(o)
}

/// `maps` as a float32 NumPy array of its shape `[layers, heads, queries, keys]`.
fn ndarray(py: Python<'_>, maps: &qkv::AttentionMaps) -> PyResult<Py<PyAny>> {
    let bytes: Vec<u8> = maps.as_slice().iter().flat_map(|p| p.to_ne_bytes()).collect();
    let np = py.import("numpy")?;
    let flat = np.call_method1("frombuffer", (PyBytes::new(py, &bytes), "float32"))?;
    let shape = maps.shape();
    Ok(flat
        .call_method1("reshape", (shape.to_vec(),))?
        .call_method0("copy")?
        .unbind())
}

/// Self-attention probabilities over a prompt (`Model.attention`).
#[pyclass(module = "qkv", frozen, get_all)]
struct Attention {
    tokens: Vec<String>,
    ids: Vec<u32>,
    /// float32 `[layers, heads, query, key]`; each row sums to 1, future keys are exactly 0.
    weights: Py<PyAny>,
}

#[pymethods]
impl Attention {
    fn __repr__(&self) -> String {
        format!("Attention(tokens={:?})", self.tokens)
    }
}

/// A translation and its attention probabilities (`Model.translation_attention`).
#[pyclass(module = "qkv", frozen, get_all)]
struct TranslationAttention {
    translation: Translation,
    source_tokens: Vec<String>,
    /// The generated tokens the rows stand for (EOS not included).
    target_tokens: Vec<String>,
    /// float32 `[layers, heads, source, source]`
    encoder: Py<PyAny>,
    /// float32 `[layers, heads, target, target]`
    decoder: Py<PyAny>,
    /// float32 `[layers, heads, target, source]`
    cross: Py<PyAny>,
}

#[pymethods]
impl TranslationAttention {
    fn __repr__(&self) -> String {
        format!("TranslationAttention({:?})", self.translation.text)
    }
}

#[pymethods]
impl Model {
    /// Load a model directory (config.json, *.safetensors, tokenizer files).
    #[new]
    #[pyo3(signature = (path, *, threads=None, weights="stored", isa=None, max_cache_bytes=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<usize>,
        weights: &str,
        isa: Option<String>,
        max_cache_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let spec = LoadSpec {
            threads,
            weights: qkv_embed::parse_weights(weights).map_err(py_err)?,
            isa,
            max_cache_bytes,
        };
        let engine = py.detach(|| Engine::load(&path, &spec)).map_err(py_err)?;
        Ok(Self {
            engine: Arc::new(engine),
            path,
        })
    }

    /// The model directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Threads of this model's own pool (None: the shared pool, one thread per core).
    #[getter]
    fn threads(&self) -> Option<usize> {
        self.engine.threads()
    }

    /// Generate after `prompt`; temperature 0 (the default) is greedy. Options: max_new_tokens,
    /// temperature, top_k, top_p, min_p, seed, repetition_penalty, stop, chat.
    #[pyo3(signature = (prompt, **options))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Generation> {
        let prompt = text_arg(prompt, "prompt")?;
        let spec = generate_spec("generate", options)?;
        let engine = &self.engine;
        let outcome = py.detach(|| engine.generate(&prompt, &spec)).map_err(py_err)?;
        Ok(outcome.into())
    }

    /// Stream the generation after `prompt`: an iterator of TokenEvent (the options of generate).
    #[pyo3(signature = (prompt, **options))]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Stream> {
        let prompt = text_arg(prompt, "prompt")?;
        let spec = generate_spec("stream", options)?;
        let engine = self.engine.clone();
        let live = py
            .detach(|| LiveStream::try_new(engine, |e| e.stream(&prompt, &spec)))
            .map_err(py_err)?;
        Ok(Stream {
            state: Mutex::new(StreamState::Running(live)),
        })
    }

    /// Translate sentences (str or UTF-8 bytes), batched, in input order. Options: beam_size,
    /// max_length, min_length, length_penalty (missing or None: the model's), batch_size (32).
    #[pyo3(signature = (texts, **options))]
    fn translate(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Translation>> {
        if texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(
                "texts must be a list of sentences, not one string (wrap it: [text])",
            ));
        }
        let texts: Vec<String> = texts
            .try_iter()?
            .enumerate()
            .map(|(i, t)| text_arg(&t?, &format!("texts[{i}]")))
            .collect::<PyResult<_>>()?;
        let opts = translate_options(options)?;
        let engine = &self.engine;
        let out = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                engine.translate(&refs, &opts)
            })
            .map_err(py_err)?;
        Ok(out
            .into_iter()
            .map(|t| Translation {
                text: t.text,
                tokens: t.tokens,
                score: t.score,
            })
            .collect())
    }

    /// Self-attention probabilities of a decoder-only model over `prompt` (str or UTF-8 bytes), or over token
    /// `ids`: `.tokens`, `.ids` and `.weights`, a float32 NumPy array `[layers, heads, query, key]`.
    #[pyo3(signature = (prompt=None, *, ids=None))]
    fn attention(
        &self,
        py: Python<'_>,
        prompt: Option<&Bound<'_, PyAny>>,
        ids: Option<Vec<u32>>,
    ) -> PyResult<Attention> {
        let engine = &self.engine;
        let att = match (prompt, ids) {
            (Some(p), None) => {
                let prompt = text_arg(p, "prompt")?;
                py.detach(|| engine.attention(&prompt))
            }
            (None, Some(ids)) => py.detach(|| engine.attention_ids(&ids)),
            _ => {
                return Err(PyTypeError::new_err(
                    "attention takes a prompt or ids=[...], one of them",
                ))
            }
        }
        .map_err(py_err)?;
        Ok(Attention {
            weights: ndarray(py, &att.self_attention)?,
            tokens: att.tokens,
            ids: att.ids,
        })
    }

    /// Translate sentences (the options of translate) and return, per sentence, the translation with its
    /// encoder, decoder and cross-attention probabilities (float32 NumPy arrays, one target row per generated
    /// token, EOS not included).
    #[pyo3(signature = (texts, **options))]
    fn translation_attention(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<TranslationAttention>> {
        let opts = translate_options(options)?;
        let engine = &self.engine;
        let out = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                engine.translate_with_attention(&refs, &opts)
            })
            .map_err(py_err)?;
        out.into_iter()
            .map(|(t, a)| {
                Ok(TranslationAttention {
                    translation: Translation {
                        text: t.text,
                        tokens: t.tokens,
                        score: t.score,
                    },
                    encoder: ndarray(py, &a.encoder)?,
                    decoder: ndarray(py, &a.decoder)?,
                    cross: ndarray(py, &a.cross)?,
                    source_tokens: a.source_tokens,
                    target_tokens: a.target_tokens,
                })
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("Model({:?})", self.path.display().to_string())
    }
}

#[pymodule]
fn _qkv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Generation>()?;
    m.add_class::<Timings>()?;
    m.add_class::<TokenEvent>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Translation>()?;
    m.add_class::<Attention>()?;
    m.add_class::<TranslationAttention>()?;
    m.add("QkvError", m.py().get_type::<QkvError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
    m.add("ERROR_KINDS", kinds)?;
    let reasons: Vec<&str> = [
        Finish::Eos,
        Finish::StopString,
        Finish::MaxTokens,
        Finish::Length,
        Finish::Cancelled,
    ]
    .iter()
    .map(|f| f.name())
    .collect();
    m.add("STOP_REASONS", reasons)?;
    Ok(())
}
