//! Soak (issue 7 item 5): thousands of short requests on one loaded model must not grow memory.
//! RSS (from /proc/self/statm) after a warm-up is compared with RSS at the end.

use std::time::Instant;

use qkv::{GenerateOptions, Model, SampleParams, TranslateOptions};

/// Short generations on stories260k.
const N_GENERATIONS: usize = 2000;
/// Translations (small batches) on aren-transliteration-ct2.
const N_TRANSLATIONS: usize = 500;
/// Requests run before the first RSS reading (allocator pools, scratch buffers, rayon threads).
const N_WARMUP: usize = 100;
/// Allowed RSS growth between warm-up and end. A leak of one KV cache per generation (stories260k,
/// 40 positions x 5 layers x 2 x 4 heads x 8 x 4 B = 51 KiB) would add ~100 MiB over 2000 generations.
const RSS_GROWTH_TOLERANCE_BYTES: i64 = 4 << 20;

/// Resident set size of this process, in bytes.
fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Linux x86-64 pages are 4 KiB.
    pages * 4096
}

const PROMPTS: [&str; 3] = ["Once upon a time", "The cat", "Tom had a ball"];
const WORDS: [&str; 5] = ["salam", "kitab", "madrasa", "bayt", "qalam"];

#[test]
fn soak_memory_does_not_grow() {
    let t0 = Instant::now();
    let model = Model::load(loaders::paths::shared_model("stories260k").expect("shared model")).unwrap();
    let translator =
        Model::load(loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model")).unwrap();
    let generate = |i: usize| {
        let strategy = if i.is_multiple_of(2) {
            qkv::Strategy::Greedy
        } else {
            qkv::Strategy::Sample(SampleParams {
                seed: i as u64,
                top_p: 0.9,
                ..Default::default()
            })
        };
        let opts = GenerateOptions {
            max_new_tokens: 8 + i % 8,
            strategy,
            ..Default::default()
        };
        let g = model.generate(PROMPTS[i % PROMPTS.len()], &opts).unwrap();
        assert!(!g.tokens.is_empty() && g.tokens.len() <= opts.max_new_tokens);
    };
    let translate = |i: usize| {
        let words: Vec<&str> = (0..1 + i % 3).map(|j| WORDS[(i + j) % WORDS.len()]).collect();
        let opts = TranslateOptions {
            beam_size: Some(1 + i % 4),
            ..Default::default()
        };
        let out = translator.translate(&words, &opts).unwrap();
        assert_eq!(out.len(), words.len());
    };
    // Warm up both paths, then measure.
    for i in 0..N_WARMUP {
        generate(i);
        translate(i);
    }
    let rss_start = rss_bytes();
    for i in N_WARMUP..N_GENERATIONS {
        generate(i);
    }
    for i in N_WARMUP..N_TRANSLATIONS {
        translate(i);
    }
    let rss_end = rss_bytes();
    let elapsed = t0.elapsed();
    eprintln!(
        "soak: {N_GENERATIONS} generations + {N_TRANSLATIONS} translations in {elapsed:.2?}, RSS {} -> {} KiB ({:+} KiB)",
        rss_start / 1024,
        rss_end / 1024,
        (rss_end - rss_start) / 1024
    );
    assert!(
        rss_end - rss_start <= RSS_GROWTH_TOLERANCE_BYTES,
        "RSS grew by {} KiB (tolerance {} KiB)",
        (rss_end - rss_start) / 1024,
        RSS_GROWTH_TOLERANCE_BYTES / 1024
    );
}
