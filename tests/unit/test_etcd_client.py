"""The etcd client's own keep-alive HTTP/1.1 exchange, against in-process servers on loopback that
answer the way Go's net/http does (Content-Length when the body was buffered whole, chunked when it
was not), and the error split the replicated log relies on: never connected vs outcome unknown."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from beacon.server.etcd_client import EtcdClient, EtcdError, EtcdNotConnected, EtcdUnavailable


async def _server(answer):  # answer(request_body, n) -> raw response bytes or None (hang up)
    seen: list[bytes] = []
    conns = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                seen.append(body)
                raw = answer(body, len(seen))
                if raw is None:
                    writer.close()
                    return
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", seen, lambda: conns


def _plain(doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _chunked(doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


async def test_puts_reuse_one_connection_and_read_both_body_framings() -> None:
    def answer(body: bytes, n: int) -> bytes:
        doc = {"header": {"revision": str(10 + n)}, "prev_kv": {"mod_revision": str(9 + n), "value": "eA==" * 800}}
        return _chunked(doc) if n % 2 else _plain(doc)

    server, url, seen, conns = await _server(answer)
    client = EtcdClient([url])
    try:
        got = [await client.put_prev(b"/k", b"v") for _ in range(4)]
        assert got == [(11, 10), (12, 11), (13, 12), (14, 13)]
        assert json.loads(seen[0]) == {"key": "L2s=", "value": "dg==", "prev_kv": True}
        assert conns() == 1  # keep-alive: one connection for all four
    finally:
        await client.close()
        server.close()


async def test_errors_split_into_refused_unknown_and_answered() -> None:
    with socket.socket() as s:  # a port nobody listens on: the request never reached etcd
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = EtcdClient([dead])
    with pytest.raises(EtcdNotConnected):
        await client.put(b"/k", b"v")

    def answer(body: bytes, n: int) -> bytes | None:
        if n == 1:
            return None  # read the request, then hung up: it may have been applied
        body = json.dumps({"error": "etcdserver: request is too large", "code": 3, "message": "too large"}).encode()
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    server, url, _, conns = await _server(answer)
    client = EtcdClient([url], timeout=2)
    try:
        with pytest.raises(EtcdUnavailable) as unknown:
            await client.put(b"/k", b"v")
        assert not isinstance(unknown.value, EtcdNotConnected)
        with pytest.raises(EtcdError, match="too large"):
            await client.put(b"/k", b"v")
        assert conns() == 2  # the connection that was hung up on was not reused
    finally:
        await client.close()
        server.close()
