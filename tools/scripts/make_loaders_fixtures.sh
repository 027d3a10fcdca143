#!/usr/bin/env bash
# Regenerate tools/fixtures/loaders-* with the Python reference (transformers, torch, safetensors),
# in the venv of tools/scripts/venv.sh (${QKV_VENV:-$HOME/.cache/qkv/venv}).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
exec "$here/venv.sh" python "$here/make_loaders_fixtures.py" --root "$root" \
  --shared-models "${QKV_SHARED_MODELS:-$root/../shared/models}"
