"""What watchers cost a plain etcd's writes: the floor under Beacon's sequential writes (issue 11).

A Beacon cluster is a plain etcd plus one watch stream per server on the log key (every server
applies every entry). This measures, on a plain 3-member etcd with Beacon's member settings and one
Python client writing sequentially to the etcd leader through the JSON gateway (``put`` with
``prev_kv``, as Beacon's proposer does): no watchers; one JSON-gateway watcher per member (what
Beacon's servers hold, the consumer reduced to draining the socket); one gRPC watcher per member
(``etcdctl watch``, a Go consumer). Rounds alternate (order reversed every other round), each on a
fresh cluster; every round is printed, then the medians.

    python3 bench/etcd_watchers.py [--rounds 3] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_seconds, loadavg  # noqa: E402
from raft import Etcd  # noqa: E402  (bench/raft.py's anchor: 3 members with Beacon's member settings)

KEY = b"/beacon/dc1/log"
MODES = ("none", "json", "grpc")


async def leader_of(s: aiohttp.ClientSession, cluster: Etcd) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leader = await cluster.leader(s)
        if leader:
            return leader
        await asyncio.sleep(0.2)
    raise RuntimeError("no etcd leader within 30 s")


async def drain_watch(url: str, stop: asyncio.Event) -> None:
    """A JSON-gateway watch of KEY whose consumer only reads the stream."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = orjson.dumps({"create_request": {"key": base64.b64encode(KEY).decode(), "start_revision": "1"}})
    writer.write(b"POST /v3/watch HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (host.encode(), len(body)) + body)
    try:
        while not stop.is_set():
            try:
                if not await asyncio.wait_for(reader.read(1 << 16), 0.5):
                    break
            except TimeoutError:
                continue
    finally:
        writer.close()


async def one_round(mode: str, tmp: str, seconds: float) -> tuple[float, float, float]:
    cluster = Etcd(tmp)
    procs = list(cluster.procs.values())
    urls = [f"http://{cluster.client[m]}" for m in cluster.procs]
    watchers: list[subprocess.Popen[bytes]] = []
    try:
        async with aiohttp.ClientSession() as s:
            leader = await leader_of(s, cluster)
            stop = asyncio.Event()
            tasks = []
            if mode == "json":
                tasks = [asyncio.create_task(drain_watch(u, stop)) for u in urls]
            elif mode == "grpc":
                watchers = [subprocess.Popen(["etcdctl", "--endpoints", u, "watch", KEY.decode()],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             env={**os.environ, "ETCDCTL_API": "3"}) for u in urls]
            await asyncio.sleep(1.0)  # the watches are set up
            put = {"key": base64.b64encode(KEY).decode(), "value": base64.b64encode(os.urandom(200)).decode(),
                   "prev_kv": True}
            lat: list[float] = []
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                async with s.post(f"http://{cluster.client[leader]}/v3/kv/put", json=put) as r:
                    await r.read()
                lat.append(time.perf_counter() - t0)
            cpu = (sum(cpu_seconds(p.pid) for p in procs) - cpu0) / len(lat)
            stop.set()
            for t in tasks:
                await t
            lat.sort()
            return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3, cpu * 1e6
    finally:
        for p in watchers:
            p.kill()
            p.wait()
        cluster.stop()


async def main(rounds: int, seconds: float) -> None:
    res: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
    for rnd in range(rounds):
        for mode in (MODES if rnd % 2 == 0 else MODES[::-1]):
            tmp = tempfile.mkdtemp(prefix="beacon-etcdwatch-")
            try:
                r = await one_round(mode, tmp, seconds)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            res[mode].append(r)
            print(f"round {rnd + 1} {mode:5s} p50 {r[0]:.2f} ms p99 {r[1]:.2f} ms, etcd CPU per put {r[2]:.0f} µs "
                  f"(load {loadavg()})", flush=True)
    base = statistics.median(r[0] for r in res["none"])
    print(f"\nmedians of {rounds} rounds, sequential puts to the etcd leader, {seconds:.0f} s each (load {loadavg()})")
    print("| watchers | p50 (ms) | p99 (ms) | etcd CPU per put, 3 members (µs) | p50 vs none |")
    print("|---|---:|---:|---:|---:|")
    for mode, rs in res.items():
        p50 = statistics.median(r[0] for r in rs)
        print(f"| {mode} | {p50:.2f} | {statistics.median(r[1] for r in rs):.2f} | "
              f"{statistics.median(r[2] for r in rs):.0f} | {p50 / base:.2f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.seconds))
