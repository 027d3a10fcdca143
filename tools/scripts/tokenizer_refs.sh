#!/usr/bin/env bash
# Regenerates the tokenizer test fixtures in tools/fixtures/tokenizers/:
#   corpus.json (tokenizer_corpus.py, standard library only) and the reference ids (tokenizer_refs.py, which
#   runs Python transformers.MarianTokenizer / sentencepiece / tokenizers on the shared models).
# Usage: tools/scripts/tokenizer_refs.sh [shared_models_dir]   (default: $QKV_SHARED_MODELS or ../shared/models)
# The venv comes from tools/scripts/venv.sh (${QKV_VENV:-$HOME/.cache/qkv/venv}).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
shared="${1:-${QKV_SHARED_MODELS:-$root/../shared/models}}"
"$here/venv.sh" python "$here/tokenizer_corpus.py"
"$here/venv.sh" python "$here/tokenizer_refs.py" "$shared"
