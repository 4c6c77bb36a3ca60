"""The ACL layer's decisions for the fast HTTP paths (:mod:`beacon.agent.http.fastpath`,
:mod:`beacon.agent.http.fastwrite`): the rules of :data:`beacon.agent.http.acl_enforce.TABLE` for
the routes they serve, taken from a token resolved as the ACL layer resolves it. Every answer is
"the ACL layer lets the reply through untouched" or not; a "not" sends the request to aiohttp's
path, which answers the denial (or filters the reply) itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beacon.acl.resolver import ACLNotFound, Resolver
from beacon.acl.rules import READ
from beacon.agent.http.core import Encoded
from beacon.agent.http.fastparse import HEALTH, KV

if TYPE_CHECKING:
    from beacon.agent.http.fastparse import Request


class FastACL:
    """One agent's resolver (servers: resolving never waits), plus the per-view readability cache."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._readable: dict[tuple[int, int], tuple[Any, Encoded, bool]] = {}

    def allowed(self, req: Request, secret: str) -> bool:
        """Whether the ACL layer may let the handler's reply through untouched for this token (the
        rules of acl_enforce.TABLE for these routes). For a list whose items the layer filters, the
        token's authorizer goes on ``req.authz`` and :meth:`readable` decides once the view is read."""
        try:
            ident = self.resolver.resolve_here(secret)
        except ACLNotFound:
            return False  # aiohttp's path answers "ACL not found"
        authz = ident.authz
        if authz.allow_all:
            return True
        if req.kind == KV:
            return bool(authz.key_read(req.arg))  # kv_get's gate
        if req.kind == HEALTH and not authz.allowed("service", req.arg, READ):
            return False  # _named_then: an emptied, filtered reply
        req.authz = authz
        return True

    def known(self, secret: str) -> bool:
        """The token resolves (routes that need no permission still refuse an unknown token)."""
        try:
            self.resolver.resolve_here(secret)
        except ACLNotFound:
            return False
        return True

    def may_write(self, secret: str, key: str) -> bool:
        """acl_enforce's ``gate(kv_write)`` for a PUT, or a DELETE without ``?recurse``: key:write."""
        try:
            authz = self.resolver.resolve_here(secret).authz
        except ACLNotFound:
            return False  # aiohttp's path answers "ACL not found"
        return authz.allow_all or bool(authz.key_write(key))

    def readable(self, req: Request, body: Encoded | None) -> bool:
        """Whether the ACL layer's filter keeps every item of this view for ``req.authz`` (so it
        sends the reply unchanged): health entries by node:read, the service list by service:read.
        Decided once per authorizer and view version."""
        authz = req.authz
        if body is None:
            return True
        key = (id(authz), id(body))
        hit = self._readable.get(key)
        if hit is not None and hit[0] is authz and hit[1] is body:
            return hit[2]
        if req.kind == HEALTH:
            ok = all(authz.node_read(_node_name(e)) for e in body.value)
        else:
            ok = all(authz.service_read(name) for name in body.value)
        if len(self._readable) >= 1024:
            self._readable.clear()  # bounded: tokens times view versions
        self._readable[key] = (authz, body, ok)  # holding both: their ids cannot be reused meanwhile
        return ok


def _node_name(entry: Any) -> str:
    """acl_enforce's ``_get(entry, "Node", "Node")``."""
    node = entry.get("Node") if isinstance(entry, dict) else None
    name = node.get("Node") if isinstance(node, dict) else None
    return name if isinstance(name, str) else ""
