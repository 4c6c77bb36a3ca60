"""DNS throughput: Beacon's DNS server against dnsmasq, one pinned core each, same records.

    python3 bench/dns.py [--seconds 10] [--rounds 3] [--clients 10] [--server-core 0] [--client-core 1]

Starts dnsmasq (the anchor, flags as in the project's bench anchors) and a Beacon DNS server in a
subprocess under uvloop, both pinned with taskset to the server core, registers the same two
``web`` instances in each (10.0.0.1 and 10.0.0.2, port 8080: data only, nothing is sent to them),
then runs dnsperf pinned to the client core against each for a bounded time with a query file of
``web.service.consul A`` and ``web.service.consul SRV``. The two servers take turns for ``--rounds``
rounds (the machine is shared, so load drifts); it prints every round, the median queries/s of
each, the ratio of the medians and a markdown table row. Everything it starts is stopped before it
exits.

``--serve PORT`` is the subprocess mode (the Beacon side): serve DNS on 127.0.0.1:PORT until stdin
closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = [("node1", "10.0.0.1"), ("node2", "10.0.0.2")]
QUERIES = ["web.service.consul A", "web.service.consul SRV"]


# ---------------------------------------------------------------------- the Beacon side
def serve(port: int) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from beacon.dns import DNSConfig, DNSServer
    from beacon.server.fsm import MessageType, StateStore

    try:
        import uvloop
    except ImportError:  # still a valid run, but the figures are for plain asyncio
        uvloop = None
        print("uvloop not installed: serving with asyncio", file=sys.stderr)

    store = StateStore()
    for node, address in INSTANCES:
        store.apply((MessageType.REGISTER, {
            "node": node, "address": address,
            "service": {"id": "web", "service": "web", "port": 8080, "address": address},
            "checks": [{"node": node, "check_id": "serfHealth", "status": "passing"}],
        }))

    async def main() -> None:
        server = DNSServer(store, DNSConfig(node_name=INSTANCES[0][0]))
        await server.start("127.0.0.1", port)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
        await server.stop()

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())


# ---------------------------------------------------------------------- the driver
def free_port() -> int:
    """A port free for both UDP and TCP right now (the bench binds it a moment later)."""
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


def wait_udp_answer(port: int, timeout: float = 10.0) -> None:
    """Wait until the server answers a query (bounded)."""
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


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def dnsperf(port: int, qfile: Path, seconds: int, clients: int, core: int) -> tuple[float, str]:
    cmd = ["taskset", "-c", str(core), "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-c", str(clients), "-l", str(seconds), "-Q", "200000"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("dnsperf output without a rate:\n" + out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    return float(m.group(1)), (lost.group(1) if lost else "?")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    for tool in ("dnsmasq", "dnsperf", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install dnsmasq dnsperf util-linux)", file=sys.stderr)
            return 2

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="beacon-dns-bench-") as tmp:
        qfile = Path(tmp) / "queries"
        qfile.write_text("\n".join(QUERIES) + "\n")
        try:
            dm_port = free_port()
            dnsmasq_cmd = [
                "taskset", "-c", str(args.server_core), "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                "--no-poll", f"--port={dm_port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--local-ttl=0", f"--pid-file={tmp}/dnsmasq.pid",
                *[f"--host-record=web.service.consul,{a}" for _, a in INSTANCES],
                "--srv-host=_web._tcp.service.consul,web.service.consul,8080,1,1",
                "--srv-host=web.service.consul,web.service.consul,8080,1,1",
            ]
            if os.geteuid() == 0:
                dnsmasq_cmd.append("--user=root")
            procs.append(subprocess.Popen(dnsmasq_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_udp_answer(dm_port)

            bc_port = free_port()
            beacon = subprocess.Popen(
                ["taskset", "-c", str(args.server_core), sys.executable, __file__, "--serve", str(bc_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(beacon)
            wait_udp_answer(bc_port)

            print(f"dnsperf -c {args.clients} -l {args.seconds}s x {args.rounds} rounds, server on core {args.server_core}, "
                  f"dnsperf on core {args.client_core}; queries: {', '.join(QUERIES)}")
            dm_runs: list[float] = []
            bc_runs: list[float] = []
            for rnd in range(1, args.rounds + 1):
                dm_qps, dm_lost = dnsperf(dm_port, qfile, args.seconds, args.clients, args.client_core)
                bc_qps, bc_lost = dnsperf(bc_port, qfile, args.seconds, args.clients, args.client_core)
                dm_runs.append(dm_qps)
                bc_runs.append(bc_qps)
                print(f"round {rnd}: dnsmasq {dm_qps:,.0f} q/s (lost {dm_lost}), beacon {bc_qps:,.0f} q/s "
                      f"(lost {bc_lost}), ratio {bc_qps / dm_qps:.2f}x")
            dm_qps, bc_qps = statistics.median(dm_runs), statistics.median(bc_runs)
            ratio = bc_qps / dm_qps if dm_qps else float("nan")
            print(f"median: dnsmasq {dm_qps:,.0f} q/s, beacon {bc_qps:,.0f} q/s, ratio beacon/dnsmasq {ratio:.2f}x")
            print("| Beacon DNS (uvloop, cached) | dnsmasq | ratio |")
            print("|---|---|---|")
            print(f"| {bc_qps:,.0f} q/s | {dm_qps:,.0f} q/s | {ratio:.2f}x |")
        finally:
            for proc in reversed(procs):
                if proc.stdin:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
