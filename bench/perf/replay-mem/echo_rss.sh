#!/usr/bin/env bash
# Peak RSS of the echo example once its replay cache is full (issue 10: "peak RSS
# <= 12 MB under 64 connections with the replay cache full").
#
#   bench/perf/replay-mem/echo_rss.sh ECHO_BINARY [PORT] [COUNT] [PER_SECOND]
#
# Starts ECHO_BINARY (cargo build --release --example echo) on 127.0.0.1:PORT pinned
# to CPU 0, sends COUNT (default 130,000: more than the cache's 100,000) distinct
# requests freshly signed by bench/perf/gen_pool.py (0.4 KB bodies, at most
# PER_SECOND, default 1,100, per X-Timestamp second, spread over the last ~2 minutes:
# 400,000 need 3,400) with wrk -t1 -c64 pinned to CPU 1, then prints the
# server's VmRSS idle and after, its VmHWM (peak over its whole life), the replay
# cache gauge and wrk's status counts. Only 127.0.0.1; everything is time-bounded.
# RUST_LOG (e.g. warn: no per-request line) and METRICS_ADDR (off: no exporter)
# pass through to the server.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
perf=$(dirname "$here")
echo_bin=$1
port=${2:-18350}
count=${3:-130000}
per_second=${4:-1100}
metrics=$((port + 1))
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
tmp=$(mktemp -d)

WEBHOOK_SECRET=$secret PORT=$port REPLY_FORMAT=json NO_COLOR=1 \
    METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:$metrics} taskset -c 0 timeout 300 "$echo_bin" >"$tmp/server.log" 2>&1 &
guard=$!
trap 'kill "$guard" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
server=$(ps --ppid "$guard" -o pid= | tr -d ' ')
status() { grep -E "^$1:" "/proc/$server/status" | awk '{print $2}'; }
idle_rss=$(status VmRSS)

python3 "$perf/gen_pool.py" --body small --count "$count" --secret "$secret" --port "$port" \
    --out "$tmp/pool" --max-per-second "$per_second"
taskset -c 1 timeout 120 wrk -t1 -c64 -d60s -s "$perf/pool.lua" "http://127.0.0.1:$port" \
    -- "$tmp/pool" json | grep -E '^RESULT' | sed 's/^RESULT //' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("wrk: requests %d, non2xx %d, bad bodies %d, exhausted %d, statuses %s" % (r["requests"], r["non2xx"], r["bad_body"], r["exhausted"], r["statuses"]))'
sleep 1
entries=$(curl -sf "http://127.0.0.1:$metrics/metrics" | awk '/^partner_webhook_replay_cache_entries /{print $2}' || echo "(no metrics)")
echo "server pid $server: VmRSS idle $idle_rss kB, after $(status VmRSS) kB; VmHWM $(status VmHWM) kB; replay cache entries $entries"
