"""An asyncio client for the Serf agent's RPC protocol (msgpack over TCP).

The protocol (hashicorp/serf ``cmd/serf/command/agent/ipc.go``): the client sends a request header
``{"Command": str, "Seq": int}``, followed by a body map for commands that take one. The agent answers
with a response header ``{"Seq": int, "Error": str}`` and, for commands that return data, a body map.
``stream``, ``monitor`` and ``query`` keep their Seq open: every later record for them arrives as a
header with that Seq followed by one body.

Whether a body follows a header is not on the wire; it depends on the command. So the reader tracks
what each pending Seq expects. The agent sends *no* body when it refuses a command before dispatching
it (handshake or auth missing, unknown command), whatever the command.

Errors::

    SerfError
     +-- SerfConnectionError   cannot connect, or the connection closed under a pending call
     |    +-- SerfProtocolError   the agent's bytes are not this protocol (garbage, wrong shape)
     +-- SerfTimeout           no answer within the call's deadline
     +-- SerfRPCError          the agent answered with an error string
          +-- SerfAuthError       the RPC auth key was refused (or never given)

Bytes from the socket are decoded with msgpack (no pickle, bounded buffer); anything that is not a
well-formed header/body sequence closes the connection and fails every pending call with
SerfProtocolError, so a peer speaking garbage can neither hang nor crash the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgpack

log = logging.getLogger("beacon.gossip.rpc")

IPC_VERSION = 1
# The agent's own refusals, sent before it dispatches the command and therefore without a body.
_NO_BODY_ERRORS = frozenset({"Handshake required", "Authentication required", "Unsupported command",
                             "Unsupported IPC version", "Handshake already performed"})
# Commands whose successful answer carries a body map (in Serf 0.8.2 as packaged by Debian).
_BODY_COMMANDS = frozenset({"members", "members-filtered", "join", "install-key", "use-key",
                            "remove-key", "list-keys", "stats", "get-coordinate"})
# Answered without a body by Serf 0.8.2 but with one ({"Exists": bool}) by later releases: a body-shaped
# map right after such an answer is skipped rather than taken for a malformed header.
_OPTIONAL_BODY_COMMANDS = frozenset({"force-leave"})
MAX_MESSAGE = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0


class SerfError(Exception):
    """Base of every error this client raises."""


class SerfConnectionError(SerfError):
    pass


class SerfProtocolError(SerfConnectionError):
    pass


class SerfTimeout(SerfError):
    pass


class SerfRPCError(SerfError):
    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body or {}  # key commands answer per-node messages along with the error


class SerfAuthError(SerfRPCError):
    pass


class _Pending:
    __slots__ = ("command", "future", "header")

    def __init__(self, command: str, future: asyncio.Future[dict[str, Any]]) -> None:
        self.command = command
        self.future = future
        self.header: dict[str, Any] | None = None


class RecordStream:
    """Records pushed by the agent for one open Seq (``stream``, ``monitor``, ``query``).

    Iterate with ``async for``; iteration ends when the stream is stopped, the query is done, or the
    connection closes (a closed connection raises SerfConnectionError from the iterator, so callers
    can tell an end from a failure)."""

    def __init__(self, client: SerfClient, seq: int, kind: str, maxsize: int = 4096) -> None:
        self.client = client
        self.seq = seq
        self.kind = kind
        self._queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def _push(self, item: dict[str, Any] | BaseException | None) -> None:
        if self.closed:
            return
        if item is None or isinstance(item, BaseException):
            self.closed = True
        while self._queue.full():  # a slow consumer loses the oldest records, never the reader loop
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Next record, or None once the stream ended; SerfTimeout after `timeout` seconds."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise SerfTimeout(f"no {self.kind} record within {timeout}s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    async def stop(self) -> None:
        """Ask the agent to stop sending (``stop`` command) and end the iteration."""
        self.client._end(self.seq)
        if self.kind != "query" and not self.client.closed:
            with contextlib.suppress(SerfError):
                await self.client._call("stop", {"Stop": self.seq})
        self._push(None)


class SerfClient:
    """One RPC connection to one Serf agent. Calls may run concurrently; each waits for its own Seq."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._streams: dict[int, RecordStream] = {}
        # Seqs of streams we stopped: records already in flight for them are read and dropped.
        self._ended: set[int] = set()
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE, strict_map_key=True)
        self.closed = False
        self.close_reason: SerfConnectionError | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(), name="serf-rpc-reader")

    # ------------------------------------------------------------------ connection
    @classmethod
    async def connect(cls, host: str, port: int, auth_key: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> SerfClient:
        """Connect, handshake (protocol version 1) and authenticate when an auth key is given."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise SerfConnectionError(f"serf rpc {host}:{port}: cannot connect: {exc or type(exc).__name__}") \
                from None
        client = cls(reader, writer, timeout)
        try:
            await client._call("handshake", {"Version": IPC_VERSION})
            if auth_key:
                try:
                    await client._call("auth", {"AuthKey": auth_key})
                except SerfRPCError as exc:
                    raise SerfAuthError(f"serf rpc {host}:{port}: auth refused: {exc}") from None
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        self._shutdown(SerfConnectionError("serf rpc connection closed by the client"))
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def __aenter__(self) -> SerfClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _shutdown(self, reason: SerfConnectionError) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(reason)
        self._pending.clear()
        for s in self._streams.values():
            s._push(reason)
        self._streams.clear()
        self._writer.close()

    # ------------------------------------------------------------------ wire
    async def _read_loop(self) -> None:
        header: dict[str, Any] | None = None
        optional_body = False
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise SerfConnectionError("serf rpc: the agent closed the connection")
                try:
                    self._unpacker.feed(data)
                    for obj in self._unpacker:
                        if header is None:
                            if optional_body and isinstance(obj, dict) and "Seq" not in obj:
                                optional_body = False
                                continue
                            header = self._check_header(obj)
                            if not self._expects_body(header):
                                pending = self._pending.get(header["Seq"])
                                optional_body = pending is not None and pending.command in _OPTIONAL_BODY_COMMANDS
                                self._dispatch(header, None)
                                header = None
                        else:
                            if not isinstance(obj, dict):
                                raise SerfProtocolError(f"serf rpc: expected a body map, got {type(obj).__name__}")
                            self._dispatch(header, obj)
                            header = None
                except SerfError:
                    raise
                except Exception as exc:  # msgpack's FormatError, StackError, BufferFull, ValueError...
                    raise SerfProtocolError(f"serf rpc: undecodable bytes from the agent ({type(exc).__name__}:"
                                            f" {exc})") from None
        except asyncio.CancelledError:
            raise
        except SerfConnectionError as exc:
            self._shutdown(exc)
        except OSError as exc:
            self._shutdown(SerfConnectionError(f"serf rpc: {exc}"))

    @staticmethod
    def _check_header(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict) or not isinstance(obj.get("Seq"), int) or \
                not isinstance(obj.get("Error", ""), str):
            raise SerfProtocolError(f"serf rpc: expected a response header, got {str(obj)[:80]!r}")
        return obj

    def _expects_body(self, header: dict[str, Any]) -> bool:
        seq = header["Seq"]
        pending = self._pending.get(seq)
        if pending is not None:
            return header.get("Error") not in _NO_BODY_ERRORS and pending.command in _BODY_COMMANDS
        if seq in self._streams or seq in self._ended:
            return True
        raise SerfProtocolError(f"serf rpc: answer for unknown seq {seq}")

    def _dispatch(self, header: dict[str, Any], body: dict[str, Any] | None) -> None:
        seq = header["Seq"]
        pending = self._pending.pop(seq, None)
        if pending is not None:
            err = header.get("Error") or ""
            if pending.future.done():
                return
            if err:
                exc_type = SerfAuthError if err in ("Invalid authentication token", "Authentication required") \
                    else SerfRPCError
                pending.future.set_exception(exc_type(f"serf {pending.command}: {err}", body))
            else:
                pending.future.set_result(body or {})
            return
        stream = self._streams.get(seq)
        if stream is not None and body is not None:
            stream._push(body)
            if stream.kind == "query" and body.get("Type") == "done":
                self._end(seq)
                stream._push(None)

    def _end(self, seq: int) -> None:
        self._streams.pop(seq, None)
        self._ended.add(seq)

    def _send(self, command: str, body: dict[str, Any] | None) -> int:
        if self.closed:
            raise self.close_reason or SerfConnectionError("serf rpc connection is closed")
        self._seq += 1
        data = msgpack.packb({"Command": command, "Seq": self._seq}, use_bin_type=True)
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        self._writer.write(data)
        return self._seq

    async def _call(self, command: str, body: dict[str, Any] | None = None, *,
                    stream: list[RecordStream] | None = None, stream_kind: str = "",
                    timeout: float | None = None) -> dict[str, Any]:
        seq = self._send(command, body)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = _Pending(command, fut)
        if stream is not None:  # register before the answer can arrive: records may follow right behind it
            self._streams[seq] = RecordStream(self, seq, stream_kind)
            stream.append(self._streams[seq])
        limit = self.timeout if timeout is None else timeout
        try:
            await self._writer.drain()
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            self._pending.pop(seq, None)
            self._streams.pop(seq, None)
            raise SerfTimeout(f"serf {command}: no answer within {limit}s") from None
        except (ConnectionError, OSError) as exc:
            self._pending.pop(seq, None)
            self._streams.pop(seq, None)
            raise SerfConnectionError(f"serf {command}: {exc}") from None
        except SerfError:
            self._streams.pop(seq, None)
            raise

    async def _open(self, command: str, body: dict[str, Any], kind: str) -> RecordStream:
        # The stream object is kept here, not looked up after the answer: a short query can be over
        # (and dropped from the table) by the time the answer's await returns.
        holder: list[RecordStream] = []
        await self._call(command, body, stream=holder, stream_kind=kind)
        return holder[0]

    # ------------------------------------------------------------------ commands
    async def members(self) -> list[dict[str, Any]]:
        return list((await self._call("members")).get("Members") or [])

    async def members_filtered(self, tags: dict[str, str] | None = None, status: str = "",
                               name: str = "") -> list[dict[str, Any]]:
        """Filters are regular expressions anchored at both ends, as in `serf members -tag`."""
        body = {"Tags": tags or {}, "Status": status, "Name": name}
        return list((await self._call("members-filtered", body)).get("Members") or [])

    async def join(self, addresses: list[str], replay: bool = False) -> int:
        """Join the pool through any of `addresses` ("host:port"); returns how many answered."""
        resp = await self._call("join", {"Existing": list(addresses), "Replay": replay}, timeout=max(self.timeout, 30))
        return int(resp.get("Num", 0))

    async def leave(self) -> None:
        """Gracefully leave the pool; the agent then shuts itself down."""
        await self._call("leave", timeout=max(self.timeout, 30))

    async def force_leave(self, node: str, prune: bool = False) -> None:
        """Mark a failed member `left` (with `prune`, also drop it from the member list at once)."""
        await self._call("force-leave", {"Node": node, "Prune": prune}, timeout=max(self.timeout, 30))

    async def event(self, name: str, payload: bytes = b"", coalesce: bool = True) -> None:
        await self._call("event", {"Name": name, "Payload": payload, "Coalesce": coalesce})

    async def tags(self, tags: dict[str, str] | None = None, delete: list[str] | None = None) -> None:
        await self._call("tags", {"Tags": tags or {}, "DeleteTags": delete or []})

    async def stream(self, types: str = "*") -> RecordStream:
        """Subscribe to events: a comma list of member-join, member-leave, member-failed, member-update,
        member-reap, user, user:NAME, query, query:NAME, or `*`."""
        return await self._open("stream", {"Type": types}, "stream")

    async def monitor(self, level: str = "INFO") -> RecordStream:
        """The agent's log lines at `level` and above, as records ``{"Log": line}``."""
        return await self._open("monitor", {"LogLevel": level}, "monitor")

    async def query(self, name: str, payload: bytes = b"", *, filter_nodes: list[str] | None = None,
                    filter_tags: dict[str, str] | None = None, request_ack: bool = False,
                    relay_factor: int = 0, timeout: float = 0.0) -> RecordStream:
        """Start a query; records are ``{"Type": "ack"|"response"|"done", "From", "Payload"}`` and the
        stream ends after "done". `timeout` 0 lets Serf pick its default (scaled by cluster size)."""
        body = {"FilterNodes": filter_nodes or [], "FilterTags": filter_tags or {}, "RequestAck": request_ack,
                "RelayFactor": relay_factor, "Timeout": int(timeout * 1e9), "Name": name, "Payload": payload}
        return await self._open("query", body, "query")

    async def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a query received on a stream (the record's ID), from the connection that received it."""
        await self._call("respond", {"ID": query_id, "Payload": payload})

    async def get_coordinate(self, node: str) -> dict[str, Any] | None:
        """The Vivaldi coordinate Serf holds for `node` (its own, or the cached one of a peer)."""
        resp = await self._call("get-coordinate", {"Node": node})
        return resp.get("Coord") if resp.get("Ok") else None

    async def install_key(self, key: str) -> dict[str, Any]:
        return await self._call("install-key", {"Key": key}, timeout=max(self.timeout, 30))

    async def use_key(self, key: str) -> dict[str, Any]:
        return await self._call("use-key", {"Key": key}, timeout=max(self.timeout, 30))

    async def remove_key(self, key: str) -> dict[str, Any]:
        return await self._call("remove-key", {"Key": key}, timeout=max(self.timeout, 30))

    async def list_keys(self) -> dict[str, Any]:
        """``{"Keys": {key: nodes holding it}, "NumNodes", "NumResp", "NumErr", "Messages"}``."""
        return await self._call("list-keys", timeout=max(self.timeout, 30))

    async def stats(self) -> dict[str, Any]:
        return await self._call("stats")
