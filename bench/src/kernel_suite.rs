//! Every kernel on every available ISA against its naive reference.

use std::time::Duration;

use half::{bf16, f16};
use kernels::{
    quantize_i8, reference, Activation, AttnArgs, Bf16Gemv, BlockLayout, BlockType, I8Range, Isa, Kernels, Layout,
    Mask, PackedWeight, QuantizedBlocks, QuantizedRows, RopeLayout, RopeTable, Strides, Weight, WeightData,
};
use serde::Serialize;

use crate::machine::Machine;
use crate::timing::{time, Timing};

/// What limits a kernel: compute (compare with FMA peak) or memory (compare with read bandwidth).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Bound {
    Compute,
    Memory,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub kernel: String,
    pub shape: String,
    pub isa: String,
    pub timing: Timing,
    pub gflops: f64,
    pub gbs: f64,
    pub bound: Bound,
    /// Percent of the machine limit for this bound.
    pub pct_of_limit: f64,
    /// Reference time / this time.
    pub speedup_vs_reference: f64,
    pub noisy: bool,
}

/// One workload: its cost model and a runner per ISA (`None` = the naive reference).
struct Workload {
    kernel: &'static str,
    shape: String,
    flops: f64,
    bytes: f64,
    bound: Bound,
    run: Box<dyn FnMut(Option<Kernels>)>,
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Leak a vector so closures can hold `'static` weight views for the whole run.
fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

/// GEMV at batch 1 over `copies` (equal) weight matrices taken in turn, so that with enough copies every call
/// reads its weights from DRAM rather than from a cache that held the previous call's (this CPU's L3 can be
/// hundreds of MB); one copy measures the cached case.
fn gemv(kernel: &'static str, out_dim: usize, in_dim: usize, copies: Vec<WeightData<'static>>) -> Workload {
    gemv_tuned(kernel, out_dim, in_dim, copies, |k| k)
}

/// [`gemv`] on kernels set up by `tune` (e.g. another int8 mode).
fn gemv_tuned(
    kernel: &'static str,
    out_dim: usize,
    in_dim: usize,
    copies: Vec<WeightData<'static>>,
    tune: fn(Kernels) -> Kernels,
) -> Workload {
    let ws: Vec<Weight<'static>> = copies
        .iter()
        .map(|&data| Weight::new(data, out_dim, in_dim, Layout::OutIn).expect("weight shape"))
        .collect();
    let x = rand_vec(in_dim, 2);
    let mut y = vec![0.0f32; out_dim];
    let total_mb = (ws.len() * copies[0].bytes()) as f64 / (1 << 20) as f64;
    let mut next = 0;
    Workload {
        kernel,
        shape: if ws.len() > 1 {
            format!("{out_dim}x{in_dim} cold ({} copies, {total_mb:.0} MB)", ws.len())
        } else {
            format!("{out_dim}x{in_dim} ({total_mb:.1} MB, cached)")
        },
        flops: 2.0 * (out_dim * in_dim) as f64,
        bytes: copies[0].bytes() as f64,
        bound: Bound::Memory,
        run: Box::new(move |k| {
            let w = &ws[next % ws.len()];
            next += 1;
            match k {
                Some(k) => tune(k).linear(&x, 1, w, None, &mut y),
                None => reference::linear(&x, 1, w, None, &mut y),
            }
        }),
    }
}

/// `copies` packings of `w` for the ISA of the last kernels asked for (packing is load-time work: the warm-up run of
/// each ISA does it; one ISA's copies are held at a time).
struct Packed {
    w: Weight<'static>,
    copies: usize,
    held: Option<(Isa, Vec<PackedWeight>)>,
    /// Quantized into GGUF blocks at packing instead, in this layout.
    blocks: Option<(BlockType, BlockLayout)>,
}

impl Packed {
    fn new(w: Weight<'static>, copies: usize) -> Self {
        Self {
            w,
            copies,
            held: None,
            blocks: None,
        }
    }

    fn get(&mut self, k: Kernels, i: usize) -> &PackedWeight {
        if self.held.as_ref().is_none_or(|(isa, _)| *isa != k.isa()) {
            self.held = None; // free the previous ISA's copies first
            let v = (0..self.copies)
                .map(|_| match self.blocks {
                    Some((ty, BlockLayout::Groups)) => {
                        PackedWeight::quantize_blocks(&k, &[self.w], ty).expect("whole blocks")
                    }
                    Some((ty, layout)) => {
                        let bytes = quantize_rows_to_blocks(&self.w, ty);
                        PackedWeight::from_blocks_in(&k, ty, layout, &bytes, self.w.out_dim, self.w.in_dim)
                            .expect("whole blocks")
                    }
                    None => PackedWeight::new(&k, &self.w).expect("packable"),
                })
                .collect();
            self.held = Some((k.isa(), v));
        }
        let v = &self.held.as_ref().expect("just packed").1;
        &v[i % v.len()]
    }
}

/// `w` quantized row by row into GGUF blocks of `ty`, in ggml's order.
fn quantize_rows_to_blocks(w: &Weight<'_>, ty: BlockType) -> Vec<u8> {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    let mut bytes = vec![0u8; ty.matrix_bytes(out_dim, in_dim).expect("whole blocks")];
    let rb = bytes.len() / out_dim;
    for (o, dst) in bytes.chunks_exact_mut(rb).enumerate() {
        let row: Vec<f32> = (0..in_dim).map(|i| w.at(o, i)).collect();
        ty.quantize(&row, dst).expect("whole blocks");
    }
    bytes
}

/// How a packed workload multiplies: f32 activations (the kernels as given, or with `vdpbf16ps`), or int8 x int8
/// (activations quantized per call, in the range fastest for the ISA).
#[derive(Clone, Copy)]
enum PackedMode {
    F32,
    DotBf16,
    Int8,
    /// GGUF blocks of this type in this layout, Q8 activation blocks quantized per call.
    Blocks(BlockType, BlockLayout),
}

/// `rows` x (`w` packed) per call, cycling through `copies` packings (cold when they exceed the caches).
fn packed(
    kernel: &'static str,
    shape: String,
    rows: usize,
    w: Weight<'static>,
    copies: usize,
    mode: PackedMode,
) -> Workload {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    let x = rand_vec(rows * in_dim, 21);
    let mut y = vec![0.0f32; rows * out_dim];
    let mut pw = Packed::new(w, copies);
    let mut xq = QuantizedRows::default();
    let (xq_ref, sx_ref) = reference::quantize_rows(&x, in_dim, I8Range::Full);
    let mut xb = QuantizedBlocks::default();
    let mut next = 0;
    let bytes = match mode {
        PackedMode::Blocks(ty, layout) => {
            pw.blocks = Some((ty, layout));
            ty.matrix_bytes(out_dim, in_dim).expect("whole blocks") as f64
        }
        _ => w.data.bytes() as f64,
    };
    // The reference of a block workload: its blocks quantized once, on the scalar kernels.
    let blocks_ref = match mode {
        PackedMode::Blocks(ty, _) => Some((ty, quantize_rows_to_blocks(&w, ty), {
            let mut xr = QuantizedBlocks::default();
            Kernels::scalar().quantize_blocks_for(ty, &x, in_dim, &mut xr);
            xr
        })),
        _ => None,
    };
    Workload {
        kernel,
        shape,
        flops: 2.0 * (rows * out_dim * in_dim) as f64,
        bytes: if rows <= 8 {
            bytes
        } else {
            bytes + 4.0 * (rows * (in_dim + out_dim)) as f64
        },
        bound: if rows <= 8 { Bound::Memory } else { Bound::Compute },
        run: Box::new(move |k| {
            next += 1;
            match (k, mode) {
                (None, PackedMode::Blocks(..)) => {
                    let (ty, bytes, xr) = blocks_ref.as_ref().expect("made above");
                    if ty.block_size() == kernels::QK {
                        reference::linear_blocks(xr, *ty, bytes, out_dim, None, &mut y)
                    } else {
                        reference::linear_kblocks(xr, *ty, bytes, out_dim, None, &mut y)
                    }
                }
                (Some(k), PackedMode::Blocks(ty, _)) => {
                    k.quantize_blocks_for(ty, &x, in_dim, &mut xb);
                    k.linear_blocks(&xb, pw.get(k, next), None, &mut y)
                }
                (None, PackedMode::Int8) => reference::linear_q(&xq_ref, &sx_ref, rows, &pw.w, None, &mut y),
                (None, _) => reference::linear(&x, rows, &pw.w, None, &mut y),
                (Some(k), PackedMode::F32) => k.linear_packed(&x, rows, pw.get(k, next), None, &mut y),
                (Some(k), PackedMode::DotBf16) => {
                    let k = k.with_bf16_gemv(Bf16Gemv::DotBf16);
                    k.linear_packed(&x, rows, pw.get(k, next), None, &mut y)
                }
                (Some(k), PackedMode::Int8) => {
                    k.quantize_rows(&x, in_dim, I8Range::fastest_for(&k), &mut xq);
                    k.linear_q(&xq, pw.get(k, next), None, &mut y)
                }
            }
        }),
    }
}

/// `n` leaked copies of `v` (distinct memory, same values).
fn copies<T: Clone>(v: &[T], n: usize) -> Vec<&'static [T]> {
    (0..n).map(|_| leak(v.to_vec())).collect()
}

/// Weights read per cold GEMV pass: twice the largest L3 seen on these machines (480 MiB), in copies.
const COLD_BYTES: usize = 1 << 30;
/// Weights read per cold pass of the small (SmolLM2) shapes: 256 MiB, 8x this CPU's L3.
const COLD_SMALL: usize = 1 << 28;

fn workloads(quick: bool) -> Vec<Workload> {
    let (gv_out, gv_in) = if quick { (1024, 4096) } else { (2048, 8192) };
    let n = gv_out * gv_in;
    let cold = |elem: usize| if quick { 2 } else { COLD_BYTES.div_ceil(n * elem) };
    let wf32 = rand_vec(n, 1);
    let wbf16: Vec<bf16> = wf32.iter().map(|&v| bf16::from_f32(v)).collect();
    let wf16: Vec<f16> = wf32.iter().map(|&v| f16::from_f32(v)).collect();
    // int8 (values and row scales; the copies serve both int8 rows)
    let qi8 = quantize_i8(&Weight::new(WeightData::F32(&wf32), gv_out, gv_in, Layout::OutIn).expect("weight shape"));
    let wi8: Vec<WeightData<'static>> = (0..cold(1))
        .map(|_| WeightData::I8 {
            q: leak(qi8.q.clone()),
            scales: leak(qi8.scales.clone()),
        })
        .collect();
    let mut list = vec![
        gemv(
            "gemv_f32",
            gv_out,
            gv_in,
            copies(&wf32, cold(4)).into_iter().map(WeightData::F32).collect(),
        ),
        gemv(
            "gemv_bf16",
            gv_out,
            gv_in,
            copies(&wbf16, cold(2)).into_iter().map(WeightData::Bf16).collect(),
        ),
        gemv(
            "gemv_f16",
            gv_out,
            gv_in,
            copies(&wf16, cold(2)).into_iter().map(WeightData::F16).collect(),
        ),
        gemv("gemv_i8", gv_out, gv_in, wi8.clone()),
        // x rounded to i16, vpdpwssd (AVX-512 VNNI; the other ISAs run gemv_i8's path)
        gemv_tuned("gemv_i8_dot_i16", gv_out, gv_in, wi8, |k| {
            k.with_i8_gemv(kernels::I8Gemv::DotI16)
        }),
        gemv("gemv_f32", gv_out, gv_in, vec![WeightData::F32(leak(wf32))]),
        gemv(
            "gemv_f32",
            576,
            1536,
            vec![WeightData::F32(leak(rand_vec(576 * 1536, 3)))],
        ),
    ];

    // GEMV on weights packed at load (batch 1, cold: as many packed copies as the stored rows above), and at 16 rows
    // (beams, batched decode).
    let shape = |rows: usize| format!("{rows}x{gv_out}x{gv_in} cold");
    let wp = |data| Weight::new(data, gv_out, gv_in, Layout::OutIn).expect("weight shape");
    let f32_w = wp(WeightData::F32(copies(&rand_vec(n, 1), 1)[0]));
    let bf16_w = wp(WeightData::Bf16(leak(wbf16.clone())));
    let i8_w = wp(WeightData::I8 {
        q: leak(qi8.q.clone()),
        scales: leak(qi8.scales.clone()),
    });
    list.push(packed("gemv_f32_packed", shape(1), 1, f32_w, cold(4), PackedMode::F32));
    list.push(packed(
        "gemv_bf16_packed",
        shape(1),
        1,
        bf16_w,
        cold(2),
        PackedMode::F32,
    ));
    list.push(packed(
        "gemv_i8xi8_packed",
        shape(1),
        1,
        i8_w,
        cold(1),
        PackedMode::Int8,
    ));
    for (name, ty, layout, per_weight) in [
        ("gemv_q8_0_blocks", BlockType::Q8_0, BlockLayout::Groups, 34.0 / 32.0),
        ("gemv_q8_0_rows", BlockType::Q8_0, BlockLayout::Rows, 34.0 / 32.0),
        ("gemv_q4_0_blocks", BlockType::Q4_0, BlockLayout::Groups, 18.0 / 32.0),
        ("gemv_q4_0_rows", BlockType::Q4_0, BlockLayout::Rows, 18.0 / 32.0),
        ("gemv_q4_1_blocks", BlockType::Q4_1, BlockLayout::Groups, 20.0 / 32.0),
        ("gemv_q4_k_rows", BlockType::Q4_K, BlockLayout::Rows, 144.0 / 256.0),
        ("gemv_q6_k_rows", BlockType::Q6_K, BlockLayout::Rows, 210.0 / 256.0),
    ] {
        let copies = (COLD_BYTES as f64 / (n as f64 * per_weight)).ceil() as usize;
        let copies = if quick { 2 } else { copies };
        list.push(packed(name, shape(1), 1, f32_w, copies, PackedMode::Blocks(ty, layout)));
    }
    // SmolLM2-135M's MLP down projection (576 x 1536), batch 1, cold: its 135M weights exceed the caches too, so
    // COLD_SMALL (8x this CPU's 32 MiB L3) in copies.
    let (so, si) = (576, 1536);
    let sn = so * si;
    let small = |per_weight: f64| {
        if quick {
            2
        } else {
            (COLD_SMALL as f64 / (sn as f64 * per_weight)).ceil() as usize
        }
    };
    let sshape = format!("1x{so}x{si} cold");
    let sf32 = rand_vec(sn, 31);
    let sw = |data| Weight::new(data, so, si, Layout::OutIn).expect("weight shape");
    let sf32_w = sw(WeightData::F32(leak(sf32.clone())));
    let si8 = quantize_i8(&sf32_w);
    let si8_w = sw(WeightData::I8 {
        q: leak(si8.q),
        scales: leak(si8.scales),
    });
    list.push(packed(
        "gemv_f32_packed",
        sshape.clone(),
        1,
        sf32_w,
        small(4.0),
        PackedMode::F32,
    ));
    list.push(packed(
        "gemv_i8xi8_packed",
        sshape.clone(),
        1,
        si8_w,
        small(1.0),
        PackedMode::Int8,
    ));
    for (name, ty, layout, per_weight) in [
        ("gemv_q8_0_blocks", BlockType::Q8_0, BlockLayout::Groups, 34.0 / 32.0),
        ("gemv_q8_0_rows", BlockType::Q8_0, BlockLayout::Rows, 34.0 / 32.0),
        ("gemv_q4_0_blocks", BlockType::Q4_0, BlockLayout::Groups, 18.0 / 32.0),
        ("gemv_q4_1_blocks", BlockType::Q4_1, BlockLayout::Groups, 20.0 / 32.0),
        ("gemv_q4_k_rows", BlockType::Q4_K, BlockLayout::Rows, 144.0 / 256.0),
    ] {
        list.push(packed(
            name,
            sshape.clone(),
            1,
            sf32_w,
            small(per_weight),
            PackedMode::Blocks(ty, layout),
        ));
    }
    list.push(packed(
        "gemm_f32_packed",
        shape(16),
        16,
        f32_w,
        cold(4),
        PackedMode::F32,
    ));
    list.push(packed(
        "gemm_i8xi8_packed",
        shape(16),
        16,
        i8_w,
        cold(1),
        PackedMode::Int8,
    ));

    // GEMM (prefill): [m, k] x [n, k]^T.
    let (m, n, kd) = if quick { (128, 1024, 1024) } else { (512, 2048, 2048) };
    let a = rand_vec(m * kd, 4);
    let wg = Weight::new(WeightData::F32(leak(rand_vec(n * kd, 5))), n, kd, Layout::OutIn).expect("shape");
    let gemm_shape = format!("{m}x{n}x{kd}");
    let wg_bf16 = Weight::new(
        WeightData::Bf16(leak((0..n * kd).map(|i| bf16::from_f32(wg.data.get(i))).collect())),
        n,
        kd,
        Layout::OutIn,
    )
    .expect("shape");
    let wg_i8 = quantize_i8(&wg);
    let wg_i8 = Weight::new(
        WeightData::I8 {
            q: leak(wg_i8.q),
            scales: leak(wg_i8.scales),
        },
        n,
        kd,
        Layout::OutIn,
    )
    .expect("shape");
    list.push(packed("gemm_f32_packed", gemm_shape.clone(), m, wg, 1, PackedMode::F32));
    list.push(packed(
        "gemm_bf16_packed",
        gemm_shape.clone(),
        m,
        wg_bf16,
        1,
        PackedMode::F32,
    ));
    list.push(packed(
        "gemm_bf16_dot_packed",
        gemm_shape.clone(),
        m,
        wg_bf16,
        1,
        PackedMode::DotBf16,
    ));
    list.push(packed("gemm_i8xi8_packed", gemm_shape, m, wg_i8, 1, PackedMode::Int8));
    let mut c = vec![0.0f32; m * n];
    list.push(Workload {
        kernel: "gemm_f32",
        shape: format!("{m}x{n}x{kd}"),
        flops: 2.0 * (m * n * kd) as f64,
        bytes: ((m * kd + n * kd + m * n) * 4) as f64,
        bound: Bound::Compute,
        run: Box::new(move |k| match k {
            Some(k) => k.linear(&a, m, &wg, None, &mut c),
            None => reference::linear(&a, m, &wg, None, &mut c),
        }),
    });

    // Fused causal attention (prefill): 8 heads, head_dim 64.
    let (len, heads, hd) = (if quick { 512 } else { 2048 }, 8, 64);
    let q = rand_vec(len * heads * hd, 6);
    let kk = rand_vec(len * heads * hd, 7);
    let v = rand_vec(len * heads * hd, 8);
    let mut o = vec![0.0f32; len * heads * hd];
    let st = Strides::token_major(len, heads, hd);
    list.push(Workload {
        kernel: "attention_causal",
        shape: format!("L{len} h{heads} d{hd}"),
        flops: 2.0 * 2.0 * (heads * hd) as f64 * (len * (len + 1) / 2) as f64,
        bytes: (4 * len * heads * hd * 4) as f64,
        bound: Bound::Compute,
        run: Box::new(move |k| {
            let args = AttnArgs {
                batch: 1,
                n_heads: heads,
                n_kv_heads: heads,
                head_dim: hd,
                q_len: len,
                kv_len: len,
                scale: 1.0 / (hd as f32).sqrt(),
                softcap: None,
                position_bias: None,
                mask: Mask::Causal { q_offset: 0 },
                key_lens: None,
                q_strides: st,
                kv_strides: st,
                out_strides: st,
            };
            match k {
                Some(k) => k.attention(&args, &q, &kk, &v, &mut o),
                None => reference::attention(&args, &q, &kk, &v, &mut o),
            }
        }),
    });

    // Decode attention: one query over a KV cache, GQA 9 heads / 3 KV heads (SmolLM2 shape).
    let (cache, qh, kvh) = (if quick { 1024 } else { 4096 }, 9, 3);
    let q1 = rand_vec(qh * hd, 9);
    let kc = rand_vec(kvh * cache * hd, 10);
    let vc = rand_vec(kvh * cache * hd, 11);
    let mut o1 = vec![0.0f32; qh * hd];
    list.push(Workload {
        kernel: "attention_decode",
        shape: format!("cache{cache} h{qh}/{kvh} d{hd}"),
        flops: 2.0 * 2.0 * (qh * hd * cache) as f64,
        bytes: (2 * kvh * cache * hd * 4) as f64,
        bound: Bound::Memory,
        run: Box::new(move |k| {
            let args = AttnArgs {
                batch: 1,
                n_heads: qh,
                n_kv_heads: kvh,
                head_dim: hd,
                q_len: 1,
                kv_len: cache,
                scale: 0.125,
                softcap: None,
                position_bias: None,
                mask: Mask::None,
                key_lens: None,
                q_strides: Strides::token_major(1, qh, hd),
                kv_strides: Strides::head_major(kvh, cache, hd),
                out_strides: Strides::token_major(1, qh, hd),
            };
            match k {
                Some(k) => k.attention(&args, &q1, &kc, &vc, &mut o1),
                None => reference::attention(&args, &q1, &kc, &vc, &mut o1),
            }
        }),
    });

    // Row kernels over [rows, dim].
    let (rows, dim) = (if quick { 32 } else { 128 }, 4096);
    let x = rand_vec(rows * dim, 12);
    let g = rand_vec(dim, 13);
    let b = rand_vec(dim, 14);
    let mut out = vec![0.0f32; rows * dim];
    let row_bytes = (2 * rows * dim * 4) as f64;
    list.push(Workload {
        kernel: "rms_norm",
        shape: format!("{rows}x{dim}"),
        flops: 4.0 * (rows * dim) as f64,
        bytes: row_bytes,
        bound: Bound::Memory,
        run: Box::new({
            let (x, g, mut out) = (x.clone(), g.clone(), out.clone());
            move |k| match k {
                Some(k) => k.rms_norm(&x, &g, 1e-5, &mut out),
                None => reference::rms_norm(&x, &g, 1e-5, &mut out),
            }
        }),
    });
    list.push(Workload {
        kernel: "layer_norm",
        shape: format!("{rows}x{dim}"),
        flops: 7.0 * (rows * dim) as f64,
        bytes: row_bytes,
        bound: Bound::Memory,
        run: Box::new({
            let x = x.clone();
            move |k| match k {
                Some(k) => k.layer_norm(&x, &g, &b, 1e-5, &mut out),
                None => reference::layer_norm(&x, &g, &b, 1e-5, &mut out),
            }
        }),
    });
    let vocab = 49152;
    let logits = rand_vec(vocab, 15);
    list.push(Workload {
        kernel: "softmax",
        shape: format!("{vocab}"),
        flops: 4.0 * vocab as f64,
        bytes: (2 * vocab * 4) as f64,
        bound: Bound::Memory,
        run: Box::new({
            let logits = logits.clone();
            let mut buf = logits.clone();
            move |k| {
                buf.copy_from_slice(&logits);
                match k {
                    Some(k) => k.softmax(&mut buf),
                    None => reference::softmax(&mut buf),
                }
            }
        }),
    });
    // Beam bookkeeping: 4 beams x a GPT-2-sized vocabulary.
    let (beams, vocab_b) = (4, 50257);
    let beam_scores = rand_vec(beams * vocab_b, 18);
    list.push(Workload {
        kernel: "log_softmax_rows",
        shape: format!("{beams}x{vocab_b}"),
        flops: 4.0 * (beams * vocab_b) as f64,
        bytes: (3 * beams * vocab_b * 4) as f64,
        bound: Bound::Memory,
        run: Box::new({
            let src = beam_scores.clone();
            let mut buf = src.clone();
            move |k| {
                buf.copy_from_slice(&src);
                match k {
                    Some(k) => k.log_softmax_rows(&mut buf, vocab_b),
                    None => reference::log_softmax_rows(&mut buf, vocab_b),
                }
            }
        }),
    });
    list.push(Workload {
        kernel: "top_k_rows(8)",
        shape: format!("{beams}x{vocab_b}"),
        flops: (beams * vocab_b) as f64,
        bytes: (beams * vocab_b * 4) as f64,
        bound: Bound::Memory,
        run: Box::new({
            let offsets = rand_vec(beams, 19);
            let mut out = Vec::new();
            move |k| match k {
                Some(k) => k.top_k_rows(&beam_scores, vocab_b, Some(&offsets), 8, &mut out),
                None => out = reference::top_k_rows(&beam_scores, vocab_b, Some(&offsets), 8),
            }
        }),
    });
    list.push(Workload {
        kernel: "top_k(40)",
        shape: format!("{vocab}"),
        flops: vocab as f64,
        bytes: (vocab * 4) as f64,
        bound: Bound::Memory,
        run: Box::new(move |k| {
            let r = match k {
                Some(k) => k.top_k(&logits, 40),
                None => reference::top_k(&logits, 40),
            };
            std::hint::black_box(r);
        }),
    });
    for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
        let src = rand_vec(rows * dim, 16);
        let mut buf = src.clone();
        list.push(Workload {
            kernel: match act {
                Activation::Silu => "silu",
                Activation::GeluTanh => "gelu_tanh",
                Activation::GeluErf => "gelu_erf",
                Activation::Relu => "relu",
            },
            shape: format!("{}", rows * dim),
            flops: 10.0 * (rows * dim) as f64,
            bytes: (2 * rows * dim * 4) as f64,
            bound: Bound::Memory,
            run: Box::new(move |k| {
                buf.copy_from_slice(&src);
                match k {
                    Some(k) => k.activation(act, &mut buf),
                    None => reference::activation(act, &mut buf),
                }
            }),
        });
    }
    let (rl, rh) = (if quick { 128 } else { 512 }, 9);
    let table = RopeTable::new(64, rl, 100000.0);
    let src = rand_vec(rl * rh * 64, 17);
    let mut buf = src.clone();
    list.push(Workload {
        kernel: "rope_half",
        shape: format!("L{rl} h{rh} d64"),
        flops: 6.0 * (rl * rh * 64 / 2) as f64,
        bytes: (2 * rl * rh * 64 * 4) as f64,
        bound: Bound::Memory,
        run: Box::new(move |k| {
            buf.copy_from_slice(&src);
            match k {
                Some(k) => k.rope(&table, RopeLayout::Half, &mut buf, rh, 0),
                None => reference::rope(&table, RopeLayout::Half, &mut buf, rh, 0),
            }
        }),
    });
    list
}

/// Run every workload: the reference once (it is slow), every ISA for `budget`.
/// `only`: keep the workloads whose kernel name contains one of these (all when empty).
pub fn run(
    machine: &Machine,
    isas: &[Isa],
    only: &[String],
    quick: bool,
    progress: &indicatif::ProgressBar,
) -> Vec<KernelRow> {
    let budget = Duration::from_millis(if quick { 150 } else { 600 });
    let mut rows = Vec::new();
    let mut list = workloads(quick);
    list.retain(|w| only.is_empty() || only.iter().any(|o| w.kernel.contains(o.as_str())));
    progress.set_length((list.len() * (isas.len() + 1)) as u64);
    for w in list.iter_mut() {
        progress.set_message(format!("{} reference", w.kernel));
        let reference = time(|| (w.run)(None), Duration::ZERO, 1, 1);
        progress.inc(1);
        let mut push = |isa: String, t: Timing| {
            let gflops = w.flops / t.median_s / 1e9;
            let gbs = w.bytes / t.median_s / 1e9;
            let pct = match w.bound {
                Bound::Compute => 100.0 * gflops / machine.fma_gflops,
                Bound::Memory => 100.0 * gbs / machine.read_gbs,
            };
            rows.push(KernelRow {
                kernel: w.kernel.to_string(),
                shape: w.shape.clone(),
                isa,
                timing: t,
                gflops,
                gbs,
                bound: w.bound,
                pct_of_limit: pct,
                speedup_vs_reference: reference.median_s / t.median_s,
                noisy: t.noisy(),
            });
        };
        push("reference".into(), reference);
        for &isa in isas {
            progress.set_message(format!("{} {isa}", w.kernel));
            let k = Kernels::new(isa).expect("isa was listed as available");
            let t = time(|| (w.run)(Some(k)), budget, 3, 200);
            push(isa.to_string(), t);
            progress.inc(1);
        }
        // Free what the workload holds (packed copies) before the next one.
        w.run = Box::new(|_| {});
    }
    rows
}
