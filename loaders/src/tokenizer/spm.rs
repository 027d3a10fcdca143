//! A SentencePiece unigram model (`.spm` / `.model`), encoding and decoding pieces as the `sentencepiece`
//! library does.
//!
//! The spm's `precompiled_charsmap` runs through the `tokenizers` crate's `Precompiled` normalizer (as HF's
//! `convert_slow_tokenizer.SpmConverter` does). The rest follows the `sentencepiece` C++ code, because the
//! `tokenizers` equivalents only approximate it:
//! - whitespace (`normalizer.cc`): leading and trailing spaces removed, runs collapsed, spaces escaped to `▁`,
//!   and the dummy `▁` prefix added only when something is left;
//! - the Viterbi search (`unigram_model.cc` `EncodeOptimized`) sums scores in **f32** over the whole
//!   sentence, and ties go to the earliest start. `tokenizers::models::Unigram` sums in f64, which picks a
//!   different one of two near-equal segmentations on long inputs (seen on a line of 300 `a`), so the search
//!   is written out here;
//! - only NORMAL pieces enter the lattice: control pieces (`<s>`, `</s>`) and `<unk>` are never matched in
//!   text; an unknown character scores min(NORMAL score) - 10 and runs of unknowns are fused into one piece.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::{NormalizedString, Normalizer};

use super::spm_proto::{PieceType, SpmModelProto, SpmModelType, SpmNormalizerSpec};
use crate::{Error, Result};

/// SentencePiece's whitespace symbol U+2581.
pub const SPACE_SYMBOL: &str = "\u{2581}";

/// sentencepiece's `kUnkPenalty`: an unknown character scores this much below the worst piece.
const UNK_PENALTY: f32 = 10.0;

pub struct SentencePiece {
    path: PathBuf,
    pieces: Vec<(String, PieceType)>,
    piece_to_id: HashMap<String, u32>,
    unk_id: u32,
    unk_surface: String,
    spec: SpmNormalizerSpec,
    precompiled: Option<Precompiled>,
    /// NORMAL pieces -> score: the lattice vocabulary.
    lattice: HashMap<String, f32>,
    /// Longest NORMAL piece, in bytes.
    max_piece_len: usize,
    /// min(NORMAL score) - UNK_PENALTY.
    unk_score: f32,
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("path", &self.path)
            .field("n_pieces", &self.pieces.len())
            .finish()
    }
}

impl SentencePiece {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_proto(SpmModelProto::open(path)?)
    }

    pub fn from_proto(proto: SpmModelProto) -> Result<Self> {
        let path = proto.path.clone();
        let unsupported = |message: String| Error::TokenizerUnsupported {
            path: path.clone(),
            message,
        };
        if proto.trainer.model_type != SpmModelType::Unigram {
            return Err(unsupported(format!(
                "model type {:?} (only UNIGRAM is implemented)",
                proto.trainer.model_type
            )));
        }
        if proto.trainer.byte_fallback {
            return Err(unsupported("byte_fallback".into()));
        }
        if proto.trainer.treat_whitespace_as_suffix {
            return Err(unsupported("treat_whitespace_as_suffix".into()));
        }
        if !proto.normalizer.escape_whitespaces {
            return Err(unsupported("escape_whitespaces = false".into()));
        }
        if proto.denormalizer_charsmap_len > 0 {
            return Err(unsupported(
                "a denormalizer (denormalizer_spec.precompiled_charsmap)".into(),
            ));
        }
        if let Some(p) = proto
            .pieces
            .iter()
            .find(|p| matches!(p.kind, PieceType::UserDefined | PieceType::Byte))
        {
            return Err(unsupported(format!("{:?} piece {:?}", p.kind, p.piece)));
        }
        let unk_ids: Vec<usize> = proto
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PieceType::Unknown)
            .map(|(i, _)| i)
            .collect();
        let [unk_index] = unk_ids[..] else {
            return Err(Error::TokenizerFile {
                path,
                message: format!("expected exactly one UNKNOWN piece, found {}", unk_ids.len()),
            });
        };

        // The lattice vocabulary: NORMAL pieces only (the first of repeated strings, as PieceToId).
        let mut lattice: HashMap<String, f32> = HashMap::new();
        for p in proto.pieces.iter().filter(|p| p.kind == PieceType::Normal) {
            lattice.entry(p.piece.clone()).or_insert(p.score);
        }
        let max_piece_len = lattice.keys().map(String::len).max().unwrap_or(0);
        let min_score = proto
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::Normal)
            .map(|p| p.score)
            .fold(f32::MAX, f32::min);
        let unk_score = min_score - UNK_PENALTY;

        let precompiled = if proto.normalizer.precompiled_charsmap.is_empty() {
            None
        } else {
            validate_charsmap(&proto.normalizer.precompiled_charsmap).map_err(|message| Error::TokenizerFile {
                path: path.clone(),
                message: format!("precompiled_charsmap: {message}"),
            })?;
            Some(
                Precompiled::from(&proto.normalizer.precompiled_charsmap).map_err(|e| Error::TokenizerFile {
                    path: path.clone(),
                    message: format!("precompiled_charsmap: {e}"),
                })?,
            )
        };

        // PieceToId: the first piece with that string (sentencepiece keeps the first too).
        let mut piece_to_id = HashMap::with_capacity(proto.pieces.len());
        for (i, p) in proto.pieces.iter().enumerate() {
            piece_to_id.entry(p.piece.clone()).or_insert(i as u32);
        }
        Ok(Self {
            path,
            pieces: proto.pieces.into_iter().map(|p| (p.piece, p.kind)).collect(),
            piece_to_id,
            unk_id: unk_index as u32,
            unk_surface: proto.trainer.unk_surface,
            spec: proto.normalizer,
            precompiled,
            lattice,
            max_piece_len,
            unk_score,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// `PieceToId`: the id of a piece, `unk_id` when the model does not have it.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.piece_to_id.get(piece).copied().unwrap_or(self.unk_id)
    }

    pub fn contains(&self, piece: &str) -> bool {
        self.piece_to_id.contains_key(piece)
    }

    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|(p, _)| p.as_str())
    }

    /// The normalized form the lattice sees: charsmap, then sentencepiece's whitespace rules.
    pub fn normalize(&self, text: &str) -> Result<String> {
        if text.is_empty() {
            return Ok(String::new());
        }
        let mut normalized = NormalizedString::from(text);
        if let Some(p) = &self.precompiled {
            p.normalize(&mut normalized).map_err(|e| Error::Tokenize {
                path: self.path.clone(),
                message: format!("normalizer: {e}"),
            })?;
        }
        let remove_extra = self.spec.remove_extra_whitespaces;
        let mut out = String::with_capacity(normalized.get().len() + 8);
        if self.spec.add_dummy_prefix {
            out.push_str(SPACE_SYMBOL);
        }
        // Each space becomes ▁; with remove_extra_whitespaces, leading spaces and repeats are dropped.
        let mut prev_space = remove_extra;
        for c in normalized.get().chars() {
            if c == ' ' {
                if !(remove_extra && prev_space) {
                    out.push_str(SPACE_SYMBOL);
                }
                prev_space = true;
            } else {
                out.push(c);
                prev_space = false;
            }
        }
        if remove_extra {
            while out.ends_with(SPACE_SYMBOL) {
                out.truncate(out.len() - SPACE_SYMBOL.len());
            }
        }
        Ok(out)
    }

    /// `encode(text, out_type=str)`: the pieces of one text. A run of unknown characters is one piece holding
    /// its (normalized) surface, as in sentencepiece.
    pub fn encode_pieces(&self, text: &str) -> Result<Vec<String>> {
        let normalized = self.normalize(text)?;
        Ok(self.viterbi(&normalized))
    }

    /// sentencepiece's `EncodeOptimized` over a normalized string, with unknown runs fused.
    fn viterbi(&self, s: &str) -> Vec<String> {
        #[derive(Clone, Copy)]
        struct Best {
            score: f32,
            start: Option<usize>,
            is_unk: bool,
        }
        let n = s.len();
        // best[e]: the best path over s[..e]; filled left to right, one start position at a time.
        let mut best = vec![
            Best {
                score: 0.0,
                start: None,
                is_unk: false
            };
            n + 1
        ];
        for (start, c) in s.char_indices() {
            let till_here = best[start].score;
            let char_len = c.len_utf8();
            let mut has_single_char_piece = false;
            // Every NORMAL piece that starts here, shortest first.
            for (off, c2) in s[start..].char_indices() {
                let end = start + off + c2.len_utf8();
                if end - start > self.max_piece_len {
                    break;
                }
                if let Some(&score) = self.lattice.get(&s[start..end]) {
                    let candidate = score + till_here;
                    let target = &mut best[end];
                    if target.start.is_none() || candidate > target.score {
                        *target = Best {
                            score: candidate,
                            start: Some(start),
                            is_unk: false,
                        };
                    }
                    has_single_char_piece |= end - start == char_len;
                }
            }
            // No piece covers this character alone: an unknown node.
            if !has_single_char_piece {
                let candidate = self.unk_score + till_here;
                let target = &mut best[start + char_len];
                if target.start.is_none() || candidate > target.score {
                    *target = Best {
                        score: candidate,
                        start: Some(start),
                        is_unk: true,
                    };
                }
            }
        }
        // Backtrack; consecutive unknown nodes become one piece.
        let mut spans: Vec<(usize, usize, bool)> = Vec::new();
        let mut end = n;
        while end > 0 {
            let Best { start, is_unk, .. } = best[end];
            let start = start.unwrap_or(0); // every end is reached: each character has a node
            match spans.last_mut() {
                Some(last) if is_unk && last.2 => last.0 = start,
                _ => spans.push((start, end, is_unk)),
            }
            end = start;
        }
        spans.iter().rev().map(|&(a, b, _)| s[a..b].to_string()).collect()
    }

    /// `decode_pieces`: sentencepiece's `Decode` for a model without byte pieces. Control pieces vanish,
    /// `<unk>` becomes the unk surface, a piece the model does not know is copied as is, `▁` becomes a space,
    /// and leading `▁` of the first pieces are dropped.
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let strip_leading = self.spec.add_dummy_prefix || self.spec.remove_extra_whitespaces;
        let mut text = String::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        for piece in pieces {
            let piece = piece.as_ref();
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            let id = self.piece_to_id(piece);
            let kind = self.pieces.get(id as usize).map_or(PieceType::Unknown, |p| p.1);
            bos_ws_seen = false;
            match kind {
                PieceType::Control => {}
                PieceType::Unknown if id == self.unk_id => {
                    if self.id_to_piece(id) == Some(piece) {
                        text.push_str(&self.unk_surface);
                    } else {
                        text.push_str(piece);
                    }
                }
                _ => {
                    let mut p = piece;
                    if is_bos_ws && strip_leading {
                        if let Some(rest) = p.strip_prefix(SPACE_SYMBOL) {
                            p = rest;
                            // With remove_extra_whitespaces every leading ▁ is dropped, so keep looking.
                            bos_ws_seen = !self.spec.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&p.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        text
    }
}

/// Checks a `precompiled_charsmap` (u32 trie size, a darts-clone double array of u32 units, then NUL-separated
/// normalized strings) so that `spm_precompiled`'s lookups, which index without checks, cannot go out of
/// bounds or slice inside a UTF-8 character: every transition any key byte can take from every reachable node
/// must land inside the array, and every leaf must point at a character boundary of the strings.
pub(crate) fn validate_charsmap(blob: &[u8]) -> std::result::Result<(), String> {
    let trie_size = blob
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("shorter than its 4-byte header")?;
    let units: Vec<usize> = blob
        .get(4..4 + trie_size / 4 * 4)
        .ok_or_else(|| format!("trie of {trie_size} bytes runs past the end ({} bytes)", blob.len()))?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let strings =
        std::str::from_utf8(&blob[4 + trie_size / 4 * 4..]).map_err(|_| "normalized strings are not UTF-8")?;
    // The unit layout of darts-clone (as spm_precompiled reads it).
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let label = |u: usize| u & ((1 << 31) | 0xFF);
    let has_leaf = |u: usize| (u >> 8) & 1 == 1;
    let value = |u: usize| u & ((1 << 31) - 1);
    let root = *units.first().ok_or("empty trie")?;
    // Every base a lookup can stand on (it may lie past the array: only the positions read must not).
    let mut seen = std::collections::HashSet::from([offset(root)]);
    let mut stack = vec![offset(root)];
    while let Some(base) = stack.pop() {
        for c in 1..=255usize {
            let pos = base ^ c;
            let unit = *units
                .get(pos)
                .ok_or_else(|| format!("transition to unit {pos} is outside the trie"))?;
            if label(unit) != c {
                continue;
            }
            let next = pos ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *units
                    .get(next)
                    .ok_or_else(|| format!("leaf unit {next} is outside the trie"))?;
                let start = value(leaf);
                if start > strings.len() || !strings.is_char_boundary(start) {
                    return Err(format!("leaf points at byte {start}, not a character of the strings"));
                }
            }
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::spm_proto::{SpmPiece, SpmTrainerSpec};

    fn toy() -> SentencePiece {
        let piece = |s: &str, score: f32, kind| SpmPiece {
            piece: s.to_string(),
            score,
            kind,
        };
        let proto = SpmModelProto {
            path: PathBuf::from("toy.spm"),
            pieces: vec![
                piece("<unk>", 0.0, PieceType::Unknown),
                piece("<s>", 0.0, PieceType::Control),
                piece("</s>", 0.0, PieceType::Control),
                piece("\u{2581}", -2.0, PieceType::Normal),
                piece("\u{2581}ab", -1.0, PieceType::Normal),
                piece("a", -3.0, PieceType::Normal),
                piece("b", -3.0, PieceType::Normal),
                piece("c", -3.0, PieceType::Normal),
            ],
            trainer: SpmTrainerSpec::default(),
            normalizer: SpmNormalizerSpec::default(),
            denormalizer_charsmap_len: 0,
        };
        SentencePiece::from_proto(proto).unwrap()
    }

    #[test]
    fn hostile_charsmaps_are_rejected() {
        let blob = |units: &[u32], strings: &[u8]| {
            let mut b = ((units.len() * 4) as u32).to_le_bytes().to_vec();
            units.iter().for_each(|u| b.extend_from_slice(&u.to_le_bytes()));
            b.extend_from_slice(strings);
            b
        };
        assert!(validate_charsmap(&[1, 0]).is_err());
        assert!(validate_charsmap(&blob(&[], b"")).is_err()); // empty trie
        assert!(validate_charsmap(&blob(&[0; 16], b"x\0")).is_err()); // root children outside the array
        let mut b = blob(&[0; 256], b"");
        b[0] = 0xff; // trie size past the end
        assert!(validate_charsmap(&b).is_err());
        assert!(validate_charsmap(&blob(&[0; 256], &[0xff])).is_err()); // strings not UTF-8
                                                                        // A root whose child 'a' (unit 97: label 97, leaf) points past the strings.
        let mut units = vec![0u32; 256];
        units[97] = 97 | (1 << 8) | (2 << 10); // next base = 97 ^ 2 = 99
        units[99] = 1000; // leaf value: byte 1000
        assert!(validate_charsmap(&blob(&units, b"a\0")).unwrap_err().contains("1000"));
        units[99] = 0;
        assert!(validate_charsmap(&blob(&units, b"a\0")).is_ok());
    }

    #[test]
    fn whitespace_rules() {
        let sp = toy();
        assert_eq!(sp.normalize("").unwrap(), "");
        assert_eq!(sp.normalize("   ").unwrap(), "");
        assert_eq!(sp.normalize("  ab   c ").unwrap(), "\u{2581}ab\u{2581}c");
    }

    #[test]
    fn encode_fuses_unknowns_and_never_matches_control_pieces() {
        let sp = toy();
        assert_eq!(sp.encode_pieces("ab c").unwrap(), ["\u{2581}ab", "\u{2581}", "c"]);
        assert_eq!(sp.encode_pieces("ab xy").unwrap(), ["\u{2581}ab", "\u{2581}", "xy"]);
        assert_eq!(sp.encode_pieces("<s>").unwrap(), ["\u{2581}", "<s>"]); // "<s>" fused as one unknown run
    }

    #[test]
    fn decode_rules() {
        let sp = toy();
        assert_eq!(sp.decode_pieces(&["\u{2581}", "\u{2581}ab", "c"]), "abc");
        assert_eq!(sp.decode_pieces(&["<s>", "\u{2581}ab", "</s>", "\u{2581}ab"]), "ab ab");
        assert_eq!(sp.decode_pieces(&["\u{2581}ab", "\u{2581}c"]), "ab\u{2581}c"); // unknown piece: copied as is
        assert_eq!(
            sp.decode_pieces(&["<unk>", "\u{2581}zz", "\u{2581}ab"]),
            " \u{2047} \u{2581}zz ab"
        );
        let none: [&str; 0] = [];
        assert_eq!(sp.decode_pieces(&none), "");
    }
}
