#!/usr/bin/env bash
# Run the C example and the C API test under valgrind (memcheck, full leak check). Valgrind has no
# AVX-512, so the kernels run on AVX2 (QKV_ISA=avx2). Fails on a memory error or a definite/indirect leak;
# "possibly lost"/"still reachable" blocks are the rayon worker threads (their TLS and the pool's
# registry), alive until the process exits. Not part of CI (a few minutes); run by hand:
#   tools/capi/memcheck.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --workspace --test embed_c --no-run 2>&1 | tail -1
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
LIB="$TARGET/debug/deps"
MODELS=${QKV_SHARED_MODELS:-../shared/models}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
build() { cc -std=c11 -g -O1 -Itools/capi/include "$1" -L"$LIB" -lqkv_capi -Wl,-rpath,"$LIB" -lpthread -lm -o "$2"; }
build tools/capi/examples/generate.c "$WORK/generate"
build tools/capi/tests/c/capi_test.c "$WORK/capi_test"
vg() { QKV_ISA=avx2 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=9 "$@"; }
vg "$WORK/generate" "$MODELS/stories260k" "Once upon a time" 32
vg "$WORK/capi_test" "$MODELS/stories260k" "$MODELS/aren-transliteration-ct2"
echo "memcheck: no memory error, no definite or indirect leak"
