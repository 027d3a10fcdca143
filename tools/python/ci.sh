#!/usr/bin/env bash
# The embedding checks of CI: the C and C++ examples (tools/tests/embed_c.rs: compiled with the system
# cc/c++ against libqkv_capi, compared with the qkv CLI), then the Python wheel built by maturin (abi3,
# profile `wheel`) into a throwaway venv and its pytest suite against the qkv CLI. Fails when pytest
# fails or collects no test (exit status 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never

# The test binary of the C/C++ examples and the qkv CLI, as `cargo test --workspace` built them: the same
# command again is a no-op after CI's test step (another selection, e.g. `-p tools`, would unify features
# differently and rebuild the dependencies).
artifacts() {
  cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == "embed_c" and m["profile"]["test"]:
        print("embed_c", m["executable"])
    if t["name"] == "qkv" and "bin" in t["kind"] and not m["profile"]["test"]:
        print("qkv", m["executable"])'
}
EMBED_C=$(artifacts) || { echo "ci.sh: cargo test --workspace --no-run failed" >&2; exit 1; }
EMBED_C_TEST=$(awk '$1 == "embed_c" {print $2}' <<<"$EMBED_C")
export QKV_BIN=$(awk '$1 == "qkv" {print $2}' <<<"$EMBED_C")
[ -x "$EMBED_C_TEST" ] && [ -x "$QKV_BIN" ] || { echo "ci.sh: no embed_c test or qkv binary: $EMBED_C" >&2; exit 1; }

echo "== C and C++ examples against the qkv CLI (tools/tests/embed_c.rs)"
(cd tools && "$EMBED_C_TEST")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "== Python: a throwaway venv, maturin, the wheel"
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --disable-pip-version-check "maturin>=1.9,<2" "pytest>=7" "numpy>=1.21"
start=$(date +%s)
"$WORK/venv/bin/maturin" build --quiet --profile wheel --manifest-path tools/python/Cargo.toml \
  --interpreter "$PY" --out "$WORK/dist"
echo "maturin build: $(( $(date +%s) - start )) s"
"$PY" -m pip install -q --disable-pip-version-check "$WORK"/dist/qkv-*.whl

echo "== Python: pytest"
# from the tests' directory, so `import qkv` is the installed wheel; exit status 5 (no test collected) fails too
(cd tools/python/tests && "$PY" -m pytest -q -p no:cacheprovider .)
