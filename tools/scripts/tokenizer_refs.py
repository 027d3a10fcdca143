#!/usr/bin/env python3
"""Reference token ids for the Rust tokenizer tests (loaders/tests/tokenizer_*.rs).

Reads tools/fixtures/tokenizers/corpus.json and writes, next to it:
- marian_opus_mt_tc_big_en_pt.json: Python `transformers.MarianTokenizer` (sentencepiece library) on
  ../shared/models/opus-mt-tc-big-en-pt-tokenizer: source ids, target ids, their decodes, and decodes of
  random id sequences (also with separate_vocabs=True, which decodes with target.spm).
- llama2c_tok512.json: an independent Python implementation of llama2.c run.c encode/decode written from
  ../shared/models/stories260k/SOURCE.md, on tok512.bin.
- smollm2_gguf.json: transformers' own GGUF tokenizer conversion (AutoTokenizer.from_pretrained(dir,
  gguf_file=...)) of ../shared/models/smollm2-135m-instruct-q4_1: ids and decodes, for the tokenizer.json that
  loaders::gguf writes.
- hf_bpe/ and hf_unigram/: small tokenizer.json files trained here with the Python `tokenizers` library,
  with tokenizer_config.json, and reference ids (Python `tokenizers`) and decodes (transformers
  PreTrainedTokenizerFast, which applies clean_up_tokenization_spaces the HF way). The Unigram trainer is not
  deterministic, so hf_unigram/tokenizer.json changes on each run; it is always written with its reference.

Run through tools/scripts/tokenizer_refs.sh (it sets up the venv). Arguments: [shared_models_dir].
"""

import json
import random
import struct
import sys
import warnings
from pathlib import Path

import transformers
import sentencepiece
import tokenizers

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tools" / "fixtures" / "tokenizers"
SHARED = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "models"


def dump(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def versions():
    return {
        "transformers": transformers.__version__,
        "sentencepiece": sentencepiece.__version__,
        "tokenizers": tokenizers.__version__,
    }


def marian(corpus):
    from transformers import MarianTokenizer

    d = SHARED / "opus-mt-tc-big-en-pt-tokenizer"
    tok = MarianTokenizer.from_pretrained(str(d))
    sep = MarianTokenizer(
        source_spm=str(d / "source.spm"),
        target_spm=str(d / "target.spm"),
        vocab=str(d / "vocab.json"),
        target_vocab_file=str(d / "vocab.json"),
        separate_vocabs=True,
    )
    src_ids = [tok(s)["input_ids"] for s in corpus]
    tgt_ids = [tok(text_target=s)["input_ids"] for s in corpus]
    rng = random.Random(7)
    n_vocab = len(tok.encoder)
    specials = [tok.eos_token_id, tok.unk_token_id, tok.pad_token_id, tok.encoder["<s>"]]
    random_ids = []
    for _ in range(300):
        n = rng.randrange(0, 25)
        ids = []
        for _ in range(n):
            r = rng.random()
            if r < 0.1:
                ids.append(rng.choice(specials))
            elif r < 0.2:
                ids.append(tok.encoder["▁"])
            else:
                ids.append(rng.randrange(n_vocab))
        random_ids.append(ids)
    out = {
        "source": "Python transformers.MarianTokenizer on opus-mt-tc-big-en-pt-tokenizer",
        "versions": versions(),
        "source_ids": src_ids,
        "source_decode": [tok.decode(i) for i in src_ids],
        "source_decode_skip": [tok.decode(i, skip_special_tokens=True) for i in src_ids],
        "target_ids": tgt_ids,
        "target_decode": [tok.decode(i) for i in tgt_ids],
        "target_decode_skip": [tok.decode(i, skip_special_tokens=True) for i in tgt_ids],
        "random_ids": random_ids,
        "random_decode": [tok.decode(i) for i in random_ids],
        "random_decode_skip": [tok.decode(i, skip_special_tokens=True) for i in random_ids],
        "separate_vocabs_target_decode_skip": [sep.decode(i, skip_special_tokens=True) for i in tgt_ids],
        "separate_vocabs_random_decode": [sep.decode(i) for i in random_ids],
    }
    dump(FIX / "marian_opus_mt_tc_big_en_pt.json", out)


# ---- llama2.c tokenizer, written from the format description (independent of the Rust code) ----

def read_llama2c(path):
    data = path.read_bytes()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off = 4
    pieces, scores = [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n])
        off += n
        scores.append(score)
    return max_len, pieces, scores


def llama2c_encode(text, pieces, scores, bos=True):
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    ids = [1] if bos else []
    if text:
        ids.append(lookup[b" "])  # dummy prefix
    # one id per code point, else its UTF-8 bytes as byte tokens (id = byte + 3)
    for ch in text:
        b = ch.encode("utf-8")
        if b in lookup:
            ids.append(lookup[b])
        else:
            ids.extend(x + 3 for x in b)
    # greedily merge the adjacent pair whose concatenation is the highest-scoring piece
    while True:
        best = (-1e10, -1, -1)
        for i in range(len(ids) - 1):
            j = lookup.get(pieces[ids[i]] + pieces[ids[i + 1]])
            if j is not None and scores[j] > best[0]:
                best = (scores[j], j, i)
        if best[2] == -1:
            break
        _, j, i = best
        ids[i:i + 2] = [j]
    return ids


def llama2c_decode(ids, pieces, skip_special):
    out = b""
    prev = None
    for t in ids:
        p = pieces[t]
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        prev = t
        if skip_special and t in (0, 1, 2):
            continue
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        out += p
    return out.decode("utf-8", errors="replace")


def llama2c(corpus):
    path = SHARED / "stories260k" / "tok512.bin"
    _, pieces, scores = read_llama2c(path)
    # score comparisons as float32 like run.c
    ids = [llama2c_encode(s, pieces, scores) for s in corpus]
    rng = random.Random(11)
    random_ids = [[rng.randrange(len(pieces)) for _ in range(rng.randrange(0, 20))] for _ in range(300)]
    out = {
        "source": "independent Python implementation of llama2.c run.c encode/decode on stories260k/tok512.bin",
        "ids": ids,
        "decode": [llama2c_decode(i, pieces, False) for i in ids],
        "decode_skip": [llama2c_decode(i, pieces, True) for i in ids],
        "random_ids": random_ids,
        "random_decode": [llama2c_decode(i, pieces, False) for i in random_ids],
        "random_decode_skip": [llama2c_decode(i, pieces, True) for i in random_ids],
    }
    dump(FIX / "llama2c_tok512.json", out)


# ---- tokenizer.json: two small tokenizers trained here ----

def hf_tokenizer_json(corpus):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    train = [s for s in corpus if s.strip()]

    # Byte-level BPE (GPT-2 / Llama-3 / SmolLM style) with a BOS post-processor and chat tokens.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(train, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = bpe.token_to_id("<|im_start|>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", bos)])
    bpe_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "clean_up_tokenization_spaces": True,
        "chat_template": "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                         "{{ message['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    }

    # Unigram with Metaspace (SentencePiece style), clean_up_tokenization_spaces=True.
    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", "▁")])
    uni.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    uni.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    uni.train_from_iterator(train, trainers.UnigramTrainer(vocab_size=500, special_tokens=["<unk>", "</s>"],
                                                           unk_token="<unk>"))
    eos = uni.token_to_id("</s>")
    uni.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    uni_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "unk_token": "<unk>",
               "clean_up_tokenization_spaces": True}

    for name, tok, cfg in (("hf_bpe", bpe, bpe_cfg), ("hf_unigram", uni, uni_cfg)):
        d = FIX / name
        d.mkdir(parents=True, exist_ok=True)
        tok.save(str(d / "tokenizer.json"))
        (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        fast = PreTrainedTokenizerFast.from_pretrained(str(d))
        ids = [tok.encode(s).ids for s in corpus]
        rng = random.Random(5)
        n = tok.get_vocab_size()
        random_ids = [[rng.randrange(n) for _ in range(rng.randrange(0, 20))] for _ in range(200)]
        out = {
            "source": f"Python tokenizers encode; transformers PreTrainedTokenizerFast decode ({name}/tokenizer.json)",
            "versions": versions(),
            "ids": ids,
            "decode": [fast.decode(i) for i in ids],
            "decode_skip": [fast.decode(i, skip_special_tokens=True) for i in ids],
            "random_ids": random_ids,
            "random_decode": [fast.decode(i) for i in random_ids],
            "random_decode_skip": [fast.decode(i, skip_special_tokens=True) for i in random_ids],
        }
        dump(d / "reference.json", out)


def smollm2(corpus):
    from transformers import AutoTokenizer

    d = SHARED / "smollm2-135m-instruct-q4_1"
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    ids = [tok(s)["input_ids"] for s in corpus]
    rng = random.Random(13)
    random_ids = [[rng.randrange(len(tok)) for _ in range(rng.randrange(0, 20))] for _ in range(200)]
    out = {
        "source": "transformers AutoTokenizer.from_pretrained(smollm2-135m-instruct-q4_1, gguf_file=...)",
        "versions": versions(),
        "ids": ids,
        "decode_skip": [tok.decode(i, skip_special_tokens=True) for i in ids],
        "random_ids": random_ids,
        "random_decode": [tok.decode(i) for i in random_ids],
        "random_decode_skip": [tok.decode(i, skip_special_tokens=True) for i in random_ids],
    }
    dump(FIX / "smollm2_gguf.json", out)


def main():
    corpus = json.loads((FIX / "corpus.json").read_text(encoding="utf-8"))
    print(f"{len(corpus)} sentences; shared models at {SHARED}")
    marian(corpus)
    llama2c(corpus)
    smollm2(corpus)
    hf_tokenizer_json(corpus)


if __name__ == "__main__":
    main()
