#!/usr/bin/env python3
"""Memory under slow uploads: many concurrent connections each trickling a 1 MiB body.

What it does
    Opens --connections (default 1000) connections to the server at once. Each sends a
    request head announcing ``Content-Length: --size`` (default 1,048,576 = the server's
    body_limit) and then the body in --chunk pieces (64 KiB) every --interval seconds
    (0.5 s), i.e. 1 MiB in about 8 s, stopping early as soon as the server answers.
    By default the bodies are correctly signed, well-formed messages whose content pads
    them to exactly --size bytes (``--body garbage`` sends unsigned filler instead, as an
    attacker without the secret would). Meanwhile it
      * samples the server's VmRSS every second from /proc/<pid>/status (and reads VmHWM,
        reset at the start when permitted, at the end),
      * sends a small correctly signed probe message every --probe-interval seconds on a
        fresh connection and checks its echo ("does a genuine message still get through
        during the attack?"), and after the uploads end, three more probes and GET /healthz.
    It reports how many uploads got 200 / 503 / 408 / 413 / another status, were cut
    (connection closed or reset without a response) or were unanswered by the deadline,
    the peak RSS and its ratio to --baseline-kb (from baseline.py), and the probe results.
    With --reconnect each connection starts a new upload whenever its previous one ended,
    until the deadline (a sustained attack instead of a single wave).

Server limits that shape the result (defaults): max_buffered_bytes 64 MiB (bodies are
reserved from Content-Length, so 64 bodies of 1 MiB fill it and further bodies get 503
at once), max_connections 1024, body_read_timeout 10 s, body_limit 1 MiB.

How to run (server already started with `ulimit -n 65536`):
    python3 bench/slow_uploads.py --url http://127.0.0.1:18181 --secret "$WEBHOOK_SECRET" \\
        --pid "$SERVER_PID" --baseline-kb 6000 --json-out /tmp/bench-slow.json

Safety and bounds: only http://127.0.0.1 URLs are accepted; everything stops at
--duration seconds (default 30, at most 120) plus a 15 s grace for the final probes;
every connect/read/write has a timeout; the script raises its own open-files limit
(RLIMIT_NOFILE) up to the hard limit if needed. Exit status: 0 if the server is still up
and the probes after the uploads succeed, 1 otherwise (probes refused *during* the
uploads are reported, not treated as a failure of the script). Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
import uuid

from webhook_client import (
    CLOCK,
    NoResponse,
    RssSampler,
    Target,
    alive,
    close_writer,
    healthz,
    machine_info,
    mib,
    percentile,
    proc_status,
    read_response,
    read_response_safe,
    reset_hwm,
    sender_head,
    valid_request,
)

PLACEHOLDER = "\u0000PAD\u0000"


class Upload:
    """One slow upload's body, kept as segments so 1,000 of them share one padding buffer."""

    def __init__(self, target: Target, secret: str, size: int, pad: bytes, mode: str) -> None:
        self.target = target
        self.secret = secret
        if mode == "signed":
            payload = {
                "version": "1.0",
                "event": "message_received",
                "app": {"id": str(uuid.uuid4()), "name": "Bench Bot"},
                "thread": {"id": str(uuid.uuid4()), "customer_id": "bench-customer"},
                "message": {"id": str(uuid.uuid4()), "seq": 1, "role": "user",
                            "content": PLACEHOLDER, "content_json": {}},
                "history_tail": [],
                "timestamp": CLOCK.iso(),
            }
            text = json.dumps(payload, separators=(",", ":"))
            before, after = text.split(json.dumps(PLACEHOLDER)[1:-1])
            prefix, suffix = before.encode(), after.encode()
            n = size - len(prefix) - len(suffix)
            self.segments = [prefix, memoryview(pad)[:n], suffix]
            self.content_len = n  # content is "x" * n
            self.app_id = payload["app"]["id"]
            self.thread_id = payload["thread"]["id"]
        else:
            self.segments = [memoryview(pad)[:size]]
            self.content_len = None
            self.app_id = self.thread_id = None
        self.size = sum(len(s) for s in self.segments)
        assert self.size == size, (self.size, size)
        self.mode = mode

    def head(self) -> bytes:
        if self.mode == "signed":
            return sender_head(self.target, self.size, secret=self.secret,
                               signed_parts=tuple(self.segments),
                               app_id=self.app_id, thread_id=self.thread_id)
        # Garbage: what an attacker without the secret sends (the body is read before the
        # signature is checked, so it still occupies the body budget).
        return sender_head(self.target, self.size, secret=self.secret,
                           signature="sha256=" + "0" * 64)

    def chunks(self, chunk: int):
        flat = [bytes(s) if not isinstance(s, memoryview) else s for s in self.segments]
        buf = bytearray()
        for seg in flat:
            view = memoryview(seg)
            while len(view):
                take = chunk - len(buf)
                buf += view[:take]
                view = view[take:]
                if len(buf) == chunk:
                    yield bytes(buf)
                    buf.clear()
        if buf:
            yield bytes(buf)


def check_reply(resp, upload: Upload) -> str | None:
    if upload.content_len is None:
        return None
    try:
        reply = resp.json().get("reply")
    except ValueError:
        return "200 without a JSON body"
    expected_len = len("Echo: ") + upload.content_len
    if not isinstance(reply, str) or len(reply) != expected_len or not reply.startswith("Echo: x") \
            or reply.strip("x") != "Echo: ":
        return f"200 with a wrong reply (len {len(reply) if isinstance(reply, str) else '?'})"
    return None


async def one_upload(args, target, pad, deadline) -> dict:
    """Run one slow upload; return its outcome."""
    upload = Upload(target, args.secret, args.size, pad, args.body)
    out = {"outcome": None, "sent": 0, "t_answer": None, "detail": None}
    writer = None
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), max(0.1, deadline - started))
    except (OSError, asyncio.TimeoutError) as exc:
        out["outcome"] = "connect failed"
        out["detail"] = f"{type(exc).__name__}: {exc}"
        return out
    resp_task = asyncio.create_task(read_response_safe(reader))
    try:
        writer.write(upload.head())
        t0 = time.monotonic()
        for k, chunk in enumerate(upload.chunks(args.chunk)):
            if resp_task.done() or time.monotonic() >= deadline or writer.is_closing():
                break
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), max(0.1, deadline - time.monotonic()))
            except (ConnectionResetError, BrokenPipeError, asyncio.TimeoutError):
                break
            out["sent"] += len(chunk)
            next_at = t0 + (k + 1) * args.interval
            await asyncio.wait({resp_task}, timeout=max(0.0, min(next_at, deadline) - time.monotonic()))
        remaining = deadline - time.monotonic()
        done, _ = await asyncio.wait({resp_task}, timeout=max(0.0, remaining))
        if not done:
            out["outcome"] = "no answer by deadline"
            return out
        resp, error = resp_task.result()
        out["t_answer"] = time.monotonic() - t0
        if resp is None:
            out["outcome"] = "cut"
            out["detail"] = error
        else:
            out["outcome"] = str(resp.status)
            if resp.status == 200:
                wrong = check_reply(resp, upload)
                if wrong:
                    out["outcome"] = "200 wrong reply"
                    out["detail"] = wrong
            else:
                out["detail"] = resp.excerpt(120)
        return out
    finally:
        resp_task.cancel()
        close_writer(writer)


async def uploader(args, target, pad, deadline, results: list) -> None:
    while True:
        results.append(await one_upload(args, target, pad, deadline))
        # Uploads still running at the deadline are closed and counted as unanswered.
        if not args.reconnect or time.monotonic() > deadline - 1.0:
            return


async def prober(args, target, t0, stop: asyncio.Event, probes: list) -> None:
    n = 0
    while not stop.is_set() and n < 10_000:
        n += 1
        t = time.monotonic() - t0
        error, latency, req = await valid_request(target, args.secret, f"probe {n} ✓")
        probes.append({"t": round(t, 2), "ok": error is None, "error": error,
                       "latency_ms": round(latency * 1000, 1), "message_id": req.message_id})
        try:
            await asyncio.wait_for(stop.wait(), args.probe_interval)
        except asyncio.TimeoutError:
            pass


def server_nofile(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return " ".join(line.split()[3:5])
    except OSError:
        pass
    return "?"


async def main_async(args) -> int:
    target = Target(args.url)
    info = machine_info()
    print(f"machine: {info}", flush=True)
    nofile = server_nofile(args.pid)
    print(f"server pid {args.pid}, open-files limit (soft hard): {nofile}")
    if nofile != "?" and int(nofile.split()[0]) < args.connections + 64:
        print(f"WARNING: the server's open-files limit {nofile} is below {args.connections} "
              f"connections; start it after `ulimit -n 65536`", flush=True)

    hwm_reset = reset_hwm(args.pid)
    start_status = proc_status(args.pid)
    if "VmRSS" not in start_status:
        print(f"no process {args.pid}", file=sys.stderr)
        return 2
    pad = b"x" * args.size
    t0 = time.monotonic()
    deadline = t0 + args.duration
    stop = asyncio.Event()
    sampler = RssSampler(args.pid)
    sampler_task = asyncio.create_task(sampler.run(t0, stop, deadline + 30))
    probes: list = []
    probe_task = asyncio.create_task(prober(args, target, t0, stop, probes))

    results: list = []
    uploads = [asyncio.create_task(uploader(args, target, pad, deadline, results))
               for _ in range(args.connections)]
    await asyncio.wait(uploads, timeout=args.duration + 10)
    for task in uploads:
        task.cancel()
    await asyncio.gather(*uploads, return_exceptions=True)
    uploads_done = time.monotonic() - t0
    stop.set()
    await asyncio.gather(probe_task, return_exceptions=True)

    # After: let the server settle a second, then three probes and /healthz.
    await asyncio.sleep(1.0)
    after = [await valid_request(target, args.secret, f"after {i} é中👋") for i in range(3)]
    health = await healthz(target)
    await asyncio.sleep(1.0)
    end_status = proc_status(args.pid)
    await asyncio.gather(sampler_task, return_exceptions=True)

    # ----- report -----
    counts = collections.Counter(r["outcome"] for r in results)
    by_outcome_t = collections.defaultdict(list)
    for r in results:
        if r["t_answer"] is not None:
            by_outcome_t[r["outcome"]].append(r["t_answer"])
    peak_t, peak_kb = sampler.peak()
    hwm = end_status.get("VmHWM", 0)
    during_ok = sum(p["ok"] for p in probes)
    after_ok = sum(e is None for e, _, _ in after)
    up = alive(args.pid) and health is None

    print(f"\nslow uploads: {len(results)} uploads on {args.connections} connections, "
          f"{args.size} B each in {args.chunk} B chunks every {args.interval} s, body={args.body}, "
          f"reconnect={args.reconnect}; uploads ended after {uploads_done:.1f} s")
    print("outcomes:")
    for outcome, n in counts.most_common():
        times = sorted(by_outcome_t.get(outcome, []))
        timing = (f"  answered after p50 {percentile(times, .5):.2f} s, max {times[-1]:.2f} s"
                  if times else "")
        print(f"  {outcome:>22}: {n}{timing}")
    details = collections.Counter((r["outcome"], r["detail"]) for r in results
                                  if r["outcome"] not in ("200",) and r["detail"])
    for (outcome, detail), n in details.most_common(6):
        print(f"    e.g. {outcome}: {detail} (x{n})")
    print(f"bytes sent by clients: {sum(r['sent'] for r in results) / 1048576:.1f} MiB")
    print(f"RSS at start {mib(start_status['VmRSS'])}, sampled peak {mib(peak_kb)} at "
          f"t={peak_t:.0f} s, VmHWM {mib(hwm)} (reset at start: {hwm_reset}), "
          f"RSS at end {mib(end_status.get('VmRSS', 0))}; max open fds {sampler.max_fds}")
    peak_for_ratio = max(peak_kb, hwm if hwm_reset else 0)
    if args.baseline_kb:
        print(f"peak / baseline = {peak_for_ratio / args.baseline_kb:.1f}x "
              f"(baseline {mib(args.baseline_kb)})")
    print(f"probes during the uploads: {during_ok}/{len(probes)} answered correctly")
    fails = [p for p in probes if not p["ok"]]
    if fails:
        print(f"  refused from t={fails[0]['t']} s to t={fails[-1]['t']} s; first failures:")
        for p in fails[:3]:
            print(f"    t={p['t']} s message_id={p['message_id']}: {p['error']}")
    print(f"probes after the uploads: {after_ok}/3 correct; /healthz: "
          f"{'ok' if health is None else health}; server process alive: {alive(args.pid)}")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({
                "machine": info, "args": {k: v for k, v in vars(args).items() if k != "secret"},
                "server_nofile": nofile, "outcomes": dict(counts),
                "answer_times": {k: [round(x, 3) for x in sorted(v)] for k, v in by_outcome_t.items()},
                "details": [[o, d, n] for (o, d), n in details.most_common(20)],
                "rss_start_kb": start_status["VmRSS"], "rss_peak_sampled_kb": peak_kb,
                "rss_peak_t": peak_t, "vmhwm_kb": hwm, "hwm_reset": hwm_reset,
                "rss_end_kb": end_status.get("VmRSS", 0), "max_fds": sampler.max_fds,
                "baseline_kb": args.baseline_kb,
                "peak_over_baseline": (round(peak_for_ratio / args.baseline_kb, 2)
                                       if args.baseline_kb else None),
                "probes": probes, "after_ok": after_ok, "after_errors": [e for e, _, _ in after],
                "healthz_after": health, "uploads_ended_s": uploads_done,
                "samples": sampler.samples,
            }, f, indent=1)
    return 0 if up and after_ok == 3 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:<port>[/path]")
    parser.add_argument("--secret", required=True, help="the server's WEBHOOK_SECRET")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1_048_576, help="Content-Length (bytes)")
    parser.add_argument("--chunk", type=int, default=65_536, help="bytes per write")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between writes")
    parser.add_argument("--duration", type=float, default=30.0, help="overall bound (s, <= 120)")
    parser.add_argument("--body", choices=("signed", "garbage"), default="signed")
    parser.add_argument("--reconnect", action="store_true",
                        help="start a new upload on each connection when one ends")
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--baseline-kb", type=int, help="baseline RSS (kB) from baseline.py")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    try:
        Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.duration <= 120 or not 0 < args.connections <= 5000 or args.chunk <= 0:
        parser.error("--duration must be in (0, 120], --connections in (0, 5000], --chunk > 0")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
