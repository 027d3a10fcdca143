//! Attention probabilities of the recording path against independent references (fixtures made by
//! tools/scripts/attention_refs.py): Hugging Face `output_attentions=True` with eager attention on the Llama,
//! GPT-2 and Marian fixture models (every layer and head; Marian's encoder, decoder and cross-attention), and
//! CTranslate2 `translate_batch(..., return_attention=True)` on the real aren transliteration model. Every row
//! sums to 1 and masked entries are exactly 0.

mod decoder_support;

use decoder_support::{ids, json, load_on, max_abs, open, tensor};
use kernels::testing;
use loaders::paths::{fixture, shared_model};
use qkv::{AttentionMaps, Model, TranslateOptions};

/// Max |ours - HF| of a probability. Both compute the same f32 projections (ours accumulate in f64 on the
/// reference kernels, in f32 on the SIMD ones: logits agree within ~1e-6, see llama_gpt2_fixtures.rs), so the
/// scores differ by ~1e-6 and a probability p by about p * 1e-6; HF's f32 softmax adds ~1e-7. 1e-5 is what
/// issue #13 asks, with a margin of ~10 over those estimates.
const PROB_TOL: f32 = 1e-5;

/// Max |row sum - 1|. Our softmax is computed in f64 and each weight rounded once to f32 (relative error
/// 2^-24), so a row sums to 1 within Σp·2^-24 = 6e-8 (summed here in f64).
const ROW_SUM_TOL: f64 = 1e-6;

/// Max |ours - CTranslate2| of an aren cross-attention weight. CTranslate2 runs the same f32 model with its
/// own GEMMs and a vectorised exp (its score_batch log-probs agree with ours within 1e-5, translate_aren.rs);
/// 1e-4 is what issue #13 asks.
const CT2_TOL: f32 = 1e-4;

fn refs() -> (serde_json::Value, loaders::safetensors::SafeTensors) {
    let dir = fixture("attention");
    (
        json(&dir.join("reference.json")),
        open(&dir.join("reference.safetensors")),
    )
}

/// Every row sums to 1 (or is all zeros when `may_be_empty` allows a query that sees nothing), every entry is a
/// probability, and entries above the diagonal are exactly 0 when `causal`.
fn check_rows(what: &str, maps: &AttentionMaps, causal: bool) {
    let [layers, heads, queries, keys] = maps.shape();
    for l in 0..layers {
        for h in 0..heads {
            for q in 0..queries {
                let row = maps.row(l, h, q);
                let sum: f64 = row.iter().map(|&p| p as f64).sum();
                assert!(
                    (sum - 1.0).abs() <= ROW_SUM_TOL,
                    "{what} layer {l} head {h} row {q}: sums to {sum}"
                );
                assert!(
                    row.iter().all(|p| (0.0..=1.0).contains(p)),
                    "{what} {l}/{h}/{q}: {row:?}"
                );
                if causal {
                    // the queries are the last `queries` of the `keys` positions
                    let offset = keys - queries;
                    for (k, &p) in row.iter().enumerate().skip(offset + q + 1) {
                        assert_eq!(p, 0.0, "{what} layer {l} head {h}: query {q} sees future key {k}");
                    }
                }
            }
        }
    }
}

fn check_against(what: &str, maps: &AttentionMaps, want: &[f32], shape: &[usize]) -> f32 {
    assert_eq!(maps.shape().as_slice(), shape, "{what}: shape");
    let diff = max_abs(maps.as_slice(), want);
    assert!(diff <= PROB_TOL, "{what}: probabilities differ from HF by {diff}");
    diff
}

fn shape_of(meta: &serde_json::Value, name: &str) -> Vec<usize> {
    serde_json::from_value(meta["tensors"][name].clone()).unwrap()
}

fn check_decoder_only(name: &str) {
    let (meta, st) = refs();
    let prompt = ids(&meta["prompt"]);
    let key = format!("{name}.self");
    let want = tensor(&st, &key);
    let test = format!("attention_{name}");
    testing::each_isa(&test, true, |k| {
        let model = load_on(&fixture(name), k);
        let att = model.attention_ids(&prompt).unwrap();
        assert_eq!(att.ids, prompt);
        let diff = check_against(&key, &att.self_attention, &want, &shape_of(&meta, &key));
        check_rows(&key, &att.self_attention, true);
        eprintln!("{name} on {}: self-attention max-abs {diff:.2e} vs HF", k.isa());
    });
}

#[test]
fn llama_gqa_self_attention_matches_hf() {
    check_decoder_only("llama-tiny-gqa");
}

#[test]
fn gpt2_self_attention_matches_hf() {
    check_decoder_only("gpt2-tiny");
}

#[test]
fn marian_encoder_decoder_cross_attention_match_hf() {
    let (meta, st) = refs();
    let (source, target) = (ids(&meta["marian_source"]), ids(&meta["marian_target"]));
    testing::each_isa("attention_marian", true, |k| {
        let model = load_on(&fixture("marian-tiny"), k);
        let att = model.translation_attention(&source, &target).unwrap();
        assert_eq!(
            (att.source_ids.as_slice(), att.target_ids.as_slice()),
            (&source[..], &target[..])
        );
        let mut worst = 0.0f32;
        for (part, maps, causal) in [
            ("encoder", &att.encoder, false),
            ("decoder", &att.decoder, true),
            ("cross", &att.cross, false),
        ] {
            let key = format!("marian-tiny.{part}");
            worst = worst.max(check_against(&key, maps, &tensor(&st, &key), &shape_of(&meta, &key)));
            check_rows(&key, maps, causal);
        }
        eprintln!(
            "marian-tiny on {}: encoder/decoder/cross max-abs {worst:.2e} vs HF",
            k.isa()
        );
    });
}

#[test]
fn translation_rows_stop_before_eos() {
    let model = Model::load(fixture("marian-tiny")).unwrap();
    let eos = model.eos_ids()[0];
    let att = model.translation_attention(&[3, 4, 5, 0], &[9, 8, eos, 7]).unwrap();
    assert_eq!(att.target_ids, [9, 8]);
    assert_eq!(att.cross.shape(), [2, 4, 2, 4]);
    assert_eq!(att.decoder.shape(), [2, 4, 2, 2]);
    // nothing generated but EOS: no rows
    let att = model.translation_attention(&[3, 4, 5, 0], &[eos]).unwrap();
    assert_eq!(att.cross.shape(), [2, 4, 0, 4]);
    let e = model.translation_attention(&[], &[9]).unwrap_err().to_string();
    assert!(e.contains("source is empty"), "{e}");
}

/// CTranslate2 returns, per target token, the cross-attention of the decoder's `alignment_layer` averaged over
/// its first `alignment_heads` heads. The aren model.bin (spec TransformerBase revision 2) stores neither
/// variable (attention_refs.py lists its 200 variables), so CTranslate2's defaults apply: layer -1 (the last, 5
/// here) and 1 head, i.e. **head 0 of the last decoder layer alone**, not an average. This test checks that
/// head against CTranslate2 and that the head average is something else.
#[test]
fn aren_cross_attention_matches_ctranslate2_last_layer_head_0() {
    let (meta, st) = refs();
    let aren = &meta["aren"];
    assert_eq!(
        aren["model_bin_alignment"]["alignment_variables"],
        serde_json::json!([])
    );
    let model = Model::load(shared_model("aren-transliteration-ct2").expect("shared model")).expect("load");
    let names: Vec<String> = serde_json::from_value(aren["sources"].clone()).unwrap();
    let texts: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = TranslateOptions {
        beam_size: Some(aren["beam_size"].as_u64().unwrap() as usize),
        ..Default::default()
    };
    let out = model.translate_with_attention(&texts, &opts).unwrap();
    let last = model.info().n_layers - 1;
    let mut worst = 0.0f32;
    let mut mean_worst = 0.0f32;
    for (i, (t, att)) in out.iter().enumerate() {
        assert_eq!(t.text, aren["hypotheses"][i].as_str().unwrap(), "{}", names[i]);
        let want = tensor(&st, &format!("aren-ct2.cross{i}"));
        let [_, _, targets, sources] = att.cross.shape();
        assert_eq!((targets, sources), (t.text.chars().count(), names[i].chars().count()));
        let diff = max_abs(att.cross.head(last, 0), &want);
        assert!(
            diff <= CT2_TOL,
            "{}: last layer head 0 differs from CTranslate2 by {diff}",
            names[i]
        );
        worst = worst.max(diff);
        mean_worst = mean_worst.max(max_abs(&att.cross.mean_over_heads(last), &want));
        check_rows(&names[i], &att.cross, false);
        check_rows(&names[i], &att.decoder, true);
        check_rows(&names[i], &att.encoder, false);
    }
    eprintln!("aren: last layer head 0 max-abs {worst:.2e} vs CTranslate2; the head average is {mean_worst:.2e} off");
    assert!(
        mean_worst > 100.0 * CT2_TOL,
        "the head average also matches: {mean_worst}"
    );
}

#[test]
fn prompt_errors_name_the_problem() {
    let model = Model::load(fixture("gpt2-tiny")).unwrap();
    let e = model.attention_ids(&[]).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let ctx = model.info().max_positions;
    let e = model.attention_ids(&vec![1; ctx + 1]).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{} tokens", ctx + 1)) && e.contains(&ctx.to_string()),
        "{e}"
    );
    let e = Model::load(fixture("marian-tiny"))
        .unwrap()
        .attention_ids(&[1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("attention") && e.contains("encoder-decoder"), "{e}");
}
