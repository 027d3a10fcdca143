//! The C ABI of qkv: `include/qkv.h` (generated from this file by cbindgen; `tests/header.rs` fails when
//! the committed header is stale, `QKV_BLESS=1` rewrites it).
//!
//! Every entry point catches panics and reports them as `QKV_ERR_PANIC`; null pointers and strings that
//! are not UTF-8 are errors (`QKV_ERR_NULL_POINTER`, `QKV_ERR_INVALID_UTF8`), never undefined behaviour
//! on our side. The rules for callers (what must be valid, who frees what, threads) are the doc comments
//! below, which cbindgen copies into the header.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use qkv::{Timings, TranslateOptions, WeightType};
use qkv_embed::{Engine, Error, ErrorKind, Finish, GenerateSpec, LoadSpec, Outcome, Result};

/// The version of this header's ABI; `qkv_abi_version()` returns the library's (they must be equal).
pub const QKV_ABI_VERSION: u32 = 1;

/// `qkv_load_options.weights`: the linear layers as stored in the files (f32, f16 or bf16).
pub const QKV_WEIGHTS_STORED: u32 = 0;
/// `qkv_load_options.weights`: the linear layers quantized to int8 at load (one scale per output row).
pub const QKV_WEIGHTS_INT8: u32 = 1;

/// `qkv_generate_options.prompt_format`: the prompt text as is.
pub const QKV_PROMPT_PLAIN: u32 = 0;
/// `qkv_generate_options.prompt_format`: the prompt as one user message in the model's chat template.
pub const QKV_PROMPT_CHAT: u32 = 1;

/// The outcome of a call. `QKV_OK` is 0; every other value is an error.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum qkv_status {
    QKV_OK = 0,
    /// A required pointer argument was NULL.
    QKV_ERR_NULL_POINTER = 1,
    /// A string argument is not valid UTF-8.
    QKV_ERR_INVALID_UTF8 = 2,
    /// An option or argument is out of range, or the request does not fit the model (a prompt longer than
    /// the context, translate on a decoder-only model, generate on a translation model, ...).
    QKV_ERR_INVALID_ARGUMENT = 3,
    /// The model directory could not be loaded (missing or invalid files), or its tokenizer failed.
    QKV_ERR_LOAD = 4,
    /// The instruction set asked for is unknown or not on this CPU.
    QKV_ERR_ISA = 5,
    /// A memory limit (the KV cache cap, `qkv_load_options.max_cache_bytes`) would be passed.
    QKV_ERR_MEMORY = 6,
    /// Another failure of the engine.
    QKV_ERR_ENGINE = 7,
    /// A panic inside qkv (a bug, please report it), caught at the boundary.
    QKV_ERR_PANIC = 8,
}

impl From<ErrorKind> for qkv_status {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::NullPointer => qkv_status::QKV_ERR_NULL_POINTER,
            ErrorKind::InvalidUtf8 => qkv_status::QKV_ERR_INVALID_UTF8,
            ErrorKind::InvalidArgument => qkv_status::QKV_ERR_INVALID_ARGUMENT,
            ErrorKind::Load => qkv_status::QKV_ERR_LOAD,
            ErrorKind::Isa => qkv_status::QKV_ERR_ISA,
            ErrorKind::Memory => qkv_status::QKV_ERR_MEMORY,
            ErrorKind::Engine => qkv_status::QKV_ERR_ENGINE,
            ErrorKind::Panic => qkv_status::QKV_ERR_PANIC,
        }
    }
}

/// An error: its code and a message naming the problem (file, tensor, option; expected vs found).
/// Allocated by qkv; free it with `qkv_error_free`.
#[repr(C)]
pub struct qkv_error {
    pub code: qkv_status,
    /// NUL-terminated UTF-8.
    pub message: *mut c_char,
}

/// How a model is loaded. Start from `qkv_load_options_default()`; a NULL `qkv_load_options *` means
/// the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qkv_load_options {
    /// Worker threads of a pool of this model's own; 0 (default): one shared pool, one thread per core.
    pub threads: usize,
    /// `QKV_WEIGHTS_STORED` (default) or `QKV_WEIGHTS_INT8`.
    pub weights: u32,
    /// Instruction set, "scalar", "avx2", "avx512" or "neon"; NULL (default): the best of this CPU
    /// (or the environment variable QKV_ISA).
    pub isa: *const c_char,
    /// Cap on the KV cache bytes of one generation; 0 (default): the engine's default.
    pub max_cache_bytes: usize,
}

/// Options of one generation. Start from `qkv_generate_options_default()`; a NULL
/// `qkv_generate_options *` means the defaults (greedy, 128 new tokens).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qkv_generate_options {
    /// Most tokens to generate (EOS included). Default 128.
    pub max_new_tokens: usize,
    /// 0 (default): greedy; > 0: sample at this temperature with the filters and seed below.
    pub temperature: f32,
    /// Keep only the top_k most likely tokens (0 = off, default).
    pub top_k: usize,
    /// Nucleus filter in (0, 1] (1 = off, default).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one, in [0, 1] (0 = off, default).
    pub min_p: f32,
    /// Seed of sampling: a seed gives the same tokens on every run and thread count.
    pub seed: u64,
    /// Hugging Face repetition penalty, > 0 (1 = off, default).
    pub repetition_penalty: f32,
    /// `QKV_PROMPT_PLAIN` (default) or `QKV_PROMPT_CHAT`.
    pub prompt_format: u32,
    /// Generation stops when the text contains one of these (the stop string is not returned):
    /// `n_stop_strings` NUL-terminated UTF-8 strings (NULL when 0).
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
}

/// Options of a translation call; 0 (or NaN, or negative, as said) keeps the model's default. Start from
/// `qkv_translate_options_default()`; a NULL `qkv_translate_options *` means the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qkv_translate_options {
    /// Beam size (1 = greedy); 0: the model's.
    pub beam_size: usize,
    /// Most tokens generated per sentence, EOS included; 0: the model's.
    pub max_length: usize,
    /// Fewest tokens generated before EOS is allowed; negative: the model's.
    pub min_length: i64,
    /// Length penalty of beam search; NaN: the model's.
    pub length_penalty: f32,
    /// Sentences encoded and decoded together (default 32).
    pub batch_size: usize,
}

/// Why a generation ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum qkv_stop_reason {
    /// An end-of-sequence token was generated (it is the last token).
    QKV_STOP_EOS = 0,
    /// The text reached a stop string.
    QKV_STOP_STRING = 1,
    /// `max_new_tokens` were generated.
    QKV_STOP_MAX_TOKENS = 2,
    /// The model's context is full.
    QKV_STOP_LENGTH = 3,
    /// The token callback returned non-zero.
    QKV_STOP_CALLBACK = 4,
}

impl From<Finish> for qkv_stop_reason {
    fn from(f: Finish) -> Self {
        match f {
            Finish::Eos => qkv_stop_reason::QKV_STOP_EOS,
            Finish::StopString => qkv_stop_reason::QKV_STOP_STRING,
            Finish::MaxTokens => qkv_stop_reason::QKV_STOP_MAX_TOKENS,
            Finish::Length => qkv_stop_reason::QKV_STOP_LENGTH,
            Finish::Cancelled => qkv_stop_reason::QKV_STOP_CALLBACK,
        }
    }
}

/// Where the time of a generation went, in seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct qkv_timings {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Feeding the prompt.
    pub prefill_s: f64,
    /// From the start to the first generated token.
    pub ttft_s: f64,
    /// From the first generated token to the last.
    pub decode_s: f64,
    pub total_s: f64,
}

impl From<Timings> for qkv_timings {
    fn from(t: Timings) -> Self {
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

/// Called once per generated token, on the thread that called `qkv_generate_stream`: the token id and
/// the text it completes (`text_len` bytes of UTF-8 followed by a NUL; often empty: an incomplete
/// character or a possible stop string is held back until it is known). `text` is valid only during
/// the call. Return 0 to go on, non-zero to stop the generation. The callback must not unwind (no C++
/// exception, no longjmp) out of itself.
pub type qkv_token_callback =
    Option<unsafe extern "C" fn(token: u32, text: *const c_char, text_len: usize, user_data: *mut c_void) -> c_int>;

/// A loaded model (weights memory-mapped, tokenizer, defaults). Thread-safe: one model may serve any
/// number of threads at once.
pub struct qkv_model {
    engine: Engine,
}

/// The result of one generation: text, tokens, stop reason, timings. Owned by the caller.
pub struct qkv_generation {
    /// The text and a NUL after it.
    text: Vec<u8>,
    tokens: Vec<u32>,
    stop_reason: qkv_stop_reason,
    timings: qkv_timings,
}

/// One translation (a view into its `qkv_translations`, valid until that is freed).
#[repr(C)]
pub struct qkv_translation {
    /// `text_len` bytes of UTF-8 followed by a NUL.
    pub text: *const c_char,
    pub text_len: usize,
    /// The target ids (EOS included when emitted).
    pub tokens: *const u32,
    pub n_tokens: usize,
    /// Length-normalised log-probability.
    pub score: f32,
}

/// The translations of one `qkv_translate` call, in input order. Owned by the caller.
pub struct qkv_translations {
    items: Vec<qkv_translation>,
    /// What `items` point into: each text (with its NUL) and tokens. Their heap buffers never move.
    _storage: Vec<(Vec<u8>, Vec<u32>)>,
}

// ---------------------------------------------------------------------------------------------------
// Errors: the out-parameter and the thread's last error.

thread_local! {
    /// The status and message of the last fallible call on this thread.
    static LAST_ERROR: RefCell<(qkv_status, CString)> = RefCell::new((qkv_status::QKV_OK, CString::default()));
}

/// A NUL-terminated copy of `s` (an interior NUL, impossible in our messages, is replaced).
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Run the body of an entry point: panics become errors; an error is stored as the thread's last error and,
/// when `err` is not NULL, in a new `qkv_error` at `*err` (NULL there on success). `None` on error.
fn entry<T>(err: *mut *mut qkv_error, body: impl FnOnce() -> Result<T>) -> Option<T> {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(&*payload)));
    let (status, message) = match &result {
        Ok(_) => (qkv_status::QKV_OK, CString::default()),
        Err(e) => (qkv_status::from(e.kind), c_string(&e.message)),
    };
    if !err.is_null() {
        let out = match &result {
            Ok(_) => ptr::null_mut(),
            Err(_) => Box::into_raw(Box::new(qkv_error {
                code: status,
                message: message.clone().into_raw(),
            })),
        };
        // SAFETY: the caller passes NULL or a pointer to writable storage for a `qkv_error *` (header).
        unsafe { *err = out };
    }
    LAST_ERROR.with(|l| *l.borrow_mut() = (status, message));
    result.ok()
}

fn null(what: &str) -> Error {
    Error::new(ErrorKind::NullPointer, format!("{what} is NULL"))
}

/// The UTF-8 string at `p`, named `what` in errors.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays alive and unchanged for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: not NULL, and NUL-terminated and alive for 'a by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map_err(|e| {
        Error::new(
            ErrorKind::InvalidUtf8,
            format!("{what} is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })
}

/// The `n` strings at `p` (`what[i]` in errors); `p` may be NULL when `n` is 0.
///
/// # Safety
/// `p` is NULL or points to `n` pointers, each NULL or a NUL-terminated string, all alive for `'a`.
unsafe fn str_array<'a>(p: *const *const c_char, n: usize, what: &str) -> Result<Vec<&'a str>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: `p` points to `n` readable pointers by the caller's contract.
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each pointer is NULL or a live NUL-terminated string by the caller's contract.
        .map(|(i, &s)| unsafe { str_arg(s, &format!("{what}[{i}]")) })
        .collect()
}

/// `*p`, or the defaults when `p` is NULL.
///
/// # Safety
/// `p` is NULL or points to a readable `T`.
unsafe fn options_or<T: Copy>(p: *const T, default: T) -> T {
    if p.is_null() {
        default
    } else {
        // SAFETY: not NULL, and readable by the caller's contract.
        unsafe { *p }
    }
}

/// The model behind `model`.
///
/// # Safety
/// `model` is NULL or a live handle from `qkv_model_load`.
unsafe fn model_arg<'a>(model: *const qkv_model) -> Result<&'a Engine> {
    // SAFETY: NULL or live by the caller's contract; `as_ref` maps NULL to None.
    unsafe { model.as_ref() }
        .map(|m| &m.engine)
        .ok_or_else(|| null("model"))
}

// ---------------------------------------------------------------------------------------------------
// Version and errors.

/// The library's version, e.g. "0.1.0" (static storage: never free it).
#[no_mangle]
pub extern "C" fn qkv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's ABI version (compare with `QKV_ABI_VERSION` of the header it was compiled with).
#[no_mangle]
pub extern "C" fn qkv_abi_version() -> u32 {
    QKV_ABI_VERSION
}

/// The status of the last call on this thread that can fail (`QKV_OK` after a success).
#[no_mangle]
pub extern "C" fn qkv_last_error_code() -> qkv_status {
    LAST_ERROR.try_with(|l| l.borrow().0).unwrap_or(qkv_status::QKV_OK)
}

/// The message of the last call on this thread that can fail ("" after a success). Valid until the next
/// call on this thread; never free it.
#[no_mangle]
pub extern "C" fn qkv_last_error_message() -> *const c_char {
    static EMPTY: &CStr = c"";
    LAST_ERROR.try_with(|l| l.borrow().1.as_ptr()).unwrap_or(EMPTY.as_ptr())
}

/// Free an error from an `err` out-parameter (NULL is allowed).
///
/// # Safety
/// `err` is NULL or an error qkv returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn qkv_error_free(err: *mut qkv_error) {
    if err.is_null() {
        return;
    }
    // SAFETY: `err` came from `Box::into_raw` in `entry` and is freed once (caller's contract).
    let e = unsafe { Box::from_raw(err) };
    if !e.message.is_null() {
        // SAFETY: `message` came from `CString::into_raw` in `entry`.
        drop(unsafe { CString::from_raw(e.message) });
    }
}

// ---------------------------------------------------------------------------------------------------
// Options.

/// The default load options: stored weights, the shared thread pool, the best ISA, the default cache cap.
#[no_mangle]
pub extern "C" fn qkv_load_options_default() -> qkv_load_options {
    qkv_load_options {
        threads: 0,
        weights: QKV_WEIGHTS_STORED,
        isa: ptr::null(),
        max_cache_bytes: 0,
    }
}

/// The default generation options: greedy (temperature 0), 128 new tokens, no filters, no stop strings.
#[no_mangle]
pub extern "C" fn qkv_generate_options_default() -> qkv_generate_options {
    let d = GenerateSpec::default();
    qkv_generate_options {
        max_new_tokens: d.max_new_tokens,
        temperature: d.temperature,
        top_k: d.top_k,
        top_p: d.top_p,
        min_p: d.min_p,
        seed: d.seed,
        repetition_penalty: d.repetition_penalty,
        prompt_format: QKV_PROMPT_PLAIN,
        stop_strings: ptr::null(),
        n_stop_strings: 0,
    }
}

/// The default translation options: the model's beam size, lengths and length penalty; batches of 32.
#[no_mangle]
pub extern "C" fn qkv_translate_options_default() -> qkv_translate_options {
    let d = TranslateOptions::default();
    qkv_translate_options {
        beam_size: 0,
        max_length: 0,
        min_length: -1,
        length_penalty: f32::NAN,
        batch_size: d.batch_size,
    }
}

/// # Safety
/// The pointers inside `o` follow `qkv_load_options`' rules.
unsafe fn load_spec(o: &qkv_load_options) -> Result<LoadSpec> {
    let weights = match o.weights {
        QKV_WEIGHTS_STORED => WeightType::Stored,
        QKV_WEIGHTS_INT8 => WeightType::Int8,
        w => {
            return Err(Error::invalid(format!(
                "options.weights is {w}: expected QKV_WEIGHTS_STORED ({QKV_WEIGHTS_STORED}) or QKV_WEIGHTS_INT8 \
                 ({QKV_WEIGHTS_INT8})"
            )))
        }
    };
    let isa = if o.isa.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string by `qkv_load_options`' rules.
        Some(unsafe { str_arg(o.isa, "options.isa") }?.to_string())
    };
    Ok(LoadSpec {
        threads: (o.threads > 0).then_some(o.threads),
        weights,
        isa,
        max_cache_bytes: (o.max_cache_bytes > 0).then_some(o.max_cache_bytes),
    })
}

/// # Safety
/// The pointers inside `o` follow `qkv_generate_options`' rules.
unsafe fn generate_spec(o: &qkv_generate_options) -> Result<GenerateSpec> {
    let chat = match o.prompt_format {
        QKV_PROMPT_PLAIN => false,
        QKV_PROMPT_CHAT => true,
        f => {
            return Err(Error::invalid(format!(
                "options.prompt_format is {f}: expected QKV_PROMPT_PLAIN ({QKV_PROMPT_PLAIN}) or QKV_PROMPT_CHAT \
                 ({QKV_PROMPT_CHAT})"
            )))
        }
    };
    // SAFETY: `n_stop_strings` strings at `stop_strings` by `qkv_generate_options`' rules.
    let stops = unsafe { str_array(o.stop_strings, o.n_stop_strings, "options.stop_strings") }?;
    Ok(GenerateSpec {
        max_new_tokens: o.max_new_tokens,
        temperature: o.temperature,
        top_k: o.top_k,
        top_p: o.top_p,
        min_p: o.min_p,
        seed: o.seed,
        repetition_penalty: o.repetition_penalty,
        stop_strings: stops.into_iter().map(str::to_string).collect(),
        chat,
    })
}

fn translate_options(o: &qkv_translate_options) -> TranslateOptions {
    TranslateOptions {
        beam_size: (o.beam_size > 0).then_some(o.beam_size),
        max_length: (o.max_length > 0).then_some(o.max_length),
        min_length: usize::try_from(o.min_length).ok(),
        length_penalty: (!o.length_penalty.is_nan()).then_some(o.length_penalty),
        batch_size: o.batch_size,
        ..TranslateOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------------
// Models.

/// Load the model directory `path` (config.json, *.safetensors, tokenizer files): a Llama or GPT-2
/// model for `qkv_generate*`, a Marian or CTranslate2 Transformer for `qkv_translate`. `options` may be
/// NULL (defaults). Returns NULL on error (and `*err`, when `err` is not NULL, set to a new error).
/// Free the model with `qkv_model_free`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` is NULL or points to a `qkv_load_options`;
/// `err` is NULL or points to writable storage for a `qkv_error *`.
#[no_mangle]
pub unsafe extern "C" fn qkv_model_load(
    path: *const c_char,
    options: *const qkv_load_options,
    err: *mut *mut qkv_error,
) -> *mut qkv_model {
    entry(err, || {
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: the caller's contract above.
        let opts = unsafe { options_or(options, qkv_load_options_default()) };
        // SAFETY: the pointers inside the options follow their rules (caller's contract).
        let spec = unsafe { load_spec(&opts) }?;
        let engine = Engine::load(path, &spec)?;
        Ok(Box::into_raw(Box::new(qkv_model { engine })))
    })
    .unwrap_or(ptr::null_mut())
}

/// Free a model (NULL is allowed). No call on it may be running or start afterwards.
///
/// # Safety
/// `model` is NULL or a model from `qkv_model_load`, not yet freed, that no thread still uses.
#[no_mangle]
pub unsafe extern "C" fn qkv_model_free(model: *mut qkv_model) {
    if model.is_null() {
        return;
    }
    // a panic while dropping (none is known) must not unwind into C
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: from `Box::into_raw` in `qkv_model_load`, freed once, unused by others (caller's contract).
        drop(unsafe { Box::from_raw(model) });
    }));
}

// ---------------------------------------------------------------------------------------------------
// Generation.

fn into_generation(o: Outcome) -> *mut qkv_generation {
    let mut text = o.text.into_bytes();
    text.push(0);
    Box::into_raw(Box::new(qkv_generation {
        text,
        tokens: o.tokens,
        stop_reason: o.finish.into(),
        timings: o.timings.into(),
    }))
}

/// Generate after `prompt` (UTF-8) with a decoder-only model. `options` may be NULL (greedy, 128 new
/// tokens). Returns the generation (free it with `qkv_generation_free`), or NULL on error.
///
/// # Safety
/// `model` is NULL or a live model; `prompt` is NULL or a NUL-terminated string; `options` is NULL or
/// points to a `qkv_generate_options` whose pointers follow its rules; `err` as in `qkv_model_load`.
#[no_mangle]
pub unsafe extern "C" fn qkv_generate(
    model: *const qkv_model,
    prompt: *const c_char,
    options: *const qkv_generate_options,
    err: *mut *mut qkv_error,
) -> *mut qkv_generation {
    entry(err, || {
        // SAFETY: the caller's contract above.
        let (engine, prompt, spec) = unsafe { generate_args(model, prompt, options) }?;
        Ok(into_generation(engine.generate(prompt, &spec)?))
    })
    .unwrap_or(ptr::null_mut())
}

/// # Safety
/// As `qkv_generate`'s arguments.
unsafe fn generate_args<'a>(
    model: *const qkv_model,
    prompt: *const c_char,
    options: *const qkv_generate_options,
) -> Result<(&'a Engine, &'a str, GenerateSpec)> {
    // SAFETY: the caller's contract (qkv_generate).
    let engine = unsafe { model_arg(model) }?;
    // SAFETY: the caller's contract (qkv_generate).
    let prompt = unsafe { str_arg(prompt, "prompt") }?;
    // SAFETY: the caller's contract (qkv_generate).
    let opts = unsafe { options_or(options, qkv_generate_options_default()) };
    // SAFETY: the pointers inside the options follow their rules (caller's contract).
    let spec = unsafe { generate_spec(&opts) }?;
    Ok((engine, prompt, spec))
}

/// As `qkv_generate`, calling `callback(token, text, text_len, user_data)` for each generated token on
/// this thread as soon as it is chosen. A non-zero return from the callback stops the generation: the
/// result then holds the tokens so far and `QKV_STOP_CALLBACK` (it is not an error).
///
/// # Safety
/// As `qkv_generate`; `callback` is NULL (an error) or a function following `qkv_token_callback`'s rules;
/// `user_data` is passed to it untouched.
#[no_mangle]
pub unsafe extern "C" fn qkv_generate_stream(
    model: *const qkv_model,
    prompt: *const c_char,
    options: *const qkv_generate_options,
    callback: qkv_token_callback,
    user_data: *mut c_void,
    err: *mut *mut qkv_error,
) -> *mut qkv_generation {
    entry(err, || {
        // SAFETY: the caller's contract above.
        let (engine, prompt, spec) = unsafe { generate_args(model, prompt, options) }?;
        let callback = callback.ok_or_else(|| null("callback"))?;
        let mut text = Vec::new();
        let outcome = engine.generate_with(prompt, &spec, |event| {
            text.clear();
            text.extend_from_slice(event.text.as_bytes());
            text.push(0);
            // SAFETY: `callback` follows `qkv_token_callback`'s rules (caller's contract); `text` is
            // `len` bytes and a NUL, alive during the call.
            let stop = unsafe { callback(event.id, text.as_ptr().cast(), event.text.len(), user_data) };
            if stop != 0 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        Ok(into_generation(outcome))
    })
    .unwrap_or(ptr::null_mut())
}

/// The generated text: UTF-8 followed by a NUL (`*len`, when `len` is not NULL, gets its length without
/// the NUL). Valid until the generation is freed. NULL for a NULL generation.
///
/// # Safety
/// `generation` is NULL or a live generation; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qkv_generation_text(generation: *const qkv_generation, len: *mut usize) -> *const c_char {
    // SAFETY: NULL or live by the caller's contract.
    let (p, n) = match unsafe { generation.as_ref() } {
        Some(g) => (g.text.as_ptr().cast(), g.text.len() - 1),
        None => (ptr::null(), 0),
    };
    // SAFETY: NULL or writable by the caller's contract.
    if let Some(len) = unsafe { len.as_mut() } {
        *len = n;
    }
    p
}

/// The generated token ids (`*n` of them; EOS included when it ended the generation). Valid until the
/// generation is freed. NULL (and 0) for a NULL generation.
///
/// # Safety
/// `generation` is NULL or a live generation; `n` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qkv_generation_tokens(generation: *const qkv_generation, n: *mut usize) -> *const u32 {
    // SAFETY: NULL or live by the caller's contract.
    let (p, count) = match unsafe { generation.as_ref() } {
        Some(g) => (g.tokens.as_ptr(), g.tokens.len()),
        None => (ptr::null(), 0),
    };
    // SAFETY: NULL or writable by the caller's contract.
    if let Some(n) = unsafe { n.as_mut() } {
        *n = count;
    }
    p
}

/// Why the generation ended (`QKV_STOP_MAX_TOKENS` for a NULL generation).
///
/// # Safety
/// `generation` is NULL or a live generation.
#[no_mangle]
pub unsafe extern "C" fn qkv_generation_stop_reason(generation: *const qkv_generation) -> qkv_stop_reason {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { generation.as_ref() }.map_or(qkv_stop_reason::QKV_STOP_MAX_TOKENS, |g| g.stop_reason)
}

/// Where the time went (zeros for a NULL generation).
///
/// # Safety
/// `generation` is NULL or a live generation.
#[no_mangle]
pub unsafe extern "C" fn qkv_generation_timings(generation: *const qkv_generation) -> qkv_timings {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { generation.as_ref() }.map_or_else(qkv_timings::default, |g| g.timings)
}

/// Free a generation (NULL is allowed).
///
/// # Safety
/// `generation` is NULL or a generation qkv returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn qkv_generation_free(generation: *mut qkv_generation) {
    if !generation.is_null() {
        // SAFETY: from `Box::into_raw` in `into_generation`, freed once (caller's contract).
        drop(unsafe { Box::from_raw(generation) });
    }
}

// ---------------------------------------------------------------------------------------------------
// Translation.

/// Translate `n_texts` sentences (UTF-8) with an encoder-decoder model, batched; `texts` may be NULL when
/// `n_texts` is 0, `options` may be NULL (the model's defaults). Returns the translations in input order
/// (free them with `qkv_translations_free`), or NULL on error.
///
/// # Safety
/// `model` is NULL or a live model; `texts` is NULL or points to `n_texts` pointers, each NULL or a
/// NUL-terminated string; `options` is NULL or points to a `qkv_translate_options`; `err` as in
/// `qkv_model_load`.
#[no_mangle]
pub unsafe extern "C" fn qkv_translate(
    model: *const qkv_model,
    texts: *const *const c_char,
    n_texts: usize,
    options: *const qkv_translate_options,
    err: *mut *mut qkv_error,
) -> *mut qkv_translations {
    entry(err, || {
        // SAFETY: the caller's contract above.
        let engine = unsafe { model_arg(model) }?;
        // SAFETY: the caller's contract above.
        let texts = unsafe { str_array(texts, n_texts, "texts") }?;
        // SAFETY: the caller's contract above.
        let opts = translate_options(&unsafe { options_or(options, qkv_translate_options_default()) });
        let out = if texts.is_empty() {
            Vec::new()
        } else {
            engine.translate(&texts, &opts)?
        };
        let storage: Vec<(Vec<u8>, Vec<u32>)> = out
            .iter()
            .map(|t| {
                let mut text = t.text.clone().into_bytes();
                text.push(0);
                (text, t.tokens.clone())
            })
            .collect();
        let items = storage
            .iter()
            .zip(&out)
            .map(|((text, tokens), t)| qkv_translation {
                text: text.as_ptr().cast(),
                text_len: text.len() - 1,
                tokens: tokens.as_ptr(),
                n_tokens: tokens.len(),
                score: t.score,
            })
            .collect();
        Ok(Box::into_raw(Box::new(qkv_translations {
            items,
            _storage: storage,
        })))
    })
    .unwrap_or(ptr::null_mut())
}

/// How many translations (0 for NULL).
///
/// # Safety
/// `translations` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qkv_translations_count(translations: *const qkv_translations) -> usize {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { translations.as_ref() }.map_or(0, |t| t.items.len())
}

/// Translation `i` (input order), or NULL when `i` is out of range or `translations` is NULL. Valid until
/// the translations are freed.
///
/// # Safety
/// `translations` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qkv_translations_get(
    translations: *const qkv_translations,
    i: usize,
) -> *const qkv_translation {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { translations.as_ref() }
        .and_then(|t| t.items.get(i))
        .map_or(ptr::null(), |t| t as *const qkv_translation)
}

/// Free translations (NULL is allowed).
///
/// # Safety
/// `translations` is NULL or translations qkv returned, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn qkv_translations_free(translations: *mut qkv_translations) {
    if !translations.is_null() {
        // SAFETY: from `Box::into_raw` in `qkv_translate`, freed once (caller's contract).
        drop(unsafe { Box::from_raw(translations) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_not_an_unwind() {
        let mut err: *mut qkv_error = ptr::null_mut();
        let r: Option<()> = entry(&mut err, || panic!("boom"));
        assert!(r.is_none());
        assert!(!err.is_null());
        // SAFETY: `entry` just stored a live error there.
        let e = unsafe { &*err };
        assert_eq!(e.code, qkv_status::QKV_ERR_PANIC);
        // SAFETY: a NUL-terminated message made by `entry`.
        let msg = unsafe { CStr::from_ptr(e.message) }.to_str().unwrap().to_string();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(qkv_last_error_code(), qkv_status::QKV_ERR_PANIC);
        // SAFETY: the error from `entry`, freed once.
        unsafe { qkv_error_free(err) };
        // a success clears the thread's last error and the out-parameter
        let mut err2: *mut qkv_error = ptr::dangling_mut();
        assert_eq!(entry(&mut err2, || Ok(7)), Some(7));
        assert!(err2.is_null());
        assert_eq!(qkv_last_error_code(), qkv_status::QKV_OK);
    }

    #[test]
    fn every_error_kind_has_its_status() {
        let codes: Vec<qkv_status> = ErrorKind::ALL.into_iter().map(qkv_status::from).collect();
        for (i, c) in codes.iter().enumerate() {
            assert_ne!(*c, qkv_status::QKV_OK);
            assert!(!codes[..i].contains(c), "{c:?} twice");
        }
    }
}
