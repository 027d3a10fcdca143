"""Timed runs of one peer engine, executed in a worker process by `peers.py --worker SPEC.json`.

Every engine is measured the same way. One run is two generations from the same inputs:
  t1 = wall time to produce 1 new token   (time to first token: the prompt / encoder plus one step)
  tN = wall time to produce N new tokens  (N forced: end-of-sequence is banned until N, so every engine makes N)
and gives prefill tok/s = B*P / t1, decode tok/s = B*(N-1) / (tN - t1), end-to-end tok/s = B*N / tN
(B = batch, P = prompt or source length; beam search counts the B returned sequences, not the beams).
A warm-up run comes first and is not counted.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path


def _ct2_vocab(model_dir: Path) -> list[str]:
    """CTranslate2's own id -> token table (the ids every engine is fed are the HF ids, which CT2 keeps)."""
    for name in ("shared_vocabulary.json", "vocabulary.json", "source_vocabulary.json"):
        p = model_dir / name
        if p.exists():
            return json.loads(p.read_text())
    for name in ("shared_vocabulary.txt", "vocabulary.txt", "source_vocabulary.txt"):
        p = model_dir / name
        if p.exists():
            return p.read_text(encoding="utf-8").split("\n")
    raise FileNotFoundError(f"no CTranslate2 vocabulary file in {model_dir}")


# ---------------------------------------------------------------------------------------------------------------
# Each factory loads the model and returns generate(n_new) -> number of new tokens per returned sequence.


def hf_engine(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    cls = AutoModelForSeq2SeqLM if spec["kind"] == "seq2seq" else AutoModelForCausalLM
    model = cls.from_pretrained(spec["model"], dtype=torch.float32).eval()
    ids = torch.tensor(spec["ids"], dtype=torch.long)  # [B, P]
    mask = torch.ones_like(ids)
    gc = model.generation_config
    pad = gc.pad_token_id if gc.pad_token_id is not None else gc.eos_token_id
    n_prefix = 1 if spec["kind"] == "seq2seq" else ids.shape[1]  # decoder start token / the prompt
    # Marian's forced EOS at max_length - 1 would fight min_new_tokens on the last step: off (CT2 has no such rule).
    extra = {"forced_eos_token_id": None} if spec["kind"] == "seq2seq" else {}

    def generate(n_new: int) -> int:
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=spec["beam"],
                                 max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=pad,
                                 num_return_sequences=1, **extra)
        return int(out.shape[1] - n_prefix)

    return generate


def ct2_engine(spec: dict):
    import ctranslate2

    model_dir = Path(spec["model"])
    vocab = _ct2_vocab(model_dir)
    tokens = [[vocab[i] for i in row] for row in spec["ids"]]
    kw = dict(device="cpu", compute_type=spec["compute_type"], intra_threads=spec["threads"], inter_threads=1)
    if spec["kind"] == "seq2seq":
        translator = ctranslate2.Translator(str(model_dir), **kw)

        def generate(n_new: int) -> int:
            res = translator.translate_batch(tokens, beam_size=spec["beam"], num_hypotheses=1,
                                             max_decoding_length=n_new, min_decoding_length=n_new,
                                             return_end_token=True, max_batch_size=0)
            return min(len(r.hypotheses[0]) for r in res)
    else:
        generator = ctranslate2.Generator(str(model_dir), **kw)

        def generate(n_new: int) -> int:
            res = generator.generate_batch(tokens, beam_size=spec["beam"], sampling_topk=1, max_length=n_new,
                                           min_length=n_new, include_prompt_in_result=False,
                                           return_end_token=True, max_batch_size=0)
            return min(len(r.sequences_ids[0]) for r in res)

    return generate


def llama_cpp_engine(spec: dict):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    assert spec["kind"] == "causal" and len(spec["ids"]) == 1, "llama.cpp rows are decoder-only, batch 1"
    prompt = spec["ids"][0]
    n_ctx = len(prompt) + spec["new_tokens"] + 8
    if not spec.get("llama_extra_bufts", True):
        # llama.cpp's extra weight buffer types (AMX, repacked weights) off: Llama() does not expose the flag, so
        # patch the default model params it starts from.
        import llama_cpp.llama as llama_mod

        default_params = llama_mod.llama_cpp.llama_model_default_params

        def no_extra_bufts():
            p = default_params()
            p.use_extra_bufts = False
            return p

        llama_mod.llama_cpp.llama_model_default_params = no_extra_bufts
    llm = Llama(model_path=spec["model"], n_ctx=n_ctx, n_batch=max(512, len(prompt)), n_threads=spec["threads"],
                n_threads_batch=spec["threads"], n_gpu_layers=0, logits_all=False, verbose=False)

    n_vocab = llm.n_vocab()

    def last_logits():
        # With logits_all=False llama.cpp keeps the last position's logits only; Llama.scores is not filled.
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    def generate(n_new: int) -> int:
        # Greedy by argmax of the last logits; end-of-sequence is never checked, so exactly n_new tokens come out.
        llm.reset()
        llm.eval(prompt)
        produced = 0
        while True:
            tok = int(np.argmax(last_logits()))
            produced += 1
            if produced == n_new:
                return produced
            llm.eval([tok])

    return generate


ENGINES = {"hf": hf_engine, "ct2": ct2_engine, "llama.cpp": llama_cpp_engine}


def measure(spec: dict) -> dict:
    """Load, warm up, then `runs` timed runs; every figure per run plus best (max tok/s) and median."""
    t = time.perf_counter()
    generate = ENGINES[spec["engine"]](spec)
    load_s = time.perf_counter() - t
    batch, n_new, prompt_len = len(spec["ids"]), spec["new_tokens"], len(spec["ids"][0])

    def timed(n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        got = generate(n)
        return time.perf_counter() - t0, got

    for _ in range(spec["warmup"]):
        timed(1)
        timed(n_new)
    runs = []
    for _ in range(spec["runs"]):
        t1, got1 = timed(1)
        tn, got = timed(n_new)
        if got1 != 1 or got != n_new:
            raise RuntimeError(f"{spec['engine']} produced {got1} / {got} new tokens, expected 1 / {n_new}")
        runs.append({
            "ttft_s": t1,
            "total_s": tn,
            "prefill_tok_s": batch * prompt_len / t1,
            "decode_tok_s": batch * (n_new - 1) / (tn - t1) if tn > t1 else float("nan"),
            "e2e_tok_s": batch * n_new / tn,
        })
    return {
        "load_s": load_s,
        "runs": runs,
        "best": summarize(runs, best=True),
        "median": summarize(runs, best=False),
        "new_tokens_checked": n_new,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's RSS at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarize(runs: list[dict], best: bool) -> dict:
    """Per metric: the best (max tok/s, min seconds) or the median over runs."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        if best:
            out[k] = max(vals) if k.endswith("tok_s") else min(vals)
        else:
            out[k] = statistics.median(vals)
    return out


def worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = measure(spec)
    sys.stdout.write("PEERS-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
