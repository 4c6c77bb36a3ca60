"""What stands between the HTTP listener and aiohttp, so that no client can starve the agent.

* **Per-client connections** (Consul's ``limits.http_max_conns_per_client``, default 200): a
  connection over the limit from one IP gets ``429 Too Many Requests`` and is closed at once, as
  Consul's connlimit does.
* **A file-descriptor budget** for HTTP connections as a whole, below the process's ``RLIMIT_NOFILE``,
  so that however many clients come, consensus, checks and the data dir keep descriptors to work with.
* **Header read timeout** (``http_config.read_header_timeout``, default 10 s): a connection whose first
  request headers are not complete in time is closed (slowloris). Later requests on a kept-alive
  connection are bounded by the idle timeout below: aiohttp closes a connection that has not delivered
  a whole request by then.
* **Idle keep-alive timeout** (``http_config.idle_timeout``, default 90 s), handed to aiohttp (and
  kept by the fast read path for the connections it serves itself).

The guard is a thin protocol wrapped around each of aiohttp's request handlers: it decides at
``connection_made`` and otherwise only forwards, so the cost per request is one extra call per read.
On the plain HTTP listener a subclass (:mod:`beacon.agent.http.fastpath`) answers hot reads itself
and creates aiohttp's handler only when a connection sends something else.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("beacon.agent.http")

MAX_LINGERING = 1024
LINGER = 1.0  # seconds a refused connection is kept half-closed so the client can read its 429
_REJECT = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


@dataclass(frozen=True)
class HTTPLimits:
    max_conns_per_client: int = 200   # 0: no limit
    read_header_timeout: float = 10.0  # 0: none
    idle_timeout: float = 90.0
    fd_reserve: int = 1024             # descriptors kept back from HTTP clients


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return it (Consul does the same)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class ConnectionGuard:
    """Counts open HTTP connections per client IP and in all, and admits or refuses new ones."""

    def __init__(self, limits: HTTPLimits, fd_limit: int | None = None) -> None:
        self.limits = limits
        nofile = fd_limit if fd_limit is not None else raise_fd_limit()
        self.max_total = max(64, nofile - limits.fd_reserve)
        self.per_client: dict[str, int] = {}
        self.total = 0
        self.lingering = 0  # refused connections waiting for the client to read its 429
        self.rejected = 0
        self.header_timeouts = 0

    def admit(self, ip: str) -> str | None:
        """Count the connection in, or return why it is refused."""
        if self.total + self.lingering >= self.max_total:
            return "Too many open connections to this agent\n"
        limit = self.limits.max_conns_per_client
        if limit and ip and self.per_client.get(ip, 0) >= limit:
            return f"Your IP is issuing too many concurrent connections, please rate limit your calls (limit {limit})\n"
        self.total += 1
        if ip:
            self.per_client[ip] = self.per_client.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        if ip:
            left = self.per_client[ip] - 1
            if left:
                self.per_client[ip] = left
            else:
                del self.per_client[ip]

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, factory)


class GuardedProtocol(asyncio.Protocol):
    """Admits a connection (or answers 429 and closes it) and enforces the header deadline, then
    hands everything to aiohttp's handler unchanged."""

    __slots__ = ("_guard", "_factory", "_inner", "_ip", "_transport", "_timer", "_tail", "_lingering", "_admitted")

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._ip = ""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._lingering = False
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered subclasses
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else ""
        refusal = self._guard.admit(ip)
        if refusal is not None:
            self._guard.rejected += 1
            body = refusal.encode()
            transport.write(_REJECT % (len(body), body))
            # Closing with the client's request still unread would send a reset that can destroy
            # the 429 before the client reads it: half-close, discard what comes, close soon after.
            if self._guard.lingering >= MAX_LINGERING:  # a flood: descriptors matter more now
                transport.close()
                return
            if transport.can_write_eof():
                transport.write_eof()
            self._guard.lingering += 1
            self._lingering = True
            self._transport = transport
            self._timer = asyncio.get_running_loop().call_later(LINGER, transport.close)
            return
        self._ip = ip
        self._transport = transport
        self._admitted = True
        timeout = self._guard.limits.read_header_timeout
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._header_timeout)
        self.start(transport)

    def start(self, transport: asyncio.Transport) -> None:
        """The connection is admitted: hand it to aiohttp (a subclass may serve it first)."""
        self.start_inner()

    def start_inner(self) -> asyncio.Protocol:
        inner = self._inner = self._factory()
        inner.connection_made(self._transport)  # type: ignore[arg-type]
        return inner

    def head_complete(self) -> None:
        """A request head was seen whole: the header deadline no longer applies."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._tail = b""

    def set_tail(self, data: bytes) -> None:
        """Bytes seen before aiohttp takes over: the header-end search continues after them."""
        if self._timer is not None:
            self._tail = data[-3:]

    def _header_timeout(self) -> None:
        self._timer = None
        self._guard.header_timeouts += 1
        if self._transport is not None:
            log.debug("closing HTTP connection from %s: request headers not complete in time", self._ip)
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: discarded
        if self._timer is not None:
            # Look for the end of the first request's headers, across read boundaries.
            if b"\r\n\r\n" in self._tail + data[:3] or b"\r\n\r\n" in data:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = data[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering:
            self._lingering = False
            self._guard.lingering -= 1
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release(self._ip)
        inner, self._inner, self._transport = self._inner, None, None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


async def serve(runner: Any, sock: Any, guard: ConnectionGuard, backlog: int = 1024,
                ssl_context: Any = None,
                wrap: Callable[[Callable[[], asyncio.Protocol]], Callable[[], asyncio.Protocol]] | None = None,
                ) -> asyncio.Server:
    """Serve an aiohttp ``AppRunner`` (already set up) on a bound socket, through the guard.

    This stands in for ``web.SockSite``: the only difference is the wrapped protocol factory. With
    ``ssl_context`` (the HTTPS API) the loop's TLS transport sits under the guard, so the guard counts
    and times connections the same way and sees decrypted bytes.
    """
    loop = asyncio.get_running_loop()
    extra: dict[str, Any] = {}
    if ssl_context is not None and guard.limits.read_header_timeout > 0:
        # The guard sees a TLS connection only once its handshake is done: bound the handshake too.
        extra["ssl_handshake_timeout"] = guard.limits.read_header_timeout
    factory = (wrap or guard.wrap)(runner.server)  # wrap: the fast read path's protocol (fastpath.py)
    server = await loop.create_server(factory, sock=sock, backlog=backlog, ssl=ssl_context,
                                      **extra)
    return server
