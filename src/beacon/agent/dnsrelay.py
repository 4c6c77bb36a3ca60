"""DNS on client agents with ACLs off: relay each query to a server's DNS listener and the answer back.

Client agents hold no catalog. Like Consul clients (which turn a DNS query into an RPC to a server),
they pass the query to a server, rewriting the 2-byte ID so answers from one upstream socket find
their way back. Over TCP each query is relayed on its own upstream connection. The server answers
with its own DNS token, so with ACLs on a client agent asks over the server RPC with its own token
instead (:mod:`beacon.agent.dnsrpc`, which reuses this listener).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Callable

log = logging.getLogger("beacon.dns.relay")

Targets = Callable[[], list[tuple[str, int]]]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: DNSRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.answer(data)


class _Downstream(asyncio.DatagramProtocol):
    def __init__(self, relay: DNSRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.query(data, addr)


class DNSRelay:
    def __init__(self, targets: Targets, timeout: float = 2.0) -> None:
        self.targets = targets
        self.timeout = timeout
        self._ids = itertools.cycle(range(1, 65536))
        self._pending: dict[int, tuple[bytes, tuple[str, int], asyncio.TimerHandle]] = {}
        self._down: _Downstream | None = None
        self._up: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._tcp: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on UDP and TCP ``host:port``; port 0 picks one ephemeral port free for both (the
        kernel's UDP choice can be taken on TCP: try a few)."""
        loop = asyncio.get_running_loop()
        attempts = 8 if port == 0 else 1
        for attempt in range(attempts):
            transport, proto = await loop.create_datagram_endpoint(lambda: _Downstream(self), local_addr=(host, port))
            bound = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, host, bound)
            except OSError:
                transport.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._down = proto
            return bound
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        if self._down is not None and self._down.transport is not None:
            self._down.transport.close()
        for t in self._up.values():
            t.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _upstream(self, target: tuple[str, int]) -> asyncio.DatagramTransport:
        t = self._up.get(target)
        if t is None or t.is_closing():
            loop = asyncio.get_running_loop()
            t, _ = await loop.create_datagram_endpoint(lambda: _Upstream(self), remote_addr=target)
            self._up[target] = t
        return t

    def query(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        asyncio.get_running_loop().create_task(self._send(data, addr))

    async def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        targets = self.targets()
        if not targets:
            self._servfail(data, addr)
            return
        new_id = next(self._ids)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, self._expire, new_id)
        self._pending[new_id] = (data[:2], addr, timer)
        try:
            up = await self._upstream(targets[0])
            up.sendto(struct.pack("!H", new_id) + data[2:])
        except OSError:
            self._expire(new_id)

    def answer(self, data: bytes) -> None:
        if len(data) < 2:
            return
        (rid,) = struct.unpack("!H", data[:2])
        entry = self._pending.pop(rid, None)
        if entry is None or self._down is None or self._down.transport is None:
            return
        old_id, addr, timer = entry
        timer.cancel()
        self._down.transport.sendto(old_id + data[2:], addr)

    def _expire(self, rid: int) -> None:
        entry = self._pending.pop(rid, None)
        if entry is not None:
            entry[2].cancel()

    def _servfail(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._down is None or self._down.transport is None:
            return
        self._down.transport.sendto(servfail_reply(data), addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                query = await reader.readexactly(struct.unpack("!H", head)[0])
                targets = self.targets()
                if not targets:
                    break
                host, port = targets[0]
                ur, uw = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
                try:
                    uw.write(head + query)
                    await uw.drain()
                    rhead = await asyncio.wait_for(ur.readexactly(2), self.timeout)
                    reply = await asyncio.wait_for(ur.readexactly(struct.unpack("!H", rhead)[0]), self.timeout)
                finally:
                    uw.close()
                writer.write(rhead + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass
        finally:
            writer.close()


def servfail_reply(data: bytes) -> bytes:
    """SERVFAIL for the query ``data`` (at least a header): its ID and question, QR set, opcode and RD kept."""
    flags = struct.unpack("!H", data[2:4])[0]
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0002  # QR, keep opcode/RD, RCODE=SERVFAIL
    return data[:2] + struct.pack("!H", reply_flags) + data[4:]
