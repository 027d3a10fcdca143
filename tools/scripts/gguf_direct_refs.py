#!/usr/bin/env python3
"""llama.cpp's greedy tokens and top logits on the shipped SmolLM2 Q4_1 GGUF, for qkv's direct GGUF load.

    tools/scripts/venv.sh python tools/scripts/gguf_direct_refs.py   # writes tools/fixtures/gguf-direct/ (committed)

The prompts and the llama.cpp run (llama-cpp-python, `logits_all=True`, argmax over its logits, EOS ignored, 3
prompts x 32 tokens) are those of gguf_kquant_refs.py (imported from it). Kept small: per step the top TOP ids and
logits (engine/tests/gguf_direct.rs reads them). Also README's chat prompt (the prompt ids of
tools/fixtures/smollm2 run 3, HF's chat template) answered greedily up to the first EOS (at most CHAT_MAX tokens,
qkv generate's default), with the top 2 logits of each step (tools/tests/readme_first_command.rs reads it).
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
CHAT_MAX = 128


def chat_answer(prompt_ids: list, eos: list) -> dict:
    """llama.cpp's greedy answer to `prompt_ids`, up to and including the first EOS, with each step's top 2."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(SMOLLM2), n_ctx=256, n_batch=256, n_threads=2, n_threads_batch=2,
                logits_all=True, verbose=False, seed=0)
    llm.eval(prompt_ids)
    tokens, top2 = [], []
    for _ in range(CHAT_MAX):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-row, kind="stable")[:2]
        top2.append([[int(i), float(row[i])] for i in top])
        nxt = int(top[0])
        tokens.append(nxt)
        if nxt in eos:
            break
        llm.eval([nxt])
    del llm
    return {"prompt_ids": prompt_ids, "tokens": tokens, "top2": top2}


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
    smol = json.loads((ROOT / "tools" / "fixtures" / "smollm2" / "reference.json").read_text())
    chat = chat_answer(smol["runs"][3]["prompt_ids"], smol["eos_token_ids"])
    chat["message"] = smol["runs"][3]["messages"][0]["content"]
    chat["text"] = tok.detokenize(chat["tokens"]).decode("utf-8", errors="replace")
    del tok
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "source": "tools/scripts/gguf_direct_refs.py: llama.cpp (llama-cpp-python) greedy, logits_all=True",
        "file": SMOLLM2.name,
        "n_new": N_NEW,
        "llama_cpp": info,
        "versions": {k: v for k, v in versions().items() if k in ("llama-cpp-python", "numpy")},
        "runs": out_runs,
        "chat": chat,
    }, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
