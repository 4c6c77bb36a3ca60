"""`beacon tls ca create` and `beacon tls cert create -server|-client|-cli`, as Consul's CLI."""

from __future__ import annotations

import sys

from beacon.cli.flags import FlagParser
from beacon.tls.certs import CertError, CertRequest, create_ca, create_cert

USAGE = "beacon tls <ca create|cert create> [options]"


def _ca_create(argv: list[str]) -> int:
    p = FlagParser("beacon tls ca create")
    p.flag("domain", default="consul")
    p.flag("days", type=int, default=1825)
    p.flag("common-name", default="")
    args = p.parse_args(argv)
    ca, key = create_ca(".", args.domain, args.days, args.common_name)
    print(f"==> Saved {ca}")
    print(f"==> Saved {key}")
    return 0


def _cert_create(argv: list[str]) -> int:
    p = FlagParser("beacon tls cert create")
    p.flag("server", action="store_true")
    p.flag("client", action="store_true")
    p.flag("cli", action="store_true")
    p.flag("dc", default="dc1")
    p.flag("domain", default="consul")
    p.flag("days", type=int, default=365)
    p.flag("node", default="")
    p.flag("ca", default="")
    p.flag("key", default="")
    p.flag("additional-dnsname", action="append", default=[])
    p.flag("additional-ipaddress", action="append", default=[])
    args = p.parse_args(argv)
    kinds = [k for k in ("server", "client", "cli") if getattr(args, k)]
    if len(kinds) != 1:
        raise CertError("Please provide either -server, -client, or -cli")
    ca = args.ca or f"{args.domain}-agent-ca.pem"
    key = args.key or f"{args.domain}-agent-ca-key.pem"
    cert_path, key_path = create_cert(
        CertRequest(kinds[0], args.dc, args.domain, args.days, tuple(args.additional_dnsname),
                    tuple(args.additional_ipaddress), args.node), ca, key)
    print(f"==> Using {ca} and {key}")
    print(f"==> Saved {cert_path}")
    print(f"==> Saved {key_path}")
    return 0


def run(argv: list[str]) -> int:
    table = {("ca", "create"): _ca_create, ("cert", "create"): _cert_create}
    fn = table.get(tuple(argv[:2]))  # type: ignore[call-overload]
    if fn is None:
        print(f"Usage: {USAGE}", file=sys.stderr)
        return 1
    try:
        return fn(argv[2:])
    except CertError as exc:
        print(f"==> {exc}", file=sys.stderr)
        return 1
