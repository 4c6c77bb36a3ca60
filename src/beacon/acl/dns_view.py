"""The catalog as the DNS server may see it under ACLs: only what one token may read, as Consul's
DNS does. For the agent's own listener that token is its ``dns`` token, else its ``default`` token,
else anonymous (read at every query, so ``PUT /v1/agent/token/dns`` or ``/default`` applies at
once); for a client agent's query relayed over the server RPC it is the token the client sent
(:mod:`beacon.agent.dnsrpc`), resolved against this server's replica: one that names no live token
grants nothing. Outside the primary datacenter, a token the replica does not hold is the primary's
answer for it, fetched in the background (it grants nothing until that answer arrives).

:class:`ACLStore` stands in for the store the DNS server reads (``beacon.dns.catalog.Store``): service
lookups answer nothing for a service the token may not read and drop instances on nodes it may not
read; node lookups and reverse lookups see only readable nodes. Its ``catalog_version`` and
``generation`` also move whenever the ACL tables or the token in use change, the token's
ExpirationTime passes, or a new answer for it arrives from the primary datacenter, so the DNS
answer cache (stamped with the one, re-validated against the other) never serves an answer built
under other rights. A cache belongs to one view: views of
different tokens never share one.
"""

from __future__ import annotations

from typing import Any

from beacon.acl import state
from beacon.acl.authorizer import Authorizer
from beacon.acl.resolver import ACLNotFound, Resolver
from beacon.model import Node, Service
from beacon.server.fsm import StateStore

_DENY_ALL = Authorizer(None, False)


def agent_dns_token(tokens: dict[str, str]) -> str:
    """The SecretID an agent's DNS answers with: ``acl.tokens.dns``, else ``default``, else anonymous."""
    return tokens.get("dns") or tokens.get("default") or state.ANONYMOUS_SECRET


class ACLStore:
    """``token`` None: the agent's own DNS token (its specials, such as an initial management token
    set as the default, count); a SecretID: that token as the replica knows it (a client's)."""

    def __init__(self, store: StateStore, resolver: Resolver, token: str | None = None) -> None:
        self._store = store
        self._resolver = resolver
        self._token = token
        self._seen: tuple[int, str, bool, float] = (-1, "", False, 0.0)
        self._moves = 0
        self._expires: float | None = None  # of the token last resolved

    def _acl_moves(self) -> int:
        expired = self._expires is not None and self._resolver.clock() >= self._expires
        token = self._token if self._token is not None else agent_dns_token(self._resolver.tokens)
        # the last answer of the primary datacenter for a token of its own (secondary datacenters)
        fetched = self._resolver.remote_stamp(token or state.ANONYMOUS_SECRET)
        now = (state.acl_index(self._store), token, expired, fetched)
        if now != self._seen:
            self._seen = now
            self._moves += 1
        return self._moves

    def _authz(self) -> Authorizer:
        try:
            if self._token is None:
                ident = self._resolver.resolve_nowait(agent_dns_token(self._resolver.tokens))
            else:
                ident = self._resolver.resolve_nowait(self._token or state.ANONYMOUS_SECRET, specials=False)
        except ACLNotFound:
            return _DENY_ALL  # a token that names no live token (or an expired one) grants nothing
        self._expires = ident.expires
        return ident.authz

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
