"""Fixtures for the DNS tests: catalog builders, a served DNSServer on an ephemeral port, `dig`, and a
tiny upstream DNS server (dnslib) to act as a recursor."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dnslib import QTYPE, RR, DNSRecord

from beacon.dns import DNSConfig, DNSServer
from beacon.server.fsm import MessageType, StateStore

STEP = 5.0  # seconds any single await in these tests may take


def register(store: StateStore, node: str, address: str, service: dict[str, Any] | None = None,
             checks: list[dict[str, Any]] | None = None, node_meta: dict[str, str] | None = None,
             tagged_addresses: dict[str, str] | None = None) -> None:
    payload: dict[str, Any] = {"node": node, "address": address, "node_meta": node_meta or {},
                               "tagged_addresses": tagged_addresses or {}}
    if node_meta is None and tagged_addresses is None and store.get_node(node) is not None:
        payload["skip_node_update"] = True  # adding a service must not wipe the node's meta
    if service is not None:
        payload["service"] = {"id": service.get("service", ""), **service}
    payload["checks"] = [{"node": node, **c} for c in (checks or [])]
    result = store.apply((MessageType.REGISTER, payload))
    assert result.error is None, result.error


def web_store(n: int = 3, service_address: bool = True) -> StateStore:
    """``web`` on n nodes (10.0.0.1..n), service address 10.1.0.i when ``service_address``."""
    store = StateStore()
    for i in range(1, n + 1):
        register(store, f"node{i}", f"10.0.0.{i}",
                 {"service": "web", "port": 8080, "tags": ["v1"] if i % 2 else ["v2"],
                  "address": f"10.1.0.{i}" if service_address else ""},
                 checks=[{"check_id": "serfHealth", "status": "passing"}],
                 node_meta={"rack": f"r{i}"})
    return store


def query(name: str, qtype: str = "A", ident: int = 4242, edns: int | None = None) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = ident
    if edns is not None:
        from dnslib import EDNS0
        q.add_ar(EDNS0(udp_len=edns))
    return bytes(q.pack())


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    servers: list[DNSServer] = []

    async def start(store: StateStore, cfg: DNSConfig | None = None, **kw: Any) -> tuple[DNSServer, int]:
        server = DNSServer(store, cfg or DNSConfig(node_name="node1"), **kw)
        async with asyncio.timeout(STEP):
            port, tcp_port = await server.start("127.0.0.1", 0)
        assert port == tcp_port
        servers.append(server)
        return server, port

    yield start
    for server in servers:
        async with asyncio.timeout(STEP):
            await server.stop()


# ---------------------------------------------------------------------- clients
async def udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one datagram, return the first reply (None on timeout)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, d: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(d)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        try:
            async with asyncio.timeout(timeout):
                return await got
        except TimeoutError:
            return None
    finally:
        transport.close()


async def tcp_exchange(port: int, data: bytes) -> bytes:
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


DIG = shutil.which("dig")
needs_dig = pytest.mark.skipif(DIG is None, reason="`dig` not installed (Debian: bind9-dnsutils)")


async def dig(port: int, *args: str) -> str:
    """Run the real dig against 127.0.0.1:port; return its stdout."""
    assert DIG is not None
    proc = await asyncio.create_subprocess_exec(
        DIG, "@127.0.0.1", "-p", str(port), "+tries=1", "+time=2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(STEP):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode()


def dig_answers(out: str) -> list[list[str]]:
    """The ANSWER section of dig's default output, one field list per record."""
    return _section(out, "ANSWER")


def _section(out: str, name: str) -> list[list[str]]:
    rows: list[list[str]] = []
    inside = False
    for line in out.splitlines():
        if line.startswith(f";; {name} SECTION:"):
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            rows.append(line.split())
    return rows


def dig_section(out: str, name: str) -> list[list[str]]:
    return _section(out, name)


# ---------------------------------------------------------------------- a fake upstream resolver
class Upstream:
    """A dnslib-based authoritative server on 127.0.0.1 (UDP and TCP, one ephemeral port).

    ``records`` maps lower-case names to zone-file RR text; ``rcode`` forces an error reply."""

    def __init__(self, records: dict[str, str] | None = None, rcode: int = 0) -> None:
        self.records = records or {}
        self.rcode = rcode
        self.queries: list[tuple[str, str, bool]] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, data: bytes, tcp: bool) -> bytes:
        req = DNSRecord.parse(data)
        self.queries.append((str(req.q.qname).lower(), QTYPE[req.q.qtype], tcp))
        reply = req.reply()
        reply.header.ra = 1
        if self.rcode:
            reply.header.rcode = self.rcode
            return reply.pack()
        text = self.records.get(str(req.q.qname).lower())
        if text is None:
            reply.header.rcode = 3
        else:
            for rr in RR.fromZone(text):
                reply.add_answer(rr)
        return reply.pack()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        up = self

        class U(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.t.sendto(up.answer(data, False), addr)

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                wire = up.answer(await reader.readexactly(size), True)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
            finally:
                writer.close()

        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            try:
                self._tcp = await asyncio.start_server(on_tcp, "127.0.0.1", port)
            except OSError:
                sock.close()
                continue
            self._udp, _ = await loop.create_datagram_endpoint(U, sock=sock)
            self.port = port
            return port
        raise RuntimeError("no free port for the upstream")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Any]]:
    started: list[Upstream] = []

    async def start(records: dict[str, str] | None = None, rcode: int = 0) -> Upstream:
        up = Upstream(records, rcode)
        async with asyncio.timeout(STEP):
            await up.start()
        started.append(up)
        return up

    yield start
    for up in started:
        async with asyncio.timeout(STEP):
            await up.stop()


def free_udp_port() -> int:
    """A UDP port with nobody listening (for a recursor that never answers: ICMP refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
