"""Transport only: UDP datagrams and TCP 2-byte length framing.

Both protocols hand whole messages to a :class:`Handler` (the server). The UDP path first tries the
answer cache inline: one dict lookup, one index comparison, the ID patch and ``sendto``. That is
the whole hot path; everything else happens in the handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from .cache import AnswerCache
from .catalog import Store

log = logging.getLogger("beacon.dns")

TCP_IDLE_TIMEOUT = 8.0  # miekg/dns (Consul) closes idle TCP connections after 8 s


class Handler(Protocol):
    udp_cache: AnswerCache
    store: Store

    def handle(self, data: bytes, tcp: bool, send: Callable[[bytes], None]) -> object: ...


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.entries = handler.udp_cache.entries
        self.hits = handler.hits
        self.store = handler.store
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        key = data[2:]
        entry = self.entries.get(key)
        if entry is not None and entry[0] == self.store.catalog_version:
            self.sendto(data[:2] + entry[1](), addr)
            hits = self.hits  # folded into the metrics once a second, off the hot path
            hits[key] = hits.get(key, 0) + 1
            return
        sendto, transport = self.sendto, self.transport
        assert transport is not None

        def send(wire: bytes) -> None:
            if not transport.is_closing():
                sendto(wire, addr)

        self.handler.handle(data, False, send)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier replies (client went away): nothing to do, keep serving.
        log.debug("udp error: %r", exc)


class TCPProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.idle_timeout, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        # A message is at most 65535 bytes, so the buffer stays bounded.
        while len(buf) >= 2:
            size = int.from_bytes(buf[:2], "big")
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2:2 + size])
            del buf[:2 + size]
            self.handler.handle(message, True, self.send)
        self._arm()

    def send(self, wire: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(wire).to_bytes(2, "big") + wire)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.transport = None
