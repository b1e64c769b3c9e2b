#!/usr/bin/env bash
# Interleaved A/B of whole servers, one cell at a time (issue 10: "compare against a baseline
# measured in the same run"): for each round, each SERVER in turn is started pinned to CPU 0,
# fed a fresh pool of distinct signed requests (gen_pool.py) by wrk -t1 with pool.lua on
# CPU 1, and its CPU per request read from /proc (utime+stime) around the run.
#
#   bench/perf/ab.sh BODY CONNS SECONDS ROUNDS SERVER...
#   bench/perf/ab.sh 3k 16 5 3 /tmp/echo-before /tmp/echo-after node
#
# SERVER is an echo binary (cargo build --release --example echo; run as JSON with a fresh
# secret, the metrics exporter on, logging to a file as a new user runs it), or `node`: the
# platform's Node reference server at $NODE_SERVER. BODY is a gen_pool.py kind (small, 3k,
# 63k, multi, ...). Only 127.0.0.1 is targeted; every wrk run is bounded by SECONDS.
# WARMUP=N first sends N seconds of the same traffic, unmeasured: the matrix's servers
# run for minutes, so their replay cache is full and evicting on every request, which a
# fresh server's first seconds are not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
body=$1 conns=$2 seconds=$3 rounds=$4
shift 4
port=18401
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cell() {
    local name=$1 secret
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    local cmd=("$name")
    [ "$name" = node ] && cmd=(node "${NODE_SERVER:?NODE_SERVER: the Node reference server.mjs}")
    env -u RUST_LOG PORT=$port NO_COLOR=1 WEBHOOK_SECRET="$secret" REPLY_FORMAT=json \
        METRICS_ADDR=127.0.0.1:$((port + 1)) taskset -c 0 "${cmd[@]}" >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
    local warmup=${WARMUP:-0}
    if [ "$warmup" -gt 0 ]; then
        python3 "$here/gen_pool.py" --body "$body" --count $((warmup * 130000)) --secret "$secret" \
            --port $port --out "$work/warm-pool" --state "$work/state" >/dev/null
        taskset -c 1 wrk -t1 -c"$conns" -d"${warmup}s" --timeout 5s -s "$here/pool.lua" \
            "http://127.0.0.1:$port" -- "$work/warm-pool" json >"$work/warmup.txt"
        # A warm-up that met refusals would leave the server in another state than intended.
        grep -q '"non2xx":0,' "$work/warmup.txt" || {
            echo "warm-up of $name: non-2xx answers or no result" >&2
            grep '^RESULT ' "$work/warmup.txt" >&2 || true
            exit 1
        }
    fi
    python3 "$here/gen_pool.py" --body "$body" --count $((seconds * 130000)) --secret "$secret" \
        --port $port --out "$work/pool" --state "$work/state" >/dev/null
    local before after
    before=$(awk '{print $14 + $15}' "/proc/$server/stat")
    taskset -c 1 wrk -t1 -c"$conns" -d"${seconds}s" --timeout 5s -s "$here/pool.lua" \
        "http://127.0.0.1:$port" -- "$work/pool" json >"$work/wrk.txt"
    after=$(awk '{print $14 + $15}' "/proc/$server/stat")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    rm -f "$work/state"
    grep '^RESULT ' "$work/wrk.txt" | cut -c8- | python3 -c "
import json, os, sys
r = json.load(sys.stdin)
n, s = r['requests'], r['duration_us'] / 1e6
cpu = ($after - $before) / os.sysconf('SC_CLK_TCK') * 1e6 / n
print(f'{\"$(basename "$name")\":<14} {n / s:>9.0f} req/s  {cpu:6.2f} us/req  non-2xx {r[\"non2xx\"]}  wrong bodies {r[\"bad_body\"]}  exhausted {r[\"exhausted\"]}')"
}

for _ in $(seq "$rounds"); do
    for name in "$@"; do cell "$name"; done
done
