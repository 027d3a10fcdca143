#!/usr/bin/env bash
# The embedding checks of CI: the C and C++ examples (tools/tests/embed_c.rs: compiled with the system
# cc/c++ against libqkv_capi, compared with the qkv CLI), then the Python wheel built by maturin (abi3,
# profile `wheel`) into a throwaway venv and its pytest suite against the qkv CLI. Fails when pytest
# fails or collects no test (exit status 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never

echo "== C and C++ examples against the qkv CLI (cargo test --workspace --test embed_c)"
# --workspace: the features of CI's `cargo test --workspace`, so nothing is rebuilt after it; this also
# builds target/<debug>/qkv, the reference of the Python tests.
cargo test --workspace --test embed_c 2>&1

TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export QKV_BIN="$TARGET/debug/qkv"
[ -x "$QKV_BIN" ] || { echo "ci.sh: $QKV_BIN was not built" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "== Python: a throwaway venv, maturin, the wheel"
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --disable-pip-version-check "maturin>=1.9,<2" "pytest>=7"
start=$(date +%s)
"$WORK/venv/bin/maturin" build --quiet --profile wheel --manifest-path tools/python/Cargo.toml \
  --interpreter "$PY" --out "$WORK/dist"
echo "maturin build: $(( $(date +%s) - start )) s"
"$PY" -m pip install -q --disable-pip-version-check "$WORK"/dist/qkv-*.whl

echo "== Python: pytest"
# from the tests' directory, so `import qkv` is the installed wheel; exit status 5 (no test collected) fails too
(cd tools/python/tests && "$PY" -m pytest -q -p no:cacheprovider .)
