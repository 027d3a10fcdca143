"""Reference searches of CTranslate2 `translate_batch` on the shared aren-transliteration-ct2 model for options the
main aren-ct2 reference does not cover: beam sizes 2/3/8, num_hypotheses > 1, length_penalty 0 (CT2's early-exit
path) and other values, patience, min/max decoding length (hypotheses cut at the last step).
Output: tools/fixtures/aren-ct2-beam/reference.json.

Run:  tools/scripts/venv.sh python tools/scripts/make_ct2_beam_variants.py
Deterministic (no sampling, one thread). Sources: the names of tools/fixtures/aren-ct2/reference.json.
"""

import json
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "tools" / "fixtures"
SHARED = Path(os.environ.get("QKV_SHARED_MODELS", REPO.parent / "shared" / "models"))

# (beam_size, num_hypotheses, length_penalty, patience, min_decoding_length, max_decoding_length)
VARIANTS = [
    (2, 1, 1.0, 1.0, 1, 256),
    (3, 3, 1.0, 1.0, 1, 256),
    (8, 4, 1.0, 1.0, 1, 256),
    (4, 2, 0.0, 1.0, 1, 256),
    (4, 1, 0.5, 1.0, 1, 256),
    (4, 3, 2.0, 1.0, 1, 256),
    (4, 2, 1.0, 2.0, 1, 256),
    (4, 2, 1.0, 1.0, 6, 256),
    (4, 4, 1.0, 1.0, 1, 4),
    (1, 1, 1.0, 1.0, 1, 3),
    (1, 1, 0.0, 1.0, 0, 256),
]


def main():
    import ctranslate2

    ref = json.loads((FIXTURES / "aren-ct2" / "reference.json").read_text())
    sources = [list(s) for s in ref["sources"]]
    model_dir = SHARED / "aren-transliteration-ct2"
    tgt = (model_dir / "target_vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if tgt and tgt[-1] == "":
        tgt.pop()
    ids = {t: i for i, t in enumerate(tgt)}
    unk = len(tgt)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("model.bin", "source_vocabulary.txt", "target_vocabulary.txt"):
            os.symlink(model_dir / f, os.path.join(tmp, f))
        tr = ctranslate2.Translator(tmp, device="cpu", compute_type="float32", inter_threads=1, intra_threads=1)
        for beam, nh, lp, pat, minl, maxl in VARIANTS:
            res = tr.translate_batch(sources, beam_size=beam, num_hypotheses=nh, length_penalty=lp, patience=pat,
                                     min_decoding_length=minl, max_decoding_length=maxl, return_scores=True,
                                     max_batch_size=0, max_input_length=1024)
            runs.append({
                "beam_size": beam, "num_hypotheses": nh, "length_penalty": lp, "patience": pat,
                "min_decoding_length": minl, "max_decoding_length": maxl,
                # per source: hypotheses (target ids, without </s>), best first, and their scores
                "ids": [[[ids.get(c, unk) for c in h] for h in r.hypotheses] for r in res],
                "scores": [list(r.scores) for r in res],
            })
            print(beam, nh, lp, pat, minl, maxl, ["".join(h) for h in res[0].hypotheses])
    meta = {
        "model": "shared/models/aren-transliteration-ct2 (model.bin + vocabularies)",
        "script": "tools/scripts/make_ct2_beam_variants.py",
        "ctranslate2_version": ctranslate2.__version__,
        "runs": runs,
    }
    # one run per line
    body = ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in runs)
    head = json.dumps({k: v for k, v in meta.items() if k != "runs"}, ensure_ascii=False)[:-1]
    (FIXTURES / "aren-ct2-beam" / "reference.json").write_text(head + ', "runs": [\n  ' + body + "\n]}\n")


if __name__ == "__main__":
    main()
