"""Registration latency: from `docker run -d` returning to the SRV answer being visible in DNS.

    python3 bench/registration.py [--containers 100] [--engine embedded|dockerd|both]

For each engine, one agent and one registrator:

* embedded: `beacon agent -dev -engine-socket ...` (the agent's own registrator);
* dockerd:  `beacon agent -dev` plus `beacon registrator` on the private dockerd of `.ci/dockerd.sh`
  (BEACON_TEST_DOCKER_HOST, else /tmp/beacon-dockerd/docker.sock); skipped when it does not answer.

Each container gets its own service name and publishes port 80 on a kernel-chosen loopback port. The
clock starts when the real docker CLI returns and stops when `<name>.service.consul SRV` answers with
that port, polled every millisecond over UDP on loopback. Every wait is bounded; every container is
removed. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")
sys.path.insert(0, SRC)

from dnslib import QTYPE, DNSRecord  # noqa: E402

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
DOCKERD_SOCKET = "/tmp/beacon-dockerd/docker.sock"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC
    e.pop("DOCKER_HOST", None)
    return e


def start(argv: list[str], ready: str, timeout: float = 30) -> tuple[subprocess.Popen[str], re.Match[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    found: list[re.Match[str]] = []
    seen = threading.Event()
    lines: list[str] = []

    def pump() -> None:  # keep draining so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(ready, line)
            if m and not found:
                found.append(m)
                seen.set()
        seen.set()

    threading.Thread(target=pump, daemon=True).start()
    seen.wait(timeout)
    if not found:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"{argv[3]} did not start:\n" + "".join(lines[-20:]))
    return proc, found[0]


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def docker(host: str, *args: str) -> str:
    res = subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True, timeout=60, env=env())
    if res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


def srv_port(sock: socket.socket, dns_port: int, name: str) -> int | None:
    q = DNSRecord.question(f"{name}.service.consul", "SRV")
    sock.sendto(q.pack(), ("127.0.0.1", dns_port))
    try:
        data, _ = sock.recvfrom(4096)
    except TimeoutError:
        return None
    reply = DNSRecord.parse(data)
    for rr in reply.rr:
        if rr.rtype == QTYPE.SRV:
            return int(rr.rdata.port)
    return None


def measure(host: str, dns_port: int, n: int, cmd: list[str]) -> list[float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    names: list[str] = []
    out: list[float] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    try:
        for i in range(n):
            name = f"{prefix}-{i}"
            names.append(name)
            docker(host, "run", "-d", "--name", name, "-e", f"SERVICE_NAME={name}", "-p", "127.0.0.1::80",
                   "busybox", *cmd)
            t0 = time.perf_counter()
            port = None
            deadline = t0 + 5
            while time.perf_counter() < deadline:
                port = srv_port(sock, dns_port, name)
                if port:
                    break
                time.sleep(0.001)
            if not port:
                raise RuntimeError(f"{name} not visible in DNS within 5 s")
            out.append(time.perf_counter() - t0)
    finally:
        sock.close()
        for i in range(0, len(names), 50):
            subprocess.run([DOCKER, "-H", host, "rm", "-f", *names[i:i + 50]], capture_output=True, timeout=120,
                           env=env())
    return out


def dockerd_host() -> str | None:
    host = os.environ.get("BEACON_TEST_DOCKER_HOST") or f"unix://{DOCKERD_SOCKET}"
    path = host[len("unix://"):] if host.startswith("unix://") else ""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            return host if b" 200 " in s.recv(128) else None
    except OSError:
        return None


AGENT = [sys.executable, "-m", "beacon", "agent", "-dev", "-log-level", "warn", "-http-port", "0", "-dns-port", "0"]
READY = r"==> Ready: http_port=(\d+) dns_port=(\d+)"


def run_embedded(n: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="beacon-bench-reg-") as tmp:
        sock = os.path.join(tmp, "engine.sock")
        agent, m = start([*AGENT, "-engine-socket", sock, "-data-dir", os.path.join(tmp, "data")], READY)
        try:
            return measure(f"unix://{sock}", int(m.group(2)), n, ["sleep", "300"])
        finally:
            stop(agent)


def run_dockerd(host: str, n: int) -> list[float]:
    agent, m = start([*AGENT, "-no-engine"], READY)
    try:
        reg, _ = start([sys.executable, "-m", "beacon", "registrator", "-log-level", "warn", "-docker-host", host,
                        "-hostname", "bench", f"consul://127.0.0.1:{m.group(1)}"], r"==> Registrator watching")
        try:
            return measure(host, int(m.group(2)), n, ["sleep", "300"])
        finally:
            stop(reg)
    finally:
        stop(agent)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--engine", choices=("embedded", "dockerd", "both"), default="both")
    args = ap.parse_args()
    rows = []
    if args.engine in ("embedded", "both"):
        rows.append(("embedded engine (agent's registrator)", run_embedded(args.containers)))
    if args.engine in ("dockerd", "both"):
        host = dockerd_host()
        if host is None:
            print("dockerd: skipped (run `.ci/dockerd.sh start` or set BEACON_TEST_DOCKER_HOST)", file=sys.stderr)
        else:
            rows.append((f"dockerd ({host}, `beacon registrator`)", run_dockerd(host, args.containers)))
    print(f"\n`docker run -d` returned -> SRV answer in DNS, {args.containers} containers each\n")
    print("| engine | n | p50 ms | p99 ms | max ms | mean ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, v in rows:
        print(f"| {label} | {len(v)} | {pct(v, 50) * 1000:.1f} | {pct(v, 99) * 1000:.1f} | {max(v) * 1000:.1f} "
              f"| {statistics.mean(v) * 1000:.1f} |")


if __name__ == "__main__":
    main()
