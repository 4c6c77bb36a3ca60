from __future__ import annotations

import sys

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, print_table

STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def run(argv: list[str]) -> int:
    p = FlagParser("beacon members", "List the members of the cluster as this agent sees them.")
    add_http_flags(p)
    p.flag("detailed", action="store_true")
    p.flag("status", default=None, help="only members whose status matches this regex")
    p.flag("wan", action="store_true", help="list the WAN pool (servers of every datacenter, <node>.<dc>)")
    args = p.parse_args(argv)
    try:
        members = Client.from_args(args).get_json("/v1/agent/members" + ("?wan=1" if args.wan else ""))
    except CLIError as exc:
        print(f"Error retrieving members: {exc}", file=sys.stderr)
        return 1
    import re

    rows = [("Node", "Address", "Status", "Type", "Build", "Protocol", "DC")]
    for m in sorted(members, key=lambda m: m["Name"]):
        status = STATUS.get(m["Status"], str(m["Status"]))
        if args.status and not re.search(args.status, status):
            continue
        tags = m.get("Tags", {})
        kind = "server" if tags.get("role") == "consul" else "client"
        row = (m["Name"], f"{m['Addr']}:{m['Port']}", status, kind, tags.get("build", ""),
               tags.get("vsn", "2"), tags.get("dc", ""))
        if args.detailed:
            row = (*row[:3], ",".join(f"{k}={v}" for k, v in sorted(tags.items())))
        rows.append(row)
    if args.detailed:
        rows[0] = ("Node", "Address", "Status", "Tags")
    print_table(rows)
    return 0
