"""Fan-out: one KV write wakes N blocking queries on that key, through a real ``beacon agent -dev``,
against a bare aiohttp anchor doing the same thing.

    python3 bench/fanout.py [--watchers 10000] [--rounds 3]

Each round starts a fresh server pinned to core 0 (so its memory figure is its own), parks
``--watchers`` connections on ``GET /v1/kv/bench/hot?index=I&wait=120s``, waits until the server
reports all of them parked, measures its RSS, then sends one ``PUT`` and timestamps the first bytes
of every answer (the client runs on core 1 under uvloop with a bare protocol, so its own parsing does
not add to the figures). Reported per round: wake-up p50/p99/last from the write, KiB of RSS per idle
watcher, and the server's CPU per woken watcher. Issue 16's target: 10,000 watchers with p99 < 250 ms
and < 10 KiB per idle watcher.

The anchor is the floor for aiohttp on this machine: a bare handler that parks each request on its
own future and, when the PUT arrives, answers every one with the same bytes the agent sends.
Beacon and the anchor alternate, and the load average is printed with every round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_seconds, env, loadavg, pinned  # noqa: E402
from kv import Conn, _Watcher, pct, settle, start_agent, wait_parked  # noqa: E402

KEY = "bench/hot"
BATCH = 100

ANCHOR = textwrap.dedent("""
    import asyncio, socket, sys
    from aiohttp import web
    import uvloop
    body = open(sys.argv[1], "rb").read()
    waiters = set()
    state = {"index": 5}
    async def get(request):
        if int(request.query.get("index", 0)) >= state["index"]:
            fut = asyncio.get_running_loop().create_future()
            waiters.add(fut)
            try:
                await fut
            finally:
                waiters.discard(fut)
        return web.Response(body=body, content_type="application/json",
                            headers={"X-Consul-Index": str(state["index"])})
    async def put(request):
        await request.read()
        state["index"] += 1
        for fut in list(waiters):
            if not fut.done():
                fut.set_result(None)
        return web.Response(body=b"true", content_type="application/json")
    async def metrics(request):
        return web.Response(text=f"beacon_http_blocking_queries {len(waiters)}\\n")
    app = web.Application()
    app.router.add_get("/v1/kv/bench/hot", get)
    app.router.add_put("/v1/kv/bench/hot", put)
    app.router.add_get("/v1/agent/metrics", metrics)
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(4096)
    print(sock.getsockname()[1], flush=True)
    uvloop.install()
    web.run_app(app, sock=sock, access_log=None, print=None)
""")


@contextmanager
def anchor(body: bytes) -> Iterator[tuple[int, int]]:
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(body)
    proc = subprocess.Popen(pinned(0, [sys.executable, "-c", ANCHOR, f.name]), stdout=subprocess.PIPE, text=True,
                            env=env())
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(f.name)


@contextmanager
def agent() -> Iterator[tuple[int, int]]:
    proc, port = start_agent()
    try:
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def current_index(port: int) -> tuple[int, bytes]:
    c = await Conn.open(port)
    status, headers, body = await c.call("GET", f"/v1/kv/{KEY}")
    c.close()
    assert status == 200, status
    return int(headers["x-consul-index"]), body


async def broadcast(port: int, pid: int, watchers: int) -> dict[str, float]:
    writer = await Conn.open(port)
    await writer.call("PUT", f"/v1/kv/{KEY}", b"go")
    index, _ = await current_index(port)
    loop = asyncio.get_running_loop()
    base_rss = await settle(pid)
    protos: list[_Watcher] = []
    req = f"GET /v1/kv/{KEY}?index={index}&wait=120s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    # In batches, each parked before the next: a storm of connects overflows the server's accept
    # queue, and the connections it drops come back seconds later (SYN-ACK retries); that is not
    # what this measures.
    for i in range(0, watchers, BATCH):
        made = await asyncio.gather(*(loop.create_connection(_Watcher, "127.0.0.1", port)
                                      for _ in range(min(BATCH, watchers - i))))
        for _, p in made:
            p.transport.write(req)
        protos += [p for _, p in made]
        await wait_parked(port, len(protos))
    parked_rss = await settle(pid, 2.0)
    early = sum(1 for p in protos if p.first is not None)
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await writer.call("PUT", f"/v1/kv/{KEY}", b"go %d" % time.time_ns())  # a new value: an unchanged one wakes nobody
    await asyncio.wait_for(asyncio.gather(*(p.done for p in protos)), 120)
    cpu = cpu_seconds(pid) - cpu0
    lat = [p.first - t0 for p in protos if p.first is not None]
    ok = sum(1 for p in protos if p.data.startswith(b"HTTP/1.1 200"))
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    writer.close()
    if ok != watchers or early:
        raise RuntimeError(f"{ok} of {watchers} answered 200, {early} answered before the write")
    return {"p50": statistics.median(lat) * 1e3, "p99": pct(lat, 99) * 1e3, "max": max(lat) * 1e3,
            "kib": (parked_rss - base_rss) / watchers, "cpu_us": cpu / watchers * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.watchers + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))  # servers inherit it
    import uvloop

    # The bytes the agent answers a woken watcher with, for the anchor to send too.
    with agent() as (port, _):
        async def sample() -> bytes:
            c = await Conn.open(port)
            await c.call("PUT", f"/v1/kv/{KEY}", b"go")
            c.close()
            return (await current_index(port))[1]
        body = uvloop.run(sample())
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # servers on core 0
    results: dict[str, list[dict[str, float]]] = {"anchor": [], "beacon": []}
    for rnd in range(1, args.rounds + 1):
        for name, server in (("anchor", lambda: anchor(body)), ("beacon", agent)):
            with server() as (port, pid):
                r = uvloop.run(broadcast(port, pid, args.watchers))
            results[name].append(r)
            print(f"round {rnd} {name:<6}: {args.watchers} watchers woken by one write: p50 {r['p50']:7.1f} ms  "
                  f"p99 {r['p99']:7.1f} ms  last {r['max']:7.1f} ms  {r['kib']:5.1f} KiB per idle watcher  "
                  f"{r['cpu_us']:5.1f} us CPU per woken watcher  (load {loadavg()})", flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.watchers:,} watchers; load average at the end: {loadavg()}")
    print("| server | wake-up p50 | p99 | last | KiB per idle watcher | CPU per woken watcher |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("anchor", "beacon"):
        rs = results[name]
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        label = "bare aiohttp (anchor)" if name == "anchor" else "Beacon agent -dev"
        print(f"| {label} | {med['p50']:.0f} ms | **{med['p99']:.0f} ms** | {med['max']:.0f} ms | "
              f"**{med['kib']:.1f}** | {med['cpu_us']:.0f} us |")


if __name__ == "__main__":
    main()
