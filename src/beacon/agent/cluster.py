"""Membership (Serf gossip), the servers' internal RPC, and a client's view of consensus.

Every agent runs a supervised Serf agent for the LAN pool on ``-bind:-serf-lan-port`` (8301); servers
also join the WAN pool on ``-serf-wan-port`` (8302) as ``<node>.<dc>``. Gossip tags say who is a server
and where its RPC, HTTP and DNS listeners are, so a client needs no static server list once it joined
any member. The leader turns member events into the catalog (:mod:`beacon.agent.reconcile`).

Servers also listen for the internal RPC (apply, node_state, and the etcd bootstrap's hello /
raft_add / raft_remove; client agents' DNS queries on a WebSocket stream) on ``-server-rpc-port``
(8303): 8300 is the etcd peer port (the consensus traffic, as Consul's Raft on 8300) and 8301/8302
belong to Serf. The RPC port accepts nothing unauthenticated. With a cluster key (``-encrypt``) every
RPC body (and every stream message) is a Fernet token (AES-128-CBC + HMAC-SHA256 with a timestamp,
rejected when older than 60 s); requests that do not decrypt are refused with 403 (a stream is
closed). Without a key (only allowed when every bound and advertised address is loopback) a request
is accepted only from a socket owned by this agent's own user (or root), which the kernel reports in
/proc/net/tcp for loopback connections; anything else gets 403.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from beacon.errors import from_wire
from beacon.gossip import Member as GossipMember
from beacon.gossip import MemberEvent, Membership, SerfError, SerfNotFound, UserEvent
from beacon.gossip.pools import Gossip, GossipSettings
from beacon.gossip.supervisor import SerfStartError
from beacon.server.fsm import ApplyResult

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.cluster")


class RPCError(Exception):
    pass


class RPCNotSent(RPCError):
    """The connection could not be made: the peer never saw the call (safe to try another)."""


class GossipUnavailable(RuntimeError):
    """Gossip could not start (no serf binary, a failed -join): the message is one line for the operator."""


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


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_free(host: str, port: int, udp: bool = False) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,):
        s = socket.socket(family, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class Cluster:
    """The agent's membership (Serf LAN, and WAN on servers), the server RPC listener, and the cached
    member view that synchronous callers (HTTP forwarding, the DNS relay) read."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.config
        self.codec = Codec(cfg.encrypt or None)
        self.server = cfg.server
        self.raft_addr = _host_port(cfg.advertise, cfg.server_port)  # the etcd peer address
        self.rpc_port = cfg.server_rpc_port
        self.gossip: Gossip | None = None
        self.lan: Membership | None = None
        self.wan: Membership | None = None
        self.gossip_error = ""
        self.members: dict[str, GossipMember] = {}  # the LAN view, refreshed on every member event
        self.leader_name = ""
        self.left = False
        self.joined = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.reconciler: Any = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5, connect=1))
        if self.server:
            await self._start_rpc()
        await self._start_gossip()
        if self.lan is None:
            return  # -dev without serf: this agent alone
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresh_loop(), name="members"))
        if self.server:
            from beacon.agent.reconcile import Reconciler

            self.reconciler = Reconciler(self.agent, self)
            self._tasks.append(loop.create_task(self.reconciler.run(), name="reconcile"))
        await self.refresh()
        self._tasks.append(loop.create_task(self._refresh_after_joins(), name="joined"))

    async def _refresh_after_joins(self) -> None:
        """A -retry-join that succeeds brings the whole member list: take it now, not at the next poll,
        so a client forwards to the servers as soon as it has joined."""
        assert self.gossip is not None
        await self.gossip.retry_joins_done()
        await self.refresh()

    def _port(self, preferred: int, udp: bool, what: str) -> int:
        """-dev takes the default port when it is free and any free port otherwise, so several -dev
        agents run side by side; every other mode binds exactly the configured port."""
        cfg = self.agent.config
        if preferred == 0 or (cfg.dev and not port_free(cfg.bind_addr, preferred, udp)):
            from beacon.gossip.supervisor import free_port

            port = free_port(cfg.bind_addr, udp=udp)
            if preferred:
                log.info("%s port %d is taken; this -dev agent uses %d", what, preferred, port)
            return port
        return preferred

    async def _start_rpc(self) -> None:
        from beacon.agent.agent import bind_tcp

        cfg = self.agent.config
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/rpc/{name}", self._handle)
        app.router.add_get("/rpc-stream/{name}", self._handle_stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = bind_tcp(cfg.bind_addr, self._port(cfg.server_rpc_port, False, "server RPC"), "server RPC")
        self.rpc_port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def _extra_tags(self) -> dict[str, str]:
        """Beside Consul's tags: where a server's RPC, HTTP and DNS listen. Clients forward HTTP and DNS
        to a server's own listeners (found here, not in a static list); over the WAN, servers forward
        ?dc= requests and <x>.service.<dc> lookups the same way."""
        extra = {"rpc_port": str(self.rpc_port)} if self.server else {}
        extra.update(http_port=str(self.agent.http_port or 0), dns_port=str(self.agent.dns_port or 0),
                     https_port=str(self.agent.https_port or 0))  # clients with verify_outgoing use it
        return extra

    async def _start_gossip(self) -> None:
        """The LAN pool (and WAN on servers) with -join / -retry-join, by beacon.gossip.pools."""
        cfg = self.agent.config
        for attempt in range(3):
            # After a lost race, -dev stops trusting its check of the usual ports and takes fresh ones.
            lan, wan = (cfg.serf_lan_port, cfg.serf_wan_port) if attempt == 0 else (0, 0)
            settings = GossipSettings.from_agent_config(
                cfg, self.agent.node_id, join=list(cfg.join),
                lan_port=self._port(lan, True, "serf LAN"),
                wan_port=self._port(wan, True, "serf WAN") if self.server else cfg.serf_wan_port,
                extra_tags=self._extra_tags())
            try:
                self.gossip = await Gossip.start(settings)
                break
            except SerfNotFound as exc:
                raise GossipUnavailable(str(exc)) from None
            except SerfError as exc:  # -join (or -join-wan) reached nobody, as Consul's start fails then
                raise GossipUnavailable(f"gossip did not start: {exc}") from None
            except SerfStartError as exc:
                # -dev found its ports free, but another agent took one before Serf bound it: a -dev agent
                # picks others (it promises to run beside any other agent); a configured port is an error.
                if cfg.dev and "address already in use" in str(exc) and attempt < 2:
                    log.info("gossip: a port was taken while Serf started; this -dev agent tries others")
                    continue
                raise GossipUnavailable(str(exc)) from None
        if self.gossip is None:  # -dev without serf: logged by Gossip.start
            self.gossip_error = "gossip is not running on this agent (it needs the Debian package `serf`)"
            return
        self.lan, self.wan = self.gossip.lan, self.gossip.wan
        self.lan.on_event(self._on_event)
        log.info("gossip: LAN %s:%d%s", cfg.bind_addr, settings.lan_port,
                 f", WAN {cfg.bind_addr}:{settings.wan_port}" if self.wan else "")

    async def stop(self, leave: bool = False) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.gossip is not None:
            await self.gossip.stop(leave=leave and not self.left)
            self.gossip = None
        self.lan = self.wan = None
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def leave(self) -> None:
        """Graceful leave of both pools: the others see `left` (the leader deregisters this node)."""
        self.left = True
        for pool in (self.wan, self.lan):
            if pool is not None:
                try:
                    await pool.serf.leave()
                except Exception as exc:
                    log.warning("gossip leave: %s", exc)

    # ------------------------------------------------------------------ joins
    def require_lan(self) -> Membership:
        if self.lan is None:
            raise RPCError(self.gossip_error or "gossip is not running on this agent")
        return self.lan

    # ------------------------------------------------------------------ member view
    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, MemberEvent):
            self._changed.set()
        elif isinstance(ev, UserEvent):
            from beacon.agent.http.event import receive_gossip_event

            receive_gossip_event(self.agent, ev)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                # Serf streams member events after coalescing them for a few seconds; polling each
                # second sees a failure as soon as Serf has declared it (one loopback RPC).
                await asyncio.wait_for(self._changed.wait(), 1.0)
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.refresh()
            except Exception as exc:
                log.debug("member refresh: %s", exc)
                await asyncio.sleep(0.5)

    async def refresh(self) -> None:
        if self.lan is None:
            return
        members = await self.lan.members()
        self.members = {m.name: m for m in members}
        if any(m.name != self.lan.node_name and m.status == "alive" for m in members):
            self.joined.set()
        if self.reconciler is not None:
            self.reconciler.wake()

    def servers(self, alive_only: bool = True) -> list[GossipMember]:
        """Servers of this datacenter, from their gossip tags (no static list needed)."""
        dc = self.agent.config.datacenter
        return [m for m in self.members.values() if m.tags.get("role") == "consul" and m.tags.get("dc") == dc
                and (m.status == "alive" or not alive_only)]

    @staticmethod
    def rpc_target(m: GossipMember) -> str:
        return _host_port(m.addr, int(m.tags.get("rpc_port") or 0))

    @staticmethod
    def peer_addr(m: GossipMember) -> str:
        return _host_port(m.addr, int(m.tags.get("port") or 0))

    def consul_members(self) -> list[dict[str, Any]]:
        return [m.consul_json() for m in sorted(self.members.values(), key=lambda m: m.name)]

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

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        """A long-lived WebSocket for many small calls (client agents' DNS queries): authenticated as
        /rpc/ is, by the peer check once per connection without a key, and with a key by every
        message being a Fernet token (``stream_<name>`` decodes each with :attr:`codec`)."""
        name = request.match_info["name"]
        if self.codec.fernet is None and not _peer_is_same_user(request):
            return web.Response(status=403, text="rpc refused: no cluster key, and the caller is not this "
                                                 "agent's user on loopback")
        handler = getattr(self, f"stream_{name.replace('-', '_')}", None)
        if handler is None:
            return web.Response(status=404, text=f"unknown rpc stream {name}")
        ws = web.WebSocketResponse(compress=False, max_msg_size=4 << 20)
        await ws.prepare(request)
        try:
            await handler(ws)
        except Exception as exc:  # the RPC listener must survive anything a peer sends
            log.warning("rpc stream %s failed: %r", name, exc)
        finally:
            await ws.close()
        return ws

    # ------------------------------------------------------------------ RPC handlers (servers only)
    async def stream_dns(self, ws: web.WebSocketResponse) -> None:
        """Client agents' DNS queries with their tokens (ACLs on): see :mod:`beacon.agent.dnsrpc`."""
        from beacon.agent.dnsrpc import serve_stream

        await serve_stream(self.agent, ws, self.codec)

    def current_leader(self) -> str:
        if self.agent.mode == "single":
            return self.agent.config.node_name
        raft = self.agent.raft
        if raft is None:
            return ""
        addr = raft.leader_raft_address()
        for m in self.servers(alive_only=False):
            if self.peer_addr(m) == addr:
                return m.name
        return ""

    async def rpc_hello(self, p: Any) -> Any:
        out = {"name": self.agent.config.node_name, "raft_addr": self.raft_addr,
               "raft_running": self.agent.raft_running(), "leader": self.current_leader()}
        initial = self.agent.etcd_initial
        if initial is not None and initial[1] == "new":
            out["initial"] = list(initial)  # servers named in it start the same new cluster
        return out

    async def rpc_apply(self, p: Any) -> Any:
        from beacon.server.durable import decode, encode

        command = decode(p["command"].encode())
        result = await self.agent.submit((int(command[0]), command[1]))
        out: dict[str, Any] = {"index": result.index, "value": result.value, "leader": self.current_leader()}
        if result.error is not None:
            out["error"] = result.error.to_wire()
        return json.loads(encode(out))

    async def rpc_node_state(self, p: Any) -> Any:
        store = self.agent.store
        _, node, services = store.node_services(p["node"])
        _, checks = store.node_checks(p["node"])
        return {"node": node.to_dict() if node else None, "services": [s.to_dict() for s in services],
                "checks": [c.to_dict() for c in checks], "leader": self.current_leader()}

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


class RemoteConsensus:
    """A client agent's view of consensus: writes go to a server found in gossip, over the server RPC
    (the server's consensus takes them to the leader); there is no local state machine."""

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

    def _targets(self) -> list[GossipMember]:
        servers = self.cluster.servers()
        leader = self.cluster.leader_name
        servers.sort(key=lambda m: (m.name != leader, random.random()))
        return servers

    async def call_server(self, name: str, payload: Any, timeout: float) -> Any:
        """Call the first server that takes the connection (the leader first when known)."""
        from beacon.server.consensus import NoLeaderError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_timeout
        last = "no servers known (join any agent of the cluster)"
        while loop.time() < deadline:
            for m in self._targets():
                try:
                    out = await self.cluster.call(self.cluster.rpc_target(m), name, payload, timeout=timeout)
                except RPCNotSent as exc:
                    last = str(exc)
                    continue
                except RPCError as exc:
                    # The server may have proposed it: another try could apply it twice. Indeterminate.
                    raise NoLeaderError(str(exc).split(": ", 2)[-1]) from None
                if isinstance(out, dict) and "leader" in out:
                    self.cluster.leader_name = str(out["leader"] or "")
                return out
            await asyncio.sleep(0.2)
        raise NoLeaderError(f"No cluster leader (no server reachable: {last})")

    async def submit(self, command: tuple[int, dict[str, Any]]) -> ApplyResult:
        from beacon.server.durable import encode

        payload = {"command": encode(list(command)).decode()}
        out = await self.call_server("apply", payload, self.hold_timeout + 1)
        err = out.get("error")
        return ApplyResult(out["index"], out.get("value"),
                           from_wire(err) if err else None)

    def is_leader(self) -> bool:
        return False

    def known_leader(self) -> bool:
        return bool(self.cluster.leader_name)

    def leader_address(self) -> str:
        m = self.cluster.members.get(self.cluster.leader_name)
        return self.cluster.peer_addr(m) if m is not None else ""

    def peers(self) -> list[str]:
        return sorted(self.cluster.peer_addr(m) for m in self.cluster.servers(alive_only=False))

    def last_contact_ms(self) -> int:
        return 0

    def configuration(self) -> list[dict[str, Any]]:
        leader = self.cluster.leader_name
        return [{"ID": self.cluster.peer_addr(m), "Node": m.name, "Address": self.cluster.peer_addr(m),
                 "Leader": m.name == leader, "Voter": True, "ProtocolVersion": "3"}
                for m in sorted(self.cluster.servers(alive_only=False), key=lambda m: m.name)]


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
