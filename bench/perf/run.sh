#!/usr/bin/env bash
# Issue 10's load matrix in one command, on a fresh machine:
#
#   bench/perf/run.sh                    # 2 runs of the matrix + the cost-growth series
#   RUNS=1 DURATION=5 bench/perf/run.sh  # shorter
#
# Installs wrk (Debian package) if missing, builds the crate's echo example and the
# bare-hyper baseline in release, then runs run_matrix.py (see its docstring). Needs 2+
# CPUs: the servers are pinned to CPU 0, wrk to CPU 1. Only 127.0.0.1 is targeted.
# Environment: CARGO_TARGET_DIR (default: target/ of the repository), RUNS (2),
# DURATION (seconds per cell, 5), OUT (results folder, default /tmp/partner-webhook-perf-<time>),
# plus BODIES, CONNS, GROWTH passed through to run_matrix.py, SERVER_RUST_LOG
# (e.g. warn: no per-request log line) for the echo servers, and NODE_SERVER: the path of
# the platform's Node reference server (examples/webhook-typescript/server.mjs of
# markmacmahon/agent-template) to measure in the same sitting (installs nodejs if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${OUT:-/tmp/partner-webhook-perf-$(date -u +%Y%m%dT%H%M%SZ)}"

if ! command -v wrk >/dev/null; then
    echo "installing wrk"
    apt-get update -qq && apt-get install -y -qq wrk
fi
if [ -n "${NODE_SERVER:-}" ] && ! command -v node >/dev/null; then
    echo "installing nodejs"
    apt-get update -qq && apt-get install -y -qq nodejs
fi
for tool in taskset python3 cargo; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then echo "needs at least 2 CPUs" >&2; exit 1; fi

(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release --example echo)
(cd "$here/baseline-server" && CARGO_TARGET_DIR="$target" cargo build --release)

mkdir -p "$out"
echo "commit $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src examples || echo ' (modified src/ or examples/)'); results in $out"
ulimit -n 20000 2>/dev/null || true
args=(--echo "$target/release/examples/echo" --baseline "$target/release/baseline-server"
      --out "$out" --runs "${RUNS:-2}" --duration "${DURATION:-5}")
[ -n "${BODIES:-}" ] && args+=(--bodies "$BODIES")
[ -n "${CONNS:-}" ] && args+=(--conns "$CONNS")
[ -n "${GROWTH+x}" ] && args+=(--growth "$GROWTH")
[ -n "${NODE_SERVER:-}" ] && args+=(--node "$NODE_SERVER")
exec python3 "$here/run_matrix.py" "${args[@]}"
