#!/usr/bin/env python3
"""Bounded soak: mixed valid and hostile traffic against a running webhook server.

What it does
    For --duration seconds (default 300), --concurrency workers (default 32) each send
    one request at a time on a fresh connection, as the platform does. About 70% are
    valid: correctly signed message_received payloads, half ASCII and half non-ASCII
    (signed with \\uXXXX escapes, sent as raw UTF-8, exactly like the real sender), every
    body with a unique microsecond timestamp and message id. Each valid answer is checked:
    status 200, JSON, reply == "Echo: " + content. The other ~30% are hostile and checked
    against the documented answer:
        wrong_signature      signed with another secret             -> 401
        missing_headers      X-Signature and/or X-Timestamp absent  -> 401
        replay               exact bytes of an accepted request     -> 401 "replayed"
        invalid_json         signed, not JSON                       -> 400
        wrong_shape          signed JSON, not a message_received    -> 422
        body_2mib            signed 2 MiB body                      -> 413 (unread)
        garbage_request      bad request line / TLS hello / huge    -> 400/414/431 from hyper,
                             URI / bad Content-Length                  or closed
    In addition --slow-slots connections (default 6) run at all times, each one of:
        slowloris            head trickled one header every second  -> closed by the server
                                                                       within header_read_timeout
        stalled_body         Content-Length 100000, 10 bytes sent   -> 408 within body_read_timeout
        idle_keepalive       GET /healthz, then idle on keep-alive  -> closed within
                                                                       header_read_timeout
    (default timeouts 10 s; --header-timeout/--body-timeout set what is expected, with a
    --slack of 3 s.) The server's VmRSS is sampled every second from /proc/<pid>/status;
    its VmHWM is reset at the start when permitted (so the peak is this run's) and read at
    the end.

    At the end it prints: counts and outcomes per category, valid requests sent /
    answered correctly / failed (first failures with their message ids, to find them in
    the server log), requests per second, p50/p99/max latency of valid requests, RSS at
    start, peak and at end (and peak / --baseline-kb), and whether the server is still
    up (one more valid request and GET /healthz).

How to run (against a server already started, e.g. the echo example on port 18181):
    python3 bench/soak.py --url http://127.0.0.1:18181 --secret "$WEBHOOK_SECRET" \\
        --pid "$SERVER_PID" --duration 300 --concurrency 32 --baseline-kb 6000 \\
        --json-out /tmp/bench-soak.json

Safety and bounds: only http://127.0.0.1 URLs are accepted; every connection and read
has a timeout (10 s for fast requests, timeout + 10 s at most for the slow ones); no new
request starts after --duration (at most 3600 s) and everything is cancelled 40 s after
it; --max-rate optionally caps valid requests per second. Exit status: 0 only if every
valid request was answered correctly and the server is still up at the end; hostile
requests answered unexpectedly are reported but do not change the exit status.
Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import sys
import time

from webhook_client import (
    NoResponse,
    RssSampler,
    Target,
    alive,
    close_writer,
    encode,
    exchange,
    get_head,
    healthz,
    machine_info,
    make_payload,
    mib,
    percentile,
    proc_status,
    read_response,
    reset_hwm,
    sender_head,
    signed_request,
    check_echo,
)

REQUEST_TIMEOUT = 10.0  # s, per fast request (the platform itself waits 8 s)
PLATFORM_TIMEOUT = 8.0
MIB = 1024 * 1024

NON_ASCII = [
    "Café 中文 👋",
    "naïve Zürich ß Ω",
    "DEL\x7f at the edge of the trap",
    'emoji 🎉🚀 "quotes" \\ backslash\nnewline\ttab',
    "日本語のメッセージです",
    "Ünïcödé ✓ — dash … ellipsis",
]

# Relative weights of the fast hostile categories (together --hostile-share of picks).
HOSTILE_WEIGHTS = {
    "wrong_signature": 5,
    "missing_headers": 4,
    "replay": 5,
    "invalid_json": 4,
    "wrong_shape": 4,
    "body_2mib": 1,
    "garbage_request": 3,
}
SLOW_KINDS = ("slowloris", "stalled_body", "idle_keepalive")


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.target = Target(args.url)
        self.secret = args.secret
        self.rng = random.Random(args.seed)
        self.t0 = 0.0
        self.deadline = 0.0
        # category -> Counter(outcome label); "ok" means as expected.
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.unexpected: list[dict] = []
        self.valid_sent = 0
        self.valid_ok = 0
        self.valid_failures: list[dict] = []
        self.valid_latencies: list[float] = []
        self.valid_over_platform_timeout = 0
        self.accepted = collections.deque(maxlen=256)  # bytes of accepted requests, for replays
        self.close_times: dict[str, list[float]] = collections.defaultdict(list)
        self.per_10s: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        self.next_valid_at = 0.0
        big = make_payload("")
        big["history_tail"] = []
        base = len(encode(big)[0])
        big["message"]["content"] = "x" * (2 * MIB - base)
        self.big_body, self.big_signed = encode(big)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, category: str, label: str, expected: bool, detail: str = "") -> None:
        self.outcomes[category][label if not expected else "ok"] += 1
        self.per_10s[int(self.now() // 10)][category + (":ok" if expected else ":unexpected")] += 1
        if not expected and len(self.unexpected) < 200:
            self.unexpected.append({"t": round(self.now(), 2), "category": category,
                                    "outcome": label, "detail": detail[:300]})

    # ----- valid -----

    async def valid(self) -> None:
        if self.args.max_rate:
            now = time.monotonic()
            self.next_valid_at = max(self.next_valid_at, now) + 1.0 / self.args.max_rate
            await asyncio.sleep(max(0.0, self.next_valid_at - now - 1.0 / self.args.max_rate))
        non_ascii = self.rng.random() < 0.5
        n = self.valid_sent
        if non_ascii:
            content = f"{self.rng.choice(NON_ASCII)} #{n}"
            content_json = {"café": {"標籤": ["中文", "👋"]}, "n": n} if n % 3 == 0 else {}
        else:
            content = f"hello world #{n}"
            if n % 50 == 0:
                content += " lorem ipsum" * 800  # ~10 KB now and then
            content_json = {"source": "bench"} if n % 3 == 0 else {}
        category = "valid_non_ascii" if non_ascii else "valid_ascii"
        req = signed_request(self.target, self.secret, make_payload(content, content_json))
        self.valid_sent += 1
        started = time.monotonic()
        try:
            resp = await exchange(self.target, req.head + req.body, REQUEST_TIMEOUT)
            error = check_echo(resp, content)
        except (OSError, NoResponse, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency = time.monotonic() - started
        self.valid_latencies.append(latency)
        if latency > PLATFORM_TIMEOUT:
            self.valid_over_platform_timeout += 1
        if error is None:
            self.valid_ok += 1
            self.accepted.append(req.head + req.body)
            self.record(category, "ok", True)
        else:
            self.record(category, error.split(" body ")[0][:60], False, error)
            if len(self.valid_failures) < 50:
                self.valid_failures.append({
                    "t": round(self.now() - latency, 3), "latency_s": round(latency, 3),
                    "category": category, "message_id": req.message_id,
                    "thread_id": req.thread_id, "error": error[:300],
                })

    # ----- fast hostile -----

    async def expect_status(self, category: str, data: bytes, statuses: tuple[int, ...],
                            must_contain: str | None = None) -> None:
        try:
            resp = await exchange(self.target, data, REQUEST_TIMEOUT)
        except (OSError, NoResponse, asyncio.TimeoutError) as exc:
            self.record(category, f"no response ({type(exc).__name__})", False, str(exc))
            return
        ok = resp.status in statuses
        if ok and resp.status >= 400 and resp.headers.get("content-length", "0") != "0":
            try:
                body = resp.json()
                ok = isinstance(body, dict) and isinstance(body.get("error"), str)
                if ok and self.secret in resp.body.decode("utf-8", "replace"):
                    self.record(category, "SECRET LEAKED in error body", False, resp.excerpt())
                    return
            except ValueError:
                ok = False
        if ok and must_contain and must_contain not in resp.body.decode("utf-8", "replace"):
            ok = False
        self.record(category, f"status {resp.status}", ok, resp.excerpt())

    async def hostile(self, category: str) -> None:
        t = self.target
        if category == "wrong_signature":
            req = make_payload("signed with the wrong secret")
            body, signed = encode(req)
            head = sender_head(t, len(body), secret="not-" + self.secret, signed_parts=(signed,))
            await self.expect_status(category, head + body, (401,), "signature mismatch")
        elif category == "missing_headers":
            body, signed = encode(make_payload("unsigned"))
            omit = self.rng.choice((("X-Signature",), ("X-Timestamp",),
                                    ("X-Signature", "X-Timestamp")))
            head = sender_head(t, len(body), secret=self.secret, signed_parts=(signed,), omit=omit)
            await self.expect_status(category, head + body, (401,), "missing")
        elif category == "replay":
            if not self.accepted:
                await self.valid()
                return
            await self.expect_status(category, self.accepted.popleft(), (401,), "replayed")
        elif category == "invalid_json":
            # A nonce in each body: identical signed bytes would be caught as replays
            # (the replay check runs before the JSON parse).
            nonce = f"{self.valid_sent}-{self.rng.random()}".encode()
            body = self.rng.choice([b"{not json ", b'{"version":"1.0","n":', b"\xff\xfe garbage ",
                                    b'{"a":1,,'])
            body += nonce
            head = sender_head(t, len(body), secret=self.secret, signed_parts=(body,))
            await self.expect_status(category, head + body, (400,))
        elif category == "wrong_shape":
            nonce = f"{self.valid_sent}-{self.rng.random()}"
            shape = self.rng.choice([
                {"version": "1.0", "event": "message_received", "nonce": nonce},
                {**make_payload("deleted"), "event": "message_deleted"},
                {**make_payload("x"), "message": {"content": 42}},
                [1, 2, 3, nonce],
            ])
            body, signed = encode(shape)
            head = sender_head(t, len(body), secret=self.secret, signed_parts=(signed,))
            await self.expect_status(category, head + body, (422,))
        elif category == "body_2mib":
            await self.body_2mib()
        elif category == "garbage_request":
            await self.garbage_request()

    async def body_2mib(self) -> None:
        """A signed 2 MiB body; the server answers 413 from Content-Length and closes
        without reading it, so our sending usually fails (EPIPE/ECONNRESET) before it
        completes. A raw socket is used because an asyncio transport discards the already
        received 413 on a failed write; with a plain socket it can still be read."""
        category = "body_2mib"
        loop = asyncio.get_running_loop()
        head = sender_head(self.target, len(self.big_body), secret=self.secret,
                           signed_parts=(self.big_signed,))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sent, send_error = 0, ""
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (self.target.host, self.target.port)),
                                   REQUEST_TIMEOUT)
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, head), REQUEST_TIMEOUT)
                view = memoryview(self.big_body)
                while sent < len(view):
                    await asyncio.wait_for(loop.sock_sendall(sock, view[sent:sent + 65536]),
                                           REQUEST_TIMEOUT)
                    sent = min(len(view), sent + 65536)
            except (ConnectionResetError, BrokenPipeError) as exc:
                send_error = f" ({type(exc).__name__} after {sent} body bytes)"
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), REQUEST_TIMEOUT)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"HTTP/1.1 "):
                self.record(category, "no response", False, f"got {data[:80]!r}{send_error}")
                return
            status = int(data.split(b" ", 2)[1])
            self.record(category, f"status {status}", status == 413, data[:200].decode("latin-1"))
        except (OSError, asyncio.TimeoutError) as exc:
            self.record(category, f"no response ({type(exc).__name__})", False,
                        f"{exc}{send_error}")
        finally:
            sock.close()

    async def garbage_request(self) -> None:
        category = "garbage_request"
        kind, data = self.rng.choice([
            ("bad request line", b"GARBAGE\r\n\r\n"),
            ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                                 + bytes(self.rng.randrange(256) for _ in range(64))),
            ("HTTP/9.9", b"GET /../../etc/passwd HTTP/9.9\r\nHost: x\r\n\r\n"),
            ("bad Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
            ("20 KB URI", b"POST /" + b"A" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ])
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port), REQUEST_TIMEOUT)
            writer.write(data)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
            try:
                resp = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
                label = f"{kind}: status {resp.status}"
                self.record(category, label, resp.status in (400, 414, 431), label)
            except NoResponse:
                self.record(category, f"{kind}: closed", True)
        except (ConnectionResetError, BrokenPipeError):
            self.record(category, f"{kind}: reset", True)
        except (OSError, asyncio.TimeoutError) as exc:
            self.record(category, f"{kind}: {type(exc).__name__}", False, str(exc))
        finally:
            close_writer(writer)

    # ----- slow hostile -----

    async def wait_closed(self, reader, limit: float) -> tuple[str, float]:
        """Read until the server closes; return (how, seconds waited), or ("open", limit)."""
        started = time.monotonic()
        got = b""
        while True:
            remaining = limit - (time.monotonic() - started)
            if remaining <= 0:
                return "still open", limit
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except asyncio.TimeoutError:
                return "still open", limit
            except (ConnectionResetError, BrokenPipeError):
                return "reset", time.monotonic() - started
            if not data:
                status = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else None
                how = f"closed after status {status}" if status else "closed"
                return how, time.monotonic() - started
            got += data

    async def slow(self, kind: str) -> None:
        a = self.args
        header_limit = a.header_timeout + a.slack
        body_limit = a.body_timeout + a.slack
        give_up = max(a.header_timeout, a.body_timeout) + 10
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port), REQUEST_TIMEOUT)
            started = time.monotonic()
            if kind == "slowloris":
                writer.write(f"POST {self.target.path} HTTP/1.1\r\n".encode())
                n = 0
                how, waited = "still open", give_up
                while time.monotonic() - started < give_up:
                    try:
                        writer.write(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
                        await asyncio.wait_for(writer.drain(), 5)
                    except (ConnectionResetError, BrokenPipeError, asyncio.TimeoutError):
                        how, waited = "reset while sending", time.monotonic() - started
                        break
                    n += 1
                    how, _ = await self.wait_closed(reader, 1.0)
                    if how != "still open":
                        waited = time.monotonic() - started
                        break
                self.close_times[kind].append(waited)
                self.record(kind, f"{how} after {waited:.0f} s", waited <= header_limit,
                            f"{n} header lines trickled")
            elif kind == "stalled_body":
                head = sender_head(self.target, 100_000, secret=self.secret,
                                   signature="sha256=" + "0" * 64)
                writer.write(head + b'{"version":')
                await asyncio.wait_for(writer.drain(), 5)
                started = time.monotonic()
                try:
                    resp = await asyncio.wait_for(read_response(reader), give_up)
                    waited = time.monotonic() - started
                    self.close_times[kind].append(waited)
                    self.record(kind, f"status {resp.status} after {waited:.0f} s",
                                resp.status == 408 and waited <= body_limit, resp.excerpt())
                except asyncio.TimeoutError:
                    self.record(kind, f"no answer within {give_up:.0f} s", False)
                except NoResponse as exc:
                    waited = time.monotonic() - started
                    self.record(kind, f"closed without response after {waited:.0f} s", False,
                                str(exc))
            else:  # idle_keepalive
                writer.write(get_head(self.target, "/healthz"))
                await asyncio.wait_for(writer.drain(), 5)
                resp = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
                if resp.status != 200:
                    self.record(kind, f"healthz status {resp.status}", False, resp.excerpt())
                    return
                how, waited = await self.wait_closed(reader, give_up)
                self.close_times[kind].append(waited)
                self.record(kind, f"{how} after {waited:.0f} s",
                            how != "still open" and waited <= header_limit)
        except (OSError, NoResponse, asyncio.TimeoutError) as exc:
            self.record(kind, f"error {type(exc).__name__}", False, str(exc))
        finally:
            close_writer(writer)

    # ----- drivers -----

    async def worker(self) -> None:
        cats, weights = zip(*HOSTILE_WEIGHTS.items())
        count = 0
        while time.monotonic() < self.deadline and count < 10_000_000:
            count += 1
            if self.rng.random() < self.args.hostile_share:
                await self.hostile(self.rng.choices(cats, weights)[0])
            else:
                await self.valid()

    async def slow_worker(self, index: int) -> None:
        bound = max(self.args.header_timeout, self.args.body_timeout) + 20
        count = 0
        while time.monotonic() + bound < self.deadline + 30 and count < 100_000:
            await self.slow(SLOW_KINDS[(index + count) % len(SLOW_KINDS)])
            count += 1

    async def run(self) -> int:
        a = self.args
        info = machine_info()
        print(f"machine: {info}", flush=True)
        hwm_reset = reset_hwm(a.pid) if a.pid else False
        start = proc_status(a.pid) if a.pid else {}
        if a.pid and "VmRSS" not in start:
            print(f"no process {a.pid}", file=sys.stderr)
            return 2
        self.t0 = time.monotonic()
        self.deadline = self.t0 + a.duration
        stop = asyncio.Event()
        sampler = RssSampler(a.pid) if a.pid else None
        sampler_task = (asyncio.create_task(sampler.run(self.t0, stop, self.deadline + 60))
                        if sampler else None)
        tasks = [asyncio.create_task(self.worker()) for _ in range(a.concurrency)]
        tasks += [asyncio.create_task(self.slow_worker(i)) for i in range(a.slow_slots)]
        _, pending = await asyncio.wait(tasks, timeout=a.duration + 40)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - self.t0
        if pending:
            print(f"note: {len(pending)} tasks were still running 40 s after the deadline "
                  f"and were cancelled")

        final_error, final_latency, final_req = await self.final_valid()
        health = await healthz(self.target)
        await asyncio.sleep(1.0)
        end = proc_status(a.pid) if a.pid else {}
        stop.set()
        if sampler_task:
            await asyncio.gather(sampler_task, return_exceptions=True)
        up = (alive(a.pid) if a.pid else True) and health is None and final_error is None
        return self.report(info, elapsed, start, end, sampler, hwm_reset, final_error,
                           final_req, health, up)

    async def final_valid(self):
        content = "final check é中👋"
        req = signed_request(self.target, self.secret, make_payload(content))
        started = time.monotonic()
        try:
            resp = await exchange(self.target, req.head + req.body, REQUEST_TIMEOUT)
            error = check_echo(resp, content)
        except (OSError, NoResponse, asyncio.TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return error, time.monotonic() - started, req

    def report(self, info, elapsed, start, end, sampler, hwm_reset, final_error, final_req,
               health, up) -> int:
        a = self.args
        total = sum(sum(c.values()) for c in self.outcomes.values())
        lat = sorted(self.valid_latencies)
        print(f"\nsoak: {elapsed:.1f} s, concurrency {a.concurrency} (+{a.slow_slots} slow "
              f"connections), hostile share {a.hostile_share}, max-rate {a.max_rate or 'none'}")
        print(f"{'category':>18} {'sent':>8} {'as expected':>12}  other outcomes")
        for category in sorted(self.outcomes):
            c = self.outcomes[category]
            others = ", ".join(f"{k} x{v}" for k, v in c.most_common() if k != "ok")
            print(f"{category:>18} {sum(c.values()):>8} {c['ok']:>12}  {others}")
        for kind, times in sorted(self.close_times.items()):
            ts = sorted(times)
            print(f"  {kind}: closed/answered after p50 {percentile(ts, .5):.1f} s, "
                  f"max {ts[-1]:.1f} s (n={len(ts)})")
        failed = self.valid_sent - self.valid_ok
        print(f"valid requests: sent {self.valid_sent}, answered correctly {self.valid_ok}, "
              f"failed {failed}; slower than the platform's 8 s: {self.valid_over_platform_timeout}")
        for f in self.valid_failures[:5]:
            print(f"  FAIL t={f['t']} s latency {f['latency_s']} s {f['category']} "
                  f"message_id={f['message_id']}: {f['error']}")
        unexpected_hostile = [u for u in self.unexpected if not u["category"].startswith("valid")]
        for u in unexpected_hostile[:5]:
            print(f"  unexpected hostile outcome t={u['t']} s {u['category']}: {u['outcome']} "
                  f"{u['detail'][:120]}")
        print(f"requests per second: {total / elapsed:.1f} overall, "
              f"{self.valid_sent / elapsed:.1f} valid")
        print(f"valid latency: p50 {percentile(lat, .5) * 1000:.1f} ms, "
              f"p99 {percentile(lat, .99) * 1000:.1f} ms, max {lat[-1] * 1000 if lat else 0:.1f} ms")
        peak_t, peak_kb = sampler.peak() if sampler else (0.0, 0)
        hwm = end.get("VmHWM", 0)
        if a.pid:
            print(f"RSS at start {mib(start['VmRSS'])}, sampled peak {mib(peak_kb)} at "
                  f"t={peak_t:.0f} s, VmHWM {mib(hwm)} (reset at start: {hwm_reset}), "
                  f"RSS at end {mib(end.get('VmRSS', 0))}; max open fds {sampler.max_fds}")
        peak_for_ratio = max(peak_kb, hwm if hwm_reset else 0)
        if a.baseline_kb and a.pid:
            print(f"peak / baseline = {peak_for_ratio / a.baseline_kb:.1f}x "
                  f"(baseline {mib(a.baseline_kb)})")
        print(f"server still up: {'yes' if up else 'NO'} (final valid request: "
              f"{'ok' if final_error is None else final_error}; GET /healthz: "
              f"{'ok' if health is None else health}; process alive: "
              f"{alive(a.pid) if a.pid else 'not checked'})")
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump({
                    "machine": info,
                    "args": {k: v for k, v in vars(a).items() if k != "secret"},
                    "elapsed_s": elapsed, "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
                    "valid_sent": self.valid_sent, "valid_ok": self.valid_ok,
                    "valid_failures": self.valid_failures,
                    "valid_over_8s": self.valid_over_platform_timeout,
                    "unexpected": self.unexpected, "rps_total": total / elapsed,
                    "rps_valid": self.valid_sent / elapsed,
                    "latency_ms": {"p50": percentile(lat, .5) * 1000,
                                   "p99": percentile(lat, .99) * 1000,
                                   "max": lat[-1] * 1000 if lat else None},
                    "close_times": {k: sorted(v) for k, v in self.close_times.items()},
                    "rss_start_kb": start.get("VmRSS"), "rss_peak_sampled_kb": peak_kb,
                    "rss_peak_t": peak_t, "vmhwm_kb": hwm, "hwm_reset": hwm_reset,
                    "rss_end_kb": end.get("VmRSS"), "max_fds": sampler.max_fds if sampler else None,
                    "baseline_kb": a.baseline_kb,
                    "peak_over_baseline": (round(peak_for_ratio / a.baseline_kb, 2)
                                           if a.baseline_kb and a.pid else None),
                    "final_error": final_error, "final_message_id": final_req.message_id,
                    "healthz": health, "up": up,
                    "per_10s": {k: dict(v) for k, v in sorted(self.per_10s.items())},
                    "samples": sampler.samples if sampler else [],
                }, f, indent=1)
        return 0 if failed == 0 and up else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:<port>[/path]")
    parser.add_argument("--secret", required=True, help="the server's WEBHOOK_SECRET")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (<= 3600)")
    parser.add_argument("--concurrency", type=int, default=32, help="fast workers")
    parser.add_argument("--pid", type=int, help="the server's process id (for RSS)")
    parser.add_argument("--slow-slots", type=int, default=6,
                        help="slowloris / stalled-body / idle keep-alive connections at once")
    parser.add_argument("--hostile-share", type=float, default=0.3)
    parser.add_argument("--max-rate", type=float, default=0.0,
                        help="cap on valid requests per second (0: none)")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="the server's header_read_timeout (s), for the expectations")
    parser.add_argument("--body-timeout", type=float, default=10.0,
                        help="the server's body_read_timeout (s), for the expectations")
    parser.add_argument("--slack", type=float, default=3.0, help="tolerance on those (s)")
    parser.add_argument("--baseline-kb", type=int, help="baseline RSS (kB) from baseline.py")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    try:
        Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.duration <= 3600 or not 0 < args.concurrency <= 1000 \
            or not 0 <= args.slow_slots <= 100 or not 0 <= args.hostile_share <= 1:
        parser.error("--duration in (0, 3600], --concurrency in (0, 1000], "
                     "--slow-slots in [0, 100], --hostile-share in [0, 1]")
    return asyncio.run(Soak(args).run())


if __name__ == "__main__":
    sys.exit(main())
