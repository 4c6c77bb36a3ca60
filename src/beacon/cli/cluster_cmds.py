"""`beacon join|leave|force-leave|keygen|operator raft ...|operator autopilot ...`."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from urllib.parse import quote

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, print_table
from beacon.durations import format_duration, parse_duration


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


# `operator autopilot set-config` flags: Consul's names, the configuration field, the value's parser.
def _cli_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "t"):
        return True
    if text.lower() in ("false", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _cli_duration(text: str) -> str:
    try:
        return format_duration(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cli_uint(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid unsigned integer {text!r}")
    return int(text)


_AUTOPILOT_FLAGS = (("cleanup-dead-servers", "CleanupDeadServers", _cli_bool),
                    ("last-contact-threshold", "LastContactThreshold", _cli_duration),
                    ("max-trailing-logs", "MaxTrailingLogs", _cli_uint),
                    ("min-quorum", "MinQuorum", _cli_uint),
                    ("server-stabilization-time", "ServerStabilizationTime", _cli_duration),
                    ("redundancy-zone-tag", "RedundancyZoneTag", str),
                    ("disable-upgrade-migration", "DisableUpgradeMigration", _cli_bool),
                    ("upgrade-version-tag", "UpgradeVersionTag", str))
_AUTOPILOT_PATH = "/v1/operator/autopilot/configuration"


def autopilot(verb: str, argv: list[str]) -> int:
    """`get-config` prints the configuration as Consul does; `set-config` changes the fields given
    as flags, the rest kept, with a check-and-set on the ModifyIndex it read (Consul's CLI)."""
    p = FlagParser(f"beacon operator autopilot {verb}")
    add_http_flags(p)
    if verb == "set-config":
        for flag, _field, parse in _AUTOPILOT_FLAGS:
            p.flag(flag, type=parse, default=None)
    args = p.parse_args(argv)
    client = Client.from_args(args)
    conf = client.get_json(_AUTOPILOT_PATH + ("?stale" if getattr(args, "stale", False) else ""))
    if verb == "get-config":
        for _flag, name, parse in _AUTOPILOT_FLAGS:
            value = conf.get(name)
            if parse is _cli_bool:
                value = str(bool(value)).lower()
            elif parse is str:
                value = json.dumps(value or "")
            print(f"{name} = {value}")
        return 0
    new = {name: conf.get(name) for _flag, name, _parse in _AUTOPILOT_FLAGS}
    for flag, name, _parse in _AUTOPILOT_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            new[name] = value
    if client.put_json(f"{_AUTOPILOT_PATH}?cas={int(conf.get('ModifyIndex', 0))}", new):
        print("Configuration updated!")
        return 0
    print("Configuration could not be atomically updated, please try again")
    return 1


def operator(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "autopilot" and argv[1] in ("get-config", "set-config"):
        return autopilot(argv[1], argv[2:])
    if len(argv) < 2 or argv[0] != "raft" or argv[1] not in ("list-peers", "remove-peer"):
        print("Usage: beacon operator raft <list-peers|remove-peer> [options]\n"
              "       beacon operator autopilot <get-config|set-config> [options]", file=sys.stderr)
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

