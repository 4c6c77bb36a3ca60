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
from typing import TYPE_CHECKING, Any

from beacon.runtime._bridge import GATEWAY
from beacon.runtime._relay import _Half

if TYPE_CHECKING:
    from beacon.runtime._isolation import NetnsIsolation

log = logging.getLogger(__name__)
UDP_IDLE = 30.0
UDP_MAX_FLOWS = 1024
HTTP_PORT = 8500
DNS_PORT = 53


class _ToAgent(_Half):
    """A container's connection to the gateway: opens one to the agent on loopback, then links."""

    def __init__(self, conns: set[_Half], target: tuple[str, int], tasks: set[asyncio.Task[None]]) -> None:
        super().__init__(conns)
        self.target, self.tasks = target, tasks

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        task = asyncio.ensure_future(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, inner = await loop.create_connection(lambda: _Half(self.conns), *self.target)
        except OSError as exc:
            log.debug("gateway: agent at %s:%s unreachable: %s", *self.target, exc)
            self.transport.close()
            return
        if self.transport.is_closing():
            inner.transport.close()
            return
        self.link(inner)
        inner.link(self)


class _UdpIn(asyncio.DatagramProtocol):
    """DNS over UDP: one loopback socket per container address, dropped after UDP_IDLE seconds."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: Any = None
        self.flows: dict[Any, tuple[Any, asyncio.TimerHandle]] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is not None:
            transport, timer = flow
            timer.cancel()
            self.flows[addr] = (transport, asyncio.get_running_loop().call_later(UDP_IDLE, self._drop, addr))
            transport.sendto(data)
            return
        if len(self.flows) >= UDP_MAX_FLOWS:
            return
        task = asyncio.ensure_future(self._open(addr, data))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _open(self, addr: Any, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        outer = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _: Any) -> None:
                if outer.transport is not None and not outer.transport.is_closing():
                    outer.transport.sendto(data, addr)

        transport, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
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
    address = GATEWAY

    def __init__(self, backend: NetnsIsolation, http: tuple[str, int] | None, dns: tuple[str, int] | None) -> None:
        self.backend, self.http, self.dns = backend, http, dns
        self.dns_port = DNS_PORT if dns else 0
        self.servers: list[asyncio.AbstractServer] = []
        self.udp: list[_UdpIn] = []
        self.conns: set[_Half] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def _socket(self, type_: int) -> socket.socket:
        bridge = self.backend.bridge
        assert bridge is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.backend._pool, self.backend._socket_in, bridge.hub_fd,
                                          socket.AF_INET, type_)

    async def _tcp(self, port: int, target: tuple[str, int]) -> None:
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
        if self.http:
            await self._tcp(HTTP_PORT, self.http)
        if self.dns:
            await self._tcp(DNS_PORT, self.dns)
            sock = await self._socket(socket.SOCK_DGRAM)
            try:
                sock.bind((GATEWAY, DNS_PORT))
            except OSError:
                sock.close()
                raise
            proto = _UdpIn(self.dns)
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
