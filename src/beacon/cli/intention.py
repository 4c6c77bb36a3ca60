"""`beacon intention create|delete|get|list|match|check`, Consul's commands and messages over
/v1/connect/intentions (intentions by source and destination; no legacy IDs).

``check`` exits 0 for "Allowed" and 2 for "Denied", as Consul's does, so scripts can branch on it.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, print_table, run_subcommand

USAGE = "beacon intention <create|delete|get|list|match|check> [options]"
EXACT = "/v1/connect/intentions/exact"


def _pair(p: FlagParser, argv: list[str]):  # type: ignore[no-untyped-def]
    p.add_argument("source")
    p.add_argument("destination")
    return p.parse_args(argv)


def _exact(args) -> str:  # type: ignore[no-untyped-def]
    return f"{EXACT}?{urlencode({'source': args.source, 'destination': args.destination})}"


def _error(data: bytes) -> str:
    return data.decode(errors="replace").strip()


def _create(argv: list[str]) -> int:
    p = FlagParser("beacon intention create")
    add_http_flags(p)
    p.flag("allow", action="store_true", help="allow the connection (the default)")
    p.flag("deny", action="store_true", help="deny the connection")
    p.flag("replace", action="store_true", help="replace an existing intention of the same pair")
    p.flag("description", default="", help="a free-form description")
    args = _pair(p, argv)
    if args.allow and args.deny:
        raise CLIError("Only one of -allow or -deny may be specified")
    client = Client.from_args(args)
    if not args.replace:
        status, _ = client.call("GET", _exact(args), ok=(200, 404, 403))
        if status == 200:
            raise CLIError(f"Intention with source \"{args.source}\" and destination \"{args.destination}\" "
                           "already exists")
    action = "deny" if args.deny else "allow"
    body = {"SourceType": "consul", "Action": action, **({"Description": args.description} if args.description else {})}
    status, data = client.call("PUT", _exact(args), json.dumps(body).encode(), ok=(200, 400, 403, 500))
    if status != 200:
        raise CLIError(f"Error creating intention: {_error(data)}")
    print(f"Created: {args.source} => {args.destination} ({action})")
    return 0


def _delete(argv: list[str]) -> int:
    p = FlagParser("beacon intention delete")
    add_http_flags(p)
    args = _pair(p, argv)
    status, data = Client.from_args(args).call("DELETE", _exact(args), ok=(200, 400, 403, 500))
    if status != 200:
        raise CLIError(f"Error deleting intention: {_error(data)}")
    print("Intention deleted.")
    return 0


def _get(argv: list[str]) -> int:
    p = FlagParser("beacon intention get")
    add_http_flags(p)
    args = _pair(p, argv)
    status, data = Client.from_args(args).call("GET", _exact(args), ok=(200, 400, 403, 404))
    if status != 200:
        raise CLIError(f"Error reading the intention: {_error(data)}")
    ixn = json.loads(data)
    rows = [("Source:", ixn["SourceName"]), ("Destination:", ixn["DestinationName"]),
            ("Action:", ixn["Action"] or "(L7 permissions)"), ("Precedence:", str(ixn["Precedence"]))]
    if ixn.get("Description"):
        rows.append(("Description:", ixn["Description"]))
    print_table(rows)
    return 0


def _list(argv: list[str]) -> int:
    p = FlagParser("beacon intention list")
    add_http_flags(p)
    p.flag("filter", default=None, help="bexpr filter on the intentions")
    args = p.parse_args(argv)
    path = "/v1/connect/intentions" + (f"?filter={quote(args.filter, safe='')}" if args.filter else "")
    status, data = Client.from_args(args).call("GET", path, ok=(200, 400, 403))
    if status != 200:
        raise CLIError(f"Error listing intentions: {_error(data)}")
    items = json.loads(data)
    if not items:
        print("There are no intentions.")
        return 0
    rows = [("ID", "Source", "Action", "Destination", "Precedence")]
    rows += [(i["ID"], i["SourceName"], i["Action"] or "(L7)", i["DestinationName"], str(i["Precedence"])) for i in items]
    print_table(rows)
    return 0


def _match(argv: list[str]) -> int:
    p = FlagParser("beacon intention match")
    add_http_flags(p)
    p.flag("source", action="store_true", help="match by source")
    p.flag("destination", action="store_true", help="match by destination (the default)")
    p.add_argument("name")
    args = p.parse_args(argv)
    if args.source and args.destination:
        raise CLIError("Only one of -source or -destination may be specified")
    by = "source" if args.source else "destination"
    status, data = Client.from_args(args).call(
        "GET", f"/v1/connect/intentions/match?{urlencode({'by': by, 'name': args.name})}", ok=(200, 400, 403))
    if status != 200:
        raise CLIError(f"Error matching the intention: {_error(data)}")
    for ixn in json.loads(data).get(args.name, []):
        print(f"{ixn['SourceName']} => {ixn['DestinationName']} ({ixn['Action'] or 'L7'})")
    return 0


def _check(argv: list[str]) -> int:
    p = FlagParser("beacon intention check")
    add_http_flags(p)
    args = _pair(p, argv)
    query = urlencode({"source": args.source, "destination": args.destination})
    status, data = Client.from_args(args).call("GET", f"/v1/connect/intentions/check?{query}", ok=(200, 400, 403))
    if status != 200:
        raise CLIError(f"Error checking the connection: {_error(data)}")
    allowed = json.loads(data)["Allowed"]
    print("Allowed" if allowed else "Denied")
    return 0 if allowed else 2


def run(argv: list[str]) -> int:
    return run_subcommand({"create": _create, "delete": _delete, "get": _get, "list": _list, "match": _match,
                           "check": _check}, USAGE, argv)
