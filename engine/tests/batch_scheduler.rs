//! Continuous batching ([`qkv::Scheduler`], [`qkv::Model::generate_batch`]): a sequence's greedy tokens do not
//! depend on what else is in the batch. Every sequence is checked token for token against `Model::generate` /
//! `stream_ids` run alone, on every ISA of the host, while the batch mixes prompt chunks with decoding rows,
//! sequences join at different steps, rows are freed and reused, and one sequence is cancelled mid-run.

#[path = "hash_weights/mod.rs"]
mod hash_weights;

use qkv::{Activations, BatchEvent, BatchOptions, GenerateOptions, Kernels, LoadOptions, Model, SeqId, WeightType};

fn load(dir: std::path::PathBuf, k: Kernels) -> Model {
    let opts = LoadOptions {
        kernels: Some(k),
        ..Default::default()
    };
    Model::load_with(&dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// A family fixture's model directory, its random weights rebuilt from the hash formula (as `families.rs` does).
fn family_dir(name: &str) -> std::path::PathBuf {
    let fixture = loaders::paths::fixture("families").join(name);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("reference.json")).unwrap()).unwrap();
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("batch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    hash_weights::write_model_dir(&dir, &fixture, hash_weights::hash_init_tensors(&meta));
    dir
}

fn stories() -> std::path::PathBuf {
    loaders::paths::shared_model("stories260k").expect("the shared stories260k model")
}

/// Prompts of different lengths (ids), made from `seed` so each model gets in-vocabulary ids.
fn id_prompts(vocab: u32) -> Vec<Vec<u32>> {
    [3usize, 17, 1, 9, 30, 5, 12]
        .iter()
        .enumerate()
        .map(|(p, &len)| (0..len).map(|i| (7 + 31 * p as u32 + 13 * i as u32) % vocab).collect())
        .collect()
}

/// Run `prompts` through a scheduler of `max_seqs` rows with a small prefill budget (so long prompts are fed
/// over several steps between the others' decoding), half of them submitted only after a few steps; return the
/// tokens of each, in order.
fn scheduled(model: &Model, prompts: &[Vec<u32>], opts: &GenerateOptions, batch: BatchOptions) -> Vec<Vec<u32>> {
    let mut s = model.scheduler(batch).unwrap();
    let half = prompts.len() / 2;
    let mut ids: Vec<SeqId> = prompts[..half]
        .iter()
        .map(|p| s.submit(p.clone(), opts).unwrap())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    let mut collect = |events: Vec<BatchEvent>| {
        for ev in events {
            if let BatchEvent::Done { seq, generation } = ev {
                out.insert(seq, generation.tokens);
            }
        }
    };
    for _ in 0..3 {
        collect(s.step().unwrap());
    }
    ids.extend(prompts[half..].iter().map(|p| s.submit(p.clone(), opts).unwrap()));
    while !s.is_idle() {
        assert!(s.running() <= batch.max_seqs);
        collect(s.step().unwrap());
    }
    ids.iter()
        .map(|id| out.remove(id).expect("every sequence finishes"))
        .collect()
}

/// Batch shapes tried: (max_seqs, prefill_chunk). Fewer rows than prompts (rows reused, sequences waiting), a
/// prompt chunk smaller than most prompts, every prompt at once, one row at a time.
const SHAPES: &[(usize, usize)] = &[(3, 4), (16, 256), (1, 7)];

fn check_model(name: &str, model: &Model, max_new: usize, shapes: &[(usize, usize)]) {
    let prompts = id_prompts(model.info().vocab_size as u32);
    let opts = GenerateOptions {
        max_new_tokens: max_new,
        ..Default::default()
    };
    let serial: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| model.stream_ids(p.clone(), &opts).unwrap().run().unwrap().tokens)
        .collect();
    for &(max_seqs, prefill_chunk) in shapes {
        let batch = BatchOptions {
            max_seqs,
            ctx: Some(30 + max_new), // the longest prompt and its tokens
            prefill_chunk,
        };
        let got = scheduled(model, &prompts, &opts, batch);
        for (i, (g, s)) in got.iter().zip(&serial).enumerate() {
            assert_eq!(
                g,
                s,
                "{name} ({:?}): prompt {i} batched {batch:?} differs from serial",
                model.kernels().isa()
            );
        }
    }
    let fixed = model
        .generate_batch_ids(&prompts, &opts, BatchOptions::default())
        .unwrap();
    for (g, s) in fixed.iter().zip(&serial) {
        assert_eq!(&g.tokens, s, "{name}: generate_batch_ids");
    }
}

#[test]
fn batched_greedy_equals_serial_on_fixtures_every_isa() {
    let families: Vec<(&str, std::path::PathBuf)> = ["gemma2", "gemma3", "llama3", "mistral", "phi3", "qwen2", "qwen3"]
        .into_iter()
        .map(|name| (name, family_dir(name)))
        .collect();
    for k in kernels::testing::kernels("batched_greedy_equals_serial_on_fixtures") {
        for name in ["llama-tiny-gqa", "llama-tiny-tied", "gpt2-tiny"] {
            check_model(name, &load(loaders::paths::fixture(name), k), 24, SHAPES);
        }
        // The rotary families (sliding windows, soft-capping, q/k norms, per-layer RoPE tables).
        for (name, dir) in &families {
            check_model(name, &load(dir.clone(), k), 12, &SHAPES[..1]);
        }
    }
}

/// int8 weights with int8 activations (`Activations::Reduced`: exact integer sums): batches still equal serial.
#[test]
fn batched_greedy_equals_serial_with_int8_activations_every_isa() {
    for k in kernels::testing::kernels("batched_greedy_equals_serial_with_int8_activations") {
        for (name, dir) in [
            ("llama-tiny-gqa", loaders::paths::fixture("llama-tiny-gqa")),
            ("gpt2-tiny", loaders::paths::fixture("gpt2-tiny")),
            ("stories260k", stories()),
        ] {
            let opts = LoadOptions {
                kernels: Some(k),
                weights: WeightType::Int8,
                activations: Activations::Reduced,
                ..Default::default()
            };
            let model = Model::load_with(&dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert_eq!(model.kernels().i8_activations(), kernels::I8Activations::Int8);
            check_model(name, &model, 24, &SHAPES[..2]);
        }
    }
}

#[test]
fn batched_greedy_equals_serial_on_stories260k_every_isa() {
    let texts = [
        "Once upon a time",
        "The little dog",
        "Lily and Tom went to the park. They saw a big tree and",
        "One day",
        "Sam",
    ];
    for k in kernels::testing::kernels("batched_greedy_equals_serial_on_stories260k") {
        let model = load(stories(), k);
        check_model("stories260k ids", &model, 40, SHAPES);
        let opts = GenerateOptions {
            max_new_tokens: 48,
            ..Default::default()
        };
        let serial: Vec<_> = texts.iter().map(|t| model.generate(t, &opts).unwrap()).collect();
        let batch = BatchOptions {
            max_seqs: 4,
            prefill_chunk: 8,
            ..Default::default()
        };
        let got = model.generate_batch(&texts, &opts, batch).unwrap();
        for (g, s) in got.iter().zip(&serial) {
            assert_eq!((&g.tokens, &g.text, g.stop_reason), (&s.tokens, &s.text, s.stop_reason));
        }
    }
}

#[test]
fn cancel_frees_the_row_for_the_next_sequence() {
    let model = Model::load(stories()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 30,
        ..Default::default()
    };
    let batch = BatchOptions {
        max_seqs: 2,
        ..Default::default()
    };
    let mut s = model.scheduler(batch).unwrap();
    let a = s.submit_text("Once upon a time", &opts).unwrap();
    let b = s.submit_text("The cat", &opts).unwrap();
    let c = s.submit_text("One day", &opts).unwrap();
    for _ in 0..5 {
        s.step().unwrap();
    }
    assert_eq!((s.running(), s.waiting()), (2, 1));
    assert!(s.cancel(a) && !s.cancel(a));
    assert_eq!(s.running(), 1);
    // `c` takes `a`'s row (with `a`'s positions left in it) and still generates what it generates alone.
    let mut c_tokens = None;
    while !s.is_idle() {
        for ev in s.step().unwrap() {
            if let BatchEvent::Done { seq, generation } = ev {
                assert_ne!(seq, a);
                if seq == c {
                    c_tokens = Some(generation.tokens);
                }
            }
        }
    }
    let alone = model.generate("One day", &opts).unwrap().tokens;
    assert_eq!(c_tokens.unwrap(), alone);
    assert!(!s.cancel(b), "b finished");
    assert_eq!((s.running(), s.waiting()), (0, 0));
}

#[test]
fn bad_submissions_are_refused_without_queueing() {
    let model = Model::load(stories()).unwrap();
    let batch = BatchOptions {
        max_seqs: 2,
        ctx: Some(16),
        ..Default::default()
    };
    let mut s = model.scheduler(batch).unwrap();
    let opts = GenerateOptions::default();
    let e = s.submit(vec![1; 17], &opts).unwrap_err().to_string();
    assert!(e.contains("17 tokens") && e.contains("ctx"), "{e}");
    let e = s.submit(vec![1, 512], &opts).unwrap_err().to_string();
    assert!(e.contains("512") && e.contains("vocabulary"), "{e}");
    assert!(s.submit(vec![], &opts).is_err());
    assert!(s.is_idle());
    // Room for the prompt but not for max_new_tokens: generation stops at the context.
    s.submit(vec![1; 10], &opts).unwrap();
    let done = s.run_to_end().unwrap();
    // 10 + 7 ids > 16 positions: the 7th token is generated and not fed.
    let g = &done[0].1;
    assert!(
        g.stop_reason == qkv::StopReason::Eos || (g.stop_reason == qkv::StopReason::Length && g.tokens.len() == 7),
        "{g:?}"
    );
    let marian = Model::load(loaders::paths::fixture("marian-tiny")).unwrap();
    assert!(marian.scheduler(BatchOptions::default()).is_err());
    assert!(model
        .scheduler(BatchOptions {
            max_seqs: 0,
            ..Default::default()
        })
        .is_err());
}
