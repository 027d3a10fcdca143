//! Tokenizers: text to ids and back, matching the Python reference of each format.
//!
//! | files in the model directory | type | reference it matches |
//! | --- | --- | --- |
//! | `tokenizer.json` | [`HfTokenizer`] | HF `tokenizers` + `PreTrainedTokenizerFast.decode` |
//! | `source.spm`, `target.spm`, `vocab.json` | [`MarianTokenizer`] | `transformers.MarianTokenizer` (sentencepiece) |
//! | `source_vocabulary.txt` + `target_vocabulary.txt` (or `shared_vocabulary.txt`) | [`VocabFileTokenizer`] | CTranslate2 vocabularies, one character per token |
//! | `tokenizer.bin` / `tok512.bin` | [`Llama2cTokenizer`] | llama2.c `run.c` encode/decode |
//!
//! Every tokenizer is `Send + Sync`; text is `&str` so invalid UTF-8 cannot reach it, and ids outside the
//! vocabulary make `decode` return [`Error::TokenIdOutOfRange`], never panic.

mod hf_json;
mod llama2c;
mod marian;
pub mod spm;
pub mod spm_proto;
mod vocab_file;

use std::path::{Path, PathBuf};

pub use hf_json::HfTokenizer;
pub use llama2c::Llama2cTokenizer;
pub use marian::{MarianTokenizer, Side};
pub use spm::SentencePiece;
pub use vocab_file::VocabFileTokenizer;

use crate::{Error, Result};

/// Text to ids and ids to text.
///
/// For sequence-to-sequence tokenizers with two vocabularies, `encode` uses the source side and
/// `decode`, `vocab_size`, `token_to_id` and `id_to_token` the target (output) side.
pub trait Tokenizer: Send + Sync {
    /// Text to ids, with the special tokens HF adds by default (Marian: appends `</s>`; tokenizer.json: its
    /// post-processor; llama2.c: BOS prepended; CTranslate2 vocabularies: none).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Ids to text as HF decodes (Marian: as `MarianTokenizer.decode`).
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String>;
    /// Number of ids (largest id + 1) on the decode side.
    fn vocab_size(&self) -> usize;
    fn token_to_id(&self, token: &str) -> Option<u32>;
    fn id_to_token(&self, id: u32) -> Option<String>;
    /// The token of an id `encode` makes (the source side of a two-vocabulary tokenizer; else `id_to_token`).
    fn source_id_to_token(&self, id: u32) -> Option<String> {
        self.id_to_token(id)
    }
}

/// File names `load_tokenizer` looks for, in order of preference.
const LOOKED_FOR: &str = "tokenizer.json; source.spm + target.spm + vocab.json; shared_vocabulary.txt or \
                          source_vocabulary.txt + target_vocabulary.txt; tokenizer.bin or tok<N>.bin";

/// Loads the tokenizer of a model directory, picked by the files present (see the module table).
pub fn load_tokenizer(dir: &Path) -> Result<Box<dyn Tokenizer>> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    if dir.join("tokenizer.json").is_file() {
        return Ok(Box::new(HfTokenizer::from_dir(dir)?));
    }
    if ["source.spm", "target.spm", "vocab.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Ok(Box::new(MarianTokenizer::from_dir(dir)?));
    }
    if VocabFileTokenizer::files_in(dir).is_some() {
        return Ok(Box::new(VocabFileTokenizer::from_dir(dir)?));
    }
    if let Some(path) = llama2c_file(dir) {
        return Ok(Box::new(Llama2cTokenizer::open(&path)?));
    }
    Err(Error::NoTokenizer {
        dir: dir.to_path_buf(),
        looked_for: LOOKED_FOR.to_string(),
    })
}

/// `tokenizer.bin`, else the first `tok<digits>.bin` by name.
fn llama2c_file(dir: &Path) -> Option<PathBuf> {
    let p = dir.join("tokenizer.bin");
    if p.is_file() {
        return Some(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let digits = name
                .strip_prefix("tok")
                .and_then(|r| r.strip_suffix(".bin"))
                .unwrap_or("");
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && p.is_file()
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The chat template of a model directory: `chat_template.jinja` if present, else the `chat_template` field of
/// `tokenizer_config.json` (a string, or a list of `{name, template}` from which `default` is taken, else the
/// first). `None` when there is neither.
pub fn chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| Error::Io { path: jinja, source });
    }
    let Some((path, config)) = read_tokenizer_config(dir)? else {
        return Ok(None);
    };
    chat_template_of(&path, &config)
}

/// The `chat_template` field of a `tokenizer_config.json` (`path` names it in errors), as [`chat_template`] reads it.
pub fn chat_template_of(path: &Path, config: &serde_json::Map<String, serde_json::Value>) -> Result<Option<String>> {
    let path = path.to_path_buf();
    match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(list)) => {
            let named = |want: Option<&str>| {
                list.iter().find_map(|item| {
                    let name = item.get("name").and_then(|v| v.as_str());
                    let template = item.get("template").and_then(|v| v.as_str())?;
                    (want.is_none() || name == want).then(|| template.to_string())
                })
            };
            match named(Some("default")).or_else(|| named(None)) {
                Some(t) => Ok(Some(t)),
                None => Err(Error::TokenizerFile {
                    path,
                    message: "chat_template is a list without any {name, template} entry".into(),
                }),
            }
        }
        Some(other) => Err(Error::TokenizerFile {
            path,
            message: format!("chat_template should be a string or a list, found {}", json_kind(other)),
        }),
    }
}

/// `dir/tokenizer_config.json` parsed as a JSON object, or None when the file is absent.
pub(crate) fn read_tokenizer_config(
    dir: &Path,
) -> Result<Option<(PathBuf, serde_json::Map<String, serde_json::Value>)>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    match read_json(&path)? {
        serde_json::Value::Object(map) => Ok(Some((path, map))),
        other => Err(Error::TokenizerFile {
            path,
            message: format!("expected a JSON object, found {}", json_kind(&other)),
        }),
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::TokenizerFile {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| Error::TokenizerFile {
        path: path.to_path_buf(),
        message: format!("not valid UTF-8: {e}"),
    })
}

pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A boolean field of a tokenizer config, `default` when absent; an error naming the field when mistyped.
pub(crate) fn config_bool(
    path: &Path,
    config: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    default: bool,
) -> Result<bool> {
    match config.get(field) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::TokenizerFile {
            path: path.to_path_buf(),
            message: format!("field {field:?} should be a boolean, found {}", json_kind(other)),
        }),
    }
}

/// A token field of a tokenizer config: a string or an AddedToken object `{"content": ...}`.
pub(crate) fn config_token(
    path: &Path,
    config: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<String>> {
    match config.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => token_content(v)
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| Error::TokenizerFile {
                path: path.to_path_buf(),
                message: format!(
                    "field {field:?} should be a token string or {{\"content\": ...}}, found {}",
                    json_kind(v)
                ),
            }),
    }
}

pub(crate) fn token_content(v: &serde_json::Value) -> Option<&str> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(m) => m.get("content").and_then(|c| c.as_str()),
        _ => None,
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the separators U+001C..U+001F, which Python counts as space.
pub(crate) fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// transformers' `clean_up_tokenization`: removes the spaces a word-level detokenizer leaves before punctuation
/// and English contractions.
pub(crate) fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_strip_matches_python_whitespace() {
        assert_eq!(python_strip(" \t\n\u{a0}\u{3000}x y\u{1f}\u{1c}\u{85} "), "x y");
        assert_eq!(python_strip("\u{200b}x"), "\u{200b}x"); // zero-width space is not whitespace in Python
    }

    #[test]
    fn clean_up_is_transformers() {
        assert_eq!(
            clean_up_tokenization("Hello , world ! I do n't know . It 's"),
            "Hello, world! I don't know. It's"
        );
    }

    #[test]
    fn empty_dir_has_no_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_tokenizer(dir.path()), Err(Error::NoTokenizer { .. })));
        assert_eq!(chat_template(dir.path()).unwrap(), None);
        assert!(load_tokenizer(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn chat_template_forms() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(&cfg, r#"{"chat_template": "{{ x }}"}"#).unwrap();
        assert_eq!(chat_template(dir.path()).unwrap().as_deref(), Some("{{ x }}"));
        std::fs::write(
            &cfg,
            r#"{"chat_template": [{"name": "tool_use", "template": "a"}, {"name": "default", "template": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(chat_template(dir.path()).unwrap().as_deref(), Some("b"));
        std::fs::write(&cfg, r#"{"chat_template": 3}"#).unwrap();
        assert!(chat_template(dir.path()).is_err());
        std::fs::write(&cfg, r#"{"chat_template": "#).unwrap();
        assert!(chat_template(dir.path()).is_err());
        std::fs::write(&cfg, r#"{}"#).unwrap();
        assert_eq!(chat_template(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
        assert_eq!(chat_template(dir.path()).unwrap().as_deref(), Some("J"));
    }
}
