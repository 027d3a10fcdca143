//! The front door (issue 12): one `Model` for every family, `Session`s for step-by-step decoding, the KV cache cap
//! (`LoadOptions::max_cache_bytes`) reaching every cache, and errors that say whose problem it is.

use std::path::{Path, PathBuf};

use qkv::{
    Error, GenerateOptions, LoadOptions, LogitsFor, Model, ModelKind, TranslateOptions, DEFAULT_MAX_CACHE_BYTES,
};

/// Max |prefill logit - step-by-step logit|: the same math, but a prefill runs the projections as one GEMM over
/// every position and the steps as GEMVs, which sum in another order (f32 rounding of O(1) logits through a few
/// layers; stories260k logits are O(10): seen 3.6e-6).
const PREFILL_VS_STEPS_TOL: f32 = 1e-5;

fn stories() -> PathBuf {
    loaders::paths::shared_model("stories260k").expect("shared model stories260k")
}

fn aren() -> PathBuf {
    loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model aren-transliteration-ct2")
}

fn capped(dir: &Path, max_cache_bytes: usize) -> Model {
    let opts = LoadOptions {
        max_cache_bytes: Some(max_cache_bytes),
        ..Default::default()
    };
    Model::load_with(dir, &opts).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A cap above the default is the cap: a session that needs more than `DEFAULT_MAX_CACHE_BYTES` but less than the
/// cap is not refused at the default (before issue 12 the decoder-only caches were always checked against the
/// default). The caches are zeroed allocations that take memory only when written, so this costs address space,
/// not RSS; a machine that refuses that much address space fails the allocation (`limit: 0`), not the cap.
#[test]
fn cache_cap_above_the_default_is_honoured() {
    let m = Model::load(stories()).unwrap();
    let per_row = m.info().kv_bytes_per_position() * m.info().max_positions;
    let batch = DEFAULT_MAX_CACHE_BYTES / per_row + 1;
    let need = batch * per_row;
    assert!(need > DEFAULT_MAX_CACHE_BYTES);
    // The default refuses it, naming the limit.
    let e = m
        .session(batch, m.info().max_positions)
        .expect_err("above the default cap");
    assert!(
        matches!(e, Error::CacheMemory { bytes, limit, .. } if bytes == need && limit == DEFAULT_MAX_CACHE_BYTES),
        "{e}"
    );
    // A cap above it lets it through.
    let big = capped(&stories(), need + (1 << 20));
    match big.session(batch, big.info().max_positions) {
        Ok(s) => assert_eq!((s.batch(), s.capacity()), (batch, big.info().max_positions)),
        Err(Error::CacheMemory { limit: 0, what, .. }) => eprintln!("the OS refused the address space: {what}"),
        Err(e) => panic!("a cap of {} bytes refused {need} bytes: {e}", need + (1 << 20)),
    }
}

/// A cap below what a request needs refuses it before allocating, in every kind of session.
#[test]
fn cache_cap_below_the_need_is_refused() {
    let m = capped(&stories(), 1024);
    for e in [
        m.session(1, 8).expect_err("session"),
        m.generate("Once", &GenerateOptions::default()).expect_err("generate"),
    ] {
        assert!(matches!(e, Error::CacheMemory { limit: 1024, .. }), "{e}");
    }
    let t = capped(&aren(), 1024);
    for e in [
        t.translate(&["salam"], &TranslateOptions::default())
            .expect_err("translate"),
        t.encode(&[&[5, 6, 2]], 1, 64).expect_err("encode"),
    ] {
        assert!(matches!(e, Error::CacheMemory { limit: 1024, .. }), "{e}");
    }
    assert_eq!(t.max_cache_bytes(), 1024);
}

/// One model type for every family; the calls a kind does not offer are errors naming the architecture.
#[test]
fn one_model_for_every_family() {
    for (dir, arch, kind) in [
        (stories(), "llama", ModelKind::DecoderOnly),
        (loaders::paths::fixture("gpt2-tiny"), "gpt2", ModelKind::DecoderOnly),
        (
            loaders::paths::fixture("marian-tiny"),
            "marian",
            ModelKind::EncoderDecoder,
        ),
        (aren(), "ct2_transformer_seq2seq", ModelKind::EncoderDecoder),
    ] {
        let m = Model::load(&dir).unwrap();
        assert_eq!(
            (m.info().architecture, m.info().kind),
            (arch, kind),
            "{}",
            dir.display()
        );
        let wrong = match kind {
            ModelKind::DecoderOnly => m.encode(&[&[1, 2]], 1, 4).expect_err("encode on decoder-only"),
            ModelKind::EncoderDecoder => m.session(1, 4).expect_err("session on encoder-decoder"),
        };
        assert!(matches!(wrong, Error::Request(_)), "{wrong}");
        assert!(wrong.to_string().contains(arch), "{wrong}");
    }
}

/// What this engine does not run is `Error::Unsupported`, naming the file and the value.
#[test]
fn unsupported_configs_are_named() {
    for (key, value, expect) in [
        ("model_type", serde_json::json!("falcon"), "falcon"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "\"yarn\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        loaders::paths::copy_files(&stories(), dir.path()).unwrap();
        let path = dir.path().join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
        let e = Model::load(dir.path()).expect_err("unsupported");
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(expect) && text.contains("config.json"), "{text}");
    }
}

/// `LogitsFor::All` on a prefill gives, at every position, the logits that feeding the tokens one at a time gives;
/// for a decoder-only session and for teacher forcing an encoder-decoder one.
#[test]
fn prefill_logits_at_every_position_equal_the_steps() {
    let stories = Model::load(stories()).unwrap();
    let marian = Model::load(loaders::paths::fixture("marian-tiny")).unwrap();
    let start = marian.info().decoder_start_token_id.unwrap();
    let prompt: Vec<u32> = vec![1, 403, 407, 261, 378, 9, 60];
    let target: Vec<u32> = vec![start, 17, 42, 5, 99];
    let sources: [&[u32]; 2] = [&[3, 4, 5, 6, 0], &[7, 8, 0]];
    let mut worst = 0.0f32;
    for (m, tokens, batch) in [(&stories, &prompt, 1), (&marian, &target, 2)] {
        let vocab = m.info().vocab_size;
        let open = || match m.info().kind {
            ModelKind::DecoderOnly => m.session(batch, 16).unwrap(),
            ModelKind::EncoderDecoder => m.encode(&sources[..batch], batch, 16).unwrap(),
        };
        let n = tokens.len();
        let rows: Vec<u32> = (0..batch).flat_map(|_| tokens.iter().copied()).collect();
        let mut all = vec![0.0; batch * n * vocab];
        open().step(&rows, n, LogitsFor::All, &mut all).unwrap();
        let mut s = open();
        let mut last = vec![0.0; batch * vocab];
        for (t, &token) in tokens.iter().enumerate() {
            s.step(&vec![token; batch], 1, LogitsFor::Last, &mut last).unwrap();
            for b in 0..batch {
                let at = (b * n + t) * vocab;
                let diff = max_abs(&all[at..at + vocab], &last[b * vocab..(b + 1) * vocab]);
                assert!(
                    diff <= PREFILL_VS_STEPS_TOL,
                    "{} row {b} position {t}: {diff}",
                    m.info().architecture
                );
                worst = worst.max(diff);
            }
        }
        assert_eq!(s.len(), n);
    }
    eprintln!("prefill vs steps: max |diff| {worst:e}");
}
