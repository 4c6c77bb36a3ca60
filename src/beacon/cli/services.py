"""`beacon services register FILE | -name ... -port ...` and `beacon services deregister`."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import yaml

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, run_subcommand


def _definitions(files: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise CLIError(f"Error reading {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CLIError(f"Error parsing {path}: {exc}") from None
        if not isinstance(data, dict):
            raise CLIError(f"Error parsing {path}: expected an object with 'service' or 'services'")
        if "service" in data:
            out.append(data["service"])
        elif "services" in data:
            out += list(data["services"])
        else:
            out.append(data)
    return out


def _flags_definition(args: Any) -> dict[str, Any]:
    meta = {}
    for item in args.meta:
        k, sep, v = item.partition("=")
        if not sep:
            raise CLIError(f"Invalid -meta value {item!r}: expected key=value")
        meta[k] = v
    svc: dict[str, Any] = {"Name": args.name, "Tags": args.tag, "Meta": meta}
    if args.id:
        svc["ID"] = args.id
    if args.address:
        svc["Address"] = args.address
    if args.port is not None:
        svc["Port"] = args.port
    return svc


def _register(argv: list[str]) -> int:
    p = FlagParser("beacon services register")
    add_http_flags(p)
    p.flag("name", default=None)
    p.flag("id", default=None)
    p.flag("address", default=None)
    p.flag("port", type=int, default=None)
    p.flag("tag", action="append", default=[])
    p.flag("meta", action="append", default=[])
    p.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    if args.files and args.name:
        raise CLIError("Use either service definition files or -name flags, not both")
    if not args.files and not args.name:
        raise CLIError("Must specify a service definition file or -name")
    defs = _definitions(args.files) if args.files else [_flags_definition(args)]
    client = Client.from_args(args)
    for d in defs:
        client.call("PUT", "/v1/agent/service/register", json.dumps(d).encode())
        name = d.get("Name") or d.get("name")
        print(f"Registered service: {name}")
    return 0


def _deregister(argv: list[str]) -> int:
    p = FlagParser("beacon services deregister")
    add_http_flags(p)
    p.flag("id", default=None)
    p.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    if not args.id and not args.files:
        raise CLIError("Must specify -id or service definition files")
    ids = [args.id] if args.id else [d.get("ID") or d.get("id") or d.get("Name") or d.get("name")
                                      for d in _definitions(args.files)]
    client = Client.from_args(args)
    for sid in ids:
        client.call("PUT", "/v1/agent/service/deregister/" + quote(sid, safe=""))
        print(f"Deregistered service: {sid}")
    return 0


SUB = {"register": _register, "deregister": _deregister}


def run(argv: list[str]) -> int:
    return run_subcommand(SUB, "beacon services <register|deregister> [options] [FILE...]", argv)
