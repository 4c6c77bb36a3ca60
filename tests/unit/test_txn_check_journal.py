"""Check-only transactions roll back through a journal of the touched nodes (not a copy of the whole
catalog): after random sequences of such transactions, failing ones included, the store is exactly
what the full-copy undo leaves."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.server import sessions, txn
from beacon.server.fsm import MessageType, StateStore

NODES = ["n1", "N2", "n3"]


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    for i, node in enumerate(NODES[:2]):
        for sid in ("web", "db"):
            r = store.apply((MessageType.REGISTER, {
                "node": node, "address": f"10.0.0.{i}", "skip_node_update": sid == "db",
                "service": {"id": f"{sid}-{i}", "service": sid, "port": 80},
                "checks": [{"node": node, "check_id": f"c-{sid}-{i}", "service_id": f"{sid}-{i}",
                            "status": "passing"},
                           {"node": node, "check_id": "serfHealth", "status": "passing"}]}))
            assert r.error is None
    return store


def _state(store: StateStore) -> dict[str, Any]:
    snap = store.snapshot()
    snap["checks"] = sorted(snap["checks"], key=lambda c: (c["node"], c["check_id"]))
    return {**snap, "checks_by_node": {k: sorted(v) for k, v in store.checks_by_node.items()},
            "catalog_version": store.catalog_version, "service_tags": store.service_tags}


ops = st.lists(st.fixed_dictionaries({
    "type": st.just("check"),
    "verb": st.sampled_from(["set", "cas", "delete", "delete-cas", "get"]),
    "check": st.fixed_dictionaries({
        "node": st.sampled_from(NODES + ["n1"]),
        "check_id": st.sampled_from(["serfHealth", "c-web-0", "c-db-1", "new"]),
        "service_id": st.sampled_from(["", "web-0", "db-1", "missing"]),
        "status": st.sampled_from(["passing", "warning", "critical", "bogus"]),
        "modify_index": st.integers(0, 12),
    }),
}), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, min_size=1, max_size=6))
def test_check_journal_rolls_back_like_the_full_copy(txns: list[list[dict[str, Any]]]) -> None:
    journaled, copied = _store(), _store()
    applies = txn._CheckJournal.applies
    for ops_ in txns:
        a = journaled.apply((MessageType.TXN, {"ops": ops_, "now": 0.0}))
        txn._CheckJournal.applies = staticmethod(lambda store, o: None)  # type: ignore[method-assign]
        try:
            b = copied.apply((MessageType.TXN, {"ops": ops_, "now": 0.0}))
        finally:
            txn._CheckJournal.applies = applies  # type: ignore[method-assign]
        assert (a.error, a.value.errors if a.value else None) == (b.error, b.value.errors if b.value else None)
        assert _state(journaled) == _state(copied)


def test_a_failing_check_txn_leaves_the_store_as_it_was() -> None:
    store = _store()
    before = _state(store)
    r = store.apply((MessageType.TXN, {"ops": [
        {"type": "check", "verb": "set", "check": {"node": "n1", "check_id": "new", "status": "critical"}},
        {"type": "check", "verb": "delete", "check": {"node": "n2", "check_id": "serfHealth"}},
        {"type": "check", "verb": "cas", "check": {"node": "n1", "check_id": "serfHealth", "status": "passing",
                                                  "modify_index": 999}},
    ], "now": 0.0}))
    assert r.value.errors  # the stale cas fails the whole transaction
    after = _state(store)
    assert after.pop("index") == before.pop("index") + 1  # every command takes an index, failed ones too
    assert after == before
    assert txn._CheckJournal.applies(store, [{"type": "check", "check": {"node": "N1"}}]) == {"n1"}
