"""Shared fixtures: real agent processes on real sockets.

`start_agent(*flags)` launches `python -m beacon agent -dev` (this checkout's code, via PYTHONPATH) with
ephemeral ports, waits for its "==> Ready" line and returns a handle with the ports it bound.
"""

from __future__ import annotations

import compileall
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the checkout's modules once. The suite starts hundreds of agent, server and CLI
    processes; where PYTHONDONTWRITEBYTECODE is set (as on the CI machines) none of them leaves its
    bytecode behind, and each one compiled all of Beacon's modules again: ~0.35 s of every agent's
    ~0.95 s start. Python still reads bytecode that exists under that setting."""
    compileall.compile_dir(os.path.join(SRC, "beacon"), quiet=1, workers=0)


def beacon_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def beacon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "beacon", *args]


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    http_port: int
    dns_port: int | None
    lines: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        data = body
        if isinstance(body, dict | list):
            data = json.dumps(body)
        if isinstance(data, str):
            data = data.encode()
        req = urllib.request.Request(self.http + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: object = None) -> object:
        status, _, data = self.request(method, path, body)  # type: ignore[arg-type]
        assert status == 200, (status, data)
        return json.loads(data) if data else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def launch(*flags: str, dev: bool = True, timeout: float = 20.0, env: dict[str, str] | None = None,
           engine: bool = False, prefix: tuple[str, ...] = ()) -> AgentProcess:
    """Start an agent and wait for its ready line; `prefix` runs it under a wrapper (for example `ip netns
    exec NS`); `engine` keeps -dev's embedded container engine on."""
    return spawn(*flags, dev=dev, env=env, engine=engine, prefix=prefix).wait(timeout)


class Starting:
    """An agent process started but not yet known to be ready: start several, then wait for each, so
    their start-ups (mostly Python imports and child processes) overlap."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.ready: dict[str, str] = {}
        self.done = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"==> Ready: http_port=(\S+) dns_port=(\S+)", line)
            if m:
                self.ready["http"], self.ready["dns"] = m.group(1), m.group(2)
                self.done.set()
        self.done.set()

    def wait(self, timeout: float = 20.0) -> AgentProcess:
        proc, lines, ready = self.proc, self.lines, self.ready
        self.done.wait(timeout)
        if "http" not in ready:
            proc.kill()
            proc.wait(5)
            raise RuntimeError("agent did not become ready:\n" + "\n".join(lines[-40:]))
        dns = None if ready["dns"] == "None" else int(ready["dns"])
        http = int(ready["http"]) if ready["http"] != "None" else 0
        host = "127.0.0.1"
        for line in lines:
            m = re.search(r"Client Addr: http=(\S+):", line)
            if m:
                host = m.group(1)
        return AgentProcess(proc, http, dns, lines, host)


def spawn(*flags: str, dev: bool = True, env: dict[str, str] | None = None, engine: bool = False,
          prefix: tuple[str, ...] = ()) -> Starting:
    """Start an agent process without waiting for it (see `Starting`)."""
    args = ["agent"]
    if dev:
        args.append("-dev")
    if "-http-port" not in flags:
        args += ["-http-port", "0"]
    if "-dns-port" not in flags:
        args += ["-dns-port", "0"]
    if "-engine-socket" not in flags and "-no-engine" not in flags and dev and not engine:
        args.append("-no-engine")
    proc = subprocess.Popen([*prefix, *beacon_cmd(*args, *flags)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env or beacon_env(), start_new_session=True)
    return Starting(proc)


@pytest.fixture
def start_agent() -> Iterator:
    started: list[AgentProcess] = []

    def start(*flags: str, **kw) -> AgentProcess:
        agent = launch(*flags, **kw)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop(signal.SIGKILL if agent.proc.poll() is None else signal.SIGTERM)


@pytest.fixture(scope="module")
def dev_agent() -> Iterator[AgentProcess]:
    agent = launch()
    yield agent
    agent.stop()


def launch_acl_deny(directory, management: str, **kw) -> AgentProcess:
    """A -dev agent with ACLs on, default policy deny, and `management` as its initial management token."""
    cfg = os.path.join(str(directory), "acl.json")
    with open(cfg, "w") as f:
        json.dump({"acl": {"enabled": True, "default_policy": "deny", "tokens": {"initial_management": management}}}, f)
    return launch("-config-file", cfg, **kw)


def dig(port: int, *args: str, timeout: float = 10.0, server: str = "127.0.0.1") -> str:
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed (apt-get install bind9-dnsutils)")
    out = subprocess.run(["dig", f"@{server}", "-p", str(port), "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=timeout)
    return out.stdout


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
