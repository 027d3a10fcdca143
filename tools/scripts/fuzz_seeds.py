"""Small seed inputs for the loader fuzz targets (loaders/fuzz), written with the reference libraries.

    tools/scripts/venv.sh python tools/scripts/fuzz_seeds.py <corpus dir> [--gguf <real .gguf>] [--text-corpus <corpus.json>]

Writes <corpus>/safetensors/*.safetensors (every dtype, scalar and empty tensors, metadata, dtypes qkv does
not load, a header whose length is not a multiple of 8) with the `safetensors` package, and <corpus>/gguf/*.gguf
with the `gguf` package: slim copies of a real llama GGUF (its metadata and tokenizer, the vocabulary cut to
its first tokens, and a one-layer model of small tensors of each supported ggml type) so that a fuzzer starts
from files the importer accepts. fuzz.sh also copies the real files and fixtures in as seeds.
"""

import argparse
import json
import os
import struct

import numpy as np
import sentencepiece as spm
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType, quants
from safetensors.numpy import save_file

# The slim model: a single llama block whose sizes are multiples of the 32-element quantisation blocks.
N_VOCAB = 320
HIDDEN = 32
FFN = 64
N_HEADS = 2
N_KV_HEADS = 1
HEAD_DIM = HIDDEN // N_HEADS


def safetensors_seeds(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    save_file(
        {
            "f32": rng.standard_normal((2, 3)).astype(np.float32),
            "f16": rng.standard_normal((4,)).astype(np.float16),
            "i8": np.arange(-3, 3, dtype=np.int8),
            "u8": np.arange(5, dtype=np.uint8),
        },
        f"{out}/dtypes.safetensors",
        metadata={"format": "pt"},
    )
    save_file(
        {"scalar": np.array(1.5, dtype=np.float32), "empty": np.zeros((0, 4), dtype=np.float32)},
        f"{out}/scalar_empty.safetensors",
    )
    save_file(
        {"i64": np.arange(3, dtype=np.int64), "f64": np.ones(2), "bool": np.array([True, False])},
        f"{out}/unsupported_dtypes.safetensors",
    )
    # BF16 (numpy has none): written by hand, with a header length that is not a multiple of 8 so the
    # tensors are misaligned in the file (the loader's copy fallback).
    header = {"bf16": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "f32": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) % 8 == 0:
        text += b" "
    data = struct.pack("<4H", 0x3F80, 0x4000, 0xBF80, 0x0000) + struct.pack("<2f", 1.0, -2.0)
    with open(f"{out}/bf16_misaligned.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def slim_tokenizer(reader):
    """The tokenizer metadata of a real file, cut to its first N_VOCAB tokens (merges that stay valid)."""
    field = lambda k: reader.fields.get(k)  # noqa: E731
    tokens = [bytes(field("tokenizer.ggml.tokens").parts[i]).decode() for i in field("tokenizer.ggml.tokens").data]
    tokens = tokens[:N_VOCAB]
    kept = set(tokens)
    merges = []
    if field("tokenizer.ggml.merges") is not None:
        f = field("tokenizer.ggml.merges")
        for i in f.data:
            m = bytes(f.parts[i]).decode()
            a, _, b = m.partition(" ")
            if a in kept and b in kept and a + b in kept:
                merges.append(m)
    types = None
    if field("tokenizer.ggml.token_type") is not None:
        f = field("tokenizer.ggml.token_type")
        types = [int(f.parts[i][0]) for i in f.data][:N_VOCAB]
    return tokens, merges, types


def scalar(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v[0].item()


def write_slim_gguf(path, reader, qtype, tied, pre=None, add_bos=None, float_types=None, heads=None, k_type=None):
    """A one-block llama of small tensors of `qtype` (or `float_types` in turn). With `k_type`, the feed-forward
    width is 256 so that `ffn_down` (rows of 256) can be a 256-block type: the mix of a K-quant file whose other
    rows are too short for 256-blocks (llama.cpp then falls back to 32-block types, as in SmolLM2's Q4_K_M)."""
    ffn = FFN if k_type is None else 256
    tokens, merges, types = slim_tokenizer(reader)
    w = GGUFWriter(path, "llama")
    w.add_name("qkv fuzz seed")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(ffn)
    if heads is None:
        w.add_head_count(N_HEADS)
        w.add_head_count_kv(N_KV_HEADS)
        w.add_rope_dimension_count(HEAD_DIM)
    else:  # (n_heads, head_dim) as u64, for crafted inputs
        w.add_uint64("llama.attention.head_count", heads[0])
        w.add_uint64("llama.attention.key_length", heads[1])
    w.add_rope_freq_base(scalar(reader, "llama.rope.freq_base") or 10000.0)
    w.add_layer_norm_rms_eps(scalar(reader, "llama.attention.layer_norm_rms_epsilon") or 1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model(scalar(reader, "tokenizer.ggml.model"))
    w.add_tokenizer_pre(pre or scalar(reader, "tokenizer.ggml.pre") or "default")
    w.add_token_list(tokens)
    if types is not None:
        w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in [
        ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
        ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id),
        ("tokenizer.ggml.padding_token_id", w.add_pad_token_id),
    ]:
        v = scalar(reader, key)
        if v is not None and v < N_VOCAB:
            add(v)
    w.add_add_bos_token(bool(scalar(reader, "tokenizer.ggml.add_bos_token")) if add_bos is None else add_bos)
    if scalar(reader, "tokenizer.chat_template") is not None:
        w.add_chat_template(scalar(reader, "tokenizer.chat_template"))

    rng = np.random.default_rng(1)
    q_dim, kv_dim = N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM
    shapes = {"token_embd.weight": (N_VOCAB, HIDDEN)}
    shapes.update({
        "blk.0.attn_norm.weight": (HIDDEN,), "blk.0.attn_q.weight": (q_dim, HIDDEN),
        "blk.0.attn_k.weight": (kv_dim, HIDDEN), "blk.0.attn_v.weight": (kv_dim, HIDDEN),
        "blk.0.attn_output.weight": (HIDDEN, q_dim), "blk.0.ffn_norm.weight": (HIDDEN,),
        "blk.0.ffn_gate.weight": (ffn, HIDDEN), "blk.0.ffn_up.weight": (ffn, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, ffn), "output_norm.weight": (HIDDEN,),
    })
    if not tied:
        shapes["output.weight"] = (N_VOCAB, HIDDEN)
    for i, (name, shape) in enumerate(shapes.items()):
        x = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            w.add_tensor(name, x)  # norms are F32 in llama.cpp files
            continue
        t = qtype if float_types is None else float_types[i % len(float_types)]
        if k_type is not None and name == "blk.0.ffn_down.weight":
            import ggml_ref  # llama.cpp's quantiser (the gguf package does not quantise K-quants)

            w.add_tensor(name, ggml_ref.quantize(x, k_type), raw_dtype=k_type)
            continue
        if t == GGMLQuantizationType.F32:
            w.add_tensor(name, x)
        elif t == GGMLQuantizationType.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, quants.quantize(x, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_seeds(out, real):
    os.makedirs(out, exist_ok=True)
    reader = GGUFReader(real)
    Q = GGMLQuantizationType
    write_slim_gguf(f"{out}/slim_q4_1_tied.gguf", reader, Q.Q4_1, tied=True)
    write_slim_gguf(f"{out}/slim_q4_0_untied_llama3.gguf", reader, Q.Q4_0, tied=False, pre="llama3", add_bos=True)
    write_slim_gguf(f"{out}/slim_q8_0.gguf", reader, Q.Q8_0, tied=True, pre="qwen2")
    write_slim_gguf(f"{out}/slim_floats.gguf", reader, Q.F32, tied=False, float_types=[Q.F32, Q.F16, Q.BF16])
    # K-quant mixes: a 256-block ffn_down among 32-block types, as llama.cpp's Q4_K_M / Q5_K_M fall back to.
    write_slim_gguf(f"{out}/slim_q5_0_q4_k.gguf", reader, Q.Q5_0, tied=True, k_type=Q.Q4_K)
    write_slim_gguf(f"{out}/slim_q5_1_q5_k.gguf", reader, Q.Q5_1, tied=False, k_type=Q.Q5_K)
    write_slim_gguf(f"{out}/slim_q8_0_q6_k.gguf", reader, Q.Q8_0, tied=True, k_type=Q.Q6_K)
    write_slim_gguf(f"{out}/slim_q4_0_q8_k.gguf", reader, Q.Q4_0, tied=True, k_type=Q.Q8_K)
    # A type the dequantiser does not support (open and import must say so).
    write_slim_gguf(f"{out}/slim_q2_k.gguf", reader, Q.Q4_1, tied=True, k_type=Q.Q2_K)


def crafted_regressions(out, real):
    """Inputs found by reading the code, not by the fuzzer (loaders/tests/fuzz_regressions/gguf/crafted_*)."""
    os.makedirs(out, exist_ok=True)
    reader = GGUFReader(real)
    # n_heads * head_dim overflows usize (the q/k widths of the import).
    write_slim_gguf(f"{out}/crafted_heads_overflow.gguf", reader, GGMLQuantizationType.Q4_1, tied=True,
                    heads=(1 << 33, 1 << 32))


def spm_seeds(out, corpus):
    """Tiny unigram SentencePiece models trained on the tokenizer corpus (identity and NFKC normalizers)."""
    os.makedirs(out, exist_ok=True)
    sentences = json.load(open(corpus))
    for rule, vocab in [("identity", 800), ("nmt_nfkc", 600)]:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_prefix=f"{out}/tiny_{rule}", vocab_size=vocab,
            model_type="unigram", normalization_rule_name=rule, byte_fallback=(rule == "identity"),
            user_defined_symbols=["<sep>"], character_coverage=0.98, minloglevel=2,
        )
        os.remove(f"{out}/tiny_{rule}.vocab")


def text_seeds(out, corpus, n=200):
    """Sentences of the tokenizer corpus, one per file (the first n, and every tenth after them)."""
    os.makedirs(out, exist_ok=True)
    sentences = json.load(open(corpus))
    for i, s in enumerate(sentences[:n] + sentences[n::10]):
        with open(f"{out}/sentence_{i:04d}.txt", "w") as f:
            f.write(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--gguf", help="a real llama GGUF to slim (its metadata and tokenizer)")
    ap.add_argument("--crafted", help="also write the crafted regression inputs to this dir (needs --gguf)")
    ap.add_argument("--text-corpus", help="the tokenizer corpus (tools/fixtures/tokenizers/corpus.json): spm and text")
    args = ap.parse_args()
    if args.crafted:
        crafted_regressions(args.crafted, args.gguf)
    safetensors_seeds(os.path.join(args.corpus, "safetensors"))
    if args.gguf:
        gguf_seeds(os.path.join(args.corpus, "gguf"), args.gguf)
    if args.text_corpus:
        spm_seeds(os.path.join(args.corpus, "spm_model"), args.text_corpus)
        text_seeds(os.path.join(args.corpus, "tokenizer_text"), args.text_corpus)


if __name__ == "__main__":
    main()
