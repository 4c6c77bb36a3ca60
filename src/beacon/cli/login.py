"""`beacon login` and `beacon logout`, as Consul's CLI.

``login -method NAME -bearer-token-file F -token-sink-file OUT [-meta k=v ...]`` trades the bearer
token (a JWT) for an ACL token through ``/v1/acl/login`` and writes its SecretID to OUT (mode 0600,
replaced atomically). ``logout`` deletes the token given by ``-token``/``-token-file``/
``CONSUL_HTTP_TOKEN`` through ``/v1/acl/logout``; only a token made by a login can log out.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise CLIError(f"Error reading {what}: {exc.strerror}: {path}") from None


def _write_sink(path: str, secret: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".beacon-token-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise CLIError(f"Error writing token to file: {exc.strerror}: {path}") from None


def _meta(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"-meta {pair!r} is not key=value")
        out[key] = value
    return out


def run_login(argv: list[str]) -> int:
    p = FlagParser("beacon login", "Exchange a bearer token (JWT) for an ACL token through an auth method")
    add_http_flags(p)
    p.flag("method", default="", help="name of the auth method to log in with")
    p.flag("bearer-token-file", default="", help="file holding the bearer token (JWT)")
    p.flag("token-sink-file", default="", help="file to write the new token's SecretID to")
    p.flag("meta", action="append", default=[], help="key=value recorded in the token's description")
    args = p.parse_args(argv)
    try:
        for flag, value in (("method", args.method), ("bearer-token-file", args.bearer_token_file),
                            ("token-sink-file", args.token_sink_file)):
            if not value:
                raise CLIError(f"Missing required '-{flag}' flag")
        bearer = _read(args.bearer_token_file, "bearer token file")
        if not bearer:
            raise CLIError(f"No bearer token found in {args.bearer_token_file}")
        body: dict[str, object] = {"AuthMethod": args.method, "BearerToken": bearer}
        meta = _meta(args.meta)
        if meta:
            body["Meta"] = meta
        client = Client(args.http_addr, None, None, args.ca_file, args.client_cert, args.client_key,
                        args.tls_server_name)
        client.token = None  # the bearer token is the credential; never send an ambient token
        _, data = client.call("POST", "/v1/acl/login", json.dumps(body).encode())
        token = json.loads(data)
        _write_sink(args.token_sink_file, token["SecretID"])
    except CLIError as exc:
        print(exc if str(exc).startswith("Missing") else f"Error logging in: {exc}", file=sys.stderr)
        return 1
    return 0


def run_logout(argv: list[str]) -> int:
    p = FlagParser("beacon logout", "Delete the ACL token a login created (the one given by -token)")
    add_http_flags(p)
    args = p.parse_args(argv)
    try:
        client = Client.from_args(args)
        if not client.token:
            raise CLIError("no token given (-token, -token-file or CONSUL_HTTP_TOKEN)")
        client.call("POST", "/v1/acl/logout", b"")
    except CLIError as exc:
        print(f"Error destroying token: {exc}", file=sys.stderr)
        return 1
    return 0
