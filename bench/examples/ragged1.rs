use std::time::Instant;
use qkv::{BatchOptions, GenerateOptions, Model, LoadOptions};
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let act: qkv::Activations = std::env::args().nth(2).unwrap_or("f32".into()).parse().unwrap();
    let model = Model::load_with(&dir, &LoadOptions { activations: act, ..Default::default() }).unwrap();
    let prompt: Vec<u32> = (0..20).map(|i| 100 + i * 7).collect();
    let opts = GenerateOptions { max_new_tokens: 128, ..Default::default() };
    for round in 0..3 {
        let t = Instant::now();
        let g = model.stream_ids(prompt.clone(), &opts).unwrap().run().unwrap();
        let a = t.elapsed().as_secs_f64() / g.tokens.len() as f64;
        let t = Instant::now();
        let b = model.generate_batch_ids(&[prompt.clone()], &opts, BatchOptions { max_seqs: 16, ctx: Some(512), ..Default::default() }).unwrap();
        let bb = t.elapsed().as_secs_f64() / b[0].tokens.len() as f64;
        let prompts: Vec<Vec<u32>> = (0..16).map(|s| (0..20).map(|i| 100 + i * 7 + s).collect()).collect();
        let t = Instant::now();
        let c = model.generate_batch_ids(&prompts, &opts, BatchOptions { max_seqs: 16, ctx: Some(512), ..Default::default() }).unwrap();
        let n: usize = c.iter().map(|g| g.tokens.len()).sum();
        let cc = t.elapsed().as_secs_f64();
        println!("round {round}: stream {:.2} ms/tok, batch-of-1 {:.2} ms/tok, batch-of-16 {:.1} tok/s ({} tokens, {:.2} ms/step)", a * 1e3, bb * 1e3, n as f64 / cc, n, cc * 1e3 / 148.0);
    }
}
