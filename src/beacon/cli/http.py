"""The CLI's HTTP client: address from -http-addr, else CONSUL_HTTP_ADDR, else 127.0.0.1:8500."""

from __future__ import annotations

import json
import os
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
    p.flag("datacenter", default=None)
    p.flag("stale", action="store_true")


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None) -> None:
        addr = addr or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        if "://" not in addr:
            addr = "http://" + addr
        self.base = addr.rstrip("/")
        self.token = token or os.environ.get("CONSUL_HTTP_TOKEN")

    @classmethod
    def from_args(cls, args: Any) -> Client:
        return cls(args.http_addr, args.token)

    def call(self, method: str, path: str, body: bytes | None = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
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
