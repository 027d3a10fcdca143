//! llama2.c tokenizer (stories260k/tok512.bin) against an independent Python implementation of run.c's
//! encode/decode (tools/scripts/tokenizer_refs.py), on the whole corpus.

mod tokenizer_common;

use loaders::tokenizer::{load_tokenizer, Llama2cTokenizer};
use loaders::Error;
use tokenizer_common::{check_all, corpus, ids_list, reference, strings};

fn model_dir() -> std::path::PathBuf {
    loaders::paths::shared_model("stories260k").expect("shared model")
}

#[test]
fn ids_match_reference_on_corpus() {
    let tok = load_tokenizer(&model_dir()).expect("load");
    let r = reference("llama2c_tok512.json");
    let want = ids_list(&r, "ids");
    check_all("llama2.c encode", &corpus(), &want, |s| tok.encode(s).unwrap());
}

#[test]
fn decodes_match_reference() {
    let tok = load_tokenizer(&model_dir()).expect("load");
    let r = reference("llama2c_tok512.json");
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
        check_all(&format!("llama2.c {text_key}"), &inputs, &want, |_| {
            let out = tok.decode(&ids[k], skip).unwrap();
            k += 1;
            out
        });
    }
}

#[test]
fn format_facts_and_bad_ids() {
    let path = model_dir().join("tok512.bin");
    let tok = Llama2cTokenizer::open(&path).expect("load");
    // Facts stated in stories260k/SOURCE.md.
    assert_eq!(tok.max_token_length(), 7);
    let t: &dyn loaders::tokenizer::Tokenizer = &tok;
    assert_eq!(t.vocab_size(), 512);
    assert_eq!(t.id_to_token(1).as_deref(), Some("\n<s>\n"));
    assert_eq!(t.id_to_token(3 + 0x41).as_deref(), Some("<0x41>"));
    assert_eq!(t.encode("").unwrap(), vec![1]);
    match t.decode(&[1, 512], false) {
        Err(Error::TokenIdOutOfRange {
            id: 512,
            vocab_size: 512,
            ..
        }) => {}
        other => panic!("expected TokenIdOutOfRange, got {other:?}"),
    }
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let e = Llama2cTokenizer::parse(&path, &bytes[..bytes.len() - 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("tok512.bin"), "{e}");
}
