"""Helpers shared by the benchmarks: start processes pinned to a core, wait for readiness, clean up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


@contextmanager
def beacon_agent(*flags: str, core: int | None = 0, timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen, int, int | None]]:
    argv = pinned(core, [sys.executable, "-m", "beacon", "agent", "-dev", "-no-engine", "-log-level", "warn",
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
