"""Leader duties and membership for the etcd log (:class:`beacon.server.etcd_log.EtcdConsensus`).

Beacon's leader (session expiry, reaping, membership reconciliation, snapshots, clock ticks) is the
server holding the ``leader`` key under its etcd lease: a server that finds the key absent creates it
in a txn (``create_revision == 0``) attached to a lease of ``lease_ttl`` seconds and keeps the lease
alive; it is the leader while its last renewal is younger than the TTL minus a margin.
``/v1/status/leader`` reports it. Transfer-leader hands the key over with a note; the co-location
rule keeps the duties off the server whose member is the etcd leader. Membership is etcd's member
list (``/v1/operator/raft/configuration``, join and remove-peer).

A mixin: the state lives on the consensus object (its ``__init__``), which also provides
``_leader_duties`` (what the leader does each round, on the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from beacon.server.consensus import NoLeaderError
from beacon.server.etcd_client import KV, EtcdClient, EtcdError, EtcdUnavailable, b64

log = logging.getLogger("beacon.etcd")

HANDOFF_TTL = 5     # seconds a transfer-leader's note holds the leader key for its target


class LeaderAndMembers:
    """The leader election, transfer-leader and etcd membership half of the etcd consensus."""

    client: EtcdClient
    leader_key: bytes
    node_name: str
    self_addr: str
    lease_ttl: int
    peer_scheme: str
    leader: dict[str, str] | None
    leader_changes: int
    names: dict[str, str]
    members: list[dict[str, Any]]
    _lease: int
    _leader_until: float
    _leader_since: float
    _absent_since: float
    _handed_off_until: float
    _chosen: bool
    _took_late: bool
    _last_ok: float
    _last_members: float

    async def _leader_duties(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ leader election
    async def _leader_loop(self) -> None:
        while True:
            try:
                await self._leader_round()
            except asyncio.CancelledError:
                raise
            except (EtcdUnavailable, EtcdError) as exc:
                log.debug("leader round: %s", exc)
            except Exception:
                log.exception("leader round failed")
            await asyncio.sleep(0.2 if not self.is_leader() else self.lease_ttl / 5)

    async def _leader_round(self) -> None:
        t0 = time.monotonic()
        if t0 - self._last_members > 2.0:
            await self.refresh_members()
        if self._lease and self.is_leader():
            ttl = await self.client.lease_keepalive(self._lease)
            if ttl > 0:
                self._leader_until = t0 + min(ttl, self.lease_ttl) - 0.5
                self._last_ok = time.monotonic()
                if await self._co_located_too_long():
                    return
                await self._leader_duties()
                return
            self._lease = 0
        _, kv = await self.client.get(self.leader_key)
        self._last_ok = time.monotonic()
        if kv is None and self._absent_since == 0.0:
            self._absent_since = t0
        if kv is not None:
            self._absent_since = 0.0
        elif t0 - self._absent_since < 1.0 and len(self.members) > 1 and await self._member_is_etcd_leader():
            return  # let a server whose member is an etcd follower take it (see _co_located_too_long)
        if kv is None:
            lease = await self.client.lease_grant(self.lease_ttl)
            value = json.dumps({"name": self.node_name, "addr": self.self_addr}).encode()
            ok, _, _ = await self.client.txn(
                [{"key": b64(self.leader_key), "target": "CREATE", "create_revision": "0"}],
                [{"request_put": {"key": b64(self.leader_key), "value": b64(value), "lease": str(lease)}}])
            if ok:
                self._lease = lease
                self._leader_since = t0
                self._chosen = False
                # taken after the others had their second to take it: maybe as the etcd leader
                self._took_late = self._absent_since > 0.0 and t0 - self._absent_since >= 1.0
                self._leader_until = t0 + self.lease_ttl - 0.5
                self._set_leader({"name": self.node_name, "addr": self.self_addr})
                log.info("%s is the leader", self.node_name)
                return
            await self.client.lease_revoke(lease)
            _, kv = await self.client.get(self.leader_key)
        if kv is not None:
            info = json.loads(kv.value)
            if "handoff" in info:  # a transfer-leader's note holds the key for its target
                if await self._take_handoff(info, kv, t0):
                    return
                self._set_leader(None)
                return
            if self._lease and kv.lease == self._lease:
                self._leader_until = t0 + self.lease_ttl - 0.5
            else:
                self._lease = 0
            self._set_leader(info)
        else:
            self._set_leader(None)

    # ------------------------------------------------------------------ transfer-leader
    async def transfer_leadership(self, target: str = "") -> str:
        """Hand leader duties over (``POST /v1/operator/raft/transfer-leader``): to ``target``, a
        server's raft address, or to any other server. The leader replaces its entry in the leader key
        with a note naming the target, held by a lease of ``HANDOFF_TTL`` seconds, and gives up its own
        lease; the named server (or, with none named, any other) takes the key over from the note, and
        if nobody does, the note expires and an ordinary election follows."""
        if not self.is_leader():
            raise NoLeaderError("only the leader can transfer leadership; ask the leader")
        peers = self.peers()
        if target == self.self_addr:
            raise ValueError(f"cannot transfer leadership to itself ({target})")
        if target and target not in peers:
            raise ValueError(f"cannot find server {target} in the Raft configuration")
        if len(peers) < 2:
            raise ValueError("no other server to transfer leadership to")
        note = await self.client.lease_grant(HANDOFF_TTL)
        await self.client.put(self.leader_key, json.dumps({"handoff": target, "from": self.self_addr}).encode(),
                              lease=note)
        lease, self._lease = self._lease, 0
        self._leader_until = 0.0
        self._handed_off_until = time.monotonic() + HANDOFF_TTL
        await self.client.lease_revoke(lease)
        self._set_leader(None)
        log.info("%s hands leadership over to %s", self.node_name, target or "another server")
        return target

    async def _take_handoff(self, note: dict[str, str], kv: KV, t0: float) -> bool:
        if time.monotonic() < self._handed_off_until:
            return False
        if note.get("handoff") and note["handoff"] != self.self_addr:
            return False
        if not note.get("handoff") and note.get("from") == self.self_addr:
            return False
        lease = await self.client.lease_grant(self.lease_ttl)
        value = json.dumps({"name": self.node_name, "addr": self.self_addr}).encode()
        ok, _, _ = await self.client.txn(
            [{"key": b64(self.leader_key), "target": "MOD", "mod_revision": str(kv.mod_revision)}],
            [{"request_put": {"key": b64(self.leader_key), "value": b64(value), "lease": str(lease)}}])
        if not ok:
            await self.client.lease_revoke(lease)
            return False
        self._lease = lease
        self._leader_since = t0
        self._leader_until = t0 + self.lease_ttl - 0.5
        self._took_late = False
        self._chosen = bool(note.get("handoff"))  # the operator's choice stands over the co-location rule
        self._set_leader({"name": self.node_name, "addr": self.self_addr})
        log.info("%s is the leader (handed over)", self.node_name)
        return True

    async def _member_is_etcd_leader(self) -> bool:
        st = await self.client.status()
        return bool(st.get("leader")) and st.get("leader") == st.get("header", {}).get("member_id")

    async def _co_located_too_long(self) -> bool:
        """Leader duties move off the server whose member is the etcd leader: killing that server
        would otherwise cost an etcd election plus the lease TTL (etcd extends leases on a new
        leader) before anyone takes over, about 5 s instead of about 2.5 s; apart, a crash costs one
        or the other. Checked every round, since etcd leadership can move onto this server at any
        time (a member's restart hands it over), and the co-located window is the slow failover.
        Only a server that took the key as the etcd leader, because no other server took it within
        its second, keeps it for 5 s first, which bounds the flapping when the others cannot take
        it. True if resigned."""
        if self._chosen or len(self.members) < 3:
            return False
        if self._took_late and time.monotonic() - self._leader_since < 5.0:
            return False
        if not await self._member_is_etcd_leader():
            return False
        log.info("%s hands leadership over: its etcd member is the etcd leader", self.node_name)
        lease, self._lease = self._lease, 0
        self._leader_until = 0.0
        await self.client.lease_revoke(lease)
        return True

    def _set_leader(self, info: dict[str, str] | None) -> None:
        if info != self.leader:
            self.leader = info
            self.leader_changes += 1
            from beacon import telemetry

            telemetry.leader_changed(info["addr"] if info else "")

    # ------------------------------------------------------------------ cluster state
    def is_leader(self) -> bool:
        return bool(self._lease) and time.monotonic() < self._leader_until

    def known_leader(self) -> bool:
        return self.leader is not None and time.monotonic() - self._last_ok < 3.0

    def leader_raft_address(self) -> str:
        return self.leader["addr"] if self.known_leader() and self.leader else ""

    def leader_address(self) -> str:
        return self.leader_raft_address()

    def last_contact_ms(self) -> int:
        if self.is_leader() or self.known_leader():
            return 0
        return max(1, int((time.monotonic() - self._last_ok) * 1000))

    @staticmethod
    def _addr(url: str) -> str:
        return url.split("://", 1)[-1].rstrip("/")

    def peers(self) -> list[str]:
        return sorted(self._addr(m["peerURLs"][0]) for m in self.members if m.get("peerURLs"))

    def configuration(self) -> list[dict[str, Any]]:
        leader = self.leader_raft_address()
        leader_name = self.leader["name"] if leader and self.leader else ""
        out = []
        for m in sorted(self.members, key=lambda m: m.get("name", "")):
            if not m.get("peerURLs"):
                continue
            addr = self._addr(m["peerURLs"][0])
            out.append({"ID": addr, "Node": m.get("name") or self.names.get(addr, "(unknown)"), "Address": addr,
                        "Leader": addr == leader or bool(leader_name and m.get("name") == leader_name), "Voter": not m.get("isLearner", False), "ProtocolVersion": "3"})
        return out

    async def refresh_members(self) -> list[dict[str, Any]]:
        self.members = await self.client.member_list()
        self._last_members = time.monotonic()
        return self.members

    async def _retrying(self, what: str, fn: Any, seconds: float = 20.0) -> Any:
        """Membership changes need an etcd leader: ride out an election in progress."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            try:
                return await fn()
            except EtcdUnavailable as exc:
                if loop.time() > deadline:
                    raise EtcdUnavailable(f"{what}: {exc}") from None
                await asyncio.sleep(0.3)

    async def add_server(self, raft_addr: str) -> list[dict[str, Any]]:
        """MemberAdd for a server that is about to start its member; returns the member list."""
        async def add() -> list[dict[str, Any]]:
            members = await self.refresh_members()
            if raft_addr not in {self._addr(u) for m in members for u in m.get("peerURLs", [])}:
                await self.client.member_add([f"{self.peer_scheme}://{raft_addr}"])
                members = await self.refresh_members()
            return members
        return await self._retrying(f"adding {raft_addr}", add)

    async def remove_server(self, raft_addr: str) -> None:
        async def remove() -> None:
            for m in await self.refresh_members():
                if raft_addr in {self._addr(u) for u in m.get("peerURLs", [])}:
                    await self.client.member_remove(m["ID"])
                    log.info("removed etcd member %s (%s)", m.get("name"), raft_addr)
            await self.refresh_members()
        await self._retrying(f"removing {raft_addr}", remove)
