#!/usr/bin/env python3
"""Generate a pool of DISTINCT, freshly signed `message_received` requests for wrk
(bench/perf/pool.lua reads it). Python 3 standard library only.

Every request is signed exactly as the platform's sender signs (see
/work/shared/CONTRACT.md, tests/sender/platform_sender.py and bench/webhook_client.py):
``X-Signature = "sha256=" + hex HMAC-SHA256(secret, X-Timestamp + "." + body_escaped)``
where body_escaped is the compact JSON with every character >= U+007F written as
``\\uXXXX`` (``json.dumps`` with ensure_ascii=True), while the body on the wire is the
same compact JSON in raw UTF-8 (ensure_ascii=False).

Each request has its own message id and payload timestamp (so its own body and
signature); app id and thread id are shared by the pool (one thread, many messages).
X-Timestamp values climb through whole seconds towards the generation time and are
never ahead of it. They also start after the last X-Timestamp of the previous pool
(``--state``): a server's replay cache, once full, forgets its oldest entries and
then refuses anything signed no later than them, so a server that lives through
several cells must see X-Timestamps that never go back, and no more requests in one
second than its cache holds (``--max-per-second``).

To keep the pool small even for 256 KB bodies, the body is written once as a template
(the parts around the message id and the payload timestamp, both ASCII and of fixed
length) and the pool holds only ``X-Timestamp signature message-id payload-timestamp``
per request; pool.lua assembles each request. File format (one item a line):

    line 1: <host:port> <app id> <thread id> <path>
    line 2: body before the message id        (raw UTF-8, no newline byte)
    line 3: body between message id and payload timestamp
    line 4: body after the payload timestamp
    then:   <X-Timestamp> <X-Signature> <message id> <payload timestamp>

Body kinds (``--body``): ``small`` (~0.4 KB, no history), ``3k`` (10 history entries),
``16k``, ``63k`` (10 entries of ~6 KB), ``256k``, and ``multi`` (~3 KB of Latin
accents, CJK, Cyrillic and emoji, padded to the byte length of ``3k``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from datetime import datetime, timezone

GREETING = "Hello there! How can I help you today?"
ID_MARK = "@@MESSAGE-ID@@"
TS_MARK = "@@PAYLOAD-TIMESTAMP@@"

ASCII_TEXT = (
    "Hello, I ordered a pair of running shoes last week and the tracking page still says "
    "the parcel is waiting at the depot. Could you check where it is and when it will be "
    "delivered? The order number is in my account. Thanks a lot for your help, Alex. "
)
MULTI_TEXT = (
    "Où est ma commande ? Ça fait déjà une semaine, señor. Größe 42, bitte. "
    "我的订单在哪里？请尽快帮我查一下。谢谢！ "
    "Где мой заказ? Пожалуйста, проверьте статус доставки. "
    "注文はどこですか。 Thanks! 👋🙂📦🚚 "
)

# Per kind: (history entries including the current message, bytes of content per entry).
KINDS = {
    "small": (0, 0),
    "3k": (10, 185),
    "16k": (10, 1500),
    "63k": (10, 6000),
    "256k": (10, 25_700),
}


def text_of_bytes(source: str, size: int) -> str:
    """`source` repeated, cut at a character boundary to at most `size` UTF-8 bytes,
    then padded with ASCII dots to exactly `size` bytes."""
    out, used = [], 0
    while used < size:
        for ch in source:
            n = len(ch.encode("utf-8"))
            if used + n > size:
                break
            out.append(ch)
            used += n
        else:
            continue
        break
    return "".join(out) + "." * (size - used)


def entry(role: str, content: str, content_json: dict) -> dict:
    return {"role": role, "content": content, "content_json": content_json}


def payload(kind: str, app_id: str, thread_id: str) -> dict:
    multi = kind == "multi"
    entries, size = KINDS["3k" if multi else kind]
    source = MULTI_TEXT if multi else ASCII_TEXT
    if kind == "small":
        content = ASCII_TEXT[:60].rstrip()
        history = []
        seq = 1
    else:
        content = text_of_bytes(source, size)
        history = [entry("assistant", GREETING, {"source": "system"})]
        for turn in range(1, entries - 1):
            role = "user" if turn % 2 == 1 else "assistant"
            cj = {} if role == "user" else {"source": "webhook"}
            history.append(entry(role, text_of_bytes(source[turn % 7:] + source, size), cj))
        history.append(entry("user", content, {}))
        seq = entries
    return {
        "version": "1.0",
        "event": "message_received",
        "app": {"id": app_id, "name": "Bench Bot"},
        "thread": {"id": thread_id, "customer_id": "bench-customer"},
        "message": {"id": ID_MARK, "seq": seq, "role": "user", "content": content,
                    "content_json": {}},
        "history_tail": history,
        "timestamp": TS_MARK,
    }


def uuid_hex() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def split3(text: str) -> tuple[str, str, str]:
    before, rest = text.split(ID_MARK)
    middle, after = rest.split(TS_MARK)
    return before, middle, after


def body_template(kind: str) -> tuple:
    """(raw pieces, signed pieces, body length) of one body of `kind`."""
    doc = payload(kind, uuid_hex(), uuid_hex())
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    signed = json.dumps(doc, separators=(",", ":"))  # ensure_ascii=True: the signed form
    raw3, signed3 = split3(raw), split3(signed)
    length = len(raw.encode("utf-8")) - len(ID_MARK) - len(TS_MARK) + 36 + 32
    return raw3, tuple(p.encode("ascii") for p in signed3), length, doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--body", required=True, choices=[*KINDS, "multi"])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/webhook")
    ap.add_argument("--out", required=True)
    ap.add_argument("--state", help="file holding the last X-Timestamp used (updated)")
    ap.add_argument("--max-per-second", type=int, default=60_000,
                    help="requests per X-Timestamp second at most (below the replay cache's capacity)")
    ap.add_argument("--max-age", type=int, default=120,
                    help="oldest X-Timestamp, seconds before now (well inside the 300 s window)")
    ap.add_argument("--print-length", action="store_true", help="print the body length and exit")
    args = ap.parse_args()

    (raw_before, raw_mid, raw_after), (s_before, s_mid, s_after), length, doc = body_template(args.body)
    if args.print_length:
        print(length)
        return 0
    for piece in (raw_before, raw_mid, raw_after):
        assert "\n" not in piece and "\r" not in piece

    now = int(time.time())
    last = 0
    if args.state and os.path.exists(args.state):
        with open(args.state) as f:
            last = int(f.read().strip() or 0)
    seconds_needed = -(-args.count // args.max_per_second)
    first = max(last + 1, now - args.max_age)
    if now - first + 1 < seconds_needed:
        first = now - seconds_needed + 1
        if first <= last:
            # Not enough whole seconds since the last pool: wait for them rather than
            # go back in time (the cache would refuse those as possible replays).
            wait = last + seconds_needed - now
            print(f"gen_pool: waiting {wait} s for fresh X-Timestamp seconds", file=sys.stderr)
            time.sleep(wait)
            now = int(time.time())
            first = last + 1
    span = now - first + 1
    per_second = -(-args.count // span)

    key = args.secret.encode("utf-8")
    app_id = doc["app"]["id"]
    thread_id = doc["thread"]["id"]
    id_base = uuid_hex()[:24]  # "xxxxxxxx-xxxx-4xxx-axxx-" + 12 hex of a counter
    lines = []
    ts_second = first
    base_mac = None
    iso_second = ""
    for i in range(args.count):
        if i % per_second == 0:
            ts_second = first + i // per_second
            xts = str(ts_second)
            base_mac = hmac.new(key, xts.encode("ascii") + b"." + s_before, hashlib.sha256)
            iso_second = datetime.fromtimestamp(ts_second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        message_id = f"{id_base}{i:012x}"
        # Python isoformat() with microseconds (never zero, so always 6 digits).
        pts = f"{iso_second}.{(i % per_second) + 1:06d}+00:00"
        mac = base_mac.copy()
        mac.update(message_id.encode("ascii"))
        mac.update(s_mid)
        mac.update(pts.encode("ascii"))
        mac.update(s_after)
        lines.append(f"{xts} sha256={mac.hexdigest()} {message_id} {pts}\n")
    assert ts_second <= int(time.time()), "an X-Timestamp in the future"

    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"127.0.0.1:{args.port} {app_id} {thread_id} {args.path}\n")
        f.write(raw_before + "\n" + raw_mid + "\n" + raw_after + "\n")
        f.writelines(lines)
    if args.state:
        with open(args.state, "w") as f:
            f.write(str(ts_second))
    print(json.dumps({"count": args.count, "body_bytes": length, "first_ts": first,
                      "last_ts": ts_second, "per_second": per_second}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
