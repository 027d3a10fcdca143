"""Reference attention probabilities for `engine/tests/attention.rs` (fixtures under tools/fixtures/attention/).

Run:  tools/scripts/venv.sh python tools/scripts/attention_refs.py

- llama-tiny-gqa, gpt2-tiny: Hugging Face `output_attentions=True` with `attn_implementation="eager"` (the
  softmax weights themselves) over one prompt: `self` [layers, heads, query, key].
- marian-tiny: encoder, decoder and cross attentions of one source teacher-forced with one target (decoder
  inputs: the decoder start token then the targets but the last).
- aren-ct2: CTranslate2 `translate_batch(..., return_attention=True)` on the real aren transliteration model
  (../shared/models/aren-transliteration-ct2): one [target tokens, source tokens] matrix per name, and the
  model.bin spec's `alignment_layer` / `alignment_heads`, which say which layer and heads CTranslate2 averages.
Deterministic: fixed inputs, one torch thread, f32.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "tools" / "fixtures"
OUT = FIXTURES / "attention"
SHARED = Path(os.environ.get("QKV_SHARED_MODELS", REPO.parent / "shared" / "models"))
sys.path.insert(0, str(HERE))

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# Prompt ids of the decoder-only fixtures (BOS first), and the Marian source / target (EOS 0 ends the source).
PROMPT = [1, 158, 66, 9, 200, 31, 77, 4]
MARIAN_SOURCE = [3, 4, 5, 6, 7, 0]
MARIAN_TARGET = [10, 11, 12, 13]
AREN_COUNT = 6


def stack(layers) -> torch.Tensor:
    """A tuple of per-layer [1, heads, q, k] tensors -> [layers, heads, q, k] f32."""
    return torch.stack([a[0] for a in layers]).to(torch.float32).contiguous()


def check_rows(name: str, att: torch.Tensor) -> None:
    sums = att.sum(-1)
    assert (sums - 1).abs().max() < 1e-5, (name, (sums - 1).abs().max().item())


def decoder_only(name: str) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([PROMPT]), output_attentions=True)
    att = stack(out.attentions)
    check_rows(name, att)
    # causal: everything above the diagonal is exactly 0
    assert (att.triu(1) == 0).all(), name
    return {f"{name}.self": att}


def marian() -> dict:
    from transformers import MarianMTModel

    name = "marian-tiny"
    model = MarianMTModel.from_pretrained(FIXTURES / name, attn_implementation="eager").eval()
    start = model.config.decoder_start_token_id
    dec_in = [start] + MARIAN_TARGET[:-1]
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([MARIAN_SOURCE]),
            decoder_input_ids=torch.tensor([dec_in]),
            output_attentions=True,
        )
    t = {
        f"{name}.encoder": stack(out.encoder_attentions),
        f"{name}.decoder": stack(out.decoder_attentions),
        f"{name}.cross": stack(out.cross_attentions),
    }
    for k, v in t.items():
        check_rows(k, v)
    return t


def aren() -> tuple[dict, dict]:
    import ctranslate2
    from make_fixtures import AREN_NAMES

    model_dir = SHARED / "aren-transliteration-ct2"
    if not (model_dir / "model.bin").exists():
        sys.exit(f"missing {model_dir}/model.bin")
    names = AREN_NAMES[:AREN_COUNT]
    sources = [list(n) for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("model.bin", "source_vocabulary.txt", "target_vocabulary.txt"):
            os.symlink(model_dir / f, os.path.join(tmp, f))
        tr = ctranslate2.Translator(tmp, device="cpu", compute_type="float32", inter_threads=1, intra_threads=1)
        # qkv's default for this model is CTranslate2's default beam size (2). One source per call: in a padded
        # batch CTranslate2 4.8.5's beam search returns rows of the shorter sources that sum to 0.98-1.00 (seen
        # on "علي" among 4-5 character names), alone they sum to 1.
        res = [tr.translate_batch([s], beam_size=2, return_attention=True)[0] for s in sources]
    tensors, hyps = {}, []
    for i, r in enumerate(res):
        att = torch.tensor(np.array(r.attention[0]), dtype=torch.float32)  # [target tokens, source tokens]
        assert att.shape == (len(r.hypotheses[0]), len(sources[i])), (att.shape, r.hypotheses[0], sources[i])
        check_rows(f"aren{i}", att)
        tensors[f"aren-ct2.cross{i}"] = att
        hyps.append("".join(r.hypotheses[0]))
    spec = read_alignment_spec(model_dir / "model.bin")
    meta = {
        "sources": names,
        "beam_size": 2,
        "hypotheses": hyps,
        "model_bin_alignment": spec,
        "ctranslate2_version": ctranslate2.__version__,
    }
    return tensors, meta


def read_alignment_spec(path: Path) -> dict:
    """The decoder's `alignment_layer` / `alignment_heads` variables of a CTranslate2 model.bin, which say which
    layer and how many of its heads `return_attention` averages (absent from older specs, where CTranslate2's
    defaults apply: the last layer, 1 head, i.e. head 0 alone). Read as CTranslate2's model reader does:
    u32 binary_version, u16-prefixed spec name, u32 revision, u32 variable count, then per variable a u16-prefixed
    name, u8 rank, rank x u32 dims, u8 item size, u32 element count, the data."""
    import struct

    data = path.read_bytes()
    off = 0

    def u(fmt):
        nonlocal off
        v = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal off
        n = u("<H")
        s = data[off : off + n].rstrip(b"\0").decode()
        off += n
        return s

    version = u("<I")
    found = {"binary_version": version, "spec": string(), "spec_revision": u("<I")}
    names = []
    for _ in range(u("<I")):
        name = string()
        rank = u("<B")
        dims = [u("<I") for _ in range(rank)]
        item = u("<B")
        count = u("<I")
        assert count == int(np.prod(dims)) if dims else count == 1, (name, dims, count)
        if "alignment" in name:
            found[name] = int.from_bytes(data[off : off + item], "little", signed=True)
        names.append(name)
        off += count * item
    found["variables"] = len(names)
    found["alignment_variables"] = [n for n in names if "alignment" in n]
    return found


def main() -> None:
    import transformers
    from safetensors.torch import save_file

    OUT.mkdir(parents=True, exist_ok=True)
    tensors = {}
    tensors.update(decoder_only("llama-tiny-gqa"))
    tensors.update(decoder_only("gpt2-tiny"))
    tensors.update(marian())
    aren_t, aren_meta = aren()
    tensors.update(aren_t)
    save_file(tensors, str(OUT / "reference.safetensors"), metadata={"format": "pt"})
    meta = {
        "made_by": "tools/scripts/attention_refs.py",
        "prompt": PROMPT,
        "marian_source": MARIAN_SOURCE,
        "marian_target": MARIAN_TARGET,
        "aren": aren_meta,
        "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(meta["aren"], ensure_ascii=False))
    print(f"wrote {OUT} ({(OUT / 'reference.safetensors').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
