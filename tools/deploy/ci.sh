#!/usr/bin/env bash
# The `qkv serve` checks of CI beyond tools/tests/serve.rs: the official `openai` Python client against the
# server (tools/scripts/test_openai_client.py, in a throwaway venv), then two replicas behind Debian's nginx
# with one killed mid-run (tools/deploy/two_replicas.sh, which installs nginx when missing). Both use the qkv
# binary `cargo test --workspace` built (QKV_BIN to use another). About 10 s after the venv's pip install.
set -euo pipefail
cd "$(dirname "$0")/../.."
export QKV_BIN="${QKV_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/qkv}"
[ -x "$QKV_BIN" ] || { echo "deploy/ci.sh: no qkv binary at $QKV_BIN (run cargo test --workspace first)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "== qkv serve: the official openai client (pytest, throwaway venv)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check openai "pytest>=7"
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider tools/scripts/test_openai_client.py

echo "== qkv serve: two replicas behind nginx, one killed mid-run"
bash tools/deploy/two_replicas.sh
