"""A real cluster on loopback: 3 servers and 2 clients, each on its own 127.x.y.z address."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.conftest import AgentProcess, Starting, launch, spawn, wait_until


def _block() -> str:
    return f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


@dataclass
class Cluster:
    tmp: str
    block: str
    extra: tuple[str, ...] = ()
    servers: dict[str, AgentProcess] = field(default_factory=dict)
    clients: dict[str, AgentProcess] = field(default_factory=dict)

    def addr(self, name: str) -> str:
        kind, n = name[0], int(name[1:])
        return f"{self.block}.{(10 if kind == 's' else 20) + n}"

    def server_flags(self, name: str, expect: int = 3) -> list[str]:
        flags = ["-server", "-bootstrap-expect", str(expect), "-node", name, "-bind", self.addr(name),
                 "-client", self.addr(name), "-data-dir", os.path.join(self.tmp, name),
                 "-retry-interval", "1s", *self.extra]
        for other in ("s1", "s2", "s3"):
            flags += ["-retry-join", self.addr(other)]
        return flags

    def start_server(self, name: str, **kw) -> AgentProcess:
        agent = self.spawn_server(name, **kw).wait()
        self.servers[name] = agent
        return agent

    def spawn_server(self, name: str, **kw) -> Starting:
        return spawn(*self.server_flags(name, **kw), dev=False)

    def start_client(self, name: str) -> AgentProcess:
        agent = self.spawn_client(name).wait()
        self.clients[name] = agent
        return agent

    def spawn_client(self, name: str) -> Starting:
        return spawn("-node", name, "-bind", self.addr(name), "-client", self.addr(name),
                     "-data-dir", os.path.join(self.tmp, name), "-retry-join", self.addr("s1"),
                     "-retry-join", self.addr("s2"), "-retry-interval", "1s", *self.extra, dev=False)

    def start_together(self, servers: tuple[str, ...] = (), clients: tuple[str, ...] = ()) -> None:
        """Start several agents at once and wait for all of them: their start-ups overlap."""
        starting = {n: self.spawn_server(n) for n in servers}
        starting.update({n: self.spawn_client(n) for n in clients})
        for name, pending in starting.items():
            try:
                agent = pending.wait()
            except BaseException:
                for other in starting.values():  # leave none of the others behind
                    if other.proc.poll() is None:
                        other.proc.kill()
                raise
            (self.servers if name in servers else self.clients)[name] = agent

    def all(self) -> dict[str, AgentProcess]:
        return {**self.servers, **self.clients}

    def running(self) -> dict[str, AgentProcess]:
        return {k: v for k, v in self.all().items() if v.proc.poll() is None}

    def url(self, name: str, path: str) -> tuple[int, dict, bytes]:
        return self.all()[name].request("GET", path)

    def leader(self) -> str:
        def find() -> str | None:
            for agent in self.servers.values():
                if agent.proc.poll() is not None:
                    continue
                try:
                    status, _, body = agent.request("GET", "/v1/status/leader", timeout=2)
                except OSError:
                    continue
                addr = body.decode().strip('"').rsplit(":", 1)[0]
                if status == 200 and addr:
                    for n in self.servers:
                        if self.addr(n) == addr and self.servers[n].proc.poll() is None:
                            return n
            return None
        return wait_until(find, timeout=15)

    def wait_converged(self, timeout: float = 15) -> None:
        """Every server lists every agent as alive and every agent has a synced node in the catalog."""
        import json

        names = sorted(self.running())

        def converged() -> bool:
            for agent in self.servers.values():
                if agent.proc.poll() is not None:
                    continue
                try:
                    status, _, body = agent.request("GET", "/v1/agent/members", timeout=2)
                    members = {m["Name"]: m["Status"] for m in json.loads(body)}
                    status2, _, body2 = agent.request("GET", "/v1/catalog/nodes?stale", timeout=2)
                    nodes = {n["Node"] for n in json.loads(body2)}
                except (OSError, ValueError):
                    return False
                if status != 200 or status2 != 200:
                    return False
                if any(members.get(n) != 1 for n in names) or not set(names) <= nodes:
                    return False
            return True

        wait_until(converged, timeout=timeout)

    def signal(self, name: str, sig: int) -> None:
        """Signal an agent's whole process group (the agent and the etcd member it supervises) and its
        Serf children (in sessions of their own), as a paused or crashed machine would be."""
        pid = self.all()[name].proc.pid
        children = _children(pid)
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
        for child in children:
            try:
                os.kill(child, sig)
            except OSError:
                pass

    def stop_all(self) -> None:
        for name, agent in self.all().items():
            if agent.proc.poll() is None:
                self.signal(name, signal.SIGCONT)
                agent.stop(signal.SIGKILL)


def start_cluster(tmp_path, clients: int = 2, extra: tuple[str, ...] = ()) -> Cluster:
    c = Cluster(str(tmp_path), _block(), extra)
    try:
        c.start_together(servers=("s1", "s2", "s3"))
        c.leader()
        c.start_together(clients=tuple(f"c{i}" for i in range(1, clients + 1)))
        c.wait_converged()
    except BaseException:
        for name, agent in c.all().items():  # what each agent said, for the failure report
            print(f"== {name}\n" + "\n".join(agent.lines[-15:]))
        c.stop_all()  # a fixture that fails in setup gets no teardown: leave no agents behind
        raise
    return c


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path)
    yield c
    c.stop_all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def external_etcd_servers(tmp_path, names: tuple[str, ...]) -> Iterator[list[AgentProcess]]:
    """A one-member etcd the test runs itself, and one ``-server`` agent per name using it through
    ``-etcd-endpoints`` (no member of their own), each on its own loopback address."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    cport, pport = _free_port(), _free_port()
    etcd = subprocess.Popen(
        ["etcd", "--name", "ext", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{cport}", "--advertise-client-urls", f"http://127.0.0.1:{cport}",
         "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"ext=http://127.0.0.1:{pport}", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents: list[AgentProcess] = []
    try:
        block = _block()
        for i, name in enumerate(names, 1):
            agents.append(launch("-server", "-node", name, "-data-dir", str(tmp_path / name),
                                 "-bind", f"{block}.{i}", "-client", f"{block}.{i}",
                                 "-etcd-endpoints", f"http://127.0.0.1:{cport}", dev=False))
        yield agents
    finally:
        for x in agents:
            x.stop()
        etcd.kill()
        etcd.wait(10)
