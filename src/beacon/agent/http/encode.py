"""Model -> Consul's JSON shapes. The only place PascalCase appears on the way out."""

from __future__ import annotations

import base64
from typing import Any

from beacon.model import HealthCheck, KVEntry, Node, Service, Session


def node_json(n: Node) -> dict[str, Any]:
    tagged = n.tagged_addresses or {"lan": n.address, "lan_ipv4": n.address,
                                     "wan": n.address, "wan_ipv4": n.address}
    return {
        "ID": n.id, "Node": n.node, "Address": n.address, "Datacenter": n.datacenter,
        "TaggedAddresses": tagged, "Meta": n.meta or {},
        "CreateIndex": n.create_index, "ModifyIndex": n.modify_index,
    }


def _service_tagged(s: Service) -> dict[str, Any]:
    return {k: {"Address": v.get("Address", v.get("address", "")), "Port": v.get("Port", v.get("port", 0))}
            for k, v in s.tagged_addresses.items()}


def agent_service_json(s: Service, datacenter: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": s.id, "Service": s.service, "Tags": list(s.tags), "Meta": dict(s.meta), "Port": s.port,
        "Address": s.address,
    }
    if s.tagged_addresses:
        out["TaggedAddresses"] = _service_tagged(s)
    out["Weights"] = dict(s.weights)
    out["EnableTagOverride"] = s.enable_tag_override
    if s.kind:
        out["Kind"] = s.kind
    out["Datacenter"] = datacenter
    return out


def catalog_service_json(s: Service) -> dict[str, Any]:
    """The service part of /catalog/node/:node and /health/service entries."""
    out: dict[str, Any] = {
        "ID": s.id, "Service": s.service, "Tags": list(s.tags), "Address": s.address,
        "Meta": dict(s.meta), "Port": s.port, "Weights": dict(s.weights),
        "EnableTagOverride": s.enable_tag_override,
    }
    if s.tagged_addresses:
        out["TaggedAddresses"] = _service_tagged(s)
    if s.kind:
        out["Kind"] = s.kind
    out["CreateIndex"] = s.create_index
    out["ModifyIndex"] = s.modify_index
    return out


def service_node_json(n: Node, s: Service) -> dict[str, Any]:
    """/catalog/service/:name entries."""
    nj = node_json(n)
    return {
        "ID": n.id, "Node": n.node, "Address": n.address, "Datacenter": n.datacenter,
        "TaggedAddresses": nj["TaggedAddresses"], "NodeMeta": n.meta or {},
        "ServiceKind": s.kind, "ServiceID": s.id, "ServiceName": s.service, "ServiceTags": list(s.tags),
        "ServiceAddress": s.address,
        "ServiceTaggedAddresses": _service_tagged(s) if s.tagged_addresses else {},
        "ServiceWeights": dict(s.weights), "ServiceMeta": dict(s.meta), "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override, "ServiceProxy": {}, "ServiceConnect": {},
        "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
    }


def check_json(c: HealthCheck) -> dict[str, Any]:
    return {
        "Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status, "Notes": c.notes,
        "Output": c.output, "ServiceID": c.service_id, "ServiceName": c.service_name,
        "ServiceTags": list(c.service_tags), "Type": c.type, "Interval": c.interval,
        "Timeout": c.timeout, "ExposedPort": c.exposed_port, "Definition": dict(c.definition),
        "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
    }


def kv_json(e: KVEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "LockIndex": e.lock_index, "Key": e.key, "Flags": e.flags,
        "Value": None if e.value is None else base64.b64encode(e.value).decode(),
    }
    if e.session:
        out["Session"] = e.session
    out["CreateIndex"] = e.create_index
    out["ModifyIndex"] = e.modify_index
    return out


def session_json(s: Session) -> dict[str, Any]:
    return {
        "ID": s.id, "Name": s.name, "Node": s.node, "LockDelay": s.lock_delay_ns, "Behavior": s.behavior,
        "TTL": s.ttl, "NodeChecks": list(s.node_checks),
        "ServiceChecks": [dict(x) for x in s.service_checks] or None,
        "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
    }
