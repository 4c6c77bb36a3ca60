"""H2PING checks: open an HTTP/2 connection and send a PING; passing when the ACK comes back.

As Consul: TLS (with ALPN ``h2``) unless ``H2PingUseTLS`` is false, then HTTP/2 over cleartext with
prior knowledge; ``TLSSkipVerify`` and ``TLSServerName`` apply. The framing is the ``h2`` library's.
"""

from __future__ import annotations

import asyncio
import os
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from beacon.checks.definition import CheckDefinition
from beacon.checks.durations import format_duration
from beacon.checks.probe import ProbeResult, describe_os_error, split_host_port
from beacon.checks.status import CRITICAL, PASSING

__all__ = ["H2PingProbe"]


class H2PingProbe:
    def __init__(self, defn: CheckDefinition, timeout: float) -> None:
        self.target = defn.h2ping
        self.timeout = timeout
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname: str | None = None
        if defn.h2ping_use_tls:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["h2"])
            if defn.tls_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.ssl = ctx
            self.server_hostname = defn.tls_server_name or None

    async def run(self) -> ProbeResult:
        try:
            host, port = split_host_port(self.target)
        except ValueError as exc:
            return CRITICAL, f"Failed to dial to {self.target}: {exc}"
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=self.ssl,
                        server_hostname=(self.server_hostname or host) if self.ssl else None)
                except OSError as exc:
                    return CRITICAL, f"Failed to dial to {self.target}: {describe_os_error(exc)}"
                try:
                    await _ping(reader, writer)
                finally:
                    # Not awaited: a TLS peer may never answer close_notify, and the verdict is in.
                    writer.close()
        except TimeoutError:
            return CRITICAL, f"HTTP2 ping failed: timed out after {format_duration(self.timeout)}"
        except (OSError, h2.exceptions.ProtocolError, ConnectionError, ValueError) as exc:
            return CRITICAL, f"HTTP2 ping failed: {exc or type(exc).__name__}"
        return PASSING, "HTTP2 ping was successful"

    async def close(self) -> None:
        return None


async def _ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    payload = os.urandom(8)
    conn.ping(payload)
    writer.write(conn.data_to_send())
    await writer.drain()
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed before the PING was acknowledged")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.PingAckReceived) and event.ping_data == payload:
                return
            if isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError(f"server sent GOAWAY (error code {event.error_code})")
        pending = conn.data_to_send()
        if pending:  # SETTINGS ACKs and the like
            writer.write(pending)
            await writer.drain()
