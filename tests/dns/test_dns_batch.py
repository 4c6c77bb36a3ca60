"""The batched UDP reader (recvmmsg/sendmmsg): a burst of queries from many senders, cache hits and
misses mixed in one batch, each answer back to its own sender with its own ID."""

from __future__ import annotations

import asyncio
import socket

import pytest
from dnshelpers import STEP, query, udp_exchange, web_store
from dnslib import RCODE, DNSRecord

from beacon.dns import batch

pytestmark = pytest.mark.skipif(not batch.available(), reason="no recvmmsg on this platform")


async def _burst(port: int, queries: list[bytes]) -> list[DNSRecord]:
    """Send every query from its own socket before the server runs (one batch), then collect."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in queries]
    try:
        for s, q in zip(socks, queries, strict=True):
            s.setblocking(False)
            s.sendto(q, ("127.0.0.1", port))
        replies: list[DNSRecord] = []
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(STEP):
            for s in socks:
                replies.append(DNSRecord.parse(await loop.sock_recv(s, 65535)))
        return replies
    finally:
        for s in socks:
            s.close()


async def test_a_burst_mixing_hits_and_misses(served) -> None:
    server, port = await served(web_store(1))
    assert server._batch is not None  # the batched reader serves this socket
    warm = query("web.service.consul", ident=1)
    assert await udp_exchange(port, warm) is not None
    assert warm[2:] in server.udp_cache.entries
    queries = []
    for i in range(150):  # more than one batch (64)
        if i % 3 == 0:
            queries.append(query("web.service.consul", ident=1000 + i))  # cached
        elif i % 3 == 1:
            queries.append(query("node1.node.consul", ident=1000 + i))  # built once, then cached
        else:
            queries.append(query(f"missing-{i}.service.consul", ident=1000 + i))  # NXDOMAIN, each new
    replies = await _burst(port, queries)
    for i, (q, r) in enumerate(zip(queries, replies, strict=True)):
        asked = DNSRecord.parse(q)
        assert r.header.id == 1000 + i
        assert r.q.qname == asked.q.qname
        if i % 3 == 0:
            assert [str(rr.rdata) for rr in r.rr] == ["10.1.0.1"]
        elif i % 3 == 1:
            assert [str(rr.rdata) for rr in r.rr] == ["10.0.0.1"]
        else:
            assert RCODE[r.header.rcode] == "NXDOMAIN"
    assert server.hits[warm[2:]] >= 50


async def test_oversized_and_junk_datagrams_leave_the_reader_serving(served) -> None:
    server, port = await served(web_store(1))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00" * 3, ("127.0.0.1", port))  # too short to be a message
        s.sendto(b"\xff" * 60000, ("127.0.0.1", port))  # junk of any size
    reply = await udp_exchange(port, query("web.service.consul", ident=77))
    assert reply is not None and DNSRecord.parse(reply).header.id == 77
