from __future__ import annotations

from urllib.parse import quote

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, print_table, run_subcommand


def _services(argv: list[str]) -> int:
    p = FlagParser("beacon catalog services")
    add_http_flags(p)
    p.flag("tags", action="store_true")
    p.flag("node", default=None)
    p.flag("node-meta", action="append", default=[])
    args = p.parse_args(argv)
    client = Client.from_args(args)
    if args.node:
        node = client.get_json("/v1/catalog/node/" + quote(args.node))
        if node is None:
            raise CLIError(f"No node found with name {args.node!r}")
        services: dict[str, list[str]] = {}
        for s in node["Services"].values():
            services.setdefault(s["Service"], []).extend(t for t in s["Tags"] if t not in services.get(s["Service"], []))
    else:
        qs = "&".join("node-meta=" + quote(m) for m in args.node_meta)
        services = client.get_json("/v1/catalog/services" + ("?" + qs if qs else ""))
    width = max((len(n) for n in services), default=0)
    for name in sorted(services):
        if args.tags:
            print(f"{name.ljust(width)}  {','.join(sorted(services[name]))}".rstrip())
        else:
            print(name)
    return 0


def _nodes(argv: list[str]) -> int:
    p = FlagParser("beacon catalog nodes")
    add_http_flags(p)
    p.flag("service", default=None)
    p.flag("detailed", action="store_true")
    p.flag("filter", default=None)
    args = p.parse_args(argv)
    client = Client.from_args(args)
    qs = "?filter=" + quote(args.filter) if args.filter else ""
    if args.service:
        rows = [{"Node": e["Node"], "ID": e["ID"], "Address": e["Address"], "Datacenter": e["Datacenter"]}
                for e in client.get_json("/v1/catalog/service/" + quote(args.service) + qs)]
    else:
        rows = client.get_json("/v1/catalog/nodes" + qs)
    table = [("Node", "ID", "Address", "DC")]
    for n in rows:
        table.append((n["Node"], n["ID"] if args.detailed else n["ID"][:8], n["Address"], n["Datacenter"]))
    print_table(table)
    return 0


def _datacenters(argv: list[str]) -> int:
    p = FlagParser("beacon catalog datacenters")
    add_http_flags(p)
    args = p.parse_args(argv)
    for dc in Client.from_args(args).get_json("/v1/catalog/datacenters"):
        print(dc)
    return 0


SUB = {"services": _services, "nodes": _nodes, "datacenters": _datacenters}


def run(argv: list[str]) -> int:
    return run_subcommand(SUB, "beacon catalog <services|nodes|datacenters> [options]", argv)
