//! `qkv import-gguf`: a GGUF file to a Hugging Face model directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use loaders::gguf::{import_to_hf_dir, ImportOptions};
use loaders::Dtype;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutDtype {
    F32,
    Bf16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file (v2 or v3; F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q8_K tensors:
    /// the Q4_K_M / Q5_K_M mixes).
    pub file: PathBuf,
    /// Output directory (created; must not hold a model already).
    #[arg(long)]
    pub out: PathBuf,
    /// Stored dtype of the weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: OutDtype,
}

pub fn run(args: Args) -> Result<()> {
    if args.out.join("config.json").exists() {
        bail!(
            "{} already holds a model (config.json); choose another --out",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let dtype = match args.dtype {
        OutDtype::F32 => Dtype::F32,
        OutDtype::Bf16 => Dtype::BF16,
    };
    let t = Instant::now();
    import_to_hf_dir(&args.file, &args.out, &ImportOptions { dtype })?;
    eprintln!(
        "qkv: imported {} into {} ({dtype}) in {:.1} s",
        args.file.display(),
        args.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
