//! `qkv explain`: the trace of one forward pass printed as tables (or `--json`): tokens, embeddings and
//! positions, one layer and head's Q, K, V, scaled scores, mask, softmax weights with their row sums, the
//! weighted sum, the residual stream's statistics around the norms, the feed-forward and the next tokens.
//! `--toy` runs the built-in d_model-4 model (`qkv::Trace::toy`) instead of a model directory.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use qkv::explain::RowStats;
use qkv::{Model, Trace};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "ids", "toy"])))]
pub struct Args {
    /// Model directory (a decoder-only model: Llama family, GPT-2).
    #[arg(long, required_unless_present = "toy")]
    model: Option<PathBuf>,
    /// The sentence to trace, e.g. "Cat is sleeping on the mat".
    text: Option<String>,
    /// Prompt token ids instead of text, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// The layer traced.
    #[arg(long, default_value_t = 0)]
    layer: usize,
    /// The head traced.
    #[arg(long, default_value_t = 0)]
    head: usize,
    /// Trace the built-in toy model (d_model 4, one head, fixed weights) over "Cat is sleeping on the mat".
    #[arg(long, conflicts_with_all = ["model", "text", "ids"])]
    toy: bool,
    /// Print the trace as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let trace = if args.toy {
        if (args.layer, args.head) != (0, 0) {
            bail!(
                "--layer {} --head {}: the toy has one layer and one head (0 and 0)",
                args.layer,
                args.head
            );
        }
        Trace::toy()
    } else {
        let dir = args.model.as_ref().context("--model is needed unless --toy")?;
        let model = Model::load(dir).with_context(|| format!("cannot load {}", dir.display()))?;
        match (&args.text, &args.ids) {
            (Some(t), _) if t.trim().is_empty() => bail!("the text to explain is empty"),
            (Some(t), _) => model.explain(t, args.layer, args.head)?,
            (None, Some(ids)) if ids.is_empty() => bail!("--ids is empty"),
            (None, Some(ids)) => model.explain_ids(ids, args.layer, args.head)?,
            (None, None) => bail!("give the text to explain, --ids or --toy"),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&trace)?);
    } else {
        print!("{}", render(&trace));
    }
    Ok(())
}

fn row(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:>8.4}")).collect()
}

fn tok(t: &Trace, i: usize) -> String {
    let s = crate::plot::label(&t.tokens[i]);
    format!("{:<12}", s.chars().take(12).collect::<String>())
}

fn matrix(out: &mut String, t: &Trace, title: &str, rows: &[Vec<f64>]) {
    let _ = writeln!(out, "   {title}");
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(out, "   {i:>3} {} {}", tok(t, i), row(r));
    }
}

fn stats_table(out: &mut String, t: &Trace, title: &str, stats: &[RowStats]) {
    let _ = writeln!(out, "   {title}");
    let _ = writeln!(
        out,
        "   {:>3} {:<12} {:>9} {:>9} {:>9}",
        "#", "token", "mean μ", "std σ", "rms"
    );
    for (i, s) in stats.iter().enumerate() {
        let _ = writeln!(
            out,
            "   {i:>3} {} {:>9.4} {:>9.4} {:>9.4}",
            tok(t, i),
            s.mean,
            s.std,
            s.rms
        );
    }
}

/// The trace as readable tables.
pub fn render(t: &Trace) -> String {
    let mut o = String::new();
    let n = t.tokens.len();
    let _ = writeln!(
        o,
        "qkv explain: {} (d_model {}, layers: {}, heads: {} of {} dims), layer {} head {}\n",
        t.model, t.d_model, t.n_layers, t.n_heads, t.head_dim, t.layer, t.head
    );
    if let Some(e) = &t.norm_example {
        let _ = writeln!(
            o,
            "0. Warm-up: LayerNorm of ({}): μ = {}, σ = √(Σ(x-μ)²/n) = {:.3}, (x - μ)/σ = ({})\n",
            e.input.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(", "),
            e.mean,
            e.std,
            e.output
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(o, "1. Tokens");
    for i in 0..n {
        let _ = writeln!(o, "   {i:>3} {} id {}", tok(t, i), t.ids[i]);
    }
    let shown = format!("first {} of {} dims", t.shown_dims, t.d_model);
    let _ = writeln!(o, "\n2. Embedding ({shown})");
    matrix(&mut o, t, "token embedding", &t.embedding);
    match &t.positions {
        Some(p) => {
            let _ = writeln!(
                o,
                "   + positional encoding ({}), added to the embedding",
                t.position_kind
            );
            matrix(&mut o, t, "position vector", p);
        }
        None => {
            let _ = writeln!(
                o,
                "   positions: {}: q and k are rotated by their position (nothing is added)",
                t.position_kind
            );
        }
    }
    let (l, h) = (t.layer, t.head);
    let _ = writeln!(
        o,
        "\n3. Layer {l}, head {h}: Q = X·W_q, K = X·W_k, V = X·W_v ({} dims per head)",
        t.head_dim
    );
    matrix(&mut o, t, "Q", &t.q);
    matrix(&mut o, t, "K", &t.k);
    matrix(&mut o, t, "V", &t.v);
    let _ = writeln!(
        o,
        "\n4. Scaled scores S = Q·Kᵀ × {:.4} (1/√{}); the causal mask hides future keys (-inf)",
        t.scale, t.head_dim
    );
    for (i, r) in t.scores.iter().enumerate() {
        let cells: String = r
            .iter()
            .map(|s| s.map_or_else(|| format!("{:>8}", "-inf"), |v| format!("{v:>8.4}")))
            .collect();
        let _ = writeln!(o, "   {i:>3} {} {cells}", tok(t, i));
    }
    let _ = writeln!(
        o,
        "\n5. Softmax weights α = softmax(S) per row (masked entries exactly 0)"
    );
    for (i, r) in t.weights.iter().enumerate() {
        let _ = writeln!(o, "   {i:>3} {} {}   sum {:.6}", tok(t, i), row(r), t.row_sums[i]);
    }
    if n >= 2 {
        let (s0, s1) = (t.scores[1][0].unwrap_or(0.0), t.scores[1][1].unwrap_or(0.0));
        let _ = writeln!(
            o,
            "   e.g. row 1: α₁,₀ = exp({s0:.4}) / (exp({s0:.4}) + exp({s1:.4})) = {:.4}, α₁,₁ = {:.4}, later keys masked: 0",
            t.weights[1][0], t.weights[1][1]
        );
    }
    let _ = writeln!(o, "\n6. Weighted sum Σⱼ αᵢ,ⱼ·Vⱼ (the head's output)");
    matrix(&mut o, t, "Σ α·V", &t.weighted_sum);
    let _ = writeln!(o, "\n7. Residual and {} ({})", t.norm_kind, t.norm_placement);
    stats_table(&mut o, t, "input of the attention norm", &t.attention_norm_input);
    stats_table(
        &mut o,
        t,
        "input of the feed-forward norm (after the attention residual)",
        &t.ffn_norm_input,
    );
    let _ = writeln!(o, "\n8. Feed-forward output ({shown})");
    matrix(&mut o, t, "FFN(x)", &t.ffn_output);
    let last = crate::plot::label(&t.tokens[n - 1]);
    let _ = writeln!(o, "\n9. Most likely next tokens after {last:?}");
    for (tok, id, p) in &t.top_next {
        let _ = writeln!(o, "   {:<14} id {id:<6} p {p:.4}", crate::plot::label(tok));
    }
    o
}
