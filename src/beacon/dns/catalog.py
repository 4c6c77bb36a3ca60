"""The DNS server's reads on the :class:`~beacon.server.fsm.StateStore`.

Written as functions over the store's public methods and attributes so the store needs no
DNS-specific methods. Every function takes the store's lock for the whole read.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from beacon.model import HealthCheck, Node, Service

Instance = tuple[Node, Service, list[HealthCheck]]

# Consul registers its servers as the "consul" service; NS records list them.
CONSUL_SERVICE = "consul"


class Store(Protocol):
    """The part of StateStore the DNS server reads."""

    lock: object
    nodes: dict[str, Node]
    services: dict[tuple[str, str], Service]

    @property
    def catalog_index(self) -> int: ...

    @property
    def catalog_version(self) -> int: ...

    def health_service(self, name: str) -> tuple[int, list[Instance]]: ...

    def get_node(self, name: str) -> Node | None: ...


class Tracking:
    """A read-through view of the store that records what one answer read.

    ``health_service(name)`` and ``get_node(name)`` record the service's or node's own index (taken
    before the read, so a write racing the read makes the record stale, never the answer); reading
    anything else makes the answer depend on the whole catalog (``deps()`` is None).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._deps: list[tuple[str | None, str, int]] = [(None, "", getattr(store, "generation", 0))]
        self._whole = False

    @property
    def catalog_index(self) -> int:
        return self._store.catalog_index

    @property
    def catalog_version(self) -> int:
        return self._store.catalog_version

    def health_service(self, name: str) -> tuple[int, list[Instance]]:
        self._record("service_index", name.lower())
        return self._store.health_service(name)

    def get_node(self, name: str) -> Node | None:
        self._record("node_index", name.lower())
        return self._store.get_node(name)

    def _record(self, attr: str, name: str) -> None:
        index = getattr(self._store, attr, None)
        if index is None:
            self._whole = True
        else:
            self._deps.append((attr, name, index.get(name, 0)))

    def __getattr__(self, attr: str) -> object:
        self._whole = True  # e.g. a reverse lookup walking every node
        return getattr(self._store, attr)

    def deps(self) -> tuple[tuple[str | None, str, int], ...] | None:
        return None if self._whole else tuple(self._deps)


def is_healthy(checks: list[HealthCheck], only_passing: bool) -> bool:
    """Consul's CheckServiceNodes.Filter: any critical check (service or node) drops the instance;
    with only_passing anything but passing does. Unknown statuses count as critical."""
    for c in checks:
        status = c.status
        if status == "passing":
            continue
        if status == "warning" and not only_passing:
            continue
        return False
    return True


def healthy_instances(store: Store, service: str, tag: str, only_passing: bool) -> list[Instance]:
    """Instances of ``service`` carrying ``tag`` (case-insensitive; "" = any) that pass the filter,
    in the store's stable order."""
    _, rows = store.health_service(service)
    out = []
    for node, svc, checks in rows:
        if tag and not any(t.lower() == tag for t in svc.tags):
            continue
        if is_healthy(checks, only_passing):
            out.append((node, svc, checks))
    return out


def node_by_address(store: Store, reverse_name: str) -> Node | None:
    """First node (by name) whose address reverse-maps to ``reverse_name`` (lower-case, dotted)."""
    with store.lock:  # type: ignore[attr-defined]
        nodes = sorted(store.nodes.values(), key=lambda n: n.node)
    for node in nodes:
        if reverse_pointer(node.address) == reverse_name:
            return node
    return None


def service_by_address(store: Store, address: str) -> Service | None:
    """First service instance whose own address is exactly ``address``."""
    with store.lock:  # type: ignore[attr-defined]
        for key in sorted(store.services):
            svc = store.services[key]
            if svc.address == address:
                return svc
    return None


def reverse_pointer(address: str) -> str:
    """``10.0.0.1`` -> ``1.0.0.10.in-addr.arpa.``; ``""`` for a hostname."""
    try:
        return ipaddress.ip_address(address).reverse_pointer + "."
    except ValueError:
        return ""
