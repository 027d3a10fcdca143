"""Make the decoder-only family fixtures under tools/fixtures/families/ with Hugging Face transformers.

Run:  tools/scripts/venv.sh python tools/scripts/make_family_fixtures.py [NAME ...]   (no NAME = all; --list;
      --tokenizers: only the tokenizer.json and the text references, from the committed greedy tokens)

Each family starts from a real published config.json (written out below; the source model is named), made smaller
where only size changes (fewer layers, a smaller intermediate size and, where the published
hidden size is large, a smaller hidden size) while keeping the head shapes that the kernels see (head_dim, query
heads per KV head) and every mechanism the family has; sliding windows shrink to 16 positions so the 48-position
sequences cross them. The weights are never committed: tools/scripts/hashinit.py's formula makes them from the
tensor names (reference.json `hash_init` lists every tensor, its scale and offset, first values and f64 sum), and the
Rust test (engine/tests/families.rs) rebuilds them bit-exactly. Committed per family: config.json,
generation_config.json, tokenizer.json (word-level: the family's special tokens at their published ids, every
other id the word w<id>: word_tokenizer.py), reference.json (prompt, greedy and beam-4 tokens and scores, the
prompt as text and the text transformers' tokenizer decodes the greedy tokens to after it) and reference.safetensors
(per prompt position and greedy step: the top-64 logits with their ids, 64 fixed probe ids' logits and the row's
log-sum-exp). See tools/fixtures/families/README.md.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hashinit  # noqa: E402
from beam_margin import BeamRecorder  # noqa: E402
from make_fixtures import FIXTURES, clean_dir, dumps_compact, save_reference  # noqa: E402
import word_tokenizer  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

OUT = FIXTURES / "families"
PROMPT_LEN = 8
# The references keep, per position, the TOP_K largest logits (with their ids), the logits of PROBES fixed
# pseudo-random ids (the same at every position: the check is not only near the argmax) and the f64 log-sum-exp of
# the whole row (the whole vocabulary in aggregate). Ids are stored as f32: exact below 2^24.
TOP_K = 64
PROBES = 64
GREEDY_NEW = 40
BEAM_NEW = 16
NUM_BEAMS = 4
WINDOW = 16
# Smallest per-token distance from a tie a beam fixture may have (beam_margin.py): engine/tests/families.rs allows
# logits within 1e-4 of HF's, so each log-prob within 2e-4 and two candidates' per-token scores within 4e-4.
BEAM_MIN_MARGIN = 4e-4

# Phi-3 128k's LongRoPE factors are 48 per-frequency divisors rising from ~1 to ~64 (long) and ~1 to ~3 (short).
# The published lists are not reproduced here: these are smooth ramps of that shape (rounded to f32 values).
LONG_FACTOR = [float(np.float32(1.0 + 63.0 * (i / 47) ** 2.2)) for i in range(48)]
SHORT_FACTOR = [float(np.float32(1.0 + 2.0 * (i / 47) ** 1.5)) for i in range(48)]

# Published configs (the source model in the key's comment), then what the fixture changes.
PUBLISHED = {
    # Qwen/Qwen2.5-0.5B-Instruct
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
    },
    # meta-llama/Llama-3.2-1B-Instruct
    "llama3": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": 128256,
    },
    # Qwen/Qwen3-0.6B
    "qwen3": {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
        "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960,
        "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
    },
    # mistralai/Mistral-7B-v0.1 (the Mistral with a sliding window; v0.2+ set it to null)
    "mistral": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 32000,
    },
    # microsoft/Phi-3-mini-128k-instruct (LongRoPE factors: see LONG_FACTOR)
    "phi3": {
        "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
        "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
        "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "model_type": "phi3", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": LONG_FACTOR, "short_factor": SHORT_FACTOR, "type": "longrope"},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "use_cache": True, "vocab_size": 32064,
    },
    # google/gemma-2-2b-it
    "gemma2": {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107],
        "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
        "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
        "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
        "use_cache": True, "vocab_size": 256000,
    },
    # google/gemma-3-1b-it (rope_scaling: the linear factor 8 of the larger Gemma 3 text configs, so it is covered)
    "gemma3": {
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
        "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
        "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
        "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000, "sliding_window": 512,
        "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 262144,
    },
}

# The published special tokens (token -> id) each fixture's word-level tokenizer names; every other id is a word.
QWEN_SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
SPECIAL_TOKENS = {
    "qwen2": QWEN_SPECIAL,
    "qwen3": QWEN_SPECIAL,
    "llama3": {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
               "<|end_header_id|>": 128007, "<|eom_id|>": 128008, "<|eot_id|>": 128009},
    "mistral": {"<unk>": 0, "<s>": 1, "</s>": 2},
    "phi3": {"<unk>": 0, "<s>": 1, "</s>": 2, "<|endoftext|>": 32000},
    "gemma2": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 106, "<end_of_turn>": 107},
    "gemma3": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 105, "<end_of_turn>": 106},
}


def text_references(name: str, out: Path, meta: dict) -> dict:
    """Write the fixture's tokenizer.json (word-level, the BOS put first by its post-processor, as the fixture
    prompts start with it) and return what transformers' tokenizer on it makes of the fixture: the prompt as text
    (its ids' tokens after BOS) and its ids, and the text the greedy tokens add to it (special tokens skipped)."""
    import tempfile

    from transformers import PreTrainedTokenizerFast

    cfg = json.loads((out / "config.json").read_text())
    specials = SPECIAL_TOKENS[name]
    by_id = {i: t for t, i in specials.items()}
    bos = by_id[cfg["bos_token_id"]]
    word_tokenizer.write_template(out / "tokenizer.json", specials, prefix=bos)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "tokenizer.json"
        word_tokenizer.fill(out / "tokenizer.json", cfg["vocab_size"], full)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(full), bos_token=bos)
        token = lambda i: by_id.get(i, f"{word_tokenizer.WORD_PREFIX}{i}")  # noqa: E731
        prompt = meta["prompt"]
        text = " ".join(token(i) for i in prompt[1:])
        input_ids = tok(text)["input_ids"]
        assert input_ids == prompt, (name, "the tokenizer does not give the prompt back", input_ids, prompt)
        # the text generation adds to the prompt, as transformers' TextStreamer prints it: the decode of prompt +
        # generated past the decode of the prompt (a word-level decode joins words with spaces: it starts with one)
        head = tok.decode(prompt, skip_special_tokens=True)
        full = tok.decode(prompt + meta["greedy_tokens"], skip_special_tokens=True)
        assert full.startswith(head), (name, head, full)
        greedy_text = full[len(head):]
    return {"tokenizer_words": word_tokenizer.words_spec(cfg["vocab_size"]),
            "text": {"prompt": text, "input_ids": input_ids, "greedy_text": greedy_text,
                     "tokenizer": "PreTrainedTokenizerFast on the filled tokenizer.json",
                     "greedy_text_is": "decode(prompt + greedy)[len(decode(prompt)):], skip_special_tokens"}}


def tokenizers_only(name: str):
    """--tokenizers: tokenizer.json and the text references of an existing fixture (its greedy tokens as committed)."""
    out = OUT / name
    meta = json.loads((out / "reference.json").read_text())
    meta.update(text_references(name, out, meta))
    (out / "reference.json").write_text(dumps_compact(meta) + "\n")
    print(name, meta["text"]["prompt"][:60], "->", meta["text"]["greedy_text"][:60])


# What each fixture changes (besides torch_dtype float32). Every fixture keeps the published vocabulary and its
# special ids.
SMALLER = {
    # 14/2 heads of 64 kept with a hidden size of 224 (16 x 14: qkv's config check wants the hidden size divisible by
    # the head count): the published config derives head_dim (896 / 14), the fixture states it (transformers and qkv
    # read `head_dim` when present); the published vocabulary (151936) is kept
    "qwen2": {"num_hidden_layers": 2, "hidden_size": 224, "head_dim": 64, "intermediate_size": 256},
    "llama3": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 256},
    "qwen3": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 256},
    "mistral": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 256, "sliding_window": WINDOW},
    # head_dim 96 kept (Phi-3 derives it from hidden_size / heads). The 48 positions stay within the original
    # 4096: transformers' Phi-3 re-runs the whole sequence with the long factors once it passes the original
    # context (it drops its cache), which qkv does not do (engine/src/models/rope.rs).
    "phi3": {"num_hidden_layers": 2, "hidden_size": 384, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 256},
    # Gemma's head is tied to embeddings that enter sqrt(d)-scaled: with random weights the residual stream keeps
    # the input token's embedding and the model copies its last token. Untied here (a tied head is covered by
    # qwen2, llama3 and qwen3).
    "gemma2": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 256, "sliding_window": WINDOW,
               "tie_word_embeddings": False},
    # a local then a global layer
    "gemma3": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 256, "sliding_window": WINDOW,
               "sliding_window_pattern": 2, "tie_word_embeddings": False},
}

# hash-init gains: a matrix is uniform in +-gain * sqrt(3 / in_dim) (std gain / sqrt(in_dim)); first match wins.
# Phi-3's fused qkv is softer: LongRoPE's attention factor (~1.67 here) multiplies every score by its square.
GAINS = [("q_proj.weight", 2.0), ("k_proj.weight", 2.0), ("qkv_proj.weight", 1.2), ("v_proj.weight", 1.0),
         ("o_proj.weight", 1.0), ("gate_proj.weight", 1.5), ("up_proj.weight", 1.5), ("gate_up_proj.weight", 1.5),
         ("down_proj.weight", 1.0), ("lm_head.weight", 3.0)]


def hash_rule(name: str, shape, gemma: bool):
    """(scale, offset) of the uniform hash-init of a tensor."""
    if gemma and ("post_attention_layernorm" in name or "post_feedforward_layernorm" in name):
        # Gemma multiplies by (1 + w): gains ~2 on the block outputs so they, not the sqrt(d)-scaled embeddings,
        # dominate the residual stream (else the model copies its input token)
        return 0.1, 1.0
    if "norm" in name:
        return 0.1, (0.0 if gemma else 1.0)  # Gemma multiplies by (1 + w)
    if name.endswith(".bias"):
        return 0.1, 0.0
    if name.endswith("embed_tokens.weight") and gemma:
        # times sqrt(d) at the input: std 1.5 there; a tied head's logits have std ~1.5
        return 1.5 * float(np.sqrt(3.0 / shape[1])), 0.0
    if name.endswith("embed_tokens.weight"):
        # std 3 / sqrt(hidden): a tied head's logits have std ~3 (as an untied one's with gain 3)
        return 3.0 * float(np.sqrt(3.0 / shape[1])), 0.0
    for suffix, gain in GAINS:
        if name.endswith(suffix):
            return gain * float(np.sqrt(3.0 / shape[1])), 0.0
    raise KeyError(f"no hash-init rule for {name}")


def fixture_config(name: str) -> dict:
    c = dict(PUBLISHED[name])
    c.update(SMALLER[name])
    c["torch_dtype"] = "float32"
    return c


def summarize(prefix: str, logits: torch.Tensor, probes: torch.Tensor) -> dict:
    """What the references keep of `logits` [rows, vocab]: `{prefix}_top_ids`, `{prefix}_top_logits` [rows, TOP_K]
    (largest first), `{prefix}_probe_logits` [rows, PROBES] (at `probe_ids`) and `{prefix}_logsumexp` [rows]."""
    top = logits.topk(TOP_K, dim=-1)
    lse = torch.logsumexp(logits.double(), dim=-1).float()
    assert int(logits.shape[1]) < 2 ** 24  # ids exact as f32
    return {f"{prefix}_top_ids": top.indices.float(), f"{prefix}_top_logits": top.values,
            f"{prefix}_probe_logits": logits[:, probes], f"{prefix}_logsumexp": lse, "probe_ids": probes.float()}


@torch.no_grad()
def make(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    out = OUT / name
    clean_dir(out)
    cfg_json = fixture_config(name)
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    eos = cfg_json["eos_token_id"]
    eos_list = eos if isinstance(eos, list) else [eos]
    gen = GenerationConfig(bos_token_id=cfg_json["bos_token_id"], eos_token_id=eos, do_sample=False)
    gen.save_pretrained(out)
    config = AutoConfig.from_pretrained(out)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    gemma = name.startswith("gemma")
    # The tensors HF saves (a tied head is not saved) are the ones hashed.
    model, table = hashinit.rehash_model(model, AutoModelForCausalLM, lambda t, shape: hash_rule(t, shape, gemma))
    model.generation_config = gen

    vocab = cfg_json["vocab_size"]
    special = {v for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               for v in (cfg_json.get(k) if isinstance(cfg_json.get(k), list) else [cfg_json.get(k)]) if v is not None}
    rng = np.random.default_rng(16)

    def draw(rng):
        while True:
            p = [cfg_json["bos_token_id"]] + [int(x) for x in rng.integers(3, vocab, size=PROMPT_LEN - 1)]
            if not special & set(p[1:]):
                return p

    prompt = draw(rng)
    probes = torch.from_numpy(np.sort(np.random.default_rng(18).choice(vocab, PROBES, replace=False)))
    ids = torch.tensor([prompt])
    prompt_logits = model(input_ids=ids).logits[0]  # [PROMPT_LEN, vocab]
    tensors = summarize("prompt", prompt_logits, probes)
    common = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, min_new_tokens=0,
                  eos_token_id=eos_list, pad_token_id=eos_list[0], return_dict_in_generate=True)
    # Greedy: the raw logits of every step; no EOS in the output (the test compares every step).
    g = model.generate(**common, max_new_tokens=GREEDY_NEW, num_beams=1, output_logits=True)
    greedy = g.sequences[0, len(prompt):].tolist()
    assert len(greedy) == GREEDY_NEW and not set(greedy) & set(eos_list), ("greedy hit EOS", greedy)
    step_logits = torch.stack(g.logits)[:, 0]  # [GREEDY_NEW, vocab]
    assert step_logits.argmax(-1).tolist() == greedy
    # Cached decode = one full forward over prompt + generated (a check of the reference itself).
    full = model(input_ids=g.sequences[:, :-1]).logits[0, len(prompt) - 1:]
    diff = (full - step_logits).abs().max().item()
    assert diff < 1e-4, ("cached greedy logits vs full forward", diff)
    top2 = step_logits.topk(2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    tensors.update(summarize("greedy_step", step_logits, probes))
    # Beam search as transformers runs it by default (length_penalty 1, early_stopping False), 4 beams, on the first
    # prompt (the greedy one, then fresh draws) whose search is at least BEAM_MIN_MARGIN from a tie (beam_margin.py).
    beam_rng = np.random.default_rng(17)
    beam_prompt, tries = prompt, 0
    while True:
        rec = BeamRecorder(NUM_BEAMS, eos_list)
        bids = torch.tensor([beam_prompt])
        b = model.generate(**{**common, "input_ids": bids, "attention_mask": torch.ones_like(bids)},
                           max_new_tokens=BEAM_NEW, num_beams=NUM_BEAMS, num_return_sequences=NUM_BEAMS,
                           output_scores=True, length_penalty=1.0, early_stopping=False, logits_processor=[rec])
        beam_margin = rec.margin(b.sequences_scores.tolist())
        if beam_margin >= BEAM_MIN_MARGIN:
            break
        tries += 1
        assert tries < 200, (name, "no beam prompt clear of ties")
        beam_prompt = draw(beam_rng)
    beams = [s[len(beam_prompt):].tolist() for s in b.sequences]
    meta = {
        "model": name,
        "published": PUBLISHED[name].get("architectures"),
        "changed": SMALLER[name],
        "weights": "not committed: hash_init lists every tensor (tools/scripts/hashinit.py)",
        "hash_init": table,
        "prompt": prompt,
        "greedy_tokens": greedy,
        "greedy_min_top2_margin": margin,
        "cached_vs_full_max_abs": diff,
        "beam": {"prompt": beam_prompt, "min_margin": beam_margin, "num_beams": NUM_BEAMS, "max_new_tokens": BEAM_NEW,
                 "length_penalty": 1.0, "early_stopping": False,
                 "sequences": beams, "scores": [float(x) for x in b.sequences_scores]},
        "eos_token_id": eos_list,
    }
    meta.update(text_references(name, out, meta))
    save_reference(out, tensors, meta)
    print(name, "greedy", greedy[:12], "... margin", f"{margin:.3g}", "beam0", beams[0],
          f"beam margin {beam_margin:.3g} ({tries} redraws)", f"cached/full {diff:.2e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--tokenizers", action="store_true")
    a = ap.parse_args()
    if a.list:
        print(" ".join(PUBLISHED))
        return
    for n in a.names or list(PUBLISHED):
        tokenizers_only(n) if a.tokenizers else make(n)


if __name__ == "__main__":
    main()
