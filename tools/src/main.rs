//! `qkv`: the command line of the qkv inference engine. Each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attention;
mod explain;
mod generate;
mod import_gguf;
mod load_args;
mod plot;
mod serve;
mod stdin;
mod translate;

#[derive(Parser)]
#[command(name = "qkv", version, about = "CPU inference for Transformer models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text, streamed to stdout: a decoder-only model (Llama family, GPT-2, ...) after the prompt, or an
    /// encoder-decoder one (T5 / Flan-T5 text-to-text) from the encoded prompt.
    Generate(generate::Args),
    /// Translate sentences with an encoder-decoder model (Marian/opus-mt, BART/mBART-50, M2M100/NLLB, T5, the
    /// CTranslate2 Transformer); --source-lang / --target-lang for the multilingual ones.
    Translate(translate::Args),
    /// Attention maps of a decoder-only model over a prompt: a PNG heatmap per head, or JSON.
    Attention(attention::Args),
    /// The trace of one forward pass as tables: embeddings, Q/K/V, scores, mask, softmax, norms, feed-forward.
    Explain(explain::Args),
    /// Import a GGUF file (Llama architecture) as a Hugging Face directory.
    ImportGguf(import_gguf::Args),
    /// Serve a model over HTTP with an OpenAI-compatible API (continuous batching, limits, metrics).
    Serve(serve::Args),
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("qkv: internal error: {info}")));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Translate(args) => translate::run(args),
        Command::ImportGguf(args) => import_gguf::run(args),
        Command::Attention(args) => attention::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qkv: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `--threads N`: the size of rayon's pool, which every model step runs on (default: one thread per core).
/// A stderr line naming the GGUF tensors no kernel runs as stored (dequantized to f32 at load), if any.
fn report_dequantized(model: &qkv::Model) {
    let d = &model.info().dequantized;
    if !d.is_empty() {
        eprintln!(
            "qkv: {} GGUF tensors have a type no kernel runs yet, dequantized to f32 at load: {}",
            d.len(),
            d.join(", ")
        );
    }
}

fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot set the number of threads: {e}"))?;
    }
    Ok(())
}

/// The cause chain on one line, skipping causes whose text their parent already shows.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}
