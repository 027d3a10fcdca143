//! A small reader for SentencePiece `ModelProto` files (`*.spm`, `*.model`).
//!
//! Only the fields tokenization needs are read (see `sentencepiece_model.proto`); every other field is
//! skipped by its wire type. The protobuf wire format is simple enough that a bounds-checked reader is
//! shorter than the build machinery `prost` code generation brings (the `sentencepiece-model` crate needs
//! `prost-build` + `protox` at build time).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry; its index in [`SpmModelProto::pieces`] is its SentencePiece id.
#[derive(Clone, Debug)]
pub struct SpmPiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// `NormalizerSpec`, with the proto defaults.
#[derive(Clone, Debug)]
pub struct SpmNormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for SpmNormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The parts of `TrainerSpec` that matter when encoding, with the proto defaults.
#[derive(Clone, Debug)]
pub struct SpmTrainerSpec {
    pub model_type: SpmModelType,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_surface: String,
}

impl Default for SpmTrainerSpec {
    fn default() -> Self {
        Self {
            model_type: SpmModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_surface: " \u{2047} ".to_string(),
        }
    }
}

/// A parsed SentencePiece model file.
#[derive(Clone, Debug)]
pub struct SpmModelProto {
    pub path: PathBuf,
    pub pieces: Vec<SpmPiece>,
    pub trainer: SpmTrainerSpec,
    pub normalizer: SpmNormalizerSpec,
    /// Length of `denormalizer_spec.precompiled_charsmap` (a non-empty one changes decoding).
    pub denormalizer_charsmap_len: usize,
}

impl SpmModelProto {
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
        let mut model = SpmModelProto {
            path: path.to_path_buf(),
            pieces: Vec::new(),
            trainer: SpmTrainerSpec::default(),
            normalizer: SpmNormalizerSpec::default(),
            denormalizer_charsmap_len: 0,
        };
        let mut r = Reader::new(bytes);
        while let Some((field, value)) = r.next_field().map_err(|e| err(format!("ModelProto: {e}")))? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    let piece = parse_piece(b).map_err(|e| err(format!("piece {}: {e}", model.pieces.len())))?;
                    model.pieces.push(piece);
                }
                (2, Value::Bytes(b)) => {
                    model.trainer = parse_trainer(b).map_err(|e| err(format!("trainer_spec: {e}")))?
                }
                (3, Value::Bytes(b)) => {
                    model.normalizer = parse_normalizer(b).map_err(|e| err(format!("normalizer_spec: {e}")))?
                }
                (5, Value::Bytes(b)) => {
                    let d = parse_normalizer(b).map_err(|e| err(format!("denormalizer_spec: {e}")))?;
                    model.denormalizer_charsmap_len = d.precompiled_charsmap.len();
                }
                (1..=3 | 5, _) => return Err(err(format!("ModelProto field {field} has the wrong wire type"))),
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(err("the model has no pieces (not a SentencePiece model file?)".into()));
        }
        Ok(model)
    }
}

fn parse_piece(bytes: &[u8]) -> std::result::Result<SpmPiece, String> {
    let mut piece = SpmPiece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => piece.piece = utf8(b, "piece")?,
            (2, Value::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                piece.kind = PieceType::from_proto(v).ok_or_else(|| format!("unknown piece type {v}"))?
            }
            (1..=3, _) => return Err(format!("field {field} has the wrong wire type")),
            _ => {}
        }
    }
    if piece.piece.is_empty() {
        return Err("empty piece".into());
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8]) -> std::result::Result<SpmTrainerSpec, String> {
    let mut t = SpmTrainerSpec::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (3, Value::Varint(v)) => {
                t.model_type = match v {
                    1 => SpmModelType::Unigram,
                    2 => SpmModelType::Bpe,
                    3 => SpmModelType::Word,
                    4 => SpmModelType::Char,
                    _ => return Err(format!("unknown model_type {v}")),
                }
            }
            (24, Value::Varint(v)) => t.treat_whitespace_as_suffix = v != 0,
            (35, Value::Varint(v)) => t.byte_fallback = v != 0,
            (44, Value::Bytes(b)) => t.unk_surface = utf8(b, "unk_surface")?,
            (3 | 24 | 35 | 44, _) => return Err(format!("field {field} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(t)
}

fn parse_normalizer(bytes: &[u8]) -> std::result::Result<SpmNormalizerSpec, String> {
    let mut n = SpmNormalizerSpec::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => n.name = utf8(b, "name")?,
            (2, Value::Bytes(b)) => n.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => n.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => n.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => n.escape_whitespaces = v != 0,
            (1..=5, _) => return Err(format!("field {field} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(n)
}

fn utf8(b: &[u8], what: &str) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// One protobuf field value, by wire type.
enum Value<'a> {
    Varint(u64),
    /// No field read here is fixed64: skipped like any unknown field.
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A bounds-checked cursor over protobuf wire-format bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or None at the end of the buffer.
    fn next_field(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length does not fit in usize")?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "fixed32")?)),
            w => {
                return Err(format!(
                    "unsupported wire type {w} for field {field} at byte {}",
                    self.pos
                ))
            }
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_inputs_are_errors() {
        let p = Path::new("x.spm");
        assert!(SpmModelProto::parse(p, &[]).is_err());
        assert!(SpmModelProto::parse(p, &[0x0a]).is_err()); // field 1, length missing
        assert!(SpmModelProto::parse(p, &[0x0a, 0x05, 0x0a]).is_err()); // length past the end
        assert!(SpmModelProto::parse(p, &[0xff; 11]).is_err()); // overlong varint
        assert!(SpmModelProto::parse(p, &[0x0b]).is_err()); // wire type 3 (groups) unsupported
    }

    #[test]
    fn minimal_model_parses() {
        // pieces { piece: "a" score: -1.5 type: NORMAL }
        let mut piece = vec![0x0a, 0x01, b'a', 0x15];
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        piece.extend_from_slice(&[0x18, 0x01]);
        let mut bytes = vec![0x0a, piece.len() as u8];
        bytes.extend_from_slice(&piece);
        let m = SpmModelProto::parse(Path::new("x.spm"), &bytes).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "a");
        assert_eq!(m.pieces[0].score, -1.5);
        assert_eq!(m.pieces[0].kind, PieceType::Normal);
        assert!(m.normalizer.add_dummy_prefix);
    }
}
