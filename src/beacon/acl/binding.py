"""Binding rules: which rules match a verified identity, and what each adds to the login's token.

A rule's ``Selector`` is a ``?filter`` expression (:mod:`beacon.agent.http.bexpr`) over the identity
``{"value": {...}, "list": {...}}`` (``value.team == "web"``, ``"admins" in list.groups``); an
empty one matches every identity. Its ``BindName`` may interpolate ``${value.<name>}``; the result
must be a valid name for the ``BindType``:

* ``service`` -> a service identity, ``node`` -> a node identity in this datacenter;
* ``role`` / ``policy`` -> a link to the role / policy of that name, ignored when none exists at
  login time (as Consul does, so a rule can name a role made later).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from beacon.agent.http.bexpr import FilterError, compile_filter, selectors

BIND_TYPES = ("service", "node", "role", "policy")
_VAR = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_IDENTITY_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")  # service and node identities
_ROLE_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,256}$")
_POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
_VALID = {"service": _IDENTITY_NAME, "node": _IDENTITY_NAME, "role": _ROLE_NAME, "policy": _POLICY_NAME}


class BindError(ValueError):
    pass


def interpolate(template: str, values: dict[str, str]) -> str:
    """``${value.x}`` -> ``values["x"]``; a name that is not a ``value.`` variable is an error."""
    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if not expr.startswith("value."):
            raise BindError(f"cannot interpolate ${{{expr}}}: only value.<name> variables can be used")
        name = expr[len("value."):]
        if name not in values:
            raise BindError(f"cannot interpolate ${{{expr}}}: the auth method maps no claim to {name!r}")
        return values[name]

    out = _VAR.sub(sub, template)
    if "${" in out:
        raise BindError(f"unterminated ${{ in {template!r}")
    return out


def check_name(bind_type: str, name: str) -> None:
    if not _VALID[bind_type].match(name):
        what = {"service": "a service identity", "node": "a node identity",
                "role": "a role", "policy": "a policy"}[bind_type]
        raise BindError(f"{name!r} is not a valid name for {what}")


def validate_rule(bind_type: str, bind_name: str, selector: str, value_vars: set[str],
                  list_vars: Iterable[str] = ()) -> None:
    """At write time: the selector parses and reads only the method's mapped claims
    (``value.<name>`` / ``list.<name>``), and the bind name interpolates (with placeholder values)
    to a valid name."""
    if bind_type not in BIND_TYPES:
        raise BindError(f"unknown BindType {bind_type!r} (one of {', '.join(BIND_TYPES)})")
    if selector:
        try:
            paths = selectors(selector)
        except FilterError as exc:
            raise BindError(f"Selector is invalid: {exc}") from None
        known = {("value", v) for v in value_vars} | {("list", v) for v in list_vars}
        for path in paths:
            if tuple(path) not in known:
                have = ", ".join(sorted(".".join(k) for k in known)) or "none"
                raise BindError(f"Selector is invalid: {'.'.join(path)!r} is not a variable of this auth method "
                                f"(its claim mappings give: {have})")
    if not bind_name:
        raise BindError("BindName is required")
    try:
        check_name(bind_type, interpolate(bind_name, {v: "fake" for v in value_vars}))
    except BindError as exc:
        raise BindError(f"invalid BindName: {exc}") from None


@dataclass
class Bindings:
    service_identities: list[dict[str, Any]] = field(default_factory=list)
    node_identities: list[dict[str, Any]] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)     # names, resolved at login
    policies: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.service_identities or self.node_identities or self.roles or self.policies)


def evaluate(rules: list[dict[str, Any]], identity: dict[str, Any], datacenter: str) -> Bindings:
    """What the matching rules bind, in rule order, without duplicates."""
    out = Bindings()
    values = identity.get("value") or {}
    for rule in rules:
        selector = rule.get("Selector") or ""
        if selector:
            try:
                if not compile_filter(selector)(identity):
                    continue
            except FilterError:
                continue  # validated at write; a rule that no longer parses matches nothing
        name = interpolate(rule["BindName"], values)
        try:
            check_name(rule["BindType"], name)
        except BindError as exc:
            raise BindError(f"binding rule {rule['ID']}: {exc}") from None
        kind = rule["BindType"]
        if kind == "service" and all(s["ServiceName"] != name for s in out.service_identities):
            out.service_identities.append({"ServiceName": name})
        elif kind == "node" and all(n["NodeName"] != name for n in out.node_identities):
            out.node_identities.append({"NodeName": name, "Datacenter": datacenter})
        elif kind == "role" and name not in out.roles:
            out.roles.append(name)
        elif kind == "policy" and name not in out.policies:
            out.policies.append(name)
    return out
