//! Helpers shared by the decoder-only model tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use loaders::safetensors::SafeTensors;

/// Open `dir/<file>` (a fixture's reference tensors).
pub fn open(path: &Path) -> SafeTensors {
    SafeTensors::open(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A reference tensor as f32 values.
pub fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.get(name).unwrap_or_else(|e| panic!("{e}")).to_f32_vec()
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// `dir` opened with `Model::load_with` on `kernels`, weights as stored.
pub fn load_on(dir: &Path, kernels: qkv::Kernels) -> qkv::Model {
    load_as(dir, kernels, qkv::WeightType::Stored)
}

/// `dir` opened with `Model::load_with` on `kernels`, the linear layers held as `weights`.
pub fn load_as(dir: &Path, kernels: qkv::Kernels, weights: qkv::WeightType) -> qkv::Model {
    let opts = qkv::LoadOptions {
        kernels: Some(kernels),
        weights,
        ..Default::default()
    };
    qkv::Model::load_with(dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The SmolLM2 GGUF imported (f32, exact dequantised values) into the target dir once, reused after.
pub fn smollm2_dir() -> PathBuf {
    import_f32_once(&smollm2_gguf(), "smollm2-135m-instruct-f32")
}

/// The shipped SmolLM2 Q4_1 GGUF in the shared models.
pub fn smollm2_gguf() -> PathBuf {
    let shared = loaders::paths::shared_model("smollm2-135m-instruct-q4_1").expect("the SmolLM2 GGUF");
    std::fs::read_dir(&shared)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("a .gguf in the shared smollm2 directory")
}

/// `gguf` imported (f32, exact dequantised values) into the test target dir as `name` once, reused after.
pub fn import_f32_once(gguf: &Path, name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if out.join("model.safetensors").is_file() {
        return out;
    }
    // Import beside, then rename: a concurrent or interrupted import never looks complete.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let opts = loaders::gguf::ImportOptions {
        dtype: loaders::Dtype::F32,
    };
    loaders::gguf::import_to_hf_dir(gguf, &tmp, &opts).unwrap_or_else(|e| panic!("{e}"));
    if std::fs::rename(&tmp, &out).is_err() {
        // Another test imported it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    out
}

/// Greedy decoding through `feed` (which writes the last position's logits): the logits before each
/// choice must be within `tol` of `want_logits` (`[steps, vocab]`, or only the first `want_logits.len() / vocab`
/// steps) and the tokens equal `want_tokens`. Returns the largest difference seen.
pub fn check_greedy(
    what: &str,
    vocab: usize,
    feed: impl FnMut(&[u32], &mut [f32]),
    prompt: &[u32],
    want_tokens: &[u32],
    want_logits: &[f32],
    tol: f32,
) -> f32 {
    check_greedy_by(what, vocab, feed, prompt, want_tokens, |t, logits| {
        let want = want_logits.get(t * vocab..(t + 1) * vocab)?;
        let diff = max_abs(logits, want);
        assert!(
            diff <= tol,
            "{what} step {t}: logits differ by {diff} (tolerance {tol})"
        );
        Some(diff)
    })
}

/// Greedy decoding through `feed` as [`check_greedy`], each step's logits checked by `compare(step, logits)`
/// (which asserts, and returns the difference it measured, if it has a reference for that step).
pub fn check_greedy_by(
    what: &str,
    vocab: usize,
    mut feed: impl FnMut(&[u32], &mut [f32]),
    prompt: &[u32],
    want_tokens: &[u32],
    mut compare: impl FnMut(usize, &[f32]) -> Option<f32>,
) -> f32 {
    let mut logits = vec![0.0; vocab];
    feed(prompt, &mut logits);
    let mut tokens = vec![];
    let mut worst = 0.0f32;
    for t in 0..want_tokens.len() {
        if let Some(diff) = compare(t, &logits) {
            worst = worst.max(diff);
        }
        let next = qkv::Kernels::scalar().argmax(&logits).unwrap() as u32;
        tokens.push(next);
        assert_eq!(
            next, want_tokens[t],
            "{what} step {t}: greedy token (so far {tokens:?})"
        );
        if t + 1 < want_tokens.len() {
            feed(&[next], &mut logits);
        }
    }
    worst
}

/// Added to the logits' tolerance for a whole row's log-sum-exp: log-sum-exp is 1-Lipschitz in the max norm, so
/// logits all within `tol` move it by at most `tol`; both sides sum in f64, HF's stored as f32 (|lse| < 32: half
/// an ulp is below 2e-6).
const LSE_F32_ROUNDING: f64 = 2e-6;

/// HF's logits at some positions as a fixture keeps them (make_family_fixtures.py `summarize`): per row the
/// `k` largest with their ids (largest first), the logits of the `probe_ids` (the same for every row) and the
/// log-sum-exp of the whole row. Ids are stored as f32 (exact below 2^24).
pub struct Rows {
    top_ids: Vec<u32>,
    top: Vec<f32>,
    probe_ids: Vec<u32>,
    probe: Vec<f32>,
    pub lse: Vec<f32>,
    k: usize,
}

impl Rows {
    /// The rows stored under `prefix` (`prompt`, `greedy_step`, `greedy_0`, ...).
    pub fn load(refs: &SafeTensors, prefix: &str) -> Rows {
        let as_ids = |v: Vec<f32>| v.into_iter().map(|x| x as u32).collect::<Vec<u32>>();
        let lse = tensor(refs, &format!("{prefix}_logsumexp"));
        let top = tensor(refs, &format!("{prefix}_top_logits"));
        let k = top.len() / lse.len();
        Rows {
            top_ids: as_ids(tensor(refs, &format!("{prefix}_top_ids"))),
            top,
            probe_ids: as_ids(tensor(refs, "probe_ids")),
            probe: tensor(refs, &format!("{prefix}_probe_logits")),
            lse,
            k,
        }
    }

    pub fn len(&self) -> usize {
        self.lse.len()
    }

    /// HF's logit of `id` at row `r`, if the fixture kept it.
    pub fn logit(&self, r: usize, id: u32) -> Option<f32> {
        let (k, p) = (self.k, self.probe_ids.len());
        let top = self.top_ids[r * k..][..k].iter().position(|&t| t == id);
        let probe = self.probe_ids.iter().position(|&t| t == id);
        top.map(|i| self.top[r * k + i])
            .or(probe.map(|i| self.probe[r * p + i]))
    }

    /// `got` (our whole row `r`) against HF's: every kept logit within `tol`, no other id above HF's k-th largest
    /// plus `tol` (the top-k are the same ids), the log-sum-exp within `tol` + [`LSE_F32_ROUNDING`]. Returns the
    /// max-abs.
    pub fn check(&self, what: &str, r: usize, got: &[f32], tol: f32) -> f32 {
        let lse_tol = tol as f64 + LSE_F32_ROUNDING;
        let (k, p) = (self.k, self.probe_ids.len());
        let mut worst = 0.0f32;
        let mut kept = vec![false; got.len()];
        let ids = self.top_ids[r * k..][..k].iter().chain(&self.probe_ids);
        let want = self.top[r * k..][..k].iter().chain(&self.probe[r * p..][..p]);
        for (&id, &w) in ids.zip(want) {
            worst = worst.max((got[id as usize] - w).abs());
        }
        assert!(
            worst <= tol,
            "{what} row {r}: logits differ by {worst} (tolerance {tol})"
        );
        for &id in &self.top_ids[r * k..][..k] {
            kept[id as usize] = true;
        }
        let kth = self.top[r * k + k - 1];
        let outside = (0..got.len())
            .filter(|&i| !kept[i])
            .max_by(|&a, &b| got[a].total_cmp(&got[b]));
        if let Some(i) = outside {
            assert!(
                got[i] <= kth + tol,
                "{what} row {r}: id {i} has logit {} above HF's top-{k} (smallest {kth})",
                got[i]
            );
        }
        let max = got.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + got.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
        let dl = (lse - self.lse[r] as f64).abs();
        assert!(
            dl <= lse_tol,
            "{what} row {r}: log-sum-exp {lse} vs HF {} (tolerance {lse_tol})",
            self.lse[r]
        );
        worst
    }
}
