//! `qkv attention` and `qkv translate --attention` on the shipped models (stories260k, aren): the PNGs are
//! decoded and checked (size, one coloured block per panel plus the colour scale, non-uniform pixels), the JSON
//! has the documented shape and rows that sum to 1. Errors are in cli_errors.rs.

use std::path::Path;
use std::process::Command;

use loaders::paths::shared_model;

/// Max |row sum - 1| of the JSON probabilities (f32 weights printed in full by serde_json; see
/// engine/tests/attention.rs for why the rows sum to 1 within 6e-8).
const ROW_SUM_TOL: f64 = 1e-6;

fn model(name: &str) -> String {
    shared_model(name).expect("shared model").to_str().unwrap().to_string()
}

/// `qkv args...`: stdout, checked to have succeeded.
fn qkv(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .output()
        .expect("run qkv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qkv {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// A pixel of a heatmap or the colour scale: saturated (viridis), unlike the white background and the grey
/// antialiased black text.
fn coloured(p: &image::Rgb<u8>) -> bool {
    let (mx, mn) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
    mx - mn > 40
}

/// The PNG's size, its number of coloured blocks (4-connected components: each panel's cells touch, so a
/// panel is one block, and the colour scale is one more) and the number of distinct colours in them.
fn inspect(path: &Path) -> ((u32, u32), usize, usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    let mut seen = vec![false; (w * h) as usize];
    let mut colours = std::collections::HashSet::new();
    let mut blocks = 0;
    for start in 0..w * h {
        let (x, y) = (start % w, start / w);
        if seen[start as usize] || !coloured(img.get_pixel(x, y)) {
            continue;
        }
        blocks += 1;
        let mut stack = vec![(x, y)];
        seen[start as usize] = true;
        while let Some((x, y)) = stack.pop() {
            colours.insert(img.get_pixel(x, y).0);
            let around = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
            for (nx, ny) in around {
                if nx < w && ny < h && !seen[(ny * w + nx) as usize] && coloured(img.get_pixel(nx, ny)) {
                    seen[(ny * w + nx) as usize] = true;
                    stack.push((nx, ny));
                }
            }
        }
    }
    ((w, h), blocks, colours.len())
}

fn check_rows(rows: &serde_json::Value) {
    for row in rows.as_array().unwrap() {
        let sum: f64 = row.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() <= ROW_SUM_TOL, "row sums to {sum}");
    }
}

#[test]
fn attention_png_has_a_panel_per_head() {
    let tmp = tempfile::tempdir().unwrap();
    let stories = model("stories260k");
    let all = tmp.path().join("all.png");
    qkv(&[
        "attention",
        "--model",
        &stories,
        "--prompt",
        "Once upon a time",
        "--layer",
        "2",
        "--out",
        all.to_str().unwrap(),
    ]);
    let ((w, h), blocks, colours) = inspect(&all);
    // 8 heads: a grid of 4 x 2 panels, and the colour scale
    assert_eq!(blocks, 8 + 1, "{w} x {h}");
    assert!(w > h && w >= 800 && h >= 300, "{w} x {h}");
    assert!(colours > 20, "only {colours} colours: a uniform map?");
    let one = tmp.path().join("one.png");
    qkv(&[
        "attention",
        "--model",
        &stories,
        "--ids",
        "1,403,407,261,378",
        "--head",
        "3",
        "--out",
        one.to_str().unwrap(),
    ]);
    let ((w1, _), blocks, colours) = inspect(&one);
    assert_eq!(blocks, 1 + 1);
    assert!(w1 < w && colours > 5, "{w1} {colours}");
}

#[test]
fn attention_json_is_layer_head_query_key() {
    let out = qkv(&[
        "attention",
        "--model",
        &model("stories260k"),
        "--ids",
        "1,403,407,261",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ids"], serde_json::json!([1, 403, 407, 261]));
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    let att = v["attentions"].as_array().unwrap();
    assert_eq!(att.len(), 5); // layers
    for layer in att {
        assert_eq!(layer.as_array().unwrap().len(), 8); // heads
        for head in layer.as_array().unwrap() {
            check_rows(head);
            for (q, row) in head.as_array().unwrap().iter().enumerate() {
                let row = row.as_array().unwrap();
                assert_eq!(row.len(), 4);
                assert!(
                    row[q + 1..].iter().all(|p| p.as_f64() == Some(0.0)),
                    "future keys are exactly 0"
                );
            }
        }
    }
}

#[test]
fn translate_attention_writes_alignments_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("maps");
    let out = qkv(&[
        "translate",
        "--model",
        &model("aren-transliteration-ct2"),
        "--attention",
        "--json",
        "--out-dir",
        dir.to_str().unwrap(),
        "محمد",
        "فاطمة",
    ]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (i, (line, source)) in lines.iter().zip(["محمد", "فاطمة"]).enumerate() {
        let cross = line["cross_attention"].as_array().unwrap();
        assert_eq!(cross.len(), 6); // decoder layers
        let target_len = line["text"].as_str().unwrap().chars().count();
        for head in cross.iter().flat_map(|l| l.as_array().unwrap()) {
            let rows = head.as_array().unwrap();
            assert_eq!(rows.len(), target_len, "one row per generated token, EOS not included");
            assert!(rows
                .iter()
                .all(|r| r.as_array().unwrap().len() == source.chars().count()));
            check_rows(head);
        }
        let ((w, h), blocks, colours) = inspect(&dir.join(format!("alignment-{:03}.png", i + 1)));
        assert_eq!(blocks, 1 + 1, "{w} x {h}");
        assert!(colours > 5, "{colours}");
    }
}
