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

/// A tokenizer.json with a `Precompiled` normalizer (charsmap base64) and a WordLevel model knowing "ABC".
fn precompiled_json(charsmap: &[u8]) -> String {
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64::encode(charsmap)}
        ]},
        "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"ABC": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
    })
    .to_string()
}

fn open_json(text: &str) -> loaders::Result<loaders::tokenizer::HfTokenizer> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), text).unwrap();
    loaders::tokenizer::HfTokenizer::from_dir(tmp.path())
}

/// The `tokenizers` crate unwraps a Precompiled charsmap's parse and indexes its trie unchecked when it
/// normalizes: a real charsmap (the opus-mt spm's NFKC map) works, a damaged one is refused when the file opens.
#[test]
fn precompiled_charsmap_is_validated() {
    use loaders::tokenizer::spm_proto::SpmModelProto;
    use loaders::tokenizer::Tokenizer;
    let spm = loaders::paths::shared_model("opus-mt-tc-big-en-pt-tokenizer")
        .unwrap()
        .join("source.spm");
    let proto = SpmModelProto::parse(&spm, &std::fs::read(&spm).unwrap()).unwrap();
    let good = proto.normalizer.precompiled_charsmap.clone();
    assert!(good.len() > 1000, "the real spm has a charsmap");
    let tok = open_json(&precompiled_json(&good)).expect("a real charsmap opens");
    // Fullwidth letters are NFKC-normalised by the charsmap to the one known word.
    assert_eq!(tok.encode("ＡＢＣ").unwrap(), vec![0]);

    // Damaged: the header claims a trie longer than the blob; a root whose transitions leave the trie;
    // a leaf pointing past the strings; not base64; not even JSON in the decoder (the crate's `expect`).
    let trie_len = u32::from_le_bytes(good[..4].try_into().unwrap()) as usize;
    let mut long_header = good.clone();
    long_header[..4].copy_from_slice(&(good.len() as u32 * 2).to_le_bytes());
    let mut bad_root = good.clone();
    bad_root[4..8].copy_from_slice(&0xFFFF_FC00u32.to_le_bytes());
    let mut short_strings = good[..4 + trie_len].to_vec();
    short_strings.push(b'x');
    for (what, blob) in [
        ("runs past the end", long_header),
        ("outside the trie", bad_root),
        ("not a character", short_strings),
    ] {
        match open_json(&precompiled_json(&blob)) {
            Err(Error::TokenizerFile { message, .. }) => {
                assert!(
                    message.contains("Precompiled") && message.contains(what),
                    "{what}: {message}"
                )
            }
            other => panic!("{what}: expected TokenizerFile, got {other:?}"),
        }
    }
    let not_b64 = precompiled_json(&good).replace("\"precompiled_charsmap\":\"", "\"precompiled_charsmap\":\"!!");
    match open_json(&not_b64) {
        Err(Error::TokenizerFile { message, .. }) => assert!(message.contains("charsmap"), "{message}"),
        other => panic!("not base64: expected TokenizerFile, got {other:?}"),
    }
}
