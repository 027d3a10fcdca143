"""Reference beam searches of transformers `generate` on the marian-tiny fixture, for the search options the
main marian-tiny reference does not cover: early_stopping True / False / "never", length penalties other than 1,
num_return_sequences > 1, min_length, and other beam sizes. Output: tools/fixtures/marian-tiny-beam/reference.json.

Run:  tools/scripts/venv.sh python tools/scripts/make_beam_variants.py
Deterministic: the model and sources are those of tools/fixtures/marian-tiny (committed), no sampling.
"""

import json
import os
import platform
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"

torch.set_num_threads(1)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# (num_beams, early_stopping, length_penalty, num_return_sequences, min_length, max_new_tokens)
VARIANTS = [
    (4, False, 1.0, 1, 0, 20),
    (4, True, 1.0, 1, 0, 20),
    (4, "never", 1.0, 1, 0, 20),
    (4, False, 0.6, 1, 0, 20),
    (4, True, 2.0, 1, 0, 20),
    (4, "never", 2.0, 1, 0, 20),
    (4, "never", 0.0, 1, 0, 20),
    (4, False, -0.5, 1, 0, 20),
    (3, False, 1.0, 3, 0, 20),
    (5, True, 1.0, 2, 0, 12),
    (2, False, 1.0, 1, 8, 16),
    (4, False, 1.0, 4, 12, 14),
    (8, "never", 1.0, 3, 0, 9),
]


def main():
    from transformers import MarianMTModel

    src_dir = FIXTURES / "marian-tiny"
    ref = json.loads((src_dir / "reference.json").read_text())
    model = MarianMTModel.from_pretrained(src_dir, dtype=torch.float32)
    model.eval()
    eos, pad = ref["generate_options"]["eos_token_id"], ref["generate_options"]["pad_token_id"]
    ids = torch.tensor(ref["source_ids"])
    mask = torch.tensor(ref["source_attention_mask"])
    runs = []
    for nb, es, lp, nr, minl, mnt in VARIANTS:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, num_beams=nb, early_stopping=es,
                                 length_penalty=lp, num_return_sequences=nr, min_length=minl, max_new_tokens=mnt,
                                 do_sample=False, return_dict_in_generate=True, output_scores=True)
        seqs = []
        for s in out.sequences.tolist():
            toks = []
            for t in s[1:]:
                toks.append(t)
                if t == eos:
                    break
            while toks and toks[-1] == pad:
                toks.pop()
            seqs.append(toks)
        n = ids.shape[0]
        runs.append({
            "num_beams": nb, "early_stopping": es, "length_penalty": lp, "num_return_sequences": nr,
            "min_length": minl, "max_new_tokens": mnt,
            # per source, num_return_sequences hypotheses, best first
            "tokens": [seqs[i * nr:(i + 1) * nr] for i in range(n)],
            "scores": [out.sequences_scores.tolist()[i * nr:(i + 1) * nr] for i in range(n)],
        })
        print(nb, es, lp, nr, minl, mnt, [r[0] for r in runs[-1]["tokens"]][:1])
    import transformers
    meta = {
        "model": "marian-tiny (tools/fixtures/marian-tiny, its sources and generation_config.json)",
        "script": "tools/scripts/make_beam_variants.py",
        "runs": runs,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    out_dir = FIXTURES / "marian-tiny-beam"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
