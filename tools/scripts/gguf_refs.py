#!/usr/bin/env python3
"""Reference fixtures for qkv's GGUF reader, dequantiser and importer (loaders::gguf).

Every expected value comes from an independent implementation: the `gguf` Python package (llama.cpp's own
reader/dequantiser) and Hugging Face `transformers` loading the GGUF (`from_pretrained(dir, gguf_file=...)`).

    python gguf_refs.py blocks                     # tools/fixtures/gguf/blocks.gguf + blocks_ref.safetensors + blocks_meta.json
    python gguf_refs.py corpus                     # tools/fixtures/gguf/corpus.json (deterministic, 1200+ texts)
    python gguf_refs.py model                      # smollm2_*.json: dequant checksums, HF tensors, HF token ids
    python gguf_refs.py spm                        # spm_tok512.gguf (tokenizer.ggml.model = llama) + HF ids
    python gguf_refs.py compare OUT_DIR            # our imported dir vs transformers: max-abs diff, token ids

Run through gguf_refs.sh, which sets up the venv.

Checksum of a float tensor (shared with loaders/tests/gguf_*.rs): over its f32 bit patterns b_i (row-major),
sum_i b_i * w_i mod 2^64 with w_i = (i * 0x9E3779B97F4A7C15 mod 2^64) | 1. Any change of one element changes it.
"""

import json
import os
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tools" / "fixtures" / "gguf"
MODEL = Path(os.environ.get("QKV_SHARED_MODELS", ROOT.parent / "shared" / "models")) / "smollm2-135m-instruct-q4_1"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def checksum(values: np.ndarray) -> str:
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    total = np.uint64(0)
    with np.errstate(over="ignore"):
        for start in range(0, bits.size, 1 << 22):  # chunks keep the weights array small
            idx = np.arange(start, min(start + (1 << 22), bits.size), dtype=np.uint64)
            w = (idx * GOLDEN) | np.uint64(1)
            total = total + np.sum(bits[start : start + idx.size] * w, dtype=np.uint64)
    return f"{int(total):016x}"


def samples(values: np.ndarray, n: int = 16) -> dict:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    idx = np.linspace(0, flat.size - 1, n).astype(np.int64) if flat.size else np.zeros(0, np.int64)
    return {"index": idx.tolist(), "value": [float(v) for v in flat[idx]]}


# ---------------------------------------------------------------------------------------------------------------
def cmd_blocks() -> None:
    """Small GGUF with every supported type (random raw blocks + quantised data) and every metadata value type."""
    import gguf
    import ggml_ref
    from gguf import GGMLQuantizationType as Q
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1234)
    FIX.mkdir(parents=True, exist_ok=True)
    path = FIX / "blocks.gguf"
    w = gguf.GGUFWriter(str(path), arch="qkvtest")

    # Metadata: one key of every value type, arrays, an array of arrays.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.25e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓ \U0001f680")
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_str", ["a", "", "ß"])
    w.add_array("test.arr_f32", [0.5, -1.5])
    w.add_array("test.arr_nested", [[1, 2], [3]])

    def rand_f16_scales(n):
        # Finite f16 values of varied magnitude, as the d/m fields of a block.
        return (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 2, n)).astype(np.float16)

    tensors = {}

    # Where each block type keeps its scales (see loaders/src/gguf/blocks.rs): (byte offset, "f16" | "f32").
    # Random raw blocks get finite scales there so that the values are finite (the nibbles stay random).
    scale_fields = {
        Q.Q8_0: [(0, "f16")], Q.Q4_0: [(0, "f16")], Q.Q4_1: [(0, "f16"), (2, "f16")],
        Q.Q5_0: [(0, "f16")], Q.Q5_1: [(0, "f16"), (2, "f16")],
        Q.Q4_K: [(0, "f16"), (2, "f16")], Q.Q5_K: [(0, "f16"), (2, "f16")],
        Q.Q6_K: [(208, "f16")], Q.Q8_K: [(0, "f32")], Q.Q2_K: [(80, "f16"), (82, "f16")],
    }

    def raw_blocks(qtype, n_blocks):
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
        for off, kind in scale_fields[qtype]:
            s = rand_f16_scales(n_blocks)
            if kind == "f32":
                s = s.astype(np.float32)
            raw[:, off : off + s.itemsize] = s.view(np.uint8).reshape(n_blocks, s.itemsize)
        return raw

    # Plain types: F32 with specials, F16 / BF16 over random bit patterns (NaNs included).
    f32 = rng.standard_normal((4, 64)).astype(np.float32)
    f32.reshape(-1)[:6] = [np.inf, -np.inf, -0.0, 1e-45, 3.4e38, np.nan]
    tensors["f32"] = (f32, None)
    f16_bits = rng.integers(0, 1 << 16, (8, 96), dtype=np.uint16)
    tensors["f16"] = (f16_bits.view(np.float16), None)
    bf16_bits = rng.integers(0, 1 << 16, (8, 96), dtype=np.uint16)
    tensors["bf16"] = (bf16_bits.view(np.uint8).reshape(8, 192), Q.BF16)
    # Quantised types: random raw blocks (every nibble/byte pattern), and real data quantised by the package
    # (32-element types) or by llama.cpp's own quantiser (K-quants, which the package does not quantise).
    for q in [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
        tensors[f"{q.name.lower()}_raw"] = (raw_blocks(q, 6 * 4).reshape(6, -1), q)
    for q in [Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K]:
        tensors[f"{q.name.lower()}_raw"] = (raw_blocks(q, 2 * 2).reshape(2, -1), q)
    real = rng.standard_normal((3, 5, 64)).astype(np.float32)
    for q in [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
        tensors[q.name.lower()] = (gguf.quants.quantize(real, q), q)
    # Rows of 256: Gaussian with outliers, a zero row (d = 0) and a constant row (every sub-block min = max).
    real_k = (rng.standard_normal((2, 2, 256)) * np.exp(rng.standard_normal((2, 2, 256)))).astype(np.float32)
    real_k[0, 0] = 0.0
    real_k[1, 0] = 0.37
    for q in [Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K]:
        tensors[q.name.lower()] = (ggml_ref.quantize(real_k, q), q)
    # A type qkv does not dequantise (raw bytes are enough).
    tensors["q2_k_unsupported"] = (raw_blocks(Q.Q2_K, 2).reshape(1, -1), Q.Q2_K)

    def same(a, b):
        return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))

    refs = {}
    for name, (arr, q) in tensors.items():
        if q is None:
            w.add_tensor(name, arr)
            qtype = Q.F16 if arr.dtype == np.float16 else Q.F32
            raw = arr
        else:
            w.add_tensor(name, arr, raw_dtype=q)
            qtype, raw = q, arr
        if q == Q.Q2_K:
            continue
        if q == Q.Q8_K:
            # The package has no Q8_K: ggml's dequantize_row_q8_K is the oracle.
            ref = ggml_ref.dequantize(raw, qtype)
        else:
            ref = np.ascontiguousarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
            if q not in (None, Q.BF16):
                # Both oracles agree, bit for bit, on every block type they share.
                assert same(ref, ggml_ref.dequantize(raw, qtype)), f"{name}: gguf and ggml dequantize differ"
        refs[name] = ref
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    save_file(refs, str(FIX / "blocks_ref.safetensors"))

    # What the package's reader sees, for the Rust reader test.
    r = gguf.GGUFReader(str(path))
    meta = {}
    for key, field in r.fields.items():
        if not key.startswith("test.") and key != "general.architecture":
            continue
        types = [gguf.GGUFValueType(t).name for t in field.types]
        value = field.contents()
        if isinstance(value, float) and types == ["FLOAT32"]:
            value = float(np.float32(value))
        meta[key] = {"types": types, "value": value}
    # The package's reader flattens arrays of arrays; record the nested value as written.
    meta["test.arr_nested"]["value"] = [[1, 2], [3]]
    tinfo = [
        {"name": t.name, "type": t.tensor_type.name, "dims": [int(d) for d in t.shape], "offset": int(t.data_offset - r.data_offset)}
        for t in r.tensors
    ]
    out = {
        "source": "gguf Python package GGUFWriter/GGUFReader + gguf.quants.dequantize (tools/scripts/gguf_refs.py blocks)",
        "versions": {"gguf": __import__("importlib.metadata").metadata.version("gguf")},
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tinfo,
    }
    (FIX / "blocks_meta.json").write_text(json.dumps(out, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes), blocks_ref.safetensors, blocks_meta.json")


# ---------------------------------------------------------------------------------------------------------------
def make_corpus() -> list:
    rng = random.Random(20240601)
    base = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world!",
        "I can't believe it's already 2024; time flies.",
        'She said, "Don\'t worry, we\'ll be fine."',
        "Prices rose by 3.5% in the first quarter (Q1).",
        "Mr. Smith's dog barked at the mailman's bicycle.",
        "It costs $19.99 - or £15, or €17.50.",
        "E-mail me at john.doe@example.com before 5 p.m.",
        "The results (see Table 2) were statistically significant (p < 0.05).",
        "Rock 'n' roll never dies... or does it?",
        "I'd've gone if you'd asked me. They'll say we're late; he's sure I'm wrong.",
        "Their café serves crème brûlée and jalapeño poppers.",
        "Naïve coöperation isn't the same as déjà vu.",
        "Não sei se ele virá amanhã à reunião.",
        "Der Straßenbahnfahrer grüßte die Fußgänger höflich.",
        "¿Dónde está la biblioteca? ¡Allí!",
        "Москва — столица России.",
        "Η γρήγορη καφέ αλεπού.",
        "東京は日本の首都です。",
        "我喜欢学习新的编程语言。",
        "서울은 한국의 수도입니다.",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "Emoji test: 😀🚀🎉👍🏽👨‍👩‍👧‍👦 and flags 🇵🇹🇯🇵.",
        "Math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ = ∫ f(x) dx ≈ π·r².",
        "def add(a, b):\n    return a + b\n",
        "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
        "fn main() {\n\tprintln!(\"{}\", 42);\n}",
        "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
        '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "https://example.org/path?q=1&r=two#frag",
        "C:\\Users\\me\\Documents\\file.txt",
        "   leading spaces",
        "trailing spaces   ",
        "multiple    internal     spaces",
        "tabs\tand\ttabs\t\t",
        "new\nlines\n\nand\r\nwindows\r\nlines",
        "",
        " ",
        "\n",
        "a",
        "A",
        "0",
        "1234567890",
        "3.14159265358979323846",
        "1,000,000.00 vs 1.000.000,00",
        "ALL CAPS SENTENCE WITH SHOUTING!!!",
        "camelCaseIdentifier and snake_case_identifier and kebab-case-identifier",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>",
        "Text before<|endoftext|>text after",
        "<|im_start|><|im_end|><|im_start|>",
        "<repo_name>qkv<file_sep>src/main.rs<filename>x",
        "<|im_start|> spaced <|im_end|> tokens",
        "<|im_start",
        "im_start|>",
        "<|not_a_token|>",
        "Ġ and Ċ are byte-level characters.",
        "The year 1999 and 2000 and 20000 and 123456789.",
        "Phone: +1 (555) 123-4567, ext. 89",
        "Version 1.2.3-beta+build.45",
        "I said 'hello' and he said \u2018hi\u2019 and she wrote \u201cbye\u201d.",
        "Zero\u200bwidth\u200cjoiners\u200dhere\ufeff.",
        "Non-breaking\u00a0space and em\u2003space.",
        "Combining: e\u0301 vs é, n\u0303 vs ñ.",
        "Control chars: \x01\x02\x7f end",
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    ]
    words = (
        "the of and to in is was for on that with as by at from it be this are or an not have but had his they "
        "which you were her all she there would their we him been has when who will more no if out so said what up "
        "its about into than them can only other new some could time these two may then do first any my now such "
        "like our over man me even most made after also did many before must through back years where much your "
        "way well down should because each just those people how too little state good very make world still own "
        "see men work long get here between both life being under never day same another know while last might us "
        "great old year off come since against go came right used take three"
    ).split()
    extra = [
        "tokenizer", "Transformers", "inference", "quantization", "GGUF", "llama.cpp", "SmolLM2", "RoPE",
        "don't", "won't", "it's", "we've", "they're", "I'll", "she'd", "O'Brien", "naïve", "résumé", "Zürich",
        "São", "Paulo", "München", "Kraków", "Reykjavík", "1st", "2nd", "3rd", "42", "007", "3.5", "-17", "1e-5",
        "(x)", "[y]", "{z}", "#hash", "@user", "100%", "$5", "€3", "a/b", "c\\d", "x_y", "foo.bar", "...", "?!",
    ]
    punct = [".", ",", "!", "?", ";", ":", " -", " —", "...", ""]
    pool = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t\n.,;:!?'\"()[]{}<>/\\|@#$%^&*_+-=~`"
        "éèêëàâäôöûüçñßøåæœÉÀÇÑ€£¥°±×÷µ¶§©®™"
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВ αβγδεζηθ "
        "日本語中文字한국어ひらがなカタカナ ابتثجح אבגדה अआइई ก ข ฃ"
        "😀😂🥰🚀🎉👍🔥✨❤️🇵🇹 ‐‑‒–—―‘’‚“”„†‡•…‰′″‹›"
    )
    out = list(base)
    # Sentences from the word list with punctuation, case and spacing variations.
    while len(out) < 700:
        n = rng.randint(1, 24)
        ws = [rng.choice(words if rng.random() < 0.8 else extra) for _ in range(n)]
        if rng.random() < 0.5:
            ws[0] = ws[0].capitalize()
        if rng.random() < 0.1:
            ws = [x.upper() for x in ws]
        sep = " " if rng.random() < 0.85 else rng.choice(["  ", "\t", "\n", " \n ", "   "])
        s = sep.join(ws) + rng.choice(punct)
        if rng.random() < 0.1:
            s = rng.choice([" ", "  ", "\n", "\t"]) + s
        if rng.random() < 0.1:
            s = s + rng.choice([" ", "  ", "\n", "\n\n"])
        out.append(s)
    # Numbers, dates, code-like strings.
    while len(out) < 850:
        kind = rng.randint(0, 4)
        if kind == 0:
            s = f"{rng.randint(0, 10**rng.randint(1, 12))}"
        elif kind == 1:
            s = f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f} + {rng.randint(0, 999)} = ?"
        elif kind == 2:
            s = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1900, 2100)} at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
        elif kind == 3:
            v = rng.choice(["x", "y", "value", "count", "self.data"])
            s = f"if {v} >= {rng.randint(0, 100)}:\n    {v} -= {rng.randint(1, 9)}  # decrement\n"
        else:
            s = f"arr[{rng.randint(0, 9)}] = {{{rng.randint(0, 99)}, {rng.randint(0, 99)}}}; // {rng.choice(words)}"
        out.append(s)
    # Chat-formatted turns with the special tokens.
    while len(out) < 950:
        role = rng.choice(["system", "user", "assistant"])
        msg = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        s = f"<|im_start|>{role}\n{msg}<|im_end|>\n"
        if rng.random() < 0.3:
            s += "<|im_start|>assistant\n"
        if rng.random() < 0.2:
            s = s.replace("\n", " ")
        out.append(s)
    # Random character soups (every script, whitespace runs, emoji).
    while len(out) < 1250:
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


def cmd_corpus() -> None:
    corpus = make_corpus()
    FIX.mkdir(parents=True, exist_ok=True)
    (FIX / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=0) + "\n")
    print(f"wrote {len(corpus)} texts to {FIX / 'corpus.json'}")


# ---------------------------------------------------------------------------------------------------------------
def gguf_dir() -> Path:
    """transformers wants (dir, gguf_file); the shared model dir has just the file."""
    if not (MODEL / GGUF_NAME).is_file():
        sys.exit(f"missing {MODEL / GGUF_NAME} (set QKV_SHARED_MODELS)")
    return MODEL


def versions() -> dict:
    import gguf  # noqa: F401
    import tokenizers
    import torch
    import transformers

    from importlib.metadata import version

    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": version("gguf"),
    }


def cmd_model() -> None:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = gguf_dir()
    FIX.mkdir(parents=True, exist_ok=True)

    # (1) Every tensor dequantised by the gguf package: checksum + samples (GGUF names, row-major over reversed dims).
    r = gguf.GGUFReader(str(d / GGUF_NAME))
    deq = {}
    for t in r.tensors:
        v = gguf.quants.dequantize(t.data, t.tensor_type)
        deq[t.name] = {"type": t.tensor_type.name, "shape": [int(x) for x in reversed(t.shape)], "checksum": checksum(v), **samples(v)}
    (FIX / "smollm2_dequant.json").write_text(
        json.dumps({"source": "gguf.quants.dequantize (gguf Python package)", "versions": versions(), "tensors": deq}, indent=0) + "\n"
    )
    print(f"dequant refs: {len(deq)} tensors")

    # (2) transformers' own GGUF load (dequantise + undo the q/k permutation), f32.
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=GGUF_NAME, dtype=torch.float32)
    sd = model.state_dict()
    hf = {}
    for name, v in sd.items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        a = v.detach().cpu().numpy()
        # Also the checksum after torch's round-to-nearest-even to bf16 (widened back to f32): the BF16 import.
        a_bf16 = v.detach().to(torch.bfloat16).to(torch.float32).cpu().numpy()
        hf[name] = {"shape": list(a.shape), "checksum": checksum(a), "checksum_bf16": checksum(a_bf16), **samples(a)}
    cfg = model.config.to_dict()
    keep = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "rms_norm_eps", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
            "bos_token_id", "eos_token_id", "pad_token_id"]
    config = {k: cfg.get(k) for k in keep}
    config["rope_theta"] = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    (FIX / "smollm2_hf_tensors.json").write_text(
        json.dumps({"source": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32)",
                    "versions": versions(), "config": config, "tensors": hf}, indent=0) + "\n"
    )
    print(f"HF tensor refs: {len(hf)} tensors")

    # (3) Token ids from transformers' tokenizer built from the GGUF, on the corpus.
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=GGUF_NAME)
    corpus = json.loads((FIX / "corpus.json").read_text())
    ids = [tok(text)["input_ids"] for text in corpus]
    decoded = [tok.decode(x, skip_special_tokens=False) for x in ids]
    (FIX / "smollm2_token_ids.json").write_text(
        json.dumps({"source": "transformers AutoTokenizer.from_pretrained(gguf_file=...) on corpus.json",
                    "versions": versions(), "ids": ids, "decoded": decoded}, ensure_ascii=False) + "\n"
    )
    print(f"token refs: {len(ids)} texts, {sum(map(len, ids))} ids")


def cmd_spm() -> None:
    """A tokenizer-only GGUF with a SentencePiece-style (`llama`) vocabulary: stories260k's tok512 (a trained
    sentencepiece BPE vocabulary with scores), in llama.cpp's conventions, and transformers' ids for it."""
    import gguf
    from transformers import AutoTokenizer

    src = MODEL.parent / "stories260k" / "tok512.vocab.json"
    pieces = json.loads(src.read_text())["pieces"]
    tokens, scores, types = [], [], []
    for i, (piece, score) in enumerate(pieces):
        if i == 0:
            tokens.append("<unk>"); types.append(gguf.TokenType.UNKNOWN)
        elif i in (1, 2):  # llama2.c spells them "\n<s>\n", "\n</s>\n"
            tokens.append("<s>" if i == 1 else "</s>"); types.append(gguf.TokenType.CONTROL)
        elif piece.startswith("<0x") and len(piece) == 6:
            tokens.append(piece); types.append(gguf.TokenType.BYTE)
        else:  # llama2.c replaced sentencepiece's U+2581 with a space
            tokens.append(piece.replace(" ", "\u2581")); types.append(gguf.TokenType.NORMAL)
        scores.append(score)
    path = FIX / "spm_tok512.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    tok = AutoTokenizer.from_pretrained(str(FIX), gguf_file=path.name)
    corpus = json.loads((FIX / "corpus.json").read_text())
    ids = [tok(text)["input_ids"] for text in corpus]
    decoded = [tok.decode(x, skip_special_tokens=False) for x in ids]
    (FIX / "spm_tok512_ids.json").write_text(
        json.dumps({"source": "transformers AutoTokenizer.from_pretrained(gguf_file=spm_tok512.gguf) on corpus.json",
                    "versions": versions(), "ids": ids, "decoded": decoded}, ensure_ascii=False) + "\n"
    )
    print(f"wrote {path} ({path.stat().st_size} bytes); {len(ids)} texts, {sum(map(len, ids))} ids")


def cmd_compare(out_dir: str) -> None:
    """Our imported directory against transformers loading the GGUF: tensors (max-abs) and token ids."""
    import torch
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = gguf_dir()
    ours = load_file(str(Path(out_dir) / "model.safetensors")) if (Path(out_dir) / "model.safetensors").exists() else None
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=GGUF_NAME, dtype=torch.float32)
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    worst, n_exact = 0.0, 0
    missing = sorted(set(sd) - set(ours))
    extra = sorted(set(ours) - set(sd))
    for name, ref in sd.items():
        if name not in ours:
            continue
        a = ours[name].astype(np.float32)
        if a.shape != ref.shape:
            print(f"SHAPE {name}: ours {a.shape} hf {ref.shape}")
            continue
        diff = float(np.max(np.abs(a - ref))) if a.size else 0.0
        worst = max(worst, diff)
        n_exact += int(np.array_equal(a.view(np.uint32), ref.view(np.uint32)))
    print(f"tensors: {len(sd)} HF, {len(ours)} ours, missing {missing}, extra {extra}")
    print(f"max-abs diff over all tensors: {worst:g}; bit-identical tensors: {n_exact}/{len(sd)}")

    # Our tokenizer.json (python tokenizers) and our dir through AutoTokenizer, against the GGUF tokenizer.
    ref_tok = AutoTokenizer.from_pretrained(str(d), gguf_file=GGUF_NAME)
    our_tok = Tokenizer.from_file(str(Path(out_dir) / "tokenizer.json"))
    our_auto = AutoTokenizer.from_pretrained(out_dir)
    corpus = json.loads((FIX / "corpus.json").read_text())
    bad = bad_auto = 0
    for text in corpus:
        ref = ref_tok(text)["input_ids"]
        if our_tok.encode(text).ids != ref:
            bad += 1
            if bad <= 5:
                print("MISMATCH", repr(text), ref, our_tok.encode(text).ids)
        if our_auto(text)["input_ids"] != ref:
            bad_auto += 1
    print(f"tokenizer.json: {len(corpus) - bad}/{len(corpus)} identical; AutoTokenizer(our dir): {len(corpus) - bad_auto}/{len(corpus)}")
    print("chat template equal:", our_auto.chat_template == ref_tok.chat_template)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in {"blocks", "corpus", "model", "spm", "compare"}:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "blocks":
        cmd_blocks()
    elif cmd == "corpus":
        cmd_corpus()
    elif cmd == "model":
        cmd_model()
    elif cmd == "spm":
        cmd_spm()
    else:
        cmd_compare(sys.argv[2])
