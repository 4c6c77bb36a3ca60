"""HTTP API read throughput through a real ``beacon agent``, against a bare aiohttp handler that returns
the same bytes.

    python3 bench/http_api.py [--seconds 5] [--rounds 3] [--connections 100] [--modes dev,server,acl]
                              [--cases kv,health,services]

Cases (issue 16's targets, each >= 0.8x its anchor):

* ``kv``: ``GET /v1/kv/bench/key``
* ``health``: ``GET /v1/health/service/web?passing`` with 10 instances, each with a passing check
* ``services``: ``GET /v1/catalog/services`` with 10,000 services on 100 nodes

Modes: ``dev`` (``beacon agent -dev``: pretty-printed JSON, in memory) and ``server`` (a single
bootstrapped server with a data directory: compact JSON, durable log), one agent at a time.

Mode ``acl`` (issue 14's target: ACL resolution costs < 10% on a KV GET with a cached token): two
single servers of the same build, pinned to the same core, one without ACLs and one with
``acl.enabled``, ``default_policy = "deny"``, read with a token whose only policy is
``key_prefix "bench/" { policy = "read" }`` (resolved once, then from the cache). ``wrk`` alternates
between them on ``GET /v1/kv/bench/key``; the figure is the difference in agent CPU per request.

For each mode the agent (pinned to the server core) is filled through its own API, then each case's
body is fetched from it; an anchor process (aiohttp on uvloop, pinned to the same core) serves those
exact bytes with a bare handler. ``wrk -t1`` pinned to the load core then alternates between the two
for every case and round. Every round and the medians are printed, with the machine's load average
(the cores are shared). Everything started is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

# Named http_api.py, not http.py: a bench/http.py would shadow the stdlib's `http` for every script in
# this folder (aiohttp imports it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import beacon_agent, cpu_seconds, env, loadavg, pinned, require  # noqa: E402

CASES = {
    "kv": "/v1/kv/bench/key",
    "health": "/v1/health/service/web?passing",
    "services": "/v1/catalog/services",
}

# The anchor: a bare aiohttp handler per path returning the bytes captured from the agent.
ANCHOR = textwrap.dedent("""
    import json, socket, sys
    from aiohttp import web
    import uvloop
    bodies = json.load(open(sys.argv[1]))
    app = web.Application()
    def handler(body):
        async def h(request):
            return web.Response(body=body, content_type="application/json")
        return h
    for path, text in bodies.items():
        app.router.add_get(path.split("?")[0], handler(text.encode()))
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    uvloop.install()
    web.run_app(app, sock=sock, access_log=None, print=None)
""")


# ---------------------------------------------------------------------------- filling the agent
async def _txn(session: aiohttp.ClientSession, base: str, ops: list[dict[str, object]]) -> None:
    async with session.put(base + "/v1/txn", json=ops) as resp:
        if resp.status != 200:
            raise RuntimeError(f"txn failed: {resp.status} {await resp.text()}")


async def fill(base: str, services: int) -> None:
    """KV key, 10 healthy ``web`` instances, and ``services`` services on 100 nodes (64 ops per txn)."""
    async with aiohttp.ClientSession() as s:
        async with s.put(base + "/v1/kv/bench/key", data=b"value") as resp:
            assert resp.status == 200
        for i in range(10):
            body = {"Node": f"web-{i}", "Address": f"10.0.1.{i + 1}",
                    "Service": {"ID": "web", "Service": "web", "Port": 8080, "Tags": ["v1"]},
                    "Check": {"CheckID": "web-alive", "Name": "web alive", "Status": "passing",
                              "ServiceID": "web"}}
            async with s.put(base + "/v1/catalog/register", json=body) as resp:
                assert resp.status == 200, await resp.text()
        nodes = [{"Node": {"Verb": "set", "Node": {"Node": f"n-{i:03d}", "Address": f"10.1.0.{i}"}}}
                 for i in range(100)]
        await asyncio.gather(*(_txn(s, base, nodes[i:i + 64]) for i in range(0, len(nodes), 64)))
        ops = [{"Service": {"Verb": "set", "Node": f"n-{i % 100:03d}",
                            "Service": {"ID": f"svc-{i:05d}", "Service": f"svc-{i:05d}", "Port": 80,
                                        "Tags": ["a", f"t{i % 7}"]}}} for i in range(services)]
        sem = asyncio.Semaphore(16)

        async def one(chunk: list[dict[str, object]]) -> None:
            async with sem:
                await _txn(s, base, chunk)

        await asyncio.gather(*(one(ops[i:i + 64]) for i in range(0, len(ops), 64)))


def capture(base: str, paths: list[str]) -> dict[str, str]:
    async def get() -> dict[str, str]:
        out = {}
        async with aiohttp.ClientSession() as s:
            for path in paths:
                async with s.get(base + path) as resp:
                    assert resp.status == 200, (path, resp.status)
                    out[path] = await resp.text()
        return out
    return asyncio.run(get())


# ---------------------------------------------------------------------------- load
def wrk(url: str, seconds: int, connections: int, core: int, pid: int) -> tuple[float, float]:
    """Requests/s, and the server's CPU microseconds per request."""
    cpu0 = cpu_seconds(pid)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    out = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(out)
    if "Non-2xx" in out:
        raise RuntimeError("wrk saw non-2xx answers:\n" + out)
    n = re.search(r"(\d+) requests in", out)
    return float(m.group(1)), (cpu_seconds(pid) - cpu0) / max(1, int(n.group(1)) if n else 1) * 1e6


@contextmanager
def anchor(bodies: dict[str, str], core: int) -> Iterator[tuple[int, int]]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bodies, f)
    proc = subprocess.Popen(pinned(core, [sys.executable, "-c", ANCHOR, f.name]), stdout=subprocess.PIPE,
                            text=True, env=env())
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid  # taskset execs python: the same pid
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(f.name)


def run_mode(mode: str, args: argparse.Namespace, cases: list[str]) -> dict[str, tuple[list[float], ...]]:
    results: dict[str, tuple[list[float], ...]] = {c: ([], [], []) for c in cases}
    with beacon_agent(core=args.server_core, dev=(mode == "dev")) as (agent, http, _dns):
        base = f"http://127.0.0.1:{http}"
        t0 = time.monotonic()
        asyncio.run(fill(base, args.services))
        print(f"[{mode}] filled in {time.monotonic() - t0:.1f}s", flush=True)
        bodies = capture(base, [CASES[c] for c in cases])
        for c in cases:
            print(f"[{mode}] {c}: {len(bodies[CASES[c]].encode()):,} bytes per answer", flush=True)
        with anchor(bodies, args.server_core) as (aport, apid):
            time.sleep(0.3)
            for rnd in range(1, args.rounds + 1):
                for c in cases:
                    a, a_cpu = wrk(f"http://127.0.0.1:{aport}{CASES[c]}", args.seconds, args.connections,
                                   args.load_core, apid)
                    b, b_cpu = wrk(base + CASES[c], args.seconds, args.connections, args.load_core, agent.pid)
                    results[c][0].append(a)
                    results[c][1].append(b)
                    results[c][2].append(a_cpu / b_cpu)
                    print(f"[{mode}] round {rnd} {c:<9} anchor {a:9,.0f} req/s ({a_cpu:5.1f} us CPU/req)  "
                          f"beacon {b:9,.0f} req/s ({b_cpu:5.1f} us CPU/req)  {b / a:5.2f}x, per CPU "
                          f"{a_cpu / b_cpu:4.2f}x  (load {loadavg()})", flush=True)
    return results


MGMT = "b3c1a2d4-0000-4000-8000-000000000001"


def acl_share(pid: int, url: str, token: str, args: argparse.Namespace) -> float:
    """The share of the agent's samples (py-spy) inside the ACL layer but not in the handler it
    calls: what ACL enforcement itself costs per request, as a fraction of the whole request."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "acl.raw")
        load = subprocess.Popen(pinned(args.load_core, ["wrk", "-t1", f"-c{args.connections}", "-d8s", "-H",
                                                        f"X-Consul-Token: {token}", url]), stdout=subprocess.DEVNULL)
        try:
            time.sleep(1)
            subprocess.run(["py-spy", "record", "-p", str(pid), "-d", "5", "-r", "500", "-f", "raw", "-o", out,
                            "--nonblocking"], capture_output=True, timeout=60, check=True)
        finally:
            load.wait(30)
        total = inside = handler = 0
        with open(out, encoding="utf-8") as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                frames = stack.split(";")
                total += int(n)
                if any(fr.startswith("FastPath.allowed ") for fr in frames):
                    inside += int(n)  # the fast read path's ACL decision (FastPath.allowed)
                    continue
                at = next((i for i, fr in enumerate(frames) if fr.startswith("enforcer.<locals>.enforce ")), None)
                if at is None:
                    continue
                inside += int(n)
                if any(fr.startswith("_dispatcher.<locals>.dispatch ") for fr in frames[at:]):
                    handler += int(n)
    return (inside - handler) / max(1, total)


def run_acl(args: argparse.Namespace) -> tuple[tuple[list[float], ...], float | None]:
    """(req/s without ACLs, with ACLs, CPU us/request without, with; one entry per round), and the
    ACL layer's share of the ACL agent's time (None without py-spy)."""
    from acl import acl_pair, call
    from acl import wrk as wrk_token

    path = CASES["kv"]
    rounds: tuple[list[float], ...] = ([], [], [], [])
    share = None
    with acl_pair(args.server_core, path) as (plain_proc, plain, acl_proc, acl, token):
        # The same answer but for its indexes (the ACL agent wrote its policy and token first).
        same = [{k: v for k, v in json.loads(body)[0].items() if not k.endswith("Index")}
                for body in (call(plain, "GET", path), call(acl, "GET", path, token=token))]
        assert same[0] == same[1], same
        if shutil.which("py-spy"):
            share = acl_share(acl_proc.pid, f"http://127.0.0.1:{acl}{path}", token, args)
            print(f"[acl] py-spy: {100 * share:.1f}% of the ACL agent's sampled time is ACL work (resolve, "
                  f"rule, check), i.e. {100 * share / (1 - share):+.1f}% per request over the same agent "
                  f"without it (a ratio inside one process: the shared cores' noise does not move it)",
                  flush=True)
        for rnd in range(1, args.rounds + 1):
            a, ca = wrk_token(f"http://127.0.0.1:{plain}{path}", args.seconds, args.connections,
                              args.load_core, plain_proc.pid)
            b, cb = wrk_token(f"http://127.0.0.1:{acl}{path}", args.seconds, args.connections,
                              args.load_core, acl_proc.pid, token)
            for lst, v in zip(rounds, (a, b, ca, cb), strict=True):
                lst.append(v)
            print(f"[acl] round {rnd} kv  no ACLs {a:9,.0f} req/s ({ca:5.1f} us CPU/req)  ACLs + cached token "
                  f"{b:9,.0f} req/s ({cb:5.1f} us CPU/req)  CPU cost {100 * (cb / ca - 1):+5.1f}%  "
                  f"(load {loadavg()})", flush=True)
    return rounds, share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--modes", default="dev,server,acl")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    args = ap.parse_args()
    require("wrk")
    cases = args.cases.split(",")
    table = []
    acl_rounds = None
    for mode in args.modes.split(","):
        if mode == "acl":
            acl_rounds = run_acl(args)
            continue
        for c, (a, b, cpu) in run_mode(mode, args, cases).items():
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            table.append((mode, c, statistics.median(a), statistics.median(b), statistics.median(ratios),
                          statistics.median(cpu)))
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds; load average at the end: "
          f"{loadavg()}")
    print("| agent | case | anchor req/s | Beacon req/s | Beacon / anchor req/s | per CPU-second |")
    print("|---|---|---:|---:|---:|---:|")
    for mode, c, a, b, r, cpu in table:
        print(f"| {mode} | {c} `{CASES[c]}` | {a:,.0f} | {b:,.0f} | **{r:.2f}x** | {cpu:.2f}x |")
    if acl_rounds is not None:
        (a, b, ca, cb), share = acl_rounds
        costs = [100 * (y / x - 1) for x, y in zip(ca, cb, strict=True)]
        print(f"\nACL on KV GET (cached token) vs no ACLs, same build: {statistics.median(a):,.0f} vs "
              f"{statistics.median(b):,.0f} req/s; CPU per request {statistics.median(ca):.1f} vs "
              f"{statistics.median(cb):.1f} us; cost per round {', '.join(f'{c:+.1f}%' for c in costs)}; "
              f"median **{statistics.median(costs):+.1f}%** (target < 10%)")
        if share is not None:
            print(f"ACL work's share of the ACL agent's time (py-spy): {100 * share:.1f}%, i.e. "
                  f"**{100 * share / (1 - share):+.1f}%** per request")


if __name__ == "__main__":
    main()
