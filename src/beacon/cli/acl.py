"""`beacon acl bootstrap | policy ... | token ... | role ...`, as Consul's CLI (`auth-method ...` and
`binding-rule ...` live in :mod:`beacon.cli.acl_auth`).

Every command takes the shared HTTP flags (``-token``, ``-token-file``, ``CONSUL_HTTP_TOKEN``, TLS).
``-rules @file`` reads rules from a file (``-`` or ``@-``: stdin). Output is Consul's ``key: value`` block
per object; ``-format json`` prints the API's JSON instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, run_subcommand

USAGE = "beacon acl <bootstrap|policy|token|role|auth-method|binding-rule> <subcommand> [options]"


def _parser(name: str) -> FlagParser:
    p = FlagParser(f"beacon acl {name}")
    add_http_flags(p)
    p.flag("format", default="pretty", choices=("pretty", "json"))
    return p


def _value_arg(value: str) -> str:
    if value in ("-", "@-"):
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise CLIError(f"Failed to read rules: {exc.strerror}: {value[1:]}") from None
    return value


def _print(obj: Any, fmt: str, order: tuple[str, ...]) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=4))
        return
    for key in order:
        if key not in obj:
            continue
        value = obj[key]
        if key in ("Policies", "Roles"):
            print(f"{key}:")
            for link in value or []:
                print(f"   {link['ID']} - {link['Name']}")
        elif key == "Rules":
            print("Rules:")
            print(value)
        elif key in ("ServiceIdentities", "NodeIdentities"):
            print(f"{key}:")
            for ident in value or []:
                print(f"   {ident.get('ServiceName') or ident.get('NodeName')}")
        else:
            print(f"{key}:{' ' * max(1, 17 - len(key))}{value}")


TOKEN_FIELDS = ("AccessorID", "SecretID", "Description", "Local", "CreateTime", "ExpirationTime", "Policies",
                "Roles", "ServiceIdentities", "NodeIdentities")
POLICY_FIELDS = ("ID", "Name", "Description", "Datacenters", "Rules")
ROLE_FIELDS = ("ID", "Name", "Description", "Policies", "ServiceIdentities", "NodeIdentities")


def _bootstrap(argv: list[str]) -> int:
    args = _parser("bootstrap").parse_args(argv)
    tok = Client.from_args(args).put_json("/v1/acl/bootstrap", {})
    _print(tok, args.format, TOKEN_FIELDS)
    return 0


def _links(ids: list[str], names: list[str]) -> list[dict[str, str]]:
    return [{"ID": i} for i in ids] + [{"Name": n} for n in names]


# ------------------------------------------------------------ policies and roles
def _find(client: Client, args: Any, kind: str) -> dict[str, Any]:
    """A policy or a role by `-id` or `-name` (both have /v1/acl/<kind>/name/:name)."""
    if args.id:
        return client.get_json(f"/v1/acl/{kind}/{quote(args.id)}")
    if args.name:
        return client.get_json(f"/v1/acl/{kind}/name/{quote(args.name)}")
    raise CLIError("Must specify either the -id or -name parameters")


def _by_id_or_name(kind: str, verb: str, a: list[str]) -> tuple[Any, Client, dict[str, Any]]:
    p = _parser(f"{kind} {verb}")
    p.flag("id", default="")
    p.flag("name", default="")
    args = p.parse_args(a)
    client = Client.from_args(args)
    return args, client, _find(client, args, kind)


def _read(kind: str, fields: tuple[str, ...]) -> Callable[[list[str]], int]:
    def read(a: list[str]) -> int:
        args, _, obj = _by_id_or_name(kind, "read", a)
        _print(obj, args.format, fields)
        return 0
    return read


def _delete(kind: str) -> Callable[[list[str]], int]:
    def delete(a: list[str]) -> int:
        _, client, obj = _by_id_or_name(kind, "delete", a)
        client.call("DELETE", f"/v1/acl/{kind}/{obj['ID']}")
        print(f"{kind.capitalize()} \"{obj['ID']}\" deleted successfully")
        return 0
    return delete


# ---------------------------------------------------------------------- policy


def _policy(argv: list[str]) -> int:
    def create(a: list[str]) -> int:
        p = _parser("policy create")
        p.flag("name", required=True)
        p.flag("description", default="")
        p.flag("rules", default="")
        p.flag("valid-datacenter", action="append", default=[])
        args = p.parse_args(a)
        body = {"Name": args.name, "Description": args.description, "Rules": _value_arg(args.rules),
                "Datacenters": args.valid_datacenter or None}
        _print(Client.from_args(args).put_json("/v1/acl/policy", body), args.format, POLICY_FIELDS)
        return 0

    read = _read("policy", POLICY_FIELDS)

    def update(a: list[str]) -> int:
        p = _parser("policy update")
        p.flag("id", default="")
        p.flag("name", default="")
        p.flag("description", default=None)
        p.flag("rules", default=None)
        args = p.parse_args(a)
        client = Client.from_args(args)
        old = _find(client, args, "policy")
        body = {"Name": args.name or old["Name"], "Rules": old["Rules"] if args.rules is None
                else _value_arg(args.rules),
                "Description": old["Description"] if args.description is None else args.description}
        _print(client.put_json(f"/v1/acl/policy/{old['ID']}", body), args.format, POLICY_FIELDS)
        return 0

    delete = _delete("policy")

    def list_(a: list[str]) -> int:
        args = _parser("policy list").parse_args(a)
        pols = Client.from_args(args).get_json("/v1/acl/policies")
        if args.format == "json":
            print(json.dumps(pols, indent=4))
            return 0
        for pol in pols:
            print(f"{pol['Name']}:")
            for key in ("ID", "Description", "Datacenters"):
                print(f"   {key}:{' ' * max(1, 14 - len(key))}{pol.get(key) or ''}")
        return 0

    return run_subcommand({"create": create, "read": read, "update": update, "delete": delete, "list": list_},
                          "beacon acl policy <create|read|update|delete|list>", argv)


# ---------------------------------------------------------------------- token
def _token_flags(p: FlagParser) -> None:
    p.flag("description", default="")
    p.flag("policy-id", action="append", default=[])
    p.flag("policy-name", action="append", default=[])
    p.flag("role-id", action="append", default=[])
    p.flag("role-name", action="append", default=[])
    p.flag("service-identity", action="append", default=[])
    p.flag("node-identity", action="append", default=[])


def _token_body(args: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Description": args.description}
    if args.policy_id or args.policy_name:
        body["Policies"] = _links(args.policy_id, args.policy_name)
    if args.role_id or args.role_name:
        body["Roles"] = _links(args.role_id, args.role_name)
    if args.service_identity:
        body["ServiceIdentities"] = [{"ServiceName": s.split(":", 1)[0]} for s in args.service_identity]
    if args.node_identity:
        body["NodeIdentities"] = [{"NodeName": n.split(":", 1)[0]} for n in args.node_identity]
    return body


def _token(argv: list[str]) -> int:
    def create(a: list[str]) -> int:
        p = _parser("token create")
        _token_flags(p)
        p.flag("accessor", default="")
        p.flag("secret", default="")
        p.flag("local", action="store_true")
        p.flag("expires-ttl", default="")
        args = p.parse_args(a)
        body = _token_body(args)
        body.update({k: v for k, v in (("AccessorID", args.accessor), ("SecretID", args.secret),
                                       ("ExpirationTTL", args.expires_ttl)) if v})
        body["Local"] = args.local
        _print(Client.from_args(args).put_json("/v1/acl/token", body), args.format, TOKEN_FIELDS)
        return 0

    def read(a: list[str]) -> int:
        p = _parser("token read")
        p.flag("accessor-id", "id", default="")
        p.flag("self", action="store_true")
        args = p.parse_args(a)
        path = "/v1/acl/token/self" if args.self else f"/v1/acl/token/{quote(args.accessor_id)}"
        if not args.self and not args.accessor_id:
            raise CLIError("Must specify the -accessor-id parameter")
        _print(Client.from_args(args).get_json(path), args.format, TOKEN_FIELDS)
        return 0

    def update(a: list[str]) -> int:
        p = _parser("token update")
        _token_flags(p)
        p.flag("accessor-id", "id", required=True)
        args = p.parse_args(a)
        client = Client.from_args(args)
        old = client.get_json(f"/v1/acl/token/{quote(args.accessor_id)}")
        body = {k: old.get(k) for k in ("Description", "Policies", "Roles", "ServiceIdentities", "NodeIdentities")}
        body.update({k: v for k, v in _token_body(args).items() if v})
        _print(client.put_json(f"/v1/acl/token/{quote(args.accessor_id)}", body), args.format, TOKEN_FIELDS)
        return 0

    def clone(a: list[str]) -> int:
        p = _parser("token clone")
        p.flag("accessor-id", "id", required=True)
        p.flag("description", default="")
        args = p.parse_args(a)
        tok = Client.from_args(args).put_json(f"/v1/acl/token/{quote(args.accessor_id)}/clone",
                                              {"Description": args.description})
        _print(tok, args.format, TOKEN_FIELDS)
        return 0

    def delete(a: list[str]) -> int:
        p = _parser("token delete")
        p.flag("accessor-id", "id", required=True)
        args = p.parse_args(a)
        Client.from_args(args).call("DELETE", f"/v1/acl/token/{quote(args.accessor_id)}")
        print(f"Token \"{args.accessor_id}\" deleted successfully")
        return 0

    def list_(a: list[str]) -> int:
        args = _parser("token list").parse_args(a)
        toks = Client.from_args(args).get_json("/v1/acl/tokens")
        if args.format == "json":
            print(json.dumps(toks, indent=4))
            return 0
        for i, tok in enumerate(toks):
            if i:
                print()
            _print(tok, "pretty", TOKEN_FIELDS)
        return 0

    return run_subcommand({"create": create, "read": read, "update": update, "clone": clone, "delete": delete,
                           "list": list_}, "beacon acl token <create|read|update|clone|delete|list>", argv)


# ---------------------------------------------------------------------- role


def _role(argv: list[str]) -> int:
    def create(a: list[str]) -> int:
        p = _parser("role create")
        p.flag("name", required=True)
        _token_flags(p)
        args = p.parse_args(a)
        body = _token_body(args)
        body["Name"] = args.name
        _print(Client.from_args(args).put_json("/v1/acl/role", body), args.format, ROLE_FIELDS)
        return 0

    read = _read("role", ROLE_FIELDS)
    delete = _delete("role")

    def list_(a: list[str]) -> int:
        args = _parser("role list").parse_args(a)
        roles = Client.from_args(args).get_json("/v1/acl/roles")
        if args.format == "json":
            print(json.dumps(roles, indent=4))
            return 0
        for role in roles:
            print(f"{role['Name']}:")
            print(f"   ID:            {role['ID']}")
            print(f"   Description:   {role.get('Description', '')}")
        return 0

    return run_subcommand({"create": create, "read": read, "delete": delete, "list": list_},
                          "beacon acl role <create|read|delete|list>", argv)


def run(argv: list[str]) -> int:
    from beacon.cli.acl_auth import auth_method, binding_rule

    return run_subcommand({"bootstrap": _bootstrap, "policy": _policy, "token": _token, "role": _role,
                           "auth-method": auth_method, "binding-rule": binding_rule}, USAGE, argv)
