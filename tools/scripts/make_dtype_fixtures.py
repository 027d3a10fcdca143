"""Make tools/fixtures/dtypes/: references for bf16 and f16 checkpoints, run end to end.

Run:  tools/scripts/venv.sh python tools/scripts/make_dtype_fixtures.py

A bf16 (or f16) checkpoint holds weights rounded from f32 to that dtype (round to nearest even, what torch's `.to()`
and the `half` crate both do). qkv reads those weights in their stored dtype and widens them exactly to f32 in
registers, then computes in f32. So the reference here is Hugging Face transformers computing in f32 on the *same
rounded weights* (every parameter rounded to the dtype and back): the rounding is on both sides, and qkv's logits must
match within the f32 tolerance of the f32 fixtures, not a looser one. (HF computing natively in bf16 would also round
every activation to bf16, which qkv deliberately does not do.)

For each model and dtype: two prompts (sources for Marian), 40 greedy steps with the KV cache by raw argmax (no stop
token, no logits processors), the tokens, and the logits of the first N_LOGIT_STEPS steps (SmolLM2: its top-256 logits
for those steps). The Rust side (engine/tests/dtype_models.rs) converts the f32 fixture checkpoints to bf16/f16 itself,
so no second copy of any weights is committed.
"""

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_fixtures as mf  # noqa: E402

OUT = mf.FIXTURES / "dtypes"
N_NEW = 40
N_LOGIT_STEPS = 8
SMOLLM2_TOPK = 256
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def round_weights_(model, dtype, checkpoint=None) -> None:
    """Every tensor the checkpoint holds, rounded to `dtype` and widened back to f32. `checkpoint`: the model's
    .safetensors file, whose tensor names say which parameters and buffers that is (Marian keeps final_logits_bias as
    a buffer and computes its sinusoidal positions at load, not from the file); without it, every parameter."""
    if checkpoint is None:
        names = {n for n, _ in model.named_parameters()}
    else:
        from safetensors import safe_open

        with safe_open(str(checkpoint), "pt") as f:
            names = set(f.keys())
    state = model.state_dict(keep_vars=True)
    missing = names - set(state)
    assert not missing, ("checkpoint tensors the model does not have", missing)
    with torch.no_grad():
        for n in names:
            t = state[n]
            t.data.copy_(t.data.to(dtype).to(torch.float32))


@torch.no_grad()
def decoder_only_run(model, prompt):
    tokens, rows = mf.greedy_with_cache(model, prompt, N_NEW)  # rows [N_NEW, vocab]
    full = model(input_ids=torch.tensor([prompt + tokens[:-1]])).logits[0, len(prompt) - 1:]
    assert (full - rows).abs().max().item() < 1e-3, "cached vs full forward"
    return tokens, rows


@torch.no_grad()
def marian_run(model, src):
    """Encoder once, then raw-argmax decoding from the decoder start with the KV cache."""
    enc = model.get_encoder()(input_ids=torch.tensor([src]))
    start = model.config.decoder_start_token_id
    out = model(encoder_outputs=enc, decoder_input_ids=torch.tensor([[start]]), use_cache=True)
    past, logits = out.past_key_values, out.logits[0, -1]
    tokens, rows = [], []
    for _ in range(N_NEW):
        rows.append(logits.clone())
        t = int(logits.argmax())
        tokens.append(t)
        out = model(encoder_outputs=enc, decoder_input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    rows = torch.stack(rows)
    full = model(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([[start] + tokens[:-1]])).logits[0]
    assert (full - rows).abs().max().item() < 1e-4, "cached vs full forward"
    return tokens, rows


def load_fixture_model(name):
    from transformers import AutoModelForCausalLM, MarianMTModel

    d = mf.FIXTURES / name
    if name.startswith("marian"):
        return MarianMTModel.from_pretrained(d, dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")


def main():
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tensors, models = {}, {}
    # (name, loader, prompts/sources, how to run, whether logits are kept whole or as top-k, checkpoint file or None)
    cases = []
    for name in ["llama-tiny-gqa", "gpt2-tiny"]:
        meta = json.loads((mf.FIXTURES / name / "reference.json").read_text())
        cases.append((name, lambda n=name: load_fixture_model(n), meta["prompts"][1:], decoder_only_run, "full",
                      mf.FIXTURES / name / "model.safetensors"))
    stories = json.loads((mf.FIXTURES / "stories260k" / "reference.json").read_text())
    cases.append(("stories260k",
                  lambda: AutoModelForCausalLM.from_pretrained(mf.SHARED / "stories260k", dtype=torch.float32,
                                                               attn_implementation="eager"),
                  [r["prompt_ids"] for r in stories["runs"][1:3]], decoder_only_run, "full",
                  mf.SHARED / "stories260k" / "model.safetensors"))
    marian = json.loads((mf.FIXTURES / "marian-tiny" / "reference.json").read_text())
    sources = [row[:n] for row, n in zip(marian["source_ids"], marian["source_lengths"])][1:3]
    cases.append(("marian-tiny", lambda: load_fixture_model("marian-tiny"), sources, marian_run, "full",
                  mf.FIXTURES / "marian-tiny" / "model.safetensors"))
    smol = json.loads((mf.FIXTURES / "smollm2" / "reference.json").read_text())
    gguf = mf.SHARED / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cases.append(("smollm2",
                  lambda: AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                               attn_implementation="eager"),
                  [smol["runs"][0]["prompt_ids"], smol["runs"][3]["prompt_ids"]], decoder_only_run, "topk", None))

    for name, load, inputs, run, keep, checkpoint in cases:
        models[name] = {"inputs": inputs, "runs": {}}
        for dname, dtype in DTYPES.items():
            model = load()
            model.eval()
            round_weights_(model, dtype, checkpoint)
            runs = []
            for i, inp in enumerate(inputs):
                tokens, rows = run(model, inp)
                key = f"{name}.{dname}.run{i}"
                if keep == "full":
                    tensors[f"{key}.step_logits"] = rows[:N_LOGIT_STEPS]
                else:
                    top = rows[:N_LOGIT_STEPS].topk(SMOLLM2_TOPK, dim=-1)
                    tensors[f"{key}.topk_values"] = top.values
                    tensors[f"{key}.topk_ids"] = top.indices.to(torch.float32)  # ids < 2^24: exact in f32
                runs.append(tokens)
                print(name, dname, i, tokens[:12], "...")
            models[name]["runs"][dname] = runs
    meta = {
        "notes": [
            "Reference: HF transformers in f32 on the checkpoint's weights rounded to the dtype (RNE) and widened "
            "back: the same numbers a bf16/f16 checkpoint holds (see the script's docstring).",
            f"Each run: {N_NEW} raw-argmax steps with the KV cache from the input (Marian: from the decoder start "
            "over the source), no stop token; runs.<dtype>[i] are the tokens.",
            f"<model>.<dtype>.run<i>.step_logits [{N_LOGIT_STEPS}, vocab]: the logits that chose tokens 0..{N_LOGIT_STEPS - 1}; "
            f"smollm2 keeps its top-{SMOLLM2_TOPK} values (descending) and ids per step instead.",
            "Models: the fixtures llama-tiny-gqa, gpt2-tiny, marian-tiny (inputs: their prompts/sources 1 and 2), "
            "shared stories260k (HF layout; prompts of stories260k runs 1-2), shared SmolLM2 Q4_1 GGUF through "
            "transformers' GGUF loader (prompts of smollm2 runs 0 and 3).",
        ],
        "n_new": N_NEW,
        "n_logit_steps": N_LOGIT_STEPS,
        "models": models,
    }
    mf.save_reference(OUT, tensors, meta)


if __name__ == "__main__":
    np.random.seed(0)
    main()
