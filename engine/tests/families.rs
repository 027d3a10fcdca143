//! The decoder-only families (Qwen2/2.5, Llama 3 RoPE scaling, Qwen3, Mistral, Phi-3, Gemma 2, Gemma 3) against
//! Hugging Face transformers on random-weight models made from their published configs
//! (tools/scripts/make_family_fixtures.py; tools/fixtures/families/README.md): the logits at every prompt
//! position and at every one of 40 greedy steps, the greedy tokens, and beam-4 search, on every ISA of this CPU.
//! The weights are not committed: they are rebuilt here from the hash formula the script used. The references
//! keep, per position, HF's top-64 logits with their ids, the logits of 64 fixed probe ids and the row's
//! log-sum-exp (a published vocabulary of 150k+ rows is not stored whole).

mod decoder_support;
#[path = "hash_weights/mod.rs"]
mod hash_weights;

use std::path::PathBuf;

use decoder_support::{check_greedy_by, ids, json, load_on, max_abs, open, Rows};
use qkv::{GenerateOptions, LogitsFor, PromptFormat};

/// Max-abs difference allowed between our logits and HF's: both compute in f32 (our reference kernels and HF's
/// differ only in summation order), and the logits here have std ~3 and |max| ≲ 15, so rounding differences
/// stay near 1e-5; 1e-4 is the bound.
const LOGITS_TOL: f32 = 1e-4;

/// The fixture's model directory, its weights rebuilt into a directory of the target dir of this call's own
/// (tests run in parallel; each removes its directory when done).
fn model_dir(name: &str) -> (PathBuf, serde_json::Value) {
    hash_weights::fixture_model_dir(
        &loaders::paths::fixture("families").join(name),
        &format!("families-{name}"),
    )
}

/// The fixture's HF outputs.
fn references(name: &str) -> loaders::safetensors::SafeTensors {
    open(
        &loaders::paths::fixture("families")
            .join(name)
            .join("reference.safetensors"),
    )
}

/// Prefill logits at every prompt position, then 40 greedy steps one token at a time, on every ISA.
fn check_family(name: &str) {
    let (dir, meta) = model_dir(name);
    check_against_hf(name, &dir, &meta);
    check_text(name, &dir, &meta);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Text in, text out through the fixture's word-level tokenizer (its published special tokens; every other id a
/// word): the prompt's text encodes to the fixture prompt's ids as transformers' tokenizer encodes it, and
/// `generate` returns the 40 greedy tokens and the text they add to the prompt as transformers decodes it
/// (`decode(prompt + greedy)` past `decode(prompt)`, special tokens skipped: what its TextStreamer prints).
fn check_text(name: &str, dir: &std::path::Path, meta: &serde_json::Value) {
    let m = load_on(dir, kernels::Kernels::detect().unwrap());
    let t = &meta["text"];
    let prompt = t["prompt"].as_str().unwrap();
    let want = ids(&t["input_ids"]);
    assert_eq!(want, ids(&meta["prompt"]), "{name}: the fixture's text is its prompt");
    assert_eq!(
        m.prompt_ids(prompt, PromptFormat::Plain).unwrap(),
        want,
        "{name}: prompt ids"
    );
    let greedy = ids(&meta["greedy_tokens"]);
    let opts = GenerateOptions {
        max_new_tokens: greedy.len(),
        ..Default::default()
    };
    let g = m.generate(prompt, &opts).unwrap();
    assert_eq!(g.tokens, greedy, "{name}: generate's tokens");
    assert_eq!(g.text, t["greedy_text"].as_str().unwrap(), "{name}: generate's text");
}

/// The model in `dir` against the fixture's HF references (`meta`: its reference.json).
fn check_against_hf(name: &str, dir: &std::path::Path, meta: &serde_json::Value) {
    let refs = references(name);
    let prompt = ids(&meta["prompt"]);
    let greedy = ids(&meta["greedy_tokens"]);
    let want_prompt = Rows::load(&refs, "prompt");
    let want_steps = Rows::load(&refs, "greedy_step");
    assert_eq!(
        (want_prompt.len(), want_steps.len()),
        (prompt.len(), greedy.len()),
        "{name}: reference rows"
    );
    for k in kernels::testing::kernels(&format!("families::{name}")) {
        let m = load_on(dir, k);
        let vocab = m.info().vocab_size;
        let cap = prompt.len() + greedy.len();
        let mut s = m.session(1, cap).unwrap();
        let mut all = vec![0.0; prompt.len() * vocab];
        s.step(&prompt, prompt.len(), LogitsFor::All, &mut all).unwrap();
        let what = format!("{name} on {}", k.isa());
        let diff = (0..prompt.len())
            .map(|r| want_prompt.check(&format!("{what} prefill"), r, &all[r * vocab..][..vocab], LOGITS_TOL))
            .fold(0.0f32, f32::max);
        let mut s = m.session(1, cap).unwrap();
        let worst = check_greedy_by(
            &what,
            vocab,
            |t, l| s.step(t, t.len(), LogitsFor::Last, l).unwrap(),
            &prompt,
            &greedy,
            |t, l| Some(want_steps.check(&format!("{what} greedy step"), t, l, LOGITS_TOL)),
        );
        eprintln!(
            "{name} on {}: prefill max-abs {diff:.2e}, greedy steps max-abs {worst:.2e}",
            k.isa()
        );
    }
}

#[test]
fn qwen2_matches_hf() {
    check_family("qwen2");
}

#[test]
fn llama3_rope_scaling_matches_hf() {
    check_family("llama3");
}

#[test]
fn qwen3_matches_hf() {
    check_family("qwen3");
}

/// 8 prompt + 40 generated positions over a 16-position window.
#[test]
fn mistral_sliding_window_matches_hf() {
    check_family("mistral");
}

/// Fused projections and LongRoPE's short factors and attention factor (the long ones: `models/rope.rs` tests).
#[test]
fn phi3_matches_hf() {
    check_family("phi3");
}

#[test]
fn gemma2_matches_hf() {
    check_family("gemma2");
}

#[test]
fn gemma3_matches_hf() {
    check_family("gemma3");
}

/// The family's model as the GGUF llama.cpp's converter made of it (tools/scripts/make_family_gguf.py, --outtype
/// f32), rebuilt byte for byte: the committed `model.gguf.head` (header, metadata, tensor infos), then each
/// tensor made from the hash-initialised HF weights by the transform the script found for it (`gguf.json`); the
/// file's FNV-1a 64 must be the converter's. Then qkv's importer turns it into a HF directory, and the logits
/// must be HF's on the safetensors model (the same references as the safetensors test). llama.cpp ran the same
/// file (llama-cpp-python): where it runs the family in full, its 40 greedy tokens were HF's, hence qkv's.
fn check_family_gguf(name: &str) {
    let (dir, meta) = model_dir(name);
    let fixture = loaders::paths::fixture("families").join(name);
    let g = json(&fixture.join("gguf.json"));
    let mut file = gguf_head(&fixture, &g);
    assert_eq!(
        file.len() as u64,
        g["data_offset"].as_u64().unwrap(),
        "{name}: model.gguf.head"
    );
    file.resize(g["file_len"].as_u64().unwrap() as usize, 0);
    let hf: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> = hash_weights::hash_init_tensors(&meta)
        .into_iter()
        .map(|(n, shape, v)| (n, (shape, v)))
        .collect();
    let config = json(&fixture.join("config.json"));
    for t in g["tensors"].as_array().unwrap() {
        let (source, transform) = (t["source"].as_str().unwrap(), t["transform"].as_str().unwrap());
        let values: Vec<f32> = match transform.split_once(':') {
            _ if transform == "config" => {
                let key = source.strip_prefix("rope_scaling.").unwrap();
                serde_json::from_value(config["rope_scaling"][key].clone()).unwrap()
            }
            // Llama 3's rope_freqs.weight: the converter's values, as recorded (the hash below checks them)
            _ if transform == "values" => serde_json::from_value(t["values"].clone()).unwrap(),
            _ if transform == "copy" => hf[source].1.clone(),
            _ if transform == "plus_one" => hf[source].1.iter().map(|v| v + 1.0).collect(),
            Some(("permute", heads)) => {
                let (shape, v) = &hf[source];
                llama_cpp_permute(v, heads.parse().unwrap(), shape[0], shape[1])
            }
            _ => panic!("{name}: unknown transform {transform}"),
        };
        assert_eq!(values.len() as u64, t["n"].as_u64().unwrap(), "{name}: {}", t["name"]);
        let at = (g["data_offset"].as_u64().unwrap() + t["offset"].as_u64().unwrap()) as usize;
        for (i, v) in values.iter().enumerate() {
            file[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let want = u64::from_str_radix(g["fnv1a64"].as_str().unwrap(), 16).unwrap();
    assert_eq!(
        hash_weights::fnv1a64(&file),
        want,
        "{name}: the rebuilt GGUF is not the converter's"
    );
    let gguf = dir.join("model.gguf");
    std::fs::write(&gguf, &file).unwrap();
    drop(file);
    let imported = dir.join("imported");
    std::fs::create_dir_all(&imported).unwrap();
    loaders::gguf::import_to_hf_dir(&gguf, &imported, &loaders::gguf::ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    std::fs::remove_file(&gguf).unwrap();
    check_against_hf(name, &imported, &meta);
    let llama_cpp = &g["llama_cpp"];
    if LLAMA_CPP_RUNS.contains(&name) {
        assert_eq!(
            ids(&llama_cpp["greedy_tokens"]),
            ids(&meta["greedy_tokens"]),
            "{name}: llama.cpp's greedy tokens on this GGUF (gguf.json) are not HF's"
        );
    } else {
        eprintln!("{name}: llama.cpp does not run this GGUF as HF does: {llama_cpp}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The committed `model.gguf.head` with, where `gguf.json` has a `vocab` (a published vocabulary: its metadata
/// would be megabytes), the token arrays the script's placeholder vocabulary wrote put back at their offsets:
/// token `i` is `w{i}` with score `-i` and type normal (1), control (3) for the `control` ids.
fn gguf_head(fixture: &std::path::Path, g: &serde_json::Value) -> Vec<u8> {
    let mut head = std::fs::read(fixture.join("model.gguf.head")).unwrap();
    let Some(v) = g.get("vocab") else {
        return head;
    };
    let n = v["n"].as_u64().unwrap() as u32;
    let control = ids(&v["control"]);
    // in increasing order of their offsets in the whole file: each lands where the converter wrote it
    for s in v["splices"].as_array().unwrap() {
        let bytes: Vec<u8> = match s["what"].as_str().unwrap() {
            "token_names" => (0..n)
                .flat_map(|i| {
                    let name = format!("w{i}");
                    let mut b = (name.len() as u64).to_le_bytes().to_vec();
                    b.extend_from_slice(name.as_bytes());
                    b
                })
                .collect(),
            "token_scores" => (0..n).flat_map(|i| (-(i as f32)).to_le_bytes()).collect(),
            "token_types" => (0..n)
                .flat_map(|i| (if control.contains(&i) { 3i32 } else { 1 }).to_le_bytes())
                .collect(),
            other => panic!("gguf.json: unknown splice {other}"),
        };
        let at = s["at"].as_u64().unwrap() as usize;
        head.splice(at..at, bytes);
    }
    head
}

/// The families llama.cpp runs as transformers does from these GGUFs. Not: mistral (llama.cpp's `llama` has no
/// sliding window; it agrees for the positions within the window), gemma2 (llama.cpp ties Gemma 2's head to the
/// embeddings and refuses the fixture's own `output.weight`) and qwen2 (llama.cpp's `qwen2` wants q/o projections
/// of hidden x hidden, and refuses the fixture's 14 x 64 heads on a hidden size of 224).
const LLAMA_CPP_RUNS: [&str; 4] = ["llama3", "qwen3", "phi3", "gemma3"];

/// llama.cpp's converter's q/k permutation (`LlamaModel.permute`): within each head, HF row `s * half + i`
/// becomes row `2i + s`.
fn llama_cpp_permute(v: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let (hd, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                let (from, to) = (h * hd + s * half + i, h * hd + 2 * i + s);
                out[to * cols..][..cols].copy_from_slice(&v[from * cols..][..cols]);
            }
        }
    }
    out
}

#[test]
fn qwen2_gguf_matches_hf() {
    check_family_gguf("qwen2");
}

/// Llama 3's scaled RoPE as llama.cpp's `rope_freqs.weight`, imported as per-frequency divisors.
#[test]
fn llama3_gguf_matches_hf() {
    check_family_gguf("llama3");
}

#[test]
fn qwen3_gguf_matches_hf() {
    check_family_gguf("qwen3");
}

/// Converted as arch `llama`, with `llama.attention.sliding_window` (see make_family_gguf.py).
#[test]
fn mistral_gguf_matches_hf() {
    check_family_gguf("mistral");
}

/// Fused `attn_qkv` and `ffn_up` (gate|up), LongRoPE factors as tensors.
#[test]
fn phi3_gguf_matches_hf() {
    check_family_gguf("phi3");
}

/// Norms stored as 1 + w, soft-capping and window keys.
#[test]
fn gemma2_gguf_matches_hf() {
    check_family_gguf("gemma2");
}

/// q/k norms, local RoPE base, the sliding pattern key.
#[test]
fn gemma3_gguf_matches_hf() {
    check_family_gguf("gemma3");
}

/// Positions of the long-sequence test of the windowed caches: 12.5 windows of the fixtures' 16.
const LONG: usize = 200;

/// The sliding-window cache (engine/src/cache.rs) on a sequence of [`LONG`] positions, far past the 16-position
/// window: fed one token at a time (and in ragged chunks of 1-23), whose windowed layers keep 2 windows, the logits
/// at every position equal those of one prefill step over the whole sequence, whose caches hold every position
/// (as an unbounded cache does), on every ISA. `windowed` is how many layers slide. The HF checks above cover 48
/// positions (three windows) through the same bounded cache.
fn check_windowed_cache(name: &str, windowed: usize) {
    let (dir, meta) = model_dir(name);
    let window = json(&loaders::paths::fixture("families").join(name).join("config.json"))["sliding_window"]
        .as_u64()
        .unwrap() as usize;
    let bos = ids(&meta["prompt"])[0];
    for k in kernels::testing::kernels(&format!("families::{name} windowed cache")) {
        let m = load_on(&dir, k);
        let (vocab, info) = (m.info().vocab_size, m.info().clone());
        let tokens: Vec<u32> = std::iter::once(bos)
            .chain((1..LONG).map(|i| 3 + (i as u32 * 37 + 11) % (vocab as u32 - 3)))
            .collect();
        // One step over everything: every position held.
        let mut all = vec![0.0; LONG * vocab];
        let mut s = m.session(1, LONG).unwrap();
        s.step(&tokens, LONG, LogitsFor::All, &mut all).unwrap();
        let per_layer_position = info.kv_bytes_per_position() / info.n_layers;
        assert_eq!(s.kv_bytes(), info.n_layers * LONG * per_layer_position);
        // Single tokens, then chunks: the windowed layers hold 2 windows, or, after a step of n > w + 1 positions,
        // the w - 1 before it and its own (they never shrink back).
        let bounded = |slots: usize| ((info.n_layers - windowed) * LONG + windowed * slots) * per_layer_position;
        for chunks in [vec![1; LONG], [5, 1, 23, 1, 1, 16, 17, 2, 1].repeat(4)] {
            let mut s = m.session(1, LONG).unwrap();
            let (mut at, mut worst, mut slots) = (0, 0.0f32, 2 * window);
            for &n in chunks.iter().chain(std::iter::repeat(&1)) {
                let n = n.min(LONG - at);
                if n == 0 {
                    break;
                }
                let mut got = vec![0.0; n * vocab];
                s.step(&tokens[at..at + n], n, LogitsFor::All, &mut got).unwrap();
                worst = worst.max(max_abs(&got, &all[at * vocab..(at + n) * vocab]));
                at += n;
                slots = slots.max(window - 1 + n);
                assert!(
                    s.kv_bytes() <= bounded(slots),
                    "{name} on {}: {} KV bytes after {at} positions",
                    k.isa(),
                    s.kv_bytes()
                );
                if chunks[0] == 1 && chunks.len() == LONG {
                    assert_eq!(s.kv_bytes(), bounded(2 * window), "{name} on {}", k.isa());
                }
            }
            assert!(
                worst <= LOGITS_TOL,
                "{name} on {}: windowed cache logits differ by {worst}",
                k.isa()
            );
            eprintln!(
                "{name} on {}: {LONG} positions, window {window}, {} KV bytes (unbounded {}), max-abs {worst:.2e}",
                k.isa(),
                s.kv_bytes(),
                info.n_layers * LONG * per_layer_position
            );
        }
        // Ragged steps (the scheduler: three sequences of their own lengths, prompts fed in chunks between the
        // others' decoding) read each row's own window: the same greedy tokens as one sequence at a time.
        let opts = qkv::GenerateOptions {
            max_new_tokens: 3 * window,
            ..Default::default()
        };
        let prompts: Vec<Vec<u32>> = [5, 2 * window + 3, 3 * window].map(|n| tokens[..n].to_vec()).into();
        let batch = qkv::BatchOptions {
            prefill_chunk: 7,
            ..Default::default()
        };
        let together = m.generate_batch_ids(&prompts, &opts, batch).unwrap();
        for (p, g) in prompts.iter().zip(&together) {
            let alone = m.stream_ids(p.clone(), &opts).unwrap().run().unwrap();
            assert_eq!(g.tokens, alone.tokens, "{name} on {}: ragged vs alone", k.isa());
        }
        let lens: Vec<usize> = together.iter().map(|g| g.tokens.len()).collect();
        eprintln!("{name} on {}: ragged generations of {lens:?} tokens", k.isa());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistral_windowed_cache_matches_unbounded() {
    check_windowed_cache("mistral", 2);
}

/// One local layer (bounded), one global (every position).
#[test]
fn gemma_windowed_caches_match_unbounded() {
    check_windowed_cache("gemma2", 1);
    check_windowed_cache("gemma3", 1);
}

/// Score difference allowed against transformers' `sequences_scores`: a sum of 16 log-probabilities, each
/// within the logits' tolerance of HF's (log-softmax moves by at most twice the largest logit difference), over
/// the generated length.
const SCORE_TOL: f32 = 2.0 * LOGITS_TOL;

/// Smallest per-token distance from a tie the beam fixtures must have (tools/scripts/beam_margin.py): each
/// log-probability is within 2 x LOGITS_TOL of HF's, so two candidates' per-token scores move by at most twice that
/// relative to each other; a search whose decisions all clear this bound must come out exactly as HF's did. (A
/// random-weight model's beams crowd together: an earlier fixture had a tie HF and our AVX2 path broke differently.)
const BEAM_MIN_MARGIN: f64 = 4.0 * LOGITS_TOL as f64;

/// Decoder-only beam search (4 beams, 16 new tokens, transformers' defaults) against `generate(num_beams=4,
/// num_return_sequences=4)`: the four hypotheses, in order, and their scores, on every ISA this CPU has.
fn check_beam(name: &str) {
    let (dir, meta) = model_dir(name);
    let b = &meta["beam"];
    let margin = b["min_margin"].as_f64().unwrap();
    assert!(
        margin >= BEAM_MIN_MARGIN,
        "{name}: the beam fixture is {margin} from a tie, under {BEAM_MIN_MARGIN} (regenerate it)"
    );
    let prompt = ids(&b["prompt"]);
    let eos = ids(&meta["eos_token_id"]);
    let want: Vec<Vec<u32>> = b["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            // HF pads a beam that ended early; keep it up to its EOS.
            let s = ids(s);
            match s.iter().position(|t| eos.contains(t)) {
                Some(e) => s[..=e].to_vec(),
                None => s,
            }
        })
        .collect();
    let scores: Vec<f32> = serde_json::from_value(b["scores"].clone()).unwrap();
    let n_beams = b["num_beams"].as_u64().unwrap() as usize;
    for k in kernels::testing::kernels(&format!("families::{name} beam")) {
        let m = load_on(&dir, k);
        let opts = qkv::search::SearchOptions {
            num_return_sequences: n_beams,
            ..m.beam_options(n_beams, b["max_new_tokens"].as_u64().unwrap() as usize)
        };
        let hyps = m.generate_beam_ids(&prompt, &opts).unwrap();
        let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
        assert_eq!(got, want, "{name} on {}: beam hypotheses", k.isa());
        for (h, s) in hyps.iter().zip(&scores) {
            assert!(
                (h.score - s).abs() <= SCORE_TOL,
                "{name} on {}: score {} vs HF {s}",
                k.isa(),
                h.score
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qwen2_beam_matches_hf() {
    check_beam("qwen2");
}

#[test]
fn llama3_beam_matches_hf() {
    check_beam("llama3");
}

#[test]
fn qwen3_beam_matches_hf() {
    check_beam("qwen3");
}

#[test]
fn mistral_beam_matches_hf() {
    check_beam("mistral");
}

#[test]
fn phi3_beam_matches_hf() {
    check_beam("phi3");
}

#[test]
fn gemma2_beam_matches_hf() {
    check_beam("gemma2");
}

#[test]
fn gemma3_beam_matches_hf() {
    check_beam("gemma3");
}

/// Max relative |ours - HF| of a next-token probability from the attention recording path (issue #13): the
/// recording pass's logits are within LOGITS_TOL of HF's, so log p = l - logsumexp(l) moves by at most
/// 2 x LOGITS_TOL, and p by that fraction of itself.
const RECORDED_PROB_REL_TOL: f64 = 2e-4;

/// |Σ p - 1| of a recorded attention row: the recording path sums in f64 and rounds each probability once to f32
/// (2^-24 relative each, at most 48 keys here), far inside this bound; the same bound as engine/tests/attention.rs.
const ROW_SUM_TOL: f64 = 1e-6;

/// The attention recording path on every rotary family (sliding windows and soft-capping included): one pass
/// over the prompt whose next-token probabilities are HF's, attention rows that sum to 1 and future keys exactly
/// 0.
#[test]
fn attention_recording_matches_hf_on_every_family() {
    for name in ["qwen2", "llama3", "qwen3", "mistral", "phi3", "gemma2", "gemma3"] {
        let (dir, meta) = model_dir(name);
        let refs = references(name);
        let prompt = ids(&meta["prompt"]);
        let m = qkv::Model::load(&dir).unwrap();
        let rows = Rows::load(&refs, "prompt");
        let last = prompt.len() - 1;
        let trace = m.explain_ids(&prompt, m.info().n_layers - 1, 0).unwrap();
        for (_, id, p) in &trace.top_next {
            let l = rows
                .logit(last, *id)
                .unwrap_or_else(|| panic!("{name}: next token {id} is not among HF's top ones"));
            let want = (l as f64 - rows.lse[last] as f64).exp();
            assert!(
                (p - want).abs() <= RECORDED_PROB_REL_TOL * want,
                "{name}: p(next = {id}) {p} vs HF {want}"
            );
        }
        let maps = m.attention_ids(&prompt).unwrap().self_attention;
        let [layers, heads, n, _] = maps.shape();
        for (l, h, q) in (0..layers).flat_map(|l| (0..heads).flat_map(move |h| (0..n).map(move |q| (l, h, q)))) {
            let row = maps.row(l, h, q);
            let s: f64 = row.iter().map(|&p| p as f64).sum();
            assert!((s - 1.0).abs() < ROW_SUM_TOL, "{name} {l}/{h}/{q}: sums to {s}");
            assert!(
                row[q + 1..].iter().all(|&p| p == 0.0),
                "{name} {l}/{h}/{q}: sees a future key"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
