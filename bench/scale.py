"""Consul's scale on one machine: a 3-server cluster (real ``beacon agent -server`` processes, each
supervising its etcd member) and client agents, loaded through the catalog API.

    python3 bench/scale.py [--nodes 10000] [--instances 172000] [--clients 2] [--watchers 1000]
                           [--churn-seconds 20] [--load-timeout 420] [--quick] [--burst]

``--quick``: 500 nodes, 8,600 instances, 200 watchers, 10 s of churn (about a minute in all).

Phases, each printed as it finishes (issue 16's aims in brackets):

1. **Load**: ``--nodes`` nodes with ``--instances`` service instances between them, one
   ``PUT /v1/catalog/register`` per instance (node, service and a passing service check), 96
   concurrent clients spread over the three servers on kept-alive connections. Registration rate.
   The phase stops at ``--load-timeout`` and the figures say how far it got.
2. **Memory**: each server's RSS (the agent, and its etcd member separately) [< 2 GiB per server].
3. **Lookups under churn**: every second 1% of the instances change health (their check flips
   between passing and critical; ``PUT /v1/txn`` with ``Check`` ``set`` operations, 64 a request, as
   a batch of agents' anti-entropy syncs would, the requests spread evenly over the second;
   ``--burst`` sends each second's at once), while a separate probe process asks a server for one
   service (``svc-0.service.consul A`` over UDP DNS and ``GET /v1/health/service/svc-0?passing``)
   back to back. p50/p99 of each [p99 < 10 ms].
4. **Fan-out**: ``--watchers`` blocking queries on ``/v1/health/service/svc-1`` spread over the client
   agents; one health change of an svc-1 instance; time until every watcher has its answer
   [< 1 s].
5. **Snapshot** (last, since a failed restore can leave the cluster busy): ``GET /v1/snapshot``
   (size, time) from the leader, the same archive decoded and applied to an empty store in a fresh
   process (each server's share of a restore), and ``PUT /v1/snapshot`` of it back to the cluster
   (time until the restore is acknowledged) [restore < 10 s].

Every process listens on its own 127.x.y.z address (loopback only); all of them are stopped at
the end. Service ``svc-K`` gets instances ``K, K + S, K + 2S...`` with ``S = instances / 17``
service names, about 17 instances per service as in Consul's published test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cpu_seconds, env, loadavg  # noqa: E402

BLOCK = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
PER_SERVICE = 17


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[str]
    addr: str
    http: int = 0
    dns: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.addr}:{self.http}"


def start(name: str, addr: str, tmp: str, server: bool, config: str, timeout: float = 60) -> Proc:
    argv = [sys.executable, "-m", "beacon", "agent", "-node", name, "-bind", addr, "-client", addr,
            "-data-dir", os.path.join(tmp, name), "-http-port", "0", "-dns-port", "0", "-log-level", "warn",
            "-config-file", config, "-retry-interval", "1s"]
    if server:
        argv += ["-server", "-bootstrap-expect", "3"]
    for j in (1, 2, 3):
        argv += ["-retry-join", f"{BLOCK}.1{j}"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                         start_new_session=True)
    proc = Proc(name, p, addr)
    ready = threading.Event()

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            proc.lines.append(line.rstrip())
            del proc.lines[:-50]
            m = re.search(r"==> Ready: http_port=(\d+) dns_port=(\S+)", line)
            if m:
                proc.http = int(m.group(1))
                proc.dns = int(m.group(2)) if m.group(2).isdigit() else 0
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout) or not proc.http:
        stop([proc])
        raise RuntimeError(f"{name} did not start:\n" + "\n".join(proc.lines))
    return proc


def stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.proc.poll() is None:
            try:
                os.killpg(p.proc.pid, signal.SIGTERM)  # the agent and the etcd member it supervises
            except OSError:
                pass
    for p in procs:
        try:
            p.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait(5)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def etcd_pid(pid: int) -> int | None:
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"etcd" in f.read().split(b"\0")[0]:
                    return child
        except OSError:
            continue
    return None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def wait_for(what: str, fn, timeout: float) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = await fn()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            got = None
        if got:
            return got
        await asyncio.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


def service_of(i: int, services: int) -> str:
    return f"svc-{i % services}"


def cpu_shares(servers: list[Proc], clients: list[Proc]) -> dict[str, float]:
    """CPU seconds so far of each agent, each server's etcd member and this generator."""
    out = {"generator": time.process_time()}
    for p in servers + clients:
        out[f"{p.name} agent"] = cpu_seconds(p.proc.pid)
        e = etcd_pid(p.proc.pid) if p in servers else None
        if e:
            out[f"{p.name} etcd"] = cpu_seconds(e)
    return out


def etcd_client_url(server: Proc) -> str:
    """The client URL of a server's etcd member (loopback, from its command line)."""
    pid = etcd_pid(server.proc.pid)
    if pid is None:
        raise RuntimeError(f"{server.name} has no etcd member")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    return argv[argv.index("--listen-client-urls") + 1]


def node_of(i: int, nodes: int) -> str:
    return f"node-{i % nodes}"


def node_addr(n: int) -> str:
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"  # data only: nothing is sent there


def register_body(i: int, nodes: int, services: int) -> bytes:
    n = i % nodes
    return json.dumps({
        "Node": f"node-{n}", "Address": node_addr(n), "SkipNodeUpdate": i >= nodes,
        "Service": {"ID": f"i-{i}", "Service": service_of(i, services), "Port": 1024 + i % 50000,
                    "Tags": ["v1"]},
        "Check": {"CheckID": f"c-{i}", "Name": "probe", "ServiceID": f"i-{i}", "Status": "passing"},
    }).encode()


async def load(s: aiohttp.ClientSession, servers: list[Proc], nodes: int, instances: int, services: int,
               timeout: float, concurrency: int = 96) -> tuple[int, float, int]:
    """Register every instance (nodes first: instance i < nodes creates node i). Returns (done, seconds,
    errors)."""
    order = iter(range(instances))
    done = errors = 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = [t0]

    async def worker(w: int) -> None:
        nonlocal done, errors
        base = servers[w % len(servers)].base
        for i in order:
            if time.monotonic() > deadline:
                return
            try:
                async with s.put(f"{base}/v1/catalog/register", data=register_body(i, nodes, services)) as r:
                    body = await r.read()
                    ok = r.status == 200
                    why = f"HTTP {r.status}: {body[:200]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, why = False, repr(exc)
            done += ok
            errors += not ok
            if not ok and errors <= 3:
                print(f"  load: instance {i} failed: {why}", flush=True)
            now = time.monotonic()
            if now - last[0] > 15:
                last[0] = now
                print(f"  load: {done:,} registered ({done / (now - t0):,.0f}/s, {errors} errors)", flush=True)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done, time.monotonic() - t0, errors


async def leader_of(s: aiohttp.ClientSession, servers: list[Proc]) -> Proc:
    async def find() -> Proc | None:
        for p in servers:
            async with s.get(f"{p.base}/v1/status/leader") as r:
                addr = (await r.json()).rsplit(":", 1)[0]
            for q in servers:
                if q.addr == addr:
                    return q
        return None
    return await wait_for("a leader", find, 60)  # type: ignore[return-value]


async def snapshot(s: aiohttp.ClientSession, leader: Proc) -> dict[str, float]:
    t0 = time.perf_counter()
    # ?stale: the leader's own state, without first confirming its leadership (a server busy applying
    # the churn's backlog may not confirm it in time; the archive's size and cost are the same).
    async with s.get(f"{leader.base}/v1/snapshot?stale", timeout=aiohttp.ClientTimeout(total=600)) as r:
        archive = await r.read()
        assert r.status == 200, (r.status, archive[:200])
    save = time.perf_counter() - t0
    t0 = time.perf_counter()
    async with s.put(f"{leader.base}/v1/snapshot", data=archive, timeout=aiohttp.ClientTimeout(total=600)) as r:
        body = await r.read()
        status = r.status
    restore = time.perf_counter() - t0
    if status != 200:
        print(f"  restore failed: HTTP {status} {body[:300]!r}", flush=True)
    return {"size_mib": len(archive) / 2**20, "save_s": save, "restore_s": restore, "restore_ok": status == 200,
            "local_s": local_restore(archive)}


def local_restore(archive: bytes) -> float:
    """The state machine's share of a restore, in a fresh process: decode the archive and apply
    it to an empty store, as each server does when the restore command comes up in the log."""
    code = ("import sys, time; from beacon.server.archive import read_archive; "
            "from beacon.server.fsm import MessageType, StateStore; from beacon.server import sessions; "
            "data = sys.stdin.buffer.read(); t0 = time.perf_counter(); _, snap = read_archive(data); "
            "store = StateStore(); sessions.install(store); "
            "r = store.apply((MessageType.SNAPSHOT_RESTORE, {'snapshot': snap, 'now': time.time()})); "
            "assert r.error is None, r.error; print(time.perf_counter() - t0, len(store.services))")
    out = subprocess.run([sys.executable, "-c", code], input=archive, capture_output=True, env=env(), timeout=600)
    if out.returncode != 0:
        print(f"  local restore failed: {out.stderr.decode()[-500:]}", flush=True)
        return float("nan")
    secs, n = out.stdout.split()
    print(f"  local restore: {int(n):,} instances applied to an empty store in {float(secs):.2f} s", flush=True)
    return float(secs)


async def loop_lag(s: aiohttp.ClientSession, p: Proc) -> dict[str, float]:
    """The server's event-loop lag histogram (cumulative counts by upper bound) and collector gauges,
    from its own metrics (``beacon.server.looplag``)."""
    async with s.get(f"{p.base}/v1/agent/metrics?format=prometheus") as r:
        text = (await r.read()).decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'^beacon_event_loop_lag(_cpu)?_seconds_bucket\{le="([^"]+)"\} (\S+)', text, re.M):
        out[("cpu " if m.group(1) else "") + m.group(2)] = float(m.group(3))
    for name in ("beacon_gc_full_collections", "beacon_gc_full_collection_max_seconds",
                 "beacon_event_loop_lag_max_seconds"):
        m = re.search(rf"^{name} (\S+)", text, re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


def lag_line(name: str, before: dict[str, float], after: dict[str, float]) -> str:
    """Wake-ups of the 20 ms probe during a phase, how many ran late by more than 10/50/100 ms."""
    if "+Inf" not in after:
        return f"{name}: no loop-lag metrics"
    total = after["+Inf"] - before.get("+Inf", 0)
    late = {le: total - (after[le] - before.get(le, 0)) for le in ("0.01", "0.05", "0.1")}
    cpu = {le: total - (after.get("cpu " + le, 0) - before.get("cpu " + le, 0)) for le in ("0.01", "0.05", "0.1")}
    worst = next((le for le in sorted((k for k in after if k[0].isdigit()), key=float)
                  if after[le] - before.get(le, 0) >= total), "+Inf")
    return (f"{name}: {total:,.0f} probes, late > 10 ms {late['0.01']:,.0f}, > 50 ms {late['0.05']:,.0f}, "
            f"> 100 ms {late['0.1']:,.0f}, worst <= {worst} s (of which the loop's own CPU time > 10/50/100 ms: "
            f"{cpu['0.01']:,.0f}/{cpu['0.05']:,.0f}/{cpu['0.1']:,.0f}); full collections "
            f"{after['beacon_gc_full_collections'] - before.get('beacon_gc_full_collections', 0):,.0f} "
            f"(longest since start {after['beacon_gc_full_collection_max_seconds'] * 1e3:.0f} ms of CPU)")


def dns_query(name: str, ident: int) -> bytes:
    q = ident.to_bytes(2, "big") + bytes.fromhex("01000001000000000000")
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


async def probe_lookups(dns_target: tuple[str, int], http_base: str, seconds: float,
                        etcd_url: str = "") -> dict[str, list[float]]:
    """Back-to-back lookups, timed by a process that does nothing else (see ``--probe``). With
    ``etcd_url`` (the HTTP server's own etcd member), also etcd's linearizable range of one key, the
    step a default-consistency read adds to a stale one, as etcd itself answers it under this load."""
    stop_at = time.monotonic() + seconds

    async def dns_loop() -> list[float]:
        loop = asyncio.get_running_loop()
        out: list[float] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(dns_target)  # connected: uvloop has no sock_sendto
        ident = 0
        try:
            while time.monotonic() < stop_at:
                ident = (ident + 1) & 0xFFFF
                t0 = time.perf_counter()
                try:  # a query unanswered for 2 s (or refused) counts as 2 s
                    await loop.sock_sendall(sock, dns_query("svc-0.service.consul", ident))
                    async with asyncio.timeout(2):
                        while (await loop.sock_recv(sock, 4096))[:2] != ident.to_bytes(2, "big"):
                            pass
                except (TimeoutError, OSError):
                    out.append(2.0)
                    await asyncio.sleep(0.002)
                    continue
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.002)
        finally:
            sock.close()
        return out

    async def request_loop(base: str, method: str, path: str, body: bytes = b"") -> list[float]:
        """One kept-alive connection, requests written and answers read by hand: aiohttp's client
        cost the probe process a quarter of a core, on the cores the servers need."""
        host, port = base.split("://", 1)[1].rsplit(":", 1)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: application/json\r\n\r\n").encode() + body
        out: list[float] = []
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            ok = False
            try:  # a lookup that fails or takes over 5 s counts as 5 s
                async with asyncio.timeout(5):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, int(port))
                    assert reader is not None
                    writer.write(head)
                    got = await reader.readuntil(b"\r\n\r\n")
                    ok = got.split(b" ", 2)[1] == b"200"
                    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", got)
                    if m:
                        await reader.readexactly(int(m.group(1)))
                    else:  # chunked
                        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                            await reader.readexactly(size + 2)
                        await reader.readuntil(b"\r\n")
            except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError):
                ok = False
                if writer is not None:
                    writer.close()
                writer = None
            out.append(time.perf_counter() - t0 if ok else 5.0)
            await asyncio.sleep(0.002)
        if writer is not None:
            writer.close()
        return out

    # Default consistency (the server first confirms with etcd that it has applied the log's head,
    # so it waits for its apply backlog) and ?stale (local state, what DNS serves), side by side.
    path = "/v1/health/service/svc-0?passing"
    loops = [dns_loop(), request_loop(http_base, "GET", path), request_loop(http_base, "GET", path + "&stale")]
    if etcd_url:  # /beacon/dc1/log keys only, as the barrier reads it
        loops.append(request_loop(etcd_url, "POST", "/v3/kv/range", b'{"key": "L2JlYWNvbi9kYzEvbG9n", "keys_only": true}'))
    got = await asyncio.gather(*loops)
    return {"dns": got[0], "http": got[1], "stale": got[2], "etcd": got[3] if etcd_url else [],
            "cpu": [time.process_time()]}


async def lookups_under_churn(s: aiohttp.ClientSession, servers: list[Proc], instances: int, nodes: int,
                              seconds: float, burst: bool = False, etcd_probe: bool = False) -> dict[str, float]:
    """1% of the instances change health per second while a separate probe process times lookups.

    The probes run in their own process: timed from this one, a lookup answered while the churn
    encodes its next requests would be charged the generator's own work. The churn's ``PUT /v1/txn``
    requests (64 changes each) go out evenly over each second, as independent checks' changes
    arrive; ``burst`` sends each second's changes at once instead (the harsher load)."""
    stop_at = time.monotonic() + seconds
    flips = max(1, instances // 100)
    changed = 0
    state: dict[int, str] = {}
    # The probe hands its samples back in a file: read from its stdout pipe, hundreds of KiB of them
    # arrived cut at a multiple of 64 KiB now and then (the probe runs uvloop), with exit status 0.
    result = tempfile.NamedTemporaryFile(prefix="beacon-scale-probe-", suffix=".json", delete=False)
    result.close()
    probe = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--probe",
        json.dumps({"dns": [servers[0].addr, servers[0].dns], "http": servers[1].base, "seconds": seconds,
                    "etcd": etcd_client_url(servers[1]) if etcd_probe else "", "out": result.name}))

    async def send(batch: list[dict], base: str) -> int:
        try:
            async with s.put(f"{base}/v1/txn", json=batch, timeout=aiohttp.ClientTimeout(total=10)) as r:
                await r.read()
                return len(batch) if r.status == 200 else 0
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def churn() -> None:
        nonlocal changed
        rng = random.Random(7)
        tick = time.monotonic()
        k = 0
        sent: list[asyncio.Task[int]] = []
        while time.monotonic() < stop_at:
            picks = [rng.randrange(instances) for _ in range(flips)]
            ops = []
            for i in picks:
                state[i] = "critical" if state.get(i, "passing") == "passing" else "passing"
                ops.append({"Check": {"Verb": "set", "Check": {
                    "Node": node_of(i, nodes), "CheckID": f"c-{i}", "Name": "probe", "ServiceID": f"i-{i}",
                    "Status": state[i]}}})
            batches = [ops[j:j + 64] for j in range(0, len(ops), 64)]
            for n, batch in enumerate(batches):
                if not burst:  # the n-th request of this second at its share of the second
                    await asyncio.sleep(max(0.0, tick + n / len(batches) - time.monotonic()))
                sent.append(asyncio.create_task(send(batch, servers[(k + n) % 3].base)))
            k += 1
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        changed = sum(await asyncio.gather(*sent))

    async def finished() -> dict[str, list[float]]:
        try:
            if await probe.wait() != 0:
                raise RuntimeError(f"the lookup probe process failed ({probe.returncode})")
            with open(result.name) as f:
                return json.load(f)
        finally:
            os.unlink(result.name)

    _, got = await asyncio.gather(churn(), finished())
    dns, http, stale, etcd = got["dns"], got["http"], got["stale"], got["etcd"]
    return {"probe_cpu": got["cpu"][0], "etcd_n": len(etcd), "etcd_p50_ms": pct(etcd, 50) * 1e3 if etcd else 0.0,
            "etcd_p99_ms": pct(etcd, 99) * 1e3 if etcd else 0.0, "changes_per_s": changed / seconds,
            "dns_n": len(dns), "dns_p50_ms": pct(dns, 50) * 1e3, "dns_p99_ms": pct(dns, 99) * 1e3, "http_n": len(http), "http_p50_ms": pct(http, 50) * 1e3,
            "http_p99_ms": pct(http, 99) * 1e3, "stale_n": len(stale), "stale_p50_ms": pct(stale, 50) * 1e3,
            "stale_p99_ms": pct(stale, 99) * 1e3}


async def fanout(s: aiohttp.ClientSession, clients: list[Proc], servers: list[Proc], leader: Proc, watchers: int,
                 nodes: int, services: int) -> dict[str, float]:
    path = "/v1/health/service/svc-1"
    async with s.get(f"{clients[0].base}{path}") as r:
        await r.read()
        index = int(r.headers["X-Consul-Index"])
    done: list[float] = []
    t_write = [0.0]
    parked = [0]

    async def watch(w: int) -> None:
        base = clients[w % len(clients)].base
        seen = index
        while True:
            async with s.get(f"{base}{path}?index={seen}&wait=60s",
                             timeout=aiohttp.ClientTimeout(total=120)) as r:
                await r.read()
                got = int(r.headers.get("X-Consul-Index", "0"))
            if not t_write[0]:
                seen = max(seen, got)  # an earlier change (the churn's apply backlog): park again
                continue
            if r.status == 200 and got > index:
                done.append(time.perf_counter() - t_write[0])
            return

    tasks = [asyncio.create_task(watch(w)) for w in range(watchers)]

    async def parked_at_agents() -> bool:
        total = 0
        for c in clients + servers:  # a client agent may hold the query itself or relay it to a server
            async with s.get(f"{c.base}/v1/agent/metrics?format=prometheus") as r:
                m = re.search(rb"^beacon_http_blocking_queries (\S+)", await r.read(), re.M)
            total += int(float(m.group(1))) if m else 0
        parked[0] = total
        return total >= watchers

    # Armed once the agents' blocking-query gauges count every watcher.
    try:
        await wait_for("every watcher to park", parked_at_agents, 120)
    except RuntimeError:
        print(f"  fan-out: only {parked[0]} blocking queries counted after 120 s; writing anyway", flush=True)
    inst = services + 1  # an instance of svc-1 (svc-K holds K, K + S, ...)
    t_write[0] = time.perf_counter()
    async with s.put(f"{leader.base}/v1/txn", json=[{"Check": {"Verb": "set", "Check": {
            "Node": node_of(inst, nodes), "CheckID": f"c-{inst}", "Name": "probe", "ServiceID": f"i-{inst}",
            "Status": "warning"}}}]) as r:
        await r.read()
    await asyncio.wait(tasks, timeout=60)
    for t in tasks:
        t.cancel()
    return {"woken": len(done), "p50_ms": pct(done, 50) * 1e3, "p99_ms": pct(done, 99) * 1e3,
            "last_ms": max(done) * 1e3 if done else float("nan")}


async def run(args: argparse.Namespace, servers: list[Proc], clients: list[Proc]) -> None:
    services = max(1, args.instances // PER_SERVICE)
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        leader = await leader_of(s, servers)
        print(f"cluster up: leader {leader.name}; load average {loadavg()}", flush=True)

        done, secs, errors = await load(s, servers, args.nodes, args.instances, services, args.load_timeout)
        print(f"load: {done:,} of {args.instances:,} instances on {args.nodes:,} nodes ({services:,} services) "
              f"in {secs:.0f} s: {done / secs:,.0f} registrations/s, {errors} errors (load {loadavg()})", flush=True)
        await asyncio.sleep(2)
        for p in servers:
            e = etcd_pid(p.proc.pid)
            print(f"memory: {p.name} agent {rss_mib(p.proc.pid):,.0f} MiB, etcd member "
                  f"{rss_mib(e) if e else 0:,.0f} MiB", flush=True)
        for p in clients:
            print(f"memory: client {p.name} {rss_mib(p.proc.pid):,.0f} MiB", flush=True)

        lag0 = [await loop_lag(s, p) for p in servers]
        spies = []
        if args.py_spy:  # where each server spends the churn, as collapsed stacks (FILE.s1, ...)
            spies = [subprocess.Popen(["py-spy", "record", "-p", str(p.proc.pid), "-d", str(int(args.churn_seconds)),
                                       "-r", "100", "-f", "raw", "-o", f"{args.py_spy}.{p.name}", "--nonblocking"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in servers]
        cpu0, t0 = cpu_shares(servers, clients), time.monotonic()
        look = await lookups_under_churn(s, servers, done or args.instances, args.nodes, args.churn_seconds,
                                         args.burst, args.etcd_probe)
        cpu1, wall = cpu_shares(servers, clients), time.monotonic() - t0
        lag1 = [await loop_lag(s, p) for p in servers]
        for spy in spies:
            await asyncio.to_thread(spy.wait, 60)
        if spies:
            print(f"  py-spy samples of each server during the churn: {args.py_spy}.s1-s3 (leader {leader.name})",
                  flush=True)
        print(f"lookups under churn ({look['changes_per_s']:,.0f} health changes/s applied): DNS p50 "
              f"{look['dns_p50_ms']:.2f} ms p99 {look['dns_p99_ms']:.2f} ms ({look['dns_n']:,} queries); HTTP p50 "
              f"{look['http_p50_ms']:.2f} ms p99 {look['http_p99_ms']:.2f} ms ({look['http_n']:,}); HTTP ?stale p50 "
              f"{look['stale_p50_ms']:.2f} ms p99 {look['stale_p99_ms']:.2f} ms ({look['stale_n']:,}) "
              + (f"; etcd's own linearizable range at s2's member p50 {look['etcd_p50_ms']:.2f} ms p99 "
                 f"{look['etcd_p99_ms']:.2f} ms ({look['etcd_n']:,}) " if look["etcd_n"] else "") +
              f"(load {loadavg()})", flush=True)
        shares = {k: (cpu1[k] - cpu0.get(k, 0.0)) / wall for k in cpu1}
        shares["probe process"] = look["probe_cpu"] / wall
        print("  CPU during the churn, share of one core: " + ", ".join(
            f"{k} {v:.0%}" for k, v in shares.items()) + f"; all {sum(shares.values()):.0%} of 200%", flush=True)
        for p, b, a in zip(servers, lag0, lag1, strict=True):
            print(f"  event loop during the churn, {lag_line(p.name, b, a)}", flush=True)

        fan = await fanout(s, clients, servers, leader, args.watchers, args.nodes, services)
        print(f"fan-out: {fan['woken']:,.0f} of {args.watchers:,} watchers on {len(clients)} client agents woken; "
              f"p50 {fan['p50_ms']:.0f} ms, p99 {fan['p99_ms']:.0f} ms, last {fan['last_ms']:.0f} ms "
              f"(load {loadavg()})", flush=True)

        leader = await leader_of(s, servers)  # last: a failed restore can leave the cluster busy
        if not args.skip_snapshot:
            lag0 = [await loop_lag(s, p) for p in servers]
            snap = await snapshot(s, leader)
            print(f"snapshot: {snap['size_mib']:.1f} MiB, save {snap['save_s']:.2f} s, restore "
                  f"{snap['restore_s']:.2f} s ({'ok' if snap['restore_ok'] else 'FAILED'}); decode + apply in one process "
                  f"{snap['local_s']:.2f} s (load {loadavg()})",
                  flush=True)
            for p, b in zip(servers, lag0, strict=True):
                print(f"memory after restore: {p.name} agent {rss_mib(p.proc.pid):,.0f} MiB; event loop during "
                      f"save and restore, {lag_line(p.name, b, await loop_lag(s, p))}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=172_000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--churn-seconds", type=float, default=20)
    ap.add_argument("--load-timeout", type=float, default=420)
    ap.add_argument("--skip-snapshot", action="store_true")
    ap.add_argument("--py-spy", metavar="FILE", help="record each server with py-spy during the churn (collapsed stacks)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--burst", action="store_true",
                    help="send each second's health changes at once instead of spread over the second")
    ap.add_argument("--etcd-probe", action="store_true",
                    help="also time etcd's own linearizable range at the HTTP server's member (the barrier's step)")
    ap.add_argument("--probe", metavar="JSON", help=argparse.SUPPRESS)  # the lookup probe process
    args = ap.parse_args()
    if args.probe:
        cfg = json.loads(args.probe)
        import uvloop  # the agents' loop too: the probe's own CPU is what the servers lose

        uvloop.install()
        got = asyncio.run(probe_lookups((cfg["dns"][0], int(cfg["dns"][1])), cfg["http"], float(cfg["seconds"]),
                                        cfg["etcd"]))
        with open(cfg["out"], "w") as f:
            json.dump(got, f)
        return 0
    if args.quick:
        args.nodes, args.instances, args.watchers, args.churn_seconds = 500, 8_600, 200, 10
    t0 = time.monotonic()
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="beacon-scale-") as tmp:
        config = os.path.join(tmp, "limits.json")
        with open(config, "w", encoding="ascii") as f:
            json.dump({"limits": {"http_max_conns_per_client": 0}}, f)  # every watcher comes from one address
        try:
            servers = [start(f"s{i}", f"{BLOCK}.1{i}", tmp, True, config) for i in (1, 2, 3)]
            procs += servers
            clients = [start(f"c{i}", f"{BLOCK}.2{i}", tmp, False, config) for i in range(1, args.clients + 1)]
            procs += clients
            asyncio.run(run(args, servers, clients))
        finally:
            stop(procs)
    print(f"total {time.monotonic() - t0:.0f} s; load average at the end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
