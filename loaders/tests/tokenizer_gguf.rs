//! The tokenizer.json that loaders::gguf builds for SmolLM2-135M-Instruct (GGUF), run through HfTokenizer,
//! against transformers' own GGUF tokenizer conversion (tools/fixtures/tokenizers/smollm2_gguf.json).

mod tokenizer_common;

use loaders::gguf::GgufFile;
use loaders::tokenizer::{chat_template, load_tokenizer};
use tokenizer_common::{check_all, corpus, ids_list, reference, strings};

#[test]
fn smollm2_gguf_tokenizer_matches_transformers() {
    let model = loaders::paths::shared_model("smollm2-135m-instruct-q4_1").expect("shared model");
    let gguf = GgufFile::open(&model.join("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("gguf");
    let files = loaders::gguf::tokenizer::build(&gguf).expect("tokenizer from gguf");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), files.tokenizer_json.to_string()).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        files.tokenizer_config.to_string(),
    )
    .unwrap();
    let tok = load_tokenizer(dir.path()).expect("load");
    assert_eq!(tok.vocab_size(), 49152);
    assert!(chat_template(dir.path())
        .unwrap()
        .is_some_and(|t| t.contains("<|im_start|>")));

    let r = reference("smollm2_gguf.json");
    let want = ids_list(&r, "ids");
    check_all("smollm2 encode", &corpus(), &want, |s| tok.encode(s).unwrap());
    for (ids_key, skip, text_key) in [
        ("ids", true, "decode_skip"),
        ("random_ids", false, "random_decode"),
        ("random_ids", true, "random_decode_skip"),
    ] {
        let ids = ids_list(&r, ids_key);
        let want = strings(&r, text_key);
        let inputs: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        let mut k = 0;
        check_all(&format!("smollm2 {text_key}"), &inputs, &want, |_| {
            let out = tok.decode(&ids[k], skip).unwrap();
            k += 1;
            out
        });
    }
}
