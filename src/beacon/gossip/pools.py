"""An agent's gossip pools in one object: the LAN pool on every agent, the WAN pool on servers, the
joins (`-join`, `-retry-join`, `-join-wan`, `-retry-join-wan`) and the shutdown, as Consul runs them.

This is step 2 of the integration plan in ``beacon/gossip/__init__.py``: the agent builds a
:class:`GossipSettings` from its config (``GossipSettings.from_agent_config``) and calls
``await Gossip.start(settings)``; ``gossip.lan`` and ``gossip.wan`` are the :class:`Membership` facades
the endpoints and the leader use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any

from beacon.gossip.membership import Membership
from beacon.gossip.rpc import SerfError
from beacon.gossip.supervisor import LAN_PORT, WAN_PORT, SerfConfig, SerfNotFound, find_serf
from beacon.gossip.tags import consul_tags, wan_member_name
from beacon.numbers import ascii_int

log = logging.getLogger("beacon.gossip")

TMP_PREFIX = "beacon-gossip-"
OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_stale_tmpdirs(root: str | None = None) -> int:
    """Remove the temporary gossip directories of agents that died without cleaning up (``kill -9``
    of a ``-dev`` agent leaves its serf snapshots behind). A directory is stale when the pid in its
    owner file is no longer running; one without an owner file (being created, or from an older
    version) is left alone. Returns how many were removed."""
    root = root or tempfile.gettempdir()
    removed = 0
    try:
        names = [n for n in os.listdir(root) if n.startswith(TMP_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(root, name)
        try:
            with open(os.path.join(path, OWNER_FILE), "rb") as f:
                pid = ascii_int(f.read(32).strip().decode("ascii", "replace"), max_digits=10)
        except OSError:
            continue
        if pid is None or _pid_alive(pid):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():  # only our own directories
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d gossip directories left by agents that no longer run", removed)
    return removed


@dataclass
class GossipSettings:
    node_name: str
    node_id: str
    datacenter: str = "dc1"
    data_dir: str = ""                 # empty: a temporary directory (-dev)
    bind_addr: str = "127.0.0.1"
    advertise_addr: str = ""
    lan_port: int = LAN_PORT
    wan_port: int = WAN_PORT
    server: bool = False
    server_port: int = 8300
    bootstrap_expect: int = 0
    bootstrap: bool = False
    encrypt: str = ""
    serf_bin: str | None = None
    rejoin: bool = False
    reconnect_timeout: float = 72 * 3600.0
    join: list[str] = field(default_factory=list)            # -join: must succeed at start
    retry_join: list[str] = field(default_factory=list)      # -retry-join: retried in the background
    join_wan: list[str] = field(default_factory=list)
    retry_join_wan: list[str] = field(default_factory=list)
    retry_interval: float = 30.0
    extra_tags: dict[str, str] = field(default_factory=dict)  # e.g. {"http_port": ...} for HTTP forwarding
    dev: bool = False
    profile: str = ""

    @classmethod
    def from_agent_config(cls, cfg: Any, node_id: str, **overrides: Any) -> GossipSettings:
        """From an AgentConfig; options the config does not have yet keep their defaults."""
        def opt(name: str, default: Any) -> Any:
            return getattr(cfg, name, default)

        values: dict[str, Any] = dict(
            node_name=cfg.node_name, node_id=node_id, datacenter=cfg.datacenter, data_dir=cfg.data_dir,
            bind_addr=cfg.bind_addr, advertise_addr=cfg.advertise_addr, lan_port=cfg.serf_lan_port,
            wan_port=opt("serf_wan_port", WAN_PORT), server=cfg.server, server_port=cfg.server_port,
            bootstrap_expect=cfg.bootstrap_expect, bootstrap=opt("bootstrap", False), encrypt=cfg.encrypt,
            serf_bin=opt("serf_bin", "") or None, rejoin=opt("rejoin", False),
            reconnect_timeout=cfg.reconnect_timeout, join=list(opt("start_join", [])),
            retry_join=list(cfg.retry_join), join_wan=list(opt("join_wan", [])),
            retry_join_wan=list(opt("retry_join_wan", [])), retry_interval=opt("retry_interval", 30.0),
            dev=cfg.dev)
        values.update(overrides)
        return cls(**values)


class Gossip:
    """The running pools. ``lan`` always; ``wan`` on servers."""

    def __init__(self, settings: GossipSettings, lan: Membership, wan: Membership | None,
                 tmpdir: tempfile.TemporaryDirectory[str] | None) -> None:
        self.settings = settings
        self.lan = lan
        self.wan = wan
        self._tmpdir = tmpdir
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, settings: GossipSettings) -> Gossip | None:
        """Start the pools and the joins. Without a serf binary: None under -dev (after logging the
        one line saying what to install), else SerfNotFound with that line."""
        try:
            find_serf(settings.serf_bin)
        except SerfNotFound as exc:
            if settings.dev:
                log.warning("%s; running as a single node without gossip", exc)
                return None
            raise
        s = settings
        tmpdir = None
        data_dir = s.data_dir
        if not data_dir:
            sweep_stale_tmpdirs()
            tmpdir = tempfile.TemporaryDirectory(prefix=TMP_PREFIX)
            data_dir = tmpdir.name
            with open(os.path.join(data_dir, OWNER_FILE), "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        common = dict(data_dir=data_dir, bind_addr=s.bind_addr, advertise_addr=s.advertise_addr, encrypt=s.encrypt,
                      serf_bin=s.serf_bin, rejoin_after_leave=s.rejoin, profile=s.profile,
                      reconnect_timeout=f"{max(int(s.reconnect_timeout), 1)}s",
                      user_event_size_limit=1024)  # Consul's 512-byte event plus its msgpack envelope
        tag_args = dict(server=s.server, datacenter=s.datacenter, node_id=s.node_id, server_port=s.server_port,
                        bootstrap_expect=s.bootstrap_expect, bootstrap=s.bootstrap, extra=s.extra_tags)
        configs = [SerfConfig(node_name=s.node_name, port=s.lan_port, pool="lan", tags=consul_tags(**tag_args),
                              **common)]
        if s.server:
            configs.append(SerfConfig(node_name=wan_member_name(s.node_name, s.datacenter), port=s.wan_port,
                                      pool="wan", tags=consul_tags(wan=True, **tag_args), **common))
        # Both children start at once: an agent's start (and its restart after a crash) waits for them.
        started = await asyncio.gather(*(Membership.start_pool(c, datacenter=s.datacenter) for c in configs),
                                       return_exceptions=True)
        failed = [x for x in started if isinstance(x, BaseException)]
        if failed:
            for x in started:
                if isinstance(x, Membership):
                    await x.stop()
            if tmpdir is not None:
                tmpdir.cleanup()
            raise failed[0]
        lan = started[0]
        wan = started[1] if s.server else None
        assert isinstance(lan, Membership) and (wan is None or isinstance(wan, Membership))
        g = cls(s, lan, wan, tmpdir)
        try:
            if s.join:
                await g.join(s.join)
            if s.join_wan and wan is not None:
                await g.join(s.join_wan, wan=True)
        except BaseException:
            await g.stop()
            raise
        if s.retry_join:
            g._tasks.append(asyncio.get_running_loop().create_task(g._retry(s.retry_join, False), name="retry-join"))
        if s.retry_join_wan and wan is not None:
            g._tasks.append(asyncio.get_running_loop().create_task(g._retry(s.retry_join_wan, True),
                                                                   name="retry-join-wan"))
        return g

    def pool(self, wan: bool = False) -> Membership:
        if wan:
            if self.wan is None:
                raise SerfError("this agent is not a server: it has no WAN pool")
            return self.wan
        return self.lan

    async def join(self, addresses: list[str], wan: bool = False) -> int:
        """Join through `addresses`; raises SerfError when none answered (Consul's -join exits then)."""
        return await self.pool(wan).join(addresses)

    async def _retry(self, addresses: list[str], wan: bool) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                n = await self.join(addresses, wan)
                log.info("gossip %s: joined %d of %s (attempt %d)", "wan" if wan else "lan", n, addresses, attempt)
                return
            except SerfError as exc:
                log.warning("gossip %s: join %s failed: %s; retrying in %.0fs", "wan" if wan else "lan",
                            addresses, exc, self.settings.retry_interval)
            await asyncio.sleep(self.settings.retry_interval)

    async def retry_joins_done(self) -> None:
        """Wait until the -retry-join / -retry-join-wan attempts have succeeded (at once without any)."""
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(t)

    async def stop(self, leave: bool = False) -> None:
        """Stop the pools; with `leave`, leave them gracefully first (WAN first, as Consul's servers)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for m in (self.wan, self.lan):
            if m is not None:
                try:
                    await m.stop(leave=leave)
                except SerfError as exc:
                    log.warning("gossip: stopping %s: %s", m.serf.config.pool, exc)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
