#!/usr/bin/env python3
"""Baseline memory of a freshly started webhook server.

Reads the server's VmRSS from /proc/<pid>/status while it is idle (run this right
after starting it), sends one correctly signed message, checks the echo, waits a
second and reads VmRSS again. The RSS after that one request is the baseline that
soak.py and slow_uploads.py divide their peak RSS by (pass it as --baseline-kb).

    python3 bench/baseline.py --url http://127.0.0.1:18181 --secret "$WEBHOOK_SECRET" \\
        --pid "$SERVER_PID" --json-out /tmp/bench-baseline.json

Only 127.0.0.1 is accepted as a target; it makes two requests, each with a 10 s
timeout, and ends. Standard library only (Python 3.11).
"""

import argparse
import asyncio
import json
import sys

from webhook_client import Target, healthz, machine_info, mib, proc_status, valid_request


async def main_async(args) -> int:
    target = Target(args.url)
    info = machine_info()
    idle = proc_status(args.pid)
    if "VmRSS" not in idle:
        print(f"no process {args.pid}", file=sys.stderr)
        return 2
    error, latency, _ = await valid_request(target, args.secret, "baseline héllo 👋")
    health = await healthz(target)
    await asyncio.sleep(1.0)
    after = proc_status(args.pid)
    result = {
        "machine": info,
        "idle_rss_kb": idle["VmRSS"],
        "after_one_request_rss_kb": after.get("VmRSS", 0),
        "threads": after.get("Threads"),
        "fds": after.get("fds"),
        "request_ok": error is None,
        "request_error": error,
        "request_latency_ms": round(latency * 1000, 2),
        "healthz_ok": health is None,
    }
    print(f"machine: {info}")
    print(f"idle RSS:               {mib(result['idle_rss_kb'])} ({result['idle_rss_kb']} kB)")
    print(f"RSS after one request:  {mib(result['after_one_request_rss_kb'])} "
          f"({result['after_one_request_rss_kb']} kB)  <- baseline")
    print(f"one valid request: {'ok' if error is None else 'FAILED ' + error} "
          f"({latency * 1000:.1f} ms); /healthz: {'ok' if health is None else health}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if error is None and health is None else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:<port>[/path]")
    parser.add_argument("--secret", required=True, help="the server's WEBHOOK_SECRET")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    try:
        Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
