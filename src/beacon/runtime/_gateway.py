"""The way from containers to the agent: relays on the bridge's gateway address.

The bridge lives in the engine's hub namespace (``_bridge``), whose own address ``GATEWAY`` is every
container's default route. The gateway listens there, inside the hub, on DNS (53, UDP and TCP) and
the HTTP API port (8500), and hands each connection or datagram to the agent's listener on host
loopback. Containers get ``nameserver GATEWAY`` in their resolv.conf, so ``nslookup
web.service.consul`` and ``wget GATEWAY:8500/v1/catalog/services`` work from inside them, while
nothing is routed and no address outside the engine's own namespaces is ever bound or reached.
The hub is reachable only from the engine's containers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dnslib

from beacon.runtime._bridge import GATEWAY
from beacon.runtime._relay import _Half

if TYPE_CHECKING:
    from beacon.runtime._isolation import NetnsIsolation

log = logging.getLogger(__name__)
UDP_IDLE = 30.0
UDP_MAX_FLOWS = 1024
HTTP_PORT = 8500
DNS_PORT = 53
Lookup = Callable[[str, str], "list[str] | None"]  # (asker's address, name) -> addresses, or None


class _ToAgent(_Half):
    """A container's connection to the gateway: opens one to the agent on loopback, then links."""

    def __init__(self, conns: set[_Half], target: Callable[[], tuple[str, int] | None],
                 tasks: set[asyncio.Task[None]]) -> None:
        super().__init__(conns)
        self.target, self.tasks = target, tasks

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        task = asyncio.ensure_future(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = self.target()
        if target is None:  # no agent connected yet
            self.transport.close()
            return
        try:
            _, inner = await loop.create_connection(lambda: _Half(self.conns), *target)
        except OSError as exc:
            log.debug("gateway: agent at %s:%s unreachable: %s", *target, exc)
            self.transport.close()
            return
        self.splice(inner)


class _UdpIn(asyncio.DatagramProtocol):
    """DNS over UDP. Names of containers on the asker's user network are answered here (as dockerd's
    embedded DNS does); the rest goes to the agent, one loopback socket per container address,
    dropped after UDP_IDLE seconds."""

    def __init__(self, target: Callable[[], tuple[str, int] | None], lookup: Lookup) -> None:
        self.target, self.lookup = target, lookup
        self.transport: Any = None
        self.flows: dict[Any, tuple[Any, asyncio.TimerHandle]] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _local(self, data: bytes, src: str) -> bytes | None:
        try:
            query = dnslib.DNSRecord.parse(data)
        except (dnslib.DNSError, ValueError, IndexError, struct.error):
            return None
        if not query.questions:
            return None
        q = query.questions[0]
        addresses = self.lookup(src, str(q.qname).rstrip(".").lower())
        if addresses is None:
            return None
        reply = query.reply()
        if q.qtype in (dnslib.QTYPE.A, dnslib.QTYPE.ANY):
            for a in addresses:
                reply.add_answer(dnslib.RR(q.qname, dnslib.QTYPE.A, rdata=dnslib.A(a), ttl=600))
        return bytes(reply.pack())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        local = self._local(data, addr[0])
        if local is not None:
            self.transport.sendto(local, addr)
            return
        target = self.target()
        if target is None:
            return
        flow = self.flows.get(addr)
        if flow is not None:
            transport, timer = flow
            timer.cancel()
            self.flows[addr] = (transport, asyncio.get_running_loop().call_later(UDP_IDLE, self._drop, addr))
            transport.sendto(data)
            return
        if len(self.flows) >= UDP_MAX_FLOWS:
            return
        task = asyncio.ensure_future(self._open(addr, data, target))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _open(self, addr: Any, first: bytes, target: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        outer = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _: Any) -> None:
                if outer.transport is not None and not outer.transport.is_closing():
                    outer.transport.sendto(data, addr)

        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=target)
        self.flows[addr] = (transport, loop.call_later(UDP_IDLE, self._drop, addr))
        transport.sendto(first)

    def _drop(self, addr: Any) -> None:
        flow = self.flows.pop(addr, None)
        if flow is not None:
            flow[0].close()

    def close(self) -> None:
        for addr in list(self.flows):
            flow = self.flows.pop(addr)
            flow[1].cancel()
            flow[0].close()
        if self.transport is not None:
            self.transport.close()


class Gateway:
    """Listens from engine start; ``http`` and ``dns`` (the agent's loopback listeners) are set once
    the agent is up, and until then connections are closed and non-container names unanswered."""

    address = GATEWAY

    def __init__(self, backend: NetnsIsolation, lookup: Lookup) -> None:
        self.backend, self.lookup = backend, lookup
        self.http: tuple[str, int] | None = None
        self.dns: tuple[str, int] | None = None
        self.dns_port = DNS_PORT
        self.servers: list[asyncio.AbstractServer] = []
        self.udp: list[_UdpIn] = []
        self.conns: set[_Half] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def _socket(self, type_: int) -> socket.socket:
        bridge = self.backend.bridge
        assert bridge is not None
        return await self.backend.socket_in(bridge.hub_fd, socket.AF_INET, type_)

    async def _tcp(self, port: int, target: Callable[[], tuple[str, int] | None]) -> None:
        sock = await self._socket(socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((GATEWAY, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        server = await asyncio.get_running_loop().create_server(
            lambda: _ToAgent(self.conns, target, self.tasks), sock=sock)
        self.servers.append(server)

    async def start(self) -> None:
        await self._tcp(HTTP_PORT, lambda: self.http)
        await self._tcp(DNS_PORT, lambda: self.dns)
        sock = await self._socket(socket.SOCK_DGRAM)
        try:
            sock.bind((GATEWAY, DNS_PORT))
        except OSError:
            sock.close()
            raise
        proto = _UdpIn(lambda: self.dns, self.lookup)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: proto, sock=sock)
        self.udp.append(proto)

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for proto in self.udp:
            proto.close()
        for half in list(self.conns):
            half.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.servers, self.udp = [], []
