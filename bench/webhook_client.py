"""Shared pieces of the benchmark scripts: signing, payloads, raw HTTP/1.1 over asyncio
streams, and sampling a process's memory from /proc.

Standard library only (Python 3.11). Imported by soak.py, slow_uploads.py and
baseline.py, which live next to it; it does nothing when run on its own.

Safety: `Target` refuses any URL whose host is not the literal 127.0.0.1, so the
scripts can only ever talk to this machine, and every network operation here takes
an explicit timeout.

The signing follows the real sender (see /work/shared/CONTRACT.md and
tests/sender/platform_sender.py): the HMAC-SHA256 is computed over
``X-Timestamp + "." + json.dumps(payload, separators=(",", ":"))`` (ensure_ascii=True,
so every character >= U+007F is signed as a \\uXXXX escape), while the body is sent as
the same compact JSON with raw UTF-8 (ensure_ascii=False).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

USER_AGENT = "python-httpx/0.28.1"
GREETING = "Hello there! How can I help you today?"
ALLOWED_HOST = "127.0.0.1"


# ---------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------


class Target:
    """Host, port, Host header and path of an http://127.0.0.1:<port>/... URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"expected an http:// URL, got {url!r}")
        if parts.hostname != ALLOWED_HOST:
            raise ValueError(f"these benchmarks only target {ALLOWED_HOST}, got {parts.hostname!r}")
        self.host = ALLOWED_HOST
        self.port = parts.port or 80
        self.host_header = self.host if self.port == 80 else f"{self.host}:{self.port}"
        self.path = parts.path or "/"


# ---------------------------------------------------------------------------
# Payloads and signatures
# ---------------------------------------------------------------------------


class UniqueClock:
    """ISO 8601 timestamps (Python isoformat, +00:00) that strictly increase by at least
    one microsecond, so no two bodies this process makes are byte-identical."""

    def __init__(self) -> None:
        self._last_us = 0

    def iso(self) -> str:
        now_us = time.time_ns() // 1000
        if now_us <= self._last_us:
            now_us = self._last_us + 1
        self._last_us = now_us
        when = datetime.fromtimestamp(now_us / 1_000_000, tz=timezone.utc)
        # fromtimestamp through a float can be off by a microsecond; rebuild exactly.
        when = when.replace(microsecond=now_us % 1_000_000)
        return when.isoformat()


CLOCK = UniqueClock()


def entry(role: str, content: str, content_json: dict | None = None) -> dict:
    return {"role": role, "content": content, "content_json": content_json or {}}


def make_payload(content: str, content_json: dict | None = None, *, history: bool = True) -> dict:
    """A message_received payload, keys in the sender's order, unique ids and timestamp."""
    content_json = {} if content_json is None else content_json
    tail = [entry("assistant", GREETING, {"source": "system"}), entry("user", content, content_json)]
    return {
        "version": "1.0",
        "event": "message_received",
        "app": {"id": str(uuid.uuid4()), "name": "Bench Bot"},
        "thread": {"id": str(uuid.uuid4()), "customer_id": "bench-customer"},
        "message": {
            "id": str(uuid.uuid4()),
            "seq": 2,
            "role": "user",
            "content": content,
            "content_json": content_json,
        },
        "history_tail": tail if history else [],
        "timestamp": CLOCK.iso(),
    }


def encode(payload) -> tuple[bytes, bytes]:
    """(body as transmitted: raw UTF-8, text the sender signs: ASCII with \\u escapes)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signed = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return body, signed


def sign(secret: str, timestamp: str, *signed_parts: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256(secret, timestamp + "." + signed text)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b".", hashlib.sha256)
    for part in signed_parts:
        mac.update(part)
    return "sha256=" + mac.hexdigest()


def sender_head(
    target: Target,
    content_length: int,
    *,
    secret: str | None,
    signed_parts: tuple[bytes, ...] = (),
    timestamp: str | None = None,
    signature: str | None = None,
    omit: tuple[str, ...] = (),
    app_id: str | None = None,
    thread_id: str | None = None,
    method: str = "POST",
    path: str | None = None,
) -> bytes:
    """The request head in the real sender's header order (Host, Accept, Accept-Encoding,
    Connection, User-Agent, Content-Type, X-App-Id, X-Thread-Id, X-Timestamp, X-Signature,
    Content-Length). ``signature``/``timestamp`` override computed values; ``omit`` drops
    headers by name."""
    headers = [
        ("Host", target.host_header),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("User-Agent", USER_AGENT),
        ("Content-Type", "application/json"),
        ("X-App-Id", app_id or str(uuid.uuid4())),
        ("X-Thread-Id", thread_id or str(uuid.uuid4())),
    ]
    if secret:
        ts = timestamp or str(int(time.time()))
        headers.append(("X-Timestamp", ts))
        headers.append(("X-Signature", signature or sign(secret, ts, *signed_parts)))
    headers.append(("Content-Length", str(content_length)))
    lines = [f"{method} {path or target.path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers if k not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class SignedRequest:
    """A complete, correctly signed request: head + body bytes and the expected reply."""

    head: bytes
    body: bytes
    content: str
    message_id: str
    thread_id: str


def signed_request(target: Target, secret: str, payload: dict) -> SignedRequest:
    body, signed = encode(payload)
    head = sender_head(
        target,
        len(body),
        secret=secret,
        signed_parts=(signed,),
        app_id=payload["app"]["id"],
        thread_id=payload["thread"]["id"],
    )
    return SignedRequest(head, body, payload["message"]["content"], payload["message"]["id"],
                         payload["thread"]["id"])


def get_head(target: Target, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {target.host_header}\r\nAccept: */*\r\n"
        f"Connection: keep-alive\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
    ).encode("latin-1")


# ---------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams
# ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def excerpt(self, limit: int = 160) -> str:
        text = repr(self.body[:limit])
        return text + ("..." if len(self.body) > limit else "")


class NoResponse(Exception):
    """The connection ended (EOF or reset) before a complete response arrived."""


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response: status line, headers, Content-Length or chunked body, or
    until EOF. Raises NoResponse if the connection ends before the head is complete."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise NoResponse(f"EOF after {len(exc.partial)} response bytes") from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise NoResponse(type(exc).__name__) from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise NoResponse(f"not an HTTP status line: {lines[0][:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    try:
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(data[:-2])
            body = b"".join(chunks)
        else:
            body = await reader.read()  # until EOF
    except asyncio.IncompleteReadError as exc:
        raise NoResponse(f"status {status}: body cut after {len(exc.partial)} bytes") from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise NoResponse(f"status {status}: body cut ({type(exc).__name__})") from None
    return Response(status, headers, body)


async def read_response_safe(reader):
    """(response, None) or (None, why the connection ended without one)."""
    try:
        return await read_response(reader), None
    except NoResponse as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def open_conn(target: Target, timeout: float):
    return await asyncio.wait_for(asyncio.open_connection(target.host, target.port), timeout)


def close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        try:
            writer.close()
        except Exception:  # already closed / reset: nothing left to release
            pass


async def exchange(target: Target, data: bytes, timeout: float) -> Response:
    """Fresh connection, send ``data`` (head + body), read one response, close.
    The whole exchange is bounded by ``timeout`` seconds."""

    async def run() -> Response:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            writer.write(data)
            await writer.drain()
            return await read_response(reader)
        finally:
            close_writer(writer)

    return await asyncio.wait_for(run(), timeout)


def check_echo(resp: Response, content: str) -> str | None:
    """None if the response is what the platform accepts (200, JSON object,
    reply == "Echo: " + content), else a short description of what was wrong."""
    if resp.status != 200:
        return f"status {resp.status} body {resp.excerpt()}"
    if not resp.headers.get("content-type", "").lower().startswith("application/json"):
        return f"Content-Type {resp.headers.get('content-type')!r}"
    try:
        obj = resp.json()
    except ValueError:
        return f"body is not JSON: {resp.excerpt()}"
    if not isinstance(obj, dict) or obj.get("reply") != "Echo: " + content:
        return f"wrong reply: {resp.excerpt()}"
    return None


async def valid_request(target: Target, secret: str, content: str, timeout: float = 10.0):
    """Send one correctly signed message; return (error or None, latency s, request)."""
    req = signed_request(target, secret, make_payload(content))
    started = time.monotonic()
    try:
        resp = await exchange(target, req.head + req.body, timeout)
        error = check_echo(resp, content)
    except (OSError, NoResponse, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return error, time.monotonic() - started, req


async def healthz(target: Target, timeout: float = 10.0) -> str | None:
    """None when GET /healthz answers 200 {"status":"ok"}."""
    try:
        resp = await exchange(target, get_head(target, "/healthz"), timeout)
    except (OSError, NoResponse, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        if resp.status == 200 and resp.json().get("status") == "ok":
            return None
    except ValueError:
        pass
    return f"status {resp.status} body {resp.excerpt()}"


# ---------------------------------------------------------------------------
# Memory of the server process
# ---------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and open file descriptor count of ``pid``; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return out
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: write 5 to clear_refs), so the
    peak reported is this run's. Returns False if not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/status") and "VmRSS" in proc_status(pid)


@dataclass
class RssSampler:
    """Samples VmRSS once per ``interval`` seconds while ``run()`` is awaited."""

    pid: int
    interval: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s since start, kB)
    max_fds: int = 0

    async def run(self, t0: float, stop: asyncio.Event, hard_deadline: float) -> None:
        while not stop.is_set() and time.monotonic() < hard_deadline:
            st = proc_status(self.pid)
            if "VmRSS" in st:
                self.samples.append((time.monotonic() - t0, st["VmRSS"]))
                self.max_fds = max(self.max_fds, st.get("fds", 0))
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    def peak(self) -> tuple[float, int]:
        return max(self.samples, key=lambda s: s[1]) if self.samples else (0.0, 0)


def machine_info() -> dict:
    """nproc, CPU model, total memory, load average: recorded at the start of each run."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        mem_kb, load = 0, "?"
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg_1_5_15": load,
    }


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f} MiB"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]
