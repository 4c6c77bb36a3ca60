"""The leader's duties over gossip membership, as Consul's leader does them.

Rules (pure functions in :mod:`beacon.gossip.reconcile`, applied by :class:`Reconciler` on the consensus
leader only, which adds the guard that only a member this server has listed can have been reaped):

* an ``alive`` member: its node is registered with ``serfHealth`` passing (servers also get the
  ``consul`` service on the server port);
* a ``failed`` member: ``serfHealth`` goes critical, so its services leave DNS and ``?passing``;
* a ``left`` member: its node is deregistered (a server is also removed from etcd's membership);
* a member Serf reaped (failed past ``reconnect_timeout``, or left past the tombstone time) no longer
  appears in the member list: a catalog node that carries ``serfHealth`` but is no member is
  deregistered (Consul's reconcileReaped).
* autopilot ``cleanup_dead_servers``: a server ``failed`` for longer than ``reconnect_timeout`` is
  removed from etcd's membership (and the node deregistered), so the others' quorum stops counting it,
  unless the replicated autopilot configuration (:mod:`beacon.server.autopilot`) says otherwise:
  ``CleanupDeadServers`` false keeps every dead server, ``MinQuorum`` N keeps one whose removal would
  leave fewer than N.

Events are at-most-once (a restarted Serf child, a leadership change), so the reconciler runs a full
pass over the member list whenever a member event arrives and at least every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from beacon.gossip.reconcile import CatalogNode, Deregister, Register, dead_servers, full_pass
from beacon.model import SERF_CHECK_ID, SERF_CHECK_NAME
from beacon.server import commands as cmd

if TYPE_CHECKING:
    from beacon.agent.agent import Agent
    from beacon.agent.cluster import Cluster
    from beacon.gossip import Member

log = logging.getLogger("beacon.reconcile")

FULL_PASS_EVERY = 5.0


def catalog_view(store: Any, names: Iterable[str] = ()) -> dict[str, CatalogNode]:
    """What the catalog holds for the nodes the reconcile rules can act on (the members' ``names``
    and every node with a ``serfHealth`` check), in the shape the rules compare against. Not every
    node: a catalog of 10,000 nodes registered through the API took the leader's loop 0.1-0.5 s a pass."""
    out: dict[str, CatalogNode] = {}
    with store.lock:
        stale = set()
        wanted = {n.lower() for n in names}
        for key in wanted | store.serf_nodes:
            node = store.nodes.get(key)
            serf = store.checks.get((key, SERF_CHECK_ID))
            if serf is None:
                stale.add(key)
            if node is None or (serf is None and key not in wanted):
                continue
            consul = store.services.get((key, "consul"))
            out[node.node] = CatalogNode(address=node.address, serf_health=serf.status if serf else None,
                                         consul_service_port=consul.port if consul else None)
        store.serf_nodes -= stale  # a superset the store never shrinks itself (see StateStore.serf_nodes)
    return out


def register_command(action: Register, node: Any) -> cmd.Register:
    """The REGISTER command for a reconcile rule's Register (node metadata kept)."""
    payload: dict[str, Any] = {
        "node": action.node, "address": action.address, "id": action.node_id, "datacenter": action.datacenter,
        "skip_node_update": node is not None and node.address == action.address,
        "checks": [{"check_id": SERF_CHECK_ID, "name": SERF_CHECK_NAME, "status": action.serf_health,
                    "output": action.output}],
    }
    if node is not None:
        payload["node_meta"] = dict(node.meta)
    if action.consul_service_port is not None:
        payload["service"] = {"id": "consul", "service": "consul", "port": action.consul_service_port}
    return cmd.Register(**payload)


class Reconciler:
    def __init__(self, agent: Agent, cluster: Cluster) -> None:
        self.agent = agent
        self.cluster = cluster
        self._wake = asyncio.Event()
        self.failed_since: dict[str, float] = {}   # server name -> when this server first saw it failed
        self.removed: dict[str, float] = {}         # autopilot's removals: name -> when
        self.held: dict[str, str] = {}              # dead servers autopilot's configuration keeps: name -> why
        # Members this server's gossip has listed: only those can have been reaped. (A leader whose
        # Serf has not rejoined yet lists only itself; that must not deregister everyone.)
        self.seen: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    def is_leader(self) -> bool:
        return self.agent.consensus.is_leader()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FULL_PASS_EVERY)
            except TimeoutError:
                pass
            self._wake.clear()
            self._track_failures()
            if not self.is_leader():
                continue
            try:
                await self.reconcile()
            except Exception as exc:  # the next event or pass retries
                log.warning("reconcile failed: %s", exc)
                await asyncio.sleep(0.5)

    def _track_failures(self) -> None:
        now = time.monotonic()
        failed = {m.name for m in self.cluster.servers(alive_only=False) if m.status == "failed"}
        for name in failed:
            self.failed_since.setdefault(name, now)
        for name in list(self.failed_since):
            if name not in failed:
                del self.failed_since[name]

    async def reconcile(self) -> None:
        cfg = self.agent.config
        store = self.agent.store
        members = dict(self.cluster.members)
        self.seen.update(n.lower() for n in members)
        now = time.monotonic()
        dead = set(dead_servers(members.values(), {n: now - t for n, t in self.failed_since.items()},
                                cfg.reconnect_timeout, cfg.datacenter))
        for m in members.values():
            if m.tags.get("role") == "consul" and m.tags.get("dc") == cfg.datacenter and m.name != cfg.node_name:
                await self._autopilot(m, m.name in dead)
        for action in full_pass(members.values(), catalog_view(store, members), cfg.datacenter, cfg.node_name):
            if isinstance(action, Deregister):
                if action.reason == "reaped" and action.node.lower() not in self.seen:
                    continue  # never listed by this server's gossip: not evidence of a reap
                log.info("member %s %s: deregistering its node", action.node, action.reason)
                await self._submit(cmd.Deregister(node=action.node))
                self.seen.discard(action.node.lower())
            elif action.node not in self.removed:  # autopilot removed it; it comes back alive
                await self._submit(register_command(action, store.get_node(action.node)))

    async def _autopilot(self, m: Member, dead: bool) -> None:
        """Remove a server from etcd once it left, or once it is dead past reconnect_timeout."""
        if m.status == "alive":
            self.removed.pop(m.name, None)
            return
        if not (m.status == "left" or dead):
            return
        dead_for = time.monotonic() - self.failed_since.get(m.name, time.monotonic())
        raft = self.agent.raft
        addr = self.cluster.peer_addr(m)
        if m.status == "failed" and not self._may_prune(m.name, len(raft.peers()) if raft is not None else 0):
            return
        if raft is not None and addr in raft.peers() and m.name not in self.removed:
            log.warning("autopilot: removing server %s (%s, %s for %.0fs) from the consensus membership",
                        m.name, addr, m.status, dead_for)
            try:
                await raft.remove_server(addr)
            except Exception as exc:
                log.warning("autopilot: removing %s: %s", addr, exc)
                return
        if m.status == "failed":
            self.removed[m.name] = time.monotonic()
            if self.agent.store.get_node(m.name) is not None:
                await self._submit(cmd.Deregister(node=m.name))

    def _may_prune(self, name: str, voters: int) -> bool:
        """The replicated autopilot configuration lets a dead server go: CleanupDeadServers is on and
        at least MinQuorum servers would remain (Consul's rules; a server that left is removed
        regardless, as its leave asked)."""
        config = self.agent.autopilot_config()
        why = ""
        if not config["CleanupDeadServers"]:
            why = "CleanupDeadServers is false"
        elif config["MinQuorum"] and name not in self.removed and voters - 1 < config["MinQuorum"]:
            why = f"it would leave {voters - 1} servers, fewer than MinQuorum {config['MinQuorum']}"
        if why and self.held.get(name) != why:
            log.warning("autopilot: keeping dead server %s: %s", name, why)
        if why:
            self.held[name] = why
        else:
            self.held.pop(name, None)
        return not why

    async def _submit(self, command: cmd.Record) -> None:
        result = await self.agent.submit(command)
        if result.error is not None:
            raise result.error

    # ------------------------------------------------------------------ autopilot API views
    def server_health(self) -> list[dict[str, Any]]:
        raft = self.agent.raft
        peers = set(raft.peers()) if raft is not None else set()
        leader = self.cluster.current_leader()
        now = time.monotonic()
        out = []
        for m in sorted(self.cluster.servers(alive_only=False), key=lambda m: m.name):
            addr = self.cluster.peer_addr(m)
            if self.agent.mode != "single" and addr not in peers:
                continue
            since = self.failed_since.get(m.name)
            out.append({"ID": m.tags.get("id", ""), "Name": m.name, "Address": addr,
                        "SerfStatus": m.status, "Version": m.tags.get("build", ""), "Leader": m.name == leader,
                        "Voter": True, "Healthy": m.status == "alive",
                        "StableSince": "" if since is None else f"{now - since:.0f}s ago",
                        "LastContact": "0s", "LastTerm": 0, "LastIndex": self.agent.store.index})
        return out
