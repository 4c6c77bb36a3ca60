"""Session commands for the state machine, and the registration of every KV-coordination handler.

A session ties locks on KV keys to the liveness of a node, some checks and (optionally) a TTL. The
commands (records in :mod:`beacon.server.commands`, log form ``(MessageType.SESSION, {"op": ...})``):

* ``create``  ``{"session": Session.to_dict(), "now": t}``: the proposer picks the ID and the time.
  Apply checks the node and checks exist and none is critical, as Consul's state store does.
* ``destroy`` ``{"id", "now"}``: invalidate (release or delete its keys, start lock delays).
* ``renew``   ``{"id", "now"}``: push the TTL deadline to ``now + 2*TTL``. Goes through the log (unlike
  Consul, which keeps TTL timers only in the leader's memory) so that the expiry command can be
  re-checked by every replica against replicated state.
* ``expire``  ``{"ids", "now"}``: proposed by the leader (``beacon.server.leader``); each session is
  invalidated only if it still exists and ``now`` is past its replicated deadline, so an expiry that
  raced a renewal does nothing.

The deadline is ``2 * TTL`` after the last create/renew, Consul's ``SessionTTLMultiplier``: the TTL is
a lower bound on a session's life, not an exact one. Renewals touch no watch key (nothing a reader
sees changes), so blocking session reads do not wake on them.
"""

from __future__ import annotations

from typing import Any

from beacon.durations import parse_duration
from beacon.errors import Failed, NotFound
from beacon.model import Session
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

TTL_MULTIPLIER = 2


def session_deadline(sess: Session, now: float) -> float | None:
    if not sess.ttl:
        return None
    return now + TTL_MULTIPLIER * parse_duration(sess.ttl)


class SessionCommands:
    """The SESSION command family applied against one store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {
            cmd.SessionCreate: lambda idx, c: self.create(idx, Session.from_dict(c.session), float(c.now)),
            cmd.SessionDestroy: self._destroy,
            cmd.SessionRenew: lambda idx, c: self.renew(c.id, float(c.now)),
            cmd.SessionExpire: lambda idx, c: self.expire(idx, list(c.ids), float(c.now)),
        }

    def _destroy(self, idx: int, c: cmd.SessionDestroy) -> bool:
        self.store.invalidate_session(idx, c.id, float(c.now))
        return True

    def create(self, idx: int, sess: Session, now: float) -> str:
        store = self.store
        if not sess.id:
            raise Failed("Missing session ID")
        if sess.id in store.sessions:
            raise Failed(f"Session ID \"{sess.id}\" already exists")
        if sess.behavior not in ("release", "delete"):
            raise Failed(f"Invalid Behavior setting '{sess.behavior}'")
        node = store.get_node(sess.node)
        if node is None:
            raise Failed(f"Missing node registration: {sess.node}")
        sess.node = node.node
        node_key = node.node.lower()
        wanted = list(sess.node_checks) + [c.get("ID", "") for c in sess.service_checks]
        for check_id in wanted:
            chk = store.checks.get((node_key, check_id))
            if chk is None:
                raise Failed(f"Missing check '{check_id}' registration")
            if chk.status == "critical":
                raise Failed(f"Check '{check_id}' is in critical state")
        sess.create_index = sess.modify_index = idx
        store.sessions[sess.id] = sess
        deadline = session_deadline(sess, now)
        if deadline is not None:
            store.session_expires[sess.id] = deadline
        store.bump_table("sessions", idx)
        store.touch("session:" + sess.id)
        return sess.id

    def renew(self, session_id: str, now: float) -> Session:
        sess = self.store.sessions.get(session_id)
        if sess is None:
            raise NotFound(f"Session id '{session_id}' not found")
        deadline = session_deadline(sess, now)
        if deadline is not None:
            self.store.session_expires[session_id] = deadline
        return sess

    def expire(self, idx: int, ids: list[str], now: float) -> list[str]:
        expired = []
        for session_id in ids:
            deadline = self.store.session_expires.get(session_id)
            if session_id in self.store.sessions and deadline is not None and now >= deadline:
                self.store.invalidate_session(idx, session_id, now)
                expired.append(session_id)
        return expired


def apply_snapshot_restore(store: StateStore, idx: int, c: cmd.SnapshotRestore) -> int:
    """Replace the whole state with an uploaded snapshot (``PUT /v1/snapshot``), as a logged command
    so that every replica and a restart from the command log reach the same state.

    A restore is one write of every row at this command's index: the store's index neither jumps
    (the command log numbers records before applying them) nor goes backwards, every blocking reader
    sees a newer index and wakes, and a CAS with a pre-restore index fails instead of matching by
    chance. TTL sessions get a fresh deadline from the command's time, as Consul resets its timers.
    """
    snap = c.snapshot
    now = float(c.now)
    store.restore(snap)
    store.index = idx
    for table in (store.tables, store.service_index, store.node_index, store.tombstones):
        for key in table:
            table[key] = idx
    rows: list[Any] = [*store.nodes.values(), *store.services.values(), *store.checks.values(),
                       *store.kv.values(), *store.sessions.values()]
    for row in rows:
        row.create_index = min(row.create_index, idx)
        row.modify_index = idx
    for sess in store.sessions.values():
        deadline = session_deadline(sess, now)
        if deadline is not None:
            store.session_expires[sess.id] = deadline
    store.touch("*")
    return idx


def install(store: StateStore) -> None:
    """Register the session, txn and snapshot-restore handlers on a store (before any replay)."""
    from beacon.server import autopilot, config_entries, connect_ca, queries
    from beacon.server.txn import TxnCommands

    store.register_handlers(SessionCommands(store).handlers())
    store.register_handlers({
        cmd.Txn: TxnCommands(store).apply,
        cmd.SnapshotRestore: lambda idx, c: apply_snapshot_restore(store, idx, c),
    })
    queries.install(store)
    config_entries.install(store)
    autopilot.install(store)
    connect_ca.install(store)
    from beacon.acl import state as acl_state

    acl_state.install(store)
