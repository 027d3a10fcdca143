#!/usr/bin/env bash
# Create (or reuse) the Python venv used by the fixture scripts, then run the given command inside it.
#   tools/scripts/venv.sh python tools/scripts/make_fixtures.py --help
# The venv lives at ${QKV_VENV:-$HOME/.cache/qkv/venv}. Packages come from PyPI (CPU torch).
set -euo pipefail
VENV="${QKV_VENV:-$HOME/.cache/qkv/venv}"
# llama-cpp-python builds llama.cpp from source (tens of minutes on 2 cores): the K-quant fixtures use its
# quantiser (gguf_kquant_refs.py, ggml_ref.py) and peers.py its engine.
# openai: tools/scripts/openai_client_check.py (the official client against `qkv serve`); its httpx drives serve_bench.py.
PKGS=(torch transformers sentencepiece safetensors numpy ctranslate2 gguf accelerate tokenizers protobuf llama-cpp-python openai pytest)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# Install once; the marker holds the package list so a changed list re-installs.
MARKER="$VENV/.qkv-installed"
if [ ! -f "$MARKER" ] || [ "$(cat "$MARKER")" != "${PKGS[*]}" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # Optional: QKV_TORCH_INDEX=<a CPU-only torch wheel index> to avoid the large CUDA wheels of the default index.
    if [ -n "${QKV_TORCH_INDEX:-}" ]; then
        "$VENV/bin/python" -m pip install --quiet torch --index-url "$QKV_TORCH_INDEX"
    fi
    "$VENV/bin/python" -m pip install --quiet "${PKGS[@]}"
    echo "${PKGS[*]}" > "$MARKER"
fi
if [ "$#" -eq 0 ]; then
    echo "venv ready: $VENV"
    exit 0
fi
cmd="$1"
shift
if [ -x "$VENV/bin/$cmd" ]; then
    exec "$VENV/bin/$cmd" "$@"
fi
export PATH="$VENV/bin:$PATH"
exec "$cmd" "$@"
