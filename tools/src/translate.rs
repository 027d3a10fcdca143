//! `qkv translate`: translate the TEXT arguments, or each line of stdin, one translation per line in
//! input order. Timing goes to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use qkv::{LoadOptions, Model, TranslateOptions, Translation, WeightType};

/// Lines of stdin read (and sorted by length) together: a few batches, so padding stays low while
/// output starts before the whole input is read.
const STDIN_BATCHES_PER_CHUNK: usize = 8;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Model directory (Marian/opus-mt or the CTranslate2 Transformer: config.json, *.safetensors, tokenizer).
    #[arg(long)]
    model: PathBuf,
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
    /// about 4x fewer bytes than f32 to read per token; translations may differ where scores are close).
    #[arg(long, default_value_t = WeightType::Stored, value_name = "stored|int8")]
    weights: WeightType,
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
fn print(out: &mut impl Write, t: &Translation, format: Output) -> Result<()> {
    if format == Output::Json {
        let v = serde_json::json!({ "text": t.text, "tokens": t.tokens, "score": t.score });
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
    let opts = TranslateOptions {
        beam_size: args.beam_size,
        max_length: args.max_length,
        batch_size: args.batch_size,
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

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let t1 = Instant::now();
    let (mut n_sentences, mut n_tokens) = (0usize, 0usize);
    let mut translate = |lines: &[String], out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>| -> Result<()> {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        for t in model.translate(&refs, &opts)? {
            n_tokens += t.tokens.len();
            print(out, &t, if args.json { Output::Json } else { Output::Text })?;
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
