//! llama2.c tokenizer files (`tokenizer.bin`, `tok512.bin`), encoding and decoding as `run.c`.
//!
//! Format: i32 max_token_length, then per id: f32 score, i32 length, `length` bytes (the piece, with
//! SentencePiece's `▁` already turned into a space). Ids 0, 1, 2 are `<unk>`, BOS, EOS; ids 3..=258 are the
//! byte pieces `<0x00>`..`<0xFF>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Tokenizer;
use crate::{Error, Result};

const UNK_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
/// Id of the byte piece `<0x00>`; byte b is `BYTE_BASE + b`.
const BYTE_BASE: u32 = 3;

pub struct Llama2cTokenizer {
    path: PathBuf,
    max_token_length: usize,
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    /// piece bytes -> first id holding them (`str_lookup`).
    lookup: HashMap<Vec<u8>, u32>,
}

impl std::fmt::Debug for Llama2cTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama2cTokenizer")
            .field("path", &self.path)
            .field("n_pieces", &self.pieces.len())
            .finish()
    }
}

impl Llama2cTokenizer {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let err = |message: String| Error::TokenizerFile {
            path: path.to_path_buf(),
            message,
        };
        let read4 = |pos: usize| -> Option<[u8; 4]> { bytes.get(pos..pos + 4).and_then(|s| s.try_into().ok()) };
        let max_token_length = read4(0)
            .map(i32::from_le_bytes)
            .ok_or_else(|| err("shorter than its header".into()))?;
        let max_token_length = usize::try_from(max_token_length)
            .map_err(|_| err(format!("negative max_token_length {max_token_length}")))?;
        let mut pos = 4;
        let (mut pieces, mut scores) = (Vec::new(), Vec::new());
        while pos < bytes.len() {
            let id = pieces.len();
            let (Some(score), Some(len)) = (read4(pos), read4(pos + 4)) else {
                return Err(err(format!("id {id}: truncated record at byte {pos}")));
            };
            let len = i32::from_le_bytes(len);
            let len = usize::try_from(len).map_err(|_| err(format!("id {id}: negative piece length {len}")))?;
            let start = pos + 8;
            let piece = bytes.get(start..start.saturating_add(len)).ok_or_else(|| {
                err(format!(
                    "id {id}: piece of {len} bytes at byte {start} runs past the end ({})",
                    bytes.len()
                ))
            })?;
            if len > max_token_length {
                return Err(err(format!(
                    "id {id}: piece of {len} bytes exceeds max_token_length {max_token_length}"
                )));
            }
            scores.push(f32::from_le_bytes(score));
            pieces.push(piece.to_vec());
            pos = start + len;
        }
        // Byte fallback needs the 256 byte pieces at their fixed ids.
        if pieces.len() < (BYTE_BASE + 256) as usize {
            return Err(err(format!(
                "{} pieces; expected at least {} (specials + 256 byte pieces)",
                pieces.len(),
                BYTE_BASE + 256
            )));
        }
        for b in 0..=255u32 {
            let want = format!("<0x{b:02X}>");
            if pieces[(BYTE_BASE + b) as usize] != want.as_bytes() {
                return Err(err(format!(
                    "id {} should be the byte piece {want}, found {:?}",
                    BYTE_BASE + b,
                    String::from_utf8_lossy(&pieces[(BYTE_BASE + b) as usize])
                )));
            }
        }
        let mut lookup = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            lookup.entry(p.clone()).or_insert(i as u32);
        }
        Ok(Self {
            path: path.to_path_buf(),
            max_token_length,
            pieces,
            scores,
            lookup,
        })
    }

    pub fn max_token_length(&self) -> usize {
        self.max_token_length
    }

    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// run.c `encode(text, bos, eos)`.
    pub fn encode_with(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::with_capacity(text.len() + 3);
        if bos {
            ids.push(BOS_ID);
        }
        // Dummy prefix: a space before non-empty text.
        if !text.is_empty() {
            ids.extend(self.piece_or_bytes(b" "));
        }
        // One id per code point, else its UTF-8 bytes as byte pieces.
        let mut buf = [0u8; 4];
        for c in text.chars() {
            ids.extend(self.piece_or_bytes(c.encode_utf8(&mut buf).as_bytes()));
        }
        // Merge the adjacent pair whose concatenation is the best-scoring piece (leftmost on ties), until none.
        let pair = |a: u32, b: u32| -> Option<(f32, u32)> {
            let mut joined = self.pieces[a as usize].clone();
            joined.extend_from_slice(&self.pieces[b as usize]);
            self.lookup.get(&joined).map(|&id| (self.scores[id as usize], id))
        };
        let mut pairs: Vec<Option<(f32, u32)>> = ids.windows(2).map(|w| pair(w[0], w[1])).collect();
        loop {
            let mut best: Option<(usize, f32, u32)> = None;
            for (i, p) in pairs.iter().enumerate() {
                if let Some((score, id)) = *p {
                    let better = match best {
                        None => true,
                        Some((_, s, _)) => score > s,
                    };
                    if better {
                        best = Some((i, score, id));
                    }
                }
            }
            let Some((i, _, id)) = best else { break };
            ids[i] = id;
            ids.remove(i + 1);
            pairs.remove(i);
            if i > 0 {
                pairs[i - 1] = pair(ids[i - 1], ids[i]);
            }
            if i + 1 < ids.len() {
                pairs[i] = pair(ids[i], ids[i + 1]);
            }
        }
        if eos {
            ids.push(EOS_ID);
        }
        ids
    }

    fn piece_or_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        match self.lookup.get(bytes) {
            Some(&id) => vec![id],
            None => bytes.iter().map(|&b| BYTE_BASE + u32::from(b)).collect(),
        }
    }

    /// The bytes one id decodes to after `prev` (run.c `decode`): a piece right after BOS loses its leading
    /// space, and a piece `<0xXX>` is that raw byte.
    fn piece_bytes(&self, prev: Option<u32>, id: u32) -> &[u8] {
        let piece = &self.pieces[id as usize][..];
        let piece = match piece.strip_prefix(b" ") {
            Some(rest) if prev == Some(BOS_ID) => rest,
            _ => piece,
        };
        match byte_piece_value(piece) {
            Some(b) => &BYTE_VALUES[b as usize..][..1],
            None => piece,
        }
    }
}

/// `<0xXX>` (two hex digits) -> the byte XX.
fn byte_piece_value(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Every byte value once, so a byte piece can be returned as a slice.
static BYTE_VALUES: [u8; 256] = {
    let mut v = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        v[i] = i as u8;
        i += 1;
    }
    v
};

impl Tokenizer for Llama2cTokenizer {
    /// BOS prepended, no EOS (as run.c's generate).
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with(text, true, false))
    }

    /// Pieces concatenated as run.c prints them; bytes that are not valid UTF-8 become U+FFFD.
    /// `skip_special_tokens` drops `<unk>`, BOS and EOS.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut out: Vec<u8> = Vec::new();
        let mut prev = None;
        for &id in ids {
            if id as usize >= self.pieces.len() {
                return Err(Error::TokenIdOutOfRange {
                    path: self.path.clone(),
                    id,
                    vocab_size: self.pieces.len(),
                });
            }
            let bytes = self.piece_bytes(prev, id);
            prev = Some(id);
            if skip_special_tokens && matches!(id, UNK_ID | BOS_ID | EOS_ID) {
                continue;
            }
            out.extend_from_slice(bytes);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.lookup.get(token.as_bytes()).copied()
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.pieces
            .get(id as usize)
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(pieces: &[(&[u8], f32)]) -> Vec<u8> {
        let mut v = 7i32.to_le_bytes().to_vec();
        for (p, s) in pieces {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&(p.len() as i32).to_le_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn malformed_files_are_errors() {
        let p = Path::new("tok.bin");
        assert!(Llama2cTokenizer::parse(p, &[1, 2]).is_err());
        let mut ok: Vec<(Vec<u8>, f32)> = vec![
            (b"<unk>".to_vec(), 0.0),
            (b"\n<s>\n".to_vec(), 0.0),
            (b"\n</s>\n".to_vec(), 0.0),
        ];
        ok.extend((0..=255u32).map(|b| (format!("<0x{b:02X}>").into_bytes(), 0.0)));
        let refs: Vec<(&[u8], f32)> = ok.iter().map(|(p, s)| (&p[..], *s)).collect();
        let good = file(&refs);
        assert!(Llama2cTokenizer::parse(p, &good).is_ok());
        assert!(Llama2cTokenizer::parse(p, &good[..good.len() - 1]).is_err()); // truncated piece
        let mut neg = good.clone();
        neg[8..12].copy_from_slice(&(-5i32).to_le_bytes()); // negative length of id 0
        assert!(Llama2cTokenizer::parse(p, &neg).is_err());
        assert!(Llama2cTokenizer::parse(p, &file(&refs[..100])).is_err()); // too few pieces
    }
}
