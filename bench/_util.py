"""Helpers shared by the benchmarks: start processes pinned to a core, wait for readiness, clean up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC
    return e


def pinned(core: int | None, argv: list[str]) -> list[str]:
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used. Per-request CPU is the figure that holds up when other
    work shares the cores (throughput then depends on what the scheduler gives each side)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    """The machine's 1/5/15-minute load average, printed with every table (the cores are shared)."""
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


@contextmanager
def beacon_agent(*flags: str, core: int | None = 0, timeout: float = 30.0, dev: bool = True,
                 ) -> Iterator[tuple[subprocess.Popen, int, int | None]]:
    """A real ``beacon agent`` pinned to ``core``: ``-dev``, or (dev=False) a single bootstrapped
    server with its own temporary data directory, which is what a production agent runs."""
    with tempfile.TemporaryDirectory(prefix="beacon-bench-") as data_dir:
        mode = (["-dev", "-no-engine"] if dev else
                ["-server", "-bootstrap-expect", "1", "-bind", "127.0.0.1", "-data-dir", data_dir,
                 # Every port picked by the kernel: other agents on this machine hold the defaults.
                 "-server-port", "0", "-server-rpc-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0"])
        with _agent(mode, flags, core, timeout) as started:
            yield started


@contextmanager
def _agent(mode: list[str], flags: tuple[str, ...], core: int | None, timeout: float,
           ) -> Iterator[tuple[subprocess.Popen, int, int | None]]:
    argv = pinned(core, [sys.executable, "-m", "beacon", "agent", *mode, "-log-level", "warn",
                         "-http-port", "0", "-dns-port", "0", *flags])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    http = dns = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            m = re.search(r"==> Ready: http_port=(\S+) dns_port=(\S+)", line)
            if m:
                http = int(m.group(1))
                dns = None if m.group(2) == "None" else int(m.group(2))
                break
            if time.monotonic() > deadline:
                break
        if http is None:
            raise RuntimeError("agent did not start")
        # Keep reading its output so a chatty agent never blocks on a full pipe mid-benchmark.
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        yield proc, http, dns
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (apt-get install {' '.join(missing)})")
