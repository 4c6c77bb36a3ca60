"""`beacon keyring|rtt|event`: the gossip layer's commands, talking to an agent's HTTP API as Consul's do.

* ``keyring -list | -install KEY | -use KEY | -remove KEY`` -> /v1/operator/keyring
* ``rtt [-wan] node1 [node2]`` -> /v1/coordinate/{nodes,datacenters}, estimate as Consul computes it
* ``event -name NAME [-node RE] [-service RE] [-tag RE] [payload]`` -> PUT /v1/event/fire/NAME
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from beacon.cli.cluster_cmds import _wrap  # one line of stderr and exit 1 for a CLIError
from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags
from beacon.gossip.coordinate import Coordinate, rtt


def keyring(argv: list[str]) -> int:
    p = FlagParser("beacon keyring", "Manage the gossip encryption keys of the whole cluster.")
    add_http_flags(p)
    p.flag("list", action="store_true", help="list the installed keys and how many members hold each")
    p.flag("install", default=None, help="install a new key on every member")
    p.flag("use", default=None, help="make an installed key the one used to encrypt")
    p.flag("remove", default=None, help="remove a key from every member")
    p.flag("relay-factor", type=int, default=0)
    args = p.parse_args(argv)
    chosen = [name for name in ("list", "install", "use", "remove") if getattr(args, name)]
    if len(chosen) != 1:
        raise CLIError("Exactly one of -list, -install, -use, or -remove must be provided")
    client = Client.from_args(args)
    query = f"?relay-factor={args.relay_factor}" if args.relay_factor else ""
    if args.list:
        print("==> Gathering installed encryption keys...")
        for entry in client.get_json("/v1/operator/keyring" + query):
            print("\nWAN:" if entry["WAN"] else f"\n{entry['Datacenter']} (LAN):")
            for key, count in sorted(entry["Keys"].items()):
                print(f"  {key} [{count}/{entry['NumNodes']}]")
        return 0
    op = chosen[0]
    verb = {"install": ("POST", "Installing new gossip encryption key..."),
            "use": ("PUT", "Changing primary gossip encryption key..."),
            "remove": ("DELETE", "Removing gossip encryption key...")}[op]
    print(f"==> {verb[1]}")
    client.call(verb[0], "/v1/operator/keyring" + query, json.dumps({"Key": getattr(args, op)}).encode())
    return 0


def _coords(entries: list[dict[str, Any]]) -> dict[str, Coordinate]:
    return {e["Node"]: Coordinate.from_json(e["Coord"]) for e in entries}


def rtt_cmd(argv: list[str]) -> int:
    p = FlagParser("beacon rtt", "Estimate the network round trip time between two nodes.")
    add_http_flags(p)
    p.flag("wan", action="store_true", help="use WAN coordinates (server names as <node>.<dc>)")
    p.add_argument("nodes", nargs="+")
    args = p.parse_args(argv)
    if len(args.nodes) > 2:
        raise CLIError("One or two node names must be specified")
    client = Client.from_args(args)
    nodes = list(args.nodes)
    if args.wan:
        coords: dict[str, Coordinate] = {}
        for dc in client.get_json("/v1/coordinate/datacenters"):
            coords |= _coords(dc["Coordinates"])
        if len(nodes) == 1:
            me = client.get_json("/v1/agent/self")["Config"]
            nodes.append(f"{me['NodeName']}.{me['Datacenter']}")
        kind = "WAN"
    else:
        coords = _coords(client.get_json("/v1/coordinate/nodes"))
        if len(nodes) == 1:
            nodes.append(client.get_json("/v1/agent/self")["Config"]["NodeName"])
        kind = "LAN"
    for n in nodes:
        if n not in coords:
            raise CLIError(f"Could not find a coordinate for node {n!r}")
    estimate = rtt(coords[nodes[0]], coords[nodes[1]])
    print(f"Estimated {nodes[0]} <-> {nodes[1]} rtt: {estimate * 1000:.3f} ms (using {kind} coordinates)")
    return 0


def event(argv: list[str]) -> int:
    p = FlagParser("beacon event", "Fire a user event to every agent of the datacenter.")
    add_http_flags(p)
    p.flag("name", required=True)
    p.flag("node", default="")
    p.flag("service", default="")
    p.flag("tag", default="")
    p.add_argument("payload", nargs="?", default="")
    args = p.parse_args(argv)
    if args.tag and not args.service:
        raise CLIError("Cannot provide tag filter without service filter.")
    params = {k: v for k, v in (("node", args.node), ("service", args.service), ("tag", args.tag)) if v}
    path = "/v1/event/fire/" + quote(args.name, safe="") + (("?" + urlencode(params)) if params else "")
    _, data = Client.from_args(args).call("PUT", path, args.payload.encode() if args.payload else None)
    print(f"Event ID: {json.loads(data)['ID']}")
    return 0


run_keyring = _wrap(keyring)
run_rtt = _wrap(rtt_cmd)
run_event = _wrap(event)
