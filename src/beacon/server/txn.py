"""Transactions (``/v1/txn``): a list of KV, node, service and check operations applied all or nothing.

The command is ``(MessageType.TXN, {"ops": [...], "now": t})``. Each op is a dict already decoded by
the HTTP layer: ``{"type": "kv", "verb", "key", "value", "flags", "index", "session"}``,
``{"type": "node", "verb", "node": Node dict}``, ``{"type": "service", "verb", "node", "service":
Service dict}`` or ``{"type": "check", "verb", "check": HealthCheck dict}``.

Every op runs in order against the live store (later ops see earlier ones' writes) and every failing
op is reported, as Consul does. If any failed, the store is put back exactly as it was before the
first op and the pending watch notifications are dropped, so a rolled-back transaction leaves no
write and wakes nobody. The undo is a journal of the KV keys the ops touched (cheap: proportional to
the ops) when the transaction has only KV ops; a journal of the touched nodes' checks and indexes
when it has only check ops on nodes without sessions (health updates in bulk); else a copy of every
table (catalog ops can cascade into sessions and KV through check and node changes). All are
deterministic.

Result: ``TxnOutcome(results, errors)``; ``results`` holds ``(type, object)`` pairs where the object is
a model record (KV entries of non-read verbs have their value blanked, as Consul answers).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beacon.errors import BeaconError, TooLarge
from beacon.model import HealthCheck, KVEntry, Node, Service
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

MAX_OPS = 64
KV_READ_VERBS = frozenset({"get", "get-or-empty", "get-tree", "check-index", "check-session",
                           "check-not-exists"})
KV_VERBS = KV_READ_VERBS | {"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"}
CATALOG_VERBS = frozenset({"set", "cas", "get", "delete", "delete-cas"})
_MISSING = object()


class OpError(Exception):
    """One op failed; the transaction will roll back."""


@dataclass(slots=True)
class TxnOutcome:
    results: list[tuple[str, Any]] | None
    errors: list[tuple[int, str]] | None


def is_read_only(ops: list[dict[str, Any]]) -> bool:
    for op in ops:
        if op["type"] == "kv":
            if op["verb"] not in KV_READ_VERBS:
                return False
        elif op["verb"] != "get":
            return False
    return True


class _KVJournal:
    """Undo log for KV-only transactions: the prior state of every key an op may touch."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.saved: dict[str, tuple[Any, Any, Any]] = {}
        self.tables = dict(store.tables)

    def save(self, key: str) -> None:
        if key in self.saved:
            return
        s = self.store
        self.saved[key] = (s.kv.get(key, _MISSING), s.tombstones.get(key, _MISSING),
                           s.lock_delays.get(key, _MISSING))

    def rollback(self) -> None:
        s = self.store
        for key, (entry, tomb, delay) in self.saved.items():
            current = s.kv.get(key)
            s.reindex_lock(key, current.session if current is not None else "",
                            entry.session if entry is not _MISSING else "")
            pos = bisect.bisect_left(s.kv_keys, key)
            present = pos < len(s.kv_keys) and s.kv_keys[pos] == key
            if entry is _MISSING:
                s.kv.pop(key, None)
                if present:
                    del s.kv_keys[pos]
            else:
                s.kv[key] = entry
                if not present:
                    s.kv_keys.insert(pos, key)
            for table, old in ((s.tombstones, tomb), (s.lock_delays, delay)):
                if old is _MISSING:
                    table.pop(key, None)
                else:
                    table[key] = old
        s.tables = self.tables


class _FullCheckpoint:
    """Undo for transactions with catalog ops: a copy of every table (rows that apply mutates in place
    are copied too)."""

    SHALLOW = ("tables", "nodes", "services", "service_index", "node_index", "kv", "tombstones",
               "sessions", "lock_delays", "session_expires")

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.saved: dict[str, Any] = {name: dict(getattr(store, name)) for name in self.SHALLOW}
        self.saved["kv_keys"] = list(store.kv_keys)
        self.saved["checks"] = {k: copy.copy(v) for k, v in store.checks.items()}
        for name in ("services_by_node", "services_by_name", "checks_by_node", "session_keys"):
            self.saved[name] = {k: set(v) for k, v in getattr(store, name).items()}

    def save(self, key: str) -> None:
        pass

    def rollback(self) -> None:
        for name, value in self.saved.items():
            setattr(self.store, name, value)


class _CheckJournal:
    """Undo for transactions whose ops are all check ops on nodes that hold no session: what a check
    write or delete can change on those nodes only (the named checks, the nodes' check sets, the
    node and service index maps, the table indexes). Proportional to the ops, where the full copy is
    proportional to the catalog (seconds per transaction at 172,000 instances)."""

    def __init__(self, store: StateStore, ops: list[dict[str, Any]]) -> None:
        self.store = store
        self.tables = dict(store.tables)
        # The per-node and per-service indexes it sets, as it sets them (StateStore.index_journal):
        # copying the two 10,000-entry maps cost ~1 ms per transaction on a busy server, and walking
        # every service on the touched nodes 2-4 ms.
        store.index_journal = self.indexes = []
        # A check op writes or deletes exactly the check it names (its ID, else its name), and adds
        # or removes only that ID in its node's check set: saving the named checks undoes both.
        self.checks: dict[tuple[str, str], Any] = {}
        for op in ops:
            chk = op["check"]
            key = (str(chk.get("node") or "").lower(), str(chk.get("check_id") or chk.get("name") or ""))
            if key not in self.checks:
                self.checks[key] = store.checks.get(key, _MISSING)  # replaced on write, never mutated

    @staticmethod
    def applies(store: StateStore, ops: list[dict[str, Any]]) -> set[str] | None:
        """The (lower-cased) nodes the ops touch, when this journal can undo them; else None."""
        if not all(op["type"] == "check" for op in ops):
            return None
        nodes = {str(op["check"].get("node") or "").lower() for op in ops}
        if any(sess.node.lower() in nodes for sess in store.sessions.values()):
            return None  # a check going critical can invalidate sessions, and with them KV locks
        return nodes

    def save(self, key: str) -> None:
        pass

    def rollback(self) -> None:
        s = self.store
        for key, old in self.checks.items():
            node, cid = key
            if old is _MISSING:
                s.checks.pop(key, None)
                ids = s.checks_by_node.get(node)
                if ids is not None:
                    ids.discard(cid)
                    if not ids:
                        del s.checks_by_node[node]
            else:
                s.checks[key] = old
                s.checks_by_node.setdefault(node, set()).add(cid)
        for table, key, value in reversed(self.indexes):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        s.tables = self.tables


def _blank(entry: KVEntry) -> KVEntry:
    return dataclasses.replace(entry, value=None)


class TxnCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def apply(self, idx: int, c: cmd.Txn) -> TxnOutcome:
        ops = c.ops
        if len(ops) > MAX_OPS:
            raise TooLarge(f"Transaction contains too many operations ({len(ops)} > {MAX_OPS})")
        store = self.store
        kv_only = all(op["type"] == "kv" for op in ops)
        journal: _KVJournal | _CheckJournal | _FullCheckpoint
        if kv_only:
            journal = _KVJournal(store)
        else:
            nodes = _CheckJournal.applies(store, ops)
            journal = _FullCheckpoint(store) if nodes is None else _CheckJournal(store, ops)
        try:
            outcome = self.run(idx, ops, float(c.now), journal)
        finally:
            store.index_journal = None
        if outcome.errors:
            journal.rollback()
            store.discard_changes()
        return outcome

    def read(self, ops: list[dict[str, Any]]) -> TxnOutcome:
        """A read-only transaction, served without the log (like any read)."""
        with self.store.lock:
            return self.run(0, ops, 0.0, None)

    def run(self, idx: int, ops: list[dict[str, Any]], now: float,
            journal: _KVJournal | _CheckJournal | _FullCheckpoint | None) -> TxnOutcome:
        results: list[tuple[str, Any]] = []
        errors: list[tuple[int, str]] = []
        for i, op in enumerate(ops):
            try:
                kind = op["type"]
                if kind == "kv":
                    out = self._kv(idx, op, now, journal)
                elif kind == "node":
                    out = self._node(idx, op)
                elif kind == "service":
                    out = self._service(idx, op)
                elif kind == "check":
                    out = self._check(idx, op)
                else:
                    raise OpError(f"unknown operation type {kind!r}")
            except (OpError, BeaconError) as exc:
                errors.append((i, str(exc)))
                continue
            results.extend(out)
        if errors:
            return TxnOutcome(None, errors)
        return TxnOutcome(results, None)

    # ------------------------------------------------------------------ KV
    def _kv(self, idx: int, op: dict[str, Any], now: float,
            journal: _KVJournal | _CheckJournal | _FullCheckpoint | None) -> list[tuple[str, Any]]:
        s = self.store
        verb = op["verb"]
        key = op.get("key", "")
        value = op.get("value")
        flags = int(op.get("flags") or 0)
        index = int(op.get("index") or 0)
        session = op.get("session") or ""
        if verb not in KV_VERBS:
            raise OpError(f"unknown KV verb {verb!r}")
        if journal is not None and verb not in KV_READ_VERBS:
            for k in (s.keys_with_prefix(key) if verb == "delete-tree" else [key]):
                journal.save(k)
        entry = s.kv.get(key)
        if verb == "set":
            return [("kv", _blank(s.kv_set(idx, key, value, flags)))]
        if verb == "cas":
            if not s.kv_cas(idx, key, value, flags, index):
                raise OpError(f"failed to set key \"{key}\", index is stale")
            return [("kv", _blank(s.kv[key]))]
        if verb == "lock":
            if not session:
                raise OpError(f"missing session for lock of key \"{key}\"")
            if session not in s.sessions:
                raise OpError(f"invalid session \"{session}\"")
            if not s.kv_lock(idx, key, value, flags, session, now):
                raise OpError(f"failed to lock key \"{key}\", lock is already held or in its lock-delay")
            return [("kv", _blank(s.kv[key]))]
        if verb == "unlock":
            if not s.kv_unlock(idx, key, value, flags, session):
                raise OpError(f"failed to unlock key \"{key}\", lock isn't held, or is held by another session")
            return [("kv", _blank(s.kv[key]))]
        if verb == "get":
            if entry is None:
                raise OpError(f"key \"{key}\" doesn't exist")
            return [("kv", entry)]
        if verb == "get-or-empty":
            return [] if entry is None else [("kv", entry)]
        if verb == "get-tree":
            return [("kv", s.kv[k]) for k in s.keys_with_prefix(key)]
        if verb == "check-index":
            if entry is None:
                raise OpError(f"key \"{key}\" doesn't exist")
            if entry.modify_index != index:
                raise OpError(f"current modify index {entry.modify_index} != {index}")
            return [("kv", _blank(entry))]
        if verb == "check-session":
            if entry is None:
                raise OpError(f"key \"{key}\" doesn't exist")
            if entry.session != session:
                raise OpError(f"failed session check for key \"{key}\", current session "
                              f"\"{entry.session}\" != \"{session}\"")
            return [("kv", _blank(entry))]
        if verb == "check-not-exists":
            if entry is not None:
                raise OpError(f"key \"{key}\" exists")
            return []
        if verb == "delete":
            s.kv_delete(idx, key)
            return []
        if verb == "delete-cas":
            if not s.kv_delete_cas(idx, key, index):
                raise OpError(f"failed to delete key \"{key}\", index is stale")
            return []
        s.kv_delete_tree(idx, key)  # delete-tree
        return []

    # ------------------------------------------------------------------ catalog
    @staticmethod
    def _catalog_verb(kind: str, name: str, verb: str, existing: Any, want_index: int,
                      write: Callable[[], Any], delete: Callable[[], None]) -> list[tuple[str, Any]]:
        """The verbs every catalog row shares: get, set, cas, delete, delete-cas."""
        if verb == "get":
            if existing is None:
                raise OpError(f"{kind} \"{name}\" doesn't exist")
            return [(kind, existing)]
        if verb in ("set", "cas"):
            if verb == "cas" and not (existing is None if want_index == 0
                                      else existing is not None and existing.modify_index == want_index):
                raise OpError(f"failed to set {kind} \"{name}\", index is stale")
            return [(kind, write())]
        if verb == "delete-cas" and (existing is None or existing.modify_index != want_index):
            raise OpError(f"failed to delete {kind} \"{name}\", index is stale")
        delete()
        return []

    def _node(self, idx: int, op: dict[str, Any]) -> list[tuple[str, Any]]:
        s = self.store
        node = Node.from_dict({"node": "", "address": "", **op["node"]})
        key = node.node.lower()
        if not node.node:
            raise OpError("missing node name")

        def write() -> Node:
            if not node.address:
                raise OpError(f"missing address for node \"{node.node}\"")
            s.ensure_node(idx, node)
            return s.nodes[key]

        return self._catalog_verb("node", node.node, op["verb"], s.nodes.get(key), node.modify_index,
                                  write, lambda: s.delete_node(idx, key))

    def _service(self, idx: int, op: dict[str, Any]) -> list[tuple[str, Any]]:
        s = self.store
        node_key = (op.get("node") or "").lower()
        svc = Service.from_dict({"id": "", "service": "", **op["service"]})
        svc.id = svc.id or svc.service
        if node_key not in s.nodes:
            raise OpError(f"node \"{op.get('node') or ''}\" doesn't exist")

        def write() -> Service:
            if not svc.service:
                raise OpError("missing service name")
            svc.node = s.nodes[node_key].node
            s.ensure_service(idx, node_key, svc)
            return s.services[(node_key, svc.id)]

        return self._catalog_verb("service", svc.id, op["verb"], s.services.get((node_key, svc.id)),
                                  svc.modify_index, write, lambda: s.delete_service(idx, node_key, svc.id))

    def _check(self, idx: int, op: dict[str, Any]) -> list[tuple[str, Any]]:
        s = self.store
        chk = HealthCheck.from_dict({"node": "", "check_id": "", **op["check"]})
        node_key = chk.node.lower()
        if node_key not in s.nodes:
            raise OpError(f"node \"{chk.node}\" doesn't exist")

        def write() -> HealthCheck:
            chk.node = s.nodes[node_key].node
            s.ensure_check(idx, node_key, chk)
            return s.checks[(node_key, chk.check_id)]

        return self._catalog_verb("check", chk.check_id, op["verb"], s.checks.get((node_key, chk.check_id)),
                                  chk.modify_index, write, lambda: s.delete_check(idx, node_key, chk.check_id))
