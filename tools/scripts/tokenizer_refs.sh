#!/usr/bin/env bash
# Regenerates the tokenizer test fixtures in tools/fixtures/tokenizers/:
#   corpus.json (tokenizer_corpus.py, standard library only) and the reference ids (tokenizer_refs.py, which
#   runs Python transformers.MarianTokenizer / sentencepiece / tokenizers on the shared models).
# Usage: tools/scripts/tokenizer_refs.sh [shared_models_dir]   (default: ../shared/models beside the repo)
# The venv is ${QKV_VENV:-$HOME/.cache/qkv/venv}; it is created and given the packages it lacks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${QKV_VENV:-$HOME/.cache/qkv/venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import transformers, sentencepiece, tokenizers, google.protobuf" 2>/dev/null; then
    "$venv/bin/pip" install --quiet "transformers>=5" sentencepiece tokenizers protobuf
fi
shared="${1:-${QKV_SHARED_MODELS:-$root/../shared/models}}"
"$venv/bin/python" "$here/tokenizer_corpus.py"
"$venv/bin/python" "$here/tokenizer_refs.py" "$shared"
