//! `tokenizer.json` through the `tokenizers` crate, decoding as transformers' `PreTrainedTokenizerFast`.

use std::path::{Path, PathBuf};

use tokenizers::ModelWrapper;

use super::{clean_up_tokenization, config_bool, read_tokenizer_config, Tokenizer};
use crate::{Error, Result};

pub struct HfTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
    /// `clean_up_tokenization_spaces` from tokenizer_config.json; transformers ignores it for BPE models.
    clean_up: bool,
    n_ids: usize,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("n_ids", &self.n_ids)
            .finish()
    }
}

impl HfTokenizer {
    /// `dir/tokenizer.json`, with `clean_up_tokenization_spaces` from `dir/tokenizer_config.json` if present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = read_tokenizer_config(dir)?;
        let t = Self::open(&dir.join("tokenizer.json"))?;
        t.with_config(config.as_ref().map(|(p, c)| (p.as_path(), c)))
    }

    /// A `tokenizer.json` and `tokenizer_config.json` given as values (a GGUF's, built from its metadata);
    /// `path` names them in errors.
    pub fn from_values(
        path: &Path,
        tokenizer_json: &serde_json::Value,
        config: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Self> {
        let bytes = serde_json::to_vec(tokenizer_json).map_err(|e| Error::TokenizerFile {
            path: path.to_path_buf(),
            message: format!("tokenizer.json: {e}"),
        })?;
        Self::parse(path, &bytes)?.with_config(config.map(|c| (path, c)))
    }

    /// Clean-up of tokenization spaces as `tokenizer_config.json` asks.
    fn with_config(mut self, config: Option<(&Path, &serde_json::Map<String, serde_json::Value>)>) -> Result<Self> {
        let clean_up = match config {
            Some((path, config)) => {
                let requested = config_bool(path, config, "clean_up_tokenization_spaces", false)?;
                let forced = config_bool(
                    path,
                    config,
                    "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                    false,
                )?;
                (requested, forced)
            }
            None => (false, false),
        };
        let is_bpe = matches!(self.inner.get_model(), ModelWrapper::BPE(_));
        self.clean_up = clean_up.0 && (!is_bpe || clean_up.1);
        Ok(self)
    }

    /// One `tokenizer.json` file, without clean-up of tokenization spaces.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |message: String| Error::TokenizerFile {
            path: path.to_path_buf(),
            message: format!("tokenizer.json: {message}"),
        };
        // The `tokenizers` crate panics (`expect`) on some malformed files instead of returning an error: a
        // syntax error inside "decoder", a "Precompiled" normalizer whose charsmap does not parse. Those are
        // checked here first; any other panic in its parser is caught and reported as a bad file.
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(n) = json.get("normalizer") {
            check_precompiled(n).map_err(bad)?;
        }
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| bad("the tokenizers crate could not parse it (it panicked)".to_string()))?;
        let inner = parsed.map_err(|e| bad(e.to_string()))?;
        // The post-processor inserts special tokens by id, and the `tokenizers` crate checks neither the ids nor the
        // template's references when it deserializes one (only its builder does): an id naming no token, a
        // template naming a special token it does not define, or `$B` in the single template would make encode
        // produce ids the model cannot take, or panic.
        // (Checked on the post-processor as parsed, written back in its canonical form: the crate accepts
        // an unknown "type" by falling back to the shape of the object.)
        if let Some(p) = inner.get_post_processor() {
            let p = serde_json::to_value(p).map_err(|e| bad(format!("post_processor: {e}")))?;
            check_post_processor(&p, &|id| inner.id_to_token(id).is_some())
                .map_err(|m| bad(format!("post_processor: {m}")))?;
        }
        // Ids are those the model or the added tokens know; the largest + 1 is the id space.
        let max_model = inner.get_vocab(false).values().copied().max();
        let max_added = inner.get_added_tokens_decoder().keys().copied().max();
        let n_ids = max_model.max(max_added).map_or(0, |m| m as usize + 1);
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            clean_up: false,
            n_ids,
        })
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Text to ids, with or without the post-processor's special tokens.
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let inner = &self.inner;
        self.guard(|| inner.encode(text, add_special_tokens).map(|e| e.get_ids().to_vec()))
    }

    /// Run a call into the `tokenizers` crate, its errors and any panic (the file checks in [`Self::open`] cover
    /// the panics fuzzing found; this is the last line for any other) as [`Error::Tokenize`]. The tokenizer stays
    /// usable after a caught panic: its only state written by these calls is the BPE word cache, whose lock the
    /// crate takes with `try_read` / `try_write` and simply skips when poisoned.
    fn guard<T>(&self, f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
        let message = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the tokenizers crate panicked".to_string(),
        };
        Err(Error::Tokenize {
            path: self.path.clone(),
            message,
        })
    }
}

/// Every `precompiled_charsmap` anywhere in the normalizer `n` (whatever the `type` beside it says: the crate
/// falls back to untagged deserialization when a type is unknown) parses, and its trie can be walked by the
/// `tokenizers` crate without indexing out of bounds: it unwraps the parse, and indexes the trie unchecked when
/// normalizing (see [`super::spm::validate_charsmap`]).
fn check_precompiled(n: &serde_json::Value) -> std::result::Result<(), String> {
    match n {
        serde_json::Value::Object(map) => {
            if let Some(b64) = map.get("precompiled_charsmap").and_then(|c| c.as_str()) {
                let blob = base64::decode(b64).map_err(|e| format!("normalizer Precompiled: charsmap: {e}"))?;
                super::spm::validate_charsmap(&blob).map_err(|e| format!("normalizer Precompiled: charsmap: {e}"))?;
            }
            map.values().try_for_each(check_precompiled)
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(check_precompiled),
        _ => Ok(()),
    }
}

/// Checks a post-processor (TemplateProcessing, Bert/Roberta processing, Sequences of them) against the
/// vocabulary (`known(id)`): see [`HfTokenizer::open`].
fn check_post_processor(p: &serde_json::Value, known: &dyn Fn(u32) -> bool) -> std::result::Result<(), String> {
    let named = |id: u32| {
        if known(id) {
            Ok(())
        } else {
            Err(format!("inserts token id {id}, which names no token of the vocabulary"))
        }
    };
    let as_id = |v: &serde_json::Value| v.as_u64().and_then(|i| u32::try_from(i).ok());
    match p.get("type").and_then(|t| t.as_str()) {
        Some("TemplateProcessing") => {
            let empty = serde_json::Map::new();
            let specials = p.get("special_tokens").and_then(|s| s.as_object()).unwrap_or(&empty);
            for (name, special) in specials {
                let ids = special.get("ids").and_then(|i| i.as_array());
                let tokens = special.get("tokens").and_then(|t| t.as_array());
                if let (Some(ids), Some(tokens)) = (ids, tokens) {
                    if ids.len() != tokens.len() {
                        return Err(format!(
                            "special token {name:?} has {} ids and {} tokens",
                            ids.len(),
                            tokens.len()
                        ));
                    }
                }
                ids.into_iter().flatten().filter_map(as_id).try_for_each(named)?;
            }
            for which in ["single", "pair"] {
                for piece in p.get(which).and_then(|t| t.as_array()).into_iter().flatten() {
                    if let Some(id) = piece.pointer("/SpecialToken/id").and_then(|i| i.as_str()) {
                        if !specials.contains_key(id) {
                            return Err(format!("the {which} template names special token {id:?}, not defined"));
                        }
                    }
                    if which == "single" && piece.pointer("/Sequence/id").and_then(|i| i.as_str()) == Some("B") {
                        return Err("the single template uses sequence $B".to_string());
                    }
                }
            }
            Ok(())
        }
        Some("BertProcessing" | "RobertaProcessing") => ["cls", "sep"]
            .iter()
            .filter_map(|key| p.get(*key).and_then(|pair| pair.get(1)).and_then(as_id))
            .try_for_each(named),
        Some("Sequence") => p
            .get("processors")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .try_for_each(|item| check_post_processor(item, known)),
        _ => Ok(()),
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        // The tokenizers crate silently drops unknown ids; here an id outside the vocabulary is an error, and so is
        // an id inside it that names no token (a file whose ids have gaps, which HF loads but cannot decode).
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            let (path, vocab_size) = (self.path.clone(), self.n_ids);
            return Err(if (id as usize) < vocab_size {
                Error::TokenIdUnassigned { path, id, vocab_size }
            } else {
                Error::TokenIdOutOfRange { path, id, vocab_size }
            });
        }
        let inner = &self.inner;
        let text = self.guard(|| inner.decode(ids, skip_special_tokens))?;
        Ok(if self.clean_up {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    fn vocab_size(&self) -> usize {
        self.n_ids
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
