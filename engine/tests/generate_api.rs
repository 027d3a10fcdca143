//! The library API end to end: `Model::load`, `generate`, `stream`, sharing one model between
//! threads, seeded sampling across rayon pools, chat prompts, and errors as values.

mod decoder_support;

use std::sync::Arc;

use decoder_support::{ids, json, smollm2_dir};
use qkv::{GenerateOptions, Model, PromptFormat, SampleParams, StopReason, Strategy};

fn stories() -> Model {
    Model::load(loaders::paths::shared_model("stories260k").expect("shared model")).unwrap()
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        ..Default::default()
    }
}

fn sampled(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 40,
        strategy: Strategy::Sample(SampleParams {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.02,
            seed,
        }),
        repetition_penalty: 1.1,
        ..Default::default()
    }
}

/// stories260k through the public API: prompt ids, 64 greedy tokens and their text as the reference.
#[test]
fn stories260k_generate_equals_reference() {
    let model = stories();
    let meta = json(&loaders::paths::fixture("stories260k").join("reference.json"));
    for run in meta["runs"].as_array().unwrap() {
        let prompt = run["prompt"].as_str().unwrap();
        assert_eq!(
            model.prompt_ids(prompt, PromptFormat::Plain).unwrap(),
            ids(&run["prompt_ids"]),
            "{prompt:?}"
        );
        let want = ids(&run["greedy_ids"]);
        let g = model.generate(prompt, &greedy(want.len())).unwrap();
        assert_eq!(g.tokens, want, "{prompt:?}");
        assert_eq!(g.text, run["text"].as_str().unwrap(), "{prompt:?}");
        assert_eq!(g.stop_reason, StopReason::MaxTokens);
        assert_eq!(g.timings.generated_tokens, want.len());
    }
}

#[test]
fn stream_events_add_up_to_generate() {
    let model = stories();
    let opts = sampled(5);
    let events: Vec<_> = model.stream("The cat", &opts).unwrap().map(Result::unwrap).collect();
    let g = model.generate("The cat", &opts).unwrap();
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), g.tokens);
    assert_eq!(events.iter().map(|e| e.text.as_str()).collect::<String>(), g.text);
    assert!(!g.text.is_empty());
}

#[test]
fn one_model_many_threads() {
    let model = Arc::new(stories());
    let alone = model.generate("Lily went to the park", &sampled(9)).unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let m = Arc::clone(&model);
            std::thread::spawn(move || m.generate("Lily went to the park", &sampled(9)).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().tokens, alone.tokens);
    }
}

#[test]
fn seeded_sampling_is_identical_across_runs_and_thread_counts() {
    let model = stories();
    let run = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| model.generate("Once upon a time", &sampled(seed)).unwrap().tokens)
    };
    let one = run(1, 42);
    assert_eq!(run(1, 42), one, "same seed, same pool");
    assert_eq!(run(2, 42), one, "same seed, 2 threads");
    assert_ne!(run(2, 43), one, "another seed");
}

#[test]
fn stop_strings_and_limits() {
    let model = stories();
    let full = model.generate("Once upon a time", &greedy(64)).unwrap();
    let g = model
        .generate(
            "Once upon a time",
            &GenerateOptions {
                stop_strings: vec!["Lily".into()],
                ..greedy(64)
            },
        )
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::StopString);
    assert_eq!(g.text, &full.text[..full.text.find("Lily").unwrap()]);
    let g = model.generate("Once upon a time", &greedy(0)).unwrap();
    assert!(g.tokens.is_empty() && g.text.is_empty());
    // The context (512 positions) ends the generation, not an error.
    let g = model.generate("Once upon a time", &greedy(600)).unwrap();
    assert_eq!(g.stop_reason, StopReason::Length);
    assert_eq!(g.tokens.len(), 512 - 5 + 1);
}

#[test]
fn errors_are_values() {
    assert!(Model::load("/nonexistent/model").is_err());
    // A model directory without a tokenizer loads (ids only); text generation names the directory.
    let bare = Model::load(loaders::paths::fixture("gpt2-tiny")).unwrap();
    let e = bare.generate("Once", &greedy(4)).unwrap_err().to_string();
    assert!(e.contains("gpt2-tiny") && e.contains("tokenizer"), "{e}");
    let model = stories();
    let long = "a b c d e f g h ".repeat(200);
    assert!(
        model.generate(&long, &greedy(4)).is_err(),
        "a prompt longer than the context"
    );
    assert!(model
        .generate(
            "x",
            &GenerateOptions {
                repetition_penalty: 0.0,
                ..greedy(4)
            }
        )
        .is_err());
    let e = model
        .generate(
            "x",
            &GenerateOptions {
                prompt_format: PromptFormat::Chat,
                ..greedy(4)
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("chat template"), "{e}");
}

/// SmolLM2-Instruct: plain and chat prompts tokenize as HF does; the chat answer stops at EOS.
#[test]
fn smollm2_chat_prompt_and_answer() {
    let model = Model::load(smollm2_dir()).unwrap();
    let meta = json(&loaders::paths::fixture("smollm2").join("reference.json"));
    for run in meta["runs"].as_array().unwrap() {
        let (format, text) = match run["kind"].as_str().unwrap() {
            "chat" => (PromptFormat::Chat, run["messages"][0]["content"].as_str().unwrap()),
            _ => (PromptFormat::Plain, run["text"].as_str().unwrap()),
        };
        assert_eq!(
            model.prompt_ids(text, format).unwrap(),
            ids(&run["prompt_ids"]),
            "{text:?}"
        );
        if format == PromptFormat::Chat {
            let g = model
                .generate(
                    text,
                    &GenerateOptions {
                        prompt_format: format,
                        ..greedy(32)
                    },
                )
                .unwrap();
            assert_eq!(g.tokens, ids(&run["generate_ids"]));
            assert_eq!(g.stop_reason, StopReason::Eos);
            assert_eq!(g.text, "The capital of France is Paris.");
        }
    }
}
