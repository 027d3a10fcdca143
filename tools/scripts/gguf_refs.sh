#!/usr/bin/env bash
# Regenerate the GGUF reference fixtures (tools/fixtures/gguf/) with the Python reference implementations.
#   tools/scripts/gguf_refs.sh blocks|corpus|model|spm|compare OUT_DIR
# Uses the venv at ${QKV_VENV:-$HOME/.cache/qkv/venv}, created (and filled) if missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${QKV_VENV:-$HOME/.cache/qkv/venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# llama-cpp-python (blocks: llama.cpp's K-quant quantiser and Q8_K dequantiser) builds llama.cpp from source.
if ! "$venv/bin/python" -c "import gguf, transformers, torch, safetensors, tokenizers, numpy, llama_cpp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet torch transformers gguf safetensors tokenizers numpy llama-cpp-python
fi
export TQDM_DISABLE=1
exec "$venv/bin/python" "$here/gguf_refs.py" "$@"
