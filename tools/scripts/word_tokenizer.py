"""Word-level tokenizer.json files for the random-weight fixtures with published vocabularies (150k-256k ids).

A fixture commits a template: a `tokenizers` WordLevel tokenizer.json naming only the family's special (and
language) tokens at their published ids. Every other id of the vocabulary is the word `w<id>`, filled in by
`fill` here and by engine/tests/hash_weights/mod.rs (`fill_word_tokenizer`) from the fixture's reference.json
`tokenizer_words` ({prefix, vocab_size}), so the 250k-word file is never committed. Words are split on
whitespace and joined by spaces on decode.
"""

import json
from pathlib import Path

WORD_PREFIX = "w"


def write_template(path: Path, specials: dict, unk: str = "<unk>", prefix: str = None, suffix: str = None):
    """The template: `specials` (token -> id) as the vocabulary and as special added tokens; the post-processor
    puts `prefix` before and `suffix` after a sequence (either may be None)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(dict(specials), unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    parts = [t for t in (prefix, "$A", suffix) if t]
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(parts), special_tokens=[(t, specials[t]) for t in (prefix, suffix) if t])
    tok.add_special_tokens(sorted(specials, key=specials.get))
    tok.save(str(path))


def fill(template: Path, vocab_size: int, out: Path):
    """The template with every id of the vocabulary it does not name given the word `w<id>`."""
    t = json.loads(template.read_text())
    vocab = t["model"]["vocab"]
    used = set(vocab.values())
    vocab.update({f"{WORD_PREFIX}{i}": i for i in range(vocab_size) if i not in used})
    out.write_text(json.dumps(t, ensure_ascii=False))


def words_spec(vocab_size: int) -> dict:
    """reference.json `tokenizer_words`."""
    return {"prefix": WORD_PREFIX, "vocab_size": vocab_size,
            "fill": "every id tokenizer.json does not name is the word prefix + id"}
