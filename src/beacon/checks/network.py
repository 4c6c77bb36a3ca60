"""TCP and UDP checks."""

from __future__ import annotations

import asyncio
import contextlib

from beacon.checks.durations import format_duration
from beacon.checks.probe import ProbeResult, describe_os_error, split_host_port
from beacon.checks.status import CRITICAL, PASSING

__all__ = ["UDP_MESSAGE", "UDP_REPLY_WAIT", "TCPProbe", "UDPProbe"]

UDP_MESSAGE = b"Beacon health check"
# How long a UDP check waits for a reply or an ICMP refusal before calling the target passing.
UDP_REPLY_WAIT = 2.0


class TCPProbe:
    """Passing iff a TCP connection to ``host:port`` opens within the timeout (then closed at once)."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout

    async def run(self) -> ProbeResult:
        try:
            host, port = split_host_port(self.target)
        except ValueError as exc:
            return CRITICAL, f"dial tcp {exc}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                # A bare Protocol: no stream reader/writer objects for a connect-and-close.
                # (No happy_eyeballs_delay: uvloop does not take it; addresses are tried in turn.)
                transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
        except TimeoutError:
            return CRITICAL, f"dial tcp {self.target}: i/o timeout (after {format_duration(self.timeout)})"
        except OSError as exc:
            return CRITICAL, f"dial tcp {self.target}: {describe_os_error(exc)}"
        transport.close()
        return PASSING, f"TCP connect {self.target}: Success"

    async def close(self) -> None:
        return None


class _ReplyProtocol(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcome: asyncio.Future[None] = loop.create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.outcome.done():
            self.outcome.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket an ICMP port-unreachable arrives here as ConnectionRefusedError.
        if not self.outcome.done():
            self.outcome.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.outcome.done():
            if exc is None:
                self.outcome.cancel()
            else:
                self.outcome.set_exception(exc)


class UDPProbe:
    """Sends one datagram; passing if it is sent and no error comes back (a reply or silence).

    Critical on a send error or an ICMP refusal seen within ``min(timeout, UDP_REPLY_WAIT)``.
    """

    def __init__(self, target: str, timeout: float, message: bytes = UDP_MESSAGE) -> None:
        self.target = target
        self.timeout = timeout
        self.message = message

    async def run(self) -> ProbeResult:
        try:
            host, port = split_host_port(self.target)
        except ValueError as exc:
            return CRITICAL, f"dial udp {exc}"
        loop = asyncio.get_running_loop()
        success = f"UDP connect {self.target}: Success"
        try:
            async with asyncio.timeout(self.timeout):
                transport, proto = await loop.create_datagram_endpoint(
                    lambda: _ReplyProtocol(loop), remote_addr=(host, port))
        except TimeoutError:
            return CRITICAL, f"dial udp {self.target}: i/o timeout"
        except OSError as exc:
            return CRITICAL, f"dial udp {self.target}: {describe_os_error(exc)}"
        try:
            transport.sendto(self.message)
            try:
                async with asyncio.timeout(min(self.timeout, UDP_REPLY_WAIT)):
                    await proto.outcome
            except TimeoutError:
                return PASSING, success  # no answer and no refusal: Consul counts that as up
            except OSError as exc:
                return CRITICAL, f"read udp {self.target}: {describe_os_error(exc)}"
            return PASSING, success
        except OSError as exc:
            return CRITICAL, f"write udp {self.target}: {describe_os_error(exc)}"
        finally:
            transport.close()
            if not proto.outcome.done():
                proto.outcome.cancel()
            with contextlib.suppress(BaseException):
                if proto.outcome.done() and not proto.outcome.cancelled():
                    proto.outcome.exception()  # mark retrieved

    async def close(self) -> None:
        return None
