#!/usr/bin/env python3
"""Issue 10: SSE frame timing and CPU per frame against inflight-server in MODE=sse.

Each request: a fresh blocking socket to 127.0.0.1:PORT, one distinct signed request
(signed as the real sender, bench/webhook_client.py), then recv() until `event: done`,
stamping every recv with time.time_ns() (the wall clock, the same clock the server's
SystemTime reads: each delta's text is `t=<ns>` taken when the assistant produced it).

  latency (default): per reply, head -> first delta, first -> second delta (recv times),
      and production -> arrival of each delta (client recv time - the t= in the frame).
  --wire: also capture the loopback interface (AF_PACKET, as root) and stamp each packet
      carrying a delta with the kernel's SO_TIMESTAMPNS (the wall clock) when it is
      transmitted on lo: production -> wire, free of the client's own wake-up.
  --cpu: also the server's utime+stime (/proc/PID/stat, clock ticks) over all the replies,
      divided by the delta frames received.

    python3 bench/perf/sse_frames.py --port 18291 --secret S --pid PID --reps 100
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import webhook_client as wc  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DELTA = re.compile(rb"event: delta\ndata: (\{[^\n]*\})\n\n")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def one(target, secret, timeout):
    req = wc.signed_request(target, secret, wc.make_payload(f"sse {uuid.uuid4().hex[:8]}", history=False))
    s = socket.create_connection((target.host, target.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + timeout
    recvs: list[tuple[int, int]] = []  # (time_ns, cumulative bytes after this recv)
    buf = bytearray()
    try:
        s.sendall(req.head + req.body)
        while b"event: done" not in buf or not buf.endswith(b"0\r\n\r\n"):
            if time.monotonic() > deadline:
                raise TimeoutError("reply not complete in time")
            data = s.recv(1 << 20)
            t = time.time_ns()
            if not data:
                break
            buf += data
            recvs.append((t, len(buf)))
    finally:
        s.close()
    head_end = buf.find(b"\r\n\r\n") + 4
    status = int(buf[9:12])
    head_t = next(t for t, n in recvs if n >= head_end)
    deltas = []  # (recv time ns, produced ns)
    for m in DELTA.finditer(buf, head_end):
        t_recv = next(t for t, n in recvs if n >= m.end())
        produced = int(json.loads(m.group(1))["text"].split("=", 1)[1])
        deltas.append((t_recv, produced))
    return status, head_t, deltas, len(recvs), b"event: done" in buf


class WireCapture(threading.Thread):
    """Kernel transmit timestamps of the server's TCP segments on lo that carry `t=<ns>`."""

    SO_TIMESTAMPNS = 35

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.first_seen: dict[int, int] = {}  # produced ns -> earliest kernel timestamp ns
        self.with_head: set[int] = set()  # produced ns whose segment also holds the response head
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, self.SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.settimeout(0.2)

    def run(self):
        while not self.stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, 64)
            except (socket.timeout, TimeoutError):
                continue
            ts = None
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == self.SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    ts = sec * 1_000_000_000 + nsec
            if ts is None or len(data) < 14 + 20 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            if ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4:]
            if int.from_bytes(tcp[0:2], "big") != self.port:
                continue
            payload = tcp[(tcp[12] >> 4) * 4:]
            for m in re.finditer(rb'"t=(\d+)"', payload):
                produced = int(m.group(1))
                if payload.startswith(b"HTTP/1.1 "):
                    self.with_head.add(produced)
                if produced not in self.first_seen or ts < self.first_seen[produced]:
                    self.first_seen[produced] = ts


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--wire", action="store_true")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    assert a.reps <= 2000
    target = wc.Target(f"http://127.0.0.1:{a.port}/")
    head_to_first, first_to_second, prod_to_wire_first, prod_to_wire_all = [], [], [], []
    bad, frames, recv_calls = 0, 0, 0
    produced_first, produced_all = set(), []
    cap = WireCapture(a.port) if a.wire else None
    if cap:
        cap.start()
    c0, t0 = cpu_s(a.pid), time.monotonic()
    for _ in range(a.reps):
        status, head_t, deltas, nrecv, done = one(target, a.secret, a.timeout)
        recv_calls += nrecv
        if status != 200 or not deltas or not done:
            bad += 1
            continue
        frames += len(deltas)
        produced_first.add(deltas[0][1])
        produced_all += [p for _, p in deltas]
        head_to_first.append((deltas[0][0] - head_t) / 1e3)
        prod_to_wire_first.append((deltas[0][0] - deltas[0][1]) / 1e3)
        prod_to_wire_all += [(r - p) / 1e3 for r, p in deltas]
        if len(deltas) > 1:
            first_to_second.append((deltas[1][0] - deltas[0][0]) / 1e3)
    cpu, wall = cpu_s(a.pid) - c0, time.monotonic() - t0
    out = {"reps": a.reps, "bad": bad, "delta_frames": frames, "recv_calls": recv_calls,
           "wall_s": round(wall, 2)}

    def summ(name, xs):
        if xs:
            out[name] = {"p50": round(statistics.median(xs), 1), "p90": round(pct(xs, 0.9), 1),
                         "p99": round(pct(xs, 0.99), 1), "max": round(max(xs), 1),
                         "min": round(min(xs), 1)}
    summ("head_to_first_delta_us", head_to_first)
    summ("first_to_second_delta_us", first_to_second)
    summ("produced_to_client_first_delta_us", prod_to_wire_first)
    if not a.cpu:
        summ("produced_to_client_any_delta_us", prod_to_wire_all)
    if cap:
        time.sleep(0.3)
        cap.stop.set()
        cap.join(2)
        seen = cap.first_seen
        out["wire_captured"] = sum(p in seen for p in produced_all)
        out["first_delta_in_head_segment"] = sum(p in cap.with_head for p in produced_first)
        summ("produced_to_wire_first_delta_us", [(seen[p] - p) / 1e3 for p in produced_first if p in seen])
        summ("produced_to_wire_any_delta_us", [(seen[p] - p) / 1e3 for p in produced_all if p in seen])
    if a.cpu:
        out["server_cpu_s"] = round(cpu, 2)
        out["server_cpu_us_per_delta_frame"] = round(cpu * 1e6 / max(frames, 1), 2)
        out["server_cpu_us_per_reply"] = round(cpu * 1e6 / max(a.reps - bad, 1), 1)
    print(json.dumps(out))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
