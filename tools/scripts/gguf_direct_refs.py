#!/usr/bin/env python3
"""llama.cpp's greedy tokens and top logits on the shipped SmolLM2 Q4_1 GGUF, for qkv's direct GGUF load.

    tools/scripts/venv.sh python tools/scripts/gguf_direct_refs.py   # writes tools/fixtures/gguf-direct/ (committed)

The prompts and the llama.cpp run (llama-cpp-python, `logits_all=True`, argmax over its logits, EOS ignored, 3
prompts x 32 tokens) are those of gguf_kquant_refs.py (imported from it). Kept small: per step the top TOP ids and
logits, and the gap between the first two (engine/tests/gguf_direct.rs reads them).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_kquant_refs import N_NEW, ROOT, SMOLLM2, SMOLLM2_PROMPTS, llama_cpp_greedy, versions  # noqa: E402

OUT = ROOT / "tools" / "fixtures" / "gguf-direct" / "smollm2-q4_1-llama-cpp.json"
TOP = 8


def main() -> None:
    from llama_cpp import Llama

    if not SMOLLM2.is_file():
        sys.exit(f"missing {SMOLLM2} (set QKV_SHARED_MODELS)")
    tok = Llama(model_path=str(SMOLLM2), vocab_only=True, verbose=False)
    prompts = [tok.tokenize(p.encode(), add_bos=False, special=False) for p in SMOLLM2_PROMPTS]
    texts = []
    runs, info = llama_cpp_greedy(SMOLLM2, prompts)
    out_runs = []
    for p, r in zip(SMOLLM2_PROMPTS, runs):
        logits = r["logits"]
        top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP]
        out_runs.append({
            "prompt": p,
            "prompt_ids": r["prompt"],
            "tokens": r["tokens"],
            "text": tok.detokenize(r["tokens"]).decode("utf-8", errors="replace"),
            "top_ids": top.tolist(),
            "top_logits": [[float(logits[s, i]) for i in row] for s, row in enumerate(top)],
        })
    del tok
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "source": "tools/scripts/gguf_direct_refs.py: llama.cpp (llama-cpp-python) greedy, logits_all=True",
        "file": SMOLLM2.name,
        "n_new": N_NEW,
        "llama_cpp": info,
        "versions": {k: v for k, v in versions().items() if k in ("llama-cpp-python", "numpy")},
        "runs": out_runs,
    }, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
