#!/usr/bin/env bash
# Fuzz the loaders with cargo-fuzz (libFuzzer): every target of loaders/fuzz, one after the other (or N at once).
#
#   tools/scripts/fuzz.sh [SECONDS_PER_TARGET (default 900)] [TARGET...]   (default: every target)
#
# Env: QKV_FUZZ_JOBS     targets run at once (default 1; the machine is shared, everything runs under nice)
#      QKV_FUZZ_RUNS     stop a target after this many executions (default 1000000), whichever comes first
#      QKV_SHARED_MODELS the shared models dir (default ../shared/models): real files copied in as seeds
#      QKV_FUZZ_SANITIZER cargo-fuzz sanitizer (default none: the loaders are safe Rust, where an out-of-bounds
#                        access is already a panic; AddressSanitizer made the gguf target 100x slower)
#      QKV_PYTHON        a python with numpy, gguf and safetensors for the seeds (default: the venv of venv.sh)
#
# Installs cargo-fuzz (crates.io) and the nightly toolchain if missing. Seeds: the real model files and the
# committed fixtures, plus small files written by tools/scripts/fuzz_seeds.py (in the venv of venv.sh).
# The corpus (loaders/fuzz/corpus/<target>), crashes (loaders/fuzz/artifacts/<target>) and logs
# (loaders/fuzz/logs) are not committed. A crash: minimise it (cargo +nightly fuzz tmin --fuzz-dir loaders/fuzz
# <target> <file>), fix it, and commit it under loaders/tests/fuzz_regressions/<target>/ with a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
FUZZ="$ROOT/loaders/fuzz"
SECONDS_PER_TARGET="${1:-900}"
shift || true
JOBS="${QKV_FUZZ_JOBS:-1}"
RUNS="${QKV_FUZZ_RUNS:-1000000}"
SANITIZER="${QKV_FUZZ_SANITIZER:-none}"
MODELS="${QKV_SHARED_MODELS:-$ROOT/../shared/models}"

# Tools: nightly (cargo-fuzz needs -Z flags for the sanitizer) and cargo-fuzz.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi

ALL_TARGETS=$(cd "$FUZZ" && cargo +nightly fuzz list --fuzz-dir "$FUZZ")
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    read -r -a TARGETS <<<"$(echo $ALL_TARGETS)"
fi

# Seeds (copied once; libFuzzer adds what it finds to the same directories).
CORPUS="$FUZZ/corpus"
mkdir -p "$CORPUS" "$FUZZ/logs" "$FUZZ/dicts"
seed() { # seed <target> <file>...
    mkdir -p "$CORPUS/$1"
    local t="$1"
    shift
    for f in "$@"; do
        [ -f "$f" ] && cp -n "$f" "$CORPUS/$t/seed-$(echo "$f" | sed 's|.*/\([^/]*/[^/]*\)$|\1|; s|/|-|g')"
    done
    return 0
}
if [ ! -f "$CORPUS/.seeded" ]; then
    GGUF_REAL=$(ls "$MODELS"/*/*.gguf 2>/dev/null | head -1 || true)
    ${QKV_PYTHON:-tools/scripts/venv.sh python} tools/scripts/fuzz_seeds.py "$CORPUS/.generated" ${GGUF_REAL:+--gguf "$GGUF_REAL"}
    seed safetensors "$CORPUS"/.generated/safetensors/* $(find tools/fixtures "$MODELS" -name '*.safetensors' -size -2M)
    seed safetensors_index tools/fixtures/loaders-tiny-llama-sharded/model.safetensors.index.json
    seed config $(find tools/fixtures "$MODELS" -name '*.json' -size -64k)
    seed gguf "$CORPUS"/.generated/gguf/*
    # The head of the real file: its header and the start of the tokenizer arrays.
    [ -n "$GGUF_REAL" ] && head -c 131072 "$GGUF_REAL" >"$CORPUS/gguf/seed-real-head.gguf"
    touch "$CORPUS/.seeded"
fi

# Dictionaries: JSON keys of the configs (every quoted string of config.rs, quotes included), safetensors
# header words, GGUF metadata keys (raw: GGUF strings are length-prefixed).
quoted() { sed 's/"/\\"/g; s/^/"/; s/$/"/'; }
{
    grep -ohE '"[A-Za-z_][A-Za-z0-9_.]{1,40}"' loaders/src/config.rs | sort -u | quoted
    printf '%s\n' '{' '}' '[' ']' ':' ',' 'null' 'true' 'false' '-1' '1e309' '0.0' '18446744073709551616' | quoted
} >"$FUZZ/dicts/config.dict"
printf '%s\n' '"F32"' '"BF16"' '"F16"' '"I8"' '"U8"' '"I64"' '"F8_E4M3"' '"dtype"' '"shape"' '"data_offsets"' \
    '"__metadata__"' | quoted >"$FUZZ/dicts/safetensors.dict"
{
    cat "$FUZZ/dicts/safetensors.dict"
    printf '%s\n' '"weight_map"' '"metadata"' '"model-00001-of-00003.safetensors"' '../' '/' | quoted
} >"$FUZZ/dicts/safetensors_index.dict"
{
    grep -ohE '"(general|tokenizer|llama)\.[A-Za-z0-9_.]{1,40}"' loaders/src/gguf/*.rs | sort -u
    grep -ohE '(positive|has|key)\("[a-z_.]+"\)' loaders/src/gguf/import.rs | grep -oE '"[^"]+"' | sort -u \
        | sed 's/^"/"llama./'
    printf '%s\n' '"GGUF"' '"llama"' '"gpt2"' '"llama3"' '"qwen2"'
} >"$FUZZ/dicts/gguf.dict"

max_len() {
    case "$1" in
        config | safetensors_index) echo 16384 ;;
        *) echo 131072 ;;
    esac
}

# Scratch files of the targets (each input is written to a file before it is opened): a RAM disk if there is one.
export QKV_FUZZ_TMP
QKV_FUZZ_TMP=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/qkv-fuzz.XXXXXX")
trap 'rm -rf "$QKV_FUZZ_TMP"' EXIT

run_target() { # run_target <target>: fuzz it; a line of results at the end of its log
    local t="$1" log="$FUZZ/logs/$1.log" status=0
    mkdir -p "$FUZZ/artifacts/$t"
    nice -n 10 cargo +nightly fuzz run --fuzz-dir "$FUZZ" -s "$SANITIZER" "$t" "$CORPUS/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -runs="$RUNS" -max_len="$(max_len "$t")" -timeout=20 \
        -rss_limit_mb=4096 -dict="$FUZZ/dicts/$t.dict" -print_final_stats=1 >"$log" 2>&1 || status=$?
    local execs secs
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    secs=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    if [ "$status" -eq 0 ]; then
        echo "$t: ok, ${execs:-?} executions (${secs:-?}/s), corpus $(ls "$CORPUS/$t" | wc -l) files"
    else
        echo "$t: FAILED (exit $status), see $log and $FUZZ/artifacts/$t/"
        grep -m1 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true
    fi
}

# Build every target first (one cargo at a time), then run them, JOBS at once.
(cd "$FUZZ" && nice -n 10 cargo +nightly fuzz build --fuzz-dir "$FUZZ" -s "$SANITIZER")
i=0
for t in "${TARGETS[@]}"; do
    run_target "$t" &
    i=$((i + 1))
    if [ $((i % JOBS)) -eq 0 ]; then wait; fi
done
wait
