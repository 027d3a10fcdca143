"""Model preparation for peers.py: every engine gets the same weights.

Each `prepare_*` function writes its directory once under the work dir (a finished directory has a `.done` marker)
and returns its path. Nothing here downloads anything: random models are made by transformers from a config,
the tokenizer and the SmolLM2 GGUF come from the shared models folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

MARIAN_TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")
SMOLLM2_GGUF = Path("smollm2-135m-instruct-q4_1") / "SmolLM2-135M-Instruct.Q4_1.gguf"
MARIAN_TOKENIZER = Path("opus-mt-tc-big-en-pt-tokenizer")

# Marian shapes: (d_model, heads, ffn, layers, activation). Activations as the real opus-mt models use them.
MARIAN_SHAPES = {
    "marian-base": dict(d_model=512, n_heads=8, ffn_dim=2048, n_layers=6, activation="swish"),
    "marian-big": dict(d_model=1024, n_heads=16, ffn_dim=4096, n_layers=6, activation="relu"),
}

# GGUF variants written from the dequantised Q4_1 weights: name -> (2-D weight type, general.file_type value).
GGUF_VARIANTS = {"f32": ("F32", 0), "f16": ("F16", 1), "q8_0": ("Q8_0", 7)}


def log(msg: str) -> None:
    print(f"[peers] {msg}", flush=True)


def _done(d: Path) -> bool:
    return (d / ".done").exists()


def _fresh(d: Path) -> Path:
    """An empty temporary directory beside d, renamed to d by _finish."""
    tmp = d.with_name(d.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _finish(tmp: Path, d: Path) -> Path:
    (tmp / ".done").write_text("ok\n")
    if d.exists():
        shutil.rmtree(d)
    tmp.rename(d)
    return d


# ---------------------------------------------------------------------------------------------------------------
# Marian: random weights, real tokenizer files


def prepare_marian(work: Path, shared: Path, name: str) -> Path:
    """HF MarianMTModel with random weights (seed 0) in the opus-mt shape `name`, plus the real tokenizer files."""
    d = work / name / "hf"
    if _done(d):
        return d
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    shape = MARIAN_SHAPES[name]
    tok_dir = shared / MARIAN_TOKENIZER
    real = json.loads((tok_dir / "config.json").read_text())
    log(f"making {name}: random MarianMTModel d_model {shape['d_model']} (seed 0)")
    cfg = MarianConfig(
        vocab_size=real["vocab_size"],
        decoder_vocab_size=real["decoder_vocab_size"],
        d_model=shape["d_model"],
        encoder_layers=shape["n_layers"],
        decoder_layers=shape["n_layers"],
        encoder_attention_heads=shape["n_heads"],
        decoder_attention_heads=shape["n_heads"],
        encoder_ffn_dim=shape["ffn_dim"],
        decoder_ffn_dim=shape["ffn_dim"],
        activation_function=shape["activation"],
        max_position_embeddings=real["max_position_embeddings"],
        pad_token_id=real["pad_token_id"],
        eos_token_id=real["eos_token_id"],
        bos_token_id=real["bos_token_id"],
        decoder_start_token_id=real["decoder_start_token_id"],
        forced_eos_token_id=real["forced_eos_token_id"],
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        static_position_embeddings=True,
        tie_word_embeddings=True,
        normalize_embedding=False,
        init_std=0.02,
    )
    torch.manual_seed(0)
    model = MarianMTModel(cfg).eval()
    model.generation_config = GenerationConfig.from_pretrained(tok_dir)
    tmp = _fresh(d)
    model.save_pretrained(tmp)
    for f in MARIAN_TOKENIZER_FILES:
        shutil.copy(tok_dir / f, tmp / f)
    return _finish(tmp, d)


# ---------------------------------------------------------------------------------------------------------------
# GPT-2 small: random weights, no tokenizer files


def write_id_tokenizer(d: Path, n_vocab: int, names: dict[int, str] | None = None) -> None:
    """tokenizer.json naming every id `<id_N>` (word-level), or `names[N]` where given (a family's special tokens):
    the random models have no real tokenizer, and loaders (qkv's) want one. Token names only; the weights are
    untouched."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    names = names or {}
    vocab = {names.get(i, f"<id_{i}>"): i for i in range(n_vocab)}
    unk = next((t for t in names.values() if t == "<unk>"), f"<id_{n_vocab - 1}>")
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(d / "tokenizer.json"))


def prepare_gpt2(work: Path) -> Path:
    d = work / "gpt2" / "hf"
    if _done(d):
        if not (d / "tokenizer.json").exists():  # directories made before the id tokenizer was added
            write_id_tokenizer(d, json.loads((d / "config.json").read_text())["vocab_size"])
        return d
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    log("making gpt2: random GPT2LMHeadModel(GPT2Config()) (seed 0)")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    tmp = _fresh(d)
    model.save_pretrained(tmp)
    write_id_tokenizer(tmp, model.config.vocab_size)
    return _finish(tmp, d)


# ---------------------------------------------------------------------------------------------------------------
# T5 and NLLB: the real shapes, random weights, no tokenizer files (none can be downloaded here)

# The published configs' shapes (google-t5/t5-small, facebook/nllb-200-distilled-600M); transformers' own random
# initialisation (seed 0). Special tokens keep their ids and names, so that CTranslate2's converter finds them.
SEQ2SEQ_CONFIGS = {
    "t5-small": dict(model_type="t5", d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
                     vocab_size=32128, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                     tie_word_embeddings=True),
    "nllb-600m": dict(model_type="m2m_100", d_model=1024, encoder_layers=12, decoder_layers=12,
                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_ffn_dim=4096, activation_function="relu", max_position_embeddings=1024,
                      scale_embedding=True, vocab_size=256206, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                      decoder_start_token_id=2, tokenizer_class="NllbTokenizer"),
}
# Special tokens per family: role -> (id, name), as the real tokenizers have them.
SEQ2SEQ_SPECIALS = {
    "t5": {"pad_token": (0, "<pad>"), "eos_token": (1, "</s>"), "unk_token": (2, "<unk>")},
    "m2m_100": {"bos_token": (0, "<s>"), "pad_token": (1, "<pad>"), "eos_token": (2, "</s>"), "unk_token": (3, "<unk>")},
}
SPECIALS_FILE = "peers_specials.json"


def prepare_seq2seq_random(work: Path, name: str) -> Path:
    """HF directory of a random encoder-decoder in the real shape `name`, an id tokenizer with the family's special
    tokens, and SPECIALS_FILE (the roles, for the CTranslate2 conversion)."""
    d = work / name / "hf"
    if _done(d):
        return d
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    c = dict(SEQ2SEQ_CONFIGS[name])
    cfg = AutoConfig.for_model(c.pop("model_type"), **c)
    log(f"making {name}: random {cfg.model_type} d_model {cfg.d_model}, vocab {cfg.vocab_size} (seed 0)")
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(cfg, dtype=torch.float32).eval()
    tmp = _fresh(d)
    model.save_pretrained(tmp)
    specials = SEQ2SEQ_SPECIALS[cfg.model_type]
    write_id_tokenizer(tmp, cfg.vocab_size, {i: t for i, t in specials.values()})
    (tmp / SPECIALS_FILE).write_text(json.dumps({role: t for role, (_, t) in specials.items()}) + "\n")
    return _finish(tmp, d)


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2: the real Q4_1 GGUF, dequantised into an HF directory (f32 and bf16) and re-written as GGUF variants


def _qkv_import(repo: Path, gguf: Path, out: Path, dtype: str) -> str | None:
    """Run qkv's importer; None on success, else the reason it could not be used."""
    if shutil.which("cargo") is None:
        return "cargo not found"
    # Cheap check before a release build of the tools crate: does its source mention the subcommand at all?
    src = " ".join(f.read_text(errors="replace") for f in (repo / "tools" / "src").rglob("*.rs"))
    if not any(k in src for k in ("import-gguf", "ImportGguf", "import_gguf")):
        return "qkv's tools crate has no import-gguf subcommand yet"
    cmd = ["cargo", "run", "--release", "-q", "-p", "tools", "--", "import-gguf", str(gguf), "--out", str(out),
           "--dtype", dtype]
    log("trying qkv's importer: " + " ".join(cmd))
    p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if p.returncode != 0:
        return f"qkv import-gguf failed (exit {p.returncode}): {(p.stderr.strip().splitlines() or [''])[-1]}"
    if not (out / "config.json").exists() or not list(out.glob("*.safetensors")):
        return "qkv import-gguf wrote no config.json/*.safetensors (importer not available yet)"
    return None


def prepare_smollm2_hf(work: Path, shared: Path, repo: Path, dtype: str) -> tuple[Path, str]:
    """HF directory of SmolLM2 (dequantised Q4_1) in f32 or bf16. Returns (dir, how it was made)."""
    d = work / "smollm2" / f"hf-{dtype}"
    if _done(d):
        return d, (d / ".made-by").read_text().strip()
    gguf = shared / SMOLLM2_GGUF
    tmp = _fresh(d)
    why = _qkv_import(repo, gguf, tmp, dtype)
    if why is None:
        made_by = f"qkv import-gguf --dtype {dtype}"
    else:
        log(f"{why}; using transformers' GGUF loader instead")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        shutil.rmtree(tmp)
        tmp = _fresh(d)
        tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: copy its (dequantised) weights into a plain model.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = type(loaded)(config)
        model.load_state_dict(loaded.state_dict())
        model = model.to(tdt).eval()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        made_by = f"transformers from_pretrained(gguf_file=...) -> {dtype} save_pretrained ({why})"
    (tmp / ".made-by").write_text(made_by + "\n")
    return _finish(tmp, d), made_by


def _gguf_permute_back(w, n_heads: int):
    """Undo llama.cpp's q/k row permutation (GGUF layout -> HF layout), as transformers' GGUF loader does."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf_matches_hf(gguf_path: Path, hf_dir: Path) -> str:
    """Assert that the dequantised GGUF tensors equal the f32 HF directory's (same weights for every engine)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    reader = GGUFReader(str(gguf_path))
    n_heads = int(reader.fields["llama.attention.head_count"].contents())
    n_kv = int(reader.fields["llama.attention.head_count_kv"].contents())
    hf = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        hf.update(load_file(f))
    pairs = {
        "token_embd.weight": ("model.embed_tokens.weight", None),
        "blk.0.ffn_down.weight": ("model.layers.0.mlp.down_proj.weight", None),
        "blk.7.attn_q.weight": ("model.layers.7.self_attn.q_proj.weight", n_heads),
        "blk.7.attn_k.weight": ("model.layers.7.self_attn.k_proj.weight", n_kv),
        "blk.29.attn_norm.weight": ("model.layers.29.input_layernorm.weight", None),
    }
    tensors = {t.name: t for t in reader.tensors}
    worst = 0.0
    for g, (h, heads) in pairs.items():
        t = tensors[g]
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        if heads is not None:
            w = _gguf_permute_back(w, heads)
        ref = hf[h].astype(np.float32)
        assert w.shape == ref.shape, f"{g} {w.shape} vs {h} {ref.shape}"
        worst = max(worst, float(np.abs(w - ref).max()))
    assert worst == 0.0, f"dequantised GGUF differs from the HF directory by {worst}"
    return f"checked {len(pairs)} tensors: dequantised GGUF == HF f32 directory (max abs diff 0)"


def prepare_gguf_variant(work: Path, shared: Path, variant: str) -> Path:
    """The shipped Q4_1 GGUF re-written with every 2-D weight dequantised and stored as f32 / f16 / q8_0.

    Same metadata (tokenizer, hyper-parameters) and same tensor names and layout as the shipped file; 1-D tensors
    (norms) stay f32 as llama.cpp wants. The weights are the dequantised Q4_1 values, the same as the HF directory.
    """
    out = work / "smollm2" / f"smollm2-{variant}.gguf"
    if out.exists():
        return out
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    src = shared / SMOLLM2_GGUF
    qname, file_type = GGUF_VARIANTS[variant]
    qtype = gguf.GGMLQuantizationType[qname]
    log(f"writing {out.name} from {src.name} (2-D weights as {qname})")
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    writer.add_file_type(file_type)
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)  # numpy shape = reversed GGUF dims
        if w.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, w)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(t.name, w.astype(np.float16))
        else:
            writer.add_tensor(t.name, quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# CTranslate2 conversions


class _SyntheticVocab:
    """Stands in for a tokenizer when a model has none (random GPT-2): CT2 only needs token names for the ids."""

    def __init__(self, n: int, special: int):
        self.names = [f"<id_{i}>" for i in range(n)]
        self.bos_token = self.eos_token = self.unk_token = self.names[special]

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.names)}


def prepare_ct2(hf_dir: Path, quantization: str | None) -> tuple[Path | None, str]:
    """Convert an HF directory with CTranslate2's TransformersConverter. Returns (dir or None, note)."""
    import ctranslate2

    tag = quantization or "f32"
    out = hf_dir.parent / f"ct2-{tag}"
    note_file = hf_dir.parent / f"ct2-{tag}.note"
    if _done(out):
        return out, note_file.read_text().strip() if note_file.exists() else ""
    log(f"converting {hf_dir} with CTranslate2 ({tag})")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    note = ""
    if (hf_dir / SPECIALS_FILE).exists():
        # a random encoder-decoder with an id tokenizer (prepare_seq2seq_random): the converter reads it as a
        # PreTrainedTokenizerFast with the family's special tokens
        from transformers import PreTrainedTokenizerFast

        roles = json.loads((hf_dir / SPECIALS_FILE).read_text())

        class IdConverter(ctranslate2.converters.TransformersConverter):
            def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
                return PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"), **roles)

        try:
            IdConverter(str(hf_dir)).convert(str(tmp), quantization=quantization)
        except Exception as e:  # noqa: BLE001
            return None, f"CT2 converter failed: {type(e).__name__}: {e}"
        note = "converted with an id tokenizer (<id_N> names, the family's special tokens), weights unchanged"
        note_file.write_text(note + "\n")
        (tmp / ".done").write_text("ok\n")
        tmp.rename(out)
        return out, note
    try:
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(tmp), quantization=quantization)
    except Exception as e:  # noqa: BLE001 - any converter failure becomes a note, then one retry
        cfg = json.loads((hf_dir / "config.json").read_text())
        if cfg.get("model_type") != "gpt2":
            return None, f"CT2 converter failed: {type(e).__name__}: {e}"
        # GPT-2 made from GPT2Config() has no tokenizer files: give CT2 token names only (weights unchanged).
        note = (f"converter needs tokenizer files ({type(e).__name__}); converted with synthetic token names "
                "<id_N>, weights unchanged")
        log(note)
        vocab = _SyntheticVocab(cfg["vocab_size"], cfg.get("eos_token_id", cfg["vocab_size"] - 1))

        class Converter(ctranslate2.converters.TransformersConverter):
            def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
                return vocab

        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            Converter(str(hf_dir)).convert(str(tmp), quantization=quantization)
        except Exception as e2:  # noqa: BLE001
            return None, f"CT2 converter failed even with synthetic token names: {type(e2).__name__}: {e2}"
    note_file.write_text(note + "\n")
    (tmp / ".done").write_text("ok\n")
    tmp.rename(out)
    return out, note
