#!/usr/bin/env python3
"""K-quant GGUF files made by llama.cpp's own quantiser, and llama.cpp's greedy tokens and logits on them.

    tools/scripts/venv.sh python tools/scripts/gguf_kquant_refs.py tiny      # tools/fixtures/gguf-kquant/ (committed)
    tools/scripts/venv.sh python tools/scripts/gguf_kquant_refs.py smollm2   # ~/.cache/qkv/gguf-kquant/ (not committed)

tiny: a random Llama (hidden 256, ffn 512, 2 layers, 4 heads of 64, 2 KV heads, the first 320 tokens of the
SmolLM2 vocabulary, untied head) written in f16 by the gguf package's GGUFWriter, quantised by
`llama_cpp.llama_model_quantize` to Q4_K_M (row lengths 256 and 512: every 2-D tensor is Q4_K or Q6_K, norms F32).
smollm2: ../shared/models/smollm2-135m-instruct-q4_1 dequantised to f16 by the gguf package, quantised to Q4_K_M
and Q5_K_M (hidden 576 is not a multiple of 256, so llama.cpp falls back to Q5_0 / Q5_1 / Q8_0 for those rows:
the files mix 32- and 256-element blocks).

For each quantised file: 3 prompts x 32 greedy tokens from llama.cpp (`Llama(..., logits_all=True)`, argmax over
its logits, EOS ignored), the logits before every choice, and (tiny) the exact f32 logits of Hugging Face
transformers loading the same GGUF (weights dequantised by the gguf package, q/k permutation undone) on the
same token path. The difference between the two is llama.cpp's own arithmetic: it quantises the activations to
8-bit blocks (Q8_K for K-quant weights, Q8_0 for Q5_x / Q8_0 weights) before each matrix product and keeps the
KV cache in f16; qkv and transformers compute in f32 on the exact dequantised weights.

Needs llama-cpp-python (builds llama.cpp from source: tens of minutes on 2 cores), gguf, torch, transformers.
"""

import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tools" / "fixtures" / "gguf-kquant"
SHARED = Path(os.environ.get("QKV_SHARED_MODELS", ROOT.parent / "shared" / "models"))
SMOLLM2 = SHARED / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("QKV_CACHE", Path.home() / ".cache" / "qkv")) / "gguf-kquant"
N_NEW = 32
THREADS = 2

FTYPES = {"q4_k_m": 15, "q5_k_m": 17}  # LLAMA_FTYPE_MOSTLY_Q4_K_M, _Q5_K_M

# The tiny model.
HIDDEN, FFN, N_LAYERS, N_HEADS, N_KV_HEADS = 256, 512, 2, 4, 2
HEAD_DIM = HIDDEN // N_HEADS


def versions() -> dict:
    return {p: version(p) for p in ("llama-cpp-python", "gguf", "numpy", "torch", "transformers")}


def quantize(src: Path, dst: Path, ftype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = THREADS
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}, {ftype}) failed: {rc}")


def tensor_types(path: Path) -> dict:
    import gguf

    counts = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def llama_cpp_greedy(path: Path, prompts: list) -> list:
    """llama.cpp's greedy run per prompt: tokens, and the logits before each choice ([N_NEW, vocab])."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=THREADS, n_threads_batch=THREADS,
                logits_all=True, verbose=False, seed=0)
    runs = []
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        tokens, logits = [], []
        for t in range(N_NEW):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            logits.append(row)
            nxt = int(np.argmax(row))
            tokens.append(nxt)
            if t + 1 < N_NEW:
                llm.eval([nxt])
        runs.append({"prompt": [int(x) for x in prompt], "tokens": tokens, "logits": np.stack(logits)})
    info = {"n_ctx": 256, "threads": THREADS, "flash_attn": str(getattr(llm.context_params, "flash_attn_type",
                                                                        getattr(llm.context_params, "flash_attn", "?"))),
            "type_k": int(llm.context_params.type_k), "type_v": int(llm.context_params.type_v)}
    del llm
    return runs, info


# HF Llama linear layers and the GGUF tensors they come from (for the activation block size of each).
HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def fake_quant_rows(x, block: int):
    """ggml's activation quantiser (quantize_row_q8_K_ref for 256-blocks, quantize_row_q8_0/q8_1 for 32): per
    block, the value of largest magnitude maps to -127 (Q8_K) or the abs-max to 127 (Q8_0), round to nearest."""
    import torch

    shape = x.shape
    x = x.reshape(-1, block)
    if block == 256:
        mx = torch.gather(x, -1, x.abs().argmax(-1, keepdim=True))
        iscale = torch.where(mx == 0, torch.zeros_like(mx), -127.0 / mx)
        d = torch.where(mx == 0, torch.zeros_like(mx), 1.0 / iscale)
        q = torch.clamp(torch.round(iscale * x), -128, 127)
    else:
        d = x.abs().amax(-1, keepdim=True) / 127
        q = torch.round(x / torch.where(d == 0, torch.ones_like(d), d))
    return (q * d).reshape(shape)


def hf_logits(path: Path, runs: list, emulate: bool = False) -> list:
    """transformers (f32) on the same GGUF, teacher-forced on llama.cpp's tokens: the logits before each choice.

    With `emulate`, llama.cpp's two approximations are imitated: the input of every linear layer is rounded
    to 8-bit blocks (256 for K-quant weights, 32 for the others) and K and V to f16. This measures how far those
    roundings alone move exact logits (not bit-exact with llama.cpp: its kernels round Q and the softmax
    to f16 in attention and accumulate in their own order)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    if emulate:
        types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
        k_types = {gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K, gguf.GGMLQuantizationType.Q6_K}
        for name, m in model.named_modules():
            if not isinstance(m, torch.nn.Linear):
                continue
            if name == "lm_head":
                g = "output.weight" if "output.weight" in types else "token_embd.weight"
            else:
                layer = name.split(".")[2]
                g = f"blk.{layer}.{HF_TO_GGUF[name.split('.', 3)[3]]}.weight"
            block = 256 if types[g] in k_types else 32
            m.register_forward_pre_hook(lambda mod, inp, block=block: (fake_quant_rows(inp[0], block),))
            if name.endswith(("k_proj", "v_proj")):
                m.register_forward_hook(lambda mod, inp, out: out.half().float())
    out = []
    for run in runs:
        seq = run["prompt"] + run["tokens"][:-1]
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0].numpy()
        out.append(logits[len(run["prompt"]) - 1 :].astype(np.float32))
    return out


def margins(logits: np.ndarray) -> list:
    """Top-1 minus top-2 logit at each step."""
    s = np.sort(logits, axis=-1)
    return [float(x) for x in s[:, -1] - s[:, -2]]


def save_refs(out_dir: Path, stem: str, runs: list, info: dict, extra: dict, hf: list, hf_emul: list) -> None:
    from safetensors.numpy import save_file

    tensors = {f"run{i}_llama_cpp_logits": r["logits"] for i, r in enumerate(runs)}
    meta = {
        "source": "tools/scripts/gguf_kquant_refs.py: llama.cpp (llama-cpp-python) greedy, logits_all=True",
        "versions": versions(),
        "llama_cpp": info,
        "new_tokens": N_NEW,
        **extra,
        "runs": [{"prompt_ids": r["prompt"], "greedy_ids": r["tokens"], "top2_margin": margins(r["logits"])}
                 for r in runs],
    }
    for i, (r, h, e) in enumerate(zip(runs, hf, hf_emul)):
        tensors[f"run{i}_hf_logits"] = h
        d = np.abs(h - r["logits"]).max(axis=-1)
        de = np.abs(h - e).max(axis=-1)
        m = meta["runs"][i]
        m["hf_vs_llama_cpp_max_abs"] = [float(x) for x in d]
        m["hf_vs_hf_emulated_max_abs"] = [float(x) for x in de]
        m["hf_greedy_agrees"] = [bool(x) for x in np.argmax(h, -1) == np.array(r["tokens"])]
        print(f"  run {i}: HF f32 vs llama.cpp logits max-abs {d.max():.4g} (median step {np.median(d):.3g}); "
              f"HF f32 vs HF with llama.cpp's roundings emulated {de.max():.4g} (median {np.median(de):.3g}); "
              f"logit std {r['logits'].std():.3g}; HF greedy = llama.cpp's at {sum(m['hf_greedy_agrees'])}/{N_NEW} "
              f"steps; smallest llama.cpp top-2 margin {min(m['top2_margin']):.3g}")
    save_file(tensors, str(out_dir / f"{stem}_refs.safetensors"))
    (out_dir / f"{stem}_refs.json").write_text(json.dumps(meta, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------------
def write_tiny_f16(path: Path) -> None:
    import gguf
    from fuzz_seeds import scalar, slim_tokenizer

    real = gguf.GGUFReader(str(SMOLLM2))
    tokens, merges, types = slim_tokenizer(real)
    rng = np.random.default_rng(20251201)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("qkv-tiny-kquant")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(N_LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(scalar(real, "tokenizer.ggml.pre") or "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(int(scalar(real, "tokenizer.ggml.bos_token_id")))
    w.add_eos_token_id(int(scalar(real, "tokenizer.ggml.eos_token_id")))
    w.add_add_bos_token(False)
    vocab = len(tokens)

    def lin(rows, cols, gain=1.0):
        # Scaled so the residual stream stays O(1) and the logits spread over a few units (a peaked, not flat,
        # next-token distribution: greedy choices are then decided by more than rounding).
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float16)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)

    w.add_tensor("token_embd.weight", rng.standard_normal((vocab, HIDDEN)).astype(np.float16))
    for l in range(N_LAYERS):
        w.add_tensor(f"blk.{l}.attn_norm.weight", norm())
        w.add_tensor(f"blk.{l}.attn_q.weight", lin(N_HEADS * HEAD_DIM, HIDDEN, 2.0))
        w.add_tensor(f"blk.{l}.attn_k.weight", lin(N_KV_HEADS * HEAD_DIM, HIDDEN, 2.0))
        w.add_tensor(f"blk.{l}.attn_v.weight", lin(N_KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(f"blk.{l}.attn_output.weight", lin(HIDDEN, N_HEADS * HEAD_DIM, 0.5))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", norm())
        w.add_tensor(f"blk.{l}.ffn_gate.weight", lin(FFN, HIDDEN))
        w.add_tensor(f"blk.{l}.ffn_up.weight", lin(FFN, HIDDEN))
        w.add_tensor(f"blk.{l}.ffn_down.weight", lin(HIDDEN, FFN, 0.5))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", lin(vocab, HIDDEN, 4.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_tiny() -> None:
    import tempfile

    FIX.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        f16 = Path(tmp) / "tiny_f16.gguf"
        write_tiny_f16(f16)
        for ftype in ["q4_k_m"]:
            out = FIX / f"tiny_{ftype}.gguf"
            quantize(f16, out, ftype)
            types = tensor_types(out)
            print(f"{out.name}: {out.stat().st_size} bytes, tensor types {types}")
            vocab = 320
            prompts = [[int(x) for x in rng.integers(0, vocab, n)] for n in (1, 6, 13)]
            runs, info = llama_cpp_greedy(out, prompts)
            hf, hf_emul = hf_logits(out, runs), hf_logits(out, runs, emulate=True)
            save_refs(FIX, f"tiny_{ftype}", runs, info, {"file": out.name, "tensor_types": types}, hf, hf_emul)
    total = sum(p.stat().st_size for p in FIX.iterdir())
    print(f"{FIX}: {total} bytes in all")


# ---------------------------------------------------------------------------------------------------------------
def write_smollm2_f16(path: Path) -> None:
    """The shared Q4_1 SmolLM2 with every tensor dequantised by the gguf package: 2-D to f16, 1-D to f32."""
    import gguf

    r = gguf.GGUFReader(str(SMOLLM2))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(path), arch=arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for t in r.tensors:
        v = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        w.add_tensor(t.name, v.astype(np.float16) if v.ndim == 2 else v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SMOLLM2_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "def fibonacci(n):\n",
]


def cmd_smollm2() -> None:
    from llama_cpp import Llama

    if not SMOLLM2.is_file():
        sys.exit(f"missing {SMOLLM2} (set QKV_SHARED_MODELS)")
    CACHE.mkdir(parents=True, exist_ok=True)
    f16 = CACHE / "smollm2-135m-instruct-f16.gguf"
    if not f16.is_file():
        write_smollm2_f16(f16)
    tok = Llama(model_path=str(f16), vocab_only=True, verbose=False)
    prompts = [tok.tokenize(p.encode(), add_bos=False, special=False) for p in SMOLLM2_PROMPTS]
    del tok
    for ftype in FTYPES:
        out = CACHE / f"smollm2-135m-instruct-{ftype}.gguf"
        quantize(f16, out, ftype)
        types = tensor_types(out)
        print(f"{out}: {out.stat().st_size} bytes, tensor types {types}")
        runs, info = llama_cpp_greedy(out, prompts)
        hf, hf_emul = hf_logits(out, runs), hf_logits(out, runs, emulate=True)
        save_refs(CACHE, f"smollm2-135m-instruct-{ftype}", runs, info,
                  {"file": out.name, "tensor_types": types, "prompts": SMOLLM2_PROMPTS}, hf, hf_emul)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) != 2 or sys.argv[1] not in {"tiny", "smollm2"}:
        sys.exit(__doc__)
    os.environ.setdefault("TQDM_DISABLE", "1")
    {"tiny": cmd_tiny, "smollm2": cmd_smollm2}[sys.argv[1]]()
