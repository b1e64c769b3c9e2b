#!/usr/bin/env python3
"""Server RSS per idle connection: open N connections to 127.0.0.1:PORT (batches of 500),
hold them 1 s, print VmRSS before/after from /proc/PID/status. Sends nothing.

    python3 bench/perf/idle_conns.py --port 18300 --pid PID --n 10000
"""
import argparse, asyncio, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import webhook_client as wc  # noqa: E402


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    a = ap.parse_args()
    assert a.n <= 12000
    t = wc.Target(f"http://127.0.0.1:{a.port}/")
    before = wc.proc_status(a.pid)
    conns = []
    for s in range(0, a.n, 500):
        conns += await asyncio.gather(*(wc.open_conn(t, 10.0) for _ in range(s, min(s + 500, a.n))),
                                      return_exceptions=True)
    await asyncio.sleep(1.0)
    after = wc.proc_status(a.pid)
    ok = sum(not isinstance(c, BaseException) for c in conns)
    for c in conns:
        if not isinstance(c, BaseException):
            wc.close_writer(c[1])
    print(f"connections {ok}/{a.n} rss_before_kb {before.get('VmRSS')} rss_after_kb {after.get('VmRSS')} "
          f"fds {after.get('fds')} per_conn_kb {(after['VmRSS'] - before['VmRSS']) / max(ok, 1):.2f}")


asyncio.run(main())
