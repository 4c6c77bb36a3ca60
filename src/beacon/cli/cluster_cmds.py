"""`beacon join|leave|force-leave|keygen|operator raft ...`."""

from __future__ import annotations

import base64
import os
import sys
from urllib.parse import quote

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, print_table


def keygen(argv: list[str]) -> int:
    FlagParser("beacon keygen", "Print a new random 32-byte cluster key for -encrypt.").parse_args(argv)
    print(base64.b64encode(os.urandom(32)).decode())
    return 0


def join(argv: list[str]) -> int:
    p = FlagParser("beacon join")
    add_http_flags(p)
    p.flag("wan", action="store_true", help="join the WAN pool (servers of other datacenters)")
    p.add_argument("addresses", nargs="+")
    args = p.parse_args(argv)
    client = Client.from_args(args)
    joined = 0
    for addr in args.addresses:
        try:
            client.call("PUT", "/v1/agent/join/" + quote(addr, safe="") + ("?wan=1" if args.wan else ""))
            joined += 1
        except CLIError as exc:
            print(f"Error joining address '{addr}': {exc}", file=sys.stderr)
    if not joined:
        return 1
    print(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def _agent_put(command: str, path: str, done: str, argv: list[str]) -> int:
    """A flag-less agent action: PUT the endpoint, print Consul's message."""
    p = FlagParser(f"beacon {command}")
    add_http_flags(p)
    args = p.parse_args(argv)
    Client.from_args(args).call("PUT", path)
    print(done)
    return 0


def leave(argv: list[str]) -> int:
    return _agent_put("leave", "/v1/agent/leave", "Graceful leave complete", argv)


def reload(argv: list[str]) -> int:
    return _agent_put("reload", "/v1/agent/reload", "Configuration reload triggered", argv)


def force_leave(argv: list[str]) -> int:
    p = FlagParser("beacon force-leave")
    add_http_flags(p)
    p.flag("prune", action="store_true")
    p.add_argument("node")
    args = p.parse_args(argv)
    Client.from_args(args).call("PUT", "/v1/agent/force-leave/" + quote(args.node, safe="") +
                                ("?prune" if args.prune else ""))
    return 0


def operator(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "raft" or argv[1] not in ("list-peers", "remove-peer"):
        print("Usage: beacon operator raft <list-peers|remove-peer> [options]", file=sys.stderr)
        return 1
    p = FlagParser(f"beacon operator raft {argv[1]}")
    add_http_flags(p)
    if argv[1] == "remove-peer":
        p.flag("address", default=None)
        p.flag("id", default=None)
        args = p.parse_args(argv[2:])
        target = args.address or args.id
        if not target:
            raise CLIError("Must specify -address or -id")
        Client.from_args(args).call("DELETE", "/v1/operator/raft/peer?address=" + quote(target))
        print(f'Removed peer with address "{target}"')
        return 0
    args = p.parse_args(argv[2:])
    conf = Client.from_args(args).get_json("/v1/operator/raft/configuration" + ("?stale" if args.stale else ""))
    rows = [("Node", "ID", "Address", "State", "Voter", "RaftProtocol")]
    for s in conf["Servers"]:
        rows.append((s["Node"], s["ID"], s["Address"], "leader" if s["Leader"] else "follower",
                     str(s["Voter"]).lower(), s.get("ProtocolVersion", "3")))
    print_table(rows)
    return 0


def _wrap(fn):  # type: ignore[no-untyped-def]
    def run(argv: list[str]) -> int:
        try:
            return fn(argv)
        except CLIError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    return run


run_keygen = _wrap(keygen)
run_join = _wrap(join)
run_leave = _wrap(leave)
run_force_leave = _wrap(force_leave)
run_reload = _wrap(reload)
run_operator = _wrap(operator)

