"""Helpers for the engine tests: start a real `beacon engine` process, drive it with the real docker
CLI over its unix socket, and wait by polling with a deadline."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
HAVE_DOCKER = os.path.exists(DOCKER)
IS_ROOT = os.geteuid() == 0


def _netns_works() -> bool:
    """Root is not enough (a container without CAP_SYS_ADMIN is root too): ask the supervisor."""
    if not IS_ROOT:
        return False
    init = REPO / "src" / "beacon" / "runtime" / "_init.py"
    probe = subprocess.run([sys.executable, "-S", str(init), "probe", "probe", "2", "--", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


NETNS = _netns_works()
NETNS_REASON = "netns isolation needs root allowed to create namespaces (CAP_SYS_ADMIN)"


def beacon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    env.pop("DOCKER_HOST", None)
    return env


@dataclass
class EngineProc:
    proc: subprocess.Popen[str]
    socket: str
    data_dir: Path
    isolation: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        if not HAVE_DOCKER:
            pytest.skip(f"docker CLI not found at {DOCKER}")
        res = subprocess.run([DOCKER, "-H", self.url, *args], capture_output=True, text=True, timeout=timeout,
                             env=beacon_env())
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res

    def beacon(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = beacon_env()
        env["BEACON_ENGINE_SOCKET"] = self.socket
        return subprocess.run([sys.executable, "-m", "beacon", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def inspect(self, ref: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", ref).stdout)[0]

    def host_port(self, ref: str, key: str = "80/tcp") -> int:
        return int(self.inspect(ref)["NetworkSettings"]["Ports"][key][0]["HostPort"])


def start_engine(tmp: Path, isolation: str, prefix: tuple[str, ...] = (), python: str = sys.executable) -> EngineProc:
    data = tmp / "engine"
    sock = str(tmp / "e.sock")
    proc = subprocess.Popen([*prefix, python, "-m", "beacon", "engine", "-data-dir", str(data), "-socket", sock,
                             "-isolation", isolation], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=beacon_env(), cwd="/")
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the engine prints one line once it serves the socket
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if ready:
            line = proc.stdout.readline()
            if "listening on unix://" in line:
                return EngineProc(proc, sock, data, isolation)
            if not line:
                break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"engine did not start: {err}")


def stop_engine(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def process_mode_port() -> str:
    """A loopback port for a server inside a process-mode container, which shares the host network.

    The container must bind a port the test names before it starts, so this is the one place that
    picks a free port and releases it: a fixed port would collide with other runs of this suite."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def until(fn: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll fn until it returns something truthy, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (OSError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def http_get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, bytes]:
    """GET from 127.0.0.1:port, retrying until the server in the container listens."""

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy

    def attempt() -> tuple[int, bytes] | None:
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise OSError(str(exc)) from exc

    return until(attempt, timeout, f"http://127.0.0.1:{port}{path}")


RUNC = IS_ROOT and shutil.which("runc") is not None and shutil.which("busybox") is not None
RUNC_REASON = "runc containers need root, runc and busybox-static (apt-get install runc busybox-static)"


def busybox_tar(dest: Path) -> Path:
    """A root filesystem tar made from the static busybox, as .ci/dockerd.sh makes its image."""
    out = dest / "busybox.tar"
    if out.exists():
        return out
    bb = shutil.which("busybox")
    assert bb is not None
    root = dest / "bbroot"
    for d in ("bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(bb, root / "bin" / "busybox")
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (root / "var" / "www" / "index.html").write_text("beacon registrator test page\n")
    (root / "tmp").chmod(0o1777)
    subprocess.run(["tar", "-C", str(root), "-cf", str(out), "."], check=True)
    return out


def ensure_busybox(host: str, workdir: Path) -> None:
    """``busybox:latest`` in the engine at ``host`` (imported from busybox-static when missing)."""
    env = beacon_env()
    have = subprocess.run([DOCKER, "-H", host, "image", "inspect", "busybox:latest"], capture_output=True,
                          env=env, timeout=30)
    if have.returncode == 0:
        return
    tar = busybox_tar(workdir)
    subprocess.run([DOCKER, "-H", host, "import", "--change", 'CMD ["sh"]', "--change", "ENV PATH=/bin:/sbin",
                    str(tar), "busybox:latest"], check=True, capture_output=True, env=env, timeout=60)
