"""`beacon kv get|put|delete|export|import`, with Consul's messages and exit codes."""

from __future__ import annotations

import base64
import json
import sys
from urllib.parse import quote, urlencode

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, run_subcommand


def _path(key: str, **params: object) -> str:
    q = {k: v for k, v in params.items() if v is not None and v is not False}
    flags = [k for k, v in q.items() if v is True]
    rest = {k: v for k, v in q.items() if v is not True}
    qs = "&".join(flags + ([urlencode(rest)] if rest else []))
    return "/v1/kv/" + quote(key) + ("?" + qs if qs else "")


def _get(argv: list[str]) -> int:
    p = FlagParser("beacon kv get")
    add_http_flags(p)
    p.flag("recurse", action="store_true")
    p.flag("keys", action="store_true")
    p.flag("separator", default=None)
    p.flag("detailed", action="store_true")
    p.flag("base64", action="store_true")
    p.add_argument("key", nargs="?", default="")
    args = p.parse_args(argv)
    client = Client.from_args(args)
    key = args.key
    if not key and not (args.recurse or args.keys):
        raise CLIError("Missing KEY argument")
    if args.keys:
        sep = "/" if args.separator is None else args.separator
        status, data = client.call("GET", _path(key, keys=True, separator=sep or None), ok=(200, 404))
        for k in (json.loads(data) if status == 200 else []):
            print(k)
        return 0
    if args.recurse:
        status, data = client.call("GET", _path(key, recurse=True), ok=(200, 404))
        for e in (json.loads(data) if status == 200 else []):
            print(f"{e['Key']}:{_value(e, args.base64)}")
        return 0
    status, data = client.call("GET", _path(key), ok=(200, 404))
    if status == 404:
        raise CLIError(f"Error! No key exists at: {key}")
    entry = json.loads(data)[0]
    if args.detailed:
        for field in ("CreateIndex", "Flags", "Key", "LockIndex", "ModifyIndex", "Session"):
            print(f"{field:<16}{entry.get(field, '-') or ('-' if field == 'Session' else entry.get(field))}")
        print(f"{'Value':<16}{_value(entry, args.base64)}")
        return 0
    raw = base64.b64decode(entry["Value"]) if entry["Value"] else b""
    if args.base64:
        print(entry["Value"] or "")
    else:
        sys.stdout.buffer.write(raw + b"\n")
        sys.stdout.flush()
    return 0


def _value(entry: dict, as_b64: bool) -> str:
    if not entry.get("Value"):
        return ""
    if as_b64:
        return entry["Value"]
    return base64.b64decode(entry["Value"]).decode(errors="replace")


def _put(argv: list[str]) -> int:
    p = FlagParser("beacon kv put")
    add_http_flags(p)
    p.flag("flags", type=int, default=None)
    p.flag("cas", action="store_true")
    p.flag("modify-index", type=int, default=None)
    p.flag("acquire", action="store_true")
    p.flag("release", action="store_true")
    p.flag("session", default=None)
    p.flag("base64", action="store_true")
    p.add_argument("key")
    p.add_argument("data", nargs="?", default=None)
    args = p.parse_args(argv)
    data = args.data
    if data == "-":
        value = sys.stdin.buffer.read()
    elif data is not None and data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                value = f.read()
        except OSError as exc:
            raise CLIError(f"Failed to read file {data[1:]}: {exc.strerror}") from None
    else:
        value = (data or "").encode()
    if args.base64:
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError:
            raise CLIError("Failed to base64 decode data") from None
    params: dict[str, object] = {"flags": args.flags}
    if args.cas:
        if args.modify_index is None:
            raise CLIError("Must specify -modify-index with -cas!")
        params["cas"] = args.modify_index
    if args.acquire or args.release:
        if not args.session:
            raise CLIError("Missing -session")
        params["acquire" if args.acquire else "release"] = args.session
    _, body = Client.from_args(args).call("PUT", _path(args.key, **params), value)
    ok = json.loads(body)
    if args.cas and not ok:
        raise CLIError(f"Error! Did not write to {args.key}: CAS failed")
    if (args.acquire or args.release) and not ok:
        raise CLIError(f"Error! Did not {'acquire' if args.acquire else 'release'} lock on: {args.key}")
    if args.acquire:
        print(f"Success! Lock acquired on: {args.key}")
    elif args.release:
        print(f"Success! Lock released on: {args.key}")
    else:
        print(f"Success! Data written to: {args.key}")
    return 0


def _delete(argv: list[str]) -> int:
    p = FlagParser("beacon kv delete")
    add_http_flags(p)
    p.flag("recurse", action="store_true")
    p.flag("cas", action="store_true")
    p.flag("modify-index", type=int, default=None)
    p.add_argument("key", nargs="?", default="")
    args = p.parse_args(argv)
    if not args.key and not args.recurse:
        raise CLIError("Missing KEY argument")
    if args.cas and args.recurse:
        raise CLIError("Cannot specify both -cas and -recurse!")
    params: dict[str, object] = {"recurse": args.recurse or None}
    if args.cas:
        if args.modify_index is None:
            raise CLIError("Must specify -modify-index with -cas!")
        params["cas"] = args.modify_index
    _, body = Client.from_args(args).call("DELETE", _path(args.key, **params))
    if args.cas and not json.loads(body):
        raise CLIError(f"Error! Did not delete key {args.key}: CAS failed")
    if args.recurse:
        print(f"Success! Deleted keys with prefix: {args.key}")
    else:
        print(f"Success! Deleted key: {args.key}")
    return 0


def _export(argv: list[str]) -> int:
    p = FlagParser("beacon kv export")
    add_http_flags(p)
    p.add_argument("prefix", nargs="?", default="")
    args = p.parse_args(argv)
    status, data = Client.from_args(args).call("GET", _path(args.prefix, recurse=True), ok=(200, 404))
    entries = json.loads(data) if status == 200 else []
    out = [{"key": e["Key"], "flags": e["Flags"], "value": e["Value"] or ""} for e in entries]
    print(json.dumps(out, indent=2))
    return 0


def _import(argv: list[str]) -> int:
    p = FlagParser("beacon kv import")
    add_http_flags(p)
    p.flag("prefix", default="")
    p.add_argument("data", nargs="?", default="-")
    args = p.parse_args(argv)
    if args.data == "-":
        text = sys.stdin.read()
    elif args.data.startswith("@"):
        with open(args.data[1:], encoding="utf-8") as f:
            text = f.read()
    else:
        text = args.data
    try:
        entries = json.loads(text)
        assert isinstance(entries, list)
    except (ValueError, AssertionError):
        raise CLIError("Error! Cannot unmarshal data: expected a JSON array of {key, flags, value}") from None
    client = Client.from_args(args)
    for e in entries:
        key = args.prefix + e["key"]
        client.call("PUT", _path(key, flags=e.get("flags") or None), base64.b64decode(e.get("value") or ""))
        print(f"Imported: {key}")
    return 0


SUB = {"get": _get, "put": _put, "delete": _delete, "export": _export, "import": _import}


def run(argv: list[str]) -> int:
    return run_subcommand(SUB, "beacon kv <get|put|delete|export|import> [options] [args]", argv, error_prefix="Error! ")
