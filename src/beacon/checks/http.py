"""HTTP checks: 2xx passing, 429 warning, anything else (or no answer) critical.

All HTTP checks of a scheduler share one :class:`aiohttp.ClientSession` (see
:func:`make_http_session`): a bounded connection pool, no keep-alive (each run opens a fresh
connection, as Consul's checker does, so a server that stops accepting connections is noticed), no
cookie jar (one check must not carry another's cookies), and no proxy settings from the environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from multidict import CIMultiDict

from beacon.checks.definition import CheckDefinition
from beacon.checks.durations import format_duration
from beacon.checks.output import TailBuffer
from beacon.checks.probe import ProbeResult, describe_os_error
from beacon.checks.status import CRITICAL, PASSING, WARNING

__all__ = ["USER_AGENT", "HTTPProbe", "http_status", "make_http_session"]

USER_AGENT = "Consul Health Check"
ACCEPT = "text/plain, text/*, */*"


def make_http_session(connector_limit: int = 512) -> aiohttp.ClientSession:
    """The shared session for HTTP checks (call from within the event loop)."""
    connector = aiohttp.TCPConnector(limit=connector_limit, force_close=True, ttl_dns_cache=10)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
        auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None))


def http_status(code: int) -> str:
    if 200 <= code <= 299:
        return PASSING
    if code == 429:
        return WARNING
    return CRITICAL


class HTTPProbe:
    """One HTTP request per run; the output names the request, the status line and the body."""

    def __init__(self, defn: CheckDefinition, timeout: float,
                 session: Callable[[], aiohttp.ClientSession]) -> None:
        self.url = defn.http
        self.method = (defn.method or "GET").upper()
        self.timeout = timeout
        self.output_max_size = defn.output_max_size
        self.body = defn.body.encode() if defn.body else None
        self.allow_redirects = not defn.disable_redirects
        self.ssl: bool = not defn.tls_skip_verify
        self.server_hostname = defn.tls_server_name or None
        headers: CIMultiDict[str] = CIMultiDict()
        for name, values in defn.header.items():
            for value in values:
                headers.add(name, value)
        headers.setdefault("User-Agent", USER_AGENT)
        headers.setdefault("Accept", ACCEPT)
        self.headers = headers
        self._session = session

    async def run(self) -> ProbeResult:
        # Go's url.Error format: `Get "http://...": reason`.
        op = f'{self.method.capitalize()} "{self.url}"'
        buf = TailBuffer(self.output_max_size)
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session().request(
                        self.method, self.url, headers=self.headers, data=self.body,
                        allow_redirects=self.allow_redirects, ssl=self.ssl,
                        server_hostname=self.server_hostname) as resp:
                    async for chunk in resp.content.iter_chunked(65536):
                        buf.write(chunk)
                    code, reason = resp.status, resp.reason or ""
        except TimeoutError:
            return CRITICAL, f"{op}: timed out after {format_duration(self.timeout)}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return CRITICAL, f"{op}: {_describe(exc)}"
        status_line = f"{code} {reason}".rstrip()
        return http_status(code), f"HTTP {self.method} {self.url}: {status_line} Output: {buf.text()}"

    async def close(self) -> None:
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = describe_os_error(cert_error) if isinstance(cert_error, OSError) else str(cert_error)
        return f"dial tcp {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error is not None:
        return f"dial tcp {exc.host}:{exc.port}: {describe_os_error(exc.os_error)}"
    text = str(exc)
    return text or type(exc).__name__
