"""Text in, text out on the encoder-decoder fixtures (tools/fixtures/seq2seq), through transformers' own tokenizers
and `generate`: the source and target languages of the multilingual ones (what `qkv translate --source-lang xx
--target-lang yy` must do), and T5's text-to-text prompts (what `qkv generate` on T5 must do).

Run:  tools/scripts/venv.sh python tools/scripts/make_seq2seq_text_fixtures.py [nllb] [mbart50] [t5]

For each fixture the word-level tokenizer.json is opened as the family's tokenizer class (`NllbTokenizerFast`,
`MBart50TokenizerFast`) with `src_lang` / `tgt_lang` set, which places the source language token as that class
does (`[src_lang] tokens </s>`); the target language's id is passed to `generate` as `forced_bos_token_id` (as
the model cards do). Recorded per case: the text, the languages, the tokenizer's input ids, and greedy and beam-4
`generate` outputs (the generation config's other rules: early stopping, forced EOS) as ids and as
`decode(skip_special_tokens=True)` text. The weights are the fixture's (hash_init, rebuilt as
make_seq2seq_ct2_fixtures.py does); texts are drawn until every search is at least MIN_MARGIN per token from a tie
(tools/scripts/beam_margin.py; greedy: the smallest top-2 gap of the processed scores).

T5: prompts "translate English to German: ..." and "summarize: ..." followed by fixture words, through
`PreTrainedTokenizerFast` on the fixture's tokenizer.json (its post-processor appends </s> as T5's tokenizer does;
the fixture's word-level vocabulary has no entry for the English words, which become <unk>, as words outside a
real vocabulary would), and greedy `generate(max_new_tokens=12)`.

Output: tools/fixtures/seq2seq-text/NAME/reference.json, checked by engine/tests/seq2seq_text.rs and
tools/tests/seq2seq_cli.rs.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from beam_margin import BeamRecorder  # noqa: E402
from make_fixtures import FIXTURES, clean_dir, save_reference  # noqa: E402
from make_seq2seq_ct2_fixtures import build_hf_dir  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

OUT = FIXTURES / "seq2seq-text"
MAX_NEW = 12
BEAMS = [1, 4]
TEXT_WORDS = [4, 9]
# As make_seq2seq_ct2_fixtures.py: logits within 1e-4 of transformers', so per-token scores within 4e-4.
MIN_MARGIN = 4e-4
CASES = {
    "nllb": {"class": "NllbTokenizerFast", "langs": ["eng_Latn", "fra_Latn", "deu_Latn"],
             "pairs": [("fra_Latn", "deu_Latn"), ("deu_Latn", "eng_Latn"), (None, "fra_Latn")]},
    "mbart50": {"class": "MBart50TokenizerFast", "langs": ["en_XX", "fr_XX", "de_DE"],
                "pairs": [("fr_XX", "de_DE"), ("de_DE", "en_XX"), (None, "fr_XX")]},
    "t5": {"class": "PreTrainedTokenizerFast", "prompts": ["translate English to German:", "summarize:"]},
}
T5_SPECIALS = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@torch.no_grad()
def run(model, enc, forced_bos, beams):
    """generate's best sequence (decoder start dropped, cut after EOS), its score and the search's margin."""
    eos = model.generation_config.eos_token_id
    common = dict(**enc, do_sample=False, return_dict_in_generate=True, output_scores=True,
                  max_new_tokens=MAX_NEW, forced_bos_token_id=forced_bos, num_beams=beams)
    if beams == 1:
        g = model.generate(**common)
        gaps = [float(t[0] - t[1]) for t in (s[0].topk(2).values for s in g.scores) if torch.isfinite(t[1])]
        margin, score = min(gaps) if gaps else float("inf"), None
    else:
        rec = BeamRecorder(beams, [eos])
        g = model.generate(**common, num_return_sequences=beams, logits_processor=[rec])
        margin, score = rec.margin(g.sequences_scores.tolist()), float(g.sequences_scores[0])
    seq = g.sequences[0, 1:].tolist()
    if eos in seq:
        seq = seq[: seq.index(eos) + 1]
    return seq, score, margin


def make(name: str):
    import transformers
    from transformers import AutoModelForSeq2SeqLM

    case = CASES[name]
    out = OUT / name
    clean_dir(out)
    tmp = tempfile.TemporaryDirectory()  # the weights stay until the end (they may be memory-mapped)
    build_hf_dir(name, Path(tmp.name))
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp.name, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cls = getattr(transformers, case["class"])
    tok_file = str(Path(tmp.name) / "tokenizer.json")  # the fixture's, its words filled in (build_hf_dir)
    vocab = json.loads(Path(tok_file).read_text())["model"]["vocab"]
    words = sorted(i for t, i in vocab.items() if t.startswith("w"))
    rng = np.random.default_rng(50)
    cases, redraws = [], 0
    for prompt in case.get("prompts", []):
        tok = cls(tokenizer_file=tok_file, **T5_SPECIALS)
        for n in TEXT_WORDS:
            while True:
                text = prompt + " " + " ".join(f"w{int(i)}" for i in rng.choice(words, size=n))
                enc = tok(text, return_tensors="pt")
                seq, _, margin = run(model, enc, None, 1)
                if margin >= MIN_MARGIN:
                    break
                redraws += 1
                assert redraws < 200, (name, "no prompt clear of ties")
            cases.append({"prompt": text, "input_ids": enc["input_ids"][0].tolist(),
                          "greedy": {"tokens": seq, "text": tok.decode(seq, skip_special_tokens=True),
                                     "min_margin": margin}})
    for src_lang, tgt_lang in case.get("pairs", []):
        kw = {"src_lang": src_lang} if src_lang else {}
        tok = cls(tokenizer_file=tok_file, tgt_lang=tgt_lang,
                  additional_special_tokens=case["langs"], **kw)
        forced = tok.convert_tokens_to_ids(tgt_lang)
        for n in TEXT_WORDS:
            while True:
                text = " ".join(f"w{int(i)}" for i in rng.choice(words, size=n))
                enc = tok(text, return_tensors="pt")
                results = {b: run(model, enc, forced, b) for b in BEAMS}
                if min(r[2] for r in results.values()) >= MIN_MARGIN:
                    break
                redraws += 1
                assert redraws < 200, (name, "no text clear of ties")
            cases.append({
                "text": text, "source_lang": src_lang, "target_lang": tgt_lang,
                "input_ids": enc["input_ids"][0].tolist(), "forced_bos_token_id": forced,
                "outputs": [{"num_beams": b, "tokens": r[0], "text": tok.decode(r[0], skip_special_tokens=True),
                             "score": r[1], "min_margin": r[2]} for b, r in results.items()],
            })
    meta_out = {
        "model": name,
        "weights": f"tools/fixtures/seq2seq/{name} (hash_init of its reference.json)",
        "tokenizer_class": case["class"],
        "max_new_tokens": MAX_NEW,
        "min_margin_required": MIN_MARGIN,
        "redraws": redraws,
        "cases": cases,
    }
    save_reference(out, {}, meta_out)
    tmp.cleanup()
    for c in cases:
        print(name, c.get("source_lang"), "->", c.get("target_lang"), c["input_ids"],
              [o["tokens"] for o in c.get("outputs", [c.get("greedy")])])


def main():
    for n in sys.argv[1:] or list(CASES):
        make(n)


if __name__ == "__main__":
    main()
