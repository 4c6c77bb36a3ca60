"""A small HTTP/1.1 server for the Docker Engine API.

Why not aiohttp: dockerd's API needs exact control of three things aiohttp makes awkward: flushing
a response's headers before its body exists (``wait``), hijacking the connection into a raw stream
after ``101 UPGRADED`` (``exec``, ``attach``), and an ``application/json`` content type with no
charset. The server does keep-alive, Content-Length and chunked request bodies, chunked streaming
responses (closing the connection afterwards), and answers malformed requests with a JSON 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from beacon.numbers import ascii_int
from beacon.runtime._errors import EngineError, InvalidParameter

log = logging.getLogger(__name__)
LINE_LIMIT = 64 * 1024
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024
MAX_UPLOAD = 2 * 1024 * 1024 * 1024  # image loads, imports, build contexts, archive uploads
UPLOAD_RE = re.compile(r"^(/v[0-9.]+)?/(images/load|images/create|build|containers/[^/]+/archive)/?$")


class BadRequest(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.q(name)
        if value is None:
            return default
        return value.lower() not in ("", "0", "false", "no")

    def json(self, default: Any = None) -> Any:
        if not self.body.strip():
            return default
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameter(f"invalid JSON: {exc}") from exc

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.headers.get("connection", "").lower()


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encodable, or bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode() + b"\n"


@dataclass
class Stream:
    """A streamed body: chunked, or raw after a connection hijack (``hijack=True``)."""

    body: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "application/json"
    hijack: bool = False
    upgrade: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None  # runs once the response ends, even if never started
    # hijacked only: consumes what the client sends (stdin of attach/exec) while the body streams
    on_input: Callable[[asyncio.StreamReader], Awaitable[None]] | None = None


Handler = Callable[[Request], Awaitable[Response | Stream]]


class HttpServer:
    def __init__(self, handler: Handler, headers: dict[str, str]) -> None:
        self.handler = handler
        self.common_headers = headers
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        self.path = ""

    async def start_unix(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                if _answers(path):
                    raise EngineError(f"another engine is already serving {path}")
                os.unlink(path)  # stale socket from an earlier run
        except FileNotFoundError:
            pass
        old = os.umask(0o177)  # the socket is created 0600: it grants full control of the host
        try:
            self.server = await asyncio.start_unix_server(self._serve, path, limit=LINE_LIMIT)
        except OSError as exc:  # e.g. a path longer than the 107 bytes a unix socket allows
            raise EngineError(f"cannot serve the engine API on {path}: {exc.strerror or exc}") from exc
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.path = path

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            if self.path:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            while True:
                try:
                    req = await self._read_request(reader)
                except BadRequest as exc:
                    await self._send(writer, Response(400, {"message": str(exc)}), keep_alive=False)
                    return
                if req is None:
                    return
                try:
                    resp = await self.handler(req)
                except Exception as exc:  # the handler maps known errors; this is a bug, keep serving
                    log.exception("handler failed for %s %s", req.method, req.path)
                    resp = Response(500, {"message": f"internal error: {exc}"})
                if isinstance(resp, Stream):
                    await self._send_stream(reader, writer, resp, req.method == "HEAD")
                    return
                keep = req.headers.get("connection", "").lower() != "close"
                await self._send(writer, resp, keep_alive=keep, head=req.method == "HEAD")
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise BadRequest("request line too long") from exc
        if not line:
            return None
        try:
            method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
        except ValueError as exc:
            raise BadRequest("malformed request line") from exc
        if not version.startswith("HTTP/1."):
            raise BadRequest(f"unsupported protocol {version!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                raw = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError) as exc:
                raise BadRequest("header line too long") from exc
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise BadRequest("malformed header line")
            headers[name.strip().lower()] = value.strip()
        else:
            raise BadRequest("too many headers")
        parts = urlsplit(target)
        limit = MAX_UPLOAD if UPLOAD_RE.match(parts.path) else MAX_BODY
        body = await self._read_body(reader, headers, limit)
        return Request(method.upper(), unquote(parts.path), parse_qs(parts.query, keep_blank_values=True),
                       headers, body)

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str],
                         limit: int = MAX_BODY) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = (await reader.readline()).split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError as exc:
                    raise BadRequest("malformed chunk size") from exc
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise BadRequest("request body too large")
                chunks.append(await reader.readexactly(size))
                await reader.readline()
        length = ascii_int(headers.get("content-length", "0") or "0")
        if length is None:
            raise BadRequest("malformed Content-Length")
        if length > limit:
            raise BadRequest("request body too large")
        return await reader.readexactly(length) if length else b""

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        if status == 101:
            reason = "UPGRADED"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in {**self.common_headers, **headers}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, keep_alive: bool,
                    head: bool = False) -> None:
        body = b"" if resp.status in (204, 304) else resp.encode()
        headers = dict(resp.headers)
        if resp.status not in (204, 304):
            headers["Content-Type"] = resp.content_type
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "keep-alive" if keep_alive else "close"
        writer.write(self._head(resp.status, headers) + (b"" if head else body))
        await writer.drain()

    async def _send_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           resp: Stream, head: bool) -> None:
        headers = {"Content-Type": resp.content_type, **resp.headers}
        if resp.hijack and resp.upgrade:
            status = 101
            headers.update({"Connection": "Upgrade", "Upgrade": "tcp"})
        else:
            status = resp.status
            headers["Connection"] = "close"
            if not resp.hijack:
                headers["Transfer-Encoding"] = "chunked"
        writer.write(self._head(status, headers))
        await writer.drain()  # clients wait for the headers before the body exists (wait, events)
        if head:
            if resp.cleanup is not None:
                resp.cleanup()
            return

        async def pump() -> None:
            async for chunk in resp.body:
                if not chunk:
                    continue
                if resp.hijack:
                    writer.write(chunk)
                else:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            if not resp.hijack:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

        body_task = asyncio.create_task(pump())
        input_task = asyncio.create_task(resp.on_input(reader)) if resp.hijack and resp.on_input else None
        # A hijacked client half-closes once it has nothing to send, so only plain streams treat
        # EOF from the client as "gone".
        gone = asyncio.create_task(_wait_eof(reader)) if not resp.hijack else None
        try:
            waiting = {body_task} | ({gone} if gone else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body_task, gone, input_task):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(body_task, *([gone] if gone else []), *([input_task] if input_task else []),
                                 return_exceptions=True)
            agen = resp.body
            if hasattr(agen, "aclose"):
                await agen.aclose()
            if resp.cleanup is not None:
                resp.cleanup()


def _answers(path: str) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass
