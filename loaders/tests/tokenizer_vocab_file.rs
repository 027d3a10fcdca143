//! CTranslate2 vocabulary files (aren-transliteration-ct2): ids are line numbers, <unk> appended last, one
//! token per character. Expected ids come from the vocabulary files and SOURCE.md, not from this code.

use loaders::tokenizer::{load_tokenizer, VocabFileTokenizer};
use loaders::Error;

fn model_dir() -> std::path::PathBuf {
    loaders::paths::shared_model("aren-transliteration-ct2").expect("shared model")
}

#[test]
fn ids_are_line_numbers_with_unk_last() {
    let dir = model_dir();
    let tok = load_tokenizer(&dir).expect("load");
    let src_lines: Vec<String> = std::fs::read_to_string(dir.join("source_vocabulary.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let tgt_lines: Vec<String> = std::fs::read_to_string(dir.join("target_vocabulary.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // SOURCE.md: 50 and 42 lines, embedding tables of 51 and 43 rows (<unk> appended).
    assert_eq!((src_lines.len(), tgt_lines.len()), (50, 42));
    let v = VocabFileTokenizer::from_dir(&dir).unwrap();
    assert_eq!((v.source().len(), v.target().len()), (51, 43));
    assert_eq!(tok.vocab_size(), 43);
    assert_eq!(tok.token_to_id("<unk>"), Some(42));
    assert_eq!(tok.token_to_id("</s>"), Some(2));

    // Every source line's character encodes to its line number; whitespace between characters is ignored.
    for (i, t) in src_lines.iter().enumerate().skip(3) {
        assert_eq!(tok.encode(t).unwrap(), vec![i as u32], "source token {t:?}");
    }
    let word: String = src_lines[3..8].concat();
    let spaced = src_lines[3..8].join(" ");
    let want: Vec<u32> = (3..8).collect();
    assert_eq!(tok.encode(&word).unwrap(), want);
    assert_eq!(tok.encode(&spaced).unwrap(), want);
    assert_eq!(
        tok.encode("x").unwrap(),
        vec![50],
        "a character outside the vocabulary is <unk>"
    );
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());

    // Decoding concatenates target tokens; specials are kept or skipped.
    let ids: Vec<u32> = vec![1, 3, 4, 5, 42, 2];
    let body: String = tgt_lines[3..6].concat();
    assert_eq!(tok.decode(&ids, true).unwrap(), body);
    assert_eq!(tok.decode(&ids, false).unwrap(), format!("<s>{body}<unk></s>"));
    match tok.decode(&[43], false) {
        Err(Error::TokenIdOutOfRange {
            id: 43, vocab_size: 43, ..
        }) => {}
        other => panic!("expected TokenIdOutOfRange, got {other:?}"),
    }
}

#[test]
fn shared_and_json_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shared_vocabulary.json"),
        r#"["<blank>", "<s>", "</s>", "a", "<unk>", "b"]"#,
    )
    .unwrap();
    let tok = load_tokenizer(dir.path()).unwrap();
    assert_eq!(tok.encode("ab c").unwrap(), vec![3, 5, 4]);
    assert_eq!(tok.vocab_size(), 6);
    std::fs::write(dir.path().join("shared_vocabulary.json"), r#"{"a": 1}"#).unwrap();
    assert!(load_tokenizer(dir.path()).is_err());
    std::fs::remove_file(dir.path().join("shared_vocabulary.json")).unwrap();
    std::fs::write(dir.path().join("shared_vocabulary.txt"), "").unwrap();
    assert!(load_tokenizer(dir.path()).is_err());
}
