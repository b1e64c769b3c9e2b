#!/usr/bin/env python3
"""Acceptance test for examples/events.rs: other platforms' webhook senders,
emulated with the standard library only, signing as each seed document says
(../shared/seeds/000-003; the same rules as tests/fixtures/events/generate.py,
signed with the current time here).

For each route it checks that a signed delivery is answered
``200 {"status":"received"}``, that the same delivery again (and, for SendSeven,
a retry re-signed with a later timestamp and the same delivery id) is answered
``200 {"status":"duplicate"}``, and that a wrong secret, a body changed by one
byte, a missing signature, and for SendSeven a stale timestamp, get ``401`` with
a JSON error. With ``--log FILE`` it also checks that the server logged each
accepted delivery's id as a verified event.

    python3 tests/sender/events_sender.py --url http://127.0.0.1:8080 \\
        --sendseven-secret "$SENDSEVEN_SECRET" --whatsapp-secret "$WHATSAPP_SECRET"

Prints ``ok   <name>`` or ``FAIL <name>: ...`` per check and exits non-zero on
any failure. Every request has a 10 s timeout.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import sys
import time
import urllib.parse
import uuid

failures = 0


def check(name, condition, detail=""):
    global failures
    if condition:
        print(f"ok   {name}")
    else:
        failures += 1
        print(f"FAIL {name}: {detail}")


def post(url, path, headers, body):
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    status, payload = response.status, response.read()
    connection.close()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def hexdigest(secret, message):
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def expect(name, answer, status, key=None, value=None):
    got_status, body = answer
    good = got_status == status and isinstance(body, dict)
    if good and key is not None:
        good = body.get(key) == value if value is not None else isinstance(body.get(key), str)
    check(name, good, f"expected {status} {key}={value!r}, got {got_status} {body!r}")


def sendseven(url, secret, accepted_ids):
    delivery_id = f"dlv_{uuid.uuid4().hex}"
    body = json.dumps({
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "type": "message.received",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tenant_id": "tenant_xyz",
        "event_id": "msg_456",
        "data": {"message": {"id": "msg_456", "text": "Ça va ? 你好 👋"}},
    }, separators=(",", ":"), ensure_ascii=False).encode()

    def headers(timestamp, secret_used=secret, delivery=delivery_id, payload=body):
        return {
            "Content-Type": "application/json",
            "X-Sendseven-Signature": "sha256=" + hexdigest(
                secret_used, f"{timestamp}.".encode() + payload),
            "X-Sendseven-Timestamp": str(timestamp),
            "X-Sendseven-Delivery-Id": delivery,
            "X-Sendseven-Event": "message.received",
        }

    now = int(time.time())
    signed = headers(now)
    expect("sendseven: a signed delivery is received", post(url, "/sendseven", signed, body),
           200, "status", "received")
    accepted_ids.append(delivery_id)
    expect("sendseven: the same delivery again is a duplicate",
           post(url, "/sendseven", signed, body), 200, "status", "duplicate")
    expect("sendseven: a retry re-signed later with the same delivery id is a duplicate",
           post(url, "/sendseven", headers(now + 1), body), 200, "status", "duplicate")
    expect("sendseven: a wrong secret is refused",
           post(url, "/sendseven", headers(now, secret_used="wrong"), body), 401, "error")
    tampered = body.replace(b"msg_456", b"msg_457", 1)
    expect("sendseven: a body changed by one byte is refused",
           post(url, "/sendseven", signed, tampered), 401, "error")
    stale = now - 600
    expect("sendseven: a stale timestamp is refused",
           post(url, "/sendseven", headers(stale, delivery="dlv_stale"), body), 401, "error")
    unsigned = {k: v for k, v in signed.items() if k != "X-Sendseven-Signature"}
    expect("sendseven: a missing signature is refused",
           post(url, "/sendseven", unsigned, body), 401, "error")


def whatsapp(url, secret, prefixed, accepted_ids):
    message_id = uuid.uuid4().hex.upper()[:20]
    body = json.dumps({
        "event": "message",
        "sessionId": "408f7372-f7c9-4299-a8db-326bc5548a73",
        "messageId": message_id,
        "from": "+1234567890",
        "message": "¿Hola? Привет 🌍",
        "type": "text",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }, separators=(",", ":"), ensure_ascii=False).encode()
    form = "sha256=<hex>" if prefixed else "bare hex"

    def headers(secret_used=secret):
        digest = hexdigest(secret_used, body)
        return {"Content-Type": "application/json",
                "X-Webhook-Signature": ("sha256=" + digest) if prefixed else digest}

    expect(f"whatsapp ({form}): a signed delivery is received",
           post(url, "/whatsapp", headers(), body), 200, "status", "received")
    accepted_ids.append(message_id)
    expect(f"whatsapp ({form}): the platform's retry of the same bytes is a duplicate",
           post(url, "/whatsapp", headers(), body), 200, "status", "duplicate")
    expect(f"whatsapp ({form}): a wrong secret is refused",
           post(url, "/whatsapp", headers("wrong"), body), 401, "error")
    expect(f"whatsapp ({form}): a body changed by one byte is refused",
           post(url, "/whatsapp", headers(), body.replace(b"+1234", b"+1235", 1)), 401, "error")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sendseven-secret", required=True)
    parser.add_argument("--whatsapp-secret", required=True)
    parser.add_argument("--log", help="the server's log file, to find each accepted id in")
    args = parser.parse_args()
    accepted_ids = []
    sendseven(args.url, args.sendseven_secret, accepted_ids)
    whatsapp(args.url, args.whatsapp_secret, True, accepted_ids)
    whatsapp(args.url, args.whatsapp_secret, False, accepted_ids)
    if args.log:
        deadline = time.time() + 5
        while True:
            with open(args.log, encoding="utf-8", errors="replace") as log:
                lines = [line for line in log if "verified event" in line]
            missing = [i for i in accepted_ids if not any(i in line for line in lines)]
            if not missing or time.time() > deadline:
                break
            time.sleep(0.1)
        check("each accepted delivery was handled once and logged with its id",
              not missing and len(lines) == len(accepted_ids),
              f"missing {missing}, {len(lines)} lines for {len(accepted_ids)} deliveries")
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
