//! `qkv attention`: the self-attention maps of a decoder-only model over a prompt, as a PNG heatmap grid (one
//! panel per head of a layer, or the head asked for) and/or JSON `{tokens, ids, attentions}` indexed
//! `[layer][head][query][key]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use qkv::Model;

use crate::plot::{self, Figure, Panel};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct Args {
    /// Model directory (a decoder-only model: Llama family, GPT-2).
    #[arg(long)]
    model: PathBuf,
    /// The prompt (encoded as `generate` encodes a plain prompt).
    #[arg(long)]
    prompt: Option<String>,
    /// Prompt token ids instead of text, comma-separated (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// The layer the picture shows (default: the last).
    #[arg(long)]
    layer: Option<usize>,
    /// Show this head only (default: every head of the layer, one panel each).
    #[arg(long)]
    head: Option<usize>,
    /// Write the heatmap PNG here (default attention.png unless --json is given).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print {"tokens", "ids", "attentions"} (every layer and head) as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Which layer and heads a picture shows: `layer` (default the last) and `head` (default every head), checked
/// against `n_layers` x `n_heads`, an error naming the option otherwise.
pub fn choose(
    n_layers: usize,
    n_heads: usize,
    layer: Option<usize>,
    head: Option<usize>,
) -> Result<(usize, Vec<usize>)> {
    let layer = layer.unwrap_or(n_layers.saturating_sub(1));
    if layer >= n_layers {
        bail!(
            "--layer {layer} is out of range: the model has {n_layers} layers (0..={})",
            n_layers - 1
        );
    }
    let heads = match head {
        Some(h) if h >= n_heads => {
            bail!(
                "--head {h} is out of range: the model has {n_heads} heads per layer (0..={})",
                n_heads - 1
            )
        }
        Some(h) => vec![h],
        None => (0..n_heads).collect(),
    };
    Ok((layer, heads))
}

pub fn run(args: Args) -> Result<()> {
    let model = Model::load(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let att = match (&args.prompt, &args.ids) {
        (Some(p), _) if p.trim().is_empty() => bail!("--prompt is empty"),
        (Some(p), _) => model.attention(p)?,
        (None, Some(ids)) if ids.is_empty() => bail!("--ids is empty"),
        (None, Some(ids)) => model.attention_ids(ids)?,
        (None, None) => bail!("give --prompt or --ids"),
    };
    let maps = &att.self_attention;
    let [n_layers, n_heads, _, _] = maps.shape();
    let (layer, heads) = choose(n_layers, n_heads, args.layer, args.head)?;
    if args.json {
        let v = serde_json::json!({ "tokens": att.tokens, "ids": att.ids, "attentions": maps.to_nested() });
        println!("{v}");
    }
    let out = match (&args.out, args.json) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(PathBuf::from("attention.png")),
        (None, true) => None,
    };
    if let Some(path) = out {
        let name = args
            .model
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let panels = heads
            .iter()
            .map(|&h| Panel {
                title: format!("layer {layer} head {h}"),
                weights: maps.head(layer, h).to_vec(),
            })
            .collect::<Vec<_>>();
        let fig = Figure {
            title: format!("{name}: self-attention, layer {layer} (query down, key across)"),
            cols: att.tokens.clone(),
            rows: att.tokens.clone(),
            panels,
        };
        let (w, h) = plot::write_png(&path, &fig)?;
        eprintln!("qkv: wrote {} ({w} x {h}, {} panels)", path.display(), fig.panels.len());
    }
    Ok(())
}
