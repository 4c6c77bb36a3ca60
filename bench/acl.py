"""What ACL resolution costs on a KV GET with a cached token (issue 14's target: under 10%).

    python3 bench/acl.py [--seconds 5] [--rounds 3] [--connections 50]

Two real single-server agents, pinned to the same core: the anchor without ACLs, and one with
``acl.enabled`` and ``default_policy = "deny"`` read with a token whose policy is
``key_prefix "bench/" { policy = "read" }`` (every request resolves the token from the cache and
checks ``key:read``). ``wrk -t1`` on the load core alternates between them each round; every round,
the medians and the overhead are printed. Everything started is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import beacon_agent, cpu_seconds, loadavg, pinned, require  # noqa: E402

MGMT = "b3c1a2d4-0000-4000-8000-000000000001"
PATH = "/v1/kv/bench/key"


def wrk(url: str, seconds: int, connections: int, core: int, pid: int, token: str = "") -> tuple[float, float]:
    """Requests/s, and the agent's CPU microseconds per request (steadier than req/s on shared cores)."""
    cpu0 = cpu_seconds(pid)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *(["-H", f"X-Consul-Token: {token}"] if token else []),
            url]
    out = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m or not n or "Non-2xx" in out:
        raise RuntimeError("wrk failed or saw non-2xx answers:\n" + out)
    return float(m.group(1)), (cpu_seconds(pid) - cpu0) / max(1, int(n.group(1))) * 1e6


def call(port: int, method: str, path: str, body: object = None, token: str = "") -> bytes:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def wait_written(port: int, token: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            call(port, "PUT", PATH, b"value", token)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def acl_pair(core: int, path: str) -> Iterator[tuple[subprocess.Popen, int, subprocess.Popen, int, str]]:
    """Two agents of the same build on `core`: one without ACLs, one with default deny and a token that
    may read `bench/`; both hold `path` (written by wait_written). Yields (plain process, plain port,
    ACL process, ACL port, token)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"acl": {"enabled": True, "default_policy": "deny", "tokens": {"initial_management": MGMT}}}, f)
    try:
        with beacon_agent(core=core, dev=False) as (plain_proc, plain, _d), \
                beacon_agent("-config-file", f.name, core=core, dev=False) as (acl_proc, acl, _d2):
            wait_written(plain, "")
            wait_written(acl, MGMT)
            pol = json.loads(call(acl, "PUT", "/v1/acl/policy",
                                  {"Name": "bench", "Rules": 'key_prefix "bench/" { policy = "read" }'}, MGMT))
            token = json.loads(call(acl, "PUT", "/v1/acl/token", {"Policies": [{"ID": pol["ID"]}]}, MGMT))["SecretID"]
            assert call(acl, "GET", path + "?raw", token=token) == b"value"
            yield plain_proc, plain, acl_proc, acl, token
    finally:
        os.unlink(f.name)


def in_process_cost(n: int = 100_000) -> float:
    """Microseconds per request of what the middleware adds for a cached token: resolve, route
    lookup, key:read. A number the shared cores' noise cannot swamp, to read next to wrk's."""
    import asyncio
    import time

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    from beacon.acl.resolver import ACLConfig, Resolver
    from beacon.agent.http.acl_enforce import rule_for
    from beacon.server import sessions
    from beacon.server.fsm import MessageType, StateStore

    store = StateStore()
    sessions.install(store)
    store.apply((MessageType.ACL, {"op": "policy_set", "policy": {
        "ID": "p", "Name": "bench", "Rules": 'key_prefix "bench/" { policy = "read" }'}}))
    store.apply((MessageType.ACL, {"op": "token_set", "token": {"AccessorID": "a", "SecretID": "s",
                                                                "Policies": [{"ID": "p", "Name": "bench"}]}}))
    resolver = Resolver(ACLConfig(enabled=True, default_policy="deny"), "bench", store=store)

    async def run() -> float:
        await resolver.resolve("s")
        start = time.perf_counter()
        for _ in range(n):
            ident = await resolver.resolve("s")
            rule_for("GET", PATH)
            ident.authz.key_read("bench/key")
        return (time.perf_counter() - start) / n * 1e6
    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    args = ap.parse_args()
    require("wrk")
    with acl_pair(args.server_core, PATH) as (plain_proc, plain, acl_proc, acl, token):
        anchors, acls, cpu_a, cpu_b = [], [], [], []
        for r in range(args.rounds):
            a, ca = wrk(f"http://127.0.0.1:{plain}{PATH}", args.seconds, args.connections, args.load_core,
                        plain_proc.pid)
            b, cb = wrk(f"http://127.0.0.1:{acl}{PATH}", args.seconds, args.connections, args.load_core,
                        acl_proc.pid, token)
            anchors.append(a)
            acls.append(b)
            cpu_a.append(ca)
            cpu_b.append(cb)
            print(f"round {r + 1}: no ACLs {a:8.0f} req/s {ca:6.1f} us CPU/req   ACLs + cached token "
                  f"{b:8.0f} req/s {cb:6.1f} us CPU/req   ratio {b / a:.3f}", flush=True)
    ma, mb = statistics.median(anchors), statistics.median(acls)
    mca, mcb = statistics.median(cpu_a), statistics.median(cpu_b)
    print(f"\nmedian: no ACLs {ma:.0f} req/s ({mca:.1f} us CPU/req), ACLs {mb:.0f} req/s ({mcb:.1f} us CPU/req); "
          f"ACL cost {100 * (mcb / mca - 1):.1f}% CPU per request, {100 * (1 - mb / ma):.1f}% throughput "
          f"(target < 10%)")
    ratios = sorted(b / a for a, b in zip(anchors, acls, strict=True))
    cpu_ratios = sorted(b / a for a, b in zip(cpu_a, cpu_b, strict=True))
    print(f"median of per-round ratios (each pair ran back to back): throughput {statistics.median(ratios):.3f}, "
          f"CPU per request {statistics.median(cpu_ratios):.3f}")
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds; load average: {loadavg()}")
    cost = in_process_cost()
    print(f"in process: {cost:.1f} us per request for resolve + route lookup + key:read "
          f"({100 * cost * ma / 1e6:.1f}% of the anchor's {1e6 / ma:.0f} us per request)")


if __name__ == "__main__":
    main()
