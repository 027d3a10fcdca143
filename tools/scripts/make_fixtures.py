"""Make the reference fixtures under tools/fixtures/ with Hugging Face transformers and CTranslate2.

Run:  tools/scripts/venv.sh python tools/scripts/make_fixtures.py [NAME ...]     (no NAME = all)
      tools/scripts/venv.sh python tools/scripts/make_fixtures.py --list
Every fixture is deterministic: fixed seeds, fixed inputs, one torch thread. See tools/fixtures/README.md.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "tools" / "fixtures"
SHARED = Path(os.environ.get("QKV_SHARED_MODELS", REPO.parent / "shared" / "models"))

sys.path.insert(0, str(HERE))
import hashinit  # noqa: E402
import llama2c  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.use_deterministic_algorithms(True)


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def versions() -> dict:
    import safetensors
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }
    return out


def f32(t) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    return t.detach().to(torch.float32).contiguous().clone()


def save_reference(out_dir: Path, tensors: dict, meta: dict) -> None:
    """reference.safetensors (f32 tensors) + reference.json (ids, options, shapes, versions)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    if tensors:
        tensors = {k: f32(v) for k, v in tensors.items()}
        save_file(tensors, str(out_dir / "reference.safetensors"), metadata={"format": "pt"})
        meta = dict(meta)
        meta["tensors"] = {k: list(v.shape) for k, v in sorted(tensors.items())}
    meta["versions"] = versions()
    with open(out_dir / "reference.json", "w") as f:
        f.write(dumps_compact(meta))
        f.write("\n")


def dumps_compact(obj) -> str:
    """JSON with one line per list of scalars (ids stay readable), indented objects."""
    import re

    text = json.dumps(obj, indent=1, ensure_ascii=False)
    # collapse innermost lists: '[' newline scalars newline ']' with no nested brackets or braces
    pat = re.compile(r"\[\s*\n(\s*(?:[^\[\]{}\n]+,\s*\n)*\s*[^\[\]{}\n]+)\n\s*\]")
    return pat.sub(lambda m: "[" + " ".join(x.strip() for x in m.group(1).split("\n")) + "]", text)


def clean_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


def rerandomize_(model: torch.nn.Module, seed: int, std, skip=()) -> None:
    """Fill every parameter (sorted by name) with non-trivial values: norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1),
    other weights std(name) * N(0,1) (std: a float or a function of the parameter name)."""
    g = torch.Generator().manual_seed(seed)
    std_of = std if callable(std) else (lambda _name: std)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if any(s in name for s in skip):
                continue
            lname = name.lower()
            is_norm = "norm" in lname or "ln_" in lname or "layernorm" in lname
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std_of(name) * torch.randn(p.shape, generator=g))


def strip_after_eos(seq, eos: int, pad: int):
    """Generated ids (without the decoder start) up to and including the first EOS; trailing pads dropped."""
    out = []
    for t in seq:
        out.append(int(t))
        if t == eos:
            break
    while out and out[-1] == pad and eos != pad:
        out.pop()
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Marian


MARIAN_PAD = 127
MARIAN_EOS = 0


def marian_generation_config(pad: int, eos: int, max_length: int):
    from transformers import GenerationConfig

    # Same keys as a real opus-mt generation_config.json (e.g. opus-mt-tc-big-en-pt), with this model's ids.
    return GenerationConfig(
        bad_words_ids=[[pad]],
        bos_token_id=eos,
        decoder_start_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        max_length=max_length,
        num_beams=4,
        pad_token_id=pad,
        renormalize_logits=True,
    )


def marian_config(vocab: int, d_model: int, n_layers: int, n_heads: int, ffn: int, max_pos: int, init_std: float):
    from transformers import MarianConfig

    pad = vocab - 1
    return MarianConfig(
        vocab_size=vocab,
        decoder_vocab_size=vocab,
        d_model=d_model,
        encoder_layers=n_layers,
        decoder_layers=n_layers,
        encoder_attention_heads=n_heads,
        decoder_attention_heads=n_heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=max_pos,
        activation_function="swish",
        scale_embedding=True,
        static_position_embeddings=True,
        share_encoder_decoder_embeddings=True,
        normalize_embedding=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        init_std=init_std,
        pad_token_id=pad,
        eos_token_id=MARIAN_EOS,
        bos_token_id=MARIAN_EOS,
        decoder_start_token_id=pad,
        forced_eos_token_id=MARIAN_EOS,
        tie_word_embeddings=True,
        architectures=["MarianMTModel"],
    )


def marian_sources(rng: np.random.Generator, lengths, vocab: int):
    """Varied-length sources (content ids 1..vocab-2, then EOS), right-padded with pad, plus the attention mask."""
    pad = vocab - 1
    n = max(lengths)
    ids = np.full((len(lengths), n), pad, dtype=np.int64)
    mask = np.zeros((len(lengths), n), dtype=np.int64)
    for b, L in enumerate(lengths):
        ids[b, : L - 1] = rng.integers(1, vocab - 1, size=L - 1)
        ids[b, L - 1] = MARIAN_EOS
        mask[b, :L] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def marian_references(model, src, mask, target_prefix, max_new_tokens: int, beam_rows, eos: int, pad: int,
                      store_scores: bool = True):
    """Encoder output, teacher-forced logits, greedy and beam-4 generate (batched and per source)."""
    from transformers import GenerationConfig

    model.eval()
    gen_cfg = model.generation_config
    tensors, meta = {}, {}
    n_batch = src.shape[0]

    # encoder output [batch, src_len, d_model] (rows past each source's length are padding: ignore them)
    enc = model.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
    tensors["encoder_output"] = enc

    # teacher-forced decoder logits over a fixed target prefix: [batch, steps, vocab] (raw, with final_logits_bias)
    dec_in = torch.tensor([[pad] + target_prefix] * n_batch)
    out = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in)
    tensors["teacher_forced_logits"] = out.logits
    meta["teacher_forced_decoder_input_ids"] = dec_in[0].tolist()

    def run(kind, ids, m):
        kw = dict(
            input_ids=ids,
            attention_mask=m,
            max_new_tokens=max_new_tokens,
            min_length=0,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
        )
        if kind == "greedy":
            kw.update(num_beams=1)
        else:
            kw.update(num_beams=4, num_return_sequences=1, length_penalty=1.0, early_stopping=False)
        return model.generate(**kw)

    gen_opts = {
        "max_new_tokens": max_new_tokens,
        "min_length": 0,
        "do_sample": False,
        "bad_words_ids": gen_cfg.bad_words_ids,
        "forced_eos_token_id": gen_cfg.forced_eos_token_id,
        "renormalize_logits": gen_cfg.renormalize_logits,
        "decoder_start_token_id": gen_cfg.decoder_start_token_id,
        "eos_token_id": gen_cfg.eos_token_id,
        "pad_token_id": gen_cfg.pad_token_id,
        # early_stopping: unset in generation_config.json, which HF treats as False (the default we pass explicitly)
        "beam": {"num_beams": 4, "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1},
    }
    meta["generate_options"] = gen_opts

    # greedy, batched
    g = run("greedy", src, mask)
    seqs = g.sequences  # [batch, 1 + steps], starts with decoder_start
    meta["greedy_sequences"] = seqs.tolist()
    meta["greedy_tokens"] = [strip_after_eos(s[1:].tolist(), eos, pad) for s in seqs]
    # raw logits and processed scores (log-softmax after bad_words/forced-eos, renormalized) per step: [steps, batch, vocab]
    tensors["greedy_step_logits"] = torch.stack(g.logits)
    if store_scores:
        tensors["greedy_step_scores"] = torch.stack(g.scores)  # -inf where a processor banned the token
    for b in range(n_batch):
        g1 = run("greedy", src[b : b + 1, : int(mask[b].sum())], mask[b : b + 1, : int(mask[b].sum())])
        toks = strip_after_eos(g1.sequences[0, 1:].tolist(), eos, pad)
        assert toks == meta["greedy_tokens"][b], ("greedy batch-1 != batched", b, toks, meta["greedy_tokens"][b])
        steps = len(g1.logits)
        diff = (torch.stack(g1.logits)[:, 0] - tensors["greedy_step_logits"][:steps, b]).abs().max().item()
        assert diff < 1e-4, ("greedy logits batch-1 vs batched", b, diff)
    meta["greedy_batch1_equal"] = True

    # beam 4, batched and per source
    bm = run("beam", src[beam_rows], mask[beam_rows])
    meta["beam_rows"] = list(beam_rows)
    meta["beam_sequences"] = bm.sequences.tolist()
    meta["beam_tokens"] = [strip_after_eos(s[1:].tolist(), eos, pad) for s in bm.sequences]
    meta["beam_sequences_scores"] = bm.sequences_scores.tolist()
    single_scores = []
    for j, b in enumerate(beam_rows):
        L = int(mask[b].sum())
        b1 = run("beam", src[b : b + 1, :L], mask[b : b + 1, :L])
        toks = strip_after_eos(b1.sequences[0, 1:].tolist(), eos, pad)
        assert toks == meta["beam_tokens"][j], ("beam batch-1 != batched", b, toks, meta["beam_tokens"][j])
        s1 = b1.sequences_scores[0].item()
        assert abs(s1 - meta["beam_sequences_scores"][j]) < 1e-4, ("beam score batch-1 vs batched", s1)
        single_scores.append(s1)
    meta["beam_batch1_sequences_scores"] = single_scores
    meta["beam_batch1_equal"] = True
    return tensors, meta


def marian_tiny_std(name: str) -> float:
    if "q_proj" in name or "k_proj" in name:
        return 0.5
    if "v_proj" in name or "out_proj" in name:
        return 0.1
    if "fc1" in name or "fc2" in name:
        return 0.4
    return 0.4  # model.shared (embeddings, tied lm_head)


def marian_tiny():
    from transformers import MarianMTModel

    name = "marian-tiny"
    out = FIXTURES / name
    clean_dir(out)
    torch.manual_seed(0)
    cfg = marian_config(vocab=128, d_model=32, n_layers=2, n_heads=4, ffn=64, max_pos=64, init_std=0.2)
    model = MarianMTModel(cfg)
    model.generation_config = marian_generation_config(MARIAN_PAD, MARIAN_EOS, max_length=64)
    # Re-randomize everything but the static sinusoidal positions. With one std for all weights (0.2 .. 0.8) a random
    # post-norm Marian repeats one token forever: the cross-attention adds a near-constant vector and attention averages.
    # Strong FFNs, sharp q/k and weak v/out projections make greedy outputs varied (searched once over a few settings).
    rerandomize_(model, seed=1, std=marian_tiny_std, skip=("embed_positions",))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.final_logits_bias.copy_(0.5 * torch.randn(model.final_logits_bias.shape, generator=g))
        # A higher EOS bias so that some greedy outputs stop on their own before the forced EOS at max length.
        model.final_logits_bias[0, MARIAN_EOS] += 2.0
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    # Reload from disk so the references are those of the committed files.
    model = MarianMTModel.from_pretrained(out, dtype=torch.float32)
    model.eval()

    rng = np.random.default_rng(3)
    src, mask = marian_sources(rng, [3, 12, 7, 5], 128)
    prefix = [int(x) for x in rng.integers(1, 127, size=9)]
    tensors, meta = marian_references(model, src, mask, prefix, max_new_tokens=20, beam_rows=[0, 1, 2, 3],
                                      eos=MARIAN_EOS, pad=MARIAN_PAD)
    meta = {
        "model": name,
        "source_ids": src.tolist(),
        "source_attention_mask": mask.tolist(),
        "source_lengths": mask.sum(1).tolist(),
        **meta,
    }
    save_reference(out, tensors, meta)
    print(name, "greedy", meta["greedy_tokens"], "beam", meta["beam_tokens"], meta["beam_sequences_scores"])


# The base-shape weights come from hashinit.py. (scale, offset) per tensor kind, chosen by the parameter-name suffix,
# first match wins. Relative sizes as in marian-tiny (sharp q/k, weak v/out, strong FFN) so outputs are not degenerate.
MARIAN_BASE_HASH_RULES = [
    ("layer_norm.weight", 0.1, 1.0),
    (".bias", 0.05, 0.0),
    ("final_logits_bias", 0.5, 0.0),
    ("q_proj.weight", 0.2, 0.0),
    ("k_proj.weight", 0.2, 0.0),
    ("v_proj.weight", 0.04, 0.0),
    ("out_proj.weight", 0.04, 0.0),
    ("fc1.weight", 0.17, 0.0),
    ("fc2.weight", 0.12, 0.0),
    ("shared.weight", 0.17, 0.0),
]


def hash_rule(name: str, rules):
    for suffix, scale, offset in rules:
        if name.endswith(suffix):
            return scale, offset
    raise KeyError(f"no hash-init rule for tensor {name}")


def marian_base_shape():
    from transformers import MarianMTModel

    name = "marian-base-shape"
    out = FIXTURES / name
    clean_dir(out)
    torch.manual_seed(0)
    vocab = 1000
    pad = vocab - 1
    cfg = marian_config(vocab=vocab, d_model=512, n_layers=6, n_heads=8, ffn=2048, max_pos=512, init_std=0.02)
    gen = marian_generation_config(pad, MARIAN_EOS, max_length=512)
    model = MarianMTModel(cfg)
    model.generation_config = gen
    model.eval()
    # The tensor names that HF writes (tied and static-position tensors are not saved) are the ones hashed; the
    # reference keeps transformers' default attention (the fixture predates the eager-attention ones).
    model, table = hashinit.rehash_model(model, MarianMTModel, lambda t, shape: hash_rule(t, MARIAN_BASE_HASH_RULES),
                                         attn_implementation=None)
    # The tied head is not saved: check the load tied it to the hashed table.
    assert torch.equal(model.lm_head.weight, model.model.shared.weight)
    cfg.save_pretrained(out)
    gen.save_pretrained(out)

    rng = np.random.default_rng(4)
    src, mask = marian_sources(rng, [3, 12, 7, 5], vocab)
    prefix = [int(x) for x in rng.integers(1, vocab - 1, size=5)]
    tensors, meta = marian_references(model, src, mask, prefix, max_new_tokens=10, beam_rows=[1, 2],
                                      eos=MARIAN_EOS, pad=pad, store_scores=False)
    meta = {
        "model": name,
        "weights": "not committed: regenerate with the hash formula of tools/fixtures/README.md (hashinit.py); "
                   "hash_init lists every tensor HF saves, its (scale, offset), its first 4 values and f64 sum",
        "hash_init": table,
        "source_ids": src.tolist(),
        "source_attention_mask": mask.tolist(),
        "source_lengths": mask.sum(1).tolist(),
        **meta,
    }
    save_reference(out, tensors, meta)
    print(name, "greedy", meta["greedy_tokens"], "beam", meta["beam_tokens"], meta["beam_sequences_scores"])


# ----------------------------------------------------------------------------------------------------------------------
# decoder-only tiny models


@torch.no_grad()
def decoder_only_references(model, prompts, max_new_tokens: int, eos: int):
    """Logits at every prompt position, greedy generate (with raw logits at each generated step), for each prompt."""
    tensors, meta = {}, {"prompts": prompts, "greedy_tokens": []}
    for i, p in enumerate(prompts):
        ids = torch.tensor([p])
        tensors[f"prompt{i}_logits"] = model(input_ids=ids).logits[0]  # [len, vocab]
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                           min_new_tokens=0, do_sample=False, num_beams=1, return_dict_in_generate=True,
                           output_logits=True, eos_token_id=eos, pad_token_id=eos)
        new = g.sequences[0, len(p):].tolist()
        assert len(new) == max_new_tokens and eos not in new, ("greedy stopped early on EOS: choose another seed", new)
        step_logits = torch.stack(g.logits)[:, 0]  # [new, vocab]: logits that chose new[k]
        assert step_logits.argmax(-1).tolist() == new
        # The cached decode must agree with one full forward over prompt + generated tokens.
        full = model(input_ids=g.sequences[:, :-1]).logits[0, len(p) - 1 :]
        diff = (full - step_logits).abs().max().item()
        assert diff < 1e-4, ("cached greedy logits vs full forward", diff)
        tensors[f"greedy{i}_step_logits"] = step_logits
        meta["greedy_tokens"].append(new)
    meta["generate_options"] = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1,
                                "eos_token_id": eos, "note": "no EOS occurs in these outputs"}
    return tensors, meta


def decoder_only_prompts(seed: int, vocab: int, lengths=(1, 7, 33), bos: int = 1):
    """Random prompts; each starts with BOS (a length-1 prompt is just BOS)."""
    rng = np.random.default_rng(seed)
    return [[bos] + [int(x) for x in rng.integers(3, vocab, size=L - 1)] for L in lengths]


def decoder_only_fixture(name: str, model, seed: int, eos: int = 2, legacy_rope_theta: bool = False):
    from transformers import GenerationConfig

    out = FIXTURES / name
    clean_dir(out)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=eos, do_sample=False)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    if legacy_rope_theta:
        # transformers 5 writes "rope_parameters": {"rope_theta", "rope_type"}; most published Llama configs (written
        # by transformers 4) have a top-level "rope_theta" instead. Keep that older form here so both are covered.
        path = out / "config.json"
        c = json.loads(path.read_text())
        rope = c.pop("rope_parameters")
        assert rope["rope_type"] == "default", rope
        c["rope_theta"] = rope["rope_theta"]
        path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    cls = type(model)
    theta_before = getattr(model.config, "rope_parameters", None)
    model = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert getattr(model.config, "rope_parameters", None) == theta_before, "config round trip changed RoPE"
    prompts = decoder_only_prompts(seed, model.config.vocab_size)
    tensors, meta = decoder_only_references(model, prompts, max_new_tokens=24, eos=eos)
    save_reference(out, tensors, {"model": name, **meta})
    print(name, meta["greedy_tokens"])


def llama_std(name: str) -> float:
    if "q_proj" in name or "k_proj" in name:
        return 0.25
    if "v_proj" in name or "o_proj" in name:
        return 0.15
    if "mlp" in name:
        return 0.2
    return 0.5  # embed_tokens, lm_head


def llama_tiny(name: str, n_heads: int, n_kv_heads: int, rope_theta: float, tied: bool, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=64 // n_heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=rope_theta,
        hidden_act="silu",
        tie_word_embeddings=tied,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        architectures=["LlamaForCausalLM"],
    )
    model = LlamaForCausalLM(cfg)
    rerandomize_(model, seed=seed + 1, std=llama_std)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    decoder_only_fixture(name, model, seed=seed + 2, legacy_rope_theta=not tied)


def llama_tiny_gqa():
    llama_tiny("llama-tiny-gqa", n_heads=8, n_kv_heads=2, rope_theta=10000.0, tied=False, seed=10)


def llama_tiny_tied():
    llama_tiny("llama-tiny-tied", n_heads=4, n_kv_heads=4, rope_theta=500000.0, tied=True, seed=20)


def gpt2_std(name: str) -> float:
    if "c_attn" in name:
        return 0.3
    if "attn.c_proj" in name:
        return 0.15
    if "mlp" in name:
        return 0.35
    return 0.3  # wte (tied lm_head), wpe


def gpt2_tiny():
    from transformers import GPT2Config, GPT2LMHeadModel

    seed = 30
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=256,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )
    model = GPT2LMHeadModel(cfg)
    rerandomize_(model, seed=seed + 1, std=gpt2_std)
    decoder_only_fixture("gpt2-tiny", model, seed=seed + 2)


# ----------------------------------------------------------------------------------------------------------------------
# aren-ct2: CTranslate2 on the real OpenNMT transliteration model

AREN_NAMES = [
    "محمد", "أحمد", "علي", "فاطمة", "خالد", "سارة", "يوسف", "مريم", "عمر", "ليلى", "حسن", "زينب", "إبراهيم", "عائشة",
    "مصطفى", "نور", "سلمى", "طارق", "هدى", "كريم", "رشيد", "جميلة", "عبدالله", "صالح", "ياسمين", "منصور", "غادة",
    "ضياء", "ثامر", "ظافر", "قاسم", "بشير", "آمنة", "رؤوف", "هانئ",
    "پرويز",  # 'پ' is not in source_vocabulary.txt: it maps to <unk> (id 50)
]
# Other targets to score (teacher-forced), besides the greedy outputs: index into AREN_NAMES, target string.
# 'Z' is not in target_vocabulary.txt: it maps to <unk> (id 42).
AREN_EXTRA_TARGETS = [(0, "muhammad"), (0, "mohammed"), (1, "ahmed"), (3, "fatimah"), (12, "ibrahim"), (4, "Zaled"),
                      (22, "abdullah"), (2, "a")]


def read_vocab(path: Path):
    toks = path.read_text(encoding="utf-8").split("\n")
    if toks and toks[-1] == "":
        toks.pop()
    ids = {t: i for i, t in enumerate(toks)}
    unk = ids.get("<unk>", len(toks))  # CTranslate2 appends <unk> when the file lacks it
    return toks, ids, unk


def aren_ct2():
    import ctranslate2

    name = "aren-ct2"
    out = FIXTURES / name
    clean_dir(out)
    model_dir = SHARED / "aren-transliteration-ct2"
    if not (model_dir / "model.bin").exists():
        sys.exit(f"missing {model_dir}/model.bin")
    _, src_ids, src_unk = read_vocab(model_dir / "source_vocabulary.txt")
    tgt_toks, tgt_ids, tgt_unk = read_vocab(model_dir / "target_vocabulary.txt")
    sources = [list(n) for n in AREN_NAMES]
    for n in AREN_NAMES[:-1]:
        assert all(c in src_ids for c in n), n

    opts = dict(device="cpu", compute_type="float32", inter_threads=1, intra_threads=1)
    common = dict(max_batch_size=0, num_hypotheses=1, length_penalty=1.0, coverage_penalty=0.0,
                  repetition_penalty=1.0, no_repeat_ngram_size=0, disable_unk=False, return_end_token=False,
                  max_input_length=1024, max_decoding_length=256, min_decoding_length=1, patience=1.0,
                  return_scores=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Only model.bin and the vocabularies: the shared config.json is a custom description, not CTranslate2's.
        for f in ("model.bin", "source_vocabulary.txt", "target_vocabulary.txt"):
            os.symlink(model_dir / f, os.path.join(tmp, f))
        tr = ctranslate2.Translator(tmp, **opts)
        greedy = tr.translate_batch(sources, beam_size=1, return_logits_vocab=True, **common)
        beam = tr.translate_batch(sources, beam_size=4, **common)
        greedy_tokens = [r.hypotheses[0] for r in greedy]
        beam_tokens = [r.hypotheses[0] for r in beam]

        # batch 1 must give the same tokens and scores
        max_diff = 0.0
        for i, src in enumerate(sources):
            g1 = tr.translate_batch([src], beam_size=1, **common)[0]
            b1 = tr.translate_batch([src], beam_size=4, **common)[0]
            assert g1.hypotheses[0] == greedy_tokens[i] and b1.hypotheses[0] == beam_tokens[i], i
            max_diff = max(max_diff, abs(g1.scores[0] - greedy[i].scores[0]), abs(b1.scores[0] - beam[i].scores[0]))
        assert max_diff < 1e-5, max_diff

        score_sources = sources + [sources[i] for i, _ in AREN_EXTRA_TARGETS]
        score_targets = greedy_tokens + [list(t) for _, t in AREN_EXTRA_TARGETS]
        scored = tr.score_batch(score_sources, score_targets, max_batch_size=0, max_input_length=1024, offset=0)
        score_diff = 0.0
        for i, (s, t) in enumerate(zip(score_sources, score_targets)):
            one = tr.score_batch([s], [t])[0]
            score_diff = max(score_diff, max(abs(a - b) for a, b in zip(one.log_probs, scored[i].log_probs)))
        assert score_diff < 1e-5, score_diff

    tensors = {}
    for i, r in enumerate(greedy):
        # one row per decoding step (the tokens then </s>): the step's logits over the target vocabulary, after
        # CTranslate2's own processing (min_decoding_length=1 sets </s> to the lowest f32 at step 0).
        tensors[f"greedy{i}_step_logits"] = torch.stack([torch.from_numpy(np.array(x)) for x in r.logits[0]])

    # Greedy score = mean over (tokens + </s>) of log_softmax(processed step logits)[token]: at step 0 </s> is banned
    # and the softmax renormalised without it, so it differs from score_batch (which does not ban </s>) at step 0.
    step0_diff = []
    for i, r in enumerate(greedy):
        logits = tensors[f"greedy{i}_step_logits"].double()
        logp = torch.log_softmax(logits, dim=-1)
        ids = [tgt_ids.get(c, tgt_unk) for c in r.hypotheses[0]] + [2]
        assert logits.shape[0] == len(ids) and logits.argmax(-1).tolist() == ids, i
        mine = [logp[k, t].item() for k, t in enumerate(ids)]
        assert abs(sum(mine) / len(mine) - r.scores[0]) < 1e-5, (i, sum(mine) / len(mine), r.scores[0])
        sb = scored[i].log_probs
        assert max(abs(a - b) for a, b in zip(mine[1:], sb[1:])) < 1e-5, i
        step0_diff.append(mine[0] - sb[0])

    def src_to_ids(src):
        return [src_ids.get(c, src_unk) for c in src]

    def tgt_to_ids(tgt):
        return [tgt_ids.get(c, tgt_unk) for c in tgt]

    meta = {
        "model": name,
        "model_dir": "shared/models/aren-transliteration-ct2 (model.bin + vocabularies only)",
        "ctranslate2_version": ctranslate2.__version__,
        "translator_options": opts,
        "translate_options": {**common, "beam_size": "1 for greedy, 4 for beam"},
        "score_options": {"max_batch_size": 0, "max_input_length": 1024, "offset": 0},
        "notes": [
            "No <s> or </s> is added to the source; the decoder starts with <s> (1) and stops at </s> (2).",
            "Tokens are single characters; ids are line numbers of the vocabulary files; <unk> is the extra last id "
            "(source 50, target 42).",
            "scores: sum of token log-probs including </s>, divided by (number of tokens + 1) ** length_penalty, "
            "for greedy (beam_size 1) as well as for beam 4.",
            "score_batch log_probs: one per target token plus one for </s> (teacher-forced), from the plain "
            "log-softmax: no </s> ban at step 0, so the first log-prob differs from translate's (see step0_diff).",
            "greedy*_step_logits: [steps, 43] per source, steps = tokens + </s>: translate's processed logits "
            "(return_logits_vocab); translate's greedy score = mean of log_softmax(these)[chosen token].",
            "batch-vs-single: each source alone gives the same tokens; max |score diff| recorded below.",
        ],
        "sources": ["".join(s) for s in sources],
        "source_ids": [src_to_ids(s) for s in sources],
        "greedy": [{"tokens": r.hypotheses[0], "ids": tgt_to_ids(r.hypotheses[0]), "score": r.scores[0]}
                   for r in greedy],
        "beam4": [{"tokens": r.hypotheses[0], "ids": tgt_to_ids(r.hypotheses[0]), "score": r.scores[0]} for r in beam],
        "batch1_max_score_diff": max_diff,
        "step0_diff": step0_diff,
        "score_batch": [
            {"source_index": (i if i < len(sources) else AREN_EXTRA_TARGETS[i - len(sources)][0]),
             "target": "".join(t), "target_ids": tgt_to_ids(t), "tokens": r.tokens, "log_probs": r.log_probs}
            for i, (t, r) in enumerate(zip(score_targets, scored))
        ],
        "score_batch1_max_diff": score_diff,
        "target_vocabulary": tgt_toks + ["<unk>"],
    }
    save_reference(out, tensors, meta)
    print(name, [("".join(g["tokens"]), "".join(b["tokens"])) for g, b in zip(meta["greedy"], meta["beam4"])])


# ----------------------------------------------------------------------------------------------------------------------
# stories260k: HF LlamaForCausalLM on the converted checkpoint, checked against a NumPy pass over the original .bin

STORIES_PROMPTS = ["Once upon a time", "Lily went to the park", "The cat"]
# HF (f32, rotate_half layout) vs the float64 NumPy pass over stories260K.bin (interleaved RoPE): max |logit diff|.
STORIES_NUMPY_TOL = 1e-4


@torch.no_grad()
def greedy_with_cache(model, prompt: list[int], n_new: int):
    """Argmax decoding with the KV cache, no stop token: (new tokens, last-position logits before each choice)."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    past, logits = out.past_key_values, out.logits[0, -1]
    tokens, rows = [], []
    for _ in range(n_new):
        rows.append(logits.clone())
        t = int(logits.argmax())
        tokens.append(t)
        out = model(input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    return tokens, torch.stack(rows)


def stories260k():
    from transformers import LlamaForCausalLM

    name = "stories260k"
    out = FIXTURES / name
    clean_dir(out)
    mdir = SHARED / "stories260k"
    tok = llama2c.Llama2cTokenizer(mdir / "tok512.bin", 512)
    ref = llama2c.Llama2cModel(mdir / "stories260K.bin")
    # The .bin's own RoPE tables must be what run.c (and our NumPy pass) computes (they were made in f32: 2.3e-6).
    cos, sin = ref.rope_tables(ref.seq_len)
    assert np.abs(ref.freq_cis_real - cos).max() < 1e-5 and np.abs(ref.freq_cis_imag - sin).max() < 1e-5

    model = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    n_new = 64
    prompts = [[1]] + [tok.encode(p, bos=True, eos=False) for p in STORIES_PROMPTS]
    for p, text in zip(prompts[1:], STORIES_PROMPTS):
        assert tok.decode(p[1:]) == text, (tok.decode(p[1:]), text)
    tensors, runs, max_diff = {}, [], 0.0
    for i, p in enumerate(prompts):
        new, rows = greedy_with_cache(model, p, n_new)
        tensors[f"run{i}_step_logits"] = rows  # [64, 512]: row k is the logits that chose new[k]
        seq = p + new
        # one HF forward over the whole sequence must give the same rows
        full = model(input_ids=torch.tensor([seq[:-1]])).logits[0, len(p) - 1 :]
        assert (full - rows).abs().max().item() < 1e-4
        # independent NumPy forward over the original llama2.c file
        np_logits = ref.forward(seq[:-1])[len(p) - 1 :]
        diff = float(np.abs(np_logits - rows.double().numpy()).max())
        assert diff < STORIES_NUMPY_TOL, (i, diff)
        assert np_logits.argmax(-1).tolist() == new, i
        max_diff = max(max_diff, diff)
        runs.append({"prompt": "" if i == 0 else STORIES_PROMPTS[i - 1], "prompt_ids": p, "greedy_ids": new,
                     "text": tok.decode(new, prev=p[-1])})
    meta = {
        "model": name,
        "model_dir": "shared/models/stories260k (HF layout conversion: config.json + model.safetensors)",
        "notes": [
            "prompt_ids: llama2.c run.c encode(text, bos=1, eos=0) with tok512.bin (tools/scripts/llama2c.py); "
            "run 0 is BOS alone.",
            "greedy_ids: 64 argmax tokens with the KV cache and no stop token (run.c would stop at BOS=1).",
            "run{i}_step_logits [64, 512]: last-position logits before each choice (f32, HF).",
            "Checked: the same logits from one full HF forward (< 1e-4) and from an independent float64 NumPy pass "
            "over the original stories260K.bin with interleaved RoPE (max diff below).",
        ],
        "runs": runs,
        "numpy_vs_hf_max_abs_diff": max_diff,
        "numpy_vs_hf_tolerance": STORIES_NUMPY_TOL,
    }
    save_reference(out, tensors, meta)
    for r in runs:
        print(name, repr(r["prompt"]), r["prompt_ids"], repr(r["text"]))
    print(name, "numpy vs HF max abs diff", max_diff)


# ----------------------------------------------------------------------------------------------------------------------
# smollm2: HF transformers loading the Q4_1 GGUF (dequantised to f32) and its tokenizer

SMOLLM2_PROMPTS = [
    {"kind": "plain", "text": "The capital of France is"},
    {"kind": "plain", "text": "def fibonacci(n):\n"},
    {"kind": "plain", "text": "Le café coûte 3 € à Paris et"},
    {"kind": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
]
SMOLLM2_N_NEW = 64
SMOLLM2_N_TOPK_STEPS = 8  # steps 0..7 (step 0 = the prompt's last position) keep their top-k logits
SMOLLM2_TOPK = 256
SMOLLM2_FULL_STEPS = 2  # steps 0..1 keep the full 49152 logits (f32)


def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = "smollm2"
    out = FIXTURES / name
    clean_dir(out)
    gguf_path = SHARED / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    d, f = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    eos_ids = model.generation_config.eos_token_id
    eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]

    tensors, runs = {}, []
    for i, p in enumerate(SMOLLM2_PROMPTS):
        if p["kind"] == "chat":
            text = tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
        else:
            text = p["text"]
        ids = tok(text, add_special_tokens=True).input_ids
        new, rows = greedy_with_cache(model, ids, SMOLLM2_N_NEW)  # rows [64, 49152]
        with torch.no_grad():
            full = model(input_ids=torch.tensor([ids + new[:-1]])).logits[0, len(ids) - 1 :]
        cache_diff = (full - rows).abs().max().item()
        assert cache_diff < 1e-3, ("cached vs full forward", i, cache_diff)
        # HF generate (stops at EOS) must be a prefix of the no-stop run, EOS included.
        with torch.no_grad():
            g = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=SMOLLM2_N_NEW, do_sample=False, num_beams=1)
        gen = g[0, len(ids) :].tolist()
        assert new[: len(gen)] == gen, (i, gen, new)
        first_eos = next((k for k, t in enumerate(new) if t in eos_ids), None)
        assert len(gen) == (SMOLLM2_N_NEW if first_eos is None else first_eos + 1), (i, len(gen), first_eos)
        for k in range(SMOLLM2_FULL_STEPS):
            tensors[f"run{i}_step{k}_logits"] = rows[k]
        top = rows[:SMOLLM2_N_TOPK_STEPS].topk(SMOLLM2_TOPK, dim=-1)
        tensors[f"run{i}_topk_values"] = top.values  # [8, 256], descending
        tensors[f"run{i}_topk_ids"] = top.indices.to(torch.float32)  # ids < 2^24 are exact in f32
        runs.append({
            **p,
            "rendered": text,
            "prompt_ids": ids,
            "greedy_ids": new,
            "first_eos_index": first_eos,
            "generate_ids": gen,
            "greedy_text": tok.decode(new),
            "prompt_tokens": tok.convert_ids_to_tokens(ids),
        })
    meta = {
        "model": name,
        "gguf": "shared/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf",
        "load": "AutoModelForCausalLM/AutoTokenizer.from_pretrained(dir, gguf_file=name, dtype=torch.float32): "
                "transformers dequantises Q4_1/Q8_0 to f32 and un-permutes q/k to the HF rotate_half layout",
        "notes": [
            "prompt_ids: the GGUF tokenizer as transformers converts it, add_special_tokens=True (it adds no BOS: "
            "add_bos_token false); the chat prompt is the GGUF chat template rendered with add_generation_prompt=True "
            "(it inserts SmolLM's default system prompt).",
            "greedy_ids: 64 argmax tokens with the KV cache and no stop token; generate_ids: HF generate with the "
            "generation config (stops after the first EOS id, included); first_eos_index: where that is in greedy_ids.",
            "run{i}_step{k}_logits [49152]: full last-position logits for steps k < %d (step 0 = end of the prompt, "
            "step k = after k greedy tokens)." % SMOLLM2_FULL_STEPS,
            "run{i}_topk_values / run{i}_topk_ids [%d, %d]: the top-%d logits (descending) and their ids (stored as "
            "f32, exact) for steps 0..%d." % (SMOLLM2_N_TOPK_STEPS, SMOLLM2_TOPK, SMOLLM2_TOPK,
                                              SMOLLM2_N_TOPK_STEPS - 1),
        ],
        "eos_token_ids": eos_ids,
        "config_rms_norm_eps": model.config.rms_norm_eps,
        "runs": runs,
    }
    save_reference(out, tensors, meta)
    for r in runs:
        print(name, repr(r["rendered"][-40:]), len(r["prompt_ids"]), r["first_eos_index"], repr(r["greedy_text"][:120]))


# ----------------------------------------------------------------------------------------------------------------------


FIXTURE_FUNCS = {
    "marian-tiny": marian_tiny,
    "marian-base-shape": marian_base_shape,
    "llama-tiny-gqa": llama_tiny_gqa,
    "llama-tiny-tied": llama_tiny_tied,
    "gpt2-tiny": gpt2_tiny,
    "aren-ct2": aren_ct2,
    "stories260k": stories260k,
    "smollm2": smollm2,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="fixtures to make (default: all)")
    ap.add_argument("--list", action="store_true", help="list fixture names")
    args = ap.parse_args()
    if args.list:
        print("\n".join(FIXTURE_FUNCS))
        return
    names = args.names or list(FIXTURE_FUNCS)
    for n in names:
        if n not in FIXTURE_FUNCS:
            sys.exit(f"unknown fixture {n!r}; known: {', '.join(FIXTURE_FUNCS)}")
    for n in names:
        FIXTURE_FUNCS[n]()


if __name__ == "__main__":
    main()
