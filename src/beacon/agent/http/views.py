"""Read views cached per index: computed once per change of what they read, encoded once, shared.

Every list and health read that many clients poll or block on (``/v1/catalog/services``,
``/v1/catalog/nodes``, ``/v1/health/service/:name`` with and without ``?passing``,
``/v1/internal/ui/*``, KV recurse) goes through :class:`Views`. A view is stamped with the indexes
of exactly what it reads (the services table for the service list, the service's own index for its
health, ...) plus the store's restore generation. A request whose stamp matches gets the cached
:class:`~beacon.agent.http.core.Encoded` (value and bytes), so a thousand readers of one unchanged
view, or a thousand blocking queries woken by one write, cost one build and one encode.

Stamps are read and views built under the store lock only where the build reads mutable rows
(checks are updated in place); the whole-catalog lists copy under the lock and sort outside it.
Tests compare every view against a fresh computation after random command sequences
(tests/unit/test_views.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from beacon.agent.http.core import Encoded
from beacon.agent.http.encode import catalog_service_json, check_json, kv_json, node_json
from beacon.model import HealthCheck, KVEntry, Node, Service
from beacon.server.fsm import StateStore

View = tuple[int, Encoded]

# Per-name and per-prefix views are bounded; the least recently used go first.
MAX_KEYED_VIEWS = 4096


def health_entry(node: Node, svc: Service, checks: list[HealthCheck]) -> dict[str, Any]:
    return {"Node": node_json(node), "Service": catalog_service_json(svc), "Checks": [check_json(c) for c in checks]}


def ui_service_summaries(store: StateStore, datacenter: str) -> list[dict[str, Any]]:
    """Every service with its tags, nodes, instance count and check counts (node checks included)."""
    _, names = store.list_services()
    out = []
    for name, tags in names.items():
        _, rows = store.health_service(name)
        nodes: list[str] = []
        counts = {"passing": 0, "warning": 0, "critical": 0}
        for node, _svc, checks in rows:
            if node.node not in nodes:
                nodes.append(node.node)
            for c in checks:
                if c.status in counts:
                    counts[c.status] += 1
        out.append({"Name": name, "Datacenter": datacenter, "Tags": tags, "Nodes": nodes, "Kind": "",
                    "InstanceCount": len(rows), "ChecksPassing": counts["passing"],
                    "ChecksWarning": counts["warning"], "ChecksCritical": counts["critical"],
                    "ExternalSources": []})
    return out


def ui_node_summary(store: StateStore, node: Node) -> dict[str, Any]:
    _, _, services = store.node_services(node.node)
    _, checks = store.node_checks(node.node)
    out = node_json(node)
    out["Services"] = [{"ID": s.id, "Service": s.service, "Tags": list(s.tags), "Address": s.address,
                        "Port": s.port, "Meta": dict(s.meta)} for s in services]
    out["Checks"] = [check_json(c) for c in checks]
    return out


class Views:
    def __init__(self, store: StateStore, datacenter: str) -> None:
        self.store = store
        self.datacenter = datacenter
        self._whole: dict[str, tuple[Hashable, int, Encoded]] = {}
        self._keyed: OrderedDict[Hashable, tuple[Hashable, int, Encoded]] = OrderedDict()
        # key -> (the entry object it was encoded from, its encoding): a write replaces the entry,
        # so identity is the stamp (the cache holds the object, so its id cannot be reused).
        self._kv: dict[str, tuple[KVEntry, Encoded]] = {}
        self.builds = 0  # how many views were (re)built: a test and the benches read it

    # ------------------------------------------------------------------ plumbing
    def _cached(self, table: dict[Any, tuple[Hashable, int, Encoded]], key: Hashable, stamp: Hashable,
                build: Callable[[], tuple[int, Any]]) -> View:
        hit = table.get(key)
        if hit is not None and hit[0] == stamp:
            if table is self._keyed:
                self._keyed.move_to_end(key)
            return hit[1], hit[2]
        index, value = build()
        self.builds += 1
        view = (stamp, index, Encoded(value))
        table[key] = view
        if table is self._keyed and len(self._keyed) > MAX_KEYED_VIEWS:
            self._keyed.popitem(last=False)
        return index, view[2]

    # ------------------------------------------------------------------ catalog
    def catalog_services(self) -> View:
        store = self.store
        return self._cached(self._whole, "services", (store.generation, store.tables["services"]),
                            store.list_services)

    def catalog_nodes(self) -> View:
        store = self.store

        def build() -> tuple[int, list[dict[str, Any]]]:
            with store.lock:  # nodes are replaced on change, never mutated: copy here, encode outside
                idx, nodes = store.tables["nodes"], list(store.nodes.values())
            nodes.sort(key=lambda n: n.node)
            return idx, [node_json(n) for n in nodes]

        return self._cached(self._whole, "nodes", (store.generation, store.tables["nodes"]), build)

    # ------------------------------------------------------------------ health
    def health_service(self, name: str, passing: bool) -> View:
        store = self.store
        name_key = name.lower()
        own = store.service_index.get(name_key, 0)

        def build() -> tuple[int, list[dict[str, Any]]]:
            with store.lock:  # checks are updated in place: encode the rows under the lock
                idx, rows = store.health_service(name)
                return idx, [health_entry(n, s, checks) for n, s, checks in rows
                             if not passing or all(c.status == "passing" for c in checks)]

        index, body = self._cached(self._keyed, ("health", name, passing), (store.generation, own), build)
        if own == 0:  # no such service yet: the body stays [], the index follows the catalog
            index = max(store.catalog_index, 1)
        return index, body

    # ------------------------------------------------------------------ UI summaries
    def _catalog_stamp(self) -> Hashable:
        # The three tables, not catalog_index: that one is floored at 1, so the first write
        # (index 1) would not move it.
        t = self.store.tables
        return self.store.generation, t["nodes"], t["services"], t["checks"]

    def ui_services(self) -> View:
        store = self.store

        def build() -> tuple[int, list[dict[str, Any]]]:
            with store.lock:
                return store.catalog_index, ui_service_summaries(store, self.datacenter)

        return self._cached(self._whole, "ui-services", self._catalog_stamp(), build)

    def ui_nodes(self) -> View:
        store = self.store

        def build() -> tuple[int, list[dict[str, Any]]]:
            with store.lock:
                _, nodes = store.list_nodes()
                return store.catalog_index, [ui_node_summary(store, n) for n in nodes]

        return self._cached(self._whole, "ui-nodes", self._catalog_stamp(), build)

    # ------------------------------------------------------------------ KV
    def kv_entry(self, key: str) -> tuple[int, Encoded | None]:
        """``GET /v1/kv/<key>``: one encoding per written version, shared by every reader."""
        idx, entry = self.store.kv_get(key)
        if entry is None:
            return idx, None
        hit = self._kv.get(key)
        if hit is not None and hit[0] is entry:
            return idx, hit[1]
        if len(self._kv) >= MAX_KEYED_VIEWS * 4:
            self._kv.clear()
        body = Encoded([kv_json(entry)])
        self._kv[key] = (entry, body)
        return idx, body

    def kv_recurse(self, prefix: str) -> View:
        store = self.store

        def build() -> tuple[int, list[dict[str, Any]]]:
            with store.lock:  # entries are replaced on write, never mutated
                idx, entries = store.kv_list(prefix)
            return idx, [kv_json(e) for e in entries]

        return self._cached(self._keyed, ("kv", prefix), (store.generation, store.tables["kvs"]), build)


def views_of(agent: Any) -> Views:
    """The agent's views, made on first use (one per agent and store)."""
    views: Views | None = getattr(agent, "_views", None)
    if views is None or views.store is not agent.store:
        views = Views(agent.store, agent.config.datacenter)
        agent._views = views
    return views
