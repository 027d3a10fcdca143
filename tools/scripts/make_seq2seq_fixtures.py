"""Make the encoder-decoder family fixtures under tools/fixtures/seq2seq/ with Hugging Face transformers.

Run:  tools/scripts/venv.sh python tools/scripts/make_seq2seq_fixtures.py [NAME ...]   (no NAME = all; --list)

Each family starts from a real published config.json (written out below; the source model is named), made smaller
where only size changes (2 + 2 layers, a smaller feed-forward; T5's d_model) while keeping the published
vocabulary (its special and language ids), the published heads (count and width 64) and every mechanism the
family has (position kind, norm placement, embedding
norm and scale, gated FFN, bias buckets, the generation rules of its config: beams, length penalty, early
stopping, no-repeat n-grams, forced BOS / EOS). The weights are never committed: tools/scripts/hashinit.py's
formula makes them from the tensor names (reference.json `hash_init`), and the Rust test
(engine/tests/seq2seq_families.rs) rebuilds them bit-exactly. Committed per family: config.json,
generation_config.json, tokenizer.json (a word-level tokenizer holding the special and language tokens only: the
vocabulary's other ids are the words w<id>, filled in by word_tokenizer.py and by the Rust test, so the whole
250k-word file is never committed), reference.json (sources, greedy and beam-4 tokens and scores) and
reference.safetensors (for every greedy step of every source the 64 largest logits with their ids, the logits at
64 fixed probe ids and the row's log-sum-exp, as the decoder-only family fixtures keep them). See
tools/fixtures/seq2seq/README.md.
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
from make_family_fixtures import PROBES, summarize  # noqa: E402
from make_fixtures import FIXTURES, clean_dir, save_reference  # noqa: E402
import word_tokenizer as word_tokenizer_files  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

OUT = FIXTURES / "seq2seq"
GREEDY_NEW = 12
BEAM_NEW = 12
NUM_BEAMS = 4
SOURCE_LENS = [5, 11, 8]
# Language tokens of the multilingual fixtures at their published ids (NllbTokenizer's and MBart50Tokenizer's
# `lang_code_to_id`): source, other, target.
LANGS = {"nllb": {"eng_Latn": 256047, "fra_Latn": 256057, "deu_Latn": 256042},
         "mbart50": {"en_XX": 250004, "fr_XX": 250008, "de_DE": 250003}}

# Published configs (the source model in the key's comment); generation keys go to generation_config.json as
# save_pretrained moves them.
PUBLISHED = {
    # facebook/nllb-200-distilled-600M
    "nllb": {
        "activation_function": "relu", "architectures": ["M2M100ForConditionalGeneration"], "bos_token_id": 0,
        "d_model": 1024, "decoder_attention_heads": 16, "decoder_ffn_dim": 4096, "decoder_layers": 12,
        "decoder_start_token_id": 2, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096, "encoder_layers": 12,
        "eos_token_id": 2, "max_length": 200, "max_position_embeddings": 1024, "model_type": "m2m_100",
        "pad_token_id": 1, "scale_embedding": True, "tokenizer_class": "NllbTokenizer", "vocab_size": 256206,
    },
    # facebook/bart-base
    "bart": {
        "activation_function": "gelu", "add_final_layer_norm": False, "architectures": ["BartModel"],
        "bos_token_id": 0, "d_model": 768, "decoder_attention_heads": 12, "decoder_ffn_dim": 3072,
        "decoder_layers": 6, "decoder_start_token_id": 2, "early_stopping": True, "encoder_attention_heads": 12,
        "encoder_ffn_dim": 3072, "encoder_layers": 6, "eos_token_id": 2, "forced_bos_token_id": 0,
        "forced_eos_token_id": 2, "max_position_embeddings": 1024, "model_type": "bart",
        "no_repeat_ngram_size": 3, "normalize_before": False, "num_beams": 4, "pad_token_id": 1,
        "scale_embedding": False, "vocab_size": 50265,
    },
    # facebook/mbart-large-50-many-to-many-mmt
    "mbart50": {
        "activation_function": "relu", "add_final_layer_norm": True,
        "architectures": ["MBartForConditionalGeneration"], "bos_token_id": 0, "d_model": 1024,
        "decoder_attention_heads": 16, "decoder_ffn_dim": 4096, "decoder_layers": 12, "decoder_start_token_id": 2,
        "early_stopping": True, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096, "encoder_layers": 12,
        "eos_token_id": 2, "forced_eos_token_id": 2, "max_length": 200, "max_position_embeddings": 1024,
        "model_type": "mbart", "normalize_before": True, "num_beams": 5, "pad_token_id": 1,
        "scale_embedding": True, "vocab_size": 250054,
    },
    # google-t5/t5-small
    "t5": {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": 2048, "d_kv": 64, "d_model": 512,
        "decoder_start_token_id": 0, "eos_token_id": 1, "feed_forward_proj": "relu", "initializer_factor": 1.0,
        "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512, "num_heads": 8, "num_layers": 6,
        "pad_token_id": 0, "relative_attention_num_buckets": 32, "vocab_size": 32128,
    },
    # google/flan-t5-small
    "flan_t5": {
        "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64, "d_model": 512,
        "decoder_start_token_id": 0, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
        "num_decoder_layers": 8, "num_heads": 6, "num_layers": 8, "pad_token_id": 0,
        "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False, "vocab_size": 32128,
    },
}
GENERATION_KEYS = ["bos_token_id", "decoder_start_token_id", "eos_token_id", "pad_token_id", "max_length",
                   "num_beams", "early_stopping", "forced_bos_token_id", "forced_eos_token_id",
                   "no_repeat_ngram_size", "length_penalty"]

# The published heads (12 / 16 of 64: d_model is their width in BART and M2M100), 2 + 2 layers, ffn 512.
BART_SMALL = {"encoder_layers": 2, "decoder_layers": 2, "encoder_ffn_dim": 512, "decoder_ffn_dim": 512}
SMALLER = {
    "nllb": BART_SMALL,
    "bart": BART_SMALL,
    "mbart50": BART_SMALL,
    # 8 heads of 64 over d_model 256: the attention width (512) is not d_model
    "t5": {"d_model": 256, "d_ff": 512, "num_layers": 2},
    "flan_t5": {"d_model": 256, "d_ff": 512, "num_layers": 2, "num_decoder_layers": 2},
}


def hash_rule(name: str, shape, family: str, d: int):
    """(scale, offset) of the uniform hash-init of a tensor: matrices uniform in +-gain * sqrt(3 / in_dim); `d` is
    d_model."""
    if "relative_attention_bias" in name:
        return 1.0, 0.0
    if "norm" in name and name.endswith("weight"):
        return 0.1, 1.0
    if name.endswith("bias"):
        return 0.1, 0.0
    if "embed_positions" in name:
        return float(np.sqrt(3.0 / d)), 0.0
    if name.endswith("shared.weight") or name.endswith("embed_tokens.weight"):
        # Small beside the block outputs (gain 2 below), else a random model copies its input token through a
        # tied head; logits std ~1.5 (T5's head sees d^-0.5 * norm(x); the others a normed x, with embeddings
        # scaled by sqrt(d) or normed at the input)
        if family == "t5":
            return 0.5 * float(np.sqrt(3.0)), 0.0
        if family == "flan_t5":
            # untied in the config, but transformers 5 saves no lm_head for this model and ties it unscaled on load
            return 1.5 * float(np.sqrt(3.0 / d)), 0.0
        return 0.6 * float(np.sqrt(3.0 / d)), 0.0
    if name.endswith("lm_head.weight"):
        return 3.0 * float(np.sqrt(3.0 / shape[1])), 0.0
    gain = 1.0
    t5 = family in ("t5", "flan_t5")
    if any(name.endswith(s) for s in ("q.weight", "k.weight", "q_proj.weight", "k_proj.weight")):
        gain = 0.7 if t5 else 2.0  # T5's scores are unscaled: its q and k are softer
    elif any(name.endswith(s) for s in ("fc1.weight", "wi.weight", "wi_0.weight", "wi_1.weight")):
        gain = 1.5
    elif any(name.endswith(s) for s in ("o.weight", "out_proj.weight", "fc2.weight", "wo.weight")):
        gain = 2.0
    return gain * float(np.sqrt(3.0 / shape[1])), 0.0


def fixture_config(name: str):
    c = dict(PUBLISHED[name])
    c.update(SMALLER[name])
    c["torch_dtype"] = "float32"
    gen = {k: c.pop(k) for k in GENERATION_KEYS if k in c and k not in ("bos_token_id", "decoder_start_token_id",
                                                                          "eos_token_id", "pad_token_id")}
    for k in ("bos_token_id", "decoder_start_token_id", "eos_token_id", "pad_token_id"):
        if k in c:
            gen[k] = c[k]
    return c, gen


def word_tokenizer(path: Path, family: str):
    """The committed word-level tokenizer.json: the family's special tokens and language tokens (the multilingual
    ones) at their published ids, and nothing else (word_tokenizer.py `fill` adds the words); the post-processor appends
    </s> (and NLLB / mBART-50 put their default source language first, as the real ones do). Returns its
    vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders

    t5 = family in ("t5", "flan_t5")
    specials = ["<pad>", "</s>", "<unk>"] if t5 else ["<s>", "<pad>", "</s>", "<unk>"]
    langs = list(LANGS.get(family, {}))
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update(LANGS.get(family, {}))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    eos = "</s>"
    single = f"{langs[0]} $A {eos}" if langs else f"$A {eos}"
    special_ids = [(s, vocab[s]) for s in ([langs[0]] if langs else []) + [eos]]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=special_ids)
    tok.add_special_tokens(specials + langs)
    tok.save(str(path))
    return vocab


@torch.no_grad()
def make(name: str):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    out = OUT / name
    clean_dir(out)
    cfg_json, gen_json = fixture_config(name)
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    (out / "generation_config.json").write_text(json.dumps(gen_json, indent=2, sort_keys=True) + "\n")
    special = word_tokenizer(out / "tokenizer.json", name)
    config = AutoConfig.from_pretrained(out)
    vocab_size = config.vocab_size
    model = AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model, table = hashinit.rehash_model(model, AutoModelForSeq2SeqLM,
                                         lambda t, shape: hash_rule(t, shape, name, config.d_model))
    gen = GenerationConfig.from_pretrained(out)
    model.generation_config = gen

    eos = gen_json["eos_token_id"]
    langs = list(LANGS.get(name, {}))
    taken = set(special.values())
    rng = np.random.default_rng(17)
    sources = []
    for n in SOURCE_LENS:
        words = []
        while len(words) < n - 1:
            w = int(rng.integers(0, vocab_size))
            if w not in taken:
                words.append(w)
        src = ([special[langs[1]]] if langs else []) + words + [eos]
        sources.append(src)
    # target language of the multilingual ones: forced as the first generated token
    forced_bos = special[langs[2]] if langs else gen_json.get("forced_bos_token_id")
    probes = torch.from_numpy(np.sort(np.random.default_rng(18).choice(vocab_size, PROBES, replace=False)))
    extra = {"forced_bos_token_id": forced_bos} if langs else {}
    tensors, greedy, beams, beam_scores, margins = {}, [], [], [], []
    for i, src in enumerate(sources):
        ids = torch.tensor([src])
        common = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                      return_dict_in_generate=True, **extra)
        g = model.generate(**common, max_new_tokens=GREEDY_NEW, num_beams=1, output_logits=True)
        toks = g.sequences[0, 1:].tolist()
        if eos in toks:
            toks = toks[: toks.index(eos) + 1]
        logits = torch.stack(g.logits)[: len(toks), 0]  # [steps, vocab]
        tensors.update(summarize(f"greedy_{i}", logits, probes))
        top2 = logits.topk(2, dim=-1).values
        margins.append(float((top2[:, 0] - top2[:, 1]).min()))
        greedy.append(toks)
        b = model.generate(**common, max_new_tokens=BEAM_NEW, num_beams=NUM_BEAMS, output_scores=True)
        seq = b.sequences[0, 1:].tolist()
        if eos in seq:
            seq = seq[: seq.index(eos) + 1]  # HF pads a beam that ended before the others
        beams.append(seq)
        beam_scores.append(float(b.sequences_scores[0]))
    # batched with padding = one by one (a check of the reference itself)
    width = max(len(s) for s in sources)
    pad = gen_json["pad_token_id"]
    batch = torch.tensor([s + [pad] * (width - len(s)) for s in sources])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sources])
    gb = model.generate(input_ids=batch, attention_mask=mask, do_sample=False, max_new_tokens=GREEDY_NEW,
                        num_beams=1, **extra)
    for i, toks in enumerate(greedy):
        assert gb[i, 1:1 + len(toks)].tolist() == toks, ("batched greedy differs", i)
    meta = {
        "model": name,
        "published": PUBLISHED[name].get("architectures"),
        "changed": SMALLER[name],
        "weights": "not committed: hash_init lists every tensor (tools/scripts/hashinit.py)",
        "hash_init": table,
        "tokenizer_words": word_tokenizer_files.words_spec(vocab_size),
        "sources": sources,
        "source_lang": langs[1] if langs else None,
        "target_lang": langs[2] if langs else None,
        "forced_bos_token_id": forced_bos,
        "greedy_max_new_tokens": GREEDY_NEW,
        "greedy_tokens": greedy,
        "greedy_min_top2_margin": min(margins),
        "beam": {"num_beams": NUM_BEAMS, "max_new_tokens": BEAM_NEW, "sequences": beams, "scores": beam_scores,
                 "generation_config": gen_json},
    }
    if name in ("t5", "flan_t5"):
        from transformers.models.t5.modeling_t5 import T5Attention

        rel = torch.arange(-300, 301)
        meta["relative_buckets"] = {
            "relative_positions": [-300, 300],
            "bidirectional": T5Attention._relative_position_bucket(rel, True, 32, 128).tolist(),
            "causal": T5Attention._relative_position_bucket(rel, False, 32, 128).tolist(),
        }
    save_reference(out, tensors, meta)
    print(name, "greedy", greedy, "margin", f"{min(margins):.3g}", "beam", beams, beam_scores)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        print(" ".join(PUBLISHED))
        return
    for n in a.names or list(PUBLISHED):
        make(n)


if __name__ == "__main__":
    main()
