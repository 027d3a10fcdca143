#!/usr/bin/env bash
# Regenerate tools/fixtures/loaders-* with the Python reference (transformers, torch, safetensors).
# Usage: tools/scripts/make_loaders_fixtures.sh   (uses/creates ${QKV_VENV:-$HOME/.cache/qkv/venv})
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${QKV_VENV:-$HOME/.cache/qkv/venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
  "$venv/bin/pip" install --quiet torch transformers safetensors numpy
fi
"$venv/bin/python" "$here/make_loaders_fixtures.py" --root "$root" \
  --shared-models "${QKV_SHARED_MODELS:-$root/../shared/models}"
