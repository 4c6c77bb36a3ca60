"""The CLI's HTTP client: address from -http-addr, else CONSUL_HTTP_ADDR, else 127.0.0.1:8500.

HTTPS as Consul's CLI: an ``https://`` address or ``CONSUL_HTTP_SSL=true``; the server is verified
against ``-ca-file``/``CONSUL_CACERT`` (else the system's CAs), and ``-client-cert``/``-client-key``
(``CONSUL_CLIENT_CERT``/``CONSUL_CLIENT_KEY``) are shown to agents with ``verify_incoming``. The token
comes from ``-token``, else ``-token-file``, else ``CONSUL_HTTP_TOKEN``/``CONSUL_HTTP_TOKEN_FILE``.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from beacon.cli.flags import FlagParser


class CLIError(Exception):
    """One clear line for stderr; exit code 1."""


def add_http_flags(p: FlagParser) -> None:
    p.flag("http-addr", default=None, help="agent address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
    p.flag("token", default=None)
    p.flag("token-file", default=None)
    p.flag("ca-file", default=None)
    p.flag("client-cert", default=None)
    p.flag("client-key", default=None)
    p.flag("tls-server-name", default=None)
    p.flag("datacenter", default=None)
    p.flag("stale", action="store_true")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "t", "true", "yes")


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise CLIError(f"Error loading token file: {exc.strerror}: {path}") from None


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None, token_file: str | None = None,
                 ca_file: str | None = None, client_cert: str | None = None, client_key: str | None = None,
                 server_name: str | None = None) -> None:
        addr = addr or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        if "://" not in addr:
            addr = ("https://" if _env_true("CONSUL_HTTP_SSL") else "http://") + addr
        self.base = addr.rstrip("/")
        if token is None and token_file:
            token = _read_token_file(token_file)
        if token is None and os.environ.get("CONSUL_HTTP_TOKEN"):
            token = os.environ["CONSUL_HTTP_TOKEN"]
        if token is None and os.environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token = _read_token_file(os.environ["CONSUL_HTTP_TOKEN_FILE"])
        self.token = token
        self.opener = urllib.request.build_opener()
        if self.base.startswith("https://"):
            ctx = self._ssl_context(ca_file or os.environ.get("CONSUL_CACERT"),
                                    client_cert or os.environ.get("CONSUL_CLIENT_CERT"),
                                    client_key or os.environ.get("CONSUL_CLIENT_KEY"))
            name = server_name or os.environ.get("CONSUL_TLS_SERVER_NAME")
            self.opener = urllib.request.build_opener(_NamedHTTPSHandler(ctx, name or None))

    @staticmethod
    def _ssl_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=ca or None)
            if cert:
                ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise CLIError(f"Error loading TLS files: {exc}") from None
        return ctx

    @classmethod
    def from_args(cls, args: Any) -> Client:
        return cls(args.http_addr, args.token, getattr(args, "token_file", None), getattr(args, "ca_file", None),
                   getattr(args, "client_cert", None), getattr(args, "client_key", None),
                   getattr(args, "tls_server_name", None))

    def call(self, method: str, path: str, body: bytes | None = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            if exc.code in ok:
                return exc.code, data
            raise CLIError(f"Unexpected response code: {exc.code} ({data.decode(errors='replace').strip()})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CLIError(f"Error connecting to Beacon agent at {self.base}: {reason}") from None

    def get_json(self, path: str) -> Any:
        _, data = self.call("GET", path)
        return json.loads(data) if data else None

    def put_json(self, path: str, obj: Any = None) -> Any:
        body = None if obj is None else json.dumps(obj).encode()
        _, data = self.call("PUT", path, body)
        return json.loads(data) if data.strip() else None


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """-tls-server-name: verify (and send as SNI) this name instead of the address's host."""

    server_name: str | None = None

    def connect(self) -> None:
        if not self.server_name:
            super().connect()
            return
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


class _NamedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._ctx = context
        self._name = server_name

    def https_open(self, req: urllib.request.Request) -> Any:
        name = self._name

        class Conn(_NamedHTTPSConnection):
            server_name = name
        return self.do_open(Conn, req, context=self._ctx)


def run_subcommand(table: dict[str, Callable[[list[str]], int]], usage: str, argv: list[str],
                   error_prefix: str = "Error: ") -> int:
    """Dispatch `beacon <group> <sub> ...`; a CLIError is one line on stderr and exit code 1.

    Messages that already start with "Error" (Consul's "Error! No key exists at: ...") are printed as
    they are; others get ``error_prefix``.
    """
    if not argv or argv[0] not in table:
        print(f"Usage: {usage}", file=sys.stderr)
        return 1
    try:
        return table[argv[0]](argv[1:])
    except CLIError as exc:
        text = str(exc)
        print(text if text.startswith("Error") else f"{error_prefix}{text}", file=sys.stderr)
        return 1


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns separated by two spaces, as Consul's CLI prints them."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
