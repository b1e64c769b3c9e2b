#!/usr/bin/env python3
"""Issue 10: N requests in flight at once against an assistant that sleeps (inflight-server).

Opens N connections to 127.0.0.1:PORT (in batches, so the accept queue never overflows),
then writes N distinct signed requests (signed as the real sender: HMAC over
``X-Timestamp + "." + escaped body``, raw UTF-8 sent; bench/webhook_client.py) back to back
without awaiting anything, and reads every answer. Every answer must be 200 with
``{"reply":"Echo: <its content>"}``. Reports counts by status, the time from the first write
to the last answer, and the server's peak RSS (VmHWM after a clear_refs reset, and VmRSS
sampled every 50 ms). Standard library only; run with ``ulimit -n 20000``.

    python3 bench/perf/inflight.py --port 18290 --secret S --pid PID --n 10000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import webhook_client as wc  # noqa: E402


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--pid", type=int, required=True, help="server pid (RSS from /proc)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500, help="connections opened at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on the whole exchange, s")
    ap.add_argument("--out", help="write the summary JSON here too")
    args = ap.parse_args()
    if args.n > 12000:
        raise SystemExit("--n is bounded to 12000")
    target = wc.Target(f"http://127.0.0.1:{args.port}/")

    # 1. Distinct signed requests, made before anything is sent.
    reqs = [wc.signed_request(target, args.secret,
                              wc.make_payload(f"in flight {i} {uuid.uuid4().hex[:8]}", history=False))
            for i in range(args.n)]
    body_bytes = len(reqs[0].body)

    before = wc.proc_status(args.pid)
    # 2. Open every connection first.
    t_conn = time.monotonic()
    conns: list = []
    conn_errors = 0
    for start in range(0, args.n, args.batch):
        batch = await asyncio.gather(
            *(wc.open_conn(target, 10.0) for _ in range(start, min(start + args.batch, args.n))),
            return_exceptions=True)
        for c in batch:
            if isinstance(c, BaseException):
                conn_errors += 1
                conns.append(None)
            else:
                conns.append(c)
    connect_s = time.monotonic() - t_conn
    await asyncio.sleep(0.5)  # let the server accept the last ones
    st = wc.proc_status(args.pid)
    rss_connected = st.get("VmRSS", 0)
    fds_connected = st.get("fds", 0)
    hwm_reset = wc.reset_hwm(args.pid)

    # 3. The burst: every request written back to back, nothing awaited in between.
    done_at = [0.0] * args.n
    t0 = time.monotonic()
    for (conn, req) in zip(conns, reqs):
        if conn is not None:
            conn[1].write(req.head + req.body)
    written_s = time.monotonic() - t0

    async def read(i: int):
        conn = conns[i]
        if conn is None:
            return "connect failed", None
        resp, why = await wc.read_response_safe(conn[0])
        done_at[i] = time.monotonic() - t0
        if resp is None:
            return f"no response: {why}", None
        return wc.check_echo(resp, reqs[i].content), resp.status

    stop = asyncio.Event()
    sampler = wc.RssSampler(args.pid, interval=0.05)
    sampling = asyncio.create_task(sampler.run(t0, stop, t0 + args.timeout + 5))
    try:
        results = await asyncio.wait_for(asyncio.gather(*(read(i) for i in range(args.n))),
                                         args.timeout)
    except asyncio.TimeoutError:
        results = [("timeout", None)] * args.n
    stop.set()
    await sampling
    after = wc.proc_status(args.pid)
    for c in conns:
        if c is not None:
            wc.close_writer(c[1])

    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    correct = 0
    for err, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if err is None:
            correct += 1
        else:
            key = err[:60]
            errors[key] = errors.get(key, 0) + 1
    ok_times = sorted(t for (err, _), t in zip(results, done_at) if err is None)
    peak_sampled = sampler.peak()[1]
    summary = {
        "n": args.n,
        "body_bytes": body_bytes,
        "connect_s": round(connect_s, 3),
        "connect_errors": conn_errors,
        "write_all_s": round(written_s, 3),
        "correct": correct,
        "statuses": statuses,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "first_answer_s": round(min(t for t in done_at if t) if any(done_at) else 0, 3),
        "last_answer_s": round(max(done_at), 3),
        "last_correct_s": round(ok_times[-1], 3) if ok_times else None,
        "p50_correct_s": round(ok_times[len(ok_times) // 2], 3) if ok_times else None,
        "rss_before_kb": before.get("VmRSS"),
        "rss_connected_kb": rss_connected,
        "fds_connected": fds_connected,
        "hwm_reset": hwm_reset,
        "vmhwm_kb": after.get("VmHWM"),
        "rss_after_kb": after.get("VmRSS"),
        "peak_sampled_rss_kb": peak_sampled,
        "max_fds": sampler.max_fds,
        "server_threads": after.get("Threads"),
    }
    if summary["vmhwm_kb"] and summary["rss_before_kb"]:
        summary["peak_minus_idle_per_request_kb"] = round(
            (summary["vmhwm_kb"] - summary["rss_before_kb"]) / args.n, 2)
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if correct == args.n else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
