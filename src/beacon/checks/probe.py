"""The probe contract shared by interval checks.

A probe performs one run of a check and returns ``(status, output)``. It enforces its own timeout
(so it can word the output and clean up: a script probe kills its process group) and must leave no
work behind when it returns or is cancelled. The scheduler only decides *when* probes run.
"""

from __future__ import annotations

import os
import ssl
from typing import Protocol

from beacon.numbers import ascii_int

__all__ = ["Probe", "ProbeResult", "describe_os_error", "split_host_port"]

ProbeResult = tuple[str, str]


class Probe(Protocol):
    async def run(self) -> ProbeResult: ...

    async def close(self) -> None: ...


def split_host_port(target: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` as Go's ``net.SplitHostPort``; raise ValueError if bad."""
    host, sep, port = target.rpartition(":")
    number = ascii_int(port)
    if not sep or not host or number is None:
        raise ValueError(f"address {target}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {target}: too many colons in address")
    if not 0 < number < 65536:
        raise ValueError(f"address {target}: invalid port")
    return host, number


def describe_os_error(exc: OSError) -> str:
    """Go-like wording for a socket error: ``connect: connection refused``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    if exc.errno:
        return f"connect: {os.strerror(exc.errno).lower()}"
    return str(exc) or type(exc).__name__
