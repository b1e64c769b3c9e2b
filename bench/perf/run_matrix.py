#!/usr/bin/env python3
"""The load matrix of issue 10, driven by bench/perf/run.sh (which builds the servers and
installs wrk first). Python 3 standard library only; talks to 127.0.0.1 only, every wrk
run bounded by -d and --timeout.

Servers, all started once per run and pinned to CPU 0 (`taskset -c 0`), wrk pinned to
CPU 1 with one thread:

- ``bare``: bench/perf/baseline-server, bare hyper reading the body, fixed JSON reply;
- ``json``: the crate's ``echo`` example, REPLY_FORMAT=json, a 64-hex secret;
- ``sse``:  the same with REPLY_FORMAT=sse (wrk reads each stream to its end);
- ``node``: with ``--node PATH``, the platform's own Node reference server
  (``examples/webhook-typescript/server.mjs`` of markmacmahon/agent-template; not in this
  repository), the same secret. It verifies the raw body only, so it answers 401 to the
  sender's escaped signature of non-ASCII text: it is left out of the multilingual cells.

Both echo servers run as a new user runs them: RUST_LOG unset (info), NO_COLOR=1, the
log to a file. For every cell (body, connections, server), in this order so that the
servers are interleaved in the same sitting: a fresh pool of distinct signed
requests (gen_pool.py), VmHWM reset (clear_refs 5), utime+stime read from
/proc/PID/stat, wrk with pool.lua, /proc read again. CPU per request = (utime+stime
delta, 10 ms ticks) / requests answered. A cell with any non-2xx answer, a wrong body,
or a socket error makes the whole run fail loudly (exit 1) after saving what it has.

Then the cost-growth series: bare and json at 16 connections, bodies 0.4 to 256 KB.

Results: OUT/run-N.json and OUT/run-N.md (markdown tables), OUT/machine-N.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from webhook_client import machine_info, proc_status as vm, reset_hwm  # noqa: E402  (bench/, one folder up)

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORTS = {"bare": 18300, "json": 18301, "sse": 18302, "node": 18303}
BODY_LABEL = {"small": "0.4 KB", "3k": "3 KB", "multi": "3 KB multilingual", "16k": "16 KB",
              "63k": "63 KB", "256k": "256 KB"}
# First guess of the highest req/s of a cell, to size its pool; later cells of the
# same kind use 1.5x what was measured.
RATE_GUESS = {"small": 120_000, "3k": 100_000, "multi": 100_000, "16k": 50_000, "63k": 30_000,
              "256k": 5_000}


class RunFailed(Exception):
    pass


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def machine() -> dict:
    """bench/webhook_client.py's machine record, plus the kernel."""
    return {**machine_info(), "kernel": os.uname().release}


def wait_healthy(port: int, proc: subprocess.Popen, log: Path, probe: bool = True) -> None:
    """Until /healthz answers 200 or, for a server without one (node), a TCP connect works."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"server on {port} exited at start-up; see {log}")
        try:
            if not probe:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RunFailed(f"server on {port} did not start answering within 15 s")


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.secret = secrets.token_hex(32)
        self.state = self.out / "last-x-timestamp"
        self.procs: dict[str, subprocess.Popen] = {}
        self.measured: dict[tuple, float] = {}

    def start(self, run: int) -> None:
        for name, port in PORTS.items():
            if name == "node" and not self.args.node:
                continue
            log = self.out / f"server-{name}-run{run}.log"
            env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
            # SERVER_RUST_LOG=warn drops the per-request info line: its cost, measured.
            if os.environ.get("SERVER_RUST_LOG"):
                env["RUST_LOG"] = os.environ["SERVER_RUST_LOG"]
            env.update(PORT=str(port), NO_COLOR="1")
            if name == "bare":
                cmd = [self.args.baseline]
            elif name == "node":
                cmd = ["node", self.args.node]
                env.update(WEBHOOK_SECRET=self.secret)
            else:
                cmd = [self.args.echo]
                env.update(WEBHOOK_SECRET=self.secret, REPLY_FORMAT=name)
                env.pop("PLATFORM_API_URL", None)
            with open(log, "wb") as f:
                proc = subprocess.Popen(["taskset", "-c", self.args.server_cpu, *cmd], env=env,
                                        stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            self.procs[name] = proc
            wait_healthy(port, proc, log, probe=name != "node")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def cell(self, server: str, body: str, conns: int, duration: float, record: bool = True) -> dict:
        port = PORTS[server]
        pid = self.procs[server].pid
        guess = self.measured.get((server, body, conns), RATE_GUESS[body])
        count = int(duration * guess * 1.5) + 2000
        pool = self.out / "pool.txt"
        gen = subprocess.run(
            [sys.executable, str(HERE / "gen_pool.py"), "--body", body, "--count", str(count),
             "--secret", self.secret, "--port", str(port), "--out", str(pool),
             "--state", str(self.state)],
            check=True, capture_output=True, text=True)
        body_bytes = json.loads(gen.stdout)["body_bytes"]
        mode = {"bare": "any", "node": "json"}.get(server, server)
        reset_hwm(pid)
        before = cpu_ticks(pid)
        t0 = time.monotonic()
        wrk = subprocess.run(
            ["taskset", "-c", self.args.client_cpu, "wrk", "-t1", f"-c{conns}",
             f"-d{duration:g}s", "--timeout", "5s", "-s", str(HERE / "pool.lua"),
             f"http://127.0.0.1:{port}", "--", str(pool), mode],
            capture_output=True, text=True, timeout=duration + 60)
        wall = time.monotonic() - t0
        after = cpu_ticks(pid)
        mem = vm(pid)
        pool.unlink(missing_ok=True)
        line = next((l for l in wrk.stdout.splitlines() if l.startswith("RESULT ")), None)
        if wrk.returncode != 0 or line is None:
            raise RunFailed(f"wrk failed on {server}/{body}/{conns}: rc {wrk.returncode}\n"
                            f"{wrk.stdout}\n{wrk.stderr}")
        r = json.loads(line[len("RESULT "):])
        requests = r["requests"]
        secs = r["duration_us"] / 1e6
        cpu_s = (after - before) / CLK_TCK
        res = {
            "server": server, "body": body, "body_bytes": body_bytes, "conns": conns,
            "requests": requests, "seconds": round(secs, 3), "rps": round(requests / secs, 1),
            "p50_us": r["p50_us"], "p99_us": r["p99_us"], "max_us": r["max_us"],
            "cpu_ticks": after - before, "cpu_us_per_req": round(cpu_s * 1e6 / max(requests, 1), 2),
            "cpu_util": round(cpu_s / secs, 3), "wall_s": round(wall, 2), "peak_rss_kb": mem.get("VmHWM"),
            "rss_kb": mem.get("VmRSS"), "pool": r["pool"], "exhausted": r["exhausted"],
            "statuses": r["statuses"], "non2xx": r["non2xx"], "bad_body": r["bad_body"],
            "socket_errors": {k[4:]: r[k] for k in r if k.startswith("err_") and r[k]},
        }
        if record:
            self.measured[(server, body, conns)] = max(res["rps"] * 1.5, 500)
        print(f"  {server:4} {BODY_LABEL[body]:>17} c={conns:<3} {res['rps']:>9.0f} req/s "
              f"p50 {res['p50_us']:>6} us p99 {res['p99_us']:>6} us cpu {res['cpu_us_per_req']:>7.2f} us/req "
              f"({res['cpu_util'] * 100:.0f}%) hwm {res['peak_rss_kb']} kB"
              + (" POOL EXHAUSTED" if res["exhausted"] else ""), flush=True)
        problems = []
        if res["non2xx"]:
            problems.append(f"{res['non2xx']} non-2xx answers ({res['statuses']})")
        if res["bad_body"]:
            problems.append(f"{res['bad_body']} 2xx answers with a wrong body")
        if res["socket_errors"]:
            problems.append(f"socket errors {res['socket_errors']}")
        if "Non-2xx" in wrk.stdout:
            problems.append("wrk reported non-2xx or 3xx responses")
        if problems:
            res["failed"] = "; ".join(problems)
            raise RunFailed(f"{server}/{body}/c{conns}: " + "; ".join(problems) + f"\n{wrk.stdout}")
        return res


def trim_logs(out: Path, run: int, keep: int = 40) -> None:
    """The echo servers log one line per request (gigabytes per run): keep the first and
    last lines of each log and how many there were."""
    for log in out.glob(f"server-*-run{run}.log"):
        count, head, tail = 0, [], []
        with open(log, "rb") as f:
            for line in f:
                count += 1
                if count <= keep:
                    head.append(line)
                else:
                    tail.append(line)
                    if len(tail) > keep:
                        tail.pop(0)
        size = log.stat().st_size
        with open(log, "wb") as f:
            f.writelines(head)
            f.write(f"... [run_matrix.py kept the first and last {keep} of {count} lines, "
                    f"{size} bytes]\n".encode())
            f.writelines(tail)


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def tables(results: list[dict], info: dict, run: int) -> str:
    lines = [f"Run {run}: {info['date_utc']} (start), load average at start {info['loadavg_1_5_15']}, "
             f"at end {info.get('loadavg_end', '?')}.", ""]
    matrix = [r for r in results if r.get("series") == "matrix"]
    # The matrix's own cells only: the growth series measures bare and json again at its
    # connection count, and a later cell of the same key would stand in for the matrix's.
    by = {(r["server"], r["body"], r["conns"]): r for r in matrix}
    if matrix:
        lines += ["| body | conns | server | req/s | p50 µs | p99 µs | CPU µs/req | server CPU | "
                  "peak RSS MiB | CPU/req ÷ bare | req/s ÷ bare | req/s per core ÷ node |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in matrix:
            bare = by.get(("bare", r["body"], r["conns"]))
            node = by.get(("node", r["body"], r["conns"]))
            # req/s per core is 1 / CPU per request, so this is node's CPU/req ÷ this one's.
            per_core = (ratio(node["cpu_us_per_req"], r["cpu_us_per_req"])
                        if node and r["server"] not in ("node", "bare") else "")
            lines.append(
                f"| {BODY_LABEL[r['body']]} ({r['body_bytes']} B) | {r['conns']} | {r['server']} | "
                f"{r['rps']:,.0f} | {r['p50_us']} | {r['p99_us']} | {r['cpu_us_per_req']:.1f} | "
                f"{r['cpu_util'] * 100:.0f}% | {r['peak_rss_kb'] / 1024:.1f} | "
                f"{ratio(r['cpu_us_per_req'], bare['cpu_us_per_req']) if bare and r['server'] != 'bare' else ''} | "
                f"{ratio(r['rps'], bare['rps']) if bare and r['server'] != 'bare' else ''} | "
                f"{per_core} |"
                + (" pool exhausted |" if r["exhausted"] else ""))
        lines.append("")
    growth = [r for r in results if r.get("series") == "growth"]
    if growth:
        gby = {(r["server"], r["body"]): r for r in growth}
        lines += ["| body | bare CPU µs/req | json CPU µs/req | json − bare µs | json ÷ bare | "
                  "json req/s | bare req/s |", "|---|---|---|---|---|---|---|"]
        for body in dict.fromkeys(r["body"] for r in growth):
            b, j = gby.get(("bare", body)), gby.get(("json", body))
            if not (b and j):
                continue
            lines.append(f"| {BODY_LABEL[body]} ({j['body_bytes']} B) | {b['cpu_us_per_req']:.1f} | "
                         f"{j['cpu_us_per_req']:.1f} | {j['cpu_us_per_req'] - b['cpu_us_per_req']:.1f} | "
                         f"{ratio(j['cpu_us_per_req'], b['cpu_us_per_req'])} | {j['rps']:,.0f} | "
                         f"{b['rps']:,.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--echo", required=True, help="the release echo example binary")
    ap.add_argument("--baseline", required=True, help="the release baseline-server binary")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    ap.add_argument("--bodies", default="small,3k,63k,multi")
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--servers", default="bare,json,sse",
                    help="node joins when --node is given")
    ap.add_argument("--node", help="the platform's Node reference server.mjs, to measure too")
    ap.add_argument("--growth", default="small,3k,16k,63k,256k", help="'' to skip")
    ap.add_argument("--growth-conns", type=int, default=16)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    args = ap.parse_args()

    if args.node and "node" not in args.servers.split(","):
        args.servers += ",node"
    if "node" in args.servers.split(",") and not args.node:
        ap.error("--servers names node: give the reference server's path with --node")
    bench = Bench(args)
    failed = False
    for run in range(1, args.runs + 1):
        info = machine()
        print(f"== run {run}: {info}", flush=True)
        results: list[dict] = []
        try:
            bench.start(run)
            for name in bench.procs:  # warm-up, not recorded
                bench.cell(name, "3k", 16, 1.0, record=False)
            for body in args.bodies.split(","):
                for conns in (int(c) for c in args.conns.split(",")):
                    for server in args.servers.split(","):
                        if server == "node" and body == "multi":
                            continue  # 401: it cannot verify the sender's escaped signature
                        res = bench.cell(server, body, conns, args.duration)
                        res["series"] = "matrix"
                        results.append(res)
            for body in filter(None, args.growth.split(",")):
                for server in ("bare", "json"):
                    res = bench.cell(server, body, args.growth_conns, args.duration)
                    res["series"] = "growth"
                    results.append(res)
        except (RunFailed, subprocess.CalledProcessError) as exc:
            print(f"\n!!! RUN {run} FAILED: {exc}", file=sys.stderr, flush=True)
            failed = True
        finally:
            info["loadavg_end"] = machine()["loadavg_1_5_15"]
            info["server_final"] = {n: vm(p.pid) for n, p in bench.procs.items() if p.poll() is None}
            bench.stop()
            trim_logs(bench.out, run)
            (bench.out / f"run-{run}.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
            (bench.out / f"run-{run}.md").write_text(tables(results, info, run))
        if failed:
            return 1
    print(f"results in {bench.out}/run-*.md and run-*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
