"""Catalog writes (Consul's Catalog.Register and Catalog.Deregister)."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.errors import Failed
from beacon.server import commands as cmd


async def register(submit: Submit, *, node: str, address: str, node_id: str = "", datacenter: str = "",
                   tagged_addresses: dict[str, str] | None = None, node_meta: dict[str, str] | None = None,
                   skip_node_update: bool = False, service: dict[str, Any] | None = None,
                   checks: list[dict[str, Any]] | None = None) -> None:
    """Register a node, and optionally one service (``Service.to_dict()``) and checks on it."""
    check_node(node, address, skip_node_update)
    await apply(submit, cmd.Register(
        node=node, address=address, id=node_id, datacenter=datacenter, tagged_addresses=tagged_addresses,
        node_meta=node_meta, skip_node_update=skip_node_update, service=service, checks=checks or None))


def check_node(node: str, address: str, skip_node_update: bool) -> None:
    """Consul's first checks of a registration (before the request's other parts are decoded)."""
    if not node:
        raise Failed("Must provide node")
    if not address and not skip_node_update:
        raise Failed("Must provide address if SkipNodeUpdate is not set")


async def deregister(submit: Submit, node: str, service_id: str = "", check_id: str = "") -> None:
    """Deregister a service or a check of a node, or (with neither) the whole node."""
    if not node:
        raise Failed("Must provide node")
    await apply(submit, cmd.Deregister(node=node, service_id=service_id, check_id=check_id))
