#!/usr/bin/env python3
"""Targeted attacks on a running webhook server (issue #7), one subcommand each.

What it does
    Each subcommand runs one attack against a server already started (normally
    ``examples/echo.rs``) and prints a short human summary, then one final line of JSON
    with its figures (no interpretation: the numbers are compared before and after a fix).
    The server's memory comes from /proc/<pid>/status (VmRSS, VmHWM; VmHWM is reset first
    by writing 5 to /proc/<pid>/clear_refs when permitted) and its CPU time from
    /proc/<pid>/stat (utime + stime, in clock ticks of os.sysconf("SC_CLK_TCK")).

    trickle      --connections N (1000) connections each send a correctly signed POST head
                 with Transfer-Encoding: chunked, then trickle the body as --writes W (100)
                 chunks of --bytes-per-write B (1) bytes ("1\\r\\nX\\r\\n"), all connections
                 in rounds spread over --duration (7 s) so each write arrives as its own TCP
                 read. The body is never finished. Reports the RSS before, the peak VmHWM,
                 the RSS 2 s after the connections close, the body bytes written and the
                 server memory per written byte.
    pinger       one keep-alive connection sending GET /healthz every --interval (5 s) for
                 up to --max-seconds (150): when did the server close it, if at all.
    slow-reader  one connection pipelining --requests (120000) GET /healthz in big batches
                 and never reading; checks every second (TCP state from TCP_INFO, send
                 errors, without reading) whether the server closed it, up to --max-seconds.
    slots        holds --connections (1024) keep-alive connections, each sending GET
                 /healthz every 5 s (staggered, reconnecting if closed), and meanwhile sends
                 --probes (4) genuine signed messages on fresh connections, one every 10 s,
                 each with the platform's 8 s timeout: how many got 200, and how fast.
    early401     for a missing signature, a malformed X-Signature and a stale X-Timestamp
                 (now - 1000): a POST head announcing Content-Length: 1048576 and no body;
                 how long until the server answers, and with what (at most 15 s each).
    escape-cost  --count K (50) requests with a 1 MiB JSON body full of 0x7f bytes and a
                 wrong signature, then K with a 1 MiB ASCII body and a wrong signature:
                 server CPU ms per request for each, and their ratio.
    replay-edge  signs one valid request with X-Timestamp = now - 300 + 2, sends it (expects
                 200), then resends the same bytes on fresh connections every 100 ms for 5 s:
                 how many replays got 200 (should be none) or 401, and when, relative to
                 X-Timestamp + 300.

How to run (server started with `ulimit -n 20000`, a fresh process per attack):
    python3 bench/attacks.py trickle --url http://127.0.0.1:18281 --secret "$WEBHOOK_SECRET" \\
        --pid "$SERVER_PID"
    python3 bench/attacks.py pinger --url http://127.0.0.1:18281 --secret "$WEBHOOK_SECRET" \\
        --pid "$SERVER_PID" --max-seconds 90

Safety and bounds: only http://127.0.0.1 URLs are accepted (webhook_client.Target); every
connect, read and write has a timeout; every loop is bounded in both time and count
(--max-seconds at most 600, connections at most 5000); the script raises its own
open-files limit up to the hard limit when it needs more. Exit status 0 when the attack
ran (whatever the server did), 2 when the server process is missing. Standard library
only (Python 3.11).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import errno
import fcntl
import json
import os
import resource
import select
import socket
import struct
import sys
import termios
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
    machine_info,
    make_payload,
    mib,
    open_conn,
    percentile,
    proc_status,
    read_response,
    read_response_safe,
    reset_hwm,
    sender_head,
    valid_request,
)

MAX_SECONDS = 600
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRONG_SIGNATURE = "sha256=" + "0" * 64
MIB = 1_048_576


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])


def ticks_ms(ticks: int) -> float:
    return ticks * 1000.0 / CLK_TCK


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def server_nofile(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return None


def error_text(resp) -> str:
    try:
        obj = resp.json()
        if isinstance(obj, dict) and "error" in obj:
            return str(obj["error"])[:120]
    except ValueError:
        pass
    return resp.excerpt(120)


def emit(result: dict) -> None:
    """The final line: the figures as one JSON object."""
    print(json.dumps(result, separators=(",", ":")), flush=True)


def rounded(value, digits=3):
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------
# 1. trickle
# ---------------------------------------------------------------------------


async def attack_trickle(args, target: Target) -> dict:
    n, writes, bpw = args.connections, args.writes, args.bytes_per_write
    body = b"X" * (writes * bpw)  # what each client intends to send (signed over)
    chunk = f"{bpw:x}\r\n".encode() + b"X" * bpw + b"\r\n"
    baseline = proc_status(args.pid)
    hwm_reset = reset_hwm(args.pid)
    cpu0 = cpu_ticks(args.pid)
    t0 = time.monotonic()
    hard_deadline = t0 + args.duration + 60
    stop = asyncio.Event()
    sampler = RssSampler(args.pid, interval=0.5)
    sampler_task = asyncio.create_task(sampler.run(t0, stop, hard_deadline))

    connect_gate = asyncio.Semaphore(100)
    conns: list = []  # (reader, writer, response task)
    connect_failed = collections.Counter()

    async def connect_one() -> None:
        async with connect_gate:
            try:
                reader, writer = await open_conn(target, 10.0)
            except (OSError, asyncio.TimeoutError) as exc:
                connect_failed[type(exc).__name__] += 1
                return
        head = sender_head(target, 0, secret=args.secret, signed_parts=(body,),
                           omit=("Content-Length",))
        writer.write(head[:-2] + b"Transfer-Encoding: chunked\r\n\r\n")
        conns.append((reader, writer, asyncio.create_task(read_response_safe(reader))))

    await asyncio.wait_for(asyncio.gather(*(connect_one() for _ in range(n))), 30)
    connected_s = time.monotonic() - t0
    print(f"{len(conns)} connections open with their heads sent after {connected_s:.2f} s "
          f"({sum(connect_failed.values())} failed)", flush=True)

    # Rounds: one chunk on every live connection, then wait for the next round's slot.
    sent_per_conn = [0] * len(conns)
    start = time.monotonic()
    step = args.duration / writes
    rounds = 0
    for k in range(writes):
        for i, (_, writer, resp_task) in enumerate(conns):
            if resp_task.done() or writer.is_closing():
                continue
            writer.write(chunk)
            sent_per_conn[i] += bpw
        rounds += 1
        delay = start + (k + 1) * step - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
        if time.monotonic() > start + args.duration + 10:
            break
    writes_s = time.monotonic() - start
    await asyncio.sleep(0.5)  # let the server take in the last round
    peak_status = proc_status(args.pid)
    unsent = sum(w.transport.get_write_buffer_size() for _, w, _ in conns
                 if w.transport is not None and not w.is_closing())
    answered = collections.Counter()
    for _, _, resp_task in conns:
        if resp_task.done():
            resp, err = resp_task.result()
            answered[str(resp.status) if resp else f"closed: {err}"] += 1
    still_open = sum(1 for _, w, t in conns if not t.done() and not w.is_closing())

    for _, writer, resp_task in conns:
        resp_task.cancel()
        close_writer(writer)
    await asyncio.gather(*(t for _, _, t in conns), return_exceptions=True)
    await asyncio.sleep(2.0)
    after = proc_status(args.pid)
    cpu1 = cpu_ticks(args.pid)
    stop.set()
    await asyncio.gather(sampler_task, return_exceptions=True)

    written = sum(sent_per_conn)
    base_kb = baseline.get("VmRSS", 0)
    hwm_kb = peak_status.get("VmHWM", 0) if hwm_reset else 0
    peak_kb = max(hwm_kb, sampler.peak()[1], peak_status.get("VmRSS", 0))
    per_byte = (peak_kb - base_kb) * 1024 / written if written else None
    print(f"trickle: {len(conns)} connections x {rounds} writes of {bpw} B in {writes_s:.2f} s; "
          f"body bytes written {written} (unsent in client buffers {unsent} B); "
          f"connections still open at the end {still_open}; answered early {dict(answered)}")
    print(f"RSS before {mib(base_kb)}, peak {mib(peak_kb)} (VmHWM reset: {hwm_reset}), "
          f"RSS 2 s after closing {mib(after.get('VmRSS', 0))}; "
          f"server memory per written byte {per_byte if per_byte is None else round(per_byte, 1)} B; "
          f"server CPU {ticks_ms((cpu1 or 0) - (cpu0 or 0)):.0f} ms")
    return {
        "attack": "trickle", "connections": n, "connected": len(conns),
        "connect_failed": dict(connect_failed), "writes_per_connection": writes,
        "bytes_per_write": bpw, "rounds": rounds, "connect_s": round(connected_s, 2),
        "writes_s": round(writes_s, 2), "body_bytes_written": written,
        "client_unsent_bytes": unsent, "still_open_at_end": still_open,
        "answered_early": dict(answered), "rss_before_kb": base_kb, "hwm_reset": hwm_reset,
        "vmhwm_kb": hwm_kb, "rss_peak_sampled_kb": sampler.peak()[1], "peak_kb": peak_kb,
        "rss_peak_at_end_of_writes_kb": peak_status.get("VmRSS", 0),
        "rss_after_close_kb": after.get("VmRSS", 0), "max_fds": sampler.max_fds,
        "peak_minus_before_kb": peak_kb - base_kb,
        "server_bytes_per_written_byte": rounded(per_byte, 1),
        "server_cpu_ms": round(ticks_ms((cpu1 or 0) - (cpu0 or 0)), 1),
    }


# ---------------------------------------------------------------------------
# 2. pinger
# ---------------------------------------------------------------------------


async def attack_pinger(args, target: Target) -> dict:
    reader, writer = await open_conn(target, 10.0)
    t0 = time.monotonic()
    deadline = t0 + args.max_seconds
    pings = answered = not_200 = 0
    closed_at = closed_how = last_answer = None
    try:
        while time.monotonic() < deadline and pings < 100_000:
            t_ping = time.monotonic()
            pings += 1
            try:
                writer.write(get_head(target, "/healthz"))
                await asyncio.wait_for(writer.drain(), 10.0)
                resp = await asyncio.wait_for(read_response(reader), 10.0)
            except (NoResponse, OSError) as exc:
                closed_at, closed_how = time.monotonic() - t0, f"ping {pings}: {exc or type(exc).__name__}"
                break
            except asyncio.TimeoutError:
                closed_at, closed_how = time.monotonic() - t0, f"ping {pings}: no answer in 10 s"
                break
            if resp.status != 200:
                not_200 += 1
            answered += 1
            last_answer = time.monotonic() - t0
            if resp.headers.get("connection", "").lower() == "close":
                closed_at, closed_how = last_answer, f"ping {pings}: Connection: close"
                break
            # Idle until the next ping, noticing at once if the server closes.
            wait = min(t_ping + args.interval, deadline) - time.monotonic()
            if wait <= 0:
                continue
            try:
                data = await asyncio.wait_for(reader.read(1), wait)
            except asyncio.TimeoutError:
                continue
            except OSError as exc:
                closed_at, closed_how = time.monotonic() - t0, f"idle: {type(exc).__name__}"
                break
            closed_at = time.monotonic() - t0
            closed_how = "idle: EOF" if data == b"" else f"idle: unexpected byte {data!r}"
            break
    finally:
        close_writer(writer)
    if closed_at is None:
        print(f"pinger: GET /healthz every {args.interval} s; still open after "
              f"{args.max_seconds} s ({answered}/{pings} pings answered)")
    else:
        print(f"pinger: GET /healthz every {args.interval} s; the server closed it after "
              f"{closed_at:.1f} s ({closed_how}); {answered}/{pings} pings answered")
    return {
        "attack": "pinger", "interval_s": args.interval, "max_seconds": args.max_seconds,
        "pings_sent": pings, "pings_answered": answered, "pings_not_200": not_200,
        "last_answer_s": rounded(last_answer, 2),
        "closed_at_s": rounded(closed_at, 2), "closed_how": closed_how,
        "still_open": closed_at is None,
    }


# ---------------------------------------------------------------------------
# 3. slow-reader
# ---------------------------------------------------------------------------

TCP_STATES = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE",
              8: "CLOSE_WAIT", 9: "LAST_ACK", 11: "CLOSING"}


def tcp_state(sock: socket.socket) -> str:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    state = info[0]
    return TCP_STATES.get(state, str(state))


def queued(sock: socket.socket, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]


def attack_slow_reader(args, target: Target) -> dict:
    request = get_head(target, "/healthz")
    batch_n = 2000
    batch = request * batch_n
    total = args.requests * len(request)
    hwm_reset = reset_hwm(args.pid)
    start_status = proc_status(args.pid)
    cpu0 = cpu_ticks(args.pid)
    sock = socket.create_connection((target.host, target.port), timeout=10.0)
    sock.setblocking(False)
    t0 = time.monotonic()
    deadline = t0 + args.max_seconds
    next_check = t0 + 1.0
    sent = 0
    closed_at = closed_how = None
    all_written_at = None
    max_recv_q = max_send_q = 0
    checks = 0
    peak_rss = start_status.get("VmRSS", 0)
    try:
        while time.monotonic() < deadline and checks < 100_000:
            if sent < total:
                offset = sent % len(batch)
                piece = memoryview(batch)[offset:offset + min(len(batch) - offset, total - sent)]
                try:
                    sent += sock.send(piece)
                    if sent >= total:
                        all_written_at = time.monotonic() - t0
                    continue_writing = True
                except BlockingIOError:
                    continue_writing = False
                except OSError as exc:  # EPIPE, ECONNRESET: the server is gone
                    closed_at = time.monotonic() - t0
                    closed_how = f"send: {errno.errorcode.get(exc.errno, exc.errno)}"
                    break
            else:
                continue_writing = False
            now = time.monotonic()
            if now >= next_check:
                checks += 1
                next_check += 1.0
                state = tcp_state(sock)
                max_recv_q = max(max_recv_q, queued(sock, termios.FIONREAD))
                max_send_q = max(max_send_q, queued(sock, termios.TIOCOUTQ))
                peak_rss = max(peak_rss, proc_status(args.pid).get("VmRSS", 0))
                so_error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if state != "ESTABLISHED" or so_error:
                    closed_at = now - t0
                    closed_how = f"tcp state {state}" + (
                        f", {errno.errorcode.get(so_error, so_error)}" if so_error else "")
                    break
            if not continue_writing:
                wait = max(0.0, min(next_check, deadline) - time.monotonic())
                if sent < total:
                    select.select([], [sock], [], wait)
                else:
                    time.sleep(wait)
    finally:
        sock.close()
    end_status = proc_status(args.pid)
    cpu1 = cpu_ticks(args.pid)
    hwm = end_status.get("VmHWM", 0) if hwm_reset else 0
    requests_written = sent // len(request)
    if closed_at is None:
        print(f"slow-reader: {requests_written}/{args.requests} requests written "
              f"({sent} B); still open after {args.max_seconds} s")
    else:
        print(f"slow-reader: {requests_written}/{args.requests} requests written "
              f"({sent} B); the server closed it after {closed_at:.1f} s ({closed_how})")
    print(f"all requests written: {'at %.1f s' % all_written_at if all_written_at else 'no'}; "
          f"max unread response bytes queued at the client {max_recv_q}, max unsent request "
          f"bytes {max_send_q}; server RSS {mib(start_status.get('VmRSS', 0))} -> peak "
          f"{mib(max(hwm, peak_rss))}, end {mib(end_status.get('VmRSS', 0))}; "
          f"server CPU {ticks_ms((cpu1 or 0) - (cpu0 or 0)):.0f} ms")
    return {
        "attack": "slow-reader", "requests": args.requests, "max_seconds": args.max_seconds,
        "request_bytes": len(request), "bytes_sent": sent, "requests_written": requests_written,
        "all_written_at_s": rounded(all_written_at, 2), "closed_at_s": rounded(closed_at, 2),
        "closed_how": closed_how, "still_open": closed_at is None,
        "max_client_recv_queue_bytes": max_recv_q, "max_client_send_queue_bytes": max_send_q,
        "rss_start_kb": start_status.get("VmRSS", 0), "vmhwm_kb": hwm, "hwm_reset": hwm_reset,
        "rss_peak_sampled_kb": peak_rss, "rss_end_kb": end_status.get("VmRSS", 0),
        "server_cpu_ms": round(ticks_ms((cpu1 or 0) - (cpu0 or 0)), 1),
    }


# ---------------------------------------------------------------------------
# 4. slots
# ---------------------------------------------------------------------------


async def attack_slots(args, target: Target) -> dict:
    n = args.connections
    ping_every = 5.0
    stop = asyncio.Event()
    stats = collections.Counter()
    first_attempt_done = [0]
    all_attempted = asyncio.Event()
    connect_gate = asyncio.Semaphore(64)
    t0 = time.monotonic()
    hard_deadline = t0 + 30 + 10 * args.probes + 30

    async def wait_stop(seconds: float) -> None:
        if seconds > 0:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass

    async def holder(i: int) -> None:
        first = True
        attempts = 0
        while not stop.is_set() and time.monotonic() < hard_deadline and attempts < 1000:
            attempts += 1
            writer = None
            try:
                async with connect_gate:
                    reader, writer = await open_conn(target, 10.0)
                stats["connected"] += 1
                stats["open"] += 1
                if not first:
                    stats["reconnects"] += 1
            except (OSError, asyncio.TimeoutError):
                stats["connect_failed"] += 1
            finally:
                if first:
                    first = False
                    first_attempt_done[0] += 1
                    if first_attempt_done[0] == n:
                        all_attempted.set()
            if writer is None:
                await wait_stop(1.0)
                continue
            try:
                next_ping = time.monotonic() + ping_every * i / n
                while not stop.is_set():
                    await wait_stop(next_ping - time.monotonic())
                    if stop.is_set():
                        break
                    writer.write(get_head(target, "/healthz"))
                    await asyncio.wait_for(writer.drain(), 10.0)
                    resp = await asyncio.wait_for(read_response(reader), 10.0)
                    stats["pings_ok" if resp.status == 200 else "pings_other"] += 1
                    next_ping += ping_every
            except (NoResponse, OSError, asyncio.TimeoutError) as exc:
                stats["closed_" + type(exc).__name__] += 1
                await wait_stop(1.0)
            finally:
                stats["open"] -= 1
                close_writer(writer)

    holders = [asyncio.create_task(holder(i)) for i in range(n)]
    try:
        await asyncio.wait_for(all_attempted.wait(), 30.0)
    except asyncio.TimeoutError:
        pass
    connect_s = time.monotonic() - t0
    open_at_start = stats["open"]
    print(f"{open_at_start} of {n} connections held after {connect_s:.1f} s "
          f"({stats['connect_failed']} connect failures)", flush=True)
    await asyncio.sleep(1.0)

    probes = []
    p0 = time.monotonic()
    for k in range(args.probes):
        await asyncio.sleep(max(0.0, p0 + 10.0 * k - time.monotonic()))
        t = time.monotonic() - t0
        server = proc_status(args.pid)
        error, latency, req = await valid_request(target, args.secret, f"slots probe {k} ✓",
                                                  timeout=8.0)
        probes.append({"t_s": round(t, 1), "ok": error is None, "error": error,
                       "latency_ms": round(latency * 1000, 1), "held": stats["open"],
                       "server_fds": server.get("fds")})
        print(f"  probe {k} at t={t:.1f} s: {'200' if error is None else error} in "
              f"{latency * 1000:.0f} ms ({stats['open']} held, server fds {server.get('fds')})",
              flush=True)
    open_at_end = stats["open"]
    stop.set()
    done, pending = await asyncio.wait(holders, timeout=15.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)

    ok = [p for p in probes if p["ok"]]
    lat = sorted(p["latency_ms"] for p in probes)
    ok_lat = sorted(p["latency_ms"] for p in ok)
    print(f"slots: {len(ok)}/{len(probes)} probes got 200; latencies ms {lat}; "
          f"connections held at start {open_at_start}, at end {open_at_end}; "
          f"holder pings ok {stats['pings_ok']}, reconnects {stats['reconnects']}")
    return {
        "attack": "slots", "connections": n, "connect_s": round(connect_s, 1),
        "held_at_start": open_at_start, "held_at_end": open_at_end,
        "connect_failed": stats["connect_failed"], "reconnects": stats["reconnects"],
        "holder_pings_ok": stats["pings_ok"], "holder_pings_other": stats["pings_other"],
        "holder_closed": {k[7:]: v for k, v in stats.items() if k.startswith("closed_")},
        "probes": len(probes), "probes_200": len(ok),
        "probe_latency_ms": [p["latency_ms"] for p in probes],
        "probe_ok_latency_p50_ms": percentile(ok_lat, 0.5) if ok_lat else None,
        "probe_errors": [p["error"] for p in probes if not p["ok"]],
    }


# ---------------------------------------------------------------------------
# 5. early401
# ---------------------------------------------------------------------------


async def attack_early401(args, target: Target) -> dict:
    announced = MIB
    now = int(time.time())
    cases = {
        "missing_signature": sender_head(target, announced, secret=None),
        "malformed_signature": sender_head(target, announced, secret=args.secret,
                                           signature="sha256=not-a-hex-digest"),
        "stale_timestamp": sender_head(target, announced, secret=args.secret,
                                       timestamp=str(now - 1000), signed_parts=(b"{}",)),
    }
    results = {}
    for name, head in cases.items():
        reader, writer = await open_conn(target, 10.0)
        started = time.monotonic()
        try:
            writer.write(head)
            await asyncio.wait_for(writer.drain(), 5.0)
            resp, err = await asyncio.wait_for(read_response_safe(reader), 15.0)
            elapsed = time.monotonic() - started
            if resp is None:
                results[name] = {"status": None, "seconds": round(elapsed, 3), "detail": err}
            else:
                results[name] = {"status": resp.status, "seconds": round(elapsed, 3),
                                 "detail": error_text(resp)}
        except asyncio.TimeoutError:
            results[name] = {"status": None, "seconds": None, "detail": "no answer in 15 s"}
        finally:
            close_writer(writer)
        r = results[name]
        print(f"  {name}: status {r['status']} after "
              f"{'-' if r['seconds'] is None else '%.3f s' % r['seconds']} ({r['detail']})",
              flush=True)
    print(f"early401: POST heads announcing Content-Length {announced}, no body sent")
    return {"attack": "early401", "content_length": announced, "cases": results}


# ---------------------------------------------------------------------------
# 6. escape-cost
# ---------------------------------------------------------------------------


def json_body(fill: bytes, size: int) -> bytes:
    prefix, suffix = b'{"x":"', b'"}'
    body = prefix + fill * (size - len(prefix) - len(suffix)) + suffix
    assert len(body) == size
    return body


async def attack_escape_cost(args, target: Target) -> dict:
    bodies = {"del_0x7f": json_body(b"\x7f", args.size), "ascii": json_body(b"a", args.size)}
    out = {"attack": "escape-cost", "count": args.count, "body_bytes": args.size,
           "clk_tck": CLK_TCK}
    for name, body in bodies.items():
        # One request first, not counted, so both batches start warm.
        head = sender_head(target, len(body), secret=args.secret, signature=WRONG_SIGNATURE)
        try:
            await exchange(target, head + body, 15.0)
        except (OSError, NoResponse, asyncio.TimeoutError):
            pass
        statuses = collections.Counter()
        cpu0 = cpu_ticks(args.pid)
        wall0 = time.monotonic()
        for _ in range(args.count):
            head = sender_head(target, len(body), secret=args.secret, signature=WRONG_SIGNATURE)
            try:
                resp = await exchange(target, head + body, 15.0)
                statuses[str(resp.status)] += 1
            except (OSError, NoResponse, asyncio.TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
        wall = time.monotonic() - wall0
        ticks = (cpu_ticks(args.pid) or 0) - (cpu0 or 0)
        per_req = ticks_ms(ticks) / args.count
        out[name] = {"statuses": dict(statuses), "cpu_ticks": ticks,
                     "cpu_ms_per_request": round(per_req, 2),
                     "wall_ms_per_request": round(wall * 1000 / args.count, 2)}
        print(f"  {name}: {args.count} x {args.size} B, wrong signature: statuses "
              f"{dict(statuses)}; server CPU {ticks} ticks = {per_req:.2f} ms/request; "
              f"wall {wall * 1000 / args.count:.1f} ms/request", flush=True)
    a = out["ascii"]["cpu_ms_per_request"]
    out["ratio_del_over_ascii"] = round(out["del_0x7f"]["cpu_ms_per_request"] / a, 2) if a else None
    print(f"escape-cost: CPU per request, 0x7f body / ASCII body = {out['ratio_del_over_ascii']}")
    return out


# ---------------------------------------------------------------------------
# 7. replay-edge
# ---------------------------------------------------------------------------


async def attack_replay_edge(args, target: Target) -> dict:
    window = args.window
    ts = int(time.time()) - window + 2
    payload = make_payload("replay edge")
    body, signed = encode(payload)
    head = sender_head(target, len(body), secret=args.secret, signed_parts=(signed,),
                       timestamp=str(ts), app_id=payload["app"]["id"],
                       thread_id=payload["thread"]["id"])
    data = head + body
    edge = ts + window

    async def send() -> tuple[str, str, float]:
        at = time.time() - edge
        try:
            resp = await exchange(target, data, 2.0)
            return str(resp.status), error_text(resp) if resp.status != 200 else "", at
        except (OSError, NoResponse, asyncio.TimeoutError) as exc:
            return type(exc).__name__, str(exc), at

    first_status, first_detail, first_at = await send()
    print(f"  first send at ts+{window}{first_at:+.2f} s: {first_status} {first_detail}")
    replays = []
    start = time.monotonic()
    for k in range(int(args.seconds / 0.1)):
        await asyncio.sleep(max(0.0, start + 0.1 * k - time.monotonic()))
        if time.monotonic() > start + args.seconds + 2:
            break
        status, detail, at = await send()
        replays.append({"rel_s": round(at, 3), "status": status, "detail": detail})
    counts = collections.Counter(r["status"] for r in replays)
    accepted = [r["rel_s"] for r in replays if r["status"] == "200"]
    details = collections.Counter(r["detail"] for r in replays if r["status"] != "200")
    print(f"replay-edge: X-Timestamp = now - {window} + 2; {len(replays)} replays sent from "
          f"ts+{window}{replays[0]['rel_s']:+.2f} s to ts+{window}{replays[-1]['rel_s']:+.2f} s: "
          f"{dict(counts)}")
    if accepted:
        print(f"  replays answered 200 at ts+{window} {accepted[0]:+.2f} .. {accepted[-1]:+.2f} s")
    for detail, k in details.most_common(4):
        print(f"  {k} x {detail!r}")
    return {
        "attack": "replay-edge", "window_s": window, "first_status": first_status,
        "first_rel_s": round(first_at, 3), "replays": len(replays),
        "statuses": dict(counts), "replays_200": len(accepted),
        "replays_401": counts.get("401", 0),
        "first_rel_s_replays": replays[0]["rel_s"] if replays else None,
        "last_rel_s_replays": replays[-1]["rel_s"] if replays else None,
        "accepted_rel_s": accepted,
        "rejected_401_rel_s_range": [min((r["rel_s"] for r in replays if r["status"] == "401"),
                                         default=None),
                                     max((r["rel_s"] for r in replays if r["status"] == "401"),
                                         default=None)],
        "reasons": dict(details),
    }


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

ATTACKS = {
    "trickle": attack_trickle,
    "pinger": attack_pinger,
    "slow-reader": attack_slow_reader,
    "slots": attack_slots,
    "early401": attack_early401,
    "escape-cost": attack_escape_cost,
    "replay-edge": attack_replay_edge,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="http://127.0.0.1:<port>[/path]")
    common.add_argument("--secret", required=True, help="the server's WEBHOOK_SECRET")
    common.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="attack", required=True)

    p = sub.add_parser("trickle", parents=[common], help="chunked bodies, 1 byte per write")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--writes", type=int, default=100, help="chunks per connection")
    p.add_argument("--bytes-per-write", type=int, default=1)
    p.add_argument("--duration", type=float, default=7.0,
                   help="seconds the rounds are spread over (keep under body_read_timeout)")

    p = sub.add_parser("pinger", parents=[common], help="keep-alive GET /healthz forever")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=150.0)

    p = sub.add_parser("slow-reader", parents=[common], help="pipeline, never read")
    p.add_argument("--requests", type=int, default=120_000)
    p.add_argument("--max-seconds", type=float, default=150.0)

    p = sub.add_parser("slots", parents=[common], help="hold every connection slot")
    p.add_argument("--connections", type=int, default=1024)
    p.add_argument("--probes", type=int, default=4)

    p = sub.add_parser("early401", parents=[common], help="bad signature heads, no body")

    p = sub.add_parser("escape-cost", parents=[common], help="CPU of 0x7f bodies, wrong sig")
    p.add_argument("--count", type=int, default=50, help="requests per body kind")
    p.add_argument("--size", type=int, default=MIB, help="body bytes (<= body_limit)")

    p = sub.add_parser("replay-edge", parents=[common], help="replays at the window's edge")
    p.add_argument("--window", type=int, default=300, help="the server's replay_window (s)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to replay")
    return parser


def check_bounds(parser, args) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            parser.error(what)

    if hasattr(args, "max_seconds"):
        need(0 < args.max_seconds <= MAX_SECONDS, f"--max-seconds must be in (0, {MAX_SECONDS}]")
    if hasattr(args, "connections"):
        need(0 < args.connections <= 5000, "--connections must be in (0, 5000]")
    if args.attack == "trickle":
        need(0 < args.writes <= 10_000 and 0 < args.bytes_per_write <= 65_536,
             "--writes in (0, 10000], --bytes-per-write in (0, 65536]")
        need(0 < args.duration <= 60, "--duration must be in (0, 60]")
    if args.attack == "pinger":
        need(0 < args.interval <= 60, "--interval must be in (0, 60]")
    if args.attack == "slow-reader":
        need(0 < args.requests <= 1_000_000, "--requests must be in (0, 1000000]")
    if args.attack == "slots":
        need(0 < args.probes <= 30, "--probes must be in (0, 30]")
    if args.attack == "escape-cost":
        need(0 < args.count <= 1000 and 8 < args.size <= 16 * MIB,
             "--count in (0, 1000], --size in (8, 16 MiB]")
    if args.attack == "replay-edge":
        need(3 <= args.window <= 86_400 and 0 < args.seconds <= 30,
             "--window in [3, 86400], --seconds in (0, 30]")


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    try:
        target = Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    check_bounds(parser, args)
    if not alive(args.pid):
        print(f"no process {args.pid}", file=sys.stderr)
        return 2
    connections = getattr(args, "connections", 1) + 256
    raise_nofile(connections)
    limit = server_nofile(args.pid)
    print(f"machine: {machine_info()}; server pid {args.pid}, its open-files limit {limit}",
          flush=True)
    if limit is not None and limit < connections:
        print(f"WARNING: the server's open-files limit {limit} is below {connections}; "
              f"start it after `ulimit -n 20000`", flush=True)
    attack = ATTACKS[args.attack]
    if asyncio.iscoroutinefunction(attack):
        result = asyncio.run(attack(args, target))
    else:
        result = attack(args, target)
    result["server_alive_after"] = alive(args.pid)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
