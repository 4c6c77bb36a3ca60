"""What only cluster servers do: start (or find) etcd and present it as the agent's Consensus.

* ``-etcd-endpoints``: use that etcd cluster; this agent starts no member.
* Otherwise the agent supervises one etcd member (:mod:`beacon.server.etcd_member`):
  - with data in ``<data-dir>/etcd`` (any restart) it just starts it: etcd knows its cluster, so
    restarting every server, in any order, needs no manual step;
  - when some server already runs a cluster, it asks one over the cluster RPC (``raft_add``) to add
    it with etcd's MemberAdd, then starts with ``--initial-cluster-state existing``;
  - otherwise it waits until gossip lists ``-bootstrap-expect`` servers (``-retry-join`` joins the
    Serf pool) and all of them start a new cluster from the same sorted list.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from beacon.server.consensus import NoLeaderError
from beacon.server.fsm import ApplyResult, Command

if TYPE_CHECKING:
    from beacon.agent.agent import Agent
    from beacon.server.etcd_member import TLSFiles

log = logging.getLogger("beacon.agent")


def tls_files(agent: Agent) -> TLSFiles | None:
    """The TLS material for etcd: explicit files, or derived from the cluster key, or none."""
    from beacon.server.etcd_member import TLSFiles, derive_tls

    cfg = agent.config
    if cfg.etcd_ca_file:
        return TLSFiles(cfg.etcd_ca_file, cfg.etcd_cert_file, cfg.etcd_key_file)
    if cfg.encrypt and not cfg.etcd_endpoints:
        return derive_tls(cfg.encrypt, os.path.join(cfg.data_dir, "etcd-tls"),
                          [cfg.bind_addr, cfg.advertise, "127.0.0.1"])
    return None


def _names(initial: Any, raft_addr: str) -> bool:
    """True when ``initial`` is a peer's [initial-cluster, "new", token] that lists ``raft_addr``."""
    if not isinstance(initial, list) or len(initial) != 3 or not isinstance(initial[0], str):
        return False
    urls = (part.partition("=")[2] for part in initial[0].split(","))
    return any(url.split("://", 1)[-1] == raft_addr for url in urls)


class EtcdBootstrap:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def run(self) -> None:
        try:
            await self.bootstrap()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("the server's consensus failed to start, shutting down: %s", exc)
            self.agent.fatal_error = str(exc)
            self.agent.shutdown_requested.set()

    async def bootstrap(self) -> None:
        from beacon.server.etcd_client import EtcdClient
        from beacon.server.etcd_log import EtcdConsensus
        from beacon.server.etcd_member import EtcdMember

        agent = self.agent
        cfg = agent.config
        assert agent.cluster is not None
        tls = tls_files(agent)
        ctx = tls.client_context() if tls is not None else None
        if cfg.etcd_endpoints:
            client = EtcdClient(cfg.etcd_endpoints, ctx)
        else:
            member = EtcdMember(cfg.node_name, cfg.data_dir, cfg.bind_addr, cfg.advertise, cfg.server_port,
                                tls, cfg.etcd_bin)
            agent.etcd_member = member
            if member.has_data():
                log.info("restarting the etcd member from %s", member.dir)
                await member.start()
            else:
                initial, state, token = await self.discover(member.scheme)
                agent.etcd_initial = (initial, state, token)
                log.info("starting the etcd member (%s cluster): %s", state, initial)
                await member.start(initial, state, token)
            client = EtcdClient([member.client_url], ctx)

            def follow_port() -> None:  # a restarted member listens on a new loopback port
                client.endpoints[0] = member.client_url
            member.on_restart.append(follow_port)

            def removed() -> None:  # removed by remove-peer while it was down, say: say so and stop
                if agent.cluster is not None and not agent.cluster.left:
                    agent.fatal_error = (f"this server's etcd member was removed from the cluster; to join again, "
                                         f"stop the agent, delete {member.dir} and start it")
                    agent.shutdown_requested.set()
            member.on_removed = removed
        consensus = EtcdConsensus(agent.store, client, cfg.datacenter, cfg.node_name, agent.cluster.raft_addr,
                                  hold_timeout=agent.hold_timeout, snapshot_threshold=cfg.raft_snapshot_threshold,
                                  peer_scheme="https" if tls is not None else "http")
        await consensus.start()
        agent.raft = consensus
        agent.raft_ready.set()
        agent.local.trigger_full_sync()

    async def discover(self, scheme: str) -> tuple[str, str, str]:
        """Wait for a running cluster to join, or for -bootstrap-expect servers to form one. Servers are
        the ones gossip lists (``-retry-join`` joins the Serf pool); each is asked over the server RPC."""
        from beacon.agent.cluster import RPCError

        agent = self.agent
        cluster = agent.cluster
        assert cluster is not None
        cfg = agent.config
        me = cluster.raft_addr
        while True:
            await cluster.refresh()
            peers = [m for m in cluster.servers() if m.name != cfg.node_name]
            hellos = await asyncio.gather(*(cluster.call(cluster.rpc_target(m), "hello", {}) for m in peers),
                                          return_exceptions=True)
            running = []
            for m, h in zip(peers, hellos, strict=True):
                if isinstance(h, BaseException):
                    continue
                if _names(h.get("initial"), me):
                    # A peer already started the new cluster and this server is in it: start the same
                    # one. (Asking that peer to MemberAdd us instead would wait for a quorum that
                    # needs us.)
                    initial, state, token = h["initial"]
                    return str(initial), str(state), str(token)
                if h.get("raft_running"):
                    running.append(m)
            for peer in running:
                try:
                    out = await cluster.call(cluster.rpc_target(peer), "raft_add", {"raft_addr": me}, timeout=15)
                except RPCError as exc:
                    log.info("joining through %s: %s", peer.name, exc)
                    continue
                parts = []
                for i, m in enumerate(out["members"]):
                    for url in m.get("peerURLs", [])[:1]:
                        is_me = url.split("://", 1)[-1] == me
                        parts.append(f"{cfg.node_name if is_me else (m.get('name') or f'unstarted{i}')}={url}")
                return ",".join(parts), "existing", ""
            expect = str(cfg.bootstrap_expect)
            servers = sorted([(cluster.peer_addr(m), m.name) for m in cluster.servers()
                              if m.tags.get("expect", "0") == expect], key=lambda x: x[0])
            if cfg.bootstrap_expect and len(servers) >= cfg.bootstrap_expect:
                chosen = servers[:cfg.bootstrap_expect]
                if me in {addr for addr, _ in chosen}:
                    initial = ",".join(f"{name}={scheme}://{addr}" for addr, name in chosen)
                    token = f"beacon-{cfg.datacenter}-{hashlib.sha256(initial.encode()).hexdigest()[:12]}"
                    return initial, "new", token
            await asyncio.sleep(0.3)


class ServerConsensus:
    """A cluster server's consensus before and after its etcd log is running."""

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
            try:
                await asyncio.wait_for(self.agent.raft_ready.wait(), self.agent.hold_timeout)
            except TimeoutError:
                raise NoLeaderError() from None
            raft = self.agent.raft
        return await raft.submit(command)

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
