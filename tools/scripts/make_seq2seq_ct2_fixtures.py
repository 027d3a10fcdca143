"""CTranslate2 references for the T5 and M2M100 (NLLB-shape) fixtures of tools/fixtures/seq2seq: the same
random-weight models converted by CTranslate2's `TransformersConverter`, then `translate_batch` greedy and beam 4.

Run:  tools/scripts/venv.sh python tools/scripts/make_seq2seq_ct2_fixtures.py [t5] [nllb]

The weights are those of tools/fixtures/seq2seq/NAME (rebuilt from its reference.json `hash_init` with
tools/scripts/hashinit.py, as engine/tests/seq2seq_ct2.rs rebuilds them); the converted model (model.bin, up to 1.2 GB) is
made in a temporary directory and not committed: only its outputs are (tools/fixtures/seq2seq-ct2/NAME/
reference.json). The fixture's word-level tokenizer.json (its words filled in: word_tokenizer.py) is handed to the converter as a `PreTrainedTokenizerFast`
with the family's special tokens (its `get_vocabulary` reads the ids in order, so CTranslate2's vocabulary is the
fixture's, id for id).

Options: CTranslate2's defaults except `max_decoding_length` (12, the target prefix included) and
`return_end_token=True` (so a hypothesis that ended is told from one cut at the limit); `num_hypotheses` = beam
size, so the order of all four hypotheses is compared. The multilingual model gets `target_prefix=[[target
language]]`, which is what transformers' `forced_bos_token_id` does (CTranslate2 scores the forced token 0 and
counts it in the length, as transformers does). Note CTranslate2's `min_decoding_length=1`: EOS is banned at the
first step and the first step's log-softmax is renormalised without it (transformers' beam scores differ by that).

Ties: the sources are the seq2seq fixture's, a source replaced by fresh draws of the same length until its
search is at least MIN_MARGIN per token from a tie. The margin of a beam search is measured with
tools/scripts/beam_margin.py's BeamRecorder on transformers' beam search run with CTranslate2's rules (min length 1,
renormalised, forced target language): both searches keep the same running beams (the best k candidates among
the top 2k that do not end) as long as both run, and transformers runs at least as long (its pool fills at the
step CTranslate2 has registered k hypotheses, and it may go on), so its step margins cover every decision of
CTranslate2's; the gaps between CTranslate2's returned scores are added. Greedy: the smallest top-2 gap of the
processed log-probs at each step.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hashinit  # noqa: E402
from beam_margin import BeamRecorder  # noqa: E402
from make_fixtures import FIXTURES, clean_dir, save_reference  # noqa: E402
import word_tokenizer  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SRC = FIXTURES / "seq2seq"
OUT = FIXTURES / "seq2seq-ct2"
NUM_BEAMS = 4
MAX_DECODING_LENGTH = 12
# Smallest per-token distance from a tie (beam_margin.py): the Rust test allows logits within 1e-4 of the reference
# (CTranslate2's log-probs are within 2e-6 of transformers' on these models), so each log-prob within 2e-4 and two
# candidates' per-token scores within 4e-4.
MIN_MARGIN = 4e-4
SPECIALS = {
    "t5": dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>"),
    "nllb": dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"),
}


def build_hf_dir(name: str, out: Path):
    """The seq2seq fixture's model directory with its weights rebuilt from hash_init."""
    from safetensors.torch import save_file

    for f in ("config.json", "generation_config.json"):
        shutil.copy(SRC / name / f, out / f)
    vocab_size = json.loads((SRC / name / "config.json").read_text())["vocab_size"]
    word_tokenizer.fill(SRC / name / "tokenizer.json", vocab_size, out / "tokenizer.json")
    meta = json.loads((SRC / name / "reference.json").read_text())
    state = {t["name"]: torch.from_numpy(hashinit.hash_tensor(t["name"], t["shape"], t["scale"], t["offset"]))
             for t in meta["hash_init"]}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return meta


def convert(name: str, hf_dir: Path, ct2_dir: Path, langs):
    from ctranslate2.converters import TransformersConverter
    from transformers import PreTrainedTokenizerFast

    specials = dict(SPECIALS[name])
    if langs:
        specials["additional_special_tokens"] = langs

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return PreTrainedTokenizerFast(tokenizer_file=str(Path(model_name_or_path) / "tokenizer.json"),
                                           **specials)

    Converter(str(hf_dir)).convert(str(ct2_dir), quantization="float32", force=True)
    return json.loads((ct2_dir / "shared_vocabulary.json").read_text())


@torch.no_grad()
def margins(model, src, forced_bos, eos):
    """(beam margin steps recorder, greedy margin) of transformers' searches run with CTranslate2's rules."""
    ids = torch.tensor([src])
    common = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, return_dict_in_generate=True,
                  min_new_tokens=1, renormalize_logits=True, max_new_tokens=MAX_DECODING_LENGTH,
                  forced_bos_token_id=forced_bos, length_penalty=1.0, early_stopping=False,
                  no_repeat_ngram_size=0, forced_eos_token_id=None)
    rec = BeamRecorder(NUM_BEAMS, [eos])
    model.generate(**common, num_beams=NUM_BEAMS, num_return_sequences=NUM_BEAMS, output_scores=True,
                   logits_processor=[rec])
    g = model.generate(**common, num_beams=1, output_scores=True)
    gaps = []
    for s in g.scores:
        top2 = s[0].topk(2).values
        if torch.isfinite(top2[1]):
            gaps.append(float(top2[0] - top2[1]))
    return rec, min(gaps) if gaps else float("inf")


def make(name: str):
    import ctranslate2
    from transformers import AutoModelForSeq2SeqLM

    out = OUT / name
    clean_dir(out)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, ct2_dir = Path(tmp) / "hf", Path(tmp) / "ct2"
        hf_dir.mkdir()
        meta = build_hf_dir(name, hf_dir)
        langs = [meta["source_lang"], meta["target_lang"]] if meta["target_lang"] else []
        vocab = convert(name, hf_dir, ct2_dir, ["eng_Latn", "fra_Latn", "deu_Latn"] if langs else [])
        ct2_config = json.loads((ct2_dir / "config.json").read_text())
        model = AutoModelForSeq2SeqLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        eos = model.generation_config.eos_token_id
        forced_bos = meta["forced_bos_token_id"] if langs else None
        target_prefix = [meta["target_lang"]] if langs else None
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type="float32", inter_threads=1,
                                            intra_threads=1)
        opts = dict(max_decoding_length=MAX_DECODING_LENGTH, return_scores=True, return_end_token=True)

        def translate(srcs, beam):
            prefix = [target_prefix] * len(srcs) if target_prefix else None
            return translator.translate_batch([[vocab[i] for i in s] for s in srcs], target_prefix=prefix,
                                              beam_size=beam, num_hypotheses=beam, **opts)

        rng = np.random.default_rng(1717)  # not 17: the seq2seq fixture drew its sources from that
        word_ids = [i for i, t in enumerate(vocab) if t.startswith("w")]  # not a special or language token
        sources, beam_margins, greedy_margins, redraws = [], [], [], 0
        for src in meta["sources"]:
            while True:
                rec, greedy_margin = margins(model, src, forced_bos, eos)
                r = translate([src], NUM_BEAMS)[0]
                beam_margin = rec.margin(r.scores)
                if min(beam_margin, greedy_margin) >= MIN_MARGIN:
                    break
                redraws += 1
                assert redraws < 200, (name, "no source clear of ties")
                words = [int(x) for x in rng.choice(word_ids, size=len(src) - 1 - len(langs[:1]))]
                src = ([meta["sources"][0][0]] if langs else []) + words + [eos]
            sources.append(src)
            beam_margins.append(beam_margin)
            greedy_margins.append(greedy_margin)
        index = {t: i for i, t in enumerate(vocab)}
        runs = {}
        for beam in (1, NUM_BEAMS):
            # one batch (CTranslate2 pads the sources), as the Rust test runs them
            res = translate(sources, beam)
            runs[f"beam{beam}"] = {
                "beam_size": beam,
                "hypotheses": [[[index[t] for t in h] for h in r.hypotheses] for r in res],
                "scores": [[float(s) for s in r.scores] for r in res],
            }
            one = [translate([s], beam)[0] for s in sources]
            assert [r.hypotheses for r in one] == [r.hypotheses for r in res], (name, beam, "batched != one by one")
    meta_out = {
        "model": name,
        "weights": f"tools/fixtures/seq2seq/{name} (hash_init of its reference.json)",
        "converter": "ctranslate2.converters.TransformersConverter, quantization float32",
        "ctranslate2_config": ct2_config,
        "ctranslate2_version": ctranslate2.__version__,
        "translator_options": {"device": "cpu", "compute_type": "float32", "inter_threads": 1, "intra_threads": 1},
        "translate_options": {"max_decoding_length": MAX_DECODING_LENGTH, "min_decoding_length": 1,
                              "length_penalty": 1.0, "patience": 1.0, "return_end_token": True,
                              "num_hypotheses": "beam_size", "target_prefix": target_prefix},
        "target_prefix_ids": [index[t] for t in target_prefix] if target_prefix else None,
        "sources": sources,
        "redraws": redraws,
        "min_margin": {"beam": beam_margins, "greedy": greedy_margins, "required": MIN_MARGIN},
        "runs": runs,
    }
    save_reference(out, {}, meta_out)
    print(name, "sources", sources, "beam margins", [f"{m:.3g}" for m in beam_margins], "greedy margins",
          [f"{m:.3g}" for m in greedy_margins], "redraws", redraws)
    for k, v in runs.items():
        print(" ", k, [h[0] for h in v["hypotheses"]], [s[0] for s in v["scores"]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    for n in a.names or list(SPECIALS):
        make(n)


if __name__ == "__main__":
    main()
