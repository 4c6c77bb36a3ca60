"""The heartbeat membership scheme (agent/cluster.py before the swap to Serf) as a benchmark anchor:
3 Beacon servers and K clients, each a real `beacon agent` process on its own loopback address.

The scheme is gone from the tree; bench/membership.py runs it from git history: the sources of
HEARTBEAT_COMMIT (the last commit with it) are extracted with `git archive` into the run's temp dir
and the agents run that code (PYTHONPATH), in the same run as the gossip agents. Every agent's
membership traffic is its TCP traffic to or from port 8301 (the heartbeat RPC); etcd (8300), HTTP
and DNS are not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import aiohttp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_PORT = 8301
HEARTBEAT_COMMIT = "77f68ef"  # main before issue 12's swap: membership by heartbeats to every server


def tree_pids(pid: int) -> list[int]:
    """`pid` and its children (a Beacon agent's Serf and etcd children), for CPU and RSS per agent."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [pid, *(int(c) for c in f.read().split())]
    except OSError:
        return [pid]


def heartbeat_sources(tmp: str) -> str:
    """Extract the heartbeat-era sources into `tmp`; returns the directory to put on PYTHONPATH."""
    out = os.path.join(tmp, "heartbeat-src")
    os.makedirs(out, exist_ok=True)
    archive = subprocess.run(["git", "-C", REPO, "archive", HEARTBEAT_COMMIT, "src"], capture_output=True,
                             check=False, timeout=60)
    if archive.returncode != 0:
        raise RuntimeError(f"cannot extract {HEARTBEAT_COMMIT} (needs this repository's git history): "
                           f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", out], input=archive.stdout, check=True, timeout=60)
    return os.path.join(out, "src")


@dataclass
class BeaconAgent:
    name: str
    addr: str
    proc: subprocess.Popen[bytes]
    log_path: str
    http_port: int = 0
    server: bool = False

    @property
    def http(self) -> str:
        return f"http://{self.addr}:{self.http_port}"


@dataclass
class HeartbeatCluster:
    net: str
    tmp: str
    agents: list[BeaconAgent] = field(default_factory=list)
    src: str = ""  # sources to run; "" extracts the heartbeat-era ones (heartbeat_sources)
    extra: tuple[str, ...] = ()  # flags for every agent

    def addr(self, i: int) -> str:
        return f"{self.net}.{10 + i}"

    def _spawn(self, name: str, addr: str, flags: list[str], server: bool) -> BeaconAgent:
        data = os.path.join(self.tmp, name)
        os.makedirs(data, exist_ok=True)
        log_path = os.path.join(data, "agent.log")
        if not self.src:
            self.src = heartbeat_sources(self.tmp)
        env = dict(os.environ, PYTHONPATH=self.src)
        argv = [sys.executable, "-m", "beacon", "agent", "-node", name, "-bind", addr, "-client", addr,
                "-data-dir", data, "-http-port", "0", "-dns-port", "-1", "-log-level", "warn", *self.extra, *flags]
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        agent = BeaconAgent(name, addr, proc, log_path, server=server)
        self.agents.append(agent)
        return agent

    async def _ready(self, agent: BeaconAgent, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(agent.log_path, "rb") as f:
                m = re.search(rb"==> Ready: http_port=(\d+)", f.read())
            if m:
                agent.http_port = int(m.group(1))
                return
            if agent.proc.poll() is not None:
                break
            await asyncio.sleep(0.2)
        with open(agent.log_path, "rb") as f:
            tail = f.read()[-800:].decode(errors="replace")
        raise RuntimeError(f"beacon agent {agent.name} did not start:\n{tail}")

    async def start(self, clients: int, timeout: float = 120.0) -> None:
        seeds = [self.addr(i) for i in range(3)]
        servers = [self._spawn(f"s{i + 1}", self.addr(i), ["-server", "-bootstrap-expect", "3",
                                                           *sum((["-retry-join", s] for s in seeds), [])], True)
                   for i in range(3)]
        await asyncio.gather(*(self._ready(a, timeout) for a in servers))
        cl = [self._spawn(f"c{i + 1}", self.addr(3 + i), ["-retry-join", seeds[0], "-retry-join", seeds[1]], False)
              for i in range(clients)]
        await asyncio.gather(*(self._ready(a, timeout) for a in cl))
        names = {a.name for a in self.agents}

        async def converged() -> bool:
            for s in servers:
                view = await self.members_view(s)
                if view is None or any(view.get(n) != 1 for n in names):
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not await converged():
            if time.monotonic() > deadline:
                raise RuntimeError("heartbeat cluster did not converge")
            await asyncio.sleep(0.5)

    async def members_view(self, agent: BeaconAgent) -> dict[str, int] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                    s.get(agent.http + "/v1/agent/members") as r:
                if r.status != 200:
                    return None
                return {m["Name"]: m["Status"] for m in json.loads(await r.read())}
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def detection(self, victim: BeaconAgent, cap: float) -> tuple[list[float], list[float | None]]:
        """kill -9 `victim`; seconds until each server, and each client (None: not within `cap`), lists it
        failed (Status 4)."""
        others = [a for a in self.agents if a is not victim and a.proc.poll() is None]
        t0 = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()

        async def watch(a: BeaconAgent) -> float | None:
            while time.monotonic() - t0 < cap:
                view = await self.members_view(a)
                if view is not None and view.get(victim.name) == 4:
                    return time.monotonic() - t0
                await asyncio.sleep(0.2)
            return None

        results = await asyncio.gather(*(watch(a) for a in others))
        servers = sorted(r for a, r in zip(others, results, strict=True) if a.server and r is not None)
        clients = [r for a, r in zip(others, results, strict=True) if not a.server]
        return servers, clients

    def stop(self) -> None:
        for a in self.agents:
            if a.proc.poll() is None:
                a.proc.kill()
                a.proc.wait()
