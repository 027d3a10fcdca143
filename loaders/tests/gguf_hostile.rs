//! Hostile GGUF files: each malformation gets its specific error, never a panic or an out-of-bounds read.

use std::path::PathBuf;

use loaders::gguf::GgufFile;
use loaders::Error;

/// A little-endian GGUF writer for hand-made files.
#[derive(Default)]
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Builder {
        let mut b = Builder::default();
        b.buf.extend_from_slice(b"GGUF");
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    /// A u32 metadata entry.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info.
    fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ggml_type).u64(offset)
    }
    /// Zero padding up to a multiple of `align`, then `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        let len = self.buf.len();
        self.buf.resize(len + n, 0x11);
        self
    }
    fn open(&self) -> (tempfile::TempDir, PathBuf, loaders::Result<GgufFile>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostile.gguf");
        std::fs::write(&path, &self.buf).unwrap();
        let r = GgufFile::open(&path);
        (dir, path, r)
    }
}

/// A valid file with one F32 tensor [4, 8], for the tests to break.
fn valid() -> Builder {
    let mut b = Builder::header(3, 1, 1);
    b.kv_u32("general.alignment", 32)
        .tensor("w", &[8, 4], 0, 0)
        .data(32, 4 * 32);
    b
}

#[test]
fn valid_file_opens() {
    let (_d, _p, r) = valid().open();
    let f = r.expect("valid file");
    assert_eq!(f.dequantize("w").unwrap(), vec![f32::from_le_bytes([0x11; 4]); 32]);
    assert_eq!(f.tensor_info("w").unwrap().shape(), vec![4, 8]);
}

#[test]
fn empty_file_is_truncated() {
    let (_d, _p, r) = Builder::default().open();
    assert!(matches!(r, Err(Error::GgufTruncated { .. })), "{r:?}");
}

#[test]
fn bad_magic() {
    let mut b = valid();
    b.buf[..4].copy_from_slice(b"GGML");
    let (_d, path, r) = b.open();
    match r {
        Err(Error::GgufBadMagic { path: p, found }) => {
            assert_eq!(&found, b"GGML");
            assert_eq!(p, path);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_version() {
    for v in [1, 4, u32::MAX] {
        let mut b = valid();
        b.buf[4..8].copy_from_slice(&v.to_le_bytes());
        let (_d, _p, r) = b.open();
        assert!(
            matches!(r, Err(Error::GgufVersion { found, .. }) if found == v),
            "{r:?}"
        );
    }
    let mut b = valid();
    b.buf[4..8].copy_from_slice(&3u32.to_be_bytes());
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { reason, .. }) if reason.contains("big-endian")),
        "{r:?}"
    );
    let mut b = valid();
    b.buf[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert!(b.open().2.is_ok(), "v2 has the v3 layout");
}

#[test]
fn truncated_header() {
    let full = valid();
    for len in [3, 4, 7, 12, 20, 23] {
        let b = Builder {
            buf: full.buf[..len].to_vec(),
        };
        let (_d, _p, r) = b.open();
        match r {
            Err(Error::GgufTruncated { file_len, .. }) => assert_eq!(file_len, len as u64),
            other => panic!("len {len}: {other:?}"),
        }
    }
}

#[test]
fn truncated_anywhere_never_panics() {
    // Every prefix of a valid file is an error (or, past the infos, a data bounds error), never a panic.
    let full = valid();
    for len in 0..full.buf.len() {
        let b = Builder {
            buf: full.buf[..len].to_vec(),
        };
        let (_d, _p, r) = b.open();
        assert!(
            matches!(
                r,
                Err(Error::GgufTruncated { .. }) | Err(Error::GgufCount { .. }) | Err(Error::GgufTensorBounds { .. })
            ),
            "len {len}: {r:?}"
        );
    }
}

#[test]
fn counts_beyond_file() {
    // Tensor count.
    let mut b = Builder::header(3, u64::MAX, 0);
    b.data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, found, .. }) if what.contains("tensor count") && *found == u64::MAX),
        "{r:?}"
    );
    // Metadata count.
    let b = Builder::header(3, 0, 1 << 40);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, .. }) if what.contains("metadata")),
        "{r:?}"
    );
    // Array element count.
    let mut b = Builder::header(3, 0, 1);
    b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(u64::MAX / 2);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, .. }) if what.contains("element count") && what.contains("tokenizer.ggml.tokens")),
        "{r:?}"
    );
}

#[test]
fn string_length_beyond_file() {
    // Key length.
    let mut b = Builder::header(3, 0, 1);
    b.u64(1 << 50).u32(0).u32(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, found, .. }) if what.contains("key #0") && *found == 1 << 50),
        "{r:?}"
    );
    // String value length.
    let mut b = Builder::header(3, 0, 1);
    b.str("general.name").u32(8).u64(1000).u32(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, found: 1000, .. }) if what.contains("general.name")),
        "{r:?}"
    );
    // Tensor name length.
    let mut b = Builder::header(3, 1, 0);
    b.u64(u64::MAX).u32(1).u64(8).u32(0).u64(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufCount { what, .. }) if what.contains("tensor #0")),
        "{r:?}"
    );
}

#[test]
fn invalid_utf8_string() {
    let mut b = Builder::header(3, 0, 1);
    b.u64(2);
    b.buf.extend_from_slice(&[0xff, 0xfe]);
    b.u32(4).u32(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { reason, .. }) if reason.contains("UTF-8")),
        "{r:?}"
    );
}

#[test]
fn unknown_value_type_and_bad_bool() {
    let mut b = Builder::header(3, 0, 1);
    b.str("k").u32(13).u32(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { what, reason, .. }) if what.contains("\"k\"") && reason.contains("13")),
        "{r:?}"
    );
    let mut b = Builder::header(3, 0, 1);
    b.str("flag").u32(7);
    b.buf.push(2);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { reason, .. }) if reason.contains("bool")),
        "{r:?}"
    );
}

#[test]
fn deeply_nested_arrays() {
    let mut b = Builder::header(3, 0, 1);
    b.str("deep");
    b.u32(9);
    for _ in 0..64 {
        b.u32(9).u64(1);
    }
    b.u32(4).u64(0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { reason, .. }) if reason.contains("nested")),
        "{r:?}"
    );
}

#[test]
fn duplicate_key_and_tensor() {
    let mut b = Builder::header(3, 0, 2);
    b.kv_u32("a", 1).kv_u32("a", 2);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufInvalid { reason, .. }) if reason.contains("duplicate")),
        "{r:?}"
    );
    let mut b = Builder::header(3, 2, 0);
    b.tensor("w", &[8], 0, 0).tensor("w", &[8], 0, 32).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorInfo { name, reason, .. }) if name == "w" && reason.contains("twice")),
        "{r:?}"
    );
}

#[test]
fn bad_alignment_value() {
    for (ty, v) in [(4u32, 0u32), (4, 48)] {
        let mut b = Builder::header(3, 0, 1);
        b.str("general.alignment").u32(ty).u32(v);
        let (_d, _p, r) = b.open();
        assert!(
            matches!(&r, Err(Error::GgufMetadata { key, .. }) if key == "general.alignment"),
            "{r:?}"
        );
    }
}

#[test]
fn tensor_offset_out_of_bounds() {
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[8, 4], 0, 32).data(32, 4 * 32);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorBounds { name, offset: 32, size: 128, data_len: 128, .. }) if name == "w"),
        "{r:?}"
    );
    // Offset near u64::MAX: the end overflows, still a bounds error.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[8], 0, u64::MAX - 31).data(32, 32);
    let (_d, _p, r) = b.open();
    assert!(matches!(&r, Err(Error::GgufTensorBounds { .. })), "{r:?}");
}

#[test]
fn tensor_dims_out_of_bounds() {
    // Dims larger than the data.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("big", &[1 << 20, 1 << 20], 0, 0).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorBounds { name, .. }) if name == "big"),
        "{r:?}"
    );
    // Dims whose product overflows u64.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("ovf", &[1 << 40, 1 << 40], 0, 0).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorInfo { name, reason, .. }) if name == "ovf" && reason.contains("overflow")),
        "{r:?}"
    );
    // Too many dims.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("5d", &[1, 1, 1, 1, 1], 0, 0).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorInfo { name, reason, .. }) if name == "5d" && reason.contains("dimensions")),
        "{r:?}"
    );
    // A row that is not whole blocks (Q8_0, 32 per block).
    let mut b = Builder::header(3, 1, 0);
    b.tensor("q", &[48, 2], 8, 0).data(32, 256);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTensorInfo { name, reason, .. }) if name == "q" && reason.contains("block")),
        "{r:?}"
    );
}

#[test]
fn unknown_and_unsupported_types() {
    // An id ggml does not define: rejected at open, naming the tensor.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[8], 4, 0).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufUnsupportedType { name, ggml_type, .. }) if name == "w" && ggml_type.contains("unknown ggml type 4")),
        "{r:?}"
    );
    // A known type qkv does not dequantise (Q2_K): opens, dequantize names tensor and type.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("q2", &[256], 10, 0).data(32, 96);
    let (_d, _p, r) = b.open();
    let f = r.expect("a Q2_K tensor is a valid file");
    let e = f.dequantize("q2").unwrap_err();
    assert!(
        matches!(&e, Error::GgufUnsupportedType { name, ggml_type, .. } if name == "q2" && ggml_type.contains("Q2_K")),
        "{e:?}"
    );
    assert!(e.to_string().contains("hostile.gguf"), "{e}");
}

#[test]
fn misaligned_data() {
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[4], 0, 4).data(32, 64);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufMisaligned { name, offset: 4, alignment: 32, .. }) if name == "w"),
        "{r:?}"
    );
    // With general.alignment = 8 the same offset 8 is fine (after an 8-byte tensor), 4 is not.
    let mut b = Builder::header(3, 2, 1);
    b.kv_u32("general.alignment", 8)
        .tensor("pad", &[2], 0, 0)
        .tensor("w", &[4], 0, 8)
        .data(8, 24);
    assert!(b.open().2.is_ok());
    let mut b = Builder::header(3, 1, 1);
    b.kv_u32("general.alignment", 8).tensor("w", &[4], 0, 4).data(8, 64);
    let (_d, _p, r) = b.open();
    assert!(matches!(&r, Err(Error::GgufMisaligned { alignment: 8, .. })), "{r:?}");
}

#[test]
fn missing_padding_before_data() {
    // Tensor infos end mid-alignment and the file ends there: the data section is missing.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("w", &[1], 0, 0);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufTruncated { what, .. }) if what.contains("data section")),
        "{r:?}"
    );
}

/// Flip 1-4 bytes of `base`, `n` times (deterministic LCG from `seed`): any result is fine except a panic, and
/// a tensor that dequantises has its element count. With `hot`, 3 of 4 flips land in the first `hot` bytes (the
/// header and infos, where sizes and types live).
fn mutations_never_panic(base: &[u8], n: usize, mut seed: u64, hot: Option<usize>) {
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let dir = tempfile::tempdir().unwrap();
    for k in 0..n {
        // A fresh name each time: rewriting one file makes ext4 flush it to disk on every close.
        let path = dir.path().join(format!("m{k}.gguf"));
        let mut buf = base.to_vec();
        for _ in 0..1 + next() % 4 {
            let i = match hot {
                Some(h) if next() % 4 != 0 => next() % h.min(buf.len()),
                _ => next() % buf.len(),
            };
            buf[i] = next() as u8;
        }
        std::fs::write(&path, &buf).unwrap();
        if let Ok(f) = GgufFile::open(&path) {
            for t in f.tensor_infos() {
                if let Ok(v) = f.dequantize(&t.name) {
                    assert_eq!(v.len(), t.numel(), "{}", t.name);
                }
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn random_mutations_never_panic() {
    mutations_never_panic(&valid().buf, 2000, 0x2545F4914F6CDD1D, None);
}

/// A llama GGUF with hostile hyper-parameters: the importer answers with errors, before allocating by them.
#[test]
fn import_with_hostile_hyperparameters() {
    use loaders::gguf::{import_to_hf_dir, ImportOptions};
    let build = |block_count: u64, head_count: u64, key_length: u64| {
        let kvs: [(&str, u64); 6] = [
            ("llama.embedding_length", 8),
            ("llama.feed_forward_length", 8),
            ("llama.context_length", 8),
            ("llama.block_count", block_count),
            ("llama.attention.head_count", head_count),
            ("llama.attention.key_length", key_length),
        ];
        let mut b = Builder::header(3, 1, kvs.len() as u64 + 2);
        b.str("general.architecture").u32(8).str("llama");
        b.str("llama.attention.layer_norm_rms_epsilon")
            .u32(6)
            .u32(1e-5f32.to_bits());
        for (k, v) in kvs {
            b.str(k).u32(10).u64(v);
        }
        b.tensor("token_embd.weight", &[8, 16], 0, 0).data(32, 8 * 16 * 4);
        b
    };
    let out = tempfile::tempdir().unwrap();
    let (_d, path, r) = build(u32::MAX as u64 * 1000, 2, 4).open();
    r.expect("the file itself is valid");
    let e = import_to_hf_dir(&path, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::GgufMetadata { key, .. } if key == "llama.block_count"),
        "{e:?}"
    );
    let (_d, path, _) = build(0, 2, 4).open();
    let e = import_to_hf_dir(&path, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::GgufMetadata { key, .. } if key == "llama.block_count"),
        "{e:?}"
    );
    let (_d, path, _) = build(1, 1 << 40, 1 << 40).open();
    let e = import_to_hf_dir(&path, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::GgufMetadata { .. }), "{e:?}");
    let (_d, path, _) = build(1, 2, 3).open();
    let e = import_to_hf_dir(&path, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::GgufMetadata { key, .. } if key == "llama.attention.key_length"),
        "{e:?}"
    );
    assert!(!out.path().join("model.safetensors").exists());
}

// ---- Quantised blocks: sizes, truncation, types that do not match their data --------------------------------

/// ggml type ids of the block types qkv dequantises, with (elements, bytes) per block.
const BLOCK_TYPES: &[(u32, &str, u64, u64)] = &[
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
];

/// Tensors packed as llama.cpp writes them, each `rows` rows of one block of its type; the data is 0x11 bytes
/// (finite scales for every type: 0x1111 is an f16 of about 6e-4, an f32 of about 1e-28).
fn packed(types: &[(u32, u64, u64)], rows: u64) -> Builder {
    let mut b = Builder::header(3, types.len() as u64, 0);
    let mut offset = 0;
    for (i, &(ty, elems, bytes)) in types.iter().enumerate() {
        b.tensor(&format!("t{i}"), &[elems, rows], ty, offset);
        offset += (bytes * rows).div_ceil(32) * 32;
    }
    b.data(32, offset as usize);
    b
}

fn every_block_type() -> Vec<(u32, u64, u64)> {
    BLOCK_TYPES.iter().map(|&(id, _, e, b)| (id, e, b)).collect()
}

#[test]
fn every_block_type_opens_and_dequantises() {
    let (_d, _p, r) = packed(&every_block_type(), 3).open();
    let f = r.expect("a packed file of every block type");
    for (i, &(_, name, elems, _)) in BLOCK_TYPES.iter().enumerate() {
        let t = format!("t{i}");
        assert_eq!(f.tensor_info(&t).unwrap().ggml_type.name(), name);
        let v = f.dequantize(&t).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.len() as u64, 3 * elems, "{name}");
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

#[test]
fn rows_that_are_not_whole_blocks() {
    // A K-quant row must be a multiple of 256 (a multiple of 32 is not enough), a 32-block row of 32.
    for &(ty, name, elems, _) in BLOCK_TYPES {
        for row in [elems / 2, elems + 32, 1] {
            if row.is_multiple_of(elems) {
                continue;
            }
            let mut b = Builder::header(3, 1, 0);
            b.tensor("w", &[row, 2], ty, 0).data(32, 4096);
            let (_d, _p, r) = b.open();
            assert!(
                matches!(&r, Err(Error::GgufTensorInfo { name: n, reason, .. })
                    if n == "w" && reason.contains(&format!("{name} block size {elems}")) && reason.contains(&row.to_string())),
                "{name} row {row}: {r:?}"
            );
        }
    }
}

#[test]
fn truncated_blocks() {
    // The last tensor's blocks cut short: a bounds error naming it, with its size, for every type.
    for &(ty, name, elems, bytes) in BLOCK_TYPES {
        let mut b = Builder::header(3, 1, 0);
        b.tensor("w", &[elems, 4], ty, 0).data(32, (4 * bytes - 1) as usize);
        let (_d, _p, r) = b.open();
        assert!(
            matches!(&r, Err(Error::GgufTensorBounds { name: n, size, .. }) if n == "w" && *size == 4 * bytes),
            "{name}: {r:?}"
        );
    }
    // Every prefix of a file of every block type: an error, never a panic; only a cut in the last tensor's
    // padding (the last 584 bytes of Q8_K data are padded to 608) leaves a valid file.
    let full = packed(&every_block_type(), 2);
    let data_end = full.buf.len() - (608 - 584);
    let dir = tempfile::tempdir().unwrap();
    for len in (0..full.buf.len()).step_by(7) {
        let path = dir.path().join(format!("p{len}.gguf"));
        std::fs::write(&path, &full.buf[..len]).unwrap();
        let r = GgufFile::open(&path);
        match r {
            Ok(f) => {
                assert!(len >= data_end, "len {len} < {data_end} opened");
                assert!(f.tensor_infos().iter().all(|t| f.dequantize(&t.name).is_ok()));
            }
            r => assert!(
                matches!(
                    r,
                    Err(Error::GgufTruncated { .. })
                        | Err(Error::GgufCount { .. })
                        | Err(Error::GgufTensorBounds { .. })
                ),
                "len {len}: {r:?}"
            ),
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// The (tensor name, reason) of the `GgufTensorInfo` error `b` must give at open.
fn tensor_info_error(b: &Builder) -> (String, String) {
    match b.open().2 {
        Err(Error::GgufTensorInfo { name, reason, .. }) => (name, reason),
        other => panic!("expected a GgufTensorInfo error, got {other:?}"),
    }
}

#[test]
fn types_that_do_not_match_their_data() {
    // "a" says Q4_K (2 rows: 288 bytes) but "b" starts where Q6_K data would end (420, padded to 448).
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[256, 2], 12, 0)
        .tensor("b", &[32], 0, 448)
        .data(32, 448 + 128);
    let (name, reason) = tensor_info_error(&b);
    assert!(
        name == "a" && reason.contains("Q4_K") && reason.contains("288 bytes") && reason.contains("\"b\""),
        "{reason}"
    );
    assert!(reason.contains("do not match the data"), "{reason}");
    assert!(b.open().2.unwrap_err().to_string().contains("hostile.gguf"));
    // The other way: "a" says Q6_K (420 bytes) where Q4_K data lies: it overlaps "b".
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[256, 2], 14, 0)
        .tensor("b", &[32], 0, 288)
        .data(32, 448 + 128);
    let (name, reason) = tensor_info_error(&b);
    assert!(name == "a" && reason.contains("overlaps"), "{reason}");
    // The last tensor: Q4_K (144 bytes) over Q6_K-sized data (210, padded to 224): too much data follows it.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("last", &[256], 12, 0).data(32, 224);
    let (name, reason) = tensor_info_error(&b);
    assert!(name == "last" && reason.contains("80 bytes"), "{reason}");
    // Dims that claim fewer rows than the data has (a lying size), and a file whose first tensor is not at 0.
    let mut b = Builder::header(3, 1, 0);
    b.tensor("rows", &[256, 2], 13, 0).data(32, 4 * 176);
    let (name, reason) = tensor_info_error(&b);
    assert!(name == "rows" && reason.contains("Q5_K"), "{reason}");
    let mut b = Builder::header(3, 1, 0);
    b.tensor("late", &[32], 8, 32).data(32, 96);
    let (name, reason) = tensor_info_error(&b);
    assert!(name == "late" && reason.contains("offset 32, expected 0"), "{reason}");
}

#[test]
fn misaligned_block_data() {
    // A K-quant tensor at an offset inside the alignment: named, with the offset and the alignment.
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[32], 8, 0).tensor("k", &[256], 12, 34).data(32, 256);
    let (_d, _p, r) = b.open();
    assert!(
        matches!(&r, Err(Error::GgufMisaligned { name, offset: 34, alignment: 32, .. }) if name == "k"),
        "{r:?}"
    );
}

#[test]
fn block_file_mutations_never_panic() {
    // A file of every block type; its header and infos are its first 416 bytes.
    mutations_never_panic(&packed(&every_block_type(), 1).buf, 1000, 0x9E3779B97F4A7C15, Some(416));
}

// ---- Architectures: unknown ones and inconsistent metadata ---------------------------------------------------

/// A file of architecture `arch` with the hyper-parameters every architecture needs (one block, hidden 8, two
/// heads of 4), `extra` metadata entries written by the closure, and six one-value tensors besides the embedding
/// (a block's worth, so the block count passes): enough for the importer to read the metadata and fail on it.
fn arch_file(arch: &str, n_extra: u64, extra: impl Fn(&mut Builder)) -> Builder {
    let kvs: [(&str, u64); 6] = [
        ("embedding_length", 8),
        ("feed_forward_length", 8),
        ("context_length", 64),
        ("block_count", 1),
        ("attention.head_count", 2),
        ("attention.key_length", 4),
    ];
    let mut b = Builder::header(3, 7, kvs.len() as u64 + 2 + n_extra);
    b.str("general.architecture").u32(8).str(arch);
    b.str(&format!("{arch}.attention.layer_norm_rms_epsilon"))
        .u32(6)
        .u32(1e-5f32.to_bits());
    for (k, v) in kvs {
        b.str(&format!("{arch}.{k}")).u32(10).u64(v);
    }
    extra(&mut b);
    b.tensor("token_embd.weight", &[8, 16], 0, 0);
    for i in 0..6u64 {
        b.tensor(&format!("t{i}"), &[1], 0, 8 * 16 * 4 + 32 * i);
    }
    b.data(32, 8 * 16 * 4 + 32 * 6);
    b
}

fn import_error(b: &Builder) -> Error {
    use loaders::gguf::{import_to_hf_dir, ImportOptions};
    let out = tempfile::tempdir().unwrap();
    let (_d, path, r) = b.open();
    r.expect("the file itself is valid");
    let e = import_to_hf_dir(&path, out.path(), &ImportOptions::default()).unwrap_err();
    assert!(!out.path().join("config.json").exists());
    e
}

#[test]
fn unknown_architecture_is_named() {
    let e = import_error(&arch_file("falcon", 0, |_| {}));
    let msg = e.to_string();
    assert!(matches!(e, Error::GgufImport { .. }), "{e:?}");
    assert!(
        msg.contains("\"falcon\"") && msg.contains("qwen2") && msg.contains("gemma3"),
        "{msg}"
    );
}

#[test]
fn inconsistent_architecture_metadata_names_the_key() {
    let key_of = |e: Error| match e {
        Error::GgufMetadata { key, .. } => key,
        e => panic!("{e:?}"),
    };
    // Gemma 3: a per-layer pattern of the wrong length, a zero period, attention soft-capping.
    let pattern = |b: &mut Builder| {
        b.str("gemma3.attention.sliding_window").u32(4).u32(16);
        b.str("gemma3.attention.sliding_window_pattern").u32(9).u32(7).u64(3);
        b.buf.extend_from_slice(&[1, 1, 0]);
    };
    assert_eq!(
        key_of(import_error(&arch_file("gemma3", 2, pattern))),
        "gemma3.attention.sliding_window_pattern"
    );
    let period0 = |b: &mut Builder| {
        b.str("gemma3.attention.sliding_window").u32(4).u32(16);
        b.kv_u32("gemma3.attention.sliding_window_pattern", 0);
    };
    assert_eq!(
        key_of(import_error(&arch_file("gemma3", 2, period0))),
        "gemma3.attention.sliding_window_pattern"
    );
    let capped = |b: &mut Builder| {
        b.str("gemma3.attn_logit_softcapping").u32(6).u32(50f32.to_bits());
    };
    assert_eq!(
        key_of(import_error(&arch_file("gemma3", 1, capped))),
        "gemma3.attn_logit_softcapping"
    );
    // Gemma 2: a soft-cap that is not a positive number.
    let negative = |b: &mut Builder| {
        b.str("gemma2.final_logit_softcapping").u32(6).u32((-1f32).to_bits());
    };
    assert_eq!(
        key_of(import_error(&arch_file("gemma2", 1, negative))),
        "gemma2.final_logit_softcapping"
    );
    // Any architecture: fewer rotated dimensions than the head size.
    let partial = |b: &mut Builder| {
        b.kv_u32("qwen2.rope.dimension_count", 2);
    };
    assert_eq!(
        key_of(import_error(&arch_file("qwen2", 1, partial))),
        "qwen2.rope.dimension_count"
    );
    // Linear RoPE scaling without its factor.
    let linear = |b: &mut Builder| {
        b.str("qwen3.rope.scaling.type").u32(8).str("linear");
    };
    assert_eq!(
        key_of(import_error(&arch_file("qwen3", 1, linear))),
        "qwen3.rope.scaling.factor"
    );
    // A RoPE scaling the importer does not map is named.
    let yarn = |b: &mut Builder| {
        b.str("qwen2.rope.scaling.type").u32(8).str("yarn");
    };
    let e = import_error(&arch_file("qwen2", 1, yarn));
    assert!(
        matches!(&e, Error::GgufImport { reason, .. } if reason.contains("\"yarn\"")),
        "{e:?}"
    );
}
