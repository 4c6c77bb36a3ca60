"""Embedded engine (runc isolation) vs dockerd, driven the same way: through the real docker CLI.

    python3 bench/engine.py [--rounds 3] [--runs 50] [--parallel 30] [--megabytes 20]

Per round, for each engine in turn (the order alternates between rounds):

1. latency: ``docker run --rm busybox true`` one after another, ``--runs`` times; p50 and p99 of the
   wall time of the CLI command (create, attach, start, wait, remove: what a user waits for);
2. throughput: ``--parallel`` concurrent ``docker run --rm busybox true``; containers per second
   (and that every one of them succeeded);
3. output: ``--megabytes`` of stdout through ``docker run`` into the benchmark (the engine's log
   store and attach stream), MB/s: once as one long run of bytes (``head -c N /dev/zero``) and once
   as short lines (``yes hello-world-line | head -c N``), which is what programs print.

The embedded engine is a real ``beacon engine -isolation runc`` process; dockerd is the private one
of .ci/dockerd.sh (started here if it is not running). Both get the same busybox image, imported
from busybox-static. Every round is printed, then the medians and the ratios. No network traffic
at all: containers run ``true`` and ``head``; the CLI talks to unix sockets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.runtime.helpers import ensure_busybox, start_engine, stop_engine  # noqa: E402

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
DOCKERD_SOCK = "/tmp/beacon-dockerd/docker.sock"


def docker(host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, timeout=timeout, env=env)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency(host: str, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = docker(host, "run", "--rm", "busybox", "true")
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"docker run failed on {host}: {res.stderr.decode()}")
    return pct(times, 50) * 1000, pct(times, 99) * 1000


def parallel(host: str, n: int) -> tuple[float, int]:
    def one(_: int) -> int:
        return docker(host, "run", "--rm", "busybox", "true").returncode

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - t0
    return n / elapsed, sum(1 for c in codes if c == 0)


def output(host: str, megabytes: int, lines: bool) -> float:
    size = megabytes * 1024 * 1024
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    cmd = ["sh", "-c", f"yes hello-world-line | head -c {size}"] if lines else ["head", "-c", str(size), "/dev/zero"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([DOCKER, "-H", host, "run", "--rm", "busybox", *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    got = 0
    while chunk := proc.stdout.read(1 << 20):
        got += len(chunk)
    proc.wait(timeout=120)
    elapsed = time.perf_counter() - t0
    if got != size:
        raise RuntimeError(f"{host}: got {got} of {size} bytes")
    return megabytes / elapsed


def dockerd() -> str:
    env = dict(os.environ)
    subprocess.run([str(REPO / ".ci" / "dockerd.sh"), "start"], capture_output=True, env=env, timeout=120)
    return f"unix://{DOCKERD_SOCK}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=30)
    ap.add_argument("--megabytes", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("runc"):
        print("needs root and runc", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    engine = start_engine(tmp, "runc")
    try:
        hosts = {"embedded": engine.url, "dockerd": dockerd()}
        for host in hosts.values():
            ensure_busybox(host, tmp)
            docker(host, "run", "--rm", "busybox", "true")  # warm caches
        results: dict[str, dict[str, list[float]]] = {k: {} for k in hosts}
        print(f"{'round':>5} {'engine':>9} {'run p50':>9} {'run p99':>9} {'parallel/s':>10} {'ok':>5} "
              f"{'bytes MB/s':>10} {'lines MB/s':>10}")
        for rnd in range(args.rounds):
            order = list(hosts) if rnd % 2 == 0 else list(reversed(hosts))
            for kind in order:
                host = hosts[kind]
                p50, p99 = latency(host, args.runs)
                rate, ok = parallel(host, args.parallel)
                mbs = output(host, args.megabytes, lines=False)
                lines = output(host, args.megabytes, lines=True)
                for key, value in (("p50", p50), ("p99", p99), ("rate", rate), ("mbs", mbs), ("lines", lines)):
                    results[kind].setdefault(key, []).append(value)
                print(f"{rnd + 1:>5} {kind:>9} {p50:>7.1f}ms {p99:>7.1f}ms {rate:>10.1f} "
                      f"{ok:>2}/{args.parallel} {mbs:>10.1f} {lines:>10.1f}", flush=True)
        med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
        e, d = med["embedded"], med["dockerd"]
        print("\nmedians")
        for kind, m in med.items():
            print(f"  {kind:>9}: run p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, "
                  f"{args.parallel}-way {m['rate']:.1f} containers/s, stdout {m['mbs']:.1f} MB/s (bytes), "
                  f"{m['lines']:.1f} MB/s (lines)")
        print(f"  ratios (embedded/dockerd): run p50 {e['p50'] / d['p50']:.2f}x, p99 {e['p99'] / d['p99']:.2f}x, "
              f"parallel {e['rate'] / d['rate']:.2f}x, stdout bytes {e['mbs'] / d['mbs']:.2f}x, "
              f"lines {e['lines'] / d['lines']:.2f}x")
    finally:
        stop_engine(engine.proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
