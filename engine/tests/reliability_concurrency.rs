//! One loaded model shared by many threads (issue 7 item 4): N concurrent generations and translations
//! give exactly the results of running them one after another (greedy and seeded sampling).

use qkv::{GenerateOptions, Model, SampleParams, Session, TranslateOptions};

/// Threads running requests at once.
const N_THREADS: usize = 8;
/// Requests per thread.
const N_PER_THREAD: usize = 6;

const fn assert_send_sync<T: Send + Sync>() {}
// Compile-time: the public handles can be shared between threads.
const _: () = assert_send_sync::<Model>();
const _: () = assert_send_sync::<Session<'static>>();

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

/// Run requests `0..sequential.len()` on N_THREADS threads at once (thread t takes t, t + N_THREADS, ...) and
/// check that each result equals `sequential[i]`, computed one after another, bit for bit.
fn check_concurrent_equals_sequential<T: PartialEq + std::fmt::Debug + Send>(
    sequential: &[T],
    run: impl Fn(usize) -> T + Sync,
) {
    let n = sequential.len();
    let run = &run;
    let results: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N_THREADS)
            .map(|t| s.spawn(move || (t..n).step_by(N_THREADS).map(|i| (i, run(i))).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("no thread panicked"))
            .collect()
    });
    for (i, out) in &results {
        assert_eq!(out, &sequential[*i], "request {i}");
    }
    assert_eq!(results.len(), n);
}

#[test]
fn concurrent_generations_equal_sequential() {
    let dir = loaders::paths::shared_model("stories260k").expect("shared model stories260k");
    let model = Model::load(dir).unwrap();
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
    // All at once, streamed (to exercise `stream` too).
    check_concurrent_equals_sequential(&sequential, |i| {
        let (p, o) = gen_request(i);
        let mut text = String::new();
        let mut ids = vec![];
        for ev in model.stream(p, &o).unwrap() {
            let ev = ev.unwrap();
            ids.push(ev.id);
            text.push_str(&ev.text);
        }
        (ids, text)
    });
}

const WORDS: [&str; 6] = ["salam", "kitab", "madrasa", "bayt", "qalam", "shams"];

#[test]
fn concurrent_translations_equal_sequential() {
    let dir = loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model aren");
    let model = Model::load(dir).unwrap();
    let opts = |i: usize| TranslateOptions {
        beam_size: Some(1 + i % 3),
        batch_size: 1 + i % 4,
        ..Default::default()
    };
    let input = |i: usize| -> Vec<&'static str> { (0..1 + i % 4).map(|j| WORDS[(i + j) % WORDS.len()]).collect() };
    let n = N_THREADS * N_PER_THREAD;
    let sequential: Vec<_> = (0..n).map(|i| model.translate(&input(i), &opts(i)).unwrap()).collect();
    // Bit-exact: same tokens and the very same scores.
    check_concurrent_equals_sequential(&sequential, |i| model.translate(&input(i), &opts(i)).unwrap());
}

#[test]
fn concurrent_marian_tiny_ids_equal_sequential() {
    let model = Model::load(loaders::paths::fixture("marian-tiny")).unwrap();
    let vocab = model.info().src_vocab_size as u32;
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
    check_concurrent_equals_sequential(&sequential, |i| model.translate_ids(&src(i), &opts(i)).unwrap());
}
