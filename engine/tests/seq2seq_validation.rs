//! Config validation of the encoder-decoder families (M2M100 / NLLB, BART, mBART-50, T5, Flan-T5): a config.json
//! whose shapes disagree with themselves or with the weights is refused with an error naming the field or tensor,
//! and what qkv does not run (an unknown architecture, activation or feed-forward kind) is `Error::Unsupported`
//! naming it. Each case edits one field of a fixture (tools/fixtures/seq2seq) whose weights load as they are:
//! each fixture's weights (up to 1.1 GB: the published vocabularies) are rebuilt once and hard-linked into the
//! directory of every case.

#[path = "hash_weights/mod.rs"]
mod hash_weights;

use std::path::PathBuf;

use qkv::{Error, Model};
use serde_json::json;

/// What a refused config must say.
enum Expect {
    /// `Error::InvalidConfig` naming this field.
    Field(&'static str),
    /// Any load error whose message holds every one of these (a tensor's shape: its name, expected vs found).
    Says(&'static [&'static str]),
    /// `Error::Unsupported` naming this value.
    Unsupported(&'static str),
}

/// Config edits: `(key, new value)`.
type Edits = Vec<(&'static str, serde_json::Value)>;
/// A fixture, the edits to its config and what the refusal must say.
type Case = (&'static str, Edits, Expect);

/// The fixtures' model directories, each rebuilt once (removed on drop).
#[derive(Default)]
struct Fixtures(std::collections::HashMap<String, PathBuf>);

impl Fixtures {
    /// A directory of its own holding fixture `name` (its files hard links to the rebuilt ones).
    fn case_dir(&mut self, name: &str, case: usize) -> PathBuf {
        let base = self.0.entry(name.to_string()).or_insert_with(|| {
            hash_weights::fixture_model_dir(&loaders::paths::fixture("seq2seq").join(name), &format!("valid-{name}")).0
        });
        let dir = base.with_file_name(format!("{}-case{case}", base.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&*base).unwrap() {
            let f = f.unwrap().path();
            let to = dir.join(f.file_name().unwrap());
            std::fs::hard_link(&f, &to)
                .or_else(|_| std::fs::copy(&f, &to).map(drop))
                .unwrap();
        }
        dir
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        for dir in self.0.values() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Load fixture `name` with `edits` applied to its config.json (a `null` removes the key).
fn load_edited(
    fx: &mut Fixtures,
    case: usize,
    name: &str,
    edits: &[(&str, serde_json::Value)],
) -> (PathBuf, qkv::Result<Model>) {
    let dir = fx.case_dir(name, case);
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap(); // a hard link: the edit must not reach the shared file
    for (k, v) in edits {
        if v.is_null() {
            cfg.as_object_mut().unwrap().remove(*k);
        } else {
            cfg[*k] = v.clone();
        }
    }
    std::fs::write(&path, cfg.to_string()).unwrap();
    let m = Model::load(&dir);
    (dir, m)
}

/// Both lists of cases on one set of rebuilt fixtures.
#[test]
fn configs_are_validated() {
    let mut fx = Fixtures::default();
    inconsistent_shapes_are_refused_naming_the_field(&mut fx);
    what_qkv_does_not_run_is_unsupported(&mut fx);
}

fn inconsistent_shapes_are_refused_naming_the_field(fx: &mut Fixtures) {
    let cases: Vec<Case> = vec![
        // heads that do not divide the width
        (
            "nllb",
            vec![("encoder_attention_heads", json!(3))],
            Expect::Field("attention heads"),
        ),
        (
            "bart",
            vec![("decoder_attention_heads", json!(5))],
            Expect::Field("d_model"),
        ),
        ("mbart50", vec![("d_model", json!(250))], Expect::Field("d_model")),
        // ids outside the vocabulary
        (
            "nllb",
            vec![("decoder_start_token_id", json!(256206))],
            Expect::Field("decoder_start_token_id"),
        ),
        (
            "mbart50",
            vec![("pad_token_id", json!(250054))],
            Expect::Field("pad_token_id"),
        ),
        // zero sizes
        ("bart", vec![("encoder_ffn_dim", json!(0))], Expect::Field("ffn_dim")),
        ("t5", vec![("d_model", json!(0))], Expect::Field("d_model")),
        // T5's bias buckets: too few for the max distance
        (
            "t5",
            vec![("relative_attention_num_buckets", json!(2))],
            Expect::Field("relative_attention_num_buckets"),
        ),
        (
            "flan_t5",
            vec![("relative_attention_max_distance", json!(8))],
            Expect::Field("relative_attention_num_buckets"),
        ),
        // a config that disagrees with the weights: the tensor is named
        (
            "t5",
            vec![("d_kv", json!(32))],
            Expect::Says(&["encoder.block.0.layer.0.SelfAttention.q.weight"]),
        ),
        (
            "flan_t5",
            vec![("d_ff", json!(1024))],
            Expect::Says(&["DenseReluDense", "1024"]),
        ),
        (
            "nllb",
            vec![("vocab_size", json!(300))],
            Expect::Says(&["shared.weight", "300"]),
        ),
        (
            "mbart50",
            vec![("encoder_layers", json!(3))],
            Expect::Says(&["model.encoder.layers.2"]),
        ),
        (
            "bart",
            vec![("max_position_embeddings", json!(64))],
            Expect::Says(&["embed_positions", "66"]),
        ),
    ];
    for (case, (name, edits, expect)) in cases.into_iter().enumerate() {
        let (dir, m) = load_edited(fx, case, name, &edits);
        let e = m.expect_err(&format!("{name} {edits:?} loads"));
        let text = e.to_string();
        eprintln!("{name} {edits:?}: {text}");
        match expect {
            Expect::Field(f) => {
                assert!(matches!(e, Error::InvalidConfig { .. }), "{name} {edits:?}: {text}");
                assert!(
                    text.contains(f) && text.contains("config.json"),
                    "{name} {edits:?}: {text}"
                );
            }
            Expect::Says(words) => {
                assert!(words.iter().all(|w| text.contains(w)), "{name} {edits:?}: {text}");
            }
            Expect::Unsupported(_) => unreachable!(),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn what_qkv_does_not_run_is_unsupported(fx: &mut Fixtures) {
    let cases: Vec<Case> = vec![
        (
            "nllb",
            vec![("model_type", json!("pegasus"))],
            Expect::Unsupported("pegasus"),
        ),
        (
            "bart",
            vec![
                ("model_type", serde_json::Value::Null),
                ("architectures", json!(["ProphetNetForConditionalGeneration"])),
            ],
            Expect::Unsupported("ProphetNetForConditionalGeneration"),
        ),
        (
            "t5",
            vec![("feed_forward_proj", json!("gated-mish"))],
            Expect::Unsupported("mish"),
        ),
        (
            "mbart50",
            vec![("activation_function", json!("mish"))],
            Expect::Unsupported("mish"),
        ),
    ];
    for (case, (name, edits, expect)) in cases.into_iter().enumerate() {
        let (dir, m) = load_edited(fx, case, name, &edits);
        let e = m.expect_err(&format!("{name} {edits:?} loads"));
        let Expect::Unsupported(what) = expect else {
            unreachable!()
        };
        assert!(matches!(e, Error::Unsupported { .. }), "{name} {edits:?}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(what) && text.contains("config.json"),
            "{name} {edits:?}: {text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
