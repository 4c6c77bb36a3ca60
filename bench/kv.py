"""KV coordination on one agent: lock round trips/s, and blocking-query wake-ups with 10,000 idle
watchers (agent memory per watcher, p50/p99 wake-up after a write). Loopback only, bounded in time.

Anchor, measured in the same run on the same connection: plain ``PUT /v1/kv`` round trips/s. A lock
round trip (acquire + release) is two writes, so a ratio near 0.5 means locks cost what writes cost.

Phases:

1. ``lock``: one client, one session, sequential ``?acquire`` + ``?release`` for ``--seconds``; then
   ``--contenders`` clients with a session each fighting for the same key (successful acquisitions/s).
2. ``targeted``: ``--watchers`` connections each parked on its own key (``?index=&wait=``). Writes
   to random watched keys; for each, the time from sending the write to the watcher's answer, and a
   check that no other watcher woke.
3. ``broadcast``: the same number of watchers parked on one key; one write; the time until each of
   them has its answer.

    python3 bench/kv.py [--seconds 3] [--watchers 10000] [--samples 300] [--phases lock,targeted,broadcast]

The agent runs pinned to core 0 and this client (uvloop) to core 1. The broadcast watchers use a bare
protocol that only timestamps the first bytes of their answer, so the client's own parsing does not
add to the measured wake-up time; their answers are checked for a 200 afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_seconds  # noqa: E402

# ---------------------------------------------------------------------------- agent
# Thousands of watchers come from this one client address: lift Consul's per-client connection limit
# (limits.http_max_conns_per_client, 200 by default; 0 is no limit).
NO_CONN_LIMIT = os.path.join(tempfile.gettempdir(), f"beacon-bench-limits-{os.getpid()}.json")


def start_agent() -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    with open(NO_CONN_LIMIT, "w", encoding="ascii") as f:
        json.dump({"limits": {"http_max_conns_per_client": 0}}, f)
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "beacon", "agent", "-dev",
                             "-config-file", NO_CONN_LIMIT, "-http-port", "0",
                             "-dns-port", "-1", "-no-engine", "-log-level", "warn"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    try:
        for line in proc.stdout:
            m = re.search(r"==> Ready: http_port=(\d+)", line)
            if m:
                # Keep reading its output so the agent never blocks on a full pipe.
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc, int(m.group(1))
            if time.monotonic() > deadline:
                break
    finally:
        os.unlink(NO_CONN_LIMIT)  # read at startup
    proc.kill()
    raise RuntimeError("agent did not start")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- minimal HTTP/1.1
class Conn:
    """One keep-alive connection; just enough HTTP for this bench (Content-Length bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        self.send(method, path, body)
        return await self.response()

    def close(self) -> None:
        self.writer.close()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


# ---------------------------------------------------------------------------- phases
async def bench_locks(port: int, seconds: float, contenders: int) -> dict[str, float]:
    c = await Conn.open(port)
    _, _, body = await c.call("PUT", "/v1/session/create", b'{"LockDelay":"0s","Name":"bench"}')
    sid = json.loads(body)["ID"]

    async def puts(duration: float) -> float:
        n = 0
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            await c.call("PUT", "/v1/kv/bench/anchor", str(n).encode())
            n += 1
        return n / duration

    async def locks(duration: float) -> float:
        n = 0
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            _, _, a = await c.call("PUT", f"/v1/kv/bench/lock?acquire={sid}", b"me")
            _, _, r = await c.call("PUT", f"/v1/kv/bench/lock?release={sid}", b"")
            assert a.strip() == b"true" and r.strip() == b"true", (a, r)
            n += 1
        return n / duration

    await puts(0.5)  # warm-up
    # Interleave anchor and lock rounds so a noisy neighbour hits both alike; report medians.
    put_rates, lock_rates = [], []
    for _ in range(3):
        put_rates.append(await puts(seconds / 3))
        lock_rates.append(await locks(seconds / 3))
    put_rate, lock_rate = statistics.median(put_rates), statistics.median(lock_rates)
    await c.call("PUT", f"/v1/session/destroy/{sid}")
    c.close()

    acquired = [0] * contenders
    inside = 0
    overlap = 0
    deadline = time.monotonic() + seconds

    async def contender(i: int) -> None:
        nonlocal inside, overlap
        conn = await Conn.open(port)
        _, _, b = await conn.call("PUT", "/v1/session/create", b'{"LockDelay":"0s"}')
        s = json.loads(b)["ID"]
        while time.monotonic() < deadline:
            _, _, got = await conn.call("PUT", f"/v1/kv/bench/contended?acquire={s}", b"")
            if got.strip() == b"true":
                inside += 1
                overlap = max(overlap, inside)
                acquired[i] += 1
                inside -= 1
                await conn.call("PUT", f"/v1/kv/bench/contended?release={s}", b"")
        await conn.call("PUT", f"/v1/session/destroy/{s}")
        conn.close()

    await asyncio.gather(*(contender(i) for i in range(contenders)))
    return {"put_rt_per_s": put_rate, "lock_rt_per_s": lock_rate, "ratio": lock_rate / put_rate,
            "contended_acq_per_s": sum(acquired) / seconds, "contenders_that_won": sum(1 for a in acquired if a)}


async def create_keys(port: int, keys: list[str]) -> dict[str, int]:
    c = await Conn.open(port)
    index: dict[str, int] = {}
    for i in range(0, len(keys), 64):
        batch = keys[i:i + 64]
        ops = [{"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(b"0").decode()}} for k in batch]
        status, _, body = await c.call("PUT", "/v1/txn", json.dumps(ops).encode())
        assert status == 200, body
        for r in json.loads(body)["Results"]:
            index[r["KV"]["Key"]] = r["KV"]["ModifyIndex"]
    c.close()
    return index


async def open_many(port: int, n: int) -> list[Conn]:
    conns: list[Conn] = []
    for i in range(0, n, 500):
        conns += await asyncio.gather(*(Conn.open(port) for _ in range(min(500, n - i))))
    return conns


async def settle(pid: int, seconds: float = 1.0) -> int:
    """RSS once it stops growing (parked handlers have allocated what they need)."""
    last = rss_kib(pid)
    for _ in range(20):
        await asyncio.sleep(seconds / 4)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


async def bench_targeted(port: int, pid: int, watchers: int, samples: int) -> dict[str, float]:
    keys = [f"bench/w/{i:05d}" for i in range(watchers)]
    index = await create_keys(port, keys)
    writer = await Conn.open(port)
    base_rss = await settle(pid)
    conns = await open_many(port, watchers)
    for k, c in zip(keys, conns, strict=True):
        c.send("GET", f"/v1/kv/{k}?index={index[k]}&wait=120s")
    await asyncio.gather(*(c.writer.drain() for c in conns))
    pending = {i: asyncio.ensure_future(c.response()) for i, c in enumerate(conns)}
    parked_rss = await settle(pid, 2.0)
    early = [i for i, f in pending.items() if f.done()]
    lat: list[float] = []
    after_ack: list[float] = []
    rng = random.Random(3)
    for n in range(samples):
        i = rng.randrange(watchers)
        t0 = time.perf_counter()
        status, _, _ = await writer.call("PUT", f"/v1/kv/{keys[i]}", str(n + 1).encode())
        t_ack = time.perf_counter()
        assert status == 200
        _, headers, _ = await asyncio.wait_for(pending[i], 30)
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        after_ack.append(max(0.0, t1 - t_ack))
        new_index = int(headers["x-consul-index"])
        conns[i].send("GET", f"/v1/kv/{keys[i]}?index={new_index}&wait=120s")
        pending[i] = asyncio.ensure_future(conns[i].response())
    await asyncio.sleep(0.2)
    # Every woken watcher was re-armed: any answer still sitting here is a wake-up nobody caused.
    spurious = sum(1 for f in pending.values() if f.done())
    for f in pending.values():
        f.cancel()
    for c in conns:
        c.close()
    writer.close()
    return {"watchers": watchers, "rss_base_mib": base_rss / 1024, "rss_parked_mib": parked_rss / 1024,
            "kib_per_watcher": (parked_rss - base_rss) / watchers, "early_answers": len(early),
            "spurious_wakeups": spurious, "p50": statistics.median(lat), "p99": pct(lat, 99), "max": max(lat),
            "p99_after_ack": pct(after_ack, 99)}


class _Watcher(asyncio.Protocol):
    """One parked blocking query: remembers when the first bytes of its answer arrived."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.first: float | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.data += data
        if not self.done.done() and b"\r\n\r\n" in self.data:
            self.done.set_result(None)


async def wait_parked(port: int, watchers: int, timeout: float = 120.0) -> None:
    conn = await Conn.open(port)
    deadline = time.monotonic() + timeout
    parked = -1
    while time.monotonic() < deadline:
        _, _, body = await conn.call("GET", "/v1/agent/metrics?format=prometheus")
        m = re.search(rb"^beacon_http_blocking_queries (\S+)", body, re.M)
        parked = int(float(m.group(1))) if m else -1
        if parked >= watchers:
            conn.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {parked} of {watchers} watchers parked within {timeout}s")


async def bench_broadcast(port: int, pid: int, watchers: int) -> dict[str, float]:
    key = "bench/hot"
    index = (await create_keys(port, [key]))[key]
    loop = asyncio.get_running_loop()
    base_rss = await settle(pid)
    protos: list[_Watcher] = []
    for i in range(0, watchers, 500):
        made = await asyncio.gather(*(loop.create_connection(_Watcher, "127.0.0.1", port)
                                      for _ in range(min(500, watchers - i))))
        protos += [p for _, p in made]
    req = f"GET /v1/kv/{key}?index={index}&wait=120s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for p in protos:
        assert p.transport is not None
        p.transport.write(req)
    # Every watcher must be parked in the agent before the write: connections still waiting in the
    # listen backlog would otherwise be answered seconds later and counted as slow wake-ups.
    await wait_parked(port, watchers)
    parked_rss = await settle(pid, 2.0)
    early = sum(1 for p in protos if p.first is not None)
    writer = await Conn.open(port)
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await writer.call("PUT", f"/v1/kv/{key}", b"go")
    await asyncio.wait_for(asyncio.gather(*(p.done for p in protos)), 60)
    cpu = cpu_seconds(pid) - cpu0
    lat = [p.first - t0 for p in protos if p.first is not None]
    ok = sum(1 for p in protos if p.data.startswith(b"HTTP/1.1 200"))
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    writer.close()
    return {"watchers": watchers, "p50": statistics.median(lat), "p99": pct(lat, 99), "max": max(lat),
            "ok": ok, "early": early, "kib_per_watcher": (parked_rss - base_rss) / watchers,
            "cpu_us_per_watcher": cpu / watchers * 1e6}


async def run(args: argparse.Namespace, port: int, pid: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    phases = args.phases.split(",")
    if "lock" in phases:
        out["lock"] = await asyncio.wait_for(bench_locks(port, args.seconds, args.contenders),
                                             args.seconds * 4 + 60)
    if "targeted" in phases:
        out["targeted"] = await asyncio.wait_for(bench_targeted(port, pid, args.watchers, args.samples), 300)
    if "broadcast" in phases:
        for rnd in range(args.rounds):
            bc = await asyncio.wait_for(bench_broadcast(port, pid, args.watchers), 300)
            print(f"broadcast round {rnd + 1}: p50 {ms(bc['p50'])}  p99 {ms(bc['p99'])}  last {ms(bc['max'])}  "
                  f"{bc['kib_per_watcher']:.1f} KiB per idle watcher, agent CPU {bc['cpu_us_per_watcher']:.0f} us per "
                  f"woken watcher  ({bc['ok']} answered 200, "
                  f"{bc['early']} early; load {open('/proc/loadavg').read().split()[0]})", flush=True)
            out.setdefault("broadcast_rounds", []).append(bc)  # type: ignore[arg-type]
        rounds = out["broadcast_rounds"]  # type: ignore[assignment]
        out["broadcast"] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}  # type: ignore[index]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--contenders", type=int, default=4)
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="broadcast rounds (median reported)")
    ap.add_argument("--phases", default="lock,targeted,broadcast")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.watchers + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))  # the agent inherits it
    proc, port = start_agent()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the agent is on core 0
    try:
        import uvloop
        res = uvloop.run(run(args, port, proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if "lock" in res:
        lk = res["lock"]
        print(f"anchor  plain KV PUT round trips      {lk['put_rt_per_s']:9.0f} /s  (1 client, sequential)")
        print(f"lock    acquire+release round trips   {lk['lock_rt_per_s']:9.0f} /s  ratio to anchor {lk['ratio']:.2f}")
        print(f"lock    contended acquisitions        {lk['contended_acq_per_s']:9.0f} /s  "
              f"({args.contenders} clients, {lk['contenders_that_won']} won at least once)")
    if "targeted" in res:
        tg = res["targeted"]
        print(f"watch   {tg['watchers']} idle watchers, agent RSS {tg['rss_base_mib']:.0f} -> "
              f"{tg['rss_parked_mib']:.0f} MiB = {tg['kib_per_watcher']:.1f} KiB per watcher")
        print(f"watch   targeted wake-up (write sent -> watcher answered): p50 {ms(tg['p50'])}  "
              f"p99 {ms(tg['p99'])}  max {ms(tg['max'])}; after write ack p99 {ms(tg['p99_after_ack'])}; "
              f"spurious wake-ups {tg['spurious_wakeups']}, early answers {tg['early_answers']}")
    if "broadcast" in res:
        bc = res["broadcast"]
        print(f"watch   broadcast: one write wakes {bc['watchers']:.0f} watchers (median of {args.rounds} rounds): "
              f"p50 {ms(bc['p50'])}  p99 {ms(bc['p99'])}  last {ms(bc['max'])}; "
              f"{bc['kib_per_watcher']:.1f} KiB per idle watcher")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
