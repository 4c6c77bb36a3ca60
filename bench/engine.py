"""Embedded engine: container start latency, and what a published-port relay costs.

    python3 bench/engine.py [--isolation netns|process|both] [--containers 100] [--megabytes 256]

1. Start latency: ``POST /containers/create`` + ``POST /containers/start`` until the API answers
   (the container is then ``running``), p50/p99 over N containers, sequentially.
2. Relay: a container runs an echo server and a sink server. The same client (a subprocess) measures
   bulk throughput (MB/s into the sink), request/response latency (1-byte ping-pong on one
   connection) and connect latency (new connection + one round trip), once through the published
   host port and once directly: in process mode straight to the server's loopback port, in netns
   mode from inside the container's network namespace (the client is started with nsenter).
   The direct run is the anchor; the ratio is the relay's cost.

All traffic is on loopback (host, or the container's own namespace). Counts and time are bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from beacon.runtime._client import EngineClient  # noqa: E402

SERVER = r"""
import asyncio, sys
host, echo_port, sink_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def echo(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()
async def sink(r, w):
    total = 0
    while data := await r.read(262144):
        total += len(data)
    w.write(str(total).encode())
    await w.drain()
    w.close()
async def main():
    a = await asyncio.start_server(echo, host, echo_port, backlog=512)
    b = await asyncio.start_server(sink, host, sink_port, backlog=512)
    print("ready", flush=True)
    await asyncio.gather(a.serve_forever(), b.serve_forever())
asyncio.run(main())
"""


def client_main(host: str, echo_port: int, sink_port: int, megabytes: int, pings: int, connects: int) -> None:
    """Runs in a subprocess (possibly inside the container's netns); prints one JSON line."""
    import socket

    chunk = b"x" * 262144
    total = megabytes * 1024 * 1024
    with socket.create_connection((host, sink_port), timeout=30) as s:
        started = time.perf_counter()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
        elapsed = time.perf_counter() - started
    assert got == sent, (got, sent)
    rtts = []
    with socket.create_connection((host, echo_port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(pings):
            t = time.perf_counter()
            s.sendall(b"p")
            s.recv(1)
            rtts.append(time.perf_counter() - t)
    conns = []
    for _ in range(connects):
        t = time.perf_counter()
        with socket.create_connection((host, echo_port), timeout=10) as s:
            s.sendall(b"p")
            s.recv(1)
        conns.append(time.perf_counter() - t)
    print(json.dumps({"mb_s": sent / elapsed / 1e6, "rtt": rtts, "connect": conns}))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def start_engine(tmp: str, isolation: str) -> tuple[subprocess.Popen[str], str]:
    sock = os.path.join(tmp, "engine.sock")
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    proc = subprocess.Popen([sys.executable, "-m", "beacon", "engine", "-data-dir", tmp, "-socket", sock,
                             "-isolation", isolation], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready or "listening" not in proc.stdout.readline():
        proc.kill()
        raise SystemExit(f"engine ({isolation}) did not start")
    return proc, sock


def stop_engine(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_start(client: EngineClient, count: int) -> list[float]:
    times, ids = [], []
    for i in range(count):
        t = time.perf_counter()
        cid = client.json("POST", "/containers/create", {"name": f"bench{i}"},
                          {"Image": "bench", "Cmd": ["sleep", "60"]})["Id"]
        client.request("POST", f"/containers/{cid}/start").read()
        times.append(time.perf_counter() - t)
        ids.append(cid)
    for cid in ids:
        client.request("DELETE", f"/containers/{cid}", {"force": 1}).read()
    return times


def bench_relay(client: EngineClient, isolation: str, megabytes: int, pings: int, connects: int) -> dict[str, Any]:
    if isolation == "process":
        host, echo_port, sink_port = "127.0.0.1", _free_port(), _free_port()
    else:
        host, echo_port, sink_port = "0.0.0.0", 7, 9
    body = {"Image": "bench", "Cmd": [sys.executable, "-c", SERVER, host, str(echo_port), str(sink_port)],
            "ExposedPorts": {f"{echo_port}/tcp": {}, f"{sink_port}/tcp": {}},
            "HostConfig": {"PortBindings": {f"{echo_port}/tcp": [{"HostIp": "127.0.0.1"}],
                                            f"{sink_port}/tcp": [{"HostIp": "127.0.0.1"}]}}}
    cid = client.json("POST", "/containers/create", {"name": "relaybench"}, body)["Id"]
    client.request("POST", f"/containers/{cid}/start").read()
    try:
        deadline = time.monotonic() + 20
        while b"ready" not in (logs := client.request("GET", f"/containers/{cid}/logs",
                                                      {"stdout": 1, "stderr": 1}).read()):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench server did not start: {logs[-500:]!r}")
            time.sleep(0.05)
        info = client.json("GET", f"/containers/{cid}/json")
        ports = info["NetworkSettings"]["Ports"]
        relayed = (int(ports[f"{echo_port}/tcp"][0]["HostPort"]), int(ports[f"{sink_port}/tcp"][0]["HostPort"]))
        args = [str(megabytes), str(pings), str(connects)]
        me = [sys.executable, os.path.abspath(__file__), "--client"]
        via_relay = run_client([*me, "127.0.0.1", str(relayed[0]), str(relayed[1]), *args])
        direct_cmd = [*me, "127.0.0.1", str(echo_port), str(sink_port), *args]
        if isolation == "netns":
            direct_cmd = ["nsenter", "-t", str(info["State"]["Pid"]), "-n", "--", *direct_cmd]
        direct = run_client(direct_cmd)
    finally:
        client.request("DELETE", f"/containers/{cid}", {"force": 1}).read()
    return {"relay": via_relay, "direct": direct}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_client(argv: list[str]) -> dict[str, Any]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"client failed: {out.stderr}")
    return json.loads(out.stdout)


def report(isolation: str, starts: list[float], relay: dict[str, Any]) -> None:
    ms = [t * 1000 for t in starts]
    print(f"\n== isolation: {isolation}")
    print(f"start latency (create+start -> running), n={len(ms)}: p50 {pct(ms, 50):.1f} ms, "
          f"p99 {pct(ms, 99):.1f} ms, mean {statistics.mean(ms):.1f} ms")
    d, r = relay["direct"], relay["relay"]
    print(f"throughput: direct {d['mb_s']:.0f} MB/s, via relay {r['mb_s']:.0f} MB/s "
          f"(relay/direct {r['mb_s'] / d['mb_s']:.2f})")
    for key, label in (("rtt", "1-byte round trip"), ("connect", "connect + round trip")):
        dp50, rp50 = pct(d[key], 50) * 1e6, pct(r[key], 50) * 1e6
        dp99, rp99 = pct(d[key], 99) * 1e6, pct(r[key], 99) * 1e6
        print(f"{label}: direct p50 {dp50:.0f} us p99 {dp99:.0f} us; via relay p50 {rp50:.0f} us "
              f"p99 {rp99:.0f} us (added p50 {rp50 - dp50:.0f} us)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        host, e, s, mb, pings, conns = sys.argv[2:8]
        client_main(host, int(e), int(s), int(mb), int(pings), int(conns))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isolation", choices=("netns", "process", "both"), default="both")
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--megabytes", type=int, default=256)
    p.add_argument("--pings", type=int, default=2000)
    p.add_argument("--connects", type=int, default=300)
    args = p.parse_args()
    modes = ["netns", "process"] if args.isolation == "both" else [args.isolation]
    if "netns" in modes and (os.geteuid() != 0 or not shutil.which("nsenter")):
        print("netns mode needs root and nsenter; measuring process mode only")
        modes = ["process"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="beacon-bench-") as tmp:
            proc, sock = start_engine(tmp, mode)
            try:
                client = EngineClient(sock)
                starts = bench_start(client, args.containers)
                relay = bench_relay(client, mode, args.megabytes, args.pings, args.connects)
            finally:
                stop_engine(proc)
        report(mode, starts, relay)


if __name__ == "__main__":
    main()
