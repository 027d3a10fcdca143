//! `tokenizer.ggml.model = llama` (SentencePiece-style BPE, merges recovered from scores) against transformers.
//!
//! tools/fixtures/gguf/spm_tok512.gguf holds stories260k's trained 512-piece sentencepiece vocabulary in
//! llama.cpp's conventions; spm_tok512_ids.json has transformers' ids and decodes for it on corpus.json
//! (tools/scripts/gguf_refs.py spm).

use std::fs;

use loaders::gguf::{tokenizer, GgufFile};
use loaders::paths::fixture;
use serde_json::Value;

fn load_json(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(fixture("gguf").join(name)).expect(name)).expect(name)
}

#[test]
fn spm_gguf_tokenizer_matches_transformers() {
    let f = GgufFile::open(&fixture("gguf").join("spm_tok512.gguf")).expect("open spm_tok512.gguf");
    let files = tokenizer::build(&f).expect("build tokenizer");
    let tok: tokenizers::Tokenizer = files.tokenizer_json.to_string().parse().expect("tokenizer.json loads");
    let corpus = load_json("corpus.json");
    let refs = load_json("spm_tok512_ids.json");
    let (corpus, ids, decoded) = (
        corpus.as_array().unwrap(),
        refs["ids"].as_array().unwrap(),
        refs["decoded"].as_array().unwrap(),
    );
    assert!(corpus.len() >= 1000 && corpus.len() == ids.len());
    let (mut bad_ids, mut bad_text) = (0, 0);
    for ((text, want), want_text) in corpus.iter().zip(ids).zip(decoded) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).expect("encode").get_ids().to_vec();
        if got != want {
            bad_ids += 1;
            eprintln!("ids differ for {text:?}:\n  ours {got:?}\n  HF   {want:?}");
        }
        let back = tok.decode(&want, false).expect("decode");
        if back != want_text.as_str().unwrap() {
            bad_text += 1;
            eprintln!("decode differs for {want:?}: ours {back:?} HF {want_text:?}");
        }
    }
    assert_eq!((bad_ids, bad_text), (0, 0), "of {} texts", corpus.len());
    // add_bos_token defaults to true for a sentencepiece vocabulary, as llama.cpp and transformers do.
    assert_eq!(files.tokenizer_config["add_bos_token"], true);
    assert_eq!(files.tokenizer_config["bos_token"], "<s>");
}
