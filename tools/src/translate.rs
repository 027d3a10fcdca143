//! `qkv translate`: translate the TEXT arguments, or each line of stdin, one translation per line in
//! input order. Timing goes to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use qkv::{LoadOptions, Model, TranslateOptions, Translation, TranslationAttention, WeightType};

use crate::plot::{Figure, Panel};

/// Lines of stdin read (and sorted by length) together: a few batches, so padding stays low while
/// output starts before the whole input is read.
const STDIN_BATCHES_PER_CHUNK: usize = 8;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Model directory (Marian/opus-mt, BART/mBART, M2M100/NLLB, T5, the CTranslate2 Transformer: config.json,
    /// *.safetensors, tokenizer).
    #[arg(long)]
    model: PathBuf,
    /// Language of the sentences (multilingual models: mBART-50 en_XX, NLLB eng_Latn, M2M100 en; default: the
    /// tokenizer's). Its token goes where the model's Hugging Face tokenizer puts it.
    #[arg(long, value_name = "CODE")]
    source_lang: Option<String>,
    /// Language to translate into (same codes): forced as the first generated token (default: the model's
    /// generation config).
    #[arg(long, value_name = "CODE")]
    target_lang: Option<String>,
    /// Print the language codes the model knows, one per line, and exit.
    #[arg(long)]
    list_languages: bool,
    /// Sentences to translate; without any, each line of stdin is one sentence.
    text: Vec<String>,
    /// Beam size (1 = greedy; default: the model's, e.g. generation_config.json num_beams).
    #[arg(long)]
    beam_size: Option<usize>,
    /// Most tokens generated per sentence, EOS included (default: the model's).
    #[arg(long)]
    max_length: Option<usize>,
    /// Sentences per batch (sorted by length first).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object {text, tokens, score} per line instead of the text.
    #[arg(long)]
    json: bool,
    /// Weights of the linear layers: as stored in the files, or int8 (quantized at load, per output row:
    /// about 4x fewer bytes than f32 to read per token; translations may differ where scores are close), or
    /// GGUF's q8_0 / q4_0 blocks (quantized at load as llama.cpp does).
    #[arg(long, default_value_t = WeightType::Stored, value_name = "stored|int8|q8_0|q4_0")]
    weights: WeightType,
    /// Record each translation's attention: an alignment PNG per sentence (source across, target down; the last
    /// decoder layer's cross-attention averaged over its heads unless --layer / --head say otherwise) in
    /// --out-dir, and with --json a "cross_attention" [layer][head][target][source] in each line.
    #[arg(long)]
    attention: bool,
    /// Where --attention writes alignment-001.png, alignment-002.png, ... (one per sentence, in input order).
    #[arg(long, default_value = ".", requires = "attention")]
    out_dir: PathBuf,
    /// The decoder layer the alignment shows (default: the last).
    #[arg(long, requires = "attention")]
    layer: Option<usize>,
    /// The head the alignment shows (default: the mean of every head).
    #[arg(long, requires = "attention")]
    head: Option<usize>,
}

/// What --attention asks for: the layer and head (None: their mean) of the pictures, and where they go.
struct Alignments {
    layer: usize,
    head: Option<usize>,
    dir: PathBuf,
    model_name: String,
}

impl Alignments {
    /// The PNG of sentence `n` (1-based).
    fn write(&self, n: usize, t: &Translation, att: &TranslationAttention) -> Result<()> {
        let cross = &att.cross;
        let (weights, what) = match self.head {
            Some(h) => (cross.head(self.layer, h).to_vec(), format!("head {h}")),
            None => (
                cross.mean_over_heads(self.layer),
                format!("mean of {} heads", cross.shape()[1]),
            ),
        };
        if att.target_ids.is_empty() {
            eprintln!("qkv: sentence {n}: nothing but EOS generated, no alignment drawn");
            return Ok(());
        }
        let fig = Figure {
            title: format!("{}: {:?}", self.model_name, t.text),
            cols: att.source_tokens.clone(),
            rows: att.target_tokens.clone(),
            panels: vec![Panel {
                title: format!(
                    "cross-attention, layer {} {what} (target down, source across)",
                    self.layer
                ),
                weights,
            }],
        };
        let path = self.dir.join(format!("alignment-{n:03}.png"));
        let (w, h) = crate::plot::write_png(&path, &fig)?;
        eprintln!("qkv: wrote {} ({w} x {h})", path.display());
        Ok(())
    }
}

/// How translations are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// One line of text per input line.
    Text,
    /// One JSON object `{text, tokens, score}` per line.
    Json,
}

/// Print one translation as the text or a JSON line.
fn print(out: &mut impl Write, t: &Translation, att: Option<&TranslationAttention>, format: Output) -> Result<()> {
    if format == Output::Json {
        let mut v = serde_json::json!({ "text": t.text, "tokens": t.tokens, "score": t.score });
        if let Some(a) = att {
            v["cross_attention"] = serde_json::json!(a.cross.to_nested());
        }
        writeln!(out, "{v}")?;
    } else {
        // one line per input line, whatever the model produced
        writeln!(out, "{}", t.text.replace(['\n', '\r'], " "))?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    crate::set_threads(args.threads)?;
    let t0 = Instant::now();
    let load = LoadOptions {
        weights: args.weights,
        ..Default::default()
    };
    let model =
        Model::load_with(&args.model, &load).with_context(|| format!("cannot load {}", args.model.display()))?;
    let load_time = t0.elapsed();
    if args.list_languages {
        let mut out = std::io::stdout().lock();
        for code in model.languages()? {
            writeln!(out, "{code}")?;
        }
        return Ok(());
    }
    let opts = TranslateOptions {
        beam_size: args.beam_size,
        max_length: args.max_length,
        batch_size: args.batch_size,
        source_lang: args.source_lang.clone(),
        target_lang: args.target_lang.clone(),
        ..Default::default()
    };
    let search = model.search_options(&opts)?;
    eprintln!(
        "qkv: loaded {} in {:.2?} (beam {}, max length {}, batch {}, weights {})",
        args.model.display(),
        load_time,
        search.num_beams,
        search.max_new_tokens,
        args.batch_size,
        args.weights
    );

    let alignments = if args.attention {
        let info = model.info();
        let (layer, _) = crate::attention::choose(info.n_layers, info.n_heads, args.layer, args.head)?;
        std::fs::create_dir_all(&args.out_dir)
            .with_context(|| format!("cannot create --out-dir {}", args.out_dir.display()))?;
        Some(Alignments {
            layer,
            head: args.head,
            dir: args.out_dir.clone(),
            model_name: args
                .model
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        })
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let t1 = Instant::now();
    let (mut n_sentences, mut n_tokens) = (0usize, 0usize);
    let mut translate = |lines: &[String], out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>| -> Result<()> {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let format = if args.json { Output::Json } else { Output::Text };
        match &alignments {
            None => {
                for t in model.translate(&refs, &opts)? {
                    n_tokens += t.tokens.len();
                    print(out, &t, None, format)?;
                }
            }
            Some(a) => {
                for (i, (t, att)) in model.translate_with_attention(&refs, &opts)?.into_iter().enumerate() {
                    n_tokens += t.tokens.len();
                    print(out, &t, Some(&att), format)?;
                    a.write(n_sentences + i + 1, &t, &att)?;
                }
            }
        }
        n_sentences += lines.len();
        out.flush()?;
        Ok(())
    };
    if args.text.is_empty() {
        let chunk = args.batch_size.max(1) * STDIN_BATCHES_PER_CHUNK;
        let mut lines = Vec::with_capacity(chunk);
        for line in crate::stdin::lines(std::io::stdin().lock()) {
            lines.push(line?);
            if lines.len() == chunk {
                translate(&lines, &mut out)?;
                lines.clear();
            }
        }
        if !lines.is_empty() {
            translate(&lines, &mut out)?;
        }
    } else {
        translate(&args.text, &mut out)?;
    }
    let secs = t1.elapsed().as_secs_f64();
    eprintln!(
        "qkv: {n_sentences} sentences, {n_tokens} tokens in {secs:.2} s ({:.1} sentences/s, {:.1} tokens/s)",
        n_sentences as f64 / secs.max(1e-9),
        n_tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
