//! The OpenAI wire format: request bodies (checked field by field), response bodies and chunks, error objects.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use qkv::{Generation, StopReason};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds, for 429 / 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field.
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::invalid(message)
        }
    }

    pub fn with_code(self, code: &'static str) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON object (also sent as an SSE event when a stream fails after it started).
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields shared by chat and completion requests (read from the same body as the endpoint's own
/// fields, not `flatten`ed into them: an error then names its field).
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    pub model: Option<String>,
    /// Signed, so that a negative value is refused by name rather than as a type error.
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    /// Not implemented: refused unless 0.
    pub frequency_penalty: Option<f32>,
    /// Not implemented: refused unless 0.
    pub presence_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// qkv's extension (as vLLM's): the generated ids in `choices[0].token_ids`, per chunk when streaming.
    #[serde(default)]
    pub return_token_ids: bool,
}

/// Put `ids` into `choices[0].token_ids` of a response or chunk.
pub fn with_token_ids(mut v: Value, ids: &[u32]) -> Value {
    if let Some(c) = v.pointer_mut("/choices/0").and_then(Value::as_object_mut) {
        c.insert("token_ids".into(), json!(ids));
    }
    v
}

/// A message's `content`: a string or a list of parts (`{"type": "text", "text": ...}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct TranslationRequest {
    pub model: Option<String>,
    pub input: Inputs,
    pub beam_size: Option<i64>,
    pub max_length: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn of(prompt_tokens: usize, g: &Generation) -> Self {
        Self {
            prompt_tokens,
            completion_tokens: g.tokens.len(),
            total_tokens: prompt_tokens + g.tokens.len(),
        }
    }
}

/// OpenAI's `finish_reason`: `stop` (EOS or a stop string) or `length`.
pub fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos | StopReason::StopString => "stop",
        StopReason::MaxTokens | StopReason::Length => "length",
    }
}

/// Which endpoint a response belongs to: it fixes the `object` names and where the text goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    pub fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        }
    }

    /// The whole response of a finished generation.
    pub fn response(self, id: &str, model: &str, created: u64, prompt_tokens: usize, g: &Generation) -> Value {
        let finish = finish_reason(g.stop_reason);
        let usage = Usage::of(prompt_tokens, g);
        match self {
            Endpoint::Chat => json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            }),
            Endpoint::Completion => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": g.text, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            }),
        }
    }

    /// One streamed chunk: `text` (and for chat, the role on the first chunk), or the finish reason.
    pub fn chunk(self, id: &str, model: &str, created: u64, delta: Delta<'_>) -> Value {
        let finish = match delta {
            Delta::Finish(r) => Value::from(finish_reason(r)),
            _ => Value::Null,
        };
        match self {
            Endpoint::Chat => {
                let d = match delta {
                    Delta::Role => json!({"role": "assistant", "content": ""}),
                    Delta::Text(t) => json!({"content": t}),
                    Delta::Finish(_) => json!({}),
                };
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]})
            }
            Endpoint::Completion => {
                let text = match delta {
                    Delta::Text(t) => t,
                    _ => "",
                };
                json!({"id": id, "object": "text_completion", "created": created, "model": model,
                       "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
            }
        }
    }

    /// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(self, id: &str, model: &str, created: u64, usage: Usage) -> Value {
        let object = match self {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage})
    }
}

/// What one chunk carries.
#[derive(Clone, Copy, Debug)]
pub enum Delta<'a> {
    Role,
    Text(&'a str),
    Finish(StopReason),
}
