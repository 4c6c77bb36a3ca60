"""Consul's ACL rule language: parse HCL or JSON rules into a :class:`Rules` table, and merge them.

A rule names a resource (``key``, ``service``, ``node``, ``session``, ``agent``, ``event``, ``query``;
each also as ``<resource>_prefix``) and a policy (``read``, ``write``, ``list`` for keys, ``deny``), or
is one of the scalar rules ``operator``, ``acl``, ``keyring``, ``mesh``. A service rule may also say
``intentions`` (``read``, ``write``, ``deny``), kept as the ``intention`` resource; without it,
read or write on the service means intentions read, as in Consul::

    key_prefix "app/" { policy = "write" }
    service "web" { policy = "read" }
    operator = "read"

HCL is parsed by ``python-hcl2`` (Consul's policy syntax is plain HCL blocks and attributes, which
HCL2 reads the same as HCL1), JSON by orjson; anything else is refused with a message naming the
offending rule, as Consul's ``Failed to parse ACL rules`` does.

Merging (several policies on one token, or a policy plus identities) follows Consul's
``takesPrecedenceOver``: for the same rule, ``deny`` beats everything, then ``write`` > ``list`` > ``read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

DENY, READ, LIST, WRITE = "deny", "read", "list", "write"
POLICIES = (DENY, READ, LIST, WRITE)
# Consul's takesPrecedenceOver order (higher wins when two rules name the same thing).
_RANK = {READ: 1, LIST: 2, WRITE: 3, DENY: 4}

RESOURCES = ("key", "service", "node", "session", "agent", "event", "query", "intention")
# Rules name these; "intention" rights come from a service rule's ``intentions`` field instead.
NAMED = ("key", "service", "node", "session", "agent", "event", "query")
SCALARS = ("operator", "acl", "keyring", "mesh", "peering")


class RuleError(ValueError):
    """Rules that do not parse or name an unknown resource/policy."""


@dataclass
class Rules:
    """resource -> {name: policy} for exact rules and for prefix rules; scalar -> policy."""

    exact: dict[str, dict[str, str]] = field(default_factory=lambda: {r: {} for r in RESOURCES})
    prefix: dict[str, dict[str, str]] = field(default_factory=lambda: {r: {} for r in RESOURCES})
    scalar: dict[str, str] = field(default_factory=dict)

    def add(self, resource: str, name: str, policy: str, is_prefix: bool, intentions: str | None = None) -> None:
        self._put(resource, name, policy, is_prefix)
        if resource == "service":
            # Consul: a service rule without ``intentions`` grants intentions read with read or
            # write on the service, and denies them with deny.
            if intentions is None:
                intentions = READ if policy in (READ, WRITE) else DENY
            self._put("intention", name, intentions, is_prefix)

    def _put(self, resource: str, name: str, policy: str, is_prefix: bool) -> None:
        table = (self.prefix if is_prefix else self.exact)[resource]
        old = table.get(name)
        if old is None or _RANK[policy] > _RANK[old]:
            table[name] = policy

    def add_scalar(self, name: str, policy: str) -> None:
        old = self.scalar.get(name)
        if old is None or _RANK[policy] > _RANK[old]:
            self.scalar[name] = policy

    def merge(self, other: Rules) -> None:
        for resource in RESOURCES:  # "intention" included: merged as it is, not derived again
            for name, policy in other.exact[resource].items():
                self._put(resource, name, policy, False)
            for name, policy in other.prefix[resource].items():
                self._put(resource, name, policy, True)
        for name, policy in other.scalar.items():
            self.add_scalar(name, policy)


def _policy(value: Any, where: str, allow_list: bool) -> str:
    if isinstance(value, dict):
        unknown = set(value) - {"policy", "intentions"}
        if unknown:
            raise RuleError(f"Failed to parse ACL rules: {where}: unknown field {sorted(unknown)[0]!r}")
        value = value.get("policy")
    if not isinstance(value, str) or value not in POLICIES or (value == LIST and not allow_list):
        raise RuleError(f"Failed to parse ACL rules: Invalid {where} policy: {value!r}")
    return value


def _intentions(body: Any, where: str) -> str | None:
    """A service rule's ``intentions`` (Consul: read, write or deny), None when not given."""
    value = body.get("intentions") if isinstance(body, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or value not in (READ, WRITE, DENY):
        raise RuleError(f"Failed to parse ACL rules: Invalid {where} intentions: {value!r}")
    return value


def _blocks(value: Any, resource: str) -> list[tuple[str, Any]]:
    """HCL gives a list of one-entry dicts per block; JSON a dict (or a list of dicts)."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise RuleError(f"Failed to parse ACL rules: {resource} must be blocks with a name")
        out.extend((str(name), body) for name, body in item.items())
    return out


def from_document(doc: Any) -> Rules:
    if not isinstance(doc, dict):
        raise RuleError("Failed to parse ACL rules: expected an object at the top level")
    rules = Rules()
    for key, value in doc.items():
        if key in SCALARS:
            rules.add_scalar(key, _policy(value, key, False))
            continue
        is_prefix = key.endswith("_prefix")
        resource = key[: -len("_prefix")] if is_prefix else key
        if resource not in NAMED:
            raise RuleError(f"Failed to parse ACL rules: unknown rule {key!r}")
        for name, body in _blocks(value, key):
            where = f"{key} {name!r}"
            policy = _policy(body, where, resource == "key")
            intentions = _intentions(body, where) if resource == "service" else None
            rules.add(resource, name, policy, is_prefix, intentions)
    return rules


def _clean_hcl(value: Any) -> Any:
    """Drop python-hcl2's block markers so HCL and JSON documents look the same."""
    if isinstance(value, dict):
        return {k: _clean_hcl(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean_hcl(v) for v in value]
    return value


def parse(text: str) -> Rules:
    """Parse rules in HCL or JSON (Consul accepts both in a policy's ``Rules``)."""
    if not text.strip():
        return Rules()
    if text.lstrip().startswith("{"):
        try:
            return from_document(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise RuleError(f"Failed to parse ACL rules: {exc}") from None
    import hcl2  # imported here: the grammar is built on first use, and only servers parse rules
    from hcl2.utils import SerializationOptions

    try:
        doc = hcl2.loads(text, serialization_options=SerializationOptions(strip_string_quotes=True))
    except Exception as exc:  # lark raises several unrelated types; all mean "does not parse"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuleError(f"Failed to parse ACL rules: {first}") from None
    return from_document(_clean_hcl(doc))


def service_identity(name: str) -> Rules:
    """Consul's synthetic policy for a service identity."""
    r = Rules()
    r.add("service", name, WRITE, False)
    r.add("service", f"{name}-sidecar-proxy", WRITE, False)
    r.add("service", "", READ, True)
    r.add("node", "", READ, True)
    return r


def node_identity(name: str) -> Rules:
    """Consul's synthetic policy for a node identity."""
    r = Rules()
    r.add("node", name, WRITE, False)
    r.add("service", "", READ, True)
    return r
