"""A history-recording workload: N clients doing CAS increments and reads on a few keys.

Point it at any set of agent HTTP addresses (a dev agent now, a 3-server cluster later). Each client
talks to one address and moves to the next after an error. A *nemesis* hook (for example: kill the
Raft leader, restart it) can be plugged in; it is awaited every ``nemesis_interval`` seconds while
the clients run. The recorded history goes to :mod:`tests.kvcoord.lincheck`.

* read: ``GET /v1/kv/<key>`` (``?consistent`` by default) -> ``(value, ModifyIndex)``.
* increment: a read, then ``PUT /v1/txn [{KV: {Verb: cas, Index: <read index>, Value: v+1}}]``.
  200 gives the new ModifyIndex (``("ok", index)``), 409 is a failed CAS; a timeout, a connection
  error or a 5xx leaves the outcome unknown (recorded as indeterminate, return time infinity).

Run the long variant by hand::

    python3 -m tests.kvcoord.workload --addr 127.0.0.1:8500 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from tests.kvcoord.lincheck import CheckResult, Op, State, check

Nemesis = Callable[[], Awaitable[None]]


@dataclass
class WorkloadResult:
    ops: list[Op]
    initial: dict[str, State]
    final: dict[str, State]
    acked: dict[str, int] = field(default_factory=dict)      # acknowledged increments per key
    unknown: dict[str, int] = field(default_factory=dict)    # increments with no answer
    errors: int = 0

    def lost_increments(self) -> list[str]:
        """Keys whose final value is not explained by acknowledged (+ possibly applied) increments."""
        bad = []
        for key, (value, _) in self.final.items():
            start = self.initial[key][0]
            lo = start + self.acked.get(key, 0)
            hi = lo + self.unknown.get(key, 0)
            if not lo <= value <= hi:
                bad.append(f"{key}: final {value}, expected {lo}..{hi}")
        return bad

    def check(self) -> CheckResult:
        return check(self.ops, self.initial)


class _Client:
    def __init__(self, cid: int, addrs: list[str], session: aiohttp.ClientSession, consistent: bool,
                 timeout: float) -> None:
        self.cid = cid
        self.addrs = addrs
        self.pos = cid % len(addrs)
        self.http = session
        self.consistent = consistent
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def base(self) -> str:
        return "http://" + self.addrs[self.pos]

    def rotate(self) -> None:
        self.pos = (self.pos + 1) % len(self.addrs)

    async def read(self, key: str) -> tuple[int, int] | None:
        """(value, index) or None when the read got no good answer (dropped from the history)."""
        url = f"{self.base}/v1/kv/{key}" + ("?consistent" if self.consistent else "")
        async with self.http.get(url, timeout=self.timeout) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            entry = (await resp.json())[0]
        return int(base64.b64decode(entry["Value"] or b"")), entry["ModifyIndex"]

    async def cas(self, key: str, expected: int, value: int) -> tuple[str, int | None]:
        body = [{"KV": {"Verb": "cas", "Key": key, "Index": expected,
                        "Value": base64.b64encode(str(value).encode()).decode()}}]
        async with self.http.put(f"{self.base}/v1/txn", data=json.dumps(body), timeout=self.timeout) as resp:
            if resp.status == 200:
                result = await resp.json()
                return "ok", result["Results"][0]["KV"]["ModifyIndex"]
            if resp.status == 409:
                return "fail", None
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)


async def run_workload(addrs: list[str], seconds: float, clients: int = 8, keys: int = 3,
                       prefix: str = "lin/", nemesis: Nemesis | None = None, nemesis_interval: float = 5.0,
                       consistent: bool = True, timeout: float = 5.0, seed: int | None = None) -> WorkloadResult:
    rng = random.Random(seed)
    names = [f"{prefix}k{i}" for i in range(keys)]
    clock = time.monotonic
    ops: list[Op] = []
    acked = {k: 0 for k in names}
    unknown = {k: 0 for k in names}
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        setup = _Client(0, addrs, http, consistent, timeout)
        initial: dict[str, State] = {}
        for key in names:
            async with http.put(f"{setup.base}/v1/kv/{key}", data=b"0", timeout=setup.timeout) as resp:
                assert resp.status == 200, await resp.text()
            got = await setup.read(key)
            assert got is not None
            initial[key] = got
        deadline = clock() + seconds

        async def client_loop(cid: int) -> None:
            nonlocal errors
            c = _Client(cid, addrs, http, consistent, timeout)
            crng = random.Random(rng.random())
            while clock() < deadline:
                key = crng.choice(names)
                call = clock()
                try:
                    got = await c.read(key)
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    errors += 1
                    c.rotate()
                    continue
                ops.append(Op(cid, "read", key, None, got, call, clock()))
                if got is None or crng.random() < 0.3:
                    continue
                value, index = got
                op = Op(cid, "cas", key, (index, value + 1), None, clock())
                try:
                    op.output = await c.cas(key, index, value + 1)
                    op.ret = clock()
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    errors += 1
                    op.output, op.ret = None, math.inf
                    unknown[key] += 1
                    c.rotate()
                ops.append(op)
                if op.output is not None and op.output[0] == "ok":
                    acked[key] += 1

        async def nemesis_loop() -> None:
            assert nemesis is not None
            while clock() + nemesis_interval < deadline:
                await asyncio.sleep(nemesis_interval)
                await asyncio.wait_for(nemesis(), timeout=max(1.0, nemesis_interval))

        tasks = [asyncio.create_task(client_loop(i)) for i in range(clients)]
        if nemesis is not None:
            tasks.append(asyncio.create_task(nemesis_loop()))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + timeout * 4 + 30)
        final: dict[str, State] = {}
        for key in names:
            for attempt in range(len(addrs) * 5):
                try:
                    got = await setup.read(key)
                    assert got is not None
                    final[key] = got
                    break
                except (TimeoutError, aiohttp.ClientError):
                    setup.rotate()
                    await asyncio.sleep(0.2 * (attempt + 1))
    return WorkloadResult(ops, initial, final, acked, unknown, errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", action="append", required=True, help="agent HTTP address (repeatable)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--keys", type=int, default=3)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    res = asyncio.run(run_workload(args.addr, args.seconds, args.clients, args.keys))
    t1 = time.monotonic()
    verdict = res.check()
    t2 = time.monotonic()
    n_cas = sum(1 for o in res.ops if o.kind == "cas")
    print(f"ops={len(res.ops)} cas={n_cas} acked={sum(res.acked.values())} unknown={sum(res.unknown.values())} "
          f"errors={res.errors} run={t1 - t0:.1f}s check={t2 - t1:.1f}s steps={verdict.steps}")
    lost = res.lost_increments()
    print("linearizable" if verdict.ok else f"NOT linearizable: {verdict.detail}")
    print("no acknowledged increment lost" if not lost else "LOST: " + "; ".join(lost))
    return 0 if verdict.ok and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
