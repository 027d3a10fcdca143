"""Fixtures for the loaders crate, produced by the Python reference (transformers + torch + safetensors).

Writes under tools/fixtures/:
  loaders-configs/<case>/config.json (+ generation_config.json), expected.json
      expected.json holds what transformers resolves from that config.json (defaults, derived fields),
      under the names the Rust structs use.
  loaders-configs/shared/<model>.expected.json
      the same for the configs in ../shared/models (which are not copied here).
  loaders-tiny-llama-sharded/
      a tiny random LlamaForCausalLM in bfloat16 saved by transformers' save_pretrained with a small
      max_shard_size (so: several shards + model.safetensors.index.json), and expected.json with each
      tensor's dtype, shape, float64 sum and first values as torch reads them.
Run through tools/scripts/make_loaders_fixtures.sh (which uses tools/scripts/venv.sh).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import AutoConfig, GenerationConfig, GPT2Config, LlamaConfig, LlamaForCausalLM, MarianConfig

LLAMA_FIELDS = [
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
    "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "attention_bias", "mlp_bias",
]
GPT2_FIELDS = [
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon",
    "activation_function", "bos_token_id", "eos_token_id", "pad_token_id", "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention", "tie_word_embeddings",
]
MARIAN_FIELDS = [
    "vocab_size", "decoder_vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "activation_function",
    "max_position_embeddings", "scale_embedding", "share_encoder_decoder_embeddings", "tie_word_embeddings",
    "pad_token_id", "eos_token_id", "decoder_start_token_id", "forced_eos_token_id",
]
GENERATION_FIELDS = [
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "length_penalty",
    "early_stopping", "do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
    "no_repeat_ngram_size", "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
    "forced_eos_token_id", "forced_bos_token_id", "bad_words_ids", "num_return_sequences", "renormalize_logits",
]
# Fields that are int-or-list in HF and a list in Rust.
LIST_IDS = {"eos_token_id"}
GEN_LIST_IDS = {"eos_token_id", "forced_eos_token_id"}


def ids_as_list(v):
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def expected_model(c):
    """What transformers resolved, under the Rust field names."""
    if c.model_type == "llama":
        out = {k: getattr(c, k) for k in LLAMA_FIELDS}
        rope = c.rope_parameters or {}
        out["rope_theta"] = rope.get("rope_theta")
        rope_type = rope.get("rope_type", "default")
        out["rope_scaling"] = None if rope_type == "default" else {
            "rope_type": rope_type,
            **{k: rope.get(k) for k in ["factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings"]},
        }
    elif c.model_type == "gpt2":
        out = {k: getattr(c, k) for k in GPT2_FIELDS}
    elif c.model_type == "marian":
        out = {k: getattr(c, k) for k in MARIAN_FIELDS}
    else:
        raise ValueError(c.model_type)
    if "eos_token_id" in out and c.model_type != "marian":
        out["eos_token_id"] = ids_as_list(out["eos_token_id"])
    out["torch_dtype"] = str(c.dtype).removeprefix("torch.") if getattr(c, "dtype", None) is not None else None
    out["model_type"] = c.model_type
    return out


def expected_generation(d: Path):
    if not (d / "generation_config.json").exists():
        return None
    g = GenerationConfig.from_pretrained(d)
    out = {}
    for k in GENERATION_FIELDS:
        v = getattr(g, k, None)
        if v is None:
            continue
        out[k] = ids_as_list(v) if k in GEN_LIST_IDS else v
    return out


def write_expected(d: Path, dest: Path):
    c = AutoConfig.from_pretrained(d)
    exp = {"transformers_version": transformers.__version__, "model": expected_model(c),
           "generation": expected_generation(d)}
    dest.write_text(json.dumps(exp, indent=1, sort_keys=True) + "\n")


def config_case(root: Path, name: str, config: dict, generation: dict | None = None):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if generation is not None:
        (d / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_expected(d, d / "expected.json")


def saved_case(root: Path, name: str, config):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(d)
    write_expected(d, d / "expected.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--shared-models", type=Path, required=True)
    args = ap.parse_args()
    fixtures = args.root / "tools" / "fixtures"

    configs = fixtures / "loaders-configs"
    if configs.exists():
        shutil.rmtree(configs)
    # Bare model types: every field takes transformers' default.
    config_case(configs, "llama-defaults", {"model_type": "llama"})
    config_case(configs, "gpt2-defaults", {"model_type": "gpt2"})
    config_case(configs, "marian-defaults", {"model_type": "marian"})
    # Files written by transformers itself.
    saved_case(configs, "llama-gqa-saved", LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=100, rope_theta=50000.0, tie_word_embeddings=True))
    saved_case(configs, "gpt2-small-saved", GPT2Config())
    saved_case(configs, "marian-small-saved", MarianConfig(
        vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=8, encoder_ffn_dim=128, decoder_ffn_dim=96, pad_token_id=999,
        decoder_start_token_id=999, eos_token_id=0, activation_function="swish", scale_embedding=True))
    # An older (transformers 4) Llama file of SmolLM2-135M-Instruct's shape, with the hyper-parameters
    # that shared/models/smollm2-135m-instruct-q4_1 holds in its GGUF metadata: legacy `rope_theta`,
    # `rope_scaling: null`, `torch_dtype`.
    config_case(configs, "smollm2-135m-style", {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
        "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": True,
        "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
        "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
        "use_cache": True, "vocab_size": 49152,
    }, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "transformers_version": "4.42.3"})
    # Llama 3 style: list of EOS ids and llama3 RoPE scaling (older `rope_scaling` key).
    config_case(configs, "llama3-rope-scaling", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
        "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 32, "vocab_size": 1024, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0, "bos_token_id": 1000, "eos_token_id": [1001, 1008, 1009],
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    }, {"bos_token_id": 1000, "eos_token_id": [1001, 1008, 1009], "do_sample": True, "temperature": 0.6,
        "top_p": 0.9, "early_stopping": "never", "max_new_tokens": 32})
    shared = configs / "shared"
    shared.mkdir(parents=True)
    for model in ["stories260k", "opus-mt-tc-big-en-pt-tokenizer"]:
        write_expected(args.shared_models / model, shared / f"{model}.expected.json")

    # A tiny sharded Llama checkpoint, saved by transformers.
    tiny = fixtures / "loaders-tiny-llama-sharded"
    if tiny.exists():
        shutil.rmtree(tiny)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tiny, max_shard_size="6KB")
    index = json.loads((tiny / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(tiny / shard, framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                flat = t.float().flatten()
                tensors[name] = {"dtype": {torch.bfloat16: "BF16", torch.float32: "F32"}[t.dtype],
                                 "shape": list(t.shape), "shard": shard,
                                 "sum": flat.double().sum().item(), "first": flat[:4].tolist()}
    exp = {"transformers_version": transformers.__version__, "tensors": tensors,
           "model": expected_model(AutoConfig.from_pretrained(tiny)), "generation": expected_generation(tiny)}
    (tiny / "expected.json").write_text(json.dumps(exp, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
