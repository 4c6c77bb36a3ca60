"""The agent's TLS settings: Consul's ``tls`` block (``defaults``, ``https``, ``internal_rpc``) and the
pre-1.12 top-level keys (``ca_file``, ``cert_file``, ``key_file``, ``verify_*``), as SSL contexts.

* The HTTPS API (``ports.https``) serves ``cert_file``/``key_file``; with ``verify_incoming`` a client
  must present a certificate signed by ``ca_file``, else the handshake fails.
* Outgoing agent-to-server traffic (a client agent forwarding to a server's API) uses HTTPS when
  ``verify_outgoing`` is on, checks the server's certificate against ``ca_file`` and, with
  ``verify_server_hostname``, that it is valid for ``server.<datacenter>.<domain>``; the agent shows
  its own certificate so servers with ``verify_incoming`` accept it.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beacon.config import AgentConfig

log = logging.getLogger("beacon.config")
SECTIONS = ("defaults", "https", "internal_rpc", "grpc")
KEYS = ("ca_file", "ca_path", "cert_file", "key_file", "verify_incoming", "verify_outgoing",
        "verify_server_hostname", "tls_min_version", "tls_cipher_suites")


def _error(message: str) -> Exception:
    from beacon.config import ConfigError

    return ConfigError(message)


def merge_tls_block(into: dict[str, Any], block: dict[str, Any], src: str) -> None:
    for section, body in block.items():
        if section not in SECTIONS:
            log.warning("%s: unknown key 'tls.%s' ignored", src, section)
            continue
        if not isinstance(body, dict):
            raise _error(f"{src}: 'tls.{section}' must be an object")
        for key, value in body.items():
            if key not in KEYS:
                log.warning("%s: unknown key 'tls.%s.%s' ignored", src, section, key)
                continue
            into.setdefault(section, {})[key] = value


@dataclass(frozen=True)
class TLSSettings:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify_incoming: bool = False
    verify_outgoing: bool = False
    verify_server_hostname: bool = False
    server_name: str = ""  # server.<dc>.<domain>

    @property
    def can_serve(self) -> bool:
        return bool(self.cert_file and self.key_file)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # Consul's default tls_min_version
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file:
            ctx.load_verify_locations(self.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify_incoming else ssl.CERT_OPTIONAL if self.ca_file \
            else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # Servers are reached by address; the name checked is server.<dc>.<domain> (see forward).
        ctx.check_hostname = self.verify_server_hostname
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _bool(section: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _error(f"'tls.{section}.{key}' must be a boolean, got {value!r}")


def tls_config(cfg: AgentConfig) -> TLSSettings:
    """Typed settings from cfg.tls; https overrides defaults for the API, internal_rpc for outgoing."""
    raw = cfg.tls
    defaults = dict(raw.get("defaults", {}))
    https = {**defaults, **raw.get("https", {})}
    rpc = {**defaults, **raw.get("internal_rpc", {})}
    for section, body in (("https", https), ("internal_rpc", rpc)):
        for key in ("ca_file", "cert_file", "key_file"):
            value = body.get(key, "")
            if not isinstance(value, str):
                raise _error(f"'tls.{section}.{key}' must be a string, got {value!r}")
            if value and not os.path.isfile(value):
                raise _error(f"tls.{section}.{key}: cannot read {value}")
    settings = TLSSettings(
        ca_file=https.get("ca_file", ""), cert_file=https.get("cert_file", ""), key_file=https.get("key_file", ""),
        verify_incoming=_bool("https", "verify_incoming", https.get("verify_incoming", False)),
        verify_outgoing=_bool("internal_rpc", "verify_outgoing", rpc.get("verify_outgoing", False)),
        verify_server_hostname=_bool("internal_rpc", "verify_server_hostname",
                                     rpc.get("verify_server_hostname", False)),
        server_name=f"server.{cfg.datacenter}.{cfg.domain}")
    if cfg.https_port >= 0 and not settings.can_serve:
        raise _error("ports.https is set but no TLS certificate: set tls.defaults.cert_file and key_file")
    if settings.verify_incoming and not settings.ca_file:
        raise _error("verify_incoming needs a CA to verify against: set tls.defaults.ca_file")
    if settings.verify_outgoing and not settings.ca_file:
        raise _error("verify_outgoing needs a CA to verify servers: set tls.defaults.ca_file")
    return settings
