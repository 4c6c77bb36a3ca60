"""Fixtures for the registrator tests: the same tests run against the embedded engine (a real
`beacon engine` process) and a real dockerd (`.ci/dockerd.sh start`), both driven by the real docker CLI.

A dockerd is used only when BEACON_TEST_DOCKER_HOST names it or when the private socket of
`.ci/dockerd.sh` (/tmp/beacon-dockerd/docker.sock) answers; never /var/run/docker.sock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import AgentProcess, beacon_cmd, beacon_env, launch
from tests.runtime.helpers import RUNC, ensure_busybox, start_engine, stop_engine

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
DOCKERD_SOCKET = "/tmp/beacon-dockerd/docker.sock"
IS_ROOT = os.geteuid() == 0


def _answers(sock_path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            return b" 200 " in s.recv(256)
    except OSError:
        return False


def dockerd_host() -> tuple[str | None, str]:
    """(docker host URL, reason when absent)."""
    env = os.environ.get("BEACON_TEST_DOCKER_HOST", "")
    if env:
        if not env.startswith("unix://"):
            return None, f"BEACON_TEST_DOCKER_HOST={env!r} is not a unix:// URL"
        if _answers(env[len("unix://"):]):
            return env, ""
        return None, f"BEACON_TEST_DOCKER_HOST={env} does not answer"
    if _answers(DOCKERD_SOCKET):
        return f"unix://{DOCKERD_SOCKET}", ""
    return None, (f"no test dockerd: run `.ci/dockerd.sh start` (as root) or set BEACON_TEST_DOCKER_HOST; "
                  f"{DOCKERD_SOCKET} does not answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Docker:
    """One engine, driven through the real docker CLI."""

    kind: str                      # "embedded" or "dockerd"
    host: str                      # unix://...
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind == "embedded" and RUNC:  # the engine runs real images under runc: give it busybox
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                ensure_busybox(self.host, Path(tmp))

    @property
    def image(self) -> str:
        return "busybox"

    def http_cmd(self, port: int = 80) -> list[str]:
        if self.kind == "dockerd" or RUNC:
            return ["httpd", "-f", "-p", str(port), "-h", "/var/www"]
        return ["python3", "-m", "http.server", str(port)]

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        res = subprocess.run([DOCKER, "-H", self.host, *args], capture_output=True, text=True, timeout=timeout,
                             env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res

    def name(self, prefix: str = "reg") -> str:
        n = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.created.append(n)
        return n

    def run(self, name: str, *args: str, cmd: list[str] | None = None) -> str:
        if name not in self.created:
            self.created.append(name)
        out = self.cli("run", "-d", "--name", name, *args, self.image,
                       *(cmd if cmd is not None else ["sleep", "300"]))
        return out.stdout.strip()

    def inspect(self, ref: str) -> dict:
        return json.loads(self.cli("inspect", ref).stdout)[0]

    def cleanup(self) -> None:
        if self.created:
            self.cli("rm", "-f", *self.created, check=False, timeout=60)


@pytest.fixture(scope="session")
def embedded_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("reg-engine")
    e = start_engine(tmp, "runc" if RUNC else "netns" if IS_ROOT else "process")
    yield e.url
    stop_engine(e.proc)


ENGINES = ["embedded", "dockerd"]


@pytest.fixture(params=ENGINES)
def docker(request: pytest.FixtureRequest) -> Iterator[Docker]:
    if not os.path.exists(DOCKER):
        pytest.skip(f"docker CLI not found at {DOCKER}")
    if request.param == "dockerd":
        host, reason = dockerd_host()
        if host is None:
            pytest.skip(reason)
    else:
        if not IS_ROOT:
            pytest.skip("the embedded engine tests publish port 80 in several containers: needs netns (root)")
        host = request.getfixturevalue("embedded_engine")
    d = Docker(request.param, host)
    yield d
    d.cleanup()


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    a = launch()
    yield a
    a.stop()


@dataclass
class RegistratorProcess:
    proc: subprocess.Popen[str]
    hostname: str
    lines: list[str]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        return "\n".join(self.lines)


def start_registrator(docker_host: str, registry: str, *flags: str, hostname: str | None = None,
                      wait: bool = True, timeout: float = 20) -> RegistratorProcess:
    hostname = hostname or f"h{uuid.uuid4().hex[:6]}"
    env = beacon_env()
    env.pop("DOCKER_HOST", None)
    proc = subprocess.Popen(beacon_cmd("registrator", "-docker-host", docker_host, "-hostname", hostname,
                                       *flags, registry),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "==> Registrator watching" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    r = RegistratorProcess(proc, hostname, lines)
    if wait:
        ready.wait(timeout)
        if proc.poll() is not None or not any("==> Registrator watching" in x for x in lines):
            r.stop(signal.SIGKILL)
            raise AssertionError("registrator did not start:\n" + "\n".join(lines[-30:]))
    return r


@pytest.fixture
def registrator(docker: Docker, agent: AgentProcess) -> Iterator:
    started: list[RegistratorProcess] = []

    def start(*flags: str, **kw) -> RegistratorProcess:  # type: ignore[no-untyped-def]
        r = start_registrator(docker.host, f"consul://{agent.http_addr}", *flags, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
        _deregister_host(agent, r.hostname)


def _deregister_host(agent: AgentProcess, hostname: str) -> None:
    services = agent.json("GET", "/v1/agent/services")
    assert isinstance(services, dict)
    for sid, svc in services.items():
        if sid.startswith(hostname + ":") or (svc.get("Meta") or {}).get("beacon-registrator") == hostname:
            agent.request("PUT", f"/v1/agent/service/deregister/{sid}")


def wait_for(fn, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def agent_services(agent: AgentProcess, hostname: str) -> dict[str, dict]:
    services = agent.json("GET", "/v1/agent/services")
    assert isinstance(services, dict)
    return {sid: s for sid, s in services.items()
            if sid.startswith(hostname + ":") or (s.get("Meta") or {}).get("beacon-registrator") == hostname}


def host_port(d: Docker, ref: str, key: str = "80/tcp") -> int:
    return int(d.inspect(ref)["NetworkSettings"]["Ports"][key][0]["HostPort"])

