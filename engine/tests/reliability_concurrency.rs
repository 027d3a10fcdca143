//! One loaded model shared by many threads (issue 7 item 4): N concurrent generations and translations
//! give exactly the results of running them one after another (greedy and seeded sampling).

use std::sync::Arc;

use qkv::{GenerateOptions, Model, SampleParams, TranslateOptions, Translator};

/// Threads running requests at once.
const N_THREADS: usize = 8;
/// Requests per thread.
const N_PER_THREAD: usize = 6;

const fn assert_send_sync<T: Send + Sync>() {}
// Compile-time: the public handles can be shared between threads.
const _: () = assert_send_sync::<Model>();
const _: () = assert_send_sync::<Translator>();
const _: () = assert_send_sync::<qkv::llama::Llama>();
const _: () = assert_send_sync::<qkv::gpt2::Gpt2>();
const _: () = assert_send_sync::<qkv::seq2seq::Seq2Seq>();

const PROMPTS: [&str; 4] = ["Once upon a time", "The little dog", "Lily and Ben", "One day"];

/// Request `i`: a prompt and greedy or seeded sampling options.
fn gen_request(i: usize) -> (&'static str, GenerateOptions) {
    let opts = if i.is_multiple_of(2) {
        GenerateOptions::default()
    } else {
        GenerateOptions::sampled(SampleParams {
            temperature: 0.9,
            top_p: 0.9,
            top_k: 40,
            seed: i as u64,
            ..Default::default()
        })
    };
    (
        PROMPTS[i % PROMPTS.len()],
        GenerateOptions {
            max_new_tokens: 24 + i % 7,
            ..opts
        },
    )
}

#[test]
fn concurrent_generations_equal_sequential() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model stories260k");
    let model = Arc::new(Model::load(dir).unwrap());
    let n = N_THREADS * N_PER_THREAD;
    // One after another.
    let sequential: Vec<(Vec<u32>, String)> = (0..n)
        .map(|i| {
            let (p, o) = gen_request(i);
            let g = model.generate(p, &o).unwrap();
            (g.tokens, g.text)
        })
        .collect();
    // Sampled runs differ from greedy ones (the seeds do something).
    assert_ne!(sequential[0].0, sequential[PROMPTS.len() + 1].0);
    // All at once: thread t runs requests t, t + N_THREADS, ... (streamed, to exercise `stream` too).
    let handles: Vec<_> = (0..N_THREADS)
        .map(|t| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                (t..n)
                    .step_by(N_THREADS)
                    .map(|i| {
                        let (p, o) = gen_request(i);
                        let mut text = String::new();
                        let mut ids = vec![];
                        for ev in model.stream(p, &o).unwrap() {
                            let ev = ev.unwrap();
                            ids.push(ev.id);
                            text.push_str(&ev.text);
                        }
                        (i, ids, text)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for h in handles {
        for (i, ids, text) in h.join().expect("no thread panicked") {
            assert_eq!(ids, sequential[i].0, "request {i}: tokens");
            assert_eq!(text, sequential[i].1, "request {i}: text");
            checked += 1;
        }
    }
    assert_eq!(checked, n);
}

const WORDS: [&str; 6] = ["salam", "kitab", "madrasa", "bayt", "qalam", "shams"];

#[test]
fn concurrent_translations_equal_sequential() {
    let dir = loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model aren");
    let model = Arc::new(Translator::load(dir).unwrap());
    let opts = |i: usize| TranslateOptions {
        beam_size: Some(1 + i % 3),
        batch_size: 1 + i % 4,
        ..Default::default()
    };
    let input = |i: usize| -> Vec<&'static str> { (0..1 + i % 4).map(|j| WORDS[(i + j) % WORDS.len()]).collect() };
    let n = N_THREADS * N_PER_THREAD;
    let sequential: Vec<_> = (0..n).map(|i| model.translate(&input(i), &opts(i)).unwrap()).collect();
    let handles: Vec<_> = (0..N_THREADS)
        .map(|t| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                (t..n)
                    .step_by(N_THREADS)
                    .map(|i| (i, model.translate(&input(i), &opts(i)).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for h in handles {
        for (i, out) in h.join().expect("no thread panicked") {
            // Bit-exact: same tokens and the very same scores.
            assert_eq!(out, sequential[i], "request {i}");
            checked += 1;
        }
    }
    assert_eq!(checked, n);
}

#[test]
fn concurrent_marian_tiny_ids_equal_sequential() {
    let model = Arc::new(Translator::load(loaders::paths::fixture("marian-tiny")).unwrap());
    let vocab = model.model().config().src_vocab_size as u32;
    let src = move |i: usize| -> Vec<Vec<u32>> {
        (0..1 + i % 3)
            .map(|j| {
                (0..3 + (i + j) % 5)
                    .map(|k| ((i * 7 + j * 3 + k) as u32) % (vocab - 1))
                    .collect()
            })
            .collect()
    };
    let opts = |i: usize| TranslateOptions {
        beam_size: Some(1 + i % 2),
        max_length: Some(12),
        ..Default::default()
    };
    let n = N_THREADS * 4;
    let sequential: Vec<_> = (0..n)
        .map(|i| model.translate_ids(&src(i), &opts(i)).unwrap())
        .collect();
    let handles: Vec<_> = (0..N_THREADS)
        .map(|t| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                (t..n)
                    .step_by(N_THREADS)
                    .map(|i| (i, model.translate_ids(&src(i), &opts(i)).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for h in handles {
        for (i, out) in h.join().expect("no thread panicked") {
            assert_eq!(out, sequential[i], "request {i}");
            checked += 1;
        }
    }
    assert_eq!(checked, n);
}
