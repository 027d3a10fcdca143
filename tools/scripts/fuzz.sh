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

# Seeds, copied into a target's corpus when it has none yet (libFuzzer adds what it finds to the same directory).
CORPUS="$FUZZ/corpus"
mkdir -p "$CORPUS" "$FUZZ/logs" "$FUZZ/dicts"
GGUF_REAL=$(ls "$MODELS"/*/*.gguf 2>/dev/null | head -1 || true)
GEN="$CORPUS/.generated"
if [ ! -f "$GEN/.done" ]; then
    ${QKV_PYTHON:-tools/scripts/venv.sh python} tools/scripts/fuzz_seeds.py "$GEN" ${GGUF_REAL:+--gguf "$GGUF_REAL"} \
        --text-corpus tools/fixtures/tokenizers/corpus.json
    touch "$GEN/.done"
fi
seed() { # seed <target> <file>...: copy the files in (as seed-<dir>-<name>) unless the corpus exists
    local t="$1"
    shift
    [ -d "$CORPUS/$t" ] && return 0
    mkdir -p "$CORPUS/$t.new"
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "$CORPUS/$t.new/seed-$(echo "$f" | sed 's|.*/\([^/]*/[^/]*\)$|\1|; s|/|-|g')"
    done
    mv "$CORPUS/$t.new" "$CORPUS/$t"
}
seed safetensors "$GEN"/safetensors/* $(find tools/fixtures "$MODELS" -name '*.safetensors' -size -2M)
seed safetensors_index tools/fixtures/loaders-tiny-llama-sharded/model.safetensors.index.json
seed config $(find tools/fixtures/loaders-* tools/fixtures/*-tiny "$MODELS" -name '*.json' -size -64k)
# The head of the real GGUF (its header and the start of the tokenizer arrays) besides the slim ones (every block
# type: 32-block types alone and mixed with a 256-block K-quant ffn_down), and the block fixture (every block type,
# random raw blocks).
[ -n "$GGUF_REAL" ] && [ ! -f "$GEN/real-head.gguf" ] && head -c 131072 "$GGUF_REAL" >"$GEN/real-head.gguf"
seed gguf "$GEN"/gguf/* "$GEN/real-head.gguf" tools/fixtures/gguf/blocks.gguf
seed spm_model "$GEN"/spm_model/* "$MODELS"/*/*.spm
seed llama2c_tokenizer "$MODELS"/*/tok*.bin
# Vocabulary files: source, 0xFF, target (the split the target uses).
for d in "$MODELS"/*/; do
    if [ -f "$d/source_vocabulary.txt" ] && [ ! -f "$GEN/vocab-$(basename "$d")" ]; then
        { cat "$d/source_vocabulary.txt"; printf '\377'; cat "$d/target_vocabulary.txt"; } >"$GEN/vocab-$(basename "$d")"
    fi
done
seed vocab_file "$GEN"/vocab-*
seed hf_tokenizer_json tools/fixtures/tokenizers/*/tokenizer.json
seed tokenizer_text "$GEN"/tokenizer_text/*

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
# tokenizer.json: the keys and type names of the fixture files; texts: special-token spellings.
grep -ohE '"[A-Za-z_][A-Za-z0-9_]{1,30}"' tools/fixtures/tokenizers/*/tokenizer.json | sort | uniq -c | sort -rn \
    | awk '$1 >= 2 {print $2}' | head -300 | quoted >"$FUZZ/dicts/hf_tokenizer_json.dict"
# (libFuzzer dictionaries are ASCII: '▁', U+2581, is written as its UTF-8 bytes escaped)
{
    printf '%s\n' '<unk>' '<s>' '</s>' '<pad>' '<|endoftext|>' '<0x41>' '<sep>' '<blank>' | quoted
    printf '%s\n' '"\xE2\x96\x81"'
} >"$FUZZ/dicts/tokenizer_text.dict"
cp "$FUZZ/dicts/tokenizer_text.dict" "$FUZZ/dicts/vocab_file.dict"

max_len() {
    case "$1" in
        config | safetensors_index | tokenizer_text | llama2c_tokenizer) echo 16384 ;;
        spm_model) echo 262144 ;;
        *) echo 131072 ;;
    esac
}

# Scratch files of the targets (each input is written to a file before it is opened): a RAM disk if there is one.
export QKV_FUZZ_TMP
QKV_FUZZ_TMP=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/qkv-fuzz.XXXXXX")
trap 'rm -rf "$QKV_FUZZ_TMP"' EXIT

run_target() { # run_target <target>: fuzz it; a line of results at the end of its log
    local t="$1" log="$FUZZ/logs/$1.log" status=0 dict=()
    mkdir -p "$FUZZ/artifacts/$t"
    [ -f "$FUZZ/dicts/$t.dict" ] && dict=(-dict="$FUZZ/dicts/$t.dict")
    nice -n 10 cargo +nightly fuzz run --fuzz-dir "$FUZZ" -s "$SANITIZER" "$t" "$CORPUS/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -runs="$RUNS" -max_len="$(max_len "$t")" -timeout=20 \
        -rss_limit_mb=4096 "${dict[@]}" -print_final_stats=1 >"$log" 2>&1 || status=$?
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
