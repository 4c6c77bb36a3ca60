"""Replicated ACL state: tokens, policies, roles and the bootstrap marker, in ``store.extra``.

Rows keep Consul's JSON shapes (``AccessorID``, ``SecretID``, ``Policies: [{ID, Name}]`` ...).
Commands, all ``(MessageType.ACL, {"op": ..., ...})``; the proposer fills IDs and times and has
validated links (policy/role names resolved to IDs):

* ``bootstrap`` ``{"token": {...}}``: once; later attempts fail with Consul's reset-index message.
* ``token_set`` / ``token_delete`` ``{"token": {...}}`` / ``{"id": accessor}``.
* ``policy_set`` / ``policy_delete``, ``role_set`` / ``role_delete`` likewise.
* auth methods and binding rules: :mod:`beacon.acl.auth_state`.

The built-in ``global-management`` policy and the anonymous token exist without being written; a
write to the anonymous token (to give it policies) stores it like any other.
"""

from __future__ import annotations

import copy
from typing import Any

from beacon.errors import Invalid, PermissionDenied
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

TOKENS, POLICIES, ROLES, META = "acl_tokens", "acl_policies", "acl_roles", "acl_meta"
WATCH_KEY = "acl"

MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"
MANAGEMENT_RULES = """acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
session_prefix "" { policy = "write" }
"""


def builtin_policy() -> dict[str, Any]:
    return {"ID": MANAGEMENT_POLICY_ID, "Name": "global-management",
            "Description": "Builtin Policy that grants unlimited access", "Rules": MANAGEMENT_RULES,
            "Datacenters": None, "Hash": "", "CreateIndex": 0, "ModifyIndex": 0}


def anonymous_token() -> dict[str, Any]:
    return {"AccessorID": ANONYMOUS_ACCESSOR, "SecretID": ANONYMOUS_SECRET, "Description": "Anonymous Token",
            "Policies": None, "Roles": None, "ServiceIdentities": None, "NodeIdentities": None,
            "Local": False, "CreateTime": "1970-01-01T00:00:00Z", "Hash": "", "CreateIndex": 0, "ModifyIndex": 0}


def table(store: StateStore, name: str) -> dict[str, dict[str, Any]]:
    return store.extra.setdefault(name, {})


def acl_index(store: StateStore) -> int:
    return store.tables.get(WATCH_KEY, 0)


# ---------------------------------------------------------------------- reads (caller holds no lock)
def policies(store: StateStore) -> dict[str, dict[str, Any]]:
    with store.lock:
        out = {MANAGEMENT_POLICY_ID: builtin_policy()}
        out.update(copy.deepcopy(table(store, POLICIES)))
        return out


def tokens(store: StateStore) -> dict[str, dict[str, Any]]:
    with store.lock:
        out = {ANONYMOUS_ACCESSOR: anonymous_token()}
        out.update(copy.deepcopy(table(store, TOKENS)))
        return out


def roles(store: StateStore) -> dict[str, dict[str, Any]]:
    with store.lock:
        return copy.deepcopy(table(store, ROLES))


def token_by_secret(store: StateStore, secret: str) -> dict[str, Any] | None:
    with store.lock:
        for tok in table(store, TOKENS).values():
            if tok["SecretID"] == secret:
                return copy.deepcopy(tok)
    return anonymous_token() if secret == ANONYMOUS_SECRET else None


def policy_by_name(store: StateStore, name: str) -> dict[str, Any] | None:
    return next((p for p in policies(store).values() if p["Name"] == name), None)


def role_by_name(store: StateStore, name: str) -> dict[str, Any] | None:
    return next((r for r in roles(store).values() if r["Name"] == name), None)


def bootstrapped(store: StateStore) -> int | None:
    with store.lock:
        return table(store, META).get("bootstrap")


# ---------------------------------------------------------------------- commands
class ACLCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {
            cmd.ACLBootstrap: lambda idx, c: self.bootstrap(idx, dict(c.token)),
            cmd.ACLInitialManagement: lambda idx, c: self.initial_management(idx, dict(c.token)),
            cmd.ACLTokenSet: lambda idx, c: self.token_set(idx, dict(c.token)),
            cmd.ACLPolicySet: lambda idx, c: self.policy_set(idx, dict(c.policy)),
            cmd.ACLRoleSet: lambda idx, c: self.role_set(idx, dict(c.role)),
            cmd.ACLTokenDelete: lambda idx, c: self.delete(idx, "token", c.id),
            cmd.ACLPolicyDelete: lambda idx, c: self.delete(idx, "policy", c.id),
            cmd.ACLRoleDelete: lambda idx, c: self.delete(idx, "role", c.id),
        }

    def _bump(self, idx: int) -> None:
        self.store.bump_table(WATCH_KEY, idx)
        self.store.touch(WATCH_KEY)

    def bootstrap(self, idx: int, token: dict[str, Any]) -> dict[str, Any]:
        meta = table(self.store, META)
        if "bootstrap" in meta:
            raise PermissionDenied(f"Permission denied: ACL bootstrap no longer allowed (reset index: {meta['bootstrap']})")
        meta["bootstrap"] = idx
        return self.token_set(idx, token)

    def initial_management(self, idx: int, token: dict[str, Any]) -> bool:
        """The configured initial_management token, written once by the leader; it ends bootstrap."""
        if token["AccessorID"] in table(self.store, TOKENS):
            return False
        table(self.store, META).setdefault("bootstrap", idx)
        self.token_set(idx, token)
        return True

    def token_set(self, idx: int, token: dict[str, Any]) -> dict[str, Any]:
        from beacon.acl.auth_state import login_token_allowed

        login_token_allowed(self.store, token)
        rows = table(self.store, TOKENS)
        accessor = token["AccessorID"]
        for other in rows.values():
            if other["AccessorID"] != accessor and other["SecretID"] == token["SecretID"]:
                raise Invalid("Invalid Token: SecretID is already in use")
        old = rows.get(accessor)
        if old is not None and old["SecretID"] != token["SecretID"]:
            raise Invalid("Cannot change a token's SecretID")
        token["CreateIndex"] = old["CreateIndex"] if old else idx
        token["ModifyIndex"] = idx
        rows[accessor] = token
        self._bump(idx)
        return copy.deepcopy(token)

    def policy_set(self, idx: int, policy: dict[str, Any]) -> dict[str, Any]:
        if policy["ID"] == MANAGEMENT_POLICY_ID:
            raise Invalid("Changing the builtin global-management policy is not permitted")
        rows = table(self.store, POLICIES)
        for other in [builtin_policy(), *rows.values()]:
            if other["ID"] != policy["ID"] and other["Name"] == policy["Name"]:
                raise Invalid(f"Invalid Policy: A Policy with Name \"{policy['Name']}\" already exists")
        old = rows.get(policy["ID"])
        policy["CreateIndex"] = old["CreateIndex"] if old else idx
        policy["ModifyIndex"] = idx
        rows[policy["ID"]] = policy
        self._bump(idx)
        return copy.deepcopy(policy)

    def role_set(self, idx: int, role: dict[str, Any]) -> dict[str, Any]:
        rows = table(self.store, ROLES)
        for other in rows.values():
            if other["ID"] != role["ID"] and other["Name"] == role["Name"]:
                raise Invalid(f"Invalid Role: A Role with Name \"{role['Name']}\" already exists")
        old = rows.get(role["ID"])
        role["CreateIndex"] = old["CreateIndex"] if old else idx
        role["ModifyIndex"] = idx
        rows[role["ID"]] = role
        self._bump(idx)
        return copy.deepcopy(role)

    def delete(self, idx: int, kind: str, ident: str) -> bool:
        if kind == "token" and ident == ANONYMOUS_ACCESSOR:
            raise Invalid("Delete operation not permitted on the anonymous token")
        if kind == "policy" and ident == MANAGEMENT_POLICY_ID:
            raise Invalid("Delete operation not permitted on the builtin global-management policy")
        rows = table(self.store, {"token": TOKENS, "policy": POLICIES, "role": ROLES}[kind])
        if rows.pop(ident, None) is not None:
            self._bump(idx)
        return True


def install(store: StateStore) -> None:
    from beacon.acl import auth_state

    store.register_handlers(ACLCommands(store).handlers())
    auth_state.install(store)
