"""`beacon acl auth-method ...` and `beacon acl binding-rule ...`, as Consul's CLI.

``-config`` takes the method's Config as JSON, ``@file`` or ``-`` (stdin). ``update`` merges the
flags given into the stored object (``-no-merge`` replaces it), as Consul's does.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from beacon.cli.acl import _parser, _print, _value_arg
from beacon.cli.http import Client, CLIError, run_subcommand

METHOD_FIELDS = ("Name", "Type", "DisplayName", "Description", "MaxTokenTTL", "TokenLocality", "Config")
RULE_FIELDS = ("ID", "AuthMethod", "Description", "BindType", "BindName", "Selector")


def _print_method(obj: dict[str, Any], fmt: str) -> None:
    if fmt == "pretty" and "Config" in obj:
        obj = dict(obj, Config="\n" + json.dumps(obj["Config"], indent=2))
    _print(obj, fmt, METHOD_FIELDS)


def _config(raw: str | None) -> Any:
    if raw is None:
        return None
    text = _value_arg(raw)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CLIError(f"Failed to parse -config as JSON: {exc}") from None


def _method_flags(p: Any, create: bool) -> None:
    p.flag("name", required=True)
    if create:
        p.flag("type", required=True)
    p.flag("display-name", default=None)
    p.flag("description", default=None)
    p.flag("max-token-ttl", default=None)
    p.flag("token-locality", default=None)
    p.flag("config", default=None, help="the Config as JSON, @file or - (stdin)")


def _method_body(args: Any, old: dict[str, Any]) -> dict[str, Any]:
    body = dict(old)
    for flag, key in (("display_name", "DisplayName"), ("description", "Description"),
                      ("max_token_ttl", "MaxTokenTTL"), ("token_locality", "TokenLocality")):
        value = getattr(args, flag)
        if value is not None:
            body[key] = value
    config = _config(args.config)
    if config is not None:
        body["Config"] = config
    return body


def auth_method(argv: list[str]) -> int:
    def create(a: list[str]) -> int:
        p = _parser("auth-method create")
        _method_flags(p, create=True)
        args = p.parse_args(a)
        body = _method_body(args, {"Name": args.name, "Type": args.type})
        _print_method(Client.from_args(args).put_json("/v1/acl/auth-method", body), args.format)
        return 0

    def read(a: list[str]) -> int:
        p = _parser("auth-method read")
        p.flag("name", required=True)
        args = p.parse_args(a)
        _print_method(Client.from_args(args).get_json(f"/v1/acl/auth-method/{quote(args.name)}"), args.format)
        return 0

    def update(a: list[str]) -> int:
        p = _parser("auth-method update")
        _method_flags(p, create=False)
        p.flag("no-merge", action="store_true")
        args = p.parse_args(a)
        client = Client.from_args(args)
        old = client.get_json(f"/v1/acl/auth-method/{quote(args.name)}")
        base = {"Name": old["Name"], "Type": old["Type"]} if args.no_merge else \
            {k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")}
        _print_method(client.put_json(f"/v1/acl/auth-method/{quote(args.name)}", _method_body(args, base)),
                      args.format)
        return 0

    def delete(a: list[str]) -> int:
        p = _parser("auth-method delete")
        p.flag("name", required=True)
        args = p.parse_args(a)
        Client.from_args(args).call("DELETE", f"/v1/acl/auth-method/{quote(args.name)}")
        print(f"Auth-method \"{args.name}\" deleted successfully")
        return 0

    def list_(a: list[str]) -> int:
        args = _parser("auth-method list").parse_args(a)
        methods = Client.from_args(args).get_json("/v1/acl/auth-methods")
        if args.format == "json":
            print(json.dumps(methods, indent=4))
            return 0
        for m in methods:
            print(f"{m['Name']}:")
            for key in ("Type", "DisplayName", "Description"):
                print(f"   {key}:{' ' * max(1, 14 - len(key))}{m.get(key) or ''}")
        return 0

    return run_subcommand({"create": create, "read": read, "update": update, "delete": delete, "list": list_},
                          "beacon acl auth-method <create|read|update|delete|list>", argv)


def _rule_flags(p: Any, create: bool) -> None:
    if create:
        p.flag("method", required=True)
        p.flag("bind-type", default="service")
        p.flag("bind-name", required=True)
    else:
        p.flag("id", required=True)
        p.flag("bind-type", default=None)
        p.flag("bind-name", default=None)
    p.flag("description", default=None)
    p.flag("selector", default=None)


def _rule_body(args: Any, old: dict[str, Any]) -> dict[str, Any]:
    body = dict(old)
    for flag, key in (("description", "Description"), ("selector", "Selector"), ("bind_type", "BindType"),
                      ("bind_name", "BindName")):
        value = getattr(args, flag)
        if value is not None:
            body[key] = value
    return body


def binding_rule(argv: list[str]) -> int:
    def create(a: list[str]) -> int:
        p = _parser("binding-rule create")
        _rule_flags(p, create=True)
        args = p.parse_args(a)
        body = _rule_body(args, {"AuthMethod": args.method})
        _print(Client.from_args(args).put_json("/v1/acl/binding-rule", body), args.format, RULE_FIELDS)
        return 0

    def read(a: list[str]) -> int:
        p = _parser("binding-rule read")
        p.flag("id", required=True)
        args = p.parse_args(a)
        _print(Client.from_args(args).get_json(f"/v1/acl/binding-rule/{quote(args.id)}"), args.format, RULE_FIELDS)
        return 0

    def update(a: list[str]) -> int:
        p = _parser("binding-rule update")
        _rule_flags(p, create=False)
        p.flag("no-merge", action="store_true")
        args = p.parse_args(a)
        client = Client.from_args(args)
        old = client.get_json(f"/v1/acl/binding-rule/{quote(args.id)}")
        base = {"ID": old["ID"], "AuthMethod": old["AuthMethod"]} if args.no_merge else \
            {k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")}
        _print(client.put_json(f"/v1/acl/binding-rule/{quote(args.id)}", _rule_body(args, base)), args.format,
               RULE_FIELDS)
        return 0

    def delete(a: list[str]) -> int:
        p = _parser("binding-rule delete")
        p.flag("id", required=True)
        args = p.parse_args(a)
        Client.from_args(args).call("DELETE", f"/v1/acl/binding-rule/{quote(args.id)}")
        print(f"Binding rule \"{args.id}\" deleted successfully")
        return 0

    def list_(a: list[str]) -> int:
        p = _parser("binding-rule list")
        p.flag("method", default="")
        args = p.parse_args(a)
        path = "/v1/acl/binding-rules" + (f"?authmethod={quote(args.method)}" if args.method else "")
        rules = Client.from_args(args).get_json(path)
        if args.format == "json":
            print(json.dumps(rules, indent=4))
            return 0
        for i, rule in enumerate(rules):
            if i:
                print()
            _print(rule, "pretty", RULE_FIELDS)
        return 0

    return run_subcommand({"create": create, "read": read, "update": update, "delete": delete, "list": list_},
                          "beacon acl binding-rule <create|read|update|delete|list>", argv)
