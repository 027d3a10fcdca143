//! `qkv serve`: an OpenAI-compatible HTTP server (axum on a small tokio runtime). Generation requests of a
//! decoder-only model go to one scheduler thread that batches them continuously ([`qkv::Scheduler`]);
//! translation requests of an encoder-decoder model are grouped into one `translate` call. Limits: a bounded
//! queue (429 with `Retry-After`), caps on prompt tokens, `max_tokens` and the body, a body-read and a
//! per-request timeout; a client that disconnects cancels its sequence; SIGTERM stops accepting and drains.

mod api;
mod engine;
mod metrics;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use qkv::{BatchOptions, GenerateOptions, Model, ModelKind, SampleParams, Strategy};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use api::{with_token_ids, TranslationRequest, Usage};
use api::{ApiError, ChatRequest, CompletionRequest, Content, Delta, Endpoint, Inputs, Prompt, Sampling, Stop};
use engine::{Generate, Grouping, Msg, Submit, Translate, TranslateJob};
use metrics::Metrics;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json, *.safetensors, tokenizer) or GGUF file (run in place).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed to stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most sequences decoded together (rows of the batch's KV cache).
    #[arg(long, default_value_t = 16)]
    max_seqs: usize,
    /// Most requests waiting beyond the running ones; more get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Most positions of one sequence, prompt and generated tokens (default: the model's context, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Worker threads of the model (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Most prompt tokens fed per batch step (long prompts are fed in chunks between decoding steps).
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
    /// Most prompt tokens of a request (default: ctx - 1).
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 4096)]
    max_tokens_limit: usize,
    /// `max_tokens` of a request that gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds a client may take to send its request body.
    #[arg(long, default_value_t = 10.0)]
    body_timeout: f64,
    /// Seconds a request may take from arrival to its last token.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// The model name of /v1/models and of responses (default: the directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Most sources of one grouped translate call (encoder-decoder models).
    #[arg(long, default_value_t = 32)]
    translate_batch: usize,
    /// Milliseconds a translation request waits for others to group with.
    #[arg(long, default_value_t = 5)]
    translate_wait_ms: u64,
    #[command(flatten)]
    load: crate::load_args::LoadArgs,
}

/// The limits every request is checked against.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_running_and_queued: usize,
    max_prompt_tokens: usize,
    max_tokens_limit: usize,
    default_max_tokens: usize,
    max_body_bytes: usize,
    body_timeout: Duration,
    request_timeout: Duration,
    max_translate_inputs: usize,
}

/// What exists once the model is loaded.
struct Ready {
    model: Arc<Model>,
    generate: Option<Generate>,
    translate: Option<Translate>,
    ctx: usize,
}

/// The server's shared state.
struct App {
    name: String,
    created: u64,
    limits: Limits,
    ready: OnceLock<Ready>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    next_id: AtomicU64,
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<App>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

impl App {
    fn ready(&self) -> Result<&Ready, ApiError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(unavailable("the server is shutting down"));
        }
        self.ready
            .get()
            .ok_or_else(|| unavailable("the model is still loading"))
    }

    /// Admit one more request, or 429 when the running and queued ones are at the limit.
    fn admit(self: &Arc<Self>) -> Result<InFlight, ApiError> {
        let m = &self.metrics.in_flight;
        m.inc();
        let guard = InFlight(self.clone());
        if m.get() as usize > self.limits.max_running_and_queued {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "the server is full: {} requests running or queued (--max-seqs + --max-queue); retry later",
                        self.limits.max_running_and_queued
                    ),
                )
            });
        }
        Ok(guard)
    }

    fn new_id(&self, endpoint: Endpoint) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}{n:06x}", endpoint.id_prefix(), self.created)
    }

    /// An error for a `model` field that names another model than the one served.
    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(m) if *m != self.name => Err(ApiError {
                param: Some("model"),
                code: Some("model_not_found"),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!("the model `{m}` does not exist; this server serves `{}`", self.name),
                )
            }),
            _ => Ok(()),
        }
    }
}

fn unavailable(why: &str) -> ApiError {
    ApiError {
        retry_after: Some(5),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", why)
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn run(args: Args) -> Result<()> {
    crate::set_threads(args.threads)?;
    // The runtime only moves bytes: two threads, whatever the model's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        args.model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let app = Arc::new(App {
        name,
        created: now_s(),
        // set from the model once loaded (the prompt cap depends on its context)
        limits: Limits {
            max_running_and_queued: args.max_seqs.saturating_add(args.max_queue),
            max_prompt_tokens: args.max_prompt_tokens.unwrap_or(usize::MAX),
            max_tokens_limit: args.max_tokens_limit,
            default_max_tokens: args.default_max_tokens,
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_secs_f64(args.body_timeout.max(0.001)),
            request_timeout: Duration::from_secs_f64(args.request_timeout.max(0.001)),
            max_translate_inputs: args.translate_batch.max(1) * 4,
        },
        ready: OnceLock::new(),
        metrics: Arc::new(Metrics::new().context("metrics")?),
        draining: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
    });
    eprintln!(
        "qkv serve: listening on http://{addr} (loading {})",
        args.model.display()
    );
    let router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/translations", post(translations))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app.clone());
    let server = {
        let app = app.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal(app))
                .await
        })
    };
    // Load on a blocking thread: /health answers 503 meanwhile.
    let loader = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || load(&app, &args))
    };
    loader.await.context("the loader thread panicked")??;
    server.await.context("the server task panicked")??;
    eprintln!("qkv serve: drained, exiting");
    Ok(())
}

/// Load the model and start its engine thread.
fn load(app: &Arc<App>, args: &Args) -> Result<()> {
    let t = Instant::now();
    let opts = args.load.options();
    let model = Arc::new(Model::load_with(&args.model, &opts).with_context(|| args.model.display().to_string())?);
    crate::report_dequantized(&model);
    let info = model.info().clone();
    let ctx = args.ctx.unwrap_or(info.max_positions.min(4096)).min(info.max_positions);
    let ready = match info.kind {
        ModelKind::DecoderOnly => {
            let batch = BatchOptions {
                max_seqs: args.max_seqs,
                ctx: Some(ctx),
                prefill_chunk: args.prefill_chunk,
            };
            Ready {
                generate: Some(Generate::start(model.clone(), batch, app.metrics.clone())?),
                translate: None,
                model,
                ctx,
            }
        }
        ModelKind::EncoderDecoder => {
            let grouping = Grouping {
                max_sources: args.translate_batch.max(1),
                wait: Duration::from_millis(args.translate_wait_ms),
            };
            Ready {
                generate: None,
                translate: Some(Translate::start(model.clone(), grouping, app.metrics.clone())?),
                model,
                ctx,
            }
        }
    };
    let _ = app.ready.set(ready);
    eprintln!(
        "qkv serve: {} ({}, {:?}) ready in {:.1} s, ctx {ctx}, max {} sequences",
        app.name,
        info.architecture,
        info.kind,
        t.elapsed().as_secs_f64(),
        args.max_seqs
    );
    Ok(())
}

/// SIGTERM or Ctrl-C: stop accepting; axum then waits for the requests in flight.
async fn shutdown_signal(app: Arc<App>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    app.draining.store(true, Ordering::Relaxed);
    eprintln!("qkv serve: shutting down: no new connections, draining the requests in flight");
}

// --- small endpoints -------------------------------------------------------------------------------------

async fn health(State(app): State<Arc<App>>) -> Response {
    let r = match app.ready() {
        Ok(_) => (StatusCode::OK, axum::Json(json!({"status": "ok", "model": app.name}))).into_response(),
        Err(e) => e.into_response(),
    };
    app.metrics.answered("health", r.status().as_u16());
    r
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics.answered("metrics", 200);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    app.metrics.answered("models", 200);
    axum::Json(json!({
        "object": "list",
        "data": [{"id": app.name, "object": "model", "created": app.created, "owned_by": "qkv"}],
    }))
    .into_response()
}

async fn not_found(State(app): State<Arc<App>>, req: Request) -> Response {
    let msg = format!("no route for {} {}", req.method(), req.uri().path());
    route_error(&app, StatusCode::NOT_FOUND, msg)
}

async fn method_not_allowed(State(app): State<Arc<App>>, req: Request) -> Response {
    let msg = format!("{} is not allowed on {}", req.method(), req.uri().path());
    route_error(&app, StatusCode::METHOD_NOT_ALLOWED, msg)
}

/// A request no endpoint takes, counted and answered as an OpenAI error.
fn route_error(app: &App, status: StatusCode, msg: String) -> Response {
    app.metrics.answered("other", status.as_u16());
    ApiError::new(status, "invalid_request_error", msg).into_response()
}

// --- request bodies --------------------------------------------------------------------------------------

/// Read the body within the size cap and the body timeout, and parse it as JSON; every failure an OpenAI error.
async fn read_json(app: &App, req: Request) -> Result<serde_json::Value, ApiError> {
    let limit = app.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes (--max-body-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body: Body = req.into_body();
    let bytes = match tokio::time::timeout(app.limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "the request body did not arrive within {:.1} s (--body-timeout)",
                    app.limits.body_timeout.as_secs_f64()
                ),
            ))
        }
        Ok(Err(e)) if format!("{e:#}").contains("length limit") => return Err(too_large()),
        Ok(Err(e)) => return Err(ApiError::invalid(format!("cannot read the request body: {e}"))),
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")).with_code("invalid_json"))
}

/// The fields `T` reads from the JSON body `v`; an error names the field (`messages[0].role`) and what was wrong.
fn fields<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body: `{path}`: {inner}")
        };
        ApiError::invalid(msg).with_code("invalid_type")
    })
}

/// The generation options of a request, every field checked (the error names it).
fn options(limits: &Limits, s: &Sampling) -> Result<GenerateOptions, ApiError> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::param("n", "only n = 1 is supported"));
    }
    let (field, asked) = match (s.max_completion_tokens, s.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let max_new_tokens = match asked {
        None => limits.default_max_tokens.min(limits.max_tokens_limit),
        Some(m) if m < 1 => {
            return Err(ApiError::param(
                "max_tokens",
                format!("{field} must be at least 1, got {m}"),
            ))
        }
        Some(m) if m as u64 > limits.max_tokens_limit as u64 => {
            return Err(ApiError::param(
                "max_tokens",
                format!(
                    "{field} is {m}, above this server's limit of {} (--max-tokens-limit)",
                    limits.max_tokens_limit
                ),
            ))
        }
        Some(m) => m as usize,
    };
    let temperature = s.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::param(
            "temperature",
            format!("temperature must be in [0, 2], got {temperature}"),
        ));
    }
    let top_k = match s.top_k {
        None => 0,
        Some(k) if k < 0 => 0, // -1: off, as in vLLM
        Some(k) => k as usize,
    };
    let params = SampleParams {
        temperature: temperature.max(f32::MIN_POSITIVE),
        top_k,
        top_p: s.top_p.unwrap_or(1.0),
        min_p: s.min_p.unwrap_or(0.0),
        seed: s.seed.unwrap_or(0),
    };
    params.validate().map_err(|e| {
        let field = ["top_p", "min_p"]
            .into_iter()
            .find(|f| e.to_string().contains(f))
            .unwrap_or("temperature");
        ApiError::param(field, e.to_string())
    })?;
    for (name, v) in [
        ("frequency_penalty", s.frequency_penalty),
        ("presence_penalty", s.presence_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::param(
                name,
                format!("{name} is not supported (use repetition_penalty)"),
            ));
        }
    }
    let repetition_penalty = s.repetition_penalty.unwrap_or(1.0);
    if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
        return Err(ApiError::param("repetition_penalty", "repetition_penalty must be > 0"));
    }
    let stop_strings = match &s.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop_strings.len() > 4 || stop_strings.iter().any(String::is_empty) {
        return Err(ApiError::param("stop", "stop takes at most 4 non-empty strings"));
    }
    Ok(GenerateOptions {
        max_new_tokens,
        // temperature 0 is greedy, as OpenAI documents it
        strategy: if temperature == 0.0 {
            Strategy::Greedy
        } else {
            Strategy::Sample(params)
        },
        repetition_penalty,
        stop_strings,
        ..Default::default()
    })
}

// --- generation ------------------------------------------------------------------------------------------

/// What a chat or completion request starts with: its body read, the shared fields (`Sampling`) and the
/// endpoint's own (`T`), the model checked to be this one and loaded, the generation options.
async fn generation_request<T: DeserializeOwned>(
    app: &App,
    req: Request,
) -> Result<(Sampling, T, &Ready, GenerateOptions), ApiError> {
    let json = read_json(app, req).await?;
    let sampling: Sampling = fields(&json)?;
    let body: T = fields(&json)?;
    app.check_model(&sampling.model)?;
    let ready = app.ready()?;
    let opts = options(&app.limits, &sampling)?;
    Ok((sampling, body, ready, opts))
}

async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    let t0 = Instant::now();
    let r = async {
        let (sampling, body, ready, opts) = generation_request::<ChatRequest>(&app, req).await?;
        if body.messages.is_empty() {
            return Err(ApiError::param("messages", "messages must hold at least one message"));
        }
        let mut messages = Vec::with_capacity(body.messages.len());
        for m in &body.messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer") {
                return Err(ApiError::param(
                    "messages",
                    format!("unknown message role `{}`", m.role),
                ));
            }
            let text = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut t = String::new();
                    for p in parts {
                        match (&*p.kind, &p.text) {
                            ("text", Some(s)) => t.push_str(s),
                            _ => {
                                return Err(ApiError::param(
                                    "messages",
                                    format!("unsupported content part `{}`", p.kind),
                                ))
                            }
                        }
                    }
                    t
                }
            };
            let role = if m.role == "developer" {
                "system".to_string()
            } else {
                m.role.clone()
            };
            messages.push((role, text));
        }
        let model = ready.model.clone();
        let ids = blocking(move || {
            let refs: Vec<(&str, &str)> = messages.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
            model.chat_ids(&refs)
        })
        .await?;
        generate(&app, ready, Endpoint::Chat, ids, opts, &sampling, t0).await
    }
    .await;
    answered(&app, "chat_completions", r)
}

async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    let t0 = Instant::now();
    let r = async {
        let (sampling, body, ready, opts) = generation_request::<CompletionRequest>(&app, req).await?;
        let prompt = match body.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut v) if v.len() == 1 => v.swap_remove(0),
            Prompt::Many(_) => return Err(ApiError::param("prompt", "give one prompt per request")),
        };
        let model = ready.model.clone();
        let ids = blocking(move || model.prompt_ids(&prompt, qkv::PromptFormat::Plain)).await?;
        generate(&app, ready, Endpoint::Completion, ids, opts, &sampling, t0).await
    }
    .await;
    answered(&app, "completions", r)
}

/// Run `f` (tokenizing: CPU work) off the runtime's threads; its error is the request's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> qkv::Result<T> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::invalid(e.to_string())),
        Err(_) => Err(ApiError::internal("the tokenizer task failed")),
    }
}

/// Count the response's status and make it one.
fn answered(app: &App, endpoint: &str, r: Result<Response, ApiError>) -> Response {
    let r = r.unwrap_or_else(IntoResponse::into_response);
    app.metrics.answered(endpoint, r.status().as_u16());
    r
}

/// Check the prompt against the limits, admit the request, hand it to the scheduler and answer: one JSON
/// object, or server-sent events (`stream`).
async fn generate(
    app: &Arc<App>,
    ready: &Ready,
    endpoint: Endpoint,
    prompt: Vec<u32>,
    opts: GenerateOptions,
    sampling: &Sampling,
    t0: Instant,
) -> Result<Response, ApiError> {
    let Some(gen) = &ready.generate else {
        return Err(ApiError::invalid(format!(
            "`{}` is an encoder-decoder (translation) model: use /v1/translations",
            app.name
        )));
    };
    let cap = app.limits.max_prompt_tokens.min(ready.ctx.saturating_sub(1));
    if prompt.len() > cap {
        return Err(ApiError::param(
            "messages",
            format!(
                "the prompt has {} tokens, above the limit of {cap} prompt tokens (context {} positions, \
                 --max-prompt-tokens)",
                prompt.len(),
                ready.ctx
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let guard = app.admit()?;
    let n_prompt = prompt.len();
    app.metrics.prompt_tokens.inc_by(n_prompt as u64);
    let (tx, rx) = mpsc::unbounded_channel();
    if !gen.submit(Submit { prompt, opts, out: tx }) {
        return Err(unavailable("the engine has stopped"));
    }
    let run = Run {
        app: app.clone(),
        endpoint,
        id: app.new_id(endpoint),
        created: now_s(),
        n_prompt,
        deadline: t0 + app.limits.request_timeout,
        t0,
        token_ids: sampling.return_token_ids,
        _guard: guard,
    };
    if sampling.stream {
        let usage = sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(run.stream(rx, usage))
    } else {
        run.collect(rx).await
    }
}

/// One admitted generation request being answered.
struct Run {
    app: Arc<App>,
    endpoint: Endpoint,
    id: String,
    created: u64,
    n_prompt: usize,
    t0: Instant,
    deadline: Instant,
    /// Whether the generated ids go into the response (`return_token_ids`).
    token_ids: bool,
    _guard: InFlight,
}

impl Run {
    /// The next message of the engine, or a timeout error.
    async fn next(&self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> Result<Msg, ApiError> {
        match tokio::time::timeout_at(self.deadline.into(), rx.recv()).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request did not finish within {:.0} s (--request-timeout)",
                    self.app.limits.request_timeout.as_secs_f64()
                ),
            )),
            Ok(None) => Err(ApiError::internal("the engine dropped the request")),
            Ok(Some(Msg::Failed(e))) => Err(ApiError::internal(e)),
            Ok(Some(m)) => Ok(m),
        }
    }

    /// Time to first token and inter-token latency of one token.
    fn observe(&self, last: &mut Option<Instant>) {
        let now = Instant::now();
        match last {
            None => self.app.metrics.ttft.observe((now - self.t0).as_secs_f64()),
            Some(t) => self.app.metrics.inter_token.observe((now - *t).as_secs_f64()),
        }
        *last = Some(now);
    }

    async fn collect(self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Result<Response, ApiError> {
        let mut last = None;
        loop {
            match self.next(&mut rx).await? {
                Msg::Token(_) => self.observe(&mut last),
                Msg::Done(g) => {
                    let name = &self.app.name;
                    let mut body = self.endpoint.response(&self.id, name, self.created, self.n_prompt, &g);
                    if self.token_ids {
                        body = with_token_ids(body, &g.tokens);
                    }
                    return Ok(axum::Json(body).into_response());
                }
                Msg::Failed(e) => return Err(ApiError::internal(e)),
            }
        }
    }

    /// Server-sent events: a chunk per token with text, the finish chunk, the usage chunk if asked, `[DONE]`. A
    /// task turns engine messages into events; when the client goes away the body is dropped, the task's next
    /// send fails and it drops the engine's receiver, which cancels the sequence.
    fn stream(self, mut rx: mpsc::UnboundedReceiver<Msg>, include_usage: bool) -> Response {
        let (tx, events) = mpsc::channel::<Event>(64);
        tokio::spawn(async move {
            let data = |v: serde_json::Value| Event::default().data(v.to_string());
            let (id, name, created, ep) = (&self.id, &self.app.name, self.created, self.endpoint);
            if ep == Endpoint::Chat && tx.send(data(ep.chunk(id, name, created, Delta::Role))).await.is_err() {
                return;
            }
            let mut last = None;
            loop {
                let ev = match self.next(&mut rx).await {
                    Ok(Msg::Token(t)) => {
                        self.observe(&mut last);
                        let chunk = ep.chunk(id, name, created, Delta::Text(&t.text));
                        match self.token_ids {
                            true => data(with_token_ids(chunk, &[t.id])),
                            false if t.text.is_empty() => continue,
                            false => data(chunk),
                        }
                    }
                    Ok(Msg::Done(g)) => {
                        if tx
                            .send(data(ep.chunk(id, name, created, Delta::Finish(g.stop_reason))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        if include_usage {
                            let u = Usage::of(self.n_prompt, &g);
                            if tx.send(data(ep.usage_chunk(id, name, created, u))).await.is_err() {
                                return;
                            }
                        }
                        break;
                    }
                    Ok(Msg::Failed(e)) => data(ApiError::internal(e).body()),
                    Err(e) => {
                        let _ = tx.send(data(e.body())).await;
                        break;
                    }
                };
                if tx.send(ev).await.is_err() {
                    return; // the client went away: dropping `rx` cancels the sequence
                }
            }
            let _ = tx.send(Event::default().data("[DONE]")).await;
        });
        let stream = futures_util::stream::unfold(events, |mut events| async move {
            events
                .recv()
                .await
                .map(|e| (Ok::<_, std::convert::Infallible>(e), events))
        });
        Sse::new(stream).into_response()
    }
}

// --- translation -----------------------------------------------------------------------------------------

async fn translations(State(app): State<Arc<App>>, req: Request) -> Response {
    let r = async {
        let body: TranslationRequest = fields(&read_json(&app, req).await?)?;
        app.check_model(&body.model)?;
        let ready = app.ready()?;
        let Some(tr) = &ready.translate else {
            return Err(ApiError::invalid(format!(
                "`{}` is a decoder-only model: use /v1/chat/completions or /v1/completions",
                app.name
            )));
        };
        let texts = match body.input {
            Inputs::One(t) => vec![t],
            Inputs::Many(v) => v,
        };
        let max_inputs = app.limits.max_translate_inputs;
        if texts.is_empty() || texts.len() > max_inputs {
            return Err(ApiError::param(
                "input",
                format!("input must hold 1 to {max_inputs} texts, got {}", texts.len()),
            ));
        }
        let beam = match body.beam_size {
            None => None,
            Some(k) if (1..=16).contains(&k) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::param(
                    "beam_size",
                    format!("beam_size must be in 1..=16, got {k}"),
                ))
            }
        };
        let max_positions = ready.model.info().max_positions;
        let max_length = match body.max_length {
            None => None,
            Some(n) if n >= 1 && n as u64 <= max_positions as u64 => Some(n as usize),
            Some(n) => {
                return Err(ApiError::param(
                    "max_length",
                    format!("max_length must be in 1..={max_positions}, got {n}"),
                ))
            }
        };
        let _guard = app.admit()?;
        let opts = qkv::TranslateOptions {
            beam_size: beam,
            max_length,
            ..Default::default()
        };
        let (out, result) = oneshot::channel();
        if !tr.submit(TranslateJob { texts, opts, out }) {
            return Err(unavailable("the engine has stopped"));
        }
        let done = tokio::time::timeout(app.limits.request_timeout, result)
            .await
            .map_err(|_| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the translation timed out"))?
            .map_err(|_| ApiError::internal("the engine dropped the request"))?
            .map_err(ApiError::invalid)?;
        let data: Vec<_> = done
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"index": i, "text": t.text, "score": t.score, "tokens": t.tokens.len()}))
            .collect();
        let id = format!(
            "tr-{:x}{:06x}",
            app.created,
            app.next_id.fetch_add(1, Ordering::Relaxed)
        );
        Ok(
            axum::Json(json!({"id": id, "object": "translation", "created": now_s(), "model": app.name, "data": data}))
                .into_response(),
        )
    }
    .await;
    answered(&app, "translations", r)
}
