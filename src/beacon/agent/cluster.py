"""Membership, failure detection and the agents' internal RPC.

Every agent runs a small RPC listener on ``-bind:-serf-lan-port`` (8301) and sends a heartbeat to every
known server each ``heartbeat_interval``. Servers keep a member table from those heartbeats; the Raft
leader reconciles it into the catalog, as Consul's leader reconciles Serf membership:

* a member that stops heartbeating for ``failure_timeout`` becomes ``failed`` and its node's
  ``serfHealth`` check goes critical (its services leave DNS and ``?passing``);
* a member that comes back becomes ``alive`` and ``serfHealth`` passes again;
* a member that leaves gracefully becomes ``left`` and its node is deregistered;
* a failed member is reaped (deregistered) after ``reconnect_timeout``.

The RPC port accepts nothing unauthenticated. With a cluster key (``-encrypt``) every RPC body is a
Fernet token (AES-128-CBC + HMAC-SHA256 with a timestamp, rejected when older than 60 s); requests
that do not decrypt are refused with 403. Without a key (only allowed when every bound and advertised
address is loopback) a request is accepted only from a socket owned by this agent's own user (or
root), which the kernel reports in /proc/net/tcp for loopback connections; anything else gets 403.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from beacon.model import SERF_ALIVE_OUTPUT, SERF_CHECK_ID, SERF_CHECK_NAME, SERF_DEAD_OUTPUT
from beacon.server.fsm import ApplyResult, CommandError, MessageType

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.cluster")

ALIVE, LEAVING, LEFT, FAILED = 1, 2, 3, 4
STATUS_NAMES = {ALIVE: "alive", LEAVING: "leaving", LEFT: "left", FAILED: "failed"}


class RPCError(Exception):
    pass


class RPCNotSent(RPCError):
    """The connection could not be made: the peer never saw the call (safe to try another)."""


class Codec:
    """Encrypts and authenticates RPC bodies with the cluster key, or passes JSON through."""

    def __init__(self, key: str | None) -> None:
        self.fernet = None
        if key:
            from cryptography.fernet import Fernet

            raw = base64.b64decode(key)
            derived = hashlib.sha256(b"beacon-rpc-v1" + raw).digest()
            self.fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encode(self, obj: Any) -> bytes:
        data = json.dumps(obj, separators=(",", ":")).encode()
        return self.fernet.encrypt(data) if self.fernet is not None else data

    def decode(self, data: bytes) -> Any:
        if self.fernet is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self.fernet.decrypt(data, ttl=60)
            except InvalidToken:
                raise RPCError("rpc body failed authentication (wrong or missing cluster key)") from None
        return json.loads(data)


def validate_key(key: str) -> None:
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raise ValueError("-encrypt must be base64 (generate one with `beacon keygen`)") from None
    if len(raw) not in (16, 24, 32):
        raise ValueError(f"-encrypt must decode to 16, 24 or 32 bytes, got {len(raw)}")


@dataclass
class Member:
    name: str
    addr: str
    id: str = ""
    server: bool = False
    rpc_port: int = 8301
    raft_addr: str = ""
    http_port: int = 0
    https_port: int = 0  # a client agent forwards here over TLS when verify_outgoing is on
    dns_port: int = 0
    dc: str = "dc1"
    expect: int = 0
    status: int = ALIVE
    last_seen: float = field(default=0.0, compare=False)
    status_since: float = field(default=0.0, compare=False)

    @property
    def rpc_addr(self) -> str:
        return f"{self.addr}:{self.rpc_port}"

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("last_seen")
        d.pop("status_since")
        d["age"] = time.monotonic() - self.last_seen if self.last_seen else None
        return d

    @classmethod
    def from_public(cls, d: dict[str, Any]) -> tuple[Member, float | None]:
        d = dict(d)
        age = d.pop("age", None)
        return cls(**d), age

    def consul_json(self) -> dict[str, Any]:
        tags = {"role": "consul" if self.server else "node", "dc": self.dc, "id": self.id, "vsn": "2",
                "vsn_min": "2", "vsn_max": "3", "build": "beacon", "segment": ""}
        if self.server:
            tags.update(port=self.raft_addr.rsplit(":", 1)[-1], expect=str(self.expect), raft_vsn="3")
        return {"Name": self.name, "Addr": self.addr, "Port": self.rpc_port, "Tags": tags,
                "Status": self.status, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}


class Cluster:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.config
        self.codec = Codec(cfg.encrypt or None)
        self.me = Member(name=cfg.node_name, addr=cfg.advertise, id=agent.node_id, server=cfg.server,
                         rpc_port=cfg.serf_lan_port, raft_addr=f"{cfg.advertise}:{cfg.server_port}",
                         dc=cfg.datacenter, expect=cfg.bootstrap_expect, status=ALIVE)
        self.members: dict[str, Member] = {self.me.name: self.me}
        self.seeds: list[str] = [self._rpc_target(a) for a in cfg.retry_join]
        self.heartbeat_interval = cfg.heartbeat_interval
        self.failure_timeout = cfg.failure_timeout
        self.reconnect_timeout = cfg.reconnect_timeout
        self.leader_http: str = ""
        self.leader_name: str = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.left = False
        self.joined = asyncio.Event()
        self.reaped: dict[str, float] = {}

    def _rpc_target(self, address: str) -> str:
        return address if ":" in address.strip("[]") and not address.startswith("[") else \
            f"{address}:{self.agent.config.serf_lan_port}"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/rpc/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        from beacon.agent.agent import bind_tcp

        sock = bind_tcp(self.agent.config.bind_addr, self.agent.config.serf_lan_port)
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5, connect=1))
        self.me.http_port = self.agent.http_port or 0
        self.me.https_port = self.agent.https_port or 0
        self.me.dns_port = self.agent.dns_port or 0

    def start_loops(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self.me.server:
            self._tasks.append(loop.create_task(self._reconcile_loop(), name="reconcile"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ RPC plumbing
    async def call(self, target: str, name: str, payload: Any, timeout: float = 5.0) -> Any:
        assert self._session is not None
        try:
            async with self._session.post(f"http://{target}/rpc/{name}", data=self.codec.encode(payload),
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RPCError(f"{target} {name}: {resp.status} {body[:200].decode(errors='replace')}")
                return self.codec.decode(body)
        except aiohttp.ClientConnectorError as exc:
            raise RPCNotSent(f"{target} {name}: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RPCError(f"{target} {name}: {exc or type(exc).__name__}") from None

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.codec.fernet is None and not _peer_is_same_user(request):
            return web.Response(status=403, text="rpc refused: no cluster key, and the caller is not this "
                                                 "agent's user on loopback")
        try:
            payload = self.codec.decode(await request.read())
        except (RPCError, ValueError) as exc:
            return web.Response(status=403, text=str(exc))
        handler = getattr(self, f"rpc_{name.replace('-', '_')}", None)
        if handler is None:
            return web.Response(status=404, text=f"unknown rpc {name}")
        try:
            result = await handler(payload)
        except RPCError as exc:
            return web.Response(status=500, text=str(exc))
        except Exception as exc:  # the RPC listener must survive anything a peer sends
            log.warning("rpc %s failed: %r", name, exc)
            return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")
        return web.Response(body=self.codec.encode(result), content_type="application/octet-stream")

    # ------------------------------------------------------------------ RPC handlers
    async def rpc_hello(self, p: Any) -> Any:
        out = {"member": self.me.public(), "members": self._member_list(),
               "raft_running": self.agent.raft_running(), "leader": self._leader_name()}
        initial = self.agent.etcd_initial
        if initial is not None and initial[1] == "new":
            out["initial"] = list(initial)  # servers named in it start the same new cluster
        return out

    async def rpc_heartbeat(self, p: Any) -> Any:
        if not self.me.server:
            raise RPCError("not a server")
        self._observe(Member.from_public(p["member"])[0], seen_at=time.monotonic())
        return {"members": self._member_list(), "leader": self._leader_name(),
                "raft_running": self.agent.raft_running()}

    async def rpc_apply(self, p: Any) -> Any:
        from beacon.server.durable import decode, encode

        command = decode(p["command"].encode())
        result = await self.agent.submit((int(command[0]), command[1]))
        out: dict[str, Any] = {"index": result.index, "value": result.value}
        if result.error is not None:
            out["error"] = {"message": result.error.message, "status": result.error.status}
        return json.loads(encode(out))

    async def rpc_node_state(self, p: Any) -> Any:
        store = self.agent.store
        _, node, services = store.node_services(p["node"])
        _, checks = store.node_checks(p["node"])
        return {"node": node.to_dict() if node else None, "services": [s.to_dict() for s in services],
                "checks": [c.to_dict() for c in checks]}

    async def rpc_leave(self, p: Any) -> Any:
        m = self.members.get(p["node"])
        if m is not None:
            m.status = LEFT
            m.status_since = time.monotonic()
        return True

    async def rpc_force_leave(self, p: Any) -> Any:
        m = self.members.get(p["node"])
        if m is None:
            raise RPCError(f"agent: No node found with name '{p['node']}'")
        if m.status != LEFT:
            m.status = LEFT
            m.status_since = time.monotonic()
        if p.get("prune"):
            m.status_since = 0.0
        return True

    async def rpc_raft_add(self, p: Any) -> Any:
        """A new server asks to join: etcd MemberAdd (any member may do it), answer the member list."""
        raft = self.agent.raft
        if raft is None:
            raise RPCError("consensus not running here")
        return {"members": await raft.add_server(str(p["raft_addr"]))}

    async def rpc_raft_remove(self, p: Any) -> Any:
        raft = self.agent.raft
        if raft is None:
            raise RPCError("consensus not running here")
        await raft.remove_server(str(p["raft_addr"]))
        return raft.peers()

    # ------------------------------------------------------------------ member table
    def _member_list(self) -> list[dict[str, Any]]:
        return [m.public() for m in self.members.values()]

    def _leader_name(self) -> str:
        raft = self.agent.raft
        if raft is None:
            return ""
        addr = raft.leader_raft_address()
        for m in self.members.values():
            if m.server and m.raft_addr == addr:
                return m.name
        return ""

    def _observe(self, m: Member, seen_at: float | None) -> None:
        """Merge what we heard about a member: directly (seen_at = now), or from another server's table
        (seen_at = when that server last heard from it), so every server converges on the freshest news."""
        now = time.monotonic()
        cur = self.members.get(m.name)
        if cur is None:
            if m.status == LEFT and seen_at is None:
                return
            reaped_at = self.reaped.get(m.name)
            if reaped_at is not None:
                if seen_at is None or seen_at <= reaped_at:
                    return
                del self.reaped[m.name]
            m.last_seen = seen_at or 0.0
            m.status_since = now
            if m.status not in (LEFT, FAILED):
                m.status = ALIVE
            self.members[m.name] = m
            if self.agent.raft is not None and m.server:
                self.agent.raft.names[m.raft_addr] = m.name
            return
        was = cur.status
        if m.status in (LEFT, LEAVING) and (seen_at is not None or cur.status != LEFT):
            cur.status = LEFT
        elif seen_at is not None and seen_at > cur.last_seen:
            if cur.status == LEFT and m.id == cur.id and now - cur.status_since < 2.0:
                return  # a heartbeat that raced the leave
            for attr in ("addr", "id", "server", "rpc_port", "raft_addr", "http_port", "https_port", "dns_port", "dc",
                         "expect"):
                setattr(cur, attr, getattr(m, attr))
            cur.last_seen = seen_at
            if now - seen_at < self.failure_timeout:
                cur.status = ALIVE
        if cur.status != was:
            cur.status_since = now
            log.info("member %s is %s", cur.name, STATUS_NAMES[cur.status])
        if self.agent.raft is not None and cur.server:
            self.agent.raft.names[cur.raft_addr] = cur.name

    def servers(self) -> list[Member]:
        return [m for m in self.members.values() if m.server and m.status in (ALIVE, FAILED)]

    def consul_members(self) -> list[dict[str, Any]]:
        return [m.consul_json() for m in sorted(self.members.values(), key=lambda m: m.name)]

    # ------------------------------------------------------------------ loops
    async def _heartbeat_loop(self) -> None:
        while True:
            await self.heartbeat_once()
            await asyncio.sleep(self.heartbeat_interval * (0.9 + 0.2 * random.random()))

    async def heartbeat_once(self) -> None:
        self.me.http_port = self.agent.http_port or 0
        self.me.https_port = self.agent.https_port or 0
        self.me.dns_port = self.agent.dns_port or 0
        targets = {m.rpc_addr for m in self.servers() if m.name != self.me.name}
        if not targets or not self.joined.is_set():
            targets |= set(self.seeds)
        if self.me.server:
            self.me.last_seen = time.monotonic()
        payload = {"member": self.me.public()}
        results = await asyncio.gather(*(self.call(t, "heartbeat", payload, timeout=2.0) for t in targets),
                                       return_exceptions=True)
        for target, res in zip(targets, results, strict=True):
            if isinstance(res, BaseException):
                continue
            self.joined.set()
            now = time.monotonic()
            for md in res["members"]:
                m, age = Member.from_public(md)
                if m.name == self.me.name:
                    continue
                if m.rpc_addr == target:
                    seen: float | None = now
                elif age is not None:
                    seen = now - age
                else:
                    seen = None
                if not self.me.server and not m.server and m.name in self.members:
                    self.members[m.name].status = m.status  # clients take the servers' word
                self._observe(m, seen_at=seen)
            if "leader" in res:
                self.leader_name = res["leader"]
            if res.get("leader"):
                leader = self.members.get(res["leader"])
                if leader is not None and leader.http_port:
                    self.leader_http = f"{leader.addr}:{leader.http_port}"

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.detect_failures()
            raft = self.agent.raft
            if raft is None or not raft.is_leader():
                continue
            try:
                await self.reconcile()
            except Exception as exc:
                log.warning("reconcile failed: %s", exc)

    def detect_failures(self) -> None:
        """Every server: a member silent for failure_timeout is failed; failed past reconnect_timeout
        it is forgotten (the leader also deregisters it)."""
        now = time.monotonic()
        for name, at in list(self.reaped.items()):
            if now - at > 300:
                del self.reaped[name]
        for m in list(self.members.values()):
            if m.name != self.me.name and m.status == ALIVE and m.last_seen and \
                    now - m.last_seen > self.failure_timeout:
                m.status = FAILED
                m.status_since = now
                log.warning("member %s failed: no heartbeat for %.1fs", m.name, now - m.last_seen)
            elif m.status == FAILED and now - m.status_since > self.reconnect_timeout and not self._is_leader():
                self._forget(m.name)  # the leader forgets in reconcile(), after deregistering the node

    def _is_leader(self) -> bool:
        return self.agent.raft is not None and self.agent.raft.is_leader()

    def _forget(self, name: str) -> None:
        self.members.pop(name, None)
        # Another server's table may still list it; only a heartbeat from it brings it back.
        self.reaped[name] = time.monotonic()

    async def reconcile(self) -> None:
        """Leader duty: member table -> catalog nodes and serfHealth."""
        now = time.monotonic()
        store = self.agent.store
        for name in list(self.reaped):
            if name not in self.members and store.get_node(name) is not None:
                await self._submit((MessageType.DEREGISTER, {"node": name}))  # forgotten before reaped
        for m in list(self.members.values()):
            if m.status == LEFT:
                if store.get_node(m.name) is not None:
                    await self._submit((MessageType.DEREGISTER, {"node": m.name}))
                if m.server and self.agent.raft is not None and m.raft_addr in self.agent.raft.peers() \
                        and m.name != self.me.name:
                    try:
                        await self.agent.raft.remove_server(m.raft_addr)
                    except Exception as exc:
                        log.warning("removing %s from raft: %s", m.raft_addr, exc)
                if now - m.status_since > 60 or not m.status_since:
                    self._forget(m.name)
                continue
            if m.status == FAILED and now - m.status_since > self.reconnect_timeout:
                log.info("reaping failed member %s", m.name)
                await self._submit((MessageType.DEREGISTER, {"node": m.name}))
                self._forget(m.name)
                continue
            want = "passing" if m.status == ALIVE else "critical"
            node = store.get_node(m.name)
            serf = store.checks.get((m.name.lower(), SERF_CHECK_ID))
            if node is None or node.address != m.addr or serf is None or serf.status != want:
                payload: dict[str, Any] = {
                    "node": m.name, "address": m.addr, "id": m.id, "datacenter": m.dc,
                    "skip_node_update": node is not None and node.address == m.addr,
                    "checks": [{"check_id": SERF_CHECK_ID, "name": SERF_CHECK_NAME, "status": want,
                                "output": SERF_ALIVE_OUTPUT if want == "passing" else SERF_DEAD_OUTPUT}],
                }
                if node is not None:
                    payload["node_meta"] = dict(node.meta)
                if m.server:
                    payload["service"] = {"id": "consul", "service": "consul",
                                          "port": int(m.raft_addr.rsplit(":", 1)[-1])}
                await self._submit((MessageType.REGISTER, payload))

    async def _submit(self, command: tuple[int, dict[str, Any]]) -> ApplyResult:
        result = await self.agent.submit(command)
        if result.error is not None:
            raise CommandError(result.error.message)
        return result

    # ------------------------------------------------------------------ leave
    async def leave(self) -> None:
        self.me.status = LEFT
        self.left = True
        targets = {m.rpc_addr for m in self.servers() if m.name != self.me.name}
        await asyncio.gather(*(self.call(t, "leave", {"node": self.me.name}, timeout=2.0) for t in targets),
                             return_exceptions=True)
        if self.me.server and self.agent.raft is not None:
            await self.rpc_leave({"node": self.me.name})


class RemoteConsensus:
    """A client agent's view of consensus: writes go to a server over RPC (the server's Raft forwards
    them to the leader); there is no local state machine."""

    def __init__(self, agent: Agent, hold_timeout: float = 7.0) -> None:
        self.agent = agent
        self.store = agent.store
        self.hold_timeout = hold_timeout

    @property
    def cluster(self) -> Cluster:
        assert self.agent.cluster is not None
        return self.agent.cluster

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def _targets(self) -> list[Member]:
        servers = [m for m in self.cluster.servers() if m.status == ALIVE]
        leader = self.cluster.members.get(self.cluster.leader_name)
        servers.sort(key=lambda m: (m is not leader, random.random()))
        return servers

    async def submit(self, command: tuple[int, dict[str, Any]]) -> ApplyResult:
        from beacon.server.consensus import NoLeaderError
        from beacon.server.durable import encode

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_timeout
        payload = {"command": encode(list(command)).decode()}
        last = "no servers known"
        while loop.time() < deadline:
            for m in self._targets():
                try:
                    out = await self.cluster.call(m.rpc_addr, "apply", payload, timeout=self.hold_timeout + 1)
                except RPCNotSent as exc:
                    last = str(exc)
                    continue
                except RPCError as exc:
                    # The server may have proposed it: another try could apply it twice. Indeterminate.
                    raise NoLeaderError(str(exc).split(": ", 2)[-1]) from None
                err = out.get("error")
                return ApplyResult(out["index"], out.get("value"),
                                   CommandError(err["message"], err["status"]) if err else None)
            await asyncio.sleep(0.2)
        raise NoLeaderError(f"No cluster leader (no server reachable: {last})")

    def is_leader(self) -> bool:
        return False

    def known_leader(self) -> bool:
        return bool(self.cluster.leader_name)

    def leader_address(self) -> str:
        m = self.cluster.members.get(self.cluster.leader_name)
        return m.raft_addr if m is not None else ""

    def peers(self) -> list[str]:
        return sorted(m.raft_addr for m in self.cluster.servers())

    def last_contact_ms(self) -> int:
        return 0

    def configuration(self) -> list[dict[str, Any]]:
        leader = self.cluster.leader_name
        return [{"ID": m.raft_addr, "Node": m.name, "Address": m.raft_addr, "Leader": m.name == leader,
                 "Voter": True, "ProtocolVersion": "3"} for m in sorted(self.cluster.servers(), key=lambda m: m.name)]


def _peer_is_same_user(request: web.Request) -> bool:
    """True when the TCP peer is a loopback socket owned by our uid (or root), per /proc/net/tcp*."""
    transport = request.transport
    if transport is None:
        return False
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    if not peer or not local:
        return False
    import ipaddress

    try:
        if not ipaddress.ip_address(peer[0]).is_loopback:
            return False
    except ValueError:
        return False
    # One /proc lookup per connection, not per call: RPC clients keep their connections alive. The
    # cache holds the transport itself, so its id cannot be reused by a later connection meanwhile.
    cached = _PEER_CACHE.get(id(transport))
    if cached is not None and cached[0] is transport and cached[1] == peer:
        return cached[2]
    uid = socket_owner(peer[0], int(peer[1]), local[0], int(local[1]))
    ok = uid is not None and uid in (os.getuid(), 0)
    if len(_PEER_CACHE) > 1024:
        _PEER_CACHE.clear()
    _PEER_CACHE[id(transport)] = (transport, peer, ok)
    return ok


_PEER_CACHE: dict[int, tuple[Any, Any, bool]] = {}


def _proc_addr(host: str, port: int) -> str:
    import ipaddress
    import struct

    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return f"{struct.unpack('<I', ip.packed)[0]:08X}:{port:04X}"
    words = struct.unpack("<IIII", ip.packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def socket_owner(src: str, sport: int, dst: str, dport: int) -> int | None:
    """The uid owning the TCP socket src:sport -> dst:dport on this host, or None."""
    want_local, want_remote = _proc_addr(src, sport), _proc_addr(dst, dport)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 7 and parts[1] == want_local and parts[2] == want_remote:
                        return int(parts[7])
        except OSError:
            continue
    return None
