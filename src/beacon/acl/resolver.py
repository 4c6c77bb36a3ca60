"""SecretID -> :class:`Identity` (the token's accessor and an :class:`Authorizer`), with Consul's caching.

Servers hold the replicated ACL tables and resolve locally; a resolved authorizer is kept until the
ACL tables change (their index is the stamp), so a cached token costs one dict lookup per request.
Client agents have no replica: they ask a server (``fetch``) and keep the answer for ``token_ttl``
(Consul's default 30 s). When no server answers, ``down_policy`` decides: ``extend-cache`` and
``async-cache`` keep using what was cached (deny when nothing was), ``allow`` allows, ``deny`` denies.
Servers of a datacenter other than ``primary_datacenter`` resolve from their own tables first (the
tokens made there) and ask the primary datacenter's servers (``primary``) for any other SecretID,
cached and falling back the same way: Consul's remote token resolution when tokens are not replicated.
An unknown or expired SecretID is "ACL not found" (403), as in Consul.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from beacon.acl import state
from beacon.acl.authorizer import Authorizer, management
from beacon.acl.rules import (
    DENY,
    READ,
    WRITE,
    RuleError,
    Rules,
    from_document,
    node_identity,
    parse,
    service_identity,
)
from beacon.server.fsm import StateStore

DOWN_POLICIES = ("allow", "deny", "extend-cache", "async-cache")


class ACLNotFound(Exception):
    """The SecretID names no live token."""


class ACLUnavailable(Exception):
    """No server could resolve the token (clients only)."""


@dataclass(frozen=True)
class ACLConfig:
    enabled: bool = False
    default_policy: str = "allow"
    down_policy: str = "extend-cache"
    token_ttl: float = 30.0
    enable_token_persistence: bool = False
    tokens: dict[str, str] = field(default_factory=dict)  # initial_management, agent, agent_recovery, default, dns


@dataclass
class Identity:
    accessor: str
    authz: Authorizer
    description: str = ""
    expires: float | None = None  # the token's ExpirationTime (servers' local resolution), if any


def initial_accessor(secret: str) -> str:
    """The initial management token's AccessorID: derived from the secret, so every server that
    proposes it writes the same row."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "beacon-initial-management:" + secret))


def initial_management_token(secret: str, created: str) -> dict[str, Any]:
    return {"AccessorID": initial_accessor(secret), "SecretID": secret, "Description": "Initial Management Token",
            "Policies": [{"ID": state.MANAGEMENT_POLICY_ID, "Name": "global-management"}], "Local": False,
            "CreateTime": created}


def parse_time(value: str) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def token_rules(store: StateStore, token: dict[str, Any]) -> tuple[bool, Rules]:
    """(is management, merged rules) of a stored token: its policies, its roles' policies, identities."""
    pols = state.policies(store)
    rls = state.roles(store)
    policy_ids = [link["ID"] for link in token.get("Policies") or []]
    svc_ids = list(token.get("ServiceIdentities") or [])
    node_ids = list(token.get("NodeIdentities") or [])
    for link in token.get("Roles") or []:
        role = rls.get(link["ID"])
        if role is None:
            continue
        policy_ids += [p["ID"] for p in role.get("Policies") or []]
        svc_ids += role.get("ServiceIdentities") or []
        node_ids += role.get("NodeIdentities") or []
    if state.MANAGEMENT_POLICY_ID in policy_ids:
        return True, Rules()
    merged = Rules()
    for pid in policy_ids:
        pol = pols.get(pid)
        if pol is None:
            continue
        try:
            merged.merge(parse(pol["Rules"]))
        except RuleError:
            continue  # validated at write; a policy that no longer parses grants nothing
    for ident in svc_ids:
        merged.merge(service_identity(ident["ServiceName"]))
    for ident in node_ids:
        merged.merge(node_identity(ident["NodeName"]))
    return False, merged


def rules_document(rules: Rules) -> dict[str, Any]:
    """Rules -> the JSON rule document that :func:`from_document` reads back (server -> client)."""
    doc: dict[str, Any] = dict(rules.scalar)
    for kind, suffix in ((rules.exact, ""), (rules.prefix, "_prefix")):
        for resource, table in kind.items():
            if resource == "intention" or not table:
                continue  # carried by the service rules below
            if resource == "service":
                intentions = kind["intention"]
                doc[resource + suffix] = {name: {"policy": pol, "intentions": intentions.get(name, DENY)}
                                          for name, pol in table.items()}
            else:
                doc[resource + suffix] = {name: {"policy": pol} for name, pol in table.items()}
    return doc


class Resolver:
    def __init__(self, config: ACLConfig, node_name: str, store: StateStore | None = None,
                 fetch: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
                 clock: Callable[[], float] = time.time,
                 primary: Callable[[str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.config = config
        self.node_name = node_name
        self.store = store
        self.fetch = fetch
        self.primary = primary  # servers outside the primary datacenter: how to ask its servers
        self._ask = fetch or primary
        self.clock = clock
        self.default_allow = config.default_policy == "allow"
        self.tokens = dict(config.tokens)  # /v1/agent/token/:type updates these at runtime
        # servers: secret -> (acl index, identity, expires at or None)
        self._local: dict[str, tuple[int, Identity, float | None]] = {}
        # clients, and servers for the primary's tokens: secret -> (fetched at, identity)
        self._remote: dict[str, tuple[float, Identity]] = {}
        self._refreshing: set[str] = set()
        self._specials: dict[tuple[str, str], Identity] = {}

    def recovery_identity(self) -> Identity:
        rules = Rules()
        rules.add("agent", self.node_name, WRITE, False)
        rules.add("node", "", READ, True)
        return Identity("agent-recovery", Authorizer(rules, False), "Agent Recovery Token")

    @property
    def waits(self) -> bool:
        """Resolving may ask another agent (clients; servers outside the primary datacenter)."""
        return self._ask is not None

    async def resolve(self, secret: str) -> Identity:
        if self._ask is None:
            return self.resolve_here(secret)
        secret = secret or self.tokens.get("default") or state.ANONYMOUS_SECRET
        # a client holds no tables (only its own special tokens); a server outside the primary
        # datacenter resolves its datacenter's tokens itself and asks the primary for the others
        ident = self._held(secret, True) if self.primary is not None else self._special(secret)
        if ident is not None:
            return ident
        return await self._resolve_remote(secret)

    def resolve_here(self, secret: str) -> Identity:
        """Servers: resolve without waiting ("" means the default token, else anonymous). Outside
        the primary datacenter, a token of the primary resolves here while its cached answer is
        fresh (the waiting path, :meth:`resolve`, fetches and refreshes it)."""
        secret = secret or self.tokens.get("default") or state.ANONYMOUS_SECRET
        ident = self._held(secret, True)
        if ident is not None:
            return ident
        hit = self._remote.get(secret) if self.primary is not None else None
        if hit is not None and time.monotonic() - hit[0] < self.config.token_ttl:
            return hit[1]
        raise ACLNotFound()

    def _held(self, secret: str, specials: bool) -> Identity | None:
        """This agent's own special tokens (when ``specials``) and this datacenter's tables."""
        special = self._special(secret) if specials else None
        if special is not None:
            return special
        try:
            return self.resolve_local(secret)
        except ACLNotFound:
            return None

    def resolve_nowait(self, secret: str, specials: bool = True) -> Identity:
        """Like :meth:`resolve_here`, for readers that cannot wait at all (DNS): outside the primary
        datacenter a token of the primary is fetched in the background when its answer is missing
        or older than ``token_ttl``; until the first answer it is not found, after that the last
        answer stands while the next is fetched. :meth:`remote_stamp` moves with each answer.
        ``specials=False``: a SecretID sent by another agent, which this agent's own tokens (initial
        management, agent recovery) do not stand for."""
        secret = secret or self.tokens.get("default") or state.ANONYMOUS_SECRET
        ident = self._held(secret, specials)
        if ident is not None:
            return ident
        if self.primary is None:
            raise ACLNotFound()
        hit = self._remote.get(secret)
        if (hit is None or time.monotonic() - hit[0] >= self.config.token_ttl) and secret not in self._refreshing:
            try:
                task = asyncio.get_running_loop().create_task(self._refresh(secret))
            except RuntimeError:
                pass  # no loop (a synchronous caller): nothing to fetch with
            else:
                self._refreshing.add(secret)
                task.add_done_callback(lambda _t, s=secret: self._refreshing.discard(s))
        if hit is None:
            raise ACLNotFound()
        return hit[1]

    def remote_stamp(self, secret: str) -> float:
        """When the primary's answer for ``secret`` was fetched (0.0: none is cached)."""
        hit = self._remote.get(secret) if self._remote else None
        return hit[0] if hit is not None else 0.0

    def _special(self, secret: str) -> Identity | None:
        if not secret:
            secret = self.tokens.get("default") or state.ANONYMOUS_SECRET
        if secret == self.tokens.get("initial_management"):
            kind = "initial_management"
        elif secret == self.tokens.get("agent_recovery"):
            kind = "agent_recovery"
        else:
            return None
        # Built once: a uuid5 and an authorizer per request would cost more than the request.
        hit = self._specials.get((kind, secret))
        if hit is None:
            hit = (Identity(initial_accessor(secret), management(), "Initial Management Token")
                   if kind == "initial_management" else self.recovery_identity())
            if len(self._specials) > 8:
                self._specials.clear()  # tokens set at runtime: keep only a few
            self._specials[(kind, secret)] = hit
        return hit

    def resolve_local(self, secret: str) -> Identity:
        assert self.store is not None
        stamp = state.acl_index(self.store)
        hit = self._local.get(secret)
        if hit is not None and hit[0] == stamp and (hit[2] is None or hit[2] > self.clock()):
            return hit[1]
        token = state.token_by_secret(self.store, secret)
        if token is None or self._is_expired(token):
            self._local.pop(secret, None)
            raise ACLNotFound()
        is_mgmt, rules = token_rules(self.store, token)
        expires = parse_time(token.get("ExpirationTime") or "")
        ident = Identity(token["AccessorID"], management() if is_mgmt else Authorizer(rules, self.default_allow),
                         token.get("Description", ""), expires)
        if len(self._local) > 4096:
            self._local.clear()  # bounded: a flood of distinct secrets must not grow memory
        # Expiry is a matter of time, not of the index: the cache entry carries it.
        self._local[secret] = (stamp, ident, expires)
        return ident

    def _is_expired(self, token: dict[str, Any]) -> bool:
        expires = parse_time(token.get("ExpirationTime") or "")
        return expires is not None and expires <= self.clock()

    async def _resolve_remote(self, secret: str) -> Identity:
        now = time.monotonic()
        hit = self._remote.get(secret)
        if hit is not None and now - hit[0] < self.config.token_ttl:
            return hit[1]
        if hit is not None and self.config.down_policy == "async-cache":
            # Consul's async-cache: answer from the stale entry at once, refresh in the background.
            if secret not in self._refreshing:
                self._refreshing.add(secret)
                task = asyncio.get_running_loop().create_task(self._refresh(secret))
                task.add_done_callback(lambda _t, s=secret: self._refreshing.discard(s))
            return hit[1]
        return await self._fetch_remote(secret, hit)

    async def _refresh(self, secret: str) -> None:
        try:
            await self._fetch_remote(secret, self._remote.get(secret))
        except (ACLNotFound, ACLUnavailable):
            pass  # _fetch_remote already dropped a deleted token; an unreachable server keeps the entry

    async def _fetch_remote(self, secret: str, hit: tuple[float, Identity] | None) -> Identity:
        assert self._ask is not None
        now = time.monotonic()
        try:
            doc = await self._ask(secret)
        except ACLNotFound:
            self._remote.pop(secret, None)
            raise
        except Exception as exc:
            down = self.config.down_policy
            if down == "allow":
                return Identity("", Authorizer(None, True))
            if down in ("extend-cache", "async-cache") and hit is not None:
                return hit[1]
            raise ACLUnavailable(str(exc)) from None
        ident = Identity(doc.get("AccessorID", ""),
                         management() if doc.get("Management") else
                         Authorizer(from_document(doc.get("Rules") or {}), self.default_allow),
                         doc.get("Description", ""))
        if len(self._remote) > 4096:
            self._remote.clear()
        self._remote[secret] = (now, ident)
        return ident

    async def describe_anywhere(self, secret: str) -> dict[str, Any]:
        """:meth:`describe`, and outside the primary datacenter the primary's answer for a token
        this datacenter does not hold (a client agent here caches it for its own ``token_ttl``)."""
        try:
            return self.describe(secret)
        except ACLNotFound:
            if self.primary is None:
                raise
        try:
            return await self.primary(secret or self.tokens.get("default") or state.ANONYMOUS_SECRET)
        except ACLNotFound:
            raise
        except Exception as exc:
            raise ACLUnavailable(str(exc)) from None

    def describe(self, secret: str) -> dict[str, Any]:
        """Server side of a client's fetch: what the client needs to build the same authorizer."""
        assert self.store is not None
        if not secret:
            secret = self.tokens.get("default") or state.ANONYMOUS_SECRET
        if secret == self.tokens.get("initial_management"):
            return {"AccessorID": initial_accessor(secret), "Management": True}
        token = state.token_by_secret(self.store, secret)
        if token is None or self._is_expired(token):
            raise ACLNotFound()
        is_mgmt, rules = token_rules(self.store, token)
        return {"AccessorID": token["AccessorID"], "Description": token.get("Description", ""),
                "Management": is_mgmt, "Rules": rules_document(rules)}
