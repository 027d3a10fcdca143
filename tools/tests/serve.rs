//! `qkv serve` end to end on a loopback port with the shared stories260k model: completions and chat completions
//! (streamed and not) give `Model::generate`'s greedy tokens; 16 concurrent requests each give their serial
//! result; the SSE framing; `/metrics` moves; every bad request gets its 4xx OpenAI error while a good request
//! completes beside it; a stalled half body times out; a client that disconnects mid-stream frees its sequence;
//! a full queue answers 429 with Retry-After; concurrent translations are grouped; SIGTERM drains.
//!
//! The HTTP client is a few lines over `TcpStream` (HTTP/1.1, `Connection: close`, chunked bodies decoded).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qkv::{GenerateOptions, Model, PromptFormat};
use serde_json::{json, Value};

/// A chat template for the copy of stories260k (which has none): the user's text after a marker, so the
/// server's chat path (messages -> template -> ids) is checked against `Model::generate` with `PromptFormat::Chat`.
const TEMPLATE: &str = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

fn stories() -> PathBuf {
    loaders::paths::shared_model("stories260k").expect("the shared stories260k model")
}

/// stories260k's files linked into a temporary directory, with a chat template added.
fn stories_with_template() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(stories()).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let cfg = json!({"chat_template": TEMPLATE});
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    dir
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0", "--threads", "2"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "the server exited before listening"
            );
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        let s = Self { child, addr };
        let t = Instant::now();
        while s.get("/health").0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(30), "not ready in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    fn raw(&self, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut s = self.connect();
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) and close before reading it all.
        let _ = s.write_all(body);
        read_response(&mut s)
    }

    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.raw(
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        )
    }

    fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.raw(&head, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, b) = self.post_bytes(path, body.to_string().as_bytes());
        (
            status,
            serde_json::from_slice(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b))),
        )
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = self.get("/metrics");
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, headers (raw) and the body (chunked transfer decoded) of a response read to EOF.
fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let raw = &all[split + 4..];
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(raw)
    } else {
        raw.to_vec()
    };
    (status, head, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

/// The `data:` payloads of an SSE body, checking the framing: every event is `data: ...` and a blank line.
fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("\n\n"), "an SSE body ends with a blank line: {text:?}");
    text.split_terminator("\n\n")
        .map(|ev| {
            let data = ev
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {ev:?}"));
            assert!(!data.contains('\n'), "one line per event");
            data.to_string()
        })
        .collect()
}

/// Concatenated text and token ids of a stream's chunks, its finish reason and usage (JSON chunks before `[DONE]`).
fn stream_result(events: &[String], chat: bool) -> (String, Vec<u32>, String, Option<Value>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "a stream ends with data: [DONE]"
    );
    let (mut text, mut ids, mut finish, mut usage) = (String::new(), vec![], String::new(), None);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        assert_eq!(v["object"], object);
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
            continue;
        }
        let c = &v["choices"][0];
        let t = if chat { &c["delta"]["content"] } else { &c["text"] };
        text.push_str(t.as_str().unwrap_or(""));
        if let Some(a) = c["token_ids"].as_array() {
            ids.extend(a.iter().map(|x| x.as_u64().unwrap() as u32));
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, ids, finish, usage)
}

fn greedy(model: &Model, prompt: &str, max: usize, format: PromptFormat) -> qkv::Generation {
    let opts = GenerateOptions {
        max_new_tokens: max,
        prompt_format: format,
        ..Default::default()
    };
    model.generate(prompt, &opts).unwrap()
}

fn finish_of(g: &qkv::Generation) -> &'static str {
    match g.stop_reason {
        qkv::StopReason::Eos | qkv::StopReason::StopString => "stop",
        _ => "length",
    }
}

fn ids_of(v: &Value) -> Vec<u32> {
    v["choices"][0]["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn serve_end_to_end() {
    let dir = stories_with_template();
    let model = Model::load(dir.path()).unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-seqs",
            "8",
            "--ctx",
            "256",
            "--body-timeout",
            "1",
            "--max-tokens-limit",
            "1000",
        ],
    );
    let name = dir.path().file_name().unwrap().to_string_lossy().to_string();

    // /v1/models
    let (status, _, body) = server.get("/v1/models");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["object"].as_str(), v["data"][0]["id"].as_str()),
        (200, Some("list"), Some(&*name))
    );

    // Completion, not streamed: Model::generate's greedy tokens and text, usage counts.
    let want = greedy(&model, "Once upon a time", 40, PromptFormat::Plain);
    let req = json!({"model": name, "prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "return_token_ids": true});
    let (status, v) = server.post("/v1/completions", &req);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(ids_of(&v), want.tokens);
    assert_eq!(v["choices"][0]["text"], want.text);
    assert_eq!(v["choices"][0]["finish_reason"], finish_of(&want));
    let n_prompt = model.prompt_ids("Once upon a time", PromptFormat::Plain).unwrap().len();
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": n_prompt, "completion_tokens": want.tokens.len(), "total_tokens": n_prompt + want.tokens.len()})
    );

    // The same, streamed.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (status, head, body) = server.post_bytes("/v1/completions", sreq.to_string().as_bytes());
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/event-stream"),
        "{head}"
    );
    let (text, ids, finish, usage) = stream_result(&sse_events(&body), false);
    assert_eq!(
        (text, ids, finish),
        (want.text.clone(), want.tokens.clone(), finish_of(&want).to_string())
    );
    assert_eq!(usage.unwrap()["completion_tokens"], want.tokens.len());

    // Chat, both ways: the messages through the chat template.
    let want = greedy(&model, "Tell me a story", 32, PromptFormat::Chat);
    let creq = json!({"model": name, "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 32, "temperature": 0, "return_token_ids": true});
    let (status, v) = server.post("/v1/chat/completions", &creq);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["object"].as_str(), v["choices"][0]["message"]["role"].as_str()),
        (Some("chat.completion"), Some("assistant"))
    );
    assert_eq!(v["choices"][0]["message"]["content"], want.text);
    assert_eq!(ids_of(&v), want.tokens);
    let mut creq_s = creq.clone();
    creq_s["stream"] = json!(true);
    let (_, _, body) = server.post_bytes("/v1/chat/completions", creq_s.to_string().as_bytes());
    let events = sse_events(&body);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, ids, _, usage) = stream_result(&events, true);
    assert_eq!((text, ids, usage), (want.text.clone(), want.tokens.clone(), None));

    // 16 concurrent greedy requests each equal their serial result.
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "{} went to the {}",
                ["Tom", "Lily", "Sam", "Max"][i % 4],
                ["park", "sea", "shop", "zoo"][i / 4]
            )
        })
        .collect();
    let serial: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| greedy(&model, p, 48, PromptFormat::Plain).tokens)
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    let req = json!({"prompt": p, "max_tokens": 48, "temperature": 0.0, "return_token_ids": true});
                    let (status, v) = server.post("/v1/completions", &req);
                    assert_eq!(status, 200, "{v}");
                    ids_of(&v)
                })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&serial) {
            assert_eq!(&h.join().unwrap(), want);
        }
    });

    // Every bad request gets its 4xx JSON error while a good one runs beside them.
    let long_prompt = "once upon a time ".repeat(200);
    std::thread::scope(|s| {
        let good = s.spawn(|| {
            server.post(
                "/v1/completions",
                &json!({"prompt": "Lily", "max_tokens": 200, "temperature": 0, "return_token_ids": true}),
            )
        });
        let bad: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
            (
                "malformed JSON",
                "/v1/completions",
                b"{\"prompt\": \"a\",".to_vec(),
                400,
                "invalid JSON",
            ),
            (
                "wrong type",
                "/v1/completions",
                br#"{"prompt": "a", "max_tokens": "ten"}"#.to_vec(),
                400,
                "max_tokens",
            ),
            (
                "wrong type of messages",
                "/v1/chat/completions",
                br#"{"messages": "hi"}"#.to_vec(),
                400,
                "messages",
            ),
            (
                "unknown model",
                "/v1/completions",
                br#"{"model": "gpt-9", "prompt": "a"}"#.to_vec(),
                404,
                "gpt-9",
            ),
            (
                "negative max_tokens",
                "/v1/completions",
                br#"{"prompt": "a", "max_tokens": -5}"#.to_vec(),
                400,
                "at least 1",
            ),
            (
                "absurd max_tokens",
                "/v1/completions",
                br#"{"prompt": "a", "max_tokens": 1000000000}"#.to_vec(),
                400,
                "limit of 1000",
            ),
            (
                "prompt beyond the context",
                "/v1/completions",
                json!({"prompt": long_prompt}).to_string().into_bytes(),
                400,
                "prompt tokens",
            ),
            (
                "empty messages",
                "/v1/chat/completions",
                br#"{"messages": []}"#.to_vec(),
                400,
                "at least one message",
            ),
            (
                "invalid UTF-8",
                "/v1/completions",
                b"{\"prompt\": \"a\xff\xfeb\"}".to_vec(),
                400,
                "invalid JSON",
            ),
            (
                "10 MB body",
                "/v1/completions",
                vec![b' '; 10 << 20],
                413,
                "larger than the limit",
            ),
            (
                "bad temperature",
                "/v1/completions",
                br#"{"prompt": "a", "temperature": 7}"#.to_vec(),
                400,
                "temperature",
            ),
            (
                "translation on a decoder-only model",
                "/v1/translations",
                br#"{"input": ["a"]}"#.to_vec(),
                400,
                "decoder-only",
            ),
        ];
        for (what, path, body, status, needle) in bad {
            let (got, _, b) = server.post_bytes(path, &body);
            let v: Value = serde_json::from_slice(&b)
                .unwrap_or_else(|_| panic!("{what}: not JSON: {:?}", String::from_utf8_lossy(&b)));
            assert_eq!(got, status, "{what}: {v}");
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no error object: {v}"));
            assert!(v["error"]["type"].is_string(), "{what}: {v}");
            assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        }
        // Half a body, then nothing: 408 after the body timeout (1 s), the connection answered.
        let mut s = server.connect();
        s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"prompt\": \"Once").unwrap();
        let (status, _, b) = read_response(&mut s);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(status, 408, "{v}");
        let (status, v) = good.join().unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(ids_of(&v), greedy(&model, "Lily", 200, PromptFormat::Plain).tokens);
    });

    // A client that disconnects mid-stream: its sequence is cancelled, running sequences return to 0.
    let mut s = server.connect();
    let body = json!({"prompt": "Once", "max_tokens": 900, "temperature": 0, "stream": true}).to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    while server.metric("qkv_running_sequences") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the streamed sequence never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(s);
    let t = Instant::now();
    while server.metric("qkv_running_sequences") != 0.0 || server.metric("qkv_requests_in_flight") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the disconnected sequence still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // /metrics moved.
    assert!(server.metric("qkv_requests_total{endpoint=\"completions\",status=\"200\"}") >= 19.0);
    assert!(server.metric("qkv_requests_total{endpoint=\"completions\",status=\"400\"}") >= 6.0);
    assert!(server.metric("qkv_generated_tokens_total") > 1000.0);
    assert!(server.metric("qkv_prompt_tokens_total") > 0.0);
    assert!(server.metric("qkv_time_to_first_token_seconds_count") >= 19.0);
    assert!(server.metric("qkv_inter_token_latency_seconds_count") > 500.0);
    let (_, _, body) = server.get("/metrics");
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("# TYPE qkv_time_to_first_token_seconds histogram"));

    // SIGTERM: a request in flight completes, then the server exits 0.
    let mut server = server;
    std::thread::scope(|s| {
        let inflight = s.spawn(|| {
            let req = json!({"prompt": "Sam", "max_tokens": 300, "temperature": 0, "stream": true});
            server.post_bytes("/v1/completions", req.to_string().as_bytes())
        });
        let t = Instant::now();
        while server.metric("qkv_running_sequences") < 1.0 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = server.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let (status, _, body) = inflight.join().unwrap();
        assert_eq!(status, 200);
        let (_, _, finish, _) = stream_result(&sse_events(&body), false);
        assert!(!finish.is_empty(), "the drained stream finished");
    });
    let code = server.child.wait().unwrap();
    assert!(code.success(), "{code:?}");
}

#[test]
fn full_queue_answers_429_with_retry_after() {
    let server = Server::start(&stories(), &["--max-seqs", "1", "--max-queue", "0"]);
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            server.post(
                "/v1/completions",
                &json!({"prompt": "Once", "max_tokens": 400, "temperature": 0}),
            )
        });
        let t = Instant::now();
        while server.metric("qkv_requests_in_flight") < 1.0 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(2));
        }
        let (status, head, body) = server.post_bytes("/v1/completions", br#"{"prompt": "a"}"#);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 429, "{v}");
        assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(long.join().unwrap().0, 200);
    });
}

#[test]
fn a_request_over_its_time_is_a_504_and_frees_its_row() {
    // 50 ms for ~500 tokens of stories260k (its whole context): far more than this takes on any machine.
    let server = Server::start(&stories(), &["--request-timeout", "0.05"]);
    let req = json!({"prompt": "Once", "max_tokens": 1000, "temperature": 0});
    let (status, v) = server.post("/v1/completions", &req);
    assert_eq!(status, 504, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--request-timeout"),
        "{v}"
    );
    // Streamed: the error arrives as an event, then the stream ends.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (status, _, body) = server.post_bytes("/v1/completions", sreq.to_string().as_bytes());
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["type"], "timeout", "{err}");
    let t = Instant::now();
    while server.metric("qkv_running_sequences") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the timed-out sequences still run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Wrong method and unknown route: JSON errors too.
    let (status, _, body) = server.get("/v1/completions");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (405, Some("invalid_request_error"))
    );
    let (status, _, body) = server.get("/v2/nothing");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 404, "{v}");
}

#[test]
fn concurrent_translations_are_grouped() {
    let dir = loaders::paths::shared_model("aren-transliteration-ct2").expect("the shared aren model");
    let model = Model::load(&dir).unwrap();
    let server = Server::start(&dir, &["--translate-wait-ms", "50"]);
    let words = ["محمد", "علي", "فاطمة", "حسن", "مريم", "يوسف"];
    std::thread::scope(|s| {
        let handles: Vec<_> = words
            .iter()
            .map(|w| {
                let server = &server;
                s.spawn(move || server.post("/v1/translations", &json!({"input": [w], "beam_size": 2})))
            })
            .collect();
        for (h, w) in handles.into_iter().zip(words) {
            let (status, v) = h.join().unwrap();
            assert_eq!(status, 200, "{v}");
            let opts = qkv::TranslateOptions {
                beam_size: Some(2),
                ..Default::default()
            };
            let want = &model.translate(&[w], &opts).unwrap()[0];
            assert_eq!(v["data"][0]["text"], want.text.as_str(), "{w}");
        }
    });
    // Fewer translate calls than requests: they were grouped.
    let calls = server.metric("qkv_translate_batch_sources_count");
    assert!((1.0..6.0).contains(&calls), "{calls} translate calls for 6 requests");
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "a"}));
    assert_eq!(status, 400, "{v}");
}
