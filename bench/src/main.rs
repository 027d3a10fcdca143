//! `qkv-bench`: the machine's limits, every kernel against its naive reference, and model throughput.
//!
//! ```text
//! qkv-bench machine            # read bandwidth, FMA peak, CPU features
//! qkv-bench kernels [--quick]  # every kernel × every ISA vs the naive reference
//! qkv-bench models --model DIR # prefill / decode tokens/s, TTFT, peak RSS (--weights int8: quantized at load)
//! ```
//! Every subcommand prints a table, or JSON with `--json`.

mod kernel_suite;
mod machine;
mod models;
mod timing;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::Isa;
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "qkv-bench",
    about = "qkv throughput against naive references and this machine's limits"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Smaller shapes and shorter runs (a smoke test, not a measurement).
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure read bandwidth and FMA peak; list CPU features.
    Machine,
    /// Every kernel on every available ISA (or --isa) against its naive reference.
    Kernels {
        /// Only these ISAs (scalar, avx2, avx512, neon); default: every one this CPU has.
        #[arg(long, value_delimiter = ',')]
        isa: Vec<String>,
        /// Only the kernels whose name contains one of these (e.g. `gemm,top_k`); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Prefill and decode tokens/s, time to first token and peak RSS of model directories.
    Models {
        /// A model directory (repeat for several).
        #[arg(long = "model", required = true)]
        models: Vec<std::path::PathBuf>,
        /// Prompt (decoder-only) or source (encoder-decoder) length in tokens.
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        /// Tokens generated per sequence (forced: EOS does not end the run).
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Beam size (encoder-decoder models).
        #[arg(long, default_value_t = 1)]
        beam: usize,
        /// Runs per model; the best is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Linear layers' weights as stored, or int8 (quantized at load; the dtype column then says int8).
        #[arg(long, default_value_t = qkv::WeightType::Stored, value_name = "stored|int8")]
        weights: qkv::WeightType,
        /// What the linear layers multiply by: f32 activations, or reduced to the weights' class (bf16 / int8;
        /// the dtype column then ends in `-x`).
        #[arg(long, default_value_t = qkv::Activations::F32, value_name = "f32|reduced")]
        activations: qkv::Activations,
    },
}

#[derive(Serialize)]
struct KernelReport<'a> {
    machine: &'a machine::Machine,
    kernels: &'a [kernel_suite::KernelRow],
}

fn main() {
    if let Err(e) = run() {
        eprintln!("qkv-bench: {e}");
        std::process::exit(1);
    }
}

/// `value` as pretty JSON.
fn to_json<T: Serialize>(value: &T) -> qkv::Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| qkv::Error::Request(format!("cannot write the JSON report: {e}")))
}

fn run() -> qkv::Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| qkv::Error::Request(format!("--threads {n}: {e}")))?;
    }
    match cli.cmd {
        Cmd::Machine => {
            let m = machine::measure(cli.quick);
            if cli.json {
                println!("{}", to_json(&m)?);
            } else {
                print_machine(&m);
            }
        }
        Cmd::Kernels { isa, only } => {
            let isas = if isa.is_empty() {
                Isa::available()
            } else {
                let mut v = Vec::new();
                for s in &isa {
                    let i = Isa::parse(s)?;
                    i.check_supported()?;
                    v.push(i);
                }
                v
            };
            // The limits the kernels are compared with: the full measurement (1 GiB, more than this CPU's L3)
            // unless --quick.
            let m = machine::measure(cli.quick);
            let bar = progress_bar(Progress::unless_json(cli.json));
            let rows = kernel_suite::run(&m, &isas, &only, cli.quick, &bar);
            bar.finish_and_clear();
            if cli.json {
                let report = KernelReport {
                    machine: &m,
                    kernels: &rows,
                };
                println!("{}", to_json(&report)?);
            } else {
                print_machine(&m);
                print_kernels(&rows);
            }
        }
        Cmd::Models {
            models,
            prompt_len,
            new_tokens,
            batch,
            beam,
            runs,
            weights,
            activations,
        } => {
            let w = models::Workload {
                prompt_len,
                new_tokens,
                batch,
                beam,
                runs,
                weights,
                activations,
            };
            let bar = progress_bar(Progress::unless_json(cli.json));
            bar.set_length(models.len() as u64);
            let mut rows = Vec::new();
            for dir in &models {
                bar.set_message(dir.display().to_string());
                rows.push(models::run(dir, w)?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            if cli.json {
                // one model: one object (the contract tools/scripts/peers.py reads); several: an array
                let out = if rows.len() == 1 {
                    to_json(&rows[0])?
                } else {
                    to_json(&rows)?
                };
                println!("{out}");
            } else {
                print_models(&rows);
            }
        }
    }
    Ok(())
}

fn print_models(rows: &[models::ModelRow]) {
    println!(
        "{:<40} {:<16} {:<9} {:>5} {:>4} {:>6} {:>6} {:>12} {:>11} {:>9} {:>9}",
        "model", "arch", "dtype", "batch", "beam", "prompt", "new", "prefill t/s", "decode t/s", "TTFT", "peak RSS"
    );
    for r in rows {
        println!(
            "{:<40} {:<16} {:<9} {:>5} {:>4} {:>6} {:>6} {:>12.1} {:>11.1} {:>9} {:>7.0} MB",
            r.model,
            r.arch,
            r.dtype,
            r.batch,
            r.beam,
            r.prompt_len,
            r.new_tokens,
            r.prefill_tok_s,
            r.decode_tok_s,
            fmt_time(r.ttft_s),
            r.peak_rss_mb
        );
    }
    if let Some(r) = rows.first() {
        println!(
            "\n{} threads, isa {}, best of {} runs; decode t/s counts every row of the batch.",
            r.threads, r.isa, r.runs
        );
    }
}

/// Whether progress is drawn (not when stdout carries JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    Shown,
    Hidden,
}

impl Progress {
    fn unless_json(json: bool) -> Self {
        if json {
            Progress::Hidden
        } else {
            Progress::Shown
        }
    }
}

fn progress_bar(progress: Progress) -> ProgressBar {
    if progress == Progress::Hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn print_machine(m: &machine::Machine) {
    println!("machine: {} | {} threads | {}", m.cpu, m.threads, m.features.join(" "));
    println!(
        "limits:  read bandwidth {:.1} GB/s | f32 FMA peak {:.1} GFLOP/s",
        m.read_gbs, m.fma_gflops
    );
}

fn print_kernels(rows: &[kernel_suite::KernelRow]) {
    println!();
    println!(
        "{:<18} {:<38} {:<10} {:>11} {:>9} {:>9} {:>8} {:>9}",
        "kernel", "shape", "isa", "median", "GFLOP/s", "GB/s", "% limit", "vs naive"
    );
    for r in rows {
        let limit = match r.bound {
            kernel_suite::Bound::Compute => format!("{:.0}% F", r.pct_of_limit),
            kernel_suite::Bound::Memory => format!("{:.0}% B", r.pct_of_limit),
        };
        println!(
            "{:<18} {:<38} {:<10} {:>11} {:>9.1} {:>9.1} {:>8} {:>8.1}x{}",
            r.kernel,
            r.shape,
            r.isa,
            fmt_time(r.timing.median_s),
            r.gflops,
            r.gbs,
            limit,
            r.speedup_vs_reference,
            if r.noisy { "  (noisy: p10-p90 spread > 25%)" } else { "" }
        );
    }
    println!(
        "\n% limit: F = of measured FMA peak, B = of measured read bandwidth (cache-resident shapes can exceed 100%)."
    );
}

fn fmt_time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}
