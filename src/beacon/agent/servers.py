"""What only cluster servers do: bootstrap Raft (from persisted peers, by joining a running cluster,
or with the other servers once -bootstrap-expect of them know each other), keep the peer list on disk,
and present Raft as the agent's Consensus before and after it exists."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from beacon.server.consensus import NoLeaderError
from beacon.server.fsm import ApplyResult, Command

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.agent")


class RaftBootstrap:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def peers_file(self) -> str:
        return os.path.join(self.agent.config.data_dir, "raft", "peers.json")

    async def run(self) -> None:
        try:
            await self.bootstrap()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("raft failed, shutting down: %s", exc)
            self.agent.fatal_error = str(exc)
            self.agent.shutdown_requested.set()

    async def bootstrap(self) -> None:
        """Start Raft: from persisted peers after a restart, by joining a running cluster, or together
        with the other servers once -bootstrap-expect of them have found each other."""
        import json as _json

        from beacon.agent.cluster import ALIVE
        from beacon.server.raft import RaftConsensus

        cfg = self.agent.config
        assert self.agent.cluster is not None
        me = self.agent.cluster.me
        partners: list[str] | None = None
        join_running = False
        if os.path.exists(self.peers_file()):
            with open(self.peers_file(), encoding="utf-8") as f:
                partners = _json.load(f)["peers"]
            log.info("restarting raft with persisted peers %s", partners)
        while partners is None:
            await self.agent.cluster.heartbeat_once()
            targets = {m.rpc_addr for m in self.agent.cluster.servers() if m.name != me.name} | set(self.agent.cluster.seeds)
            hellos = await asyncio.gather(*(self.agent.cluster.call(t, "hello", {}) for t in targets),
                                          return_exceptions=True)
            running = [h for h in hellos if not isinstance(h, BaseException) and h.get("raft_running")]
            for h in hellos:
                if not isinstance(h, BaseException):
                    from beacon.agent.cluster import Member

                    self.agent.cluster._observe(Member.from_public(h["member"])[0], seen_at=time.monotonic())
            if running:
                partners = sorted({m.raft_addr for m in self.agent.cluster.servers() if m.status == ALIVE})
                join_running = True
                break
            servers = sorted((m for m in self.agent.cluster.servers() if m.status == ALIVE and m.expect == cfg.bootstrap_expect),
                             key=lambda m: m.raft_addr)
            if cfg.bootstrap_expect and len(servers) >= cfg.bootstrap_expect:
                chosen = servers[:cfg.bootstrap_expect]
                if me.raft_addr in {m.raft_addr for m in chosen}:
                    partners = [m.raft_addr for m in chosen]
                    log.info("bootstrapping raft with %s", partners)
                    break
            await asyncio.sleep(0.3)
        raft = RaftConsensus(self.agent.store, me.raft_addr, partners, cfg.data_dir, self.agent.node_id, cfg.node_name,
                             password=cfg.encrypt or None)
        for m in self.agent.cluster.members.values():
            if m.server:
                raft.names[m.raft_addr] = m.name
        await raft.start()
        self.agent.raft = raft
        self.agent.raft_ready.set()
        if join_running:
            while me.raft_addr not in await self.ask_leader_to_add(me.raft_addr):
                await asyncio.sleep(0.5)
        self.persist_peers(raft.peers())
        self.agent.local.trigger_full_sync()
        while True:
            await asyncio.sleep(1.0)
            self.persist_peers(raft.peers())

    async def ask_leader_to_add(self, raft_addr: str) -> list[str]:
        from beacon.agent.cluster import RPCError

        assert self.agent.cluster is not None
        for m in self.agent.cluster.servers():
            if m.name == self.agent.cluster.me.name:
                continue
            try:
                return list(await self.agent.cluster.call(m.rpc_addr, "raft_add", {"raft_addr": raft_addr}, timeout=12))
            except RPCError:
                continue
        return []

    def persist_peers(self, peers: list[str]) -> None:
        import json as _json

        from beacon.server.durable import atomic_write

        path = self.peers_file()
        data = _json.dumps({"peers": sorted(peers)}).encode()
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, data)



class ServerConsensus:
    """A cluster server's consensus before and after Raft has bootstrapped."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.store = agent.store

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit(self, command: Command) -> ApplyResult:
        raft = self.agent.raft
        if raft is None:
            raise NoLeaderError()
        from beacon.server.raft import IndeterminateError

        try:
            return await raft.submit(command)
        except IndeterminateError as exc:
            raise NoLeaderError(str(exc)) from None

    def is_leader(self) -> bool:
        return self.agent.raft is not None and self.agent.raft.is_leader()

    def known_leader(self) -> bool:
        return self.agent.raft is not None and self.agent.raft.known_leader()

    def leader_address(self) -> str:
        return self.agent.raft.leader_address() if self.agent.raft is not None else ""

    def peers(self) -> list[str]:
        return self.agent.raft.peers() if self.agent.raft is not None else []

    def last_contact_ms(self) -> int:
        return self.agent.raft.last_contact_ms() if self.agent.raft is not None else 0

    def configuration(self) -> list[dict[str, Any]]:
        return self.agent.raft.configuration() if self.agent.raft is not None else []
