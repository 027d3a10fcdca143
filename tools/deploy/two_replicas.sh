#!/usr/bin/env bash
# Two `qkv serve` replicas behind nginx (Debian's package) on loopback: 200 completion requests through nginx,
# 8 at a time; replica A is killed (SIGKILL) mid-run. Shows that both replicas served requests, that nginx sent
# every request after the kill to replica B, and that no request failed beyond the ones in flight on A when it
# died (at most the concurrency). Exit status 0 when that holds.
#
#   tools/deploy/two_replicas.sh [MODEL_DIR]      (default: ../shared/models/stories260k)
#
# QKV_BIN: the qkv binary (default: target/release/qkv, built if missing). nginx is installed with apt-get when
# absent (sudo if not root). Each replica gets --threads 1, pinned to its own core with taskset when the machine
# has two or more.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODEL="${1:-${QKV_SHARED_MODELS:-$ROOT/../shared/models}/stories260k}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
QKV="${QKV_BIN:-$TARGET/release/qkv}"
REQUESTS="${REQUESTS:-200}"
CONCURRENCY="${CONCURRENCY:-8}"
KILL_AFTER="${KILL_AFTER:-80}"
PORT_A=18181 PORT_B=18182 PORT_LB=18180

[ -d "$MODEL" ] || { echo "two_replicas: no model directory at $MODEL" >&2; exit 2; }
if [ ! -x "$QKV" ]; then
    (cd "$ROOT" && cargo build --release -p tools --bin qkv)
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# One core per replica when there are two or more (taskset execs the server: $! is the server's pid).
PIN_A=() PIN_B=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_A=(taskset -c 0) PIN_B=(taskset -c 1); fi
"${PIN_A[@]}" "$QKV" serve --model "$MODEL" --port "$PORT_A" --threads 1 --served-model-name m 2>"$WORK/a.log" >/dev/null &
PID_A=$!; PIDS+=("$PID_A")
"${PIN_B[@]}" "$QKV" serve --model "$MODEL" --port "$PORT_B" --threads 1 --served-model-name m 2>"$WORK/b.log" >/dev/null &
PID_B=$!; PIDS+=("$PID_B")

SERVERS="        server 127.0.0.1:$PORT_A max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$PORT_B max_fails=1 fail_timeout=30s;"
mkdir -p "$WORK"/{body,proxy,fastcgi,uwsgi,scgi}
awk -v prefix="$WORK" -v listen="127.0.0.1:$PORT_LB" -v servers="$SERVERS" '
    { gsub("@PREFIX@", prefix); gsub("@LISTEN@", listen) }
    /@SERVERS@/ { print servers; next }
    { print }' "$ROOT/tools/deploy/nginx.conf" >"$WORK/nginx.conf"
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)

for url in "127.0.0.1:$PORT_A" "127.0.0.1:$PORT_B" "127.0.0.1:$PORT_LB"; do
    for _ in $(seq 200); do
        curl -sf "http://$url/health" >/dev/null && break
        sleep 0.1
    done
    curl -sf "http://$url/health" >/dev/null || { echo "two_replicas: $url not ready" >&2; cat "$WORK"/*.log >&2; exit 1; }
done
echo "replicas ready: A :$PORT_A (pid $PID_A), B :$PORT_B (pid $PID_B), nginx :$PORT_LB"

# One request: its index, HTTP status (000 = connection failed) and time; written as one line.
request() {
    local i="$1" code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -H 'Content-Type: application/json' \
        -d "{\"model\":\"m\",\"prompt\":\"Once upon a time $i\",\"max_tokens\":48,\"temperature\":0}" \
        "http://127.0.0.1:$PORT_LB/v1/completions" || true)
    echo "$i $code"
}
export -f request
export PORT_LB

# The kill: once KILL_AFTER requests have been answered, SIGKILL replica A (nothing drains: a crash).
(
    while [ "$(wc -l <"$WORK/upstream.log" 2>/dev/null || echo 0)" -lt "$KILL_AFTER" ]; do sleep 0.02; done
    wc -l <"$WORK/upstream.log" >"$WORK/killed_at"
    kill -9 "$PID_A"
    echo "killed replica A after $(cat "$WORK/killed_at") answered requests"
) &
KILLER=$!

seq "$REQUESTS" | xargs -P "$CONCURRENCY" -I{} bash -c 'request {}' >"$WORK/results"
wait "$KILLER"

killed_at=$(cat "$WORK/killed_at")
ok=$(awk '$2 == 200' "$WORK/results" | wc -l)
failed=$(awk '$2 != 200' "$WORK/results" | wc -l)
# upstream.log: status, upstream address(es) tried, their statuses, time; in the order answered.
a_before=$(head -n "$killed_at" "$WORK/upstream.log" | awk -v a=":$PORT_A" '$1 == 200 && $2 ~ a"$"' | wc -l)
b_before=$(head -n "$killed_at" "$WORK/upstream.log" | awk -v b=":$PORT_B" '$1 == 200 && $2 ~ b"$"' | wc -l)
# After the kill (allowing for the requests in flight then), every success came from B.
after=$(tail -n +"$((killed_at + CONCURRENCY + 1))" "$WORK/upstream.log")
a_after=$(echo "$after" | awk -v a=":$PORT_A" '$1 == 200 && $2 ~ a"$"' | wc -l)
b_after=$(echo "$after" | awk -v b=":$PORT_B" '$1 == 200 && $2 ~ b"$"' | wc -l)
retried=$(awk '$2 ~ /,/' "$WORK/upstream.log" | wc -l)

echo "requests: $REQUESTS through nginx, $CONCURRENCY at a time: $ok answered 200, $failed failed"
echo "before the kill: A served $a_before, B served $b_before"
echo "after the kill (+$CONCURRENCY in flight): A served $a_after, B served $b_after"
echo "nginx resent $retried request(s) to the other replica after an upstream error"
status=0
[ "$a_before" -gt 0 ] && [ "$b_before" -gt 0 ] || { echo "FAIL: both replicas should have served before the kill"; status=1; }
[ "$a_after" -eq 0 ] || { echo "FAIL: the killed replica answered after the kill"; status=1; }
[ "$b_after" -gt 0 ] || { echo "FAIL: B served nothing after the kill"; status=1; }
[ "$failed" -le "$CONCURRENCY" ] || { echo "FAIL: $failed failures, more than the $CONCURRENCY in flight"; status=1; }
[ "$ok" -ge $((REQUESTS - CONCURRENCY)) ] || { echo "FAIL: too few successes"; status=1; }
[ $status -eq 0 ] && echo "OK: both replicas served; after the kill nginx routed everything to B; failures ($failed) <= in flight ($CONCURRENCY)"
exit $status
