"""A minimal blocking Docker Engine API client over a unix socket, for the ``beacon`` CLI.

It speaks just enough HTTP/1.1 for the engine (or a real dockerd): JSON requests, Content-Length,
chunked and read-until-close bodies, and the raw stream after a ``101`` upgrade.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

API_PREFIX = "/v1.47"


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Response:
    def __init__(self, status: int, headers: dict[str, str], fp: BinaryIO) -> None:
        self.status, self.headers, self.fp = status, headers, fp

    def chunks(self) -> Iterator[bytes]:
        if self.status in (101, 204, 304):
            if self.status == 101:
                yield from iter(lambda: self.fp.read1(65536), b"")  # type: ignore[attr-defined]
            return
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.fp.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                yield self.fp.read(size)
                self.fp.readline()
        elif "content-length" in self.headers:
            yield self.fp.read(int(self.headers["content-length"]))
        else:
            yield from iter(lambda: self.fp.read1(65536), b"")  # type: ignore[attr-defined]

    def read(self) -> bytes:
        return b"".join(self.chunks())


class EngineClient:
    def __init__(self, socket_path: str, timeout: float | None = 30.0) -> None:
        self.socket_path, self.timeout = socket_path, timeout

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                upgrade: bool = False, timeout: float | None | bool = False) -> _Response:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if timeout is False else timeout)  # type: ignore[arg-type]
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise ClientError(0, f"Cannot connect to the Beacon engine at unix://{self.socket_path}: "
                                 f"{exc.strerror or exc}. Is it running?") from exc
        target = API_PREFIX + path
        if query:
            target += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {target} HTTP/1.1", "Host: beacon", f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head.append("Connection: Upgrade\r\nUpgrade: tcp" if upgrade else "Connection: close")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        fp = sock.makefile("rb")
        sock.close()  # the file object keeps the connection open
        status_line = fp.readline().decode("latin-1").split(" ", 2)
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise ClientError(0, "malformed response from the engine")
        headers: dict[str, str] = {}
        while (line := fp.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        resp = _Response(int(status_line[1]), headers, fp)
        if resp.status >= 400:
            raw = resp.read()
            try:
                message = json.loads(raw)["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace").strip()
            raise ClientError(resp.status, message)
        return resp

    def json(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        raw = self.request(method, path, query, body).read()
        return json.loads(raw) if raw.strip() else None

    def container_path(self, ref: str, action: str = "") -> str:
        return f"/containers/{quote(ref, safe='')}" + (f"/{action}" if action else "")


def demux(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split Docker's multiplexed stream into ``(stream, payload)`` pairs."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 8:
            stream, size = struct.unpack(">BxxxI", buf[:8])
            if len(buf) < 8 + size:
                break
            yield stream, buf[8: 8 + size]
            buf = buf[8 + size:]
