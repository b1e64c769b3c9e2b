#!/usr/bin/env python3
"""Acceptance test: an independent emulation of the chat platform's webhook sender.

The real sender is the platform's backend, which posts one request per user message
with Python httpx 0.28.1 (see /work/shared/CONTRACT.md for the authoritative wire
description). This script reproduces that request byte for byte with the standard
library only -- header order, compact JSON body, and the signing quirk -- and checks
that a partner server (here: the crate's echo example) answers every variant the
platform really produces with ``200 {"reply": "Echo: <message.content>"}``.

With ``--stream`` it reads the answers as the platform's Chat screen does instead: the
backend proxies the partner's ``text/event-stream`` bytes, decoding each network chunk
on its own, and the browser splits them into ``event:``/``data:`` lines, forgetting the
event name at every read; it appends each ``delta``'s text and stops at ``done``. The
check is that this yields exactly ``Echo: <message.content>``. The dashboard's "Test
webhook" request is still expected to get JSON, the only thing that button reads.

With ``--hostile`` it also sends requests the server must refuse (bad signatures,
stale timestamps, malformed or oversized bodies, wrong method or media type), checks
the status and the ``{"error": "..."}`` body of each refusal, and after every one of
them checks that the server still answers a valid request.

Run it against a server that is already listening::

    python3 tests/sender/platform_sender.py --url http://127.0.0.1:8080
    python3 tests/sender/platform_sender.py --url http://127.0.0.1:8080/webhook \\
        --secret "$WEBHOOK_SECRET" --hostile

``--secret`` must match the server's configured secret (omit it for a server that has
none). Each check prints ``ok   <name>`` or ``FAIL <name>: <expected vs got>``; the
last line is ``N passed, M failed``. The exit status is 0 only when nothing failed.
Every network operation has a 10 s timeout, so the script never hangs.
"""

import argparse
import gzip
import hashlib
import hmac
import http.client
import json
import select
import socket
import sys
import time
import uuid
import zlib
from datetime import datetime, timezone
from urllib.parse import urlsplit

TIMEOUT_S = 10.0
USER_AGENT = "python-httpx/0.28.1"
GREETING = "Hello there! How can I help you today?"
ZERO_THREAD_ID = "00000000-0000-0000-0000-000000000000"
TEST_MESSAGE_ID = "00000000-0000-0000-0000-000000000001"
MIB = 1024 * 1024


class Failed(Exception):
    """A check's expectation was not met; the message says expected vs got."""


# ---------------------------------------------------------------------------
# Target URL
# ---------------------------------------------------------------------------


class Target:
    """Where to send: host and port to connect to, Host header value, request path."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL with a host, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        # httpx sends the port in Host only when it is not the scheme's default.
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == 80 else f"{host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# ---------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------


def now_iso() -> str:
    """The payload timestamp exactly as the sender makes it (isoformat, +00:00)."""
    return datetime.now(timezone.utc).isoformat()


def entry(role: str, content: str, content_json: dict | None = None) -> dict:
    """One history_tail item."""
    return {"role": role, "content": content, "content_json": content_json or {}}


def make_payload(
    content: str,
    content_json: dict | None = None,
    *,
    history_before: list | None = None,
    app_name: str = "Support Bot",
    customer_id: str | None = "customer-42",
    thread_id: str | None = None,
    message_id: str | None = None,
    seq: int = 2,
    timestamp: str | None = None,
) -> dict:
    """A "message_received" payload, keys in the sender's order.

    history_tail holds ``history_before`` (oldest first) followed by the current
    message, since the sender's tail includes the message being delivered.
    """
    content_json = {} if content_json is None else content_json
    if history_before is None:
        history_before = [entry("assistant", GREETING, {"source": "system"})]
    return {
        "version": "1.0",
        "event": "message_received",
        "app": {"id": str(uuid.uuid4()), "name": app_name},
        "thread": {"id": thread_id or str(uuid.uuid4()), "customer_id": customer_id},
        "message": {
            "id": message_id or str(uuid.uuid4()),
            "seq": seq,
            "role": "user",
            "content": content,
            "content_json": content_json,
        },
        "history_tail": [*history_before, entry("user", content, content_json)],
        "timestamp": timestamp or now_iso(),
    }


def encode(payload: dict) -> tuple[bytes, str]:
    """Return (body bytes as transmitted, text the sender signs).

    THE SIGNING TRAP: the sender transmits compact JSON with raw UTF-8
    (ensure_ascii=False) but computes the HMAC over json.dumps with the default
    ensure_ascii=True, which writes every character >= U+007F (DEL included) as a
    lowercase \\uXXXX escape, and characters above U+FFFF as a surrogate pair
    (e.g. U+1F44B -> \\ud83d\\udc4b). For ASCII-only payloads both are identical;
    for anything else a server that verifies only the raw body rejects the
    message. We reproduce the quirk faithfully, because that is what the real
    platform does.
    """
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signed_text = json.dumps(payload, separators=(",", ":"))
    return body, signed_text


def signature(secret: str, timestamp: str, signed_text: str | bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256(secret, timestamp + "." + signed text)."""
    if isinstance(signed_text, str):
        signed_text = signed_text.encode("utf-8")
    msg = timestamp.encode("ascii") + b"." + signed_text
    return "sha256=" + hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------
# Transport
# ---------------------------------------------------------------------------


class Response:
    """Status, headers and (content-decoded) body of one answer."""

    def __init__(self, status: int, headers: list, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self):
        """The body parsed as JSON, or raise Failed with a short excerpt."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Failed(f"expected a JSON body, got {excerpt(self.body)} ({exc})") from None


def excerpt(body: bytes, limit: int = 120) -> str:
    text = repr(body[:limit])
    return text + ("..." if len(body) > limit else "")


def decode_content(headers: list, body: bytes) -> bytes:
    """Undo Content-Encoding: we advertise gzip/deflate like httpx, which decodes them."""
    encoding = ""
    for key, value in headers:
        if key.lower() == "content-encoding":
            encoding = value.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:  # some servers send raw deflate without the zlib wrapper
            return zlib.decompress(body, -zlib.MAX_WBITS)
    return body


def sender_headers(
    target: Target,
    body: bytes,
    *,
    secret: str | None,
    signed_text: str | bytes | None = None,
    content_type: str = "application/json",
    app_id: str | None = None,
    thread_id: str | None = None,
    timestamp: str | None = None,
    sig: str | None = None,
    omit: tuple = (),
) -> list:
    """The sender's headers, in its exact wire order.

    ``signed_text`` defaults to the body itself; ``timestamp``/``sig`` override the
    computed values and ``omit`` drops headers by name (hostile checks only).
    """
    headers = [
        ("Host", target.host_header),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("User-Agent", USER_AGENT),
        ("Content-Type", content_type),
        ("X-App-Id", app_id or str(uuid.uuid4())),
        ("X-Thread-Id", thread_id or str(uuid.uuid4())),
    ]
    if secret:  # an empty secret counts as none: no signature headers at all
        ts = timestamp or str(int(time.time()))
        text = body if signed_text is None else signed_text
        headers.append(("X-Timestamp", ts))
        headers.append(("X-Signature", sig or signature(secret, ts, text)))
    headers.append(("Content-Length", str(len(body))))
    return [(k, v) for k, v in headers if k not in omit]


def send(target: Target, method: str, path: str, headers: list, body: bytes = b""):
    """Sends a request on a fresh connection; returns the connection and the response head."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=TIMEOUT_S)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body if body else None)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def request(target: Target, method: str, path: str, headers: list, body: bytes = b"") -> Response:
    """One request on a fresh connection, headers sent verbatim and in order.

    putrequest(skip_host, skip_accept_encoding) stops http.client from adding its own
    Host and Accept-Encoding, and http.client adds no Content-Length on this path,
    so the header block is exactly ``headers``.
    """
    conn, resp = send(target, method, path, headers, body)
    try:
        raw = resp.read()
        return Response(resp.status, resp.getheaders(), decode_content(resp.getheaders(), raw))
    finally:
        conn.close()


def payload_request(target: Target, secret: str | None, payload: dict) -> tuple[list, bytes]:
    """Headers and body as the platform sends a payload (body raw UTF-8, signature escaped)."""
    body, signed_text = encode(payload)
    headers = sender_headers(
        target,
        body,
        secret=secret,
        signed_text=signed_text,
        app_id=payload.get("app", {}).get("id"),
        thread_id=payload.get("thread", {}).get("id"),
    )
    return headers, body


def post_payload(target: Target, secret: str | None, payload: dict) -> Response:
    """Deliver a payload exactly as the platform does."""
    headers, body = payload_request(target, secret, payload)
    return request(target, "POST", target.path, headers, body)


def post_payload_stream(target: Target, secret: str | None, payload: dict):
    """Deliver a payload like post_payload, reading the answer as the Chat screen does.

    Returns (status, content type, events, body excerpt); events are (name, data) pairs
    as the browser's parser yields them.
    """
    headers, body = payload_request(target, secret, payload)
    conn, resp = send(target, "POST", target.path, headers, body)
    try:
        ctype = resp.getheader("Content-Type") or ""
        if resp.status != 200 or "text/event-stream" not in ctype:
            return resp.status, ctype, [], resp.read()[:200]
        events = []
        buffer = ""
        while not any(name == "done" for name, _ in events):
            chunk = resp.read1(65536)  # what one network read delivers
            if not chunk:
                break
            # The backend: each chunk decoded on its own, errors replaced.
            buffer += chunk.decode("utf-8", errors="replace")
            # The browser (use-chat-stream.ts): the event name resets at every read.
            lines = buffer.split("\n")
            buffer = lines.pop()
            event_type, event_data = "message", ""
            for line in lines:
                if line.startswith("event:"):
                    event_type = line[6:].strip()
                elif line.startswith("data:"):
                    event_data = line[5:].strip()
                elif line == "" and event_data:
                    events.append((event_type, event_data))
                    event_type, event_data = "message", ""
        return resp.status, ctype, events, b""
    finally:
        conn.close()


def post_raw_socket(target: Target, headers: list, body: bytes) -> Response:
    """POST over a raw socket, tolerating a server that answers before reading the body.

    A server enforcing a body limit may reply (413) as soon as it sees Content-Length
    and close the connection. We stop sending the moment a response is readable and
    treat a broken pipe / reset while sending as expected; only failing to read a
    response at all is an error.
    """
    head = f"POST {target.path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    sock = socket.create_connection((target.host, target.port), timeout=TIMEOUT_S)
    try:
        sock.sendall(head.encode("latin-1"))
        view, sent = memoryview(body), 0
        try:
            while sent < len(body):
                readable, writable, _ = select.select([sock], [sock], [], TIMEOUT_S)
                if readable:  # the server has answered (or closed): stop sending
                    break
                if not writable:
                    raise Failed(f"server stopped reading after {sent} body bytes, no response")
                sent += sock.send(view[sent : sent + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # expected: the server refused the body and closed its side
        resp = http.client.HTTPResponse(sock, method="POST")
        try:
            resp.begin()
            raw = resp.read()
        except (ConnectionResetError, http.client.RemoteDisconnected) as exc:
            raise Failed(
                f"expected an HTTP response, got {type(exc).__name__} after {sent} body bytes"
            ) from None
        return Response(resp.status, resp.getheaders(), decode_content(resp.getheaders(), raw))
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------


def expect_json_content_type(resp: Response) -> None:
    ctype = resp.header("Content-Type") or ""
    if not ctype.lower().startswith("application/json"):
        raise Failed(f"expected Content-Type application/json, got {ctype or 'none'!r}")


def expect_echo(resp: Response, content: str) -> None:
    """Exactly 200, JSON object, reply == "Echo: " + content (what the platform accepts)."""
    if resp.status != 200:
        raise Failed(f"expected status 200, got {resp.status} body {excerpt(resp.body)}")
    expect_json_content_type(resp)
    obj = resp.json()
    if not isinstance(obj, dict):
        raise Failed(f"expected a JSON object, got {excerpt(resp.body)}")
    want = "Echo: " + content
    got = obj.get("reply")
    if got != want:
        raise Failed(f"expected reply {excerpt(want.encode())}, got {excerpt(repr(got).encode())}")


def expect_streamed_echo(answer, content: str) -> None:
    """200, text/event-stream, deltas that join to "Echo: " + content, then done."""
    status, ctype, events, body = answer
    if status != 200:
        raise Failed(f"expected status 200, got {status} body {excerpt(body)}")
    if "text/event-stream" not in ctype:
        raise Failed(f"expected Content-Type text/event-stream, got {ctype or 'none'!r}")
    text = ""
    for name, data in events:
        if name not in ("delta", "done", "error"):
            raise Failed(f"an event lost its name (split across reads?): {name!r} {data[:60]!r}")
        try:
            parsed = json.loads(data)
        except ValueError:
            raise Failed(f"{name} data is not JSON: {data[:80]!r}") from None
        if name == "error":
            raise Failed(f"the stream reported an error: {parsed!r}")
        if name == "delta":
            text += parsed["text"]
    if not events or events[-1][0] != "done":
        raise Failed(f"the stream did not end with done: {events[-3:]!r}")
    if "\ufffd" in text:
        raise Failed("a character was split across network reads (U+FFFD in the text)")
    want = "Echo: " + content
    if text != want:
        raise Failed(f"expected text {excerpt(want.encode())}, got {excerpt(text.encode())}")


def expect_error(resp: Response, status: int, secret: str | None) -> None:
    """The refusal status, a JSON {"error": str} body, and no trace of the secret."""
    if resp.status != status:
        raise Failed(f"expected status {status}, got {resp.status} body {excerpt(resp.body)}")
    expect_json_content_type(resp)
    obj = resp.json()
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), str):
        raise Failed(f'expected {{"error": "<text>"}}, got {excerpt(resp.body)}')
    if secret:
        # The platform shows error bodies to end users and the secret also unlocks
        # the Partner API, so it must never be echoed back.
        leaked = secret.encode("utf-8") in resp.body or any(
            secret in value for _, value in resp.headers
        )
        if leaked:
            raise Failed("the response leaks the webhook secret")


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


class Runner:
    """Runs checks, prints one ok/FAIL line each, and counts the outcomes."""

    def __init__(self, target: Target, secret: str | None, stream: bool = False) -> None:
        self.target = target
        self.secret = secret
        self.stream = stream
        self.passed = 0
        self.failed = 0

    def check(self, name: str, fn) -> bool:
        try:
            fn()
        except Failed as exc:
            return self._fail(name, str(exc))
        except (OSError, http.client.HTTPException) as exc:
            return self._fail(name, f"expected a response, got {type(exc).__name__}: {exc}")
        except Exception as exc:  # report, never abort the run: later checks still count
            return self._fail(name, f"unexpected {type(exc).__name__}: {exc}")
        print(f"ok   {name}", flush=True)
        self.passed += 1
        return True

    def _fail(self, name: str, why: str) -> bool:
        print(f"FAIL {name}: {why}", flush=True)
        self.failed += 1
        return False

    def echo(self, name: str, payload: dict) -> None:
        """A positive check: deliver the payload, expect the echo of message.content."""
        content = payload["message"]["content"]
        # The Test webhook button reads JSON, whatever the server streams otherwise.
        if self.stream and payload["thread"]["id"] != ZERO_THREAD_ID:
            answer = lambda: post_payload_stream(self.target, self.secret, payload)  # noqa: E731
            self.check(name, lambda: expect_streamed_echo(answer(), content))
        else:
            self.check(name, lambda: expect_echo(post_payload(self.target, self.secret, payload), content))

    def still_serving(self, after: str) -> None:
        self.echo(f"{after}: still serving", make_payload("still there?"))


def positive_checks(run: Runner) -> None:
    run.echo("plain ASCII message", make_payload("hello"))

    run.echo(
        "non-ASCII content and content_json",
        make_payload(
            "Café 中文 👋",
            {
                "café": {"ville": "Zürich", "標籤": ["中文", "👋"], "naïve": {"ß": "Ω"}},
                "n": 1.5,
                "ok": True,
                "none": None,
            },
        ),
    )

    # DEL is the edge of the trap: ensure_ascii escapes it although it is ASCII.
    run.echo("DEL, quote, backslash, newline, tab", make_payload('a\x7fb "q" \\ \n\t'))

    run.echo("empty content", make_payload(""))

    chunk = "Lorem ipsum dolor sit amet, café naïve 中文字符 👋🎉 \"quoted\" \\ end.\n"
    long_text = chunk * (100_000 // len(chunk.encode("utf-8")) + 1)
    if run.stream:
        # The browser forgets an event's name when the event straddles two network
        # reads. The server keeps every event under 1 KiB and in a write of its own,
        # but a reply of many events sent at once can still be cut by a read
        # wherever the reader fell behind; an LLM's tokens arrive paced. So the
        # stream checks keep each reply to one event; README says why.
        print("skip long message (~100 KB, mixed): more than one event in a burst", flush=True)
    else:
        run.echo("long message (~100 KB, mixed)", make_payload(long_text, {"len": len(long_text)}))

    run.echo(
        "new thread (greeting, null customer, empty app name)",
        make_payload(
            "I need help with my order",
            history_before=[entry("assistant", GREETING, {"source": "system"})],
            app_name="",
            customer_id=None,
            seq=2,
        ),
    )

    # Ten entries oldest first, alternating, ending with the current user message.
    history = []
    for i in range(9):
        if i % 2 == 0:
            history.append(entry("assistant", f"Echo: question {i}", {"source": "webhook"}))
        else:
            history.append(entry("user", f"question {i + 1}"))
    run.echo("history_tail of 10 entries", make_payload("question 10", history_before=history, seq=10))

    fallback = make_payload("fallback path message")
    fallback["message"] = {"content": "fallback path message"}
    del fallback["history_tail"]
    run.echo("fallback payload (message.content only, no history_tail)", fallback)

    run.echo(
        "dashboard Test webhook",
        {
            **make_payload(
                "This is a test message from the dashboard.",
                thread_id=ZERO_THREAD_ID,
                customer_id="test-customer",
                message_id=TEST_MESSAGE_ID,
                seq=1,
            ),
            "history_tail": [],
        },
    )

    run.echo(
        "timestamp without microseconds",
        make_payload("hello again", timestamp="2026-11-23T12:00:00+00:00"),
    )

    extra = make_payload("unknown fields please")
    extra["context"] = {"locale": "fr"}
    run.echo("unknown extra top-level field", extra)

    # A later "run" of the same thread re-sends the same message id; the server must
    # not reject it as a duplicate. Only the payload timestamp (and X-Timestamp) change.
    first = make_payload("same message twice", seq=3)
    run.echo("same message id, first delivery", first)
    time.sleep(1.1)  # a different whole-second X-Timestamp for the re-delivery
    run.echo("same message id, second delivery", {**first, "timestamp": now_iso()})


def hostile_checks(run: Runner) -> None:
    target, secret = run.target, run.secret

    def refused(name: str, status: int, send) -> None:
        run.check(name, lambda: expect_error(send(), status, secret))
        run.still_serving(name)

    if secret:
        ascii_payload = make_payload("hello")
        body, text = encode(ascii_payload)

        def signed_with(**overrides):
            return lambda: request(
                target,
                "POST",
                target.path,
                sender_headers(target, body, secret=secret, signed_text=text, **overrides),
                body,
            )

        wrong = "not-the-" + secret
        refused("wrong secret -> 401", 401, lambda: request(
            target, "POST", target.path, sender_headers(target, body, secret=wrong), body
        ))
        refused("missing X-Signature -> 401", 401, signed_with(omit=("X-Signature",)))
        refused("missing X-Timestamp -> 401", 401, signed_with(omit=("X-Timestamp",)))
        refused("malformed X-Signature -> 401", 401, signed_with(sig="sha256=zz"))

        stale = str(int(time.time()) - 400)
        refused(
            "timestamp 400 s old -> 401",
            401,
            signed_with(timestamp=stale),  # correctly signed for that timestamp
        )

        # Sign one body, transmit another of the same length.
        tampered = body.replace(b'"content":"hello"', b'"content":"hellO"')
        assert tampered != body, "tamper target not found in the body"
        refused("body tampered after signing -> 401", 401, lambda: request(
            target,
            "POST",
            target.path,
            sender_headers(target, tampered, secret=secret, signed_text=text),
            tampered,
        ))

    def post_body(body: bytes, content_type: str = "application/json"):
        # Correctly signed (raw body == signed text for ASCII) when a secret is set,
        # so only the property under test is wrong.
        headers = sender_headers(target, body, secret=secret, content_type=content_type)
        return lambda: request(target, "POST", target.path, headers, body)

    refused("invalid JSON -> 400", 400, post_body(b"{not json"))
    refused(
        "valid JSON of the wrong shape -> 422",
        422,
        post_body(b'{"version":"1.0","event":"message_received"}'),
    )
    deleted = make_payload("gone")
    deleted["event"] = "message_deleted"
    refused("event message_deleted -> 422", 422, post_body(encode(deleted)[0]))
    refused(
        "Content-Type text/plain -> 415",
        415,
        post_body(encode(make_payload("plain text please"))[0], content_type="text/plain"),
    )

    def get(path: str) -> Response:
        headers = [
            ("Host", target.host_header),
            ("Accept", "*/*"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("User-Agent", USER_AGENT),
        ]
        return request(target, "GET", path, headers)

    def get_root() -> None:
        resp = get("/")
        expect_error(resp, 405, secret)
        allow = [m.strip().upper() for m in (resp.header("Allow") or "").split(",")]
        if "POST" not in allow:
            raise Failed(f"expected an Allow header listing POST, got {resp.header('Allow')!r}")

    run.check("GET / -> 405 with Allow: POST", get_root)
    run.still_serving("GET / -> 405 with Allow: POST")

    def healthz() -> None:
        resp = get("/healthz")
        if resp.status != 200:
            raise Failed(f"expected status 200, got {resp.status} body {excerpt(resp.body)}")
        expect_json_content_type(resp)
        obj = resp.json()
        if not isinstance(obj, dict) or obj.get("status") != "ok":
            raise Failed(f'expected {{"status":"ok"}}, got {excerpt(resp.body)}')

    run.check("GET /healthz -> 200 ok", healthz)
    run.still_serving("GET /healthz -> 200 ok")

    # 2 MiB exactly, as a well-formed, correctly signed payload, so the size is the
    # only thing wrong with it.
    big = make_payload("")
    big["history_tail"] = []
    base = len(encode(big)[0])
    big["message"]["content"] = "x" * (2 * MIB - base)
    big_body, big_text = encode(big)
    big_headers = sender_headers(target, big_body, secret=secret, signed_text=big_text)
    refused("2 MiB body -> 413", 413, lambda: post_raw_socket(target, big_headers, big_body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="webhook URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--secret", default=None, help="the server's webhook secret, if any")
    parser.add_argument("--hostile", action="store_true", help="also send requests to be refused")
    parser.add_argument(
        "--stream", action="store_true", help="read answers as the Chat screen reads SSE"
    )
    args = parser.parse_args(argv)

    try:
        target = Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    secret = args.secret or None  # the platform treats an empty secret as none

    run = Runner(target, secret, stream=args.stream)
    positive_checks(run)
    if args.hostile:
        if not secret:
            print("note: no --secret, signature checks skipped", file=sys.stderr)
        hostile_checks(run)

    print(f"{run.passed} passed, {run.failed} failed")
    return 0 if run.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
