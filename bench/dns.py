"""DNS throughput through a real ``beacon agent -dev`` against dnsmasq, one pinned core each, same records.

    python3 bench/dns.py [--seconds 10] [--rounds 3] [--clients 10] [--phases basic,churn,names]
                         [--names 10000] [--server-core 0] [--client-core 1]

Phases (issue 16's targets in brackets):

* ``basic``: two ``web`` instances (10.0.0.1, 10.0.0.2, port 8080), queries ``web.service.consul``
  A and SRV, each measured on its own [>= 1.0x dnsmasq on A and on SRV].
* ``churn``: the same A queries while another service is re-registered 50 times a second through the
  agent's HTTP API (each registration changes its port, so the catalog index moves every time)
  [>= 0.9x]. dnsmasq has no catalog; its figure is the same static answer.
* ``names``: ``--names`` services with one instance each, queried in turn (``svc-N.service.consul
  A``) [>= 0.9x]. dnsmasq gets the same names from an ``--addn-hosts`` file.

dnsmasq runs with the flags from the project's bench anchors; the agent is started with the same
``taskset`` core. Addresses are only data: nothing is sent to them. dnsperf (pinned to the client
core) alternates between the two servers for ``--rounds`` rounds; every round, the medians, and the
load average are printed. Everything started is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import beacon_agent, cpu_seconds, loadavg, require  # noqa: E402

INSTANCES = [("node1", "10.0.0.1"), ("node2", "10.0.0.2")]
CHURN_RATE = 50.0


def wait_udp_answer(port: int, timeout: float = 10.0) -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(query, ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                if s.recv(4096)[:2] == query[:2]:
                    return
    raise RuntimeError(f"server on port {port} did not answer within {timeout}s")


def free_port() -> int:
    """A port free for both UDP and TCP right now (dnsmasq binds both a moment later)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def dnsmasq(core: int, tmp: Path, names: int) -> Iterator[tuple[int, int]]:
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"{name_addr(i)} svc-{i}.service.consul\n" for i in range(names)))
    port = free_port()
    cmd = ["taskset", "-c", str(core), "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--no-poll",
           f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--local-ttl=0",
           f"--pid-file={tmp}/dnsmasq.pid", f"--addn-hosts={hosts}",
           *[f"--host-record=web.service.consul,{a}" for _, a in INSTANCES],
           "--srv-host=_web._tcp.service.consul,web.service.consul,8080,1,1",
           "--srv-host=web.service.consul,web.service.consul,8080,1,1"]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_udp_answer(port)
        yield port, proc.pid  # taskset execs dnsmasq: the same pid
    finally:
        proc.terminate()
        proc.wait(10)


def name_addr(i: int) -> str:
    return f"10.{2 + i // 65536}.{i // 256 % 256}.{i % 256}"


def put(base: str, path: str, body: object) -> None:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def fill(base: str, names: int) -> None:
    for node, address in INSTANCES:
        put(base, "/v1/catalog/register", {
            "Node": node, "Address": address,
            "Service": {"ID": "web", "Service": "web", "Port": 8080, "Address": address},
            "Check": {"CheckID": "serfHealth", "Name": "serf", "Status": "passing"}})
    ops = [{"Service": {"Verb": "set", "Node": f"n-{i}",
                        "Service": {"ID": f"svc-{i}", "Service": f"svc-{i}", "Port": 80}}} for i in range(names)]
    nodes = [{"Node": {"Verb": "set", "Node": {"Node": f"n-{i}", "Address": name_addr(i)}}} for i in range(names)]
    for i in range(0, names, 32):
        put(base, "/v1/txn", nodes[i:i + 32] + ops[i:i + 32])


@contextlib.contextmanager
def churn(base: str, rate: float) -> Iterator[list[int]]:
    """Re-register the ``churn`` service ``rate`` times a second (its port changes every time)."""
    stop = threading.Event()
    count = [0]

    def loop() -> None:
        period = 1.0 / rate
        nxt = time.monotonic()
        # One kept-alive connection, as a real registrator (Go's net/http client) keeps one.
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=30)
        while not stop.is_set():
            body = json.dumps({"Node": "churner", "Address": "10.9.9.9",
                               "Service": {"ID": "churn", "Service": "churn", "Port": 1000 + count[0] % 50000}})
            conn.request("PUT", "/v1/catalog/register", body=body)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"register: HTTP {resp.status}")
            count[0] += 1
            nxt += period
            stop.wait(max(0.0, nxt - time.monotonic()))
        conn.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield count
    finally:
        stop.set()
        t.join(10)


def dnsperf(port: int, qfile: Path, seconds: int, clients: int, core: int, pid: int) -> tuple[float, str, float]:
    """Queries/s, queries lost, and the server's CPU microseconds per answered query."""
    cpu0 = cpu_seconds(pid)
    cmd = ["taskset", "-c", str(core), "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-c", str(clients), "-l", str(seconds), "-Q", "200000"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("dnsperf output without a rate:\n" + out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    cpu_us = (cpu_seconds(pid) - cpu0) / max(1, int(done.group(1)) if done else 1) * 1e6
    return float(m.group(1)), (lost.group(1) if lost else "?"), cpu_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--phases", default="basic,churn,names")
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    args = ap.parse_args()
    require("dnsmasq", "dnsperf", "taskset")
    phases = args.phases.split(",")
    cases: list[tuple[str, list[str]]] = []
    if "basic" in phases:
        cases += [("A", ["web.service.consul A"]), ("SRV", ["web.service.consul SRV"])]
    if "churn" in phases:
        cases.append(("A, churn 50/s", ["web.service.consul A"]))
    if "names" in phases:
        cases.append((f"A, {args.names:,} names", [f"svc-{i}.service.consul A" for i in range(args.names)]))
    table = []
    with tempfile.TemporaryDirectory(prefix="beacon-dns-bench-") as tmp_name:
        tmp = Path(tmp_name)
        names = args.names if "names" in phases else 0
        with dnsmasq(args.server_core, tmp, names) as (dm_port, dm_pid), \
                beacon_agent(core=args.server_core) as (agent, http, bc_port):
            assert bc_port is not None
            base = f"http://127.0.0.1:{http}"
            fill(base, names)
            wait_udp_answer(bc_port)
            print(f"dnsperf -c {args.clients} -l {args.seconds}s x {args.rounds} rounds; servers on core "
                  f"{args.server_core}, dnsperf on core {args.client_core}", flush=True)
            for label, queries in cases:
                qfile = tmp / "queries"
                qfile.write_text("\n".join(queries) + "\n")
                dm_runs, bc_runs, cpu_ratios = [], [], []
                for rnd in range(1, args.rounds + 1):
                    dm, dm_lost, dm_cpu = dnsperf(dm_port, qfile, args.seconds, args.clients, args.client_core,
                                                  dm_pid)
                    with churn(base, CHURN_RATE) if "churn" in label else contextlib.nullcontext([0]) as n:
                        bc, bc_lost, bc_cpu = dnsperf(bc_port, qfile, args.seconds, args.clients,
                                                      args.client_core, agent.pid)
                    dm_runs.append(dm)
                    bc_runs.append(bc)
                    cpu_ratios.append(dm_cpu / bc_cpu)
                    extra = f", {n[0] / args.seconds:.0f} re-registrations/s" if "churn" in label else ""
                    print(f"{label}: round {rnd}: dnsmasq {dm:,.0f} q/s (lost {dm_lost}, {dm_cpu:.1f} us CPU/q), "
                          f"beacon {bc:,.0f} q/s (lost {bc_lost}, {bc_cpu:.1f} us CPU/q){extra}: {bc / dm:.2f}x, "
                          f"per CPU {dm_cpu / bc_cpu:.2f}x  (load {loadavg()})", flush=True)
                ratios = [b / d for d, b in zip(dm_runs, bc_runs, strict=True)]
                table.append((label, statistics.median(bc_runs), statistics.median(dm_runs),
                              statistics.median(ratios), statistics.median(cpu_ratios)))
    print(f"\nload average at the end: {loadavg()}")
    print("| query | Beacon (real agent, -dev) | dnsmasq | Beacon / dnsmasq q/s | per CPU-second |")
    print("|---|---:|---:|---:|---:|")
    for label, bc, dm, r, c in table:
        print(f"| {label} | {bc:,.0f} q/s | {dm:,.0f} q/s | **{r:.2f}x** | {c:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
