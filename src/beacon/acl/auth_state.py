"""Replicated auth methods and binding rules, in ``store.extra`` beside the other ACL tables.

Rows keep Consul's JSON shapes: an auth method ``{Name, Type, DisplayName, Description, MaxTokenTTL,
TokenLocality, Config, CreateIndex, ModifyIndex}`` keyed by Name, a binding rule ``{ID, Description,
AuthMethod, Selector, BindType, BindName, BindVars, CreateIndex, ModifyIndex}`` keyed by ID. Tokens
made by a login carry ``AuthMethod``. Commands (``(MessageType.ACL, {"op": ...})``), validated by
the proposer; apply re-checks only what another write could have changed meanwhile:

* ``auth_method_set`` ``{"method": {...}}``; ``auth_method_delete`` ``{"name": ...}`` also deletes the
  method's binding rules and every token it issued (as Consul does).
* ``binding_rule_set`` ``{"rule": {...}}`` (its method must exist); ``binding_rule_delete`` ``{"id": ...}``.
* ``token_reap`` ``{"ids": [...], "now": t}``: the leader's reaping of expired tokens (:mod:`beacon.acl.reaper`).

Both tables bump the ``acl`` watch key and index, as tokens do, so a token cache keyed on the ACL
index drops a deleted method's tokens at once. Snapshots carry ``store.extra`` whole.
"""

from __future__ import annotations

import copy
from typing import Any

from beacon.acl.state import TOKENS, WATCH_KEY, table
from beacon.errors import Invalid
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

METHODS, RULES = "acl_auth_methods", "acl_binding_rules"


def methods(store: StateStore) -> dict[str, dict[str, Any]]:
    with store.lock:
        return copy.deepcopy(table(store, METHODS))


def method(store: StateStore, name: str) -> dict[str, Any] | None:
    with store.lock:
        row = table(store, METHODS).get(name)
        return copy.deepcopy(row) if row is not None else None


def rules(store: StateStore, auth_method: str | None = None) -> list[dict[str, Any]]:
    """Binding rules (of one method when named), oldest first: the order login applies them in."""
    with store.lock:
        rows = [r for r in table(store, RULES).values() if auth_method is None or r["AuthMethod"] == auth_method]
        return copy.deepcopy(sorted(rows, key=lambda r: (r["CreateIndex"], r["ID"])))


def rule(store: StateStore, rid: str) -> dict[str, Any] | None:
    with store.lock:
        row = table(store, RULES).get(rid)
        return copy.deepcopy(row) if row is not None else None


class AuthCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {
            cmd.ACLAuthMethodSet: lambda idx, c: self.method_set(idx, dict(c.method)),
            cmd.ACLAuthMethodDelete: lambda idx, c: self.method_delete(idx, c.name),
            cmd.ACLBindingRuleSet: lambda idx, c: self.rule_set(idx, dict(c.rule)),
            cmd.ACLBindingRuleDelete: lambda idx, c: self.rule_delete(idx, c.id),
            cmd.ACLTokenReap: lambda idx, c: self.token_reap(idx, list(c.ids), c.now),
        }

    def _bump(self, idx: int) -> None:
        self.store.bump_table(WATCH_KEY, idx)
        self.store.touch(WATCH_KEY)

    def method_set(self, idx: int, row: dict[str, Any]) -> dict[str, Any]:
        rows = table(self.store, METHODS)
        old = rows.get(row["Name"])
        if old is not None and old["Type"] != row["Type"]:
            raise Invalid("Invalid Auth Method: the Type of an existing auth method cannot change")
        row["CreateIndex"] = old["CreateIndex"] if old else idx
        row["ModifyIndex"] = idx
        rows[row["Name"]] = row
        self._bump(idx)
        return copy.deepcopy(row)

    def method_delete(self, idx: int, name: str) -> bool:
        if table(self.store, METHODS).pop(name, None) is None:
            return True
        rules_ = table(self.store, RULES)
        for rid in [rid for rid, r in rules_.items() if r["AuthMethod"] == name]:
            del rules_[rid]
        tokens = table(self.store, TOKENS)
        for accessor in [a for a, t in tokens.items() if t.get("AuthMethod") == name]:
            del tokens[accessor]
        self._bump(idx)
        return True

    def rule_set(self, idx: int, row: dict[str, Any]) -> dict[str, Any]:
        if row["AuthMethod"] not in table(self.store, METHODS):
            raise Invalid(f"Invalid Binding Rule: unknown AuthMethod \"{row['AuthMethod']}\"")
        rows = table(self.store, RULES)
        old = rows.get(row["ID"])
        if old is not None and old["AuthMethod"] != row["AuthMethod"]:
            raise Invalid("Invalid Binding Rule: the AuthMethod of a binding rule cannot change")
        row["CreateIndex"] = old["CreateIndex"] if old else idx
        row["ModifyIndex"] = idx
        rows[row["ID"]] = row
        self._bump(idx)
        return copy.deepcopy(row)

    def rule_delete(self, idx: int, rid: str) -> bool:
        if table(self.store, RULES).pop(rid, None) is not None:
            self._bump(idx)
        return True

    def token_reap(self, idx: int, ids: list[str], now: float) -> int:
        """Delete the listed tokens that expired by ``now`` (the proposer's clock); a token renewed or
        replaced since it was listed stays."""
        from beacon.acl.resolver import parse_time

        tokens = table(self.store, TOKENS)
        gone = 0
        for accessor in ids:
            tok = tokens.get(accessor)
            at = parse_time(tok.get("ExpirationTime") or "") if tok is not None else None
            if at is not None and at <= now:
                del tokens[accessor]
                gone += 1
        if gone:
            self._bump(idx)
        return gone


def login_token_allowed(store: StateStore, token: dict[str, Any]) -> None:
    """A token naming an auth method is written only while that method exists (a login racing the
    method's delete must not leave a token behind that the delete was meant to remove)."""
    name = token.get("AuthMethod")
    if name and name not in table(store, METHODS):
        raise Invalid(f"auth method \"{name}\" not found")


def install(store: StateStore) -> None:
    store.register_handlers(AuthCommands(store).handlers())
