//! CTranslate2 / OpenNMT vocabulary files: one token per line, the line index is the id, and `<unk>` is
//! appended as the last id when the file does not list it (as CTranslate2 does).
//!
//! The models these come with (e.g. `aren-transliteration-ct2`) are character-level: text is split into
//! characters, whitespace dropped (an already space-separated character sequence gives the same tokens), and
//! no BOS/EOS is added to the source. Decoding concatenates the target tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Tokenizer;
use crate::{Error, Result};

const UNK: &str = "<unk>";
/// Tokens `skip_special_tokens` drops when the vocabulary has them.
const SPECIAL_TOKENS: [&str; 4] = ["<blank>", "<s>", "</s>", UNK];

/// One vocabulary file.
#[derive(Debug)]
pub struct Vocabulary {
    path: PathBuf,
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    unk_id: u32,
}

impl Vocabulary {
    /// A `.txt` file (one token per line) or a `.json` list of tokens.
    pub fn open(path: &Path) -> Result<Self> {
        let text = super::read_text(path)?;
        let err = |message: String| Error::TokenizerFile {
            path: path.to_path_buf(),
            message,
        };
        let mut tokens: Vec<String> = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| err(format!("expected a JSON list of tokens: {e}")))?
        } else {
            let body = text.strip_suffix('\n').unwrap_or(&text);
            if body.is_empty() {
                Vec::new()
            } else {
                body.split('\n')
                    .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                    .collect()
            }
        };
        if tokens.is_empty() {
            return Err(err("the vocabulary is empty".into()));
        }
        if !tokens.iter().any(|t| t == UNK) {
            tokens.push(UNK.to_string());
        }
        let n = u32::try_from(tokens.len()).map_err(|_| err("more than 2^32 tokens".into()))?;
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let unk_id = ids.get(UNK).copied().unwrap_or(n - 1);
        Ok(Self {
            path: path.to_path_buf(),
            tokens,
            ids,
            unk_id,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
}

pub struct VocabFileTokenizer {
    source: Vocabulary,
    target: Vocabulary,
}

impl std::fmt::Debug for VocabFileTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VocabFileTokenizer")
            .field("source", &self.source.path)
            .field("target", &self.target.path)
            .finish()
    }
}

impl VocabFileTokenizer {
    /// (source, target) vocabulary paths in `dir`: `shared_vocabulary.{txt,json}` for both, else
    /// `source_vocabulary.{txt,json}` + `target_vocabulary.{txt,json}`.
    pub fn files_in(dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let find = |stem: &str| {
            ["txt", "json"]
                .iter()
                .map(|e| dir.join(format!("{stem}.{e}")))
                .find(|p| p.is_file())
        };
        if let Some(shared) = find("shared_vocabulary") {
            return Some((shared.clone(), shared));
        }
        Some((find("source_vocabulary")?, find("target_vocabulary")?))
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let (source, target) = Self::files_in(dir).ok_or_else(|| Error::NoTokenizer {
            dir: dir.to_path_buf(),
            looked_for: "shared_vocabulary.txt, or source_vocabulary.txt + target_vocabulary.txt".into(),
        })?;
        Self::from_files(&source, &target)
    }

    pub fn from_files(source: &Path, target: &Path) -> Result<Self> {
        Ok(Self {
            source: Vocabulary::open(source)?,
            target: Vocabulary::open(target)?,
        })
    }

    pub fn source(&self) -> &Vocabulary {
        &self.source
    }

    pub fn target(&self) -> &Vocabulary {
        &self.target
    }
}

impl Tokenizer for VocabFileTokenizer {
    /// One source id per non-whitespace character (`<unk>` when missing); no BOS/EOS.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut buf = [0u8; 4];
        Ok(text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| self.source.id(c.encode_utf8(&mut buf)).unwrap_or(self.source.unk_id))
            .collect())
    }

    /// Target tokens concatenated; `skip_special_tokens` drops `<blank>`, `<s>`, `</s>`, `<unk>`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            let token = self.target.token(id).ok_or_else(|| Error::TokenIdOutOfRange {
                path: self.target.path.clone(),
                id,
                vocab_size: self.target.len(),
            })?;
            if skip_special_tokens && SPECIAL_TOKENS.contains(&token) {
                continue;
            }
            out.push_str(token);
        }
        Ok(out)
    }

    fn vocab_size(&self) -> usize {
        self.target.len()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.target.id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.target.token(id).map(str::to_string)
    }

    fn source_id_to_token(&self, id: u32) -> Option<String> {
        self.source.token(id).map(str::to_string)
    }
}
