"""Published ports: relays from a host address to a port inside the container, no iptables.

Each accepted TCP connection gets a fresh socket opened inside the container's network (see
``Isolation.open_socket``) connected to ``127.0.0.1:<container port>``. Bytes are copied between the
two transports with flow control (a slow reader pauses the fast writer) and half-closes are passed
on, so ``shutdown(SHUT_WR)`` on one side reaches the other. UDP keeps one container-side socket per
client address, dropped after ``UDP_IDLE`` seconds without traffic.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from beacon.runtime._errors import EngineError
from beacon.runtime._isolation import Isolation, Spawned

log = logging.getLogger(__name__)
UDP_IDLE = 60.0
UDP_MAX_FLOWS = 1024


class _Half(asyncio.Protocol):
    """One side of a relayed TCP connection; writes what it reads to its peer's transport."""

    def __init__(self, conns: set[_Half]) -> None:
        self.conns = conns
        self.peer: _Half | None = None
        self.transport: Any = None
        self.pending: list[bytes] = []
        self.got_eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conns.add(self)

    def splice(self, inner: _Half) -> None:
        """Join this accepted connection to ``inner``, the one just opened for it; if the client left
        while that was being opened, close ``inner`` instead."""
        if self.transport.is_closing():
            inner.transport.close()
            return
        self.link(inner)
        inner.link(self)

    def link(self, peer: _Half) -> None:
        self.peer, peer.peer = peer, self
        for data in self.pending:
            peer.transport.write(data)
        self.pending.clear()
        if self.got_eof:
            self._forward_eof()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        if self.peer is not None:
            self._forward_eof()
        return True  # stay half-open until the other direction finishes too

    def _forward_eof(self) -> None:
        assert self.peer is not None
        if self.peer.got_eof:
            self.close()
        elif self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self)
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.close()

    def close(self) -> None:
        for half in (self, self.peer):
            if half is not None and half.transport is not None and not half.transport.is_closing():
                half.transport.close()


class _Outer(_Half):
    """The host side: on accept it opens the container side, then links the two."""

    def __init__(self, relay: PortRelay) -> None:
        super().__init__(relay.conns)
        self.relay = relay

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        task = asyncio.ensure_future(self._connect_inner())
        self.relay.tasks.add(task)
        task.add_done_callback(self.relay.tasks.discard)

    async def _connect_inner(self) -> None:
        relay, loop = self.relay, asyncio.get_running_loop()
        sock = None
        try:
            sock = await relay.isolation.open_socket(relay.spawned, socket.AF_INET, socket.SOCK_STREAM)
            await loop.sock_connect(sock, ("127.0.0.1", relay.container_port))
            _, inner = await loop.create_connection(lambda: _Half(self.conns), sock=sock)
        except OSError as exc:
            log.debug("relay to container port %s failed: %s", relay.container_port, exc)
            if sock is not None:
                sock.close()
            self.transport.close()
            return
        self.splice(inner)


class _UdpFlow(asyncio.DatagramProtocol):
    def __init__(self, relay: PortRelay, client: Any) -> None:
        self.relay, self.client = relay, client
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.touch()

    def touch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(UDP_IDLE, self.close)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.touch()
        if self.relay.udp_transport is not None:
            self.relay.udp_transport.sendto(data, self.client)

    def close(self) -> None:
        self.relay.flows.pop(self.client, None)
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()


class _UdpOuter(asyncio.DatagramProtocol):
    def __init__(self, relay: PortRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.relay.flows.get(addr)
        if flow is not None and flow.transport is not None:
            flow.touch()
            flow.transport.sendto(data)
        elif len(self.relay.flows) < UDP_MAX_FLOWS:
            task = asyncio.ensure_future(self.relay.open_flow(addr, data))
            self.relay.tasks.add(task)
            task.add_done_callback(self.relay.tasks.discard)


class PortRelay:
    """One published port: ``host_ip:host_port`` -> container ``127.0.0.1:container_port``."""

    def __init__(self, isolation: Isolation, spawned: Spawned, proto: str, host_ip: str, host_port: int,
                 container_port: int) -> None:
        self.isolation, self.spawned, self.proto = isolation, spawned, proto
        self.host_ip, self.host_port, self.container_port = host_ip or "0.0.0.0", host_port, container_port
        self.conns: set[_Half] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.flows: dict[Any, _UdpFlow] = {}
        self.server: asyncio.AbstractServer | None = None
        self.udp_transport: Any = None

    async def start(self) -> int:
        """Bind the host side; returns the bound port (the kernel picks one when asked for 0)."""
        loop = asyncio.get_running_loop()
        try:
            if self.proto == "tcp":
                self.server = await loop.create_server(lambda: _Outer(self), self.host_ip, self.host_port,
                                                       reuse_address=True, backlog=1024)
                sockname = self.server.sockets[0].getsockname()
            else:
                self.udp_transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpOuter(self), local_addr=(self.host_ip, self.host_port))
                sockname = self.udp_transport.get_extra_info("sockname")
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EngineError(f"Bind for {self.host_ip}:{self.host_port} failed: port is already allocated") from exc
            raise EngineError(f"cannot publish {self.host_ip}:{self.host_port}/{self.proto}: {exc.strerror}") from exc
        self.host_port = int(sockname[1])
        return self.host_port

    async def open_flow(self, client: Any, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await self.isolation.open_socket(self.spawned, socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(("127.0.0.1", self.container_port))
            flow = _UdpFlow(self, client)
            await loop.create_datagram_endpoint(lambda: flow, sock=sock)
        except OSError as exc:
            log.debug("udp relay to %s failed: %s", self.container_port, exc)
            return
        if self.udp_transport is None:
            flow.close()
            return
        self.flows[client] = flow
        flow.transport.sendto(first)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.udp_transport is not None:
            self.udp_transport.close()
            self.udp_transport = None
        for flow in list(self.flows.values()):
            flow.close()
        for task in list(self.tasks):
            task.cancel()
        for half in list(self.conns):
            if half.transport is not None:
                half.transport.close()
        if self.server is not None:
            await self.server.wait_closed()
