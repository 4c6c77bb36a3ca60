"""The etcd client's own keep-alive HTTP/1.1 exchange, against in-process servers on loopback that
answer the way Go's net/http does (Content-Length when the body was buffered whole, chunked when it
was not), and the error split the replicated log relies on: never connected vs outcome unknown."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest

from beacon.server.etcd_client import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdNoLeader,
    EtcdNotConnected,
    EtcdUnavailable,
)


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


async def _member(leader: bool, heads: list[bytes]):
    """A member that answers like etcd's gateway: with no leader, a request carrying gRPC's
    ``hasleader`` metadata is refused at once (503, code 14); everything else is answered."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                heads.append(head)
                if not leader and b"grpc-metadata-hasleader: true" in head.lower():
                    status, doc = b"503 Service Unavailable", {"error": "etcdserver: no leader",
                                                              "message": "etcdserver: no leader", "code": 14}
                else:
                    status, doc = b"200 OK", {"header": {"revision": "7"}, "kvs": [], "members": [],
                                              "prev_kv": {"mod_revision": "6"}}
                body = json.dumps(doc).encode()
                writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_requests_that_need_a_leader_ask_for_one_and_a_refusal_proposed_nothing() -> None:
    heads: list[bytes] = []
    server, url = await _member(False, heads)
    client = EtcdClient([url], timeout=2)
    try:
        with pytest.raises(EtcdNoLeader) as refused:
            await client.put_prev(b"/k", b"v")
        assert isinstance(refused.value, EtcdNotConnected)  # the log retries it; nothing can commit later
        with pytest.raises(EtcdNoLeader):
            await client.range(b"/k")  # linearizable: needs the leader's read index
        # Served by the member alone, so they do not ask for a leader and are answered.
        assert await client.range(b"/k", serializable=True) == (7, [])
        assert await client.member_list() == []
    finally:
        await client.close()
        server.close()
    asked = [b"grpc-metadata-hasleader: true" in h.lower() for h in heads]
    assert asked == [True, True, False, False]


async def test_a_member_without_a_leader_sends_the_request_to_the_next_endpoint() -> None:
    cut_off: list[bytes] = []
    majority: list[bytes] = []
    s1, url1 = await _member(False, cut_off)
    s2, url2 = await _member(True, majority)
    client = EtcdClient([url1, url2], timeout=2)
    try:
        assert await client.put_prev(b"/k", b"v") == (7, 6)
    finally:
        await client.close()
        s1.close()
        s2.close()
    assert len(cut_off) == 1 and len(majority) == 1


def _msg(result: dict) -> bytes:
    return json.dumps({"result": result}).encode() + b"\n"


async def _watch_server(parts: list[bytes], status: int = 200):
    """Answers one watch request with ``parts`` written one by one (each its own TCP write), then
    ends the chunked body."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        seen.append(head + await reader.readexactly(length))
        if status != 200:
            writer.write(b"HTTP/1.1 %d Oops\r\nContent-Length: 4\r\n\r\noops" % status)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)  # separate reads on the client's side
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_watch_reads_messages_across_chunk_and_read_boundaries() -> None:
    def put(rev: int, value: bytes) -> dict:
        kv = {"key": "L2s=", "mod_revision": str(rev), "value": base64.b64encode(value).decode()}
        return {"header": {"revision": str(rev)}, "events": [{"kv": kv}]}

    created = _chunk(_msg({"header": {"revision": "4"}, "created": True}))
    five, six = _chunk(_msg(put(5, b"five"))), _chunk(_msg(put(6, b"six" * 1000)))
    deleted = _chunk(_msg({"header": {"revision": "7"}, "events": [
        {"type": "DELETE", "kv": {"key": "L2s=", "mod_revision": "7"}}]}))
    # A chunk cut in its size line and in its data, two chunks in one write, a large one.
    parts = [created[:2], created[2:] + five[:30], five[30:], six + deleted]
    server, url, seen = await _watch_server(parts)
    client = EtcdClient([url])
    got = []
    try:
        with pytest.raises(EtcdUnavailable, match="ended"):
            async for rev, events in client.watch(b"/k", 5):
                got.append((rev, [(e["type"], e["kv"].mod_revision, e["kv"].value) for e in events]))
    finally:
        await client.close()
        server.close()
    assert b"POST /v3/watch " in seen[0] and b'"start_revision":"5"' in seen[0]
    assert got == [(4, []), (5, [("PUT", 5, b"five")]), (6, [("PUT", 6, b"six" * 1000)]), (7, [("DELETE", 7, b"")])]


async def test_watch_reports_compaction_and_refusal() -> None:
    compacted = _chunk(_msg({"header": {"revision": "9"}, "canceled": True, "compact_revision": "8"}))
    server, url, _ = await _watch_server([compacted])
    client = EtcdClient([url])
    try:
        with pytest.raises(EtcdCompacted) as exc:
            async for _ in client.watch(b"/k", 2):
                pass
        assert exc.value.compact_revision == 8
    finally:
        await client.close()
        server.close()
    server, url, _ = await _watch_server([], status=503)
    client = EtcdClient([url])
    try:
        with pytest.raises(EtcdUnavailable, match="503"):
            async for _ in client.watch(b"/k", 2):
                pass
    finally:
        await client.close()
        server.close()
