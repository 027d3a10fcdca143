//! Safetensors loading: zero-copy views, sharded sets, and one test per kind of hostile input.
//!
//! Hostile files are built byte by byte here (header JSON + data), so each test states exactly
//! which defect it plants and asserts the specific error variant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use loaders::safetensors::{write, SafeTensors};
use loaders::{Dtype, Error, TensorData};

/// A safetensors file from a header string and a data section (the header is used as given).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Pad a header with spaces to a multiple of 8 bytes (as writers do, so data stays aligned).
fn padded(header: &str) -> String {
    let mut h = header.to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    h
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn open_bytes(bytes: &[u8]) -> loaders::Result<SafeTensors> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_tmp(&dir, "t.safetensors", bytes);
    SafeTensors::open(&p)
}

/// 16 bytes of f32 [1, 2, 3, 4] then 8 bytes of f16 [0.5, -1, 2, 65504].
fn good_data() -> Vec<u8> {
    let mut d: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();
    d.extend(
        [0.5f32, -1., 2., 65504.]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes()),
    );
    d
}

const GOOD_HEADER: &str = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]}}"#;

fn good_file() -> Vec<u8> {
    raw_file(&padded(GOOD_HEADER), &good_data())
}

#[test]
fn good_file_opens_zero_copy() {
    let st = open_bytes(&good_file()).expect("valid file");
    assert_eq!(st.names(), vec!["a", "b"]);
    let a = st.get("a").unwrap();
    assert!(a.is_mapped());
    assert_eq!(a.shape(), &[2, 2]);
    assert_eq!(a.as_f32().unwrap(), &[1., 2., 3., 4.]);
    let b = st.get_shaped("b", &[4]).unwrap();
    assert!(b.is_mapped());
    let TensorData::F16(h) = b.data() else {
        panic!("b is F16")
    };
    let widened: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    assert_eq!(widened, vec![0.5, -1., 2., 65504.]);
}

#[test]
fn empty_file() {
    let e = open_bytes(&[]).unwrap_err();
    assert!(matches!(e, Error::EmptyFile { .. }), "{e}");
}

#[test]
fn shorter_than_header_length_field() {
    let e = open_bytes(&[1, 0, 0]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 8,
                found: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn header_length_beyond_file() {
    let mut f = good_file();
    f[..8].copy_from_slice(&10_000u64.to_le_bytes());
    let e = open_bytes(&f).unwrap_err();
    assert!(matches!(e, Error::HeaderLength { header_len: 10_000, .. }), "{e}");
    // A huge length must not overflow anything either.
    f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = open_bytes(&f).unwrap_err();
    assert!(matches!(e, Error::HeaderLength { .. }), "{e}");
}

#[test]
fn json_that_is_not_a_header() {
    for header in [
        "[1, 2, 3]",
        "{not json",
        "{\"a\": 5}",
        "{\"a\": {\"dtype\": \"F32\"}}",
        "   {}",
        "{}{}",
    ] {
        let e = open_bytes(&raw_file(header, &[])).unwrap_err();
        assert!(matches!(e, Error::InvalidHeader { .. }), "{header}: {e}");
    }
    // Not UTF-8.
    let e = open_bytes(&raw_file("{\"\u{0}\"", &[])).unwrap_err();
    assert!(matches!(e, Error::InvalidHeader { .. }), "{e}");
    let mut bad = raw_file("{\"ab\":1}", &[]);
    bad[10] = 0xff;
    let e = open_bytes(&bad).unwrap_err();
    assert!(matches!(e, Error::InvalidHeader { .. }), "{e}");
    // Metadata must be a map of strings.
    let e = open_bytes(&raw_file(r#"{"__metadata__":{"k":1}}"#, &[])).unwrap_err();
    assert!(matches!(e, Error::InvalidHeader { .. }), "{e}");
}

#[test]
fn offsets_out_of_bounds() {
    let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[1000,1008]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &good_data())).unwrap_err();
    match e {
        Error::TensorOutOfBounds {
            name,
            begin,
            end,
            data_len,
            ..
        } => assert_eq!((name.as_str(), begin, end, data_len), ("b", 1000, 1008, 24)),
        e => panic!("expected TensorOutOfBounds, got {e}"),
    }
    // Offsets near u64::MAX do not overflow.
    let h = format!(
        r#"{{"a":{{"dtype":"U8","shape":[0],"data_offsets":[{m},{m}]}}}}"#,
        m = u64::MAX
    );
    let e = open_bytes(&raw_file(&h, &[])).unwrap_err();
    assert!(matches!(e, Error::TensorOutOfBounds { .. }), "{e}");
}

#[test]
fn overlapping_tensors() {
    let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &good_data()[..16])).unwrap_err();
    match e {
        Error::TensorOverlap { first, second, .. } => assert_eq!((first.as_str(), second.as_str()), ("a", "b")),
        e => panic!("expected TensorOverlap, got {e}"),
    }
}

#[test]
fn gapped_tensors() {
    let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[20,28]}}"#;
    let mut d = good_data();
    d.extend([0u8; 4]);
    let e = open_bytes(&raw_file(&padded(h), &d)).unwrap_err();
    assert!(
        matches!(&e, Error::TensorGap { before, begin: 16, end: 20, .. } if before == "b"),
        "{e}"
    );
    // A gap before the first tensor.
    let h = r#"{"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &[0u8; 12])).unwrap_err();
    assert!(matches!(&e, Error::TensorGap { begin: 0, end: 4, .. }), "{e}");
}

#[test]
fn trailing_bytes_after_last_tensor() {
    let mut d = good_data();
    d.extend([0u8; 8]);
    let e = open_bytes(&raw_file(&padded(GOOD_HEADER), &d)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TrailingData {
                data_end: 24,
                data_len: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn shape_times_dtype_differs_from_byte_length() {
    let h = r#"{"a":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &good_data())).unwrap_err();
    match e {
        Error::TensorSize {
            name, expected, found, ..
        } => assert_eq!((name.as_str(), expected, found), ("a", 24, 16)),
        e => panic!("expected TensorSize, got {e}"),
    }
}

#[test]
fn shape_whose_size_overflows() {
    let h = format!(
        r#"{{"a":{{"dtype":"F32","shape":[{m},{m}],"data_offsets":[0,16]}}}}"#,
        m = usize::MAX
    );
    let e = open_bytes(&raw_file(&h, &good_data()[..16])).unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { .. }), "{e}");
}

#[test]
fn begin_after_end() {
    let h = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}}"#;
    let e = open_bytes(&raw_file(h, &[0u8; 16])).unwrap_err();
    assert!(matches!(e, Error::InvalidOffsets { begin: 16, end: 0, .. }), "{e}");
}

#[test]
fn unknown_dtype() {
    let h = r#"{"a":{"dtype":"F99","shape":[4],"data_offsets":[0,16]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &good_data()[..16])).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownDtype { name, dtype, .. } if name == "a" && dtype == "F99"),
        "{e}"
    );
}

#[test]
fn known_but_unsupported_dtype_opens_and_get_says_so() {
    let h = r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
    let st = open_bytes(&raw_file(&padded(h), &[0u8; 16])).expect("I64 is a valid safetensors dtype");
    assert_eq!(st.info("ids").unwrap(), ("I64".to_string(), &[2usize][..]));
    let e = st.get("ids").unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedDtype { name, dtype, .. } if name == "ids" && dtype == "I64"),
        "{e}"
    );
}

#[test]
fn duplicate_names() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    let e = open_bytes(&raw_file(&padded(h), &good_data()[..16])).unwrap_err();
    assert!(matches!(&e, Error::DuplicateTensor { name, .. } if name == "a"), "{e}");
}

#[test]
fn truncated_file() {
    let f = good_file();
    for cut in [1, 2, 8, 23] {
        let e = open_bytes(&f[..f.len() - cut]).unwrap_err();
        assert!(
            matches!(e, Error::Truncated { expected, found, .. } if expected == f.len() as u64 && found == (f.len() - cut) as u64),
            "cut {cut}: {e}"
        );
    }
    // Cut inside the header: the header length now points past the end.
    let e = open_bytes(&f[..20]).unwrap_err();
    assert!(matches!(e, Error::HeaderLength { .. }), "{e}");
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let st = open_bytes(&good_file()).unwrap();
    let e = st.get("model.a").unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "model.a"),
        "{e}"
    );
    assert!(e.to_string().contains("did you mean"), "{e}");
    let e = st.get_shaped("a", &[4]).unwrap_err();
    match e {
        Error::TensorShape {
            name, expected, found, ..
        } => {
            assert_eq!(name, "a");
            assert_eq!(expected, vec![4]);
            assert_eq!(found, vec![2, 2]);
        }
        e => panic!("expected TensorShape, got {e}"),
    }
}

#[test]
fn misaligned_data_falls_back_to_an_aligned_copy() {
    // A header whose length is 1 mod 8: the data section starts at an odd offset, so F32/F16 are misaligned.
    let mut h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]},"c":{"dtype":"U8","shape":[3],"data_offsets":[24,27]}}"#.to_string();
    while (8 + h.len()) % 8 != 1 {
        h.push(' ');
    }
    let mut d = good_data();
    d.extend([7u8, 8, 9]);
    let st = open_bytes(&raw_file(&h, &d)).expect("misaligned is valid");
    let a = st.get("a").unwrap();
    assert!(!a.is_mapped(), "a misaligned f32 tensor must be copied, not cast");
    assert_eq!(a.as_f32().unwrap(), &[1., 2., 3., 4.]);
    let b = st.get("b").unwrap();
    assert!(!b.is_mapped());
    assert_eq!(b.to_f32_vec(), vec![0.5, -1., 2., 65504.]);
    // Bytes need no alignment: still zero-copy.
    let c = st.get("c").unwrap();
    assert!(c.is_mapped());
    assert_eq!(c.bytes(), &[7, 8, 9]);
    // The copy is made once and shared.
    let a2 = st.get("a").unwrap();
    assert_eq!(a2.as_f32().unwrap().as_ptr(), a.as_f32().unwrap().as_ptr());
}

#[test]
fn metadata_is_read() {
    let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let st = open_bytes(&raw_file(&padded(h), &[1, 2])).unwrap();
    assert_eq!(st.metadata().unwrap().get("format").map(String::as_str), Some("pt"));
    assert_eq!(st.names(), vec!["a"]);
}

fn all_dtypes() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let f32s: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 1.0).collect();
    let f16s: Vec<f16> = (0..5).map(|i| f16::from_f32(i as f32 * 1.5 - 3.0)).collect();
    let bf16s: Vec<bf16> = (0..4).map(|i| bf16::from_f32(i as f32 * -2.0 + 0.5)).collect();
    vec![
        (
            "w.f32".into(),
            Dtype::F32,
            vec![2, 3],
            bytemuck::cast_slice(&f32s).to_vec(),
        ),
        (
            "w.f16".into(),
            Dtype::F16,
            vec![5],
            bytemuck::cast_slice(&f16s).to_vec(),
        ),
        (
            "w.bf16".into(),
            Dtype::BF16,
            vec![2, 2],
            bytemuck::cast_slice(&bf16s).to_vec(),
        ),
        ("w.i8".into(), Dtype::I8, vec![3], vec![0x80, 0xff, 0x7f]),
        ("w.u8".into(), Dtype::U8, vec![1, 3], vec![0, 128, 255]),
        ("w.empty".into(), Dtype::F32, vec![0, 4], vec![]),
    ]
}

#[test]
fn write_then_open_round_trips_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let tensors = all_dtypes();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write(&p, &tensors, Some(meta)).unwrap();
    let st = SafeTensors::open(&p).unwrap();
    assert_eq!(st.len(), tensors.len());
    assert_eq!(st.metadata().unwrap()["format"], "pt");
    for (name, dtype, shape, bytes) in &tensors {
        let t = st.get_shaped(name, shape).unwrap();
        assert_eq!(t.dtype(), *dtype);
        assert!(t.is_mapped(), "{name} should be a view of the map");
        assert_eq!(t.bytes(), &bytes[..], "{name}");
    }
    let t = st.get("w.i8").unwrap();
    let TensorData::I8(i) = t.data() else { panic!("I8") };
    assert_eq!(i, &[-128, -1, 127]);
    let t = st.get("w.bf16").unwrap();
    let TensorData::BF16(b) = t.data() else { panic!("BF16") };
    assert_eq!(b[1].to_f32(), -1.5);
}

#[test]
fn write_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let e = write(&p, &[("a".into(), Dtype::F32, vec![3], vec![0u8; 8])], None).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TensorSize {
                expected: 12,
                found: 8,
                ..
            }
        ),
        "{e}"
    );
    let t = ("a".to_string(), Dtype::U8, vec![1], vec![0u8]);
    let e = write(&p, &[t.clone(), t], None).unwrap_err();
    assert!(matches!(e, Error::DuplicateTensor { .. }), "{e}");
    assert!(!p.exists());
}

/// Compare every tensor with the `safetensors` crate's own parse of the same bytes (an independent reader).
fn assert_matches_reference_reader(path: &Path) {
    let st = SafeTensors::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut ref_names = reference.names();
    ref_names.sort();
    assert_eq!(st.names(), ref_names.to_vec());
    for name in st.names() {
        let r = reference.tensor(name).unwrap();
        let t = st.get(name).unwrap();
        assert_eq!(t.dtype().to_string(), r.dtype().to_string(), "{name}");
        assert_eq!(t.shape(), r.shape(), "{name}");
        assert_eq!(t.bytes(), r.data(), "{name}");
        assert!(t.is_mapped(), "{name}");
    }
}

#[test]
fn real_models_match_the_reference_reader() {
    for model in ["stories260k", "aren-transliteration-ct2"] {
        let dir = loaders::paths::shared_model(model).expect("shared model");
        assert_matches_reference_reader(&dir.join("model.safetensors"));
        let st = SafeTensors::open_dir(&dir).unwrap();
        assert!(!st.is_empty());
    }
    let st = SafeTensors::open_dir(&loaders::paths::shared_model("stories260k").unwrap()).unwrap();
    assert_eq!(st.get("model.embed_tokens.weight").unwrap().shape(), &[512, 64]);
    let st = SafeTensors::open_dir(&loaders::paths::shared_model("aren-transliteration-ct2").unwrap()).unwrap();
    assert_eq!(st.len(), 200);
    assert_eq!(st.get("decoder/projection/weight").unwrap().shape(), &[43, 32]);
}

/// Two shards and an index in the Hugging Face layout.
fn write_sharded(dir: &Path, index: &str) {
    let t = all_dtypes();
    write(&dir.join("model-00001-of-00002.safetensors"), &t[..3], None).unwrap();
    write(&dir.join("model-00002-of-00002.safetensors"), &t[3..], None).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
}

fn index_json(entries: &[(&str, &str)]) -> String {
    let map: Vec<String> = entries.iter().map(|(n, f)| format!("{n:?}: {f:?}")).collect();
    format!(
        r#"{{"metadata": {{"total_size": 64}}, "weight_map": {{{}}}}}"#,
        map.join(", ")
    )
}

const S1: &str = "model-00001-of-00002.safetensors";
const S2: &str = "model-00002-of-00002.safetensors";

fn good_index() -> Vec<(&'static str, &'static str)> {
    vec![
        ("w.f32", S1),
        ("w.f16", S1),
        ("w.bf16", S1),
        ("w.i8", S2),
        ("w.u8", S2),
        ("w.empty", S2),
    ]
}

#[test]
fn sharded_set_opens() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &index_json(&good_index()));
    let st = SafeTensors::open_dir(dir.path()).unwrap();
    assert_eq!(st.shard_paths().len(), 2);
    let mut expected: Vec<&str> = good_index().iter().map(|(n, _)| *n).collect();
    expected.sort();
    assert_eq!(st.names(), expected);
    for (name, dtype, shape, bytes) in all_dtypes() {
        let t = st.get_shaped(&name, &shape).unwrap();
        assert_eq!((t.dtype(), t.bytes()), (dtype, &bytes[..]));
        assert!(t.is_mapped());
    }
}

/// An index (tensor, shard) list and the check its error must pass.
type IndexCase = (Vec<(&'static str, &'static str)>, fn(&Error) -> bool);

#[test]
fn sharded_set_defects() {
    let cases: Vec<IndexCase> = vec![
        // Listed in the wrong shard.
        (
            {
                let mut i = good_index();
                i[0].1 = S2;
                i
            },
            |e| matches!(e, Error::IndexMismatch { .. }),
        ),
        // A shard holds a tensor the index does not list.
        (good_index()[1..].to_vec(), |e| matches!(e, Error::IndexMismatch { .. })),
        // Listed, but no shard holds it.
        (
            {
                let mut i = good_index();
                i.push(("w.ghost", S1));
                i
            },
            |e| matches!(e, Error::IndexMismatch { name, .. } if name == "w.ghost"),
        ),
        // A shard name that escapes the directory.
        (
            {
                let mut i = good_index();
                i[0].1 = "../model-00001-of-00002.safetensors";
                i
            },
            |e| matches!(e, Error::InvalidIndex { .. }),
        ),
        // Duplicate name in weight_map.
        (
            {
                let mut i = good_index();
                i.push(("w.f32", S1));
                i
            },
            |e| matches!(e, Error::DuplicateTensor { .. }),
        ),
        // A shard that does not exist.
        (
            {
                let mut i = good_index();
                i[0].1 = "nope.safetensors";
                i
            },
            |e| matches!(e, Error::Io { .. }),
        ),
    ];
    for (i, (index, check)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        write_sharded(dir.path(), &index_json(&index));
        let Err(e) = SafeTensors::open_dir(dir.path()) else {
            panic!("case {i} opened: {index:?}")
        };
        assert!(check(&e), "case {i}: unexpected error {e}");
    }
    // Not an index at all.
    for text in ["[]", "{}", r#"{"weight_map": {"a": 3}}"#, r#"{"weight_map": []}"#] {
        let dir = tempfile::tempdir().unwrap();
        write_sharded(dir.path(), text);
        let e = SafeTensors::open_dir(dir.path()).unwrap_err();
        assert!(matches!(e, Error::InvalidIndex { .. }), "{text}: {e}");
    }
}

#[test]
fn dir_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    let e = SafeTensors::open_dir(dir.path()).unwrap_err();
    assert!(matches!(e, Error::NoWeights { .. }), "{e}");
    let e = SafeTensors::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn safetensors_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SafeTensors>();
    check::<loaders::Tensor>();
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A valid file with three tensors of different dtypes (aligned).
    fn base() -> Vec<u8> {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]}}"#;
        let mut d = good_data();
        d.extend([1, 2, 3, 4]);
        raw_file(&padded(h), &d)
    }

    /// Open mutated bytes: never panic; when we accept, the reference reader must accept too and
    /// agree on every tensor (our checks are a superset of its checks).
    fn check(bytes: &[u8]) {
        let Ok(st) = open_bytes(bytes) else { return };
        let reference = safetensors::SafeTensors::deserialize(bytes).expect("we accepted what the crate rejects");
        for name in st.names() {
            let r = reference.tensor(name).expect("same names");
            match st.get(name) {
                Ok(t) => {
                    assert_eq!(t.bytes(), r.data());
                    assert_eq!(t.shape(), r.shape());
                    let _ = t.to_f32_vec();
                }
                Err(e) => assert!(matches!(e, Error::UnsupportedDtype { .. }), "{e}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn byte_mutations_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut f = base();
            let n = f.len();
            for (i, v) in edits {
                f[i % n] = v;
            }
            check(&f);
        }

        #[test]
        fn header_char_mutations_never_panic(i in 8usize..200, c in prop::sample::select(b"{}[]\":,0123456789-e. FUIB_".to_vec())) {
            let mut f = base();
            let n = f.len();
            f[i % n] = c;
            check(&f);
        }

        #[test]
        fn truncations_never_panic(cut in 0usize..300) {
            let f = base();
            let keep = f.len().saturating_sub(cut);
            check(&f[..keep]);
        }

        #[test]
        fn length_field_mutations_never_panic(n in any::<u64>()) {
            let mut f = base();
            f[..8].copy_from_slice(&n.to_le_bytes());
            check(&f);
        }
    }
}

#[test]
fn open_dir_prefers_the_single_file_like_transformers() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &index_json(&good_index()));
    write(&dir.path().join("model.safetensors"), &all_dtypes()[..1], None).unwrap();
    let st = SafeTensors::open_dir(dir.path()).unwrap();
    assert_eq!(st.names(), vec!["w.f32"]);
    assert!(st.path().ends_with("model.safetensors"));
}
