"""The membership facade the agent uses: one gossip pool (LAN or WAN) backed by a supervised Serf agent.

It answers in Consul's shapes at the edges the HTTP layer needs (member JSON with numeric Status,
keyring responses, Coord) and hands the rest out as typed records: :class:`Member`,
:class:`MemberEvent`, :class:`UserEvent`, :class:`QueryEvent`.

Events come from one long-lived ``stream`` RPC connection. When that connection drops (the Serf child
died and the supervisor restarted it), the pump reconnects and compares the member list with the last
one it knew, emitting the joins, leaves and failures it missed, so a subscriber (the leader's catalog
reconciliation) never has to poll to stay right. User events fired while the connection was down are
lost, as they would be on a restarted Consul agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from beacon.gossip.coordinate import Coordinate, sort_datacenters
from beacon.gossip.rpc import RecordStream, SerfClient, SerfConnectionError, SerfError, SerfRPCError
from beacon.gossip.supervisor import LAN_PORT, WAN_PORT, SerfAgent, SerfConfig
from beacon.gossip.tags import ServerInfo, server_info

log = logging.getLogger("beacon.gossip")

# Consul's numeric member status (serf.MemberStatus), which /v1/agent/members reports.
STATUS_CODES = {"none": 0, "alive": 1, "leaving": 2, "left": 3, "failed": 4}
MEMBER_EVENTS = ("member-join", "member-leave", "member-failed", "member-update", "member-reap")
DEFAULT_STREAM = ",".join((*MEMBER_EVENTS, "user", "query"))
KEYRING_ATTEMPTS = 3


def _answers_missing(resp: dict[str, Any]) -> bool:
    """A keyring answer where some members did not answer in time and none reported an error."""
    try:
        return int(resp.get("NumErr", 0)) == 0 and int(resp.get("NumResp", 0)) < int(resp.get("NumNodes", 0))
    except (TypeError, ValueError):
        return False


class KeyringError(SerfError):
    """A keyring operation some members refused; `response` is the Consul-shaped answer."""

    def __init__(self, message: str, response: dict[str, Any]) -> None:
        super().__init__(message)
        self.response = response


def _addr(raw: Any) -> str:
    if isinstance(raw, bytes | bytearray):
        if len(raw) in (4, 16):
            ip = ipaddress.ip_address(bytes(raw))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return str(ip)
        return ""
    return str(raw or "")


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: str
    protocol: tuple[int, int, int] = (1, 5, 2)   # min, max, cur (memberlist)
    delegate: tuple[int, int, int] = (2, 5, 4)   # min, max, cur (serf)

    @classmethod
    def from_rpc(cls, d: dict[str, Any]) -> Member:
        return cls(name=str(d.get("Name", "")), addr=_addr(d.get("Addr")), port=int(d.get("Port", 0)),
                   tags={str(k): str(v) for k, v in (d.get("Tags") or {}).items()},
                   status=str(d.get("Status", "none")),
                   protocol=(int(d.get("ProtocolMin", 0)), int(d.get("ProtocolMax", 0)), int(d.get("ProtocolCur", 0))),
                   delegate=(int(d.get("DelegateMin", 0)), int(d.get("DelegateMax", 0)), int(d.get("DelegateCur", 0))))

    @property
    def status_code(self) -> int:
        return STATUS_CODES.get(self.status, 0)

    @property
    def server(self) -> ServerInfo | None:
        return server_info(self.name, self.addr, self.tags, self.status)

    def consul_json(self) -> dict[str, Any]:
        """One entry of Consul's /v1/agent/members."""
        return {"Name": self.name, "Addr": self.addr, "Port": self.port, "Tags": dict(self.tags),
                "Status": self.status_code, "ProtocolMin": self.protocol[0], "ProtocolMax": self.protocol[1],
                "ProtocolCur": self.protocol[2], "DelegateMin": self.delegate[0],
                "DelegateMax": self.delegate[1], "DelegateCur": self.delegate[2]}


@dataclass(frozen=True, slots=True)
class MemberEvent:
    type: str                     # member-join | member-leave | member-failed | member-update | member-reap
    members: tuple[Member, ...]
    synthetic: bool = False       # reconstructed after a reconnect, not pushed by Serf


@dataclass(frozen=True, slots=True)
class UserEvent:
    name: str
    payload: bytes
    ltime: int
    coalesce: bool


@dataclass(frozen=True, slots=True)
class QueryEvent:
    id: int
    name: str
    payload: bytes
    ltime: int
    _stream_client: SerfClient | None = field(default=None, compare=False, repr=False)


GossipEvent = MemberEvent | UserEvent | QueryEvent


def _event(record: dict[str, Any], client: SerfClient | None) -> GossipEvent | None:
    kind = record.get("Event", "")
    if kind in MEMBER_EVENTS:
        return MemberEvent(kind, tuple(Member.from_rpc(m) for m in record.get("Members") or []))
    if kind == "user":
        return UserEvent(str(record.get("Name", "")), bytes(record.get("Payload") or b""),
                         int(record.get("LTime", 0)), bool(record.get("Coalesce", False)))
    if kind == "query":
        return QueryEvent(int(record.get("ID", 0)), str(record.get("Name", "")), bytes(record.get("Payload") or b""),
                          int(record.get("LTime", 0)), client)
    return None


class Subscription:
    """An async iterator of gossip events; a slow reader loses the oldest (counted in `dropped`)."""

    def __init__(self, owner: Membership, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[GossipEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _push(self, ev: GossipEvent | None) -> None:
        while self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(ev)

    def __aiter__(self) -> AsyncIterator[GossipEvent]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[GossipEvent]:
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    async def get(self, timeout: float | None = None) -> GossipEvent | None:
        """The next event, None once closed; TimeoutError after `timeout` seconds."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def close(self) -> None:
        self._owner._subs.discard(self)
        self._push(None)


class Membership:
    """One gossip pool. Create with :meth:`start_pool` (runs the Serf child) or around a started
    :class:`SerfAgent`; ``await start()``; ``await stop(leave=...)`` at shutdown."""

    def __init__(self, serf: SerfAgent, *, datacenter: str = "dc1", stream_types: str = DEFAULT_STREAM) -> None:
        self.serf = serf
        self.datacenter = datacenter
        self.wan = serf.config.pool == "wan"
        self.default_port = WAN_PORT if self.wan else LAN_PORT
        self.stream_types = stream_types
        self._client: SerfClient | None = None
        self._client_lock = asyncio.Lock()
        self._stream_client: SerfClient | None = None
        self._subs: set[Subscription] = set()
        self._callbacks: list[Callable[[GossipEvent], None]] = []
        self._known: dict[str, Member] = {}
        self._pump: asyncio.Task[None] | None = None
        self._armed = asyncio.Event()
        self.reconnects = 0

    @classmethod
    async def start_pool(cls, config: SerfConfig, *, datacenter: str = "dc1", **kw: Any) -> Membership:
        serf = SerfAgent(config)
        await serf.start()
        m = cls(serf, datacenter=datacenter, **kw)
        try:
            await m.start()
        except BaseException:
            await serf.stop()
            raise
        return m

    @property
    def node_name(self) -> str:
        return self.serf.config.node_name

    async def start(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._pump_events(), name=f"gossip-{self.serf.config.pool}")
        await self.wait_armed(30.0)

    async def wait_armed(self, timeout: float) -> None:
        """Wait until the event stream is subscribed (events from now on are delivered)."""
        await asyncio.wait_for(self._armed.wait(), timeout)

    async def stop(self, leave: bool = False) -> None:
        """Stop the pool's Serf child; with `leave`, first leave gracefully (others see `left`)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        for c in (self._client, self._stream_client):
            if c is not None:
                await c.close()
        self._client = self._stream_client = None
        if leave:
            await self.serf.leave()
        else:
            await self.serf.stop()
        for sub in list(self._subs):
            sub.close()

    # ------------------------------------------------------------------ RPC connection
    async def _rpc(self) -> SerfClient:
        async with self._client_lock:
            if self._client is None or self._client.closed:
                self._client = await self.serf.connect()
            return self._client

    # ------------------------------------------------------------------ members
    async def members(self) -> list[Member]:
        return [Member.from_rpc(d) for d in await (await self._rpc()).members()]

    async def consul_members(self) -> list[dict[str, Any]]:
        """Consul's /v1/agent/members body for this pool."""
        return [m.consul_json() for m in sorted(await self.members(), key=lambda m: m.name)]

    async def member(self, name: str) -> Member | None:
        """One member by name (its current state in this agent's view), or None."""
        found = await (await self._rpc()).members_filtered(name=re.escape(name))
        return Member.from_rpc(found[0]) if found else None

    async def local_member(self) -> Member:
        me = await self.member(self.node_name)
        if me is None:
            raise SerfRPCError(f"serf does not list the local member {self.node_name}")
        return me

    async def servers(self, datacenter: str | None = None) -> list[ServerInfo]:
        """Alive servers from gossip tags: on the LAN, those of this datacenter; on the WAN, those of
        `datacenter`, or of every datacenter when it is None."""
        dc = datacenter if datacenter is not None else (None if self.wan else self.datacenter)
        out = []
        for m in await self.members():
            info = m.server
            if info is not None and m.status == "alive" and (dc is None or info.datacenter == dc):
                out.append(info)
        return out

    async def join(self, addresses: list[str], replay: bool = False) -> int:
        """Join through any of `addresses` (host, host:port, [v6]:port; the pool's port by default)."""
        return await (await self._rpc()).join([self._with_port(a) for a in addresses], replay)

    def _with_port(self, address: str) -> str:
        a = address.strip()
        if a.startswith("["):
            return a if "]:" in a else f"{a}:{self.default_port}"
        if a.count(":") == 1:
            return a
        if ":" in a:  # a bare IPv6 address
            return f"[{a}]:{self.default_port}"
        return f"{a}:{self.default_port}"

    async def force_leave(self, node: str, prune: bool = False) -> None:
        await (await self._rpc()).force_leave(node, prune)

    async def set_tags(self, tags: dict[str, str], delete: list[str] | tuple[str, ...] = ()) -> None:
        """Change this member's tags (gossiped as member-update); kept for the child's next restart."""
        await (await self._rpc()).tags(tags, list(delete))
        for k in delete:
            self.serf.config.tags.pop(k, None)
        self.serf.config.tags.update(tags)

    # ------------------------------------------------------------------ events
    def subscribe(self, maxsize: int = 1024) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def on_event(self, callback: Callable[[GossipEvent], None]) -> Callable[[], None]:
        """Call `callback` for every event (on the loop; keep it quick). Returns an unsubscribe."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _publish(self, ev: GossipEvent) -> None:
        if isinstance(ev, MemberEvent):
            for m in ev.members:
                if ev.type == "member-reap":
                    self._known.pop(m.name, None)
                else:
                    self._known[m.name] = m
        for sub in list(self._subs):
            sub._push(ev)
        for cb in list(self._callbacks):
            try:
                cb(ev)
            except Exception:  # one broken listener must not starve the others
                log.exception("gossip event callback failed")

    async def fire(self, name: str, payload: bytes = b"", coalesce: bool = False) -> None:
        """Gossip a user event to every member of the pool (Serf caps name+payload, 512 bytes by default)."""
        await (await self._rpc()).event(name, payload, coalesce)

    async def query(self, name: str, payload: bytes = b"", *, timeout: float = 0.0,
                    filter_nodes: list[str] | None = None, filter_tags: dict[str, str] | None = None
                    ) -> dict[str, bytes]:
        """Ask the members a question; returns {member name: response payload} once the query is done."""
        client = await self.serf.connect()  # its own connection: the answers stream until "done"
        try:
            stream: RecordStream = await client.query(name, payload, timeout=timeout, filter_nodes=filter_nodes,
                                                      filter_tags=filter_tags)
            out: dict[str, bytes] = {}
            async for rec in stream:
                if rec.get("Type") == "response":
                    out[str(rec.get("From", ""))] = bytes(rec.get("Payload") or b"")
            return out
        finally:
            await client.close()

    async def respond(self, query: QueryEvent, payload: bytes) -> None:
        """Answer a query received as a QueryEvent (over the connection that received it)."""
        if query._stream_client is None or query._stream_client.closed:
            raise SerfConnectionError("the connection that received this query is gone")
        await query._stream_client.respond(query.id, payload)

    async def _pump_events(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                client = await self.serf.connect()
            except SerfError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._stream_client = client
            try:
                stream = await client.stream(self.stream_types)
                current = {m.name: m for m in (Member.from_rpc(d) for d in await client.members())}
                if not first:
                    self.reconnects += 1
                    if await self._rejoin_if_alone(client, current):
                        current = {m.name: m for m in (Member.from_rpc(d) for d in await client.members())}
                    self._resync(current)
                else:
                    self._known = current
                first = False
                delay = 0.1
                self._armed.set()
                async for record in stream:
                    ev = _event(record, client)
                    if ev is not None:
                        self._publish(ev)
            except SerfError as exc:
                log.info("gossip %s event stream interrupted: %s; reconnecting", self.serf.config.pool, exc)
            finally:
                self._stream_client = None
                await client.close()
            await asyncio.sleep(delay)

    async def _rejoin_if_alone(self, client: SerfClient, current: dict[str, Member]) -> bool:
        """A restarted child rejoins from its snapshot, but Serf flushes that file lazily, so a child
        killed soon after joining may come back alone: then join the members we knew were alive."""
        if len(current) > 1:
            return False
        peers = [f"{m.addr}:{m.port}" for m in self._known.values()
                 if m.name != self.node_name and m.status == "alive" and m.addr]
        if not peers:
            return False
        try:
            n = await client.join(peers)
            log.info("gossip %s: rejoined %d known members after a restart", self.serf.config.pool, n)
            return True
        except SerfError as exc:
            log.warning("gossip %s: rejoin after restart failed: %s", self.serf.config.pool, exc)
            return False

    def _resync(self, current: dict[str, Member]) -> None:
        """Emit what changed while the stream was down, as Serf would have (flagged synthetic)."""
        by_type: dict[str, list[Member]] = {}
        for name, m in current.items():
            old = self._known.get(name)
            if old is None or old.status != m.status:
                kind = {"alive": "member-join", "failed": "member-failed", "left": "member-leave",
                        "leaving": "member-leave"}.get(m.status)
                if kind:
                    by_type.setdefault(kind, []).append(m)
            elif old.tags != m.tags or old.addr != m.addr or old.port != m.port:
                by_type.setdefault("member-update", []).append(m)
        for name, old in self._known.items():
            if name not in current:
                by_type.setdefault("member-reap", []).append(old)
        for kind, ms in by_type.items():
            self._publish(MemberEvent(kind, tuple(ms), synthetic=True))
        self._known = current

    # ------------------------------------------------------------------ keyring
    def _keyring_json(self, resp: dict[str, Any]) -> dict[str, Any]:
        return {"WAN": self.wan, "Datacenter": self.datacenter, "Segment": "",
                "Messages": dict(resp.get("Messages") or {}), "Keys": dict(resp.get("Keys") or {}),
                "NumNodes": int(resp.get("NumNodes", 0))}

    async def _keyring(self, op: str, key: str | None) -> dict[str, Any]:
        """One keyring query over the pool. Serf delivers a query and its answers best-effort over UDP
        within the query timeout, so now and then one member's answer is missing with no member
        reporting an error. Every keyring operation is idempotent (installing a held key, using the
        primary or removing an absent key all succeed), so such an incomplete answer is asked again,
        up to KEYRING_ATTEMPTS times, before it is reported."""
        client = await self._rpc()
        for attempt in range(1, KEYRING_ATTEMPTS + 1):
            try:
                if op == "list":
                    resp = await client.list_keys()
                else:
                    resp = await getattr(client, f"{op}_key")(key)
            except SerfRPCError as exc:
                if attempt < KEYRING_ATTEMPTS and _answers_missing(exc.body):
                    log.info("keyring %s: %s; asking again", op, exc)
                    continue
                raise KeyringError(str(exc), self._keyring_json(exc.body)) from None
            break
        out = self._keyring_json(resp)
        if int(resp.get("NumErr", 0)):
            raise KeyringError(f"{resp.get('NumErr')}/{resp.get('NumNodes')} nodes reported failure", out)
        return out

    async def keyring_list(self) -> dict[str, Any]:
        """One entry of Consul's GET /v1/operator/keyring: {WAN, Datacenter, Segment, Keys {key: nodes},
        NumNodes, Messages}."""
        return await self._keyring("list", None)

    async def keyring_install(self, key: str) -> dict[str, Any]:
        return await self._keyring("install", key)

    async def keyring_use(self, key: str) -> dict[str, Any]:
        return await self._keyring("use", key)

    async def keyring_remove(self, key: str) -> dict[str, Any]:
        return await self._keyring("remove", key)

    # ------------------------------------------------------------------ coordinates
    async def coordinate(self, node: str | None = None) -> Coordinate | None:
        """This member's Vivaldi coordinate, or the one Serf cached for `node` (None if unknown)."""
        raw = await (await self._rpc()).get_coordinate(node or self.node_name)
        return Coordinate.from_json(raw) if raw else None

    async def datacenters(self) -> list[str]:
        """Datacenters with an alive server in this pool (the WAN pool, on servers), nearest first by
        the median estimated RTT to their servers, as Consul sorts /v1/catalog/datacenters."""
        own = await self.coordinate()
        servers: list[tuple[str, Coordinate | None]] = []
        for m in await self.members():
            info = m.server
            if info is not None and m.status == "alive" and info.datacenter:
                servers.append((info.datacenter, own if m.name == self.node_name else await self.coordinate(m.name)))
        return sort_datacenters(self.datacenter, own, servers)

    async def coordinates(self) -> dict[str, Coordinate]:
        """Coordinates of every alive member this agent has one for (its own included)."""
        out: dict[str, Coordinate] = {}
        for m in await self.members():
            if m.status == "alive":
                c = await self.coordinate(m.name)
                if c is not None:
                    out[m.name] = c
        return out

