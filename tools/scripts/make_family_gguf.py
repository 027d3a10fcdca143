"""Convert the decoder-only family fixtures (tools/fixtures/families/NAME) to GGUF with llama.cpp's own converter,
and record what the Rust test needs to rebuild that GGUF byte for byte without committing megabytes.

Run:  tools/scripts/venv.sh python tools/scripts/make_family_gguf.py --llama-cpp DIR [NAME ...]   (no NAME = all)

DIR is the llama.cpp source tree vendored in llama-cpp-python's sdist (pip download llama-cpp-python==VERSION
--no-binary :all: --no-deps, unpacked: DIR = llama_cpp_python-VERSION/vendor/llama.cpp); its convert_hf_to_gguf.py
(conversion/ package, gguf-py) runs in-process on the HF model the family script makes (weights from
tools/scripts/hashinit.py's formula, as in reference.json `hash_init`), with `--outtype f32`.

What is patched in the converter (and why):
- `set_vocab`: the fixtures have no tokenizer; a SentencePiece-style ("llama") vocabulary of plain tokens is written
  instead (`w{i}`, score -i, the config's special ids control). The tests feed token ids. The token arrays
  (megabytes for a published vocabulary) are cut from `model.gguf.head` and rebuilt by the test (`gguf.json`
  `vocab`: their offsets).
- Gemma 3: `{arch}.attention.sliding_window_pattern` is written from the config's layer types. Upstream omits it and
  llama.cpp then assumes 6 (the published models' pattern); the fixture has 2 layers, one local, one global.
- Gemma 2: the untied head is kept, as `output.weight` (upstream drops `lm_head`: llama.cpp ties Gemma 2's head
  always, and refuses this file).
- Mistral (converted as arch `llama`): `llama.attention.sliding_window` is written. Upstream drops Mistral's window
  (llama.cpp runs Mistral v0.1 without it); qkv's importer reads the key when present.

Recorded per family under tools/fixtures/families/NAME/:
- `model.gguf.head`: the file's bytes up to its tensor data (header, metadata, tensor infos, padding): a few kB.
- `gguf.json`: the file's length and FNV-1a 64 hash, each tensor's offset in the data section and how it is made
  from the HF tensors (found here by trying each HF tensor under each transform until one matches bit for bit:
  `copy`, `plus_one` (Gemma's norms stored as 1 + w), `permute` (llama.cpp's q/k row order for its RoPE, with the
  head count), `config` (Phi-3's LongRoPE factor lists), `values` (Llama 3's `rope_freqs.weight`, which the
  converter computes from `rope_scaling`: its head_dim/2 f32 values are recorded as written, after checking them
  against transformers' llama3 frequencies)), and llama.cpp's greedy tokens on the file
  (llama-cpp-python, f32 weights) with whether they equal transformers'.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_family_fixtures as fam  # noqa: E402

NAMES = list(fam.PUBLISHED)
GREEDY = fam.GREEDY_NEW


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 over the bytes (engine/tests/hash_weights computes the same)."""
    h, prime, mask = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def special_ids(c: dict) -> list:
    """The config's bos, eos (one or a list) and pad ids."""
    out = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = c.get(key)
        out += v if isinstance(v, list) else [] if v is None else [v]
    return sorted(set(out))


def write_vocab(self):
    """A SentencePiece-style vocabulary of plain placeholder tokens of the config's size: token i is `w{i}` with
    score -i, type control for the config's special ids, normal else (the Rust test rebuilds these arrays:
    gguf.json `vocab`)."""
    import gguf

    c = self.hparams
    n = c["vocab_size"]
    control = set(special_ids(c))
    names = [f"w{i}" for i in range(n)]
    types = [gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL for i in range(n)]
    w = self.gguf_writer
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(names)
    w.add_token_scores([-float(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(c["bos_token_id"])
    eos = c["eos_token_id"]
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)
    if c.get("pad_token_id") is not None:
        w.add_pad_token_id(c["pad_token_id"])
    w.add_add_bos_token(False)


def convert(llama_cpp: Path, hf_dir: Path, out: Path, name: str, cfg: dict):
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import gguf  # noqa: F401  (the vendored gguf-py, as the converter uses)
    from conversion import ModelBase, get_model_architecture, get_model_class
    from conversion.base import ModelType

    hparams = ModelBase.load_hparams(hf_dir, False)
    cls = get_model_class(get_model_architecture(hparams, ModelType.TEXT), mmproj=False)
    cls.set_vocab = write_vocab
    base_params = cls.set_gguf_parameters

    def set_params(self):
        base_params(self)
        if name == "gemma3":
            n = cfg["num_hidden_layers"]
            pattern = cfg["sliding_window_pattern"]
            self.gguf_writer.add_sliding_window_pattern([(i + 1) % pattern != 0 for i in range(n)])
        if name == "mistral":
            self.gguf_writer.add_sliding_window(cfg["sliding_window"])

    cls.set_gguf_parameters = set_params
    base_filter, base_modify = cls.filter_tensors, cls.modify_tensors
    if name == "gemma2":
        # Gemma 2's converter drops lm_head and its tensor map has no `output` (llama.cpp always ties Gemma 2's
        # head); the fixture's head is untied, written as `output.weight` as the other architectures name it
        cls.filter_tensors = cls.__mro__[1].filter_tensors

        def modify(self, data, tname, bid):
            if tname == "lm_head.weight":
                yield "output.weight", data
                return
            yield from base_modify(self, data, tname, bid)

        cls.modify_tensors = modify
    import gguf as g

    with torch.inference_mode():
        m = cls(hf_dir, g.LlamaFileType.ALL_F32, out, eager=True)
        m.write()
    cls.set_gguf_parameters = base_params
    cls.filter_tensors, cls.modify_tensors = base_filter, base_modify


def cut_vocab(head: bytes, cfg: dict):
    """The header without the placeholder vocabulary's token arrays (megabytes for a published vocabulary size),
    and where they go back: each array's elements found by exact match (the Rust test regenerates them)."""
    n = cfg["vocab_size"]
    control = special_ids(cfg)
    arrays = {
        "token_names": b"".join(len(w).to_bytes(8, "little") + w for w in (f"w{i}".encode() for i in range(n))),
        "token_scores": (-np.arange(n, dtype=np.float32)).astype("<f4").tobytes(),
        "token_types": np.array([3 if i in control else 1 for i in range(n)], dtype="<i4").tobytes(),
    }
    found = []
    for what, b in arrays.items():
        at = head.find(b)
        assert at >= 0 and head.find(b, at + 1) < 0, ("not found once in the GGUF header", what)
        found.append((at, what, len(b)))
    found.sort()
    out, pos = bytearray(), 0
    for at, _, length in found:
        out += head[pos:at]
        pos = at + length
    out += head[pos:]
    splices = [{"at": at, "what": what} for at, what, _ in found]
    return bytes(out), {"n": n, "control": control, "splices": splices}


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (HF row s*hd/2 + i -> GGUF row 2i + s within each head)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def recipes(reader, hf: dict, cfg: dict):
    """For each GGUF tensor: (name, offset, n, source, transform) found by an exact match."""
    heads = sorted({cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])})
    rs = cfg.get("rope_scaling") or {}
    out = []
    for t in reader.tensors:
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        found = None
        for src, v in hf.items():
            if v.size != data.size:
                continue
            cands = [("copy", v), ("plus_one", v + np.float32(1.0))]
            if v.ndim == 2:
                cands += [(f"permute:{h}", llama_permute(v, h)) for h in heads if v.shape[0] % (2 * h) == 0]
            for tr, c in cands:
                if np.array_equal(c.reshape(-1).view(np.uint32), data.view(np.uint32)):
                    found = (src, tr)
                    break
            if found:
                break
        if not found and t.name == "rope_freqs.weight":
            check_rope_freqs(data, cfg)
            found = ("rope_scaling", "values")
        if not found:
            for key in ("long_factor", "short_factor"):
                if key in rs and np.array_equal(np.asarray(rs[key], dtype=np.float32), data):
                    found = (f"rope_scaling.{key}", "config")
        assert found, ("no HF tensor makes", t.name)
        rec = {"name": t.name, "offset": int(t.data_offset - reader.data_offset), "n": int(data.size),
               "type": t.tensor_type.name, "source": found[0], "transform": found[1]}
        if found[1] == "values":
            rec["values"] = [float(v) for v in data]  # f32 values: repr round-trips them exactly
        out.append(rec)
    return out


def check_rope_freqs(data: np.ndarray, cfg: dict):
    """llama.cpp's `rope_freqs.weight` divides frequency i: base_inv_freq[i] / data[i] must be transformers' llama3
    inverse frequency (its own code, `_compute_llama3_parameters`) within f32 rounding of the two computations."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    c = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})
    want, attn = ROPE_INIT_FUNCTIONS["llama3"](c, "cpu")
    d = cfg["head_dim"]
    base = 1.0 / (cfg["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    got = base / data.astype(np.float64)
    rel = np.abs(got - want.double().numpy()) / want.double().numpy()
    assert data.shape == (d // 2,) and rel.max() < 4e-7 and attn == 1.0, (rel.max(), attn)


def per_frequency_check(reader, hf_dir: Path, cfg: dict, prompt, want):
    """qkv's importer writes `rope_freqs.weight` as a per-frequency divisor list (`longrope` with equal short and
    long lists, attention factor 1, loaders/src/gguf/arch.rs): transformers on that config gives the llama3 model's
    logits (the same frequencies up to f32 rounding)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    (freqs,) = [np.asarray(t.data, dtype=np.float32) for t in reader.tensors if t.name == "rope_freqs.weight"]
    f = [float(v) for v in freqs]
    c = dict(cfg, rope_scaling={"rope_type": "longrope", "short_factor": f, "long_factor": f, "factor": 1.0,
                                "attention_factor": 1.0,
                                "original_max_position_embeddings": cfg["max_position_embeddings"]})
    c.pop("architectures")
    m = AutoModelForCausalLM.from_pretrained(hf_dir, config=LlamaConfig(**c), dtype=torch.float32,
                                             attn_implementation="eager")
    diff = (m(input_ids=torch.tensor([prompt])).logits[0] - want).abs().max()
    print("llama3: HF on the per-frequency config vs the llama3 references, max-abs", float(diff))
    assert diff < 1e-5


def llama_cpp_greedy(path: Path, prompt, n_new: int):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=1, verbose=False, logits_all=True)
    llm.eval(prompt)
    toks, logits = [], []
    for _ in range(n_new):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        t = int(row.argmax())
        toks.append(t)
        logits.append(row)
        llm.eval([t])
    return toks, np.stack(logits)


@torch.no_grad()
def make(name: str, llama_cpp: Path):
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    src = fam.OUT / name
    ref = json.loads((src / "reference.json").read_text())
    cfg = json.loads((src / "config.json").read_text())
    table = {t["name"]: t for t in ref["hash_init"]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf_dir = tmp / "hf"
        hf_dir.mkdir()
        for f in ("config.json", "generation_config.json"):
            (hf_dir / f).write_text((src / f).read_text())
        from safetensors.numpy import save_file

        state = {n: fam.hashinit.hash_tensor(n, t["shape"], t["scale"], t["offset"]) for n, t in table.items()}
        save_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
        # Gemma 3's converter counts the vocabulary from tokenizer.json
        vocab = {f"t{i}": i for i in range(cfg["vocab_size"])}
        (hf_dir / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocab},
                                                           "added_tokens": []}))
        path = tmp / f"{name}.gguf"
        convert(llama_cpp, hf_dir, path, name, cfg)
        raw = path.read_bytes()
        import gguf

        reader = gguf.GGUFReader(str(path))
        hf = load_file(str(hf_dir / "model.safetensors"))
        tensors = recipes(reader, hf, cfg)
        head = raw[: reader.data_offset]
        head, vocab_meta = cut_vocab(head, cfg)
        # our own check of the HF side: the model transformers loads from hf_dir gives the committed logits
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
        prompt = ref["prompt"]
        refs = load_file(str(src / "reference.safetensors"))
        logits = model(input_ids=torch.tensor([prompt])).logits[0]
        got = fam.summarize("prompt", logits, torch.from_numpy(refs["probe_ids"]).long())
        for key in ("prompt_top_logits", "prompt_probe_logits"):
            assert np.abs(got[key].numpy() - refs[key]).max() < 1e-5, key
        want = logits
        if name == "llama3":
            per_frequency_check(reader, hf_dir, cfg, prompt, want)
        try:
            toks, logits = llama_cpp_greedy(path, prompt, GREEDY)
        except Exception as e:  # llama.cpp refuses the file (Gemma 2 with its own head)
            toks, logits, failure = None, None, f"{type(e).__name__}: {e}"
    converter = f"convert_hf_to_gguf.py of {llama_cpp.parent.parent.name}, --outtype f32, patched as the script says"
    if toks is None:
        llama_cpp = {"error": failure}
    else:
        refs = load_file(str(src / "reference.safetensors"))
        agree = next((i for i, (a, b) in enumerate(zip(toks, ref["greedy_tokens"])) if a != b), len(toks))
        rows = min(agree + 1, len(toks))
        top_ids = refs["greedy_step_top_ids"].astype(np.int64)[:rows]
        ours = np.take_along_axis(logits[:rows], top_ids, axis=1)
        probes = logits[:rows][:, refs["probe_ids"].astype(np.int64)]
        llama_cpp = {
            "greedy_tokens": toks,
            "equal_to_hf_steps": agree,
            # teacher-forced on llama.cpp's own tokens, so only the steps up to the first difference compare; over
            # the ids the references keep (top-64 and probes)
            "max_abs_vs_hf_logits": float(max(np.abs(ours - refs["greedy_step_top_logits"][:rows]).max(),
                                              np.abs(probes - refs["greedy_step_probe_logits"][:rows]).max())),
        }
    meta = {
        "converter": converter,
        "file_len": len(raw),
        "fnv1a64": f"{fnv1a64(raw):016x}",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "data_offset": reader.data_offset,
        "tensors": tensors,
        "llama_cpp": llama_cpp,
    }
    meta["vocab"] = vocab_meta
    (src / "model.gguf.head").write_bytes(head)
    (src / "gguf.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(name, f"{len(raw)} bytes, head {len(head)}", "llama.cpp:", llama_cpp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True)
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    for n in a.names or NAMES:
        make(n, a.llama_cpp.resolve())


if __name__ == "__main__":
    main()
