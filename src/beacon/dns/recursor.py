"""Forwarding names outside Beacon's zones to the configured recursors.

The server only knows the :class:`Recursor` protocol (one method), so tests can swap in a fake.
:class:`Recursors` is the real one, with Consul's rules: try the recursors in configured order
(``sequential``) or shuffled (``random``), each under ``recursor_timeout``, over the transport the
client used; a reply whose RCODE is neither NOERROR nor NXDOMAIN, or any network error, moves on to
the next; ``None`` when all failed (the caller then answers SERVFAIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .config import split_recursor

log = logging.getLogger("beacon.dns")

Exchange = Callable[[str, int, bytes, bool, float], Awaitable[bytes]]


class Recursor(Protocol):
    async def resolve(self, query: bytes, tcp: bool) -> bytes | None:
        """The upstream reply to ``query`` (same ID), or None if no recursor answered usefully."""
        ...


class Recursors:
    def __init__(self, addresses: Sequence[str], timeout: float, strategy: str = "sequential",
                 exchange: Exchange | None = None, rng: random.Random | None = None) -> None:
        self.addresses = [split_recursor(a) for a in addresses]
        self.timeout = timeout
        self.strategy = strategy
        self._exchange = exchange or exchange_once
        self._rng = rng or random.Random()

    async def resolve(self, query: bytes, tcp: bool) -> bytes | None:
        order = list(self.addresses)
        if self.strategy == "random":
            self._rng.shuffle(order)
        for host, port in order:
            try:
                reply = await self._exchange(host, port, query, tcp, self.timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("recursor %s:%d failed: %r", host, port, exc)
                continue
            if len(reply) < 12 or reply[:2] != query[:2]:
                continue
            rcode = reply[3] & 0x0F
            if rcode not in (0, 3):
                log.debug("recursor %s:%d answered rcode %d; trying the next", host, port, rcode)
                continue
            return reply
        return None


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, ident: bytes, done: asyncio.Future[bytes]) -> None:
        self.ident = ident
        self.done = done

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.ident and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def exchange_once(host: str, port: int, query: bytes, tcp: bool, timeout: float) -> bytes:
    """One query to one server over UDP or TCP, within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        if tcp:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(len(query).to_bytes(2, "big") + query)
                await writer.drain()
                size = int.from_bytes(await reader.readexactly(2), "big")
                return await reader.readexactly(size)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        done: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OneReply(query[:2], done), remote_addr=(host, port))
        try:
            transport.sendto(query)
            return await done
        finally:
            transport.close()
