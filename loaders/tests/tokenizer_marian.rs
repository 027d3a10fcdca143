//! MarianTokenizer against Python `transformers.MarianTokenizer` on the shared opus-mt-tc-big-en-pt tokenizer.
//! Reference: tools/fixtures/tokenizers/marian_opus_mt_tc_big_en_pt.json (tools/scripts/tokenizer_refs.sh).

mod tokenizer_common;

use loaders::tokenizer::{load_tokenizer, MarianTokenizer, Side};
use loaders::Error;
use tokenizer_common::{check_all, corpus, ids_list, reference, strings};

const MODEL: &str = "opus-mt-tc-big-en-pt-tokenizer";

fn model_dir() -> std::path::PathBuf {
    loaders::paths::shared_model(MODEL).expect("shared model")
}

#[test]
fn source_ids_match_python_on_corpus() {
    let tok = load_tokenizer(&model_dir()).expect("load");
    let corpus = corpus();
    let r = reference("marian_opus_mt_tc_big_en_pt.json");
    let want = ids_list(&r, "source_ids");
    check_all("marian source encode", &corpus, &want, |s| tok.encode(s).unwrap());
}

#[test]
fn target_ids_match_python_on_corpus() {
    let tok = MarianTokenizer::from_dir(&model_dir()).expect("load");
    let corpus = corpus();
    let r = reference("marian_opus_mt_tc_big_en_pt.json");
    let want = ids_list(&r, "target_ids");
    check_all("marian target encode", &corpus, &want, |s| {
        tok.encode_side(s, Side::Target).unwrap()
    });
}

#[test]
fn decodes_match_python() {
    let tok = load_tokenizer(&model_dir()).expect("load");
    let r = reference("marian_opus_mt_tc_big_en_pt.json");
    for (ids_key, skip, text_key) in [
        ("source_ids", false, "source_decode"),
        ("source_ids", true, "source_decode_skip"),
        ("target_ids", false, "target_decode"),
        ("target_ids", true, "target_decode_skip"),
        ("random_ids", false, "random_decode"),
        ("random_ids", true, "random_decode_skip"),
    ] {
        let ids = ids_list(&r, ids_key);
        let want = strings(&r, text_key);
        let inputs: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        let mut k = 0;
        check_all(&format!("marian decode {text_key}"), &inputs, &want, |_| {
            let out = tok.decode(&ids[k], skip).unwrap();
            k += 1;
            out
        });
    }
}

#[test]
fn separate_vocabs_decode_with_target_spm_like_python() {
    // transformers decodes with target.spm when separate_vocabs=True (here target_vocab.json = vocab.json;
    // the reference was built by the constructor, so clean_up_tokenization_spaces has its default, false).
    let src = model_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["source.spm", "target.spm", "vocab.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(src.join("vocab.json"), dir.path().join("target_vocab.json")).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"separate_vocabs": true, "tokenizer_class": "MarianTokenizer"}"#,
    )
    .unwrap();
    let tok = load_tokenizer(dir.path()).expect("load");
    let r = reference("marian_opus_mt_tc_big_en_pt.json");
    for (ids_key, skip, text_key) in [
        ("target_ids", true, "separate_vocabs_target_decode_skip"),
        ("random_ids", false, "separate_vocabs_random_decode"),
    ] {
        let ids = ids_list(&r, ids_key);
        let want = strings(&r, text_key);
        let inputs: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        let mut k = 0;
        check_all(
            &format!("marian separate-vocabs decode {text_key}"),
            &inputs,
            &want,
            |_| {
                let out = tok.decode(&ids[k], skip).unwrap();
                k += 1;
                out
            },
        );
    }
}

#[test]
fn special_ids_vocab_size_and_bad_ids() {
    let tok = load_tokenizer(&model_dir()).expect("load");
    // Ids stated in the model's SOURCE.md / config.json.
    assert_eq!(tok.token_to_id("</s>"), Some(44670));
    assert_eq!(tok.token_to_id("<unk>"), Some(52024));
    assert_eq!(tok.token_to_id("<pad>"), Some(54775));
    assert_eq!(tok.id_to_token(1).as_deref(), Some(">>"));
    assert_eq!(tok.vocab_size(), 54776);
    assert_eq!(tok.token_to_id("no such token"), None);
    assert_eq!(tok.id_to_token(54776), None);
    match tok.decode(&[25006, 54776], false) {
        Err(Error::TokenIdOutOfRange {
            id: 54776,
            vocab_size: 54776,
            ..
        }) => {}
        other => panic!("expected TokenIdOutOfRange, got {other:?}"),
    }
    assert!(tok.decode(&[u32::MAX], true).is_err());
}

#[test]
fn missing_or_corrupt_files_are_errors() {
    let src = model_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["source.spm", "target.spm", "vocab.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    assert!(MarianTokenizer::from_dir(dir.path()).is_ok());
    // Truncated spm.
    let spm = std::fs::read(src.join("source.spm")).unwrap();
    std::fs::write(dir.path().join("source.spm"), &spm[..spm.len() / 2]).unwrap();
    let e = MarianTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("source.spm"), "{e}");
    std::fs::write(dir.path().join("source.spm"), &spm).unwrap();
    // Vocabulary without <unk>.
    std::fs::write(dir.path().join("vocab.json"), r#"{"a": 0}"#).unwrap();
    let e = MarianTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("<unk>") && e.contains("vocab.json"), "{e}");
    // Config with a mistyped field.
    std::fs::copy(src.join("vocab.json"), dir.path().join("vocab.json")).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"separate_vocabs": "yes"}"#,
    )
    .unwrap();
    let e = MarianTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("separate_vocabs"), "{e}");
}
