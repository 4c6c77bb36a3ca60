"""The catalog as the DNS server may see it under ACLs: only what the agent's default token (else
the anonymous token) may read, as Consul's DNS does.

:class:`ACLStore` stands in for the store the DNS server reads (``beacon.dns.catalog.Store``): service
lookups answer nothing for a service the token may not read and drop instances on nodes it may not
read; node lookups and reverse lookups see only readable nodes. Its ``catalog_version`` and
``generation`` also move whenever the ACL tables or the default token change, so the DNS answer
cache (stamped with the one, re-validated against the other) never serves an answer built under
other rights.
"""

from __future__ import annotations

from typing import Any

from beacon.acl import state
from beacon.acl.authorizer import Authorizer
from beacon.acl.resolver import ACLNotFound, Resolver
from beacon.model import Node, Service
from beacon.server.fsm import StateStore

_DENY_ALL = Authorizer(None, False)


class ACLStore:
    def __init__(self, store: StateStore, resolver: Resolver) -> None:
        self._store = store
        self._resolver = resolver
        self._seen: tuple[int, str] = (-1, "")
        self._moves = 0

    def _acl_moves(self) -> int:
        now = (state.acl_index(self._store), self._resolver.tokens.get("default") or "")
        if now != self._seen:
            self._seen = now
            self._moves += 1
        return self._moves

    def _authz(self) -> Authorizer:
        try:
            return self._resolver.resolve_here("").authz
        except ACLNotFound:
            return _DENY_ALL  # a default token that names no token grants nothing

    # ------------------------------------------------------------------ cache stamps
    @property
    def catalog_version(self) -> int:
        return self._store.catalog_version + self._acl_moves()

    @property
    def generation(self) -> int:
        return self._store.generation + self._acl_moves()

    # ------------------------------------------------------------------ filtered reads
    def health_service(self, name: str) -> tuple[int, list[Any]]:
        index, rows = self._store.health_service(name)
        a = self._authz()
        if a.allow_all:
            return index, rows
        if not a.service_read(name):
            return index, []
        return index, [row for row in rows if a.node_read(row[0].node)]

    def get_node(self, name: str) -> Node | None:
        node = self._store.get_node(name)
        return node if node is not None and self._authz().node_read(node.node) else None

    @property
    def nodes(self) -> dict[str, Node]:
        a = self._authz()
        return {k: n for k, n in self._store.nodes.items() if a.node_read(n.node)}

    @property
    def services(self) -> dict[tuple[str, str], Service]:
        a = self._authz()
        return {k: s for k, s in self._store.services.items() if a.service_read(s.service) and a.node_read(s.node)}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._store, attr)  # lock, catalog_index, service_index, node_index, extra ...
