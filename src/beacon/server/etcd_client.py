"""A small asyncio client for etcd v3 through its JSON gateway (``/v3/...`` on the client URL).

Why the gateway rather than a gRPC client (``aetcd``): the gateway speaks the same API (put, txn,
range, watch, leases, members, compaction), and on this machine both reach about the same rate from
one Python process (gateway 2.0-2.3k puts/s at 64 in flight, aetcd 2.6k; sequential p50 1.7-1.95 ms
vs 1.6 ms, see shared/reference/engines-facts.md). It saves grpcio and its threads.

Unary requests (every write's put, the reads' range) go over a small pool of keep-alive HTTP/1.1
connections of our own rather than aiohttp's client: the request is one preformatted write and the
answer one read of the head and the body. bench/raft.py measured aiohttp's client at 520-570 µs of
CPU per put against 160-170 µs for this (p50 2.2-2.6 ms vs 1.8 ms against the same member), and a
Beacon write costs one put. The watch stream is one such connection too, its chunked body read
and split by hand: every server reads every log entry from it, and aiohttp's streaming machinery
(parser callbacks, StreamReader, iterator) was a third of a follower's CPU per entry.

Keys and values are bytes on our side and base64 on the wire; 64-bit numbers come back as strings.
Errors: :class:`EtcdError` (etcd answered with an error), :class:`EtcdUnavailable` (no answer: the
request may or may not have been applied), :class:`EtcdCompacted` (a watch start revision is gone).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson


class EtcdError(Exception):
    """etcd answered, with an error (the request was not applied)."""


class EtcdUnavailable(Exception):
    """No answer from etcd (connection refused, reset, or timeout): outcome unknown."""


class EtcdNotConnected(EtcdUnavailable):
    """The request never reached etcd (connection refused): nothing was proposed."""


class EtcdNoLeader(EtcdNotConnected):
    """The member has no leader and refused the request before proposing it (a request that asks
    for a leader, :data:`NEEDS_LEADER`): nothing was proposed; worth retrying in a moment."""


# Requests that only a member with a leader can serve. They carry gRPC's ``hasleader`` metadata
# (the gateway forwards ``Grpc-Metadata-*`` headers), so a member cut off from its leader refuses
# them at once ("etcdserver: no leader") instead of holding them until a leader is back or etcd's
# request timeout (~7 s): a write during an election is retried every 50 ms, not once per attempt.
# Served locally, and so left without it: serializable ranges, member list, status, watches.
NEEDS_LEADER = frozenset({"kv/put", "kv/txn", "kv/deleterange", "kv/compaction", "lease/grant",
                          "lease/revoke", "lease/keepalive"})
_HASLEADER = b"Grpc-Metadata-Hasleader: true\r\n"


class EtcdCompacted(Exception):
    """The watch start revision has been compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"required revision has been compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KV:
        return cls(unb64(d.get("key")), unb64(d.get("value")), int(d.get("mod_revision", 0)),
                   int(d.get("create_revision", 0)), int(d.get("lease", 0)))


class _Conn:
    """One keep-alive HTTP/1.1 connection to an etcd client URL."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()

    async def post(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; returns (status, body, keep-alive)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        keep = not lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = value.strip().lower() != b"close"
        if chunked:  # Go's server chunks bodies it did not buffer whole (above ~2 KiB)
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                parts.append(await self.reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        elif length >= 0:
            body = await self.reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            body = await self.reader.read()
            keep = False
        return status, body, keep


class EtcdClient:
    """One client per set of endpoints; requests go to the first endpoint that answers."""

    POOL = 32  # idle connections kept per endpoint

    def __init__(self, endpoints: list[str], ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 5.0) -> None:
        self.endpoints = list(endpoints)
        self.ssl = ssl_context
        self.timeout = timeout
        self._idle: dict[str, list[_Conn]] = {}

    async def close(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()

    def _idle_conn(self, ep: str) -> _Conn | None:
        idle = self._idle.get(ep)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, ep: str) -> _Conn:
        scheme, _, hostport = ep.partition("://")
        host, _, port = hostport.rstrip("/").rpartition(":")
        host = host.strip("[]")
        tls = (self.ssl or ssl.create_default_context()) if scheme == "https" else None
        reader, writer = await asyncio.open_connection(host, int(port), ssl=tls,
                                                       server_hostname=host if tls is not None else None)
        return _Conn(reader, writer)

    @staticmethod
    def _request(ep: str, path: str, payload: bytes, leader: bool = False) -> bytes:
        host = ep.partition("://")[2].rstrip("/").encode()
        return (b"POST /v3/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s"
                b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host, _HASLEADER if leader else b"",
                                                     len(payload), payload))

    async def _post(self, ep: str, path: str, payload: bytes, timeout: float, leader: bool) -> tuple[int, bytes]:
        conn = self._idle_conn(ep)  # the usual case: no connect, and no timer armed for one
        if conn is None:
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._connect(ep)
            except (OSError, TimeoutError, ssl.SSLError) as exc:  # never reached etcd: nothing was proposed
                raise EtcdNotConnected(f"etcd at {ep}: {str(exc) or type(exc).__name__}") from None
        request = self._request(ep, path, payload, leader)
        keep = False
        try:
            async with asyncio.timeout(timeout):
                status, data, keep = await conn.post(request)
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:  # sent, or maybe sent: outcome unknown
            raise EtcdUnavailable(f"etcd at {ep}: {str(exc) or type(exc).__name__}") from None
        finally:  # a connection whose exchange did not finish (timeout, cancel) is never reused
            if keep and conn.usable() and len(self._idle.setdefault(ep, [])) < self.POOL:
                self._idle[ep].append(conn)
            else:
                conn.close()
        return status, data

    async def call(self, path: str, body: dict[str, Any], timeout: float | None = None,
                   leader: bool | None = None) -> dict[str, Any]:
        """POST one request; tries the endpoints in order while they refuse connections. ``leader``:
        ask for a member with a leader (default: :data:`NEEDS_LEADER` decides by path)."""
        return await self.call_raw(path, orjson.dumps(body), timeout, leader)

    async def call_raw(self, path: str, payload: bytes, timeout: float | None = None,
                       leader: bool | None = None) -> dict[str, Any]:
        """:meth:`call` with the JSON body already encoded."""
        last: Exception | None = None
        if leader is None:
            leader = path in NEEDS_LEADER
        for i, ep in enumerate(self.endpoints):
            try:
                status, data = await self._post(ep, path, payload, timeout or self.timeout, leader)
            except EtcdNotConnected as exc:  # never reached etcd: safe to try the next one
                last = exc
                if i + 1 < len(self.endpoints):
                    continue
                raise
            try:
                doc = orjson.loads(data) if data else {}
            except ValueError:
                raise EtcdError(f"etcd at {ep}: {status} {data[:200]!r}") from None
            if not isinstance(doc, dict):
                raise EtcdError(f"etcd at {ep}: {status} {data[:200]!r}")
            if status != 200 or "error" in doc or "code" in doc and "message" in doc:
                message = doc.get("message") or doc.get("error") or data[:200].decode(errors="replace")
                if leader and "no leader" in str(message):  # refused before any proposal
                    last = EtcdNoLeader(f"etcd at {ep}: {message}")
                    if i + 1 < len(self.endpoints):
                        continue  # another endpoint may be on the side with a leader
                    raise last
                if "timed out" in str(message) or "leader changed" in str(message) \
                        or "no leader" in str(message):
                    raise EtcdUnavailable(f"etcd: {message}")  # proposal outcome unknown
                raise EtcdError(f"etcd: {message}")
            return doc
        raise EtcdNotConnected(f"etcd: {last}")

    # ------------------------------------------------------------------ KV
    async def put(self, key: bytes, value: bytes, lease: int = 0, timeout: float | None = None) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        doc = await self.call("kv/put", body, timeout)
        return int(doc["header"]["revision"])

    async def put_prev(self, key: bytes, value: bytes, timeout: float | None = None) -> tuple[int, int]:
        """Put; returns (revision, mod_revision of the value it replaced, 0 if none).

        (A txn of a keys-only range and the put would spare the previous value in the answer, but
        measured slower and costlier in etcd than ``prev_kv`` even with 2 KiB values.)"""
        # Every write's one request: the body is formatted, not built as a dict and encoded.
        payload = b'{"key":"%s","value":"%s","prev_kv":true}' % (base64.b64encode(key), base64.b64encode(value))
        doc = await self.call_raw("kv/put", payload, timeout)
        prev = doc.get("prev_kv") or {}
        return int(doc["header"]["revision"]), int(prev.get("mod_revision", 0))

    async def range(self, key: bytes, end: bytes | None = None, revision: int = 0, serializable: bool = False,
                    limit: int = 0, keys_only: bool = False,
                    timeout: float | None = None) -> tuple[int, list[KV]]:
        body: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        if revision:
            body["revision"] = str(revision)
        if serializable:
            body["serializable"] = True
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        doc = await self.call("kv/range", body, timeout, leader=not serializable)
        return int(doc["header"]["revision"]), [KV.from_json(k) for k in doc.get("kvs", [])]

    async def get(self, key: bytes, **kw: Any) -> tuple[int, KV | None]:
        rev, kvs = await self.range(key, **kw)
        return rev, (kvs[0] if kvs else None)

    async def delete(self, key: bytes, end: bytes | None = None) -> int:
        body: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        doc = await self.call("kv/deleterange", body)
        return int(doc["header"]["revision"])

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None, timeout: float | None = None) -> tuple[bool, int, dict[str, Any]]:
        doc = await self.call("kv/txn", {"compare": compare, "success": success, "failure": failure or []}, timeout)
        return bool(doc.get("succeeded")), int(doc["header"]["revision"]), doc

    async def compact(self, revision: int) -> None:
        try:
            await self.call("kv/compaction", {"revision": str(revision), "physical": False}, timeout=30)
        except EtcdError as exc:
            if "compacted" not in str(exc):  # already compacted that far: fine
                raise

    # ------------------------------------------------------------------ watch
    async def watch(self, key: bytes, start_revision: int, end: bytes | None = None,
                    progress_notify: bool = True) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """Yield ``(header_revision, events)`` for ``key`` from ``start_revision`` on, in order.

        Each event is ``{"type": "PUT"|"DELETE", "kv": KV}``. Raises :class:`EtcdCompacted` when the
        start revision is gone and :class:`EtcdUnavailable` when the stream breaks.
        """
        create: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
        if end is not None:
            create["range_end"] = b64(end)
        if progress_notify:
            create["progress_notify"] = True
        ep = self.endpoints[0]
        payload = orjson.dumps({"create_request": create})
        try:
            async with asyncio.timeout(3):
                conn = await self._connect(ep)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise EtcdUnavailable(f"etcd watch: {str(exc) or type(exc).__name__}") from None
        reader = conn.reader
        try:
            conn.writer.write(self._request(ep, "watch", payload))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                raise EtcdUnavailable(f"etcd watch: {status} {(await reader.read(200))!r}")
            chunked = b"transfer-encoding: chunked" in head.lower()
            raw = b""   # bytes read, still in chunk framing
            body = b""  # the stream's body, up to the next message end
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                if chunked:
                    raw += data
                    while True:  # whole chunks only; one per message as the gateway writes them
                        nl = raw.find(b"\r\n")
                        if nl < 0:
                            break
                        size = int(raw[:nl].split(b";", 1)[0], 16)
                        if size == 0:
                            raise EtcdUnavailable("etcd watch stream ended")
                        stop = nl + 2 + size
                        if len(raw) < stop + 2:
                            break
                        body += raw[nl + 2:stop]
                        raw = raw[stop + 2:]
                else:
                    body += data
                while True:  # the gateway writes one JSON object per message, newline-delimited
                    nl = body.find(b"\n")
                    if nl < 0:
                        break
                    line, body = body[:nl], body[nl + 1:]
                    if line.strip():
                        yield self._watch_message(line)
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise EtcdUnavailable(f"etcd watch: {str(exc) or type(exc).__name__}") from None
        finally:
            conn.close()
        raise EtcdUnavailable("etcd watch stream ended")

    @staticmethod
    def _watch_message(line: bytes) -> tuple[int, list[dict[str, Any]]]:
        doc = orjson.loads(line)
        if "error" in doc:
            raise EtcdUnavailable(f"etcd watch: {doc['error']}")
        result = doc.get("result", {})
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise EtcdCompacted(compact)
        if result.get("canceled"):
            raise EtcdUnavailable(f"etcd watch canceled: {result.get('cancel_reason', '')}")
        events = [{"type": e.get("type", "PUT"), "kv": KV.from_json(e["kv"])} for e in result.get("events", ())]
        return int(result.get("header", {}).get("revision", 0)), events

    # ------------------------------------------------------------------ leases
    async def lease_grant(self, ttl: int) -> int:
        doc = await self.call("lease/grant", {"TTL": str(ttl)})
        return int(doc["ID"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renew once; returns the remaining TTL (0 or less: the lease is gone)."""
        doc = await self.call("lease/keepalive", {"ID": str(lease)}, timeout=2)
        result = doc.get("result", doc)
        return int(result.get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self.call("lease/revoke", {"ID": str(lease)}, timeout=2)
        except EtcdError:
            pass

    # ------------------------------------------------------------------ cluster
    async def member_list(self) -> list[dict[str, Any]]:
        doc = await self.call("cluster/member/list", {})
        return list(doc.get("members", []))

    async def member_add(self, peer_urls: list[str]) -> dict[str, Any]:
        doc = await self.call("cluster/member/add", {"peerURLs": peer_urls}, timeout=10)
        return doc

    async def member_remove(self, member_id: str) -> None:
        await self.call("cluster/member/remove", {"ID": member_id}, timeout=10)

    async def status(self) -> dict[str, Any]:
        return await self.call("maintenance/status", {}, timeout=2)
