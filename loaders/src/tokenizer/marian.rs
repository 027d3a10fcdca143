//! Marian / OPUS-MT tokenizer: `source.spm` + `target.spm` + `vocab.json`, as `transformers.MarianTokenizer`.
//!
//! Encoding (MarianTokenizer.tokenize + build_inputs_with_special_tokens):
//! 1. split the text on the added tokens (`</s>`, `<unk>`, `<pad>`, ...), leftmost-longest;
//! 2. in each other chunk, a leading language code `>>xx<<` becomes its own token;
//! 3. the rest goes through the source SentencePiece model; each piece maps to an id through `vocab.json`
//!    (`<unk>` when missing: Marian's vocabulary is not aligned with the spm ids);
//! 4. `</s>` is appended.
//!
//! Decoding (MarianTokenizer.decode): ids to tokens (`skip_special_tokens` drops `</s>`, `<unk>`, `<pad>`),
//! the runs between special tokens decoded by SentencePiece, each special token followed by a space, `▁` to
//! space, Python `strip()`, then `clean_up_tokenization` when the config asks for it. Like transformers, a
//! shared vocabulary decodes with `source.spm` (`use_source_tokenizer` defaults to `not separate_vocabs`) and
//! separate vocabularies with `target.spm` and `target_vocab.json`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::spm::SentencePiece;
use super::{clean_up_tokenization, config_bool, config_token, python_strip, read_tokenizer_config, Tokenizer};
use crate::{Error, Result};

/// Which SentencePiece model and vocabulary to tokenize with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

pub struct MarianTokenizer {
    dir: PathBuf,
    spm_source: SentencePiece,
    spm_target: SentencePiece,
    /// vocab.json: token -> id (also the target vocabulary unless `separate_vocabs`).
    encoder: HashMap<String, u32>,
    /// target_vocab.json when `separate_vocabs`.
    target_encoder: Option<HashMap<String, u32>>,
    /// id -> token on the decode side (last token wins for a repeated id, as a Python dict inversion).
    decoder: HashMap<u32, String>,
    /// Added tokens (never split, matched before SentencePiece), longest first.
    added: Vec<(String, u32)>,
    added_by_id: HashMap<u32, String>,
    special_tokens: HashSet<String>,
    special_ids: HashSet<u32>,
    unk_token: String,
    eos_id: u32,
    clean_up_tokenization_spaces: bool,
    n_ids: usize,
}

impl std::fmt::Debug for MarianTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarianTokenizer")
            .field("dir", &self.dir)
            .field("n_ids", &self.n_ids)
            .finish()
    }
}

impl MarianTokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = read_tokenizer_config(dir)?;
        let empty = serde_json::Map::new();
        let (config_path, config) = match &config {
            Some((p, c)) => (p.clone(), c),
            None => (dir.join("tokenizer_config.json"), &empty),
        };
        // special_tokens_map.json fills what tokenizer_config.json does not say.
        let map_path = dir.join("special_tokens_map.json");
        let special_map = if map_path.is_file() {
            match super::read_json(&map_path)? {
                serde_json::Value::Object(m) => m,
                other => {
                    return Err(Error::TokenizerFile {
                        path: map_path,
                        message: format!("expected a JSON object, found {}", super::json_kind(&other)),
                    })
                }
            }
        } else {
            serde_json::Map::new()
        };
        let token = |field: &str, default: &str| -> Result<String> {
            Ok(match config_token(&config_path, config, field)? {
                Some(t) => t,
                None => config_token(&map_path, &special_map, field)?.unwrap_or_else(|| default.to_string()),
            })
        };
        let eos_token = token("eos_token", "</s>")?;
        let unk_token = token("unk_token", "<unk>")?;
        let pad_token = token("pad_token", "<pad>")?;
        let separate_vocabs = config_bool(&config_path, config, "separate_vocabs", false)?;
        let clean_up_tokenization_spaces = config_bool(&config_path, config, "clean_up_tokenization_spaces", false)?;

        let spm_source = SentencePiece::open(&dir.join("source.spm"))?;
        let spm_target = SentencePiece::open(&dir.join("target.spm"))?;
        let vocab_path = dir.join("vocab.json");
        let vocab = read_vocab_json(&vocab_path)?;
        let encoder: HashMap<String, u32> = vocab.iter().cloned().collect();
        if !encoder.contains_key(&unk_token) {
            return Err(Error::TokenizerFile {
                path: vocab_path,
                message: format!("the unknown token {unk_token:?} is not in the vocabulary"),
            });
        }
        let (target_encoder, decoder_pairs) = if separate_vocabs {
            let target_path = dir.join("target_vocab.json");
            let target = read_vocab_json(&target_path)?;
            (Some(target.iter().cloned().collect::<HashMap<_, _>>()), target)
        } else {
            (None, vocab)
        };
        let decoder: HashMap<u32, String> = decoder_pairs.into_iter().map(|(t, i)| (i, t)).collect();

        // Added tokens: the config's added_tokens_decoder, then the special tokens (their vocab id, else a new id).
        let mut added_by_id: HashMap<u32, String> = HashMap::new();
        if let Some(serde_json::Value::Object(atd)) = config.get("added_tokens_decoder") {
            for (id, v) in atd {
                let bad = |message: String| Error::TokenizerFile {
                    path: config_path.clone(),
                    message,
                };
                let id: u32 = id
                    .parse()
                    .map_err(|_| bad(format!("added_tokens_decoder key {id:?} is not an id")))?;
                let content = super::token_content(v)
                    .ok_or_else(|| bad(format!("added_tokens_decoder[{id}] has no \"content\"")))?;
                added_by_id.insert(id, content.to_string());
            }
        }
        let mut additional: Vec<String> = Vec::new();
        for field in ["additional_special_tokens", "extra_special_tokens"] {
            if let Some(serde_json::Value::Array(list)) = config.get(field) {
                additional.extend(list.iter().filter_map(super::token_content).map(str::to_string));
            }
        }
        let mut special_tokens: Vec<String> = vec![eos_token.clone(), unk_token.clone(), pad_token.clone()];
        special_tokens.extend(additional);
        let mut added_ids: HashMap<String, u32> = added_by_id.iter().map(|(i, t)| (t.clone(), *i)).collect();
        let mut n_known: usize = {
            let mut keys: HashSet<&str> = encoder.keys().map(String::as_str).collect();
            keys.extend(added_ids.keys().map(String::as_str));
            keys.len()
        };
        for t in &special_tokens {
            if t.is_empty() || added_ids.contains_key(t) {
                continue;
            }
            let id = match encoder.get(t) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(n_known).map_err(|_| Error::TokenizerFile {
                        path: dir.join("vocab.json"),
                        message: "vocabulary too large".into(),
                    })?;
                    n_known += 1;
                    id
                }
            };
            added_ids.insert(t.clone(), id);
            added_by_id.insert(id, t.clone());
        }
        let mut added: Vec<(String, u32)> = added_ids.into_iter().filter(|(t, _)| !t.is_empty()).collect();
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let eos_id = added
            .iter()
            .find(|(t, _)| *t == eos_token)
            .map(|(_, i)| *i)
            .ok_or_else(|| Error::TokenizerFile {
                path: config_path.clone(),
                message: format!("no id for the eos token {eos_token:?}"),
            })?;
        let special_ids: HashSet<u32> = special_tokens
            .iter()
            .filter_map(|t| added.iter().find(|(a, _)| a == t).map(|(_, i)| *i))
            .collect();
        let max_id = decoder.keys().chain(added_by_id.keys()).copied().max().unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            spm_source,
            spm_target,
            encoder,
            target_encoder,
            decoder,
            added,
            added_by_id,
            special_tokens: special_tokens.into_iter().collect(),
            special_ids,
            unk_token,
            eos_id,
            clean_up_tokenization_spaces,
            n_ids: max_id as usize + 1,
        })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Text to ids on one side (`tokenizer(text)` for Source, `tokenizer(text_target=text)` for Target).
    pub fn encode_side(&self, text: &str, side: Side) -> Result<Vec<u32>> {
        let (spm, encoder) = match side {
            Side::Source => (&self.spm_source, &self.encoder),
            Side::Target => (&self.spm_target, self.target_encoder.as_ref().unwrap_or(&self.encoder)),
        };
        let unk_id = encoder.get(&self.unk_token).copied().unwrap_or(0);
        // MarianTokenizer._convert_token_to_id_with_added_voc: added tokens, then the vocabulary, else <unk>.
        let to_id = |token: &str| -> u32 {
            match self.added.iter().find(|(t, _)| t == token) {
                Some((_, id)) => *id,
                None => encoder.get(token).copied().unwrap_or(unk_id),
            }
        };
        let mut ids = Vec::new();
        for chunk in self.split_added(text) {
            match chunk {
                Chunk::Added(id) => ids.push(id),
                Chunk::Text(t) => {
                    // A leading language code `>>xx<<` is one token, whatever follows.
                    let (code, rest) = remove_language_code(t);
                    if let Some(code) = code {
                        ids.push(to_id(code));
                    }
                    for piece in spm.encode_pieces(rest)? {
                        ids.push(to_id(&piece));
                    }
                }
            }
        }
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// The text split at added tokens (leftmost, longest first), empty chunks dropped.
    fn split_added<'t>(&self, text: &'t str) -> Vec<Chunk<'t>> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            if let Some((t, id)) = self.added.iter().find(|(t, _)| text[i..].starts_with(t.as_str())) {
                if i > start {
                    chunks.push(Chunk::Text(&text[start..i]));
                }
                chunks.push(Chunk::Added(*id));
                i += t.len();
                start = i;
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            chunks.push(Chunk::Text(&text[start..]));
        }
        chunks
    }

    fn decode_spm(&self) -> &SentencePiece {
        if self.target_encoder.is_some() {
            &self.spm_target
        } else {
            &self.spm_source
        }
    }
}

enum Chunk<'t> {
    Text(&'t str),
    Added(u32),
}

/// MarianTokenizer.remove_language_code: `>>xx<<rest` -> (Some(">>xx<<"), "rest").
fn remove_language_code(text: &str) -> (Option<&str>, &str) {
    if text.starts_with(">>") {
        if let Some(end) = text.find("<<") {
            return (Some(&text[..end + 2]), &text[end + 2..]);
        }
    }
    (None, text)
}

impl Tokenizer for MarianTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_side(text, Side::Source)
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let spm = self.decode_spm();
        // Ids to tokens: added tokens, then the vocabulary, then the spm's own pieces (as transformers does).
        let mut tokens: Vec<&str> = Vec::with_capacity(ids.len());
        for &id in ids {
            if skip_special_tokens && self.special_ids.contains(&id) {
                continue;
            }
            let token = match self.added_by_id.get(&id).or_else(|| self.decoder.get(&id)) {
                Some(t) => t.as_str(),
                None => spm.id_to_piece(id).ok_or_else(|| Error::TokenIdOutOfRange {
                    path: self.dir.clone(),
                    id,
                    vocab_size: self.n_ids,
                })?,
            };
            tokens.push(token);
        }
        // Runs between special tokens go through SentencePiece; a special token is kept, then a space.
        let mut out = String::new();
        let mut run: Vec<&str> = Vec::new();
        for token in tokens {
            if self.special_tokens.contains(token) {
                out.push_str(&spm.decode_pieces(&run));
                out.push_str(token);
                out.push(' ');
                run.clear();
            } else {
                run.push(token);
            }
        }
        out.push_str(&spm.decode_pieces(&run));
        let out = out.replace(super::spm::SPACE_SYMBOL, " ");
        let out = python_strip(&out);
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(out)
        } else {
            out.to_string()
        })
    }

    fn vocab_size(&self) -> usize {
        self.n_ids
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some((_, id)) = self.added.iter().find(|(t, _)| t == token) {
            return Some(*id);
        }
        self.target_encoder
            .as_ref()
            .unwrap_or(&self.encoder)
            .get(token)
            .copied()
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.added_by_id.get(&id).or_else(|| self.decoder.get(&id)).cloned()
    }

    /// `vocab.json`'s token of `id` (the source side, also with `separate_vocabs`).
    fn source_id_to_token(&self, id: u32) -> Option<String> {
        let source = || self.encoder.iter().find(|&(_, &i)| i == id).map(|(t, _)| t);
        self.added_by_id.get(&id).or_else(source).cloned()
    }
}

/// A `vocab.json` object `{token: id}` in file order (a Python dict keeps it; the last of repeated keys wins).
fn read_vocab_json(path: &Path) -> Result<Vec<(String, u32)>> {
    use serde::de::{Deserializer, MapAccess, Visitor};

    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(String, u32)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object {token: id} with ids in 0..2^32")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, u32>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let text = super::read_text(path)?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let vocab = de
        .deserialize_map(Ordered)
        .and_then(|v| de.end().map(|_| v))
        .map_err(|e| Error::TokenizerFile {
            path: path.to_path_buf(),
            message: format!("vocabulary: {e}"),
        })?;
    if vocab.is_empty() {
        return Err(Error::TokenizerFile {
            path: path.to_path_buf(),
            message: "the vocabulary is empty".into(),
        });
    }
    Ok(vocab)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_code() {
        assert_eq!(remove_language_code(">>por<< Hi"), (Some(">>por<<"), " Hi"));
        assert_eq!(remove_language_code(">>no end"), (None, ">>no end"));
        assert_eq!(remove_language_code("a >>por<<"), (None, "a >>por<<"));
        assert_eq!(remove_language_code(">><<"), (Some(">><<"), ""));
    }

    #[test]
    fn vocab_json_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        for bad in [
            "[1, 2]",
            "{\"a\": -1}",
            "{\"a\": 1.5}",
            "{}",
            "{\"a\": 1} x",
            "{\"a\": 4294967296}",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = read_vocab_json(&p).unwrap_err().to_string();
            assert!(e.contains("vocab.json"), "{bad}: {e}");
        }
        std::fs::write(&p, "{\"b\": 1, \"a\": 0, \"b\": 2}").unwrap();
        assert_eq!(
            read_vocab_json(&p).unwrap(),
            vec![("b".into(), 1), ("a".into(), 0), ("b".into(), 2)]
        );
    }
}
