//! The GGUF reader and dequantiser against the `gguf` Python package, on a small fixture file.
//!
//! tools/fixtures/gguf/blocks.gguf was written by the package's GGUFWriter (tools/scripts/gguf_refs.py blocks):
//! one metadata key of every value type, and tensors of every supported type (random raw blocks, and data quantised
//! by the package or, for the K-quants, by llama.cpp's own quantiser). blocks_ref.safetensors holds
//! `gguf.quants.dequantize` of each (ggml's `dequantize_row_q8_K` for Q8_K, which the package lacks; the script
//! checks that both agree on every other type); blocks_meta.json what GGUFReader saw.

use std::fs;

use loaders::gguf::{dequant, GgufArray, GgufFile, GgufValue};
use loaders::paths::fixture;
use loaders::{Dtype, Error};
use serde_json::Value;

/// Relative error of serde_json's decimal-to-f64 parsing (the reference values come through JSON).
const JSON_FLOAT_PARSE_REL_TOL: f64 = 4.0 * f64::EPSILON;

fn open() -> GgufFile {
    GgufFile::open(&fixture("gguf").join("blocks.gguf")).expect("open blocks.gguf")
}

fn meta_json() -> Value {
    let text = fs::read_to_string(fixture("gguf").join("blocks_meta.json")).expect("blocks_meta.json");
    serde_json::from_str(&text).expect("parse blocks_meta.json")
}

/// Our value as JSON, with the package's type names, for comparison with blocks_meta.json.
fn to_json(v: &GgufValue) -> (Vec<&'static str>, Value) {
    fn arr(a: &GgufArray) -> (Vec<&'static str>, Value) {
        let j = |x: Value| x;
        match a {
            GgufArray::I32(v) => (vec!["ARRAY", "INT32"], j(serde_json::json!(v))),
            GgufArray::F32(v) => (vec!["ARRAY", "FLOAT32"], j(serde_json::json!(v))),
            GgufArray::String(v) => (vec!["ARRAY", "STRING"], j(serde_json::json!(v))),
            GgufArray::Array(v) => {
                let inner: Vec<(Vec<&'static str>, Value)> = v.iter().map(arr).collect();
                let mut types = vec!["ARRAY"];
                types.extend(inner.first().map(|i| i.0.clone()).unwrap_or_default());
                (types, Value::Array(inner.into_iter().map(|i| i.1).collect()))
            }
            other => panic!("fixture has no {} array", other.type_name()),
        }
    }
    match v {
        GgufValue::U8(x) => (vec!["UINT8"], (*x).into()),
        GgufValue::I8(x) => (vec!["INT8"], (*x).into()),
        GgufValue::U16(x) => (vec!["UINT16"], (*x).into()),
        GgufValue::I16(x) => (vec!["INT16"], (*x).into()),
        GgufValue::U32(x) => (vec!["UINT32"], (*x).into()),
        GgufValue::I32(x) => (vec!["INT32"], (*x).into()),
        GgufValue::F32(x) => (vec!["FLOAT32"], f64::from(*x).into()),
        GgufValue::Bool(x) => (vec!["BOOL"], (*x).into()),
        GgufValue::String(x) => (vec!["STRING"], x.clone().into()),
        GgufValue::U64(x) => (vec!["UINT64"], (*x).into()),
        GgufValue::I64(x) => (vec!["INT64"], (*x).into()),
        GgufValue::F64(x) => (vec!["FLOAT64"], (*x).into()),
        GgufValue::Array(a) => arr(a),
    }
}

#[test]
fn metadata_matches_gguf_package() {
    let f = open();
    let want = meta_json();
    assert_eq!(f.version(), 3);
    assert_eq!(f.data_offset(), want["data_offset"].as_u64().unwrap());
    for (key, w) in want["metadata"].as_object().unwrap() {
        let v = f.metadata().get(key).unwrap_or_else(|| panic!("missing key {key}"));
        let (types, value) = to_json(v);
        let want_types: Vec<&str> = w["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(types, want_types, "{key}");
        if types == ["FLOAT64"] || types == ["FLOAT32"] {
            // serde_json parses decimal floats to within an ulp (no float_roundtrip feature): compare relatively.
            let (a, b) = (value.as_f64().unwrap(), w["value"].as_f64().unwrap());
            assert!(
                (a - b).abs() <= JSON_FLOAT_PARSE_REL_TOL * b.abs(),
                "{key}: {a:e} vs {b:e}"
            );
        } else {
            assert_eq!(value, w["value"], "{key}");
        }
    }
}

#[test]
fn tensor_infos_match_gguf_package() {
    let f = open();
    let want = meta_json();
    let want = want["tensors"].as_array().unwrap();
    assert_eq!(f.tensor_infos().len(), want.len());
    for (t, w) in f.tensor_infos().iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(t.ggml_type.name(), w["type"].as_str().unwrap(), "{}", t.name);
        let dims: Vec<u64> = w["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{}", t.name);
    }
}

#[test]
fn dequantize_is_bit_exact_with_gguf_package() {
    let f = open();
    let refs = fs::read(fixture("gguf").join("blocks_ref.safetensors")).expect("blocks_ref.safetensors");
    let refs = safetensors::SafeTensors::deserialize(&refs).expect("parse blocks_ref.safetensors");
    let mut checked = std::collections::BTreeSet::new();
    for (name, view) in refs.tensors() {
        let info = f.tensor_info(&name).unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(info.shape(), view.shape(), "{name}");
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = f.dequantize(&name).expect("dequantize");
        assert_eq!(got.len(), want.len(), "{name}");
        // Bit-exact; a NaN must stay a NaN (numpy keeps an f16 signalling NaN signalling, F16C hardware and the
        // `half` crate quiet it, as ggml's own x86 path does, so payload bits are not compared).
        let same = |g: &f32, w: &f32| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        let n_diff = got.iter().zip(&want).filter(|(g, w)| !same(g, w)).count();
        assert_eq!(
            n_diff,
            0,
            "{name} ({}): {n_diff} of {} values differ",
            info.ggml_type,
            want.len()
        );
        checked.insert((info.ggml_type.name(), name.ends_with("_raw")));
    }
    // Every supported type: the plain ones once, each quantised one as random raw blocks and as quantised data.
    for ty in dequant::SUPPORTED {
        let quantised = ty.block_size() > 1;
        assert!(checked.contains(&(ty.name(), false)), "{ty} not checked");
        assert_eq!(checked.contains(&(ty.name(), true)), quantised, "{ty} raw blocks");
    }
    assert_eq!(checked.len(), 3 + 2 * (dequant::SUPPORTED.len() - 3));
}

#[test]
fn unsupported_type_names_tensor_and_type() {
    let f = open();
    match f.dequantize("q2_k_unsupported") {
        Err(Error::GgufUnsupportedType { name, ggml_type, .. }) => {
            assert_eq!(name, "q2_k_unsupported");
            assert!(ggml_type.contains("Q2_K"), "{ggml_type}");
        }
        other => panic!("expected GgufUnsupportedType, got {other:?}"),
    }
    assert!(matches!(f.dequantize("nope"), Err(Error::MissingTensor { .. })));
}

#[test]
fn tensor_handles_are_zero_copy_for_plain_types() {
    let f = open();
    for (name, dtype, mapped) in [
        ("f32", Dtype::F32, true),
        ("f16", Dtype::F16, true),
        ("bf16", Dtype::BF16, true),
        ("q4_1", Dtype::F32, false),
        ("q8_0_raw", Dtype::F32, false),
        ("q4_k", Dtype::F32, false),
        ("q6_k_raw", Dtype::F32, false),
    ] {
        let t = f.tensor(name).expect("tensor");
        assert_eq!(t.dtype(), dtype, "{name}");
        assert_eq!(t.is_mapped(), mapped, "{name}");
        assert_eq!(t.shape(), f.tensor_info(name).unwrap().shape().as_slice(), "{name}");
        let want = f.dequantize(name).unwrap();
        let got = t.to_f32_vec();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())),
            "{name}"
        );
    }
    assert!(matches!(
        f.tensor("q2_k_unsupported"),
        Err(Error::GgufUnsupportedType { .. })
    ));
}

#[test]
fn blocks_are_read_in_place() {
    use loaders::gguf::blocks::{BlockQ4K, BlockQ6K, QuantBlock};
    let f = open();
    let info = f.tensor_info("q4_k").unwrap();
    let blocks: &[BlockQ4K] = f.blocks(info).expect("Q4_K blocks");
    assert_eq!(blocks.len(), info.numel() / 256);
    // The same bytes as the file's, and the same values as the dequantiser's.
    assert_eq!(blocks.as_ptr() as *const u8, f.tensor_bytes(info).as_ptr());
    let want = f.dequantize("q4_k").unwrap();
    let mut got = vec![0f32; 256];
    for (b, w) in blocks.iter().zip(want.chunks_exact(256)) {
        b.dequantize(&mut got);
        assert!(got.iter().zip(w).all(|(g, w)| g.to_bits() == w.to_bits()));
    }
    match f.blocks::<BlockQ6K>(info) {
        Err(Error::GgufTensorInfo { name, reason, .. }) => {
            assert_eq!(name, "q4_k");
            assert!(reason.contains("Q4_K") && reason.contains("not Q6_K"), "{reason}");
        }
        other => panic!("expected a type error, got {other:?}"),
    }
}
