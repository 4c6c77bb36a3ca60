"""netns isolation without root: user namespaces, sockets handed over with SCM_RIGHTS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import HAVE_DOCKER, IS_ROOT, EngineProc, beacon_env, http_get, start_engine, stop_engine

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def _python_for_nobody() -> str | None:
    """A python3 that uid 65534 can run (a pyenv under /root is not readable by it)."""
    if not (IS_ROOT and shutil.which("setpriv")):
        return None
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        # The engine re-executes sys.executable for each container, so that must work too.
        # It must also have the engine's dependencies (Debian's python3 usually has none of them).
        probe = subprocess.run([*NOBODY, candidate, "-c", "import aiohttp, dnslib, subprocess, sys; "
                                "subprocess.run([sys.executable, '-S', '-c', '0'], check=True)"],
                               capture_output=True, cwd="/", env=beacon_env())
        if probe.returncode == 0:
            probe = subprocess.run([*NOBODY, "unshare", "-Urn", "true"], capture_output=True)
            return candidate if probe.returncode == 0 else None
    return None


PYTHON = _python_for_nobody()
pytestmark = [
    pytest.mark.skipif(not HAVE_DOCKER, reason="docker CLI not found"),
    pytest.mark.skipif(PYTHON is None, reason="needs root to drop to uid 65534 (setpriv), a python3 it can run, "
                                              "and unprivileged user namespaces"),
]


@pytest.fixture
def nobody_engine() -> Iterator[EngineProc]:
    tmp = Path(tempfile.mkdtemp(prefix="beacon-nobody-"))
    try:
        os.chmod(tmp, 0o777)  # the engine runs as uid 65534 and keeps its state here
        assert PYTHON is not None
        e = start_engine(tmp, "netns", prefix=NOBODY, python=PYTHON)
        try:
            yield e
        finally:
            stop_engine(e.proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_unprivileged_engine_isolates_with_user_namespaces(nobody_engine: EngineProc) -> None:
    e = nobody_engine
    assert json.loads(e.docker("info", "--format", "{{json .}}").stdout)["Isolation"] == "netns"
    for name in ("u1", "u2"):
        e.docker("run", "-d", "-p", "127.0.0.1::80", "--name", name, "img", PYTHON or "python3", "-m", "http.server",
                 "80")
    ports = [e.host_port(name) for name in ("u1", "u2")]
    assert ports[0] != ports[1]
    for port in ports:
        assert http_get(port)[0] == 200
    res = e.docker("exec", "u1", "sh", "-c", "id -u; hostname")
    assert res.stdout.split() == ["0", e.inspect("u1")["Config"]["Hostname"]]
    e.docker("stop", "-t", "5", "u1")
    assert e.inspect("u1")["State"]["ExitCode"] == 143
