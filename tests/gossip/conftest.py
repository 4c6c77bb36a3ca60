"""Real Serf agents for the gossip tests: each member on its own loopback address (127.A.B.x) with
ports the kernel reports free, its own data dir, and the same gossip key."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from beacon.gossip import Membership, SerfConfig
from beacon.gossip.supervisor import free_port

# Test modules that start serf put `pytestmark = needs_serf` at their top (a conftest's own pytestmark
# does not apply to them).
needs_serf = pytest.mark.skipif(shutil.which("serf") is None, reason="needs the serf binary (apt-get install serf)")

# One random 127.A.B.0/24 per test session, so parallel sessions of other helpers rarely share addresses
# (ports are checked free anyway).
_NET = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
_next_host = [10]


def next_addr() -> str:
    _next_host[0] += 1
    if _next_host[0] > 250:
        _next_host[0] = 11
    return f"{_NET}.{_next_host[0]}"


def new_key(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 30.0, interval: float = 0.1,
                   what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)


class Pool:
    """Members started by one test; all stopped at the end."""

    def __init__(self, tmp: str, key: str) -> None:
        self.tmp = tmp
        self.key = key
        self.members: list[Membership] = []

    async def add(self, name: str | None = None, *, join: bool = True, key: str | None = None, restart: bool = False,
                  tags: dict[str, str] | None = None, data_dir: str | None = None, addr: str | None = None,
                  port: int | None = None) -> Membership:
        name = name or f"n{len(self.members) + 1}"
        addr = addr or next_addr()
        cfg = SerfConfig(node_name=name, data_dir=data_dir or os.path.join(self.tmp, name), bind_addr=addr,
                         port=port or free_port(addr, udp=True), encrypt=self.key if key is None else key,
                         tags=dict(tags or {"role": "node", "dc": "dc1"}))
        m = await Membership.start_pool(cfg, datacenter="dc1")
        m.serf.restart = restart
        self.members.append(m)
        if join and len(self.members) > 1:
            first = self.members[0].serf.config
            await m.join([f"{first.bind_addr}:{first.port}"])
        return m

    async def converge(self, timeout: float = 30.0) -> None:
        names = {m.node_name for m in self.members}

        async def all_see_all() -> bool:
            for m in self.members:
                alive = {x.name for x in await m.members() if x.status == "alive"}
                if not names <= alive:
                    return False
            return True

        await wait_for(all_see_all, timeout, what="every member sees every other alive")

    async def close(self) -> None:
        for m in self.members:
            try:
                await m.stop()
            except Exception:
                pass


@pytest.fixture
async def pool(tmp_path) -> AsyncIterator[Pool]:
    p = Pool(str(tmp_path), new_key())
    yield p
    await p.close()
