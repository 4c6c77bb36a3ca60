"""Intentions: Consul's service-to-service authorization rules, as views over ``service-intentions``
config entries (Consul 1.9+ stores them so; the entry's ``Name`` is the destination, each of its
``Sources`` one intention).

Pure functions over the config table (``config_entries.rows``): the API's intention objects, the
order they are evaluated in, the match and check queries, and the entries an upsert or delete of
one source/destination pair produces (the endpoint layer writes those with a check-and-set).

Precedence (Consul's): an exact destination with an exact source is 9, with a ``*`` source 8; a
``*`` destination with an exact source 6, with a ``*`` source 5. Higher is evaluated first; ties go
by (source, destination) name. The first intention whose source and destination match a
connection decides it: ``allow``/``deny``, and one with L7 ``Permissions`` denies an L4 decision
(the check API and ``/v1/agent/connect/authorize`` make L4 decisions). With no match the default
applies: allow, unless ACLs are enabled with ``default_policy = deny``.
"""

from __future__ import annotations

from typing import Any

from beacon.errors import Invalid

KIND = "service-intentions"
WILDCARD = "*"
NAMESPACE = "default"


def precedence(source: str, destination: str) -> int:
    top = 9 if destination != WILDCARD else 6
    return top if source != WILDCARD else top - 1


def check_name(name: str, what: str) -> None:
    """Consul's rule: ``*`` alone, or a name without ``*``."""
    if not name:
        raise Invalid(f"{what} must be set")
    if name != WILDCARD and WILDCARD in name:
        raise Invalid(f"{what}: wildcard character '*' cannot be used with partial values")


def _sort_key(ixn: dict[str, Any]) -> tuple[int, str, str]:
    return -ixn["Precedence"], ixn["SourceName"], ixn["DestinationName"]


def to_intention(entry: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """One source of an entry as the API's Intention object."""
    out: dict[str, Any] = {
        "ID": src.get("LegacyID") or "",
        "Description": src.get("Description") or "",
        "SourceNS": NAMESPACE,
        "SourceName": src["Name"],
        "DestinationNS": NAMESPACE,
        "DestinationName": entry["Name"],
        "SourceType": src.get("Type") or "consul",
        "Action": src.get("Action") or "",
        "Precedence": precedence(src["Name"], entry["Name"]),
        "CreateIndex": entry.get("CreateIndex", 0),
        "ModifyIndex": entry.get("ModifyIndex", 0),
    }
    if src.get("Permissions"):
        out["Permissions"] = src["Permissions"]
    if src.get("Peer"):
        out["SourcePeer"] = src["Peer"]
    if src.get("LegacyMeta"):
        out["Meta"] = src["LegacyMeta"]
    return out


def _local_sources(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The sources a connection in this datacenter can match (not another cluster's peers)."""
    return [s for s in entry.get("Sources") or [] if isinstance(s, dict) and s.get("Name")
            and not s.get("Peer") and not s.get("SamenessGroup")]


def all_intentions(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = [to_intention(entry, src) for entry in _entries(table)
           for src in entry.get("Sources") or [] if isinstance(src, dict) and src.get("Name")]
    return sorted(out, key=_sort_key)


def _entries(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for key, e in table.items() if key.startswith(KIND + "/")]


def match(table: dict[str, dict[str, Any]], by: str, name: str) -> list[dict[str, Any]]:
    """Intentions that apply to ``name`` as a source or as a destination, in evaluation order."""
    names = (name, WILDCARD)
    if by == "destination":
        out = [to_intention(e, s) for e in _entries(table) if e["Name"] in names for s in _local_sources(e)]
    else:
        out = [to_intention(e, s) for e in _entries(table) for s in _local_sources(e) if s["Name"] in names]
    return sorted(out, key=_sort_key)


def decide(table: dict[str, dict[str, Any]], source: str, destination: str,
           default_allow: bool) -> tuple[bool, dict[str, Any] | None]:
    """The L4 decision for a connection and the intention that made it (None: the default)."""
    for ixn in match(table, "destination", destination):
        if ixn["SourceName"] in (source, WILDCARD):
            return (ixn["Action"] == "allow" and not ixn.get("Permissions")), ixn
    return default_allow, None


def exact(table: dict[str, dict[str, Any]], source: str, destination: str) -> dict[str, Any] | None:
    entry = table.get(f"{KIND}/{destination}")
    for src in _local_sources(entry) if entry else []:
        if src["Name"] == source:
            return to_intention(entry, src)  # type: ignore[arg-type]
    return None


def source_from_body(body: Any, source: str) -> dict[str, Any]:
    """An exact upsert's body (Consul's Intention object) as the entry's source for ``source``."""
    if not isinstance(body, dict):
        raise Invalid("Request decode failed: body must be a JSON object")
    fields = {str(k).lower(): v for k, v in body.items()}
    if fields.get("meta"):
        raise Invalid("Meta must be omitted for config entry based intentions")
    kind = fields.get("sourcetype") or "consul"
    if kind != "consul":
        raise Invalid("SourceType must be set to 'consul'")
    src: dict[str, Any] = {"Name": source, "Type": "consul"}
    action = fields.get("action") or ""
    permissions = fields.get("permissions") or []
    if not isinstance(action, str) or not isinstance(permissions, list):
        raise Invalid("Request decode failed: Action must be a string and Permissions a list")
    if permissions and action:
        raise Invalid("Action must be omitted if Permissions are specified")
    if not permissions and action.lower() not in ("allow", "deny"):
        raise Invalid("Action must be set to 'allow' or 'deny'")
    if action:
        src["Action"] = action.lower()
    if permissions:
        src["Permissions"] = permissions
    description = fields.get("description") or ""
    if not isinstance(description, str):
        raise Invalid("Request decode failed: Description must be a string")
    if description:
        src["Description"] = description
    return src


def upserted(entry: dict[str, Any] | None, destination: str, src: dict[str, Any]) -> dict[str, Any]:
    """The entry for ``destination`` with ``src`` put in place of its source of the same name."""
    base = {k: v for k, v in (entry or {"Kind": KIND, "Name": destination}).items()
            if k not in ("CreateIndex", "ModifyIndex")}
    sources = [s for s in base.get("Sources") or [] if not (isinstance(s, dict) and s.get("Name") == src["Name"]
                                                              and not s.get("Peer") and not s.get("SamenessGroup"))]
    base["Sources"] = [*sources, {**src, "Precedence": precedence(src["Name"], destination)}]
    return base


def without(entry: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The entry with the source named ``source`` removed (None: no source would be left)."""
    base = {k: v for k, v in entry.items() if k not in ("CreateIndex", "ModifyIndex")}
    base["Sources"] = [s for s in base.get("Sources") or []
                       if not (isinstance(s, dict) and s.get("Name") == source and not s.get("Peer")
                               and not s.get("SamenessGroup"))]
    return base if base["Sources"] else None
