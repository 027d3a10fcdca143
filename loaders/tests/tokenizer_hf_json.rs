//! tokenizer.json through the `tokenizers` crate against Python `tokenizers` (encode) and transformers'
//! `PreTrainedTokenizerFast` (decode), on two small tokenizers trained by tools/scripts/tokenizer_refs.py:
//! a byte-level BPE with a BOS post-processor and a chat template, and a Metaspace Unigram with clean-up.

mod tokenizer_common;

use loaders::tokenizer::{chat_template, load_tokenizer};
use loaders::Error;
use tokenizer_common::{check_all, corpus, ids_list, reference, strings};

fn check_dir(name: &str) {
    let dir = loaders::paths::fixture("tokenizers").join(name);
    let tok = load_tokenizer(&dir).expect("load");
    let r = reference(&format!("{name}/reference.json"));
    let want = ids_list(&r, "ids");
    check_all(&format!("{name} encode"), &corpus(), &want, |s| tok.encode(s).unwrap());
    for (ids_key, skip, text_key) in [
        ("ids", false, "decode"),
        ("ids", true, "decode_skip"),
        ("random_ids", false, "random_decode"),
        ("random_ids", true, "random_decode_skip"),
    ] {
        let ids = ids_list(&r, ids_key);
        let want = strings(&r, text_key);
        let inputs: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        let mut k = 0;
        check_all(&format!("{name} {text_key}"), &inputs, &want, |_| {
            let out = tok.decode(&ids[k], skip).unwrap();
            k += 1;
            out
        });
    }
    let n = tok.vocab_size() as u32;
    match tok.decode(&[0, n], false) {
        Err(Error::TokenIdOutOfRange { id, .. }) if id == n => {}
        other => panic!("expected TokenIdOutOfRange, got {other:?}"),
    }
}

#[test]
fn byte_level_bpe_matches_python() {
    check_dir("hf_bpe");
}

#[test]
fn unigram_metaspace_matches_python() {
    check_dir("hf_unigram");
}

#[test]
fn chat_template_and_special_tokens() {
    let dir = loaders::paths::fixture("tokenizers").join("hf_bpe");
    let template = chat_template(&dir).unwrap().expect("hf_bpe has a chat template");
    assert!(template.contains("<|im_start|>"));
    let tok = load_tokenizer(&dir).unwrap();
    let bos = tok.token_to_id("<|im_start|>").expect("special token");
    assert_eq!(tok.id_to_token(bos).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.encode("hi").unwrap()[0], bos);
    assert_eq!(
        chat_template(&loaders::paths::fixture("tokenizers").join("hf_unigram")).unwrap(),
        None
    );
}

#[test]
fn corrupt_tokenizer_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), r#"{"model": {"type": "BPE"}"#).unwrap();
    let e = load_tokenizer(dir.path()).err().expect("error").to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
