"""`beacon config write|read|list|delete`: config entries, with Consul's CLI messages.

``write`` reads the entry from a file (or ``-`` for stdin) in **JSON only**: Consul also accepts HCL,
Beacon does not parse HCL. Keys may be PascalCase or snake_case, as Consul's decoder allows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, run_subcommand

USAGE = "beacon config <write|read|list|delete> [options]"


def _entry_path(kind: str, name: str) -> str:
    return f"/v1/config/{quote(kind, safe='')}/{quote(name, safe='')}"


def _need(value: str | None, flag: str) -> str:
    if not value:
        raise CLIError(f"Must specify the -{flag} parameter")
    return value


def _write(argv: list[str]) -> int:
    p = FlagParser("beacon config write")
    add_http_flags(p)
    p.flag("cas", action="store_true", help="check-and-set: write only if -modify-index matches")
    p.flag("modify-index", type=int, default=0, help="the ModifyIndex -cas compares against (0 = create only)")
    p.add_argument("file", help="JSON file with the entry, or - for stdin")
    args = p.parse_args(argv)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"Failed to read config entry input: {exc}") from None
    try:
        entry = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"Failed to decode config entry input: {exc} (Beacon reads JSON entries only, not HCL)"
                       ) from None
    if not isinstance(entry, dict):
        raise CLIError("Failed to decode config entry input: expected a JSON object")
    kind = str(entry.get("Kind") or entry.get("kind") or "")
    name = str(entry.get("Name") or entry.get("name") or "")
    path = "/v1/config" + (f"?cas={args.modify_index}" if args.cas else "")
    status, data = Client.from_args(args).call("PUT", path, json.dumps(entry).encode(), ok=(200, 400, 500))
    if status != 200:
        raise CLIError(f"Error writing config entry {kind}/{name}: {data.decode(errors='replace').strip()}")
    if data.strip() == b"false":
        print(f"Config entry not updated: {kind}/{name}", file=sys.stderr)
        return 1
    print(f"Config entry written: {kind}/{name}")
    return 0


def _read(argv: list[str]) -> int:
    p = FlagParser("beacon config read")
    add_http_flags(p)
    p.flag("kind", default=None, help="the entry's kind, e.g. service-defaults")
    p.flag("name", default=None, help="the entry's name")
    args = p.parse_args(argv)
    kind, name = _need(args.kind, "kind"), _need(args.name, "name")
    status, data = Client.from_args(args).call("GET", _entry_path(kind, name), ok=(200, 400, 404))
    if status != 200:
        raise CLIError(f"Error reading config entry {kind}/{name}: {data.decode(errors='replace').strip()}")
    print(json.dumps(json.loads(data), indent=4))
    return 0


def _list(argv: list[str]) -> int:
    p = FlagParser("beacon config list")
    add_http_flags(p)
    p.flag("kind", default=None, help="the kind of entries to list")
    p.flag("filter", default=None, help="bexpr filter on the entries")
    args = p.parse_args(argv)
    kind = _need(args.kind, "kind")
    path = f"/v1/config/{quote(kind, safe='')}"
    if args.filter:
        path += "?filter=" + quote(args.filter, safe="")
    status, data = Client.from_args(args).call("GET", path, ok=(200, 400))
    if status != 200:
        raise CLIError(f"Error listing config entries for kind {kind}: {data.decode(errors='replace').strip()}")
    for entry in json.loads(data):
        print(entry["Name"])
    return 0


def _delete(argv: list[str]) -> int:
    p = FlagParser("beacon config delete")
    add_http_flags(p)
    p.flag("kind", default=None, help="the entry's kind")
    p.flag("name", default=None, help="the entry's name")
    p.flag("cas", action="store_true", help="check-and-set: delete only if -modify-index matches")
    p.flag("modify-index", type=int, default=None, help="the ModifyIndex -cas compares against")
    args = p.parse_args(argv)
    kind, name = _need(args.kind, "kind"), _need(args.name, "name")
    if args.cas and args.modify_index is None:
        raise CLIError("Must specify a -modify-index greater than 0 with -cas")
    path = _entry_path(kind, name) + (f"?cas={args.modify_index}" if args.cas else "")
    status, data = Client.from_args(args).call("DELETE", path, ok=(200, 400, 500))
    if status != 200:
        raise CLIError(f"Error deleting config entry {kind}/{name}: {data.decode(errors='replace').strip()}")
    if data.strip() == b"false":
        print(f"Config entry not deleted: {kind}/{name}", file=sys.stderr)
        return 1
    print(f"Config entry deleted: {kind}/{name}")
    return 0


def run(argv: list[str]) -> int:
    return run_subcommand({"write": _write, "read": _read, "list": _list, "delete": _delete}, USAGE, argv)
