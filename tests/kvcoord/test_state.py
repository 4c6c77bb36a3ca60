"""Sessions, locks and transactions on the state machine alone (no network, no clock)."""

from __future__ import annotations

import pytest

from beacon.model import Session
from beacon.server import sessions
from beacon.server.fsm import MessageType, StateStore


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, set[str]]] = []

    def __call__(self, index: int, keys: set[str]) -> None:
        self.calls.append((index, set(keys)))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def store(rec: Recorder) -> StateStore:
    s = StateStore(on_change=rec)
    sessions.install(s)
    s.apply((MessageType.REGISTER, {
        "node": "n1", "address": "10.0.0.1",
        "service": {"id": "web1", "service": "web"},
        "checks": [{"check_id": "serfHealth", "status": "passing"},
                   {"check_id": "svc-check", "status": "passing", "service_id": "web1"}]}))
    return s


def create(store: StateStore, sid: str, now: float = 1000.0, **kw):
    sess = Session(id=sid, node=kw.pop("node", "n1"), **kw)
    return store.apply((MessageType.SESSION, {"op": "create", "session": sess.to_dict(), "now": now}))


def kv(store: StateStore, op: str, key: str, **kw):
    return store.apply((MessageType.KVS, {"op": op, "key": key, **kw}))


def txn(store: StateStore, *ops, now: float = 1000.0):
    return store.apply((MessageType.TXN, {"ops": list(ops), "now": now})).value


def kvop(verb: str, key: str, **kw):
    return {"type": "kv", "verb": verb, "key": key, **kw}


def set_check(store: StateStore, check_id: str, status: str):
    return store.apply((MessageType.CHECK_STATUS, {"node": "n1", "check_id": check_id, "status": status}))


# ---------------------------------------------------------------- sessions

def test_create_requires_a_registered_node_and_healthy_checks(store: StateStore) -> None:
    assert create(store, "s0", node="ghost").error.message.startswith("Missing node registration")
    assert "Missing check 'nope'" in create(store, "s1", node_checks=["nope"]).error.message
    set_check(store, "svc-check", "critical")
    err = create(store, "s2", service_checks=[{"ID": "svc-check", "Namespace": ""}]).error
    assert err.message == "Check 'svc-check' is in critical state"
    assert store.sessions == {}


def test_lock_is_exclusive_and_lock_index_counts_acquisitions(store: StateStore) -> None:
    create(store, "a")
    create(store, "b")
    assert kv(store, "lock", "k", session="a", value=b"1", now=1.0).value is True
    assert kv(store, "lock", "k", session="b", now=1.0).value is False
    assert kv(store, "lock", "k", session="a", value=b"2", now=1.0).value is True  # re-acquire: no new lock
    assert store.kv["k"].lock_index == 1 and store.kv["k"].value == b"2"
    assert kv(store, "unlock", "k", session="b").value is False
    assert kv(store, "unlock", "k", session="a").value is True
    assert kv(store, "lock", "k", session="b", now=1.0).value is True
    assert store.kv["k"].lock_index == 2 and store.kv["k"].session == "b"


def test_acquire_with_unknown_session_is_an_error(store: StateStore) -> None:
    res = kv(store, "lock", "k", session="nope", now=1.0)
    assert res.error is not None and 'Invalid session "nope"' in res.error.message


def test_destroy_releases_locks_and_starts_the_lock_delay(store: StateStore, rec: Recorder) -> None:
    create(store, "a", lock_delay_ns=5_000_000_000)
    create(store, "b")
    kv(store, "lock", "k", session="a", now=1000.0)
    store.apply((MessageType.SESSION, {"op": "destroy", "id": "a", "now": 1001.0}))
    assert "session:a" in rec.calls[-1][1] and "kv:k" in rec.calls[-1][1]
    assert store.kv["k"].session == ""
    assert kv(store, "lock", "k", session="b", now=1005.9).value is False  # inside 1001 + 5
    assert kv(store, "lock", "k", session="b", now=1006.1).value is True


def test_delete_behavior_deletes_held_keys(store: StateStore) -> None:
    create(store, "a", behavior="delete", lock_delay_ns=0)
    kv(store, "lock", "k", session="a", now=1.0)
    kv(store, "set", "other", value=b"x")
    store.apply((MessageType.SESSION, {"op": "destroy", "id": "a", "now": 2.0}))
    assert "k" not in store.kv and "other" in store.kv


def test_check_going_critical_invalidates_its_sessions_only(store: StateStore) -> None:
    create(store, "on-svc", service_checks=[{"ID": "svc-check", "Namespace": ""}], node_checks=[])
    create(store, "on-node")
    kv(store, "lock", "k", session="on-svc", now=1.0)
    set_check(store, "svc-check", "warning")
    assert "on-svc" in store.sessions
    set_check(store, "svc-check", "critical")
    assert "on-svc" not in store.sessions and "on-node" in store.sessions
    assert store.kv["k"].session == ""
    # No time in the check command: the lock delay starts at the next acquire attempt.
    create(store, "c", now=50.0)
    assert kv(store, "lock", "k", session="c", now=50.0).value is False
    assert kv(store, "lock", "k", session="c", now=64.0).value is False
    assert kv(store, "lock", "k", session="c", now=65.1).value is True


def test_node_failure_and_check_deregistration_invalidate_sessions(store: StateStore) -> None:
    create(store, "a")
    create(store, "b", service_checks=[{"ID": "svc-check", "Namespace": ""}])
    store.apply((MessageType.DEREGISTER, {"node": "n1", "service_id": "web1"}))
    assert "b" not in store.sessions and "a" in store.sessions
    set_check(store, "serfHealth", "critical")
    assert store.sessions == {}


def test_expire_rechecks_the_replicated_deadline(store: StateStore) -> None:
    create(store, "t", ttl="10s", now=1000.0)
    assert store.session_expires["t"] == 1020.0  # 2 x TTL
    expire = {"op": "expire", "ids": ["t"], "now": 1019.0}
    assert store.apply((MessageType.SESSION, expire)).value == []
    store.apply((MessageType.SESSION, {"op": "renew", "id": "t", "now": 1015.0}))
    # An expiry decided before the renewal, applied after it, changes nothing.
    assert store.apply((MessageType.SESSION, {**expire, "now": 1021.0})).value == []
    assert "t" in store.sessions
    assert store.apply((MessageType.SESSION, {**expire, "now": 1035.0})).value == ["t"]
    assert "t" not in store.sessions and "t" not in store.session_expires


def test_renew_wakes_nobody_and_unknown_renew_is_404(store: StateStore, rec: Recorder) -> None:
    create(store, "t", ttl="10s")
    n = len(rec.calls)
    store.apply((MessageType.SESSION, {"op": "renew", "id": "t", "now": 1001.0}))
    assert len(rec.calls) == n
    err = store.apply((MessageType.SESSION, {"op": "renew", "id": "zz", "now": 1.0})).error
    assert err.kind == "not_found"


def test_sessions_survive_snapshot_and_restore(store: StateStore) -> None:
    create(store, "t", ttl="10s")
    kv(store, "lock", "k", session="t", now=1.0)
    other = StateStore()
    other.restore(store.snapshot())
    assert other.sessions["t"].ttl == "10s" and other.session_expires == store.session_expires
    assert other.kv["k"].session == "t"


# ---------------------------------------------------------------- transactions

def test_txn_applies_all_and_returns_results_in_order(store: StateStore) -> None:
    out = txn(store, kvop("set", "a", value=b"1"), kvop("cas", "b", value=b"2", index=0),
              kvop("get", "a"), kvop("delete", "zz"))
    assert out.errors is None
    assert [(k, e.key, e.value) for k, e in out.results] == [("kv", "a", None), ("kv", "b", None),
                                                             ("kv", "a", b"1")]


def test_failed_txn_changes_nothing_and_wakes_nobody(store: StateStore, rec: Recorder) -> None:
    kv(store, "set", "keep", value=b"old")
    kv(store, "set", "gone-later", value=b"x")
    before = store.snapshot()
    calls = len(rec.calls)
    out = txn(store, kvop("set", "keep", value=b"new"), kvop("set", "fresh", value=b"n"),
              kvop("delete-tree", "gone"), kvop("check-index", "keep", index=1),
              kvop("get", "missing"))
    assert out.results is None
    assert [i for i, _ in out.errors] == [3, 4]
    assert "current modify index" in out.errors[0][1]
    after = store.snapshot()
    before.pop("index")
    after.pop("index")
    assert after == before
    assert len(rec.calls) == calls
    assert store.kv_list("")[1] == [store.kv["gone-later"], store.kv["keep"]]


def test_failed_txn_with_catalog_ops_rolls_back_sessions_and_locks(store: StateStore) -> None:
    create(store, "a", service_checks=[{"ID": "svc-check", "Namespace": ""}])
    kv(store, "lock", "k", session="a", now=1.0)
    before = store.snapshot()
    out = txn(store,
              {"type": "check", "verb": "set",
               "check": {"node": "n1", "check_id": "svc-check", "status": "critical", "service_id": "web1"}},
              {"type": "node", "verb": "delete", "node": {"node": "n1"}},
              kvop("check-not-exists", "k"))
    assert out.errors == [(2, 'key "k" exists')]
    after = store.snapshot()
    before.pop("index")
    after.pop("index")
    assert after == before and store.kv["k"].session == "a"


def test_txn_lock_and_check_session(store: StateStore) -> None:
    create(store, "a")
    out = txn(store, kvop("lock", "l", session="a", value=b"v"), kvop("check-session", "l", session="a"))
    assert out.errors is None and store.kv["l"].session == "a"
    out = txn(store, kvop("check-session", "l", session="b"))
    assert out.errors and "current session" in out.errors[0][1]


def test_txn_catalog_set_get_and_cas(store: StateStore) -> None:
    out = txn(store, {"type": "node", "verb": "set", "node": {"node": "n2", "address": "10.0.0.2"}},
              {"type": "service", "verb": "set", "node": "n2", "service": {"id": "db1", "service": "db"}},
              {"type": "node", "verb": "get", "node": {"node": "n2"}})
    assert out.errors is None and [k for k, _ in out.results] == ["node", "service", "node"]
    stale = txn(store, {"type": "node", "verb": "cas", "node": {"node": "n2", "address": "x", "modify_index": 1}})
    assert stale.errors and "index is stale" in stale.errors[0][1]
    assert store.nodes["n2"].address == "10.0.0.2"


def test_read_only_txn_does_not_advance_the_index(store: StateStore) -> None:
    from beacon.server.txn import TxnCommands

    kv(store, "set", "a", value=b"1")
    idx = store.index
    out = TxnCommands(store).read([kvop("get", "a"), kvop("get-tree", "")])
    assert out.errors is None and len(out.results) == 2 and store.index == idx


def test_committed_txn_check_critical_invalidates_sessions_and_delete_cas_guards(store: StateStore) -> None:
    create(store, "a", service_checks=[{"ID": "svc-check", "Namespace": ""}])
    svc_index = store.services[("n1", "web1")].modify_index
    stale = txn(store, {"type": "service", "verb": "delete-cas", "node": "n1",
                        "service": {"id": "web1", "modify_index": svc_index + 1}})
    assert stale.errors and "index is stale" in stale.errors[0][1]
    out = txn(store, {"type": "check", "verb": "set",
                      "check": {"node": "n1", "check_id": "svc-check", "status": "critical", "service_id": "web1"}},
              {"type": "service", "verb": "get", "node": "n1", "service": {"id": "web1"}})
    assert out.errors is None and [k for k, _ in out.results] == ["check", "service"]
    assert "a" not in store.sessions
    out = txn(store, {"type": "service", "verb": "delete-cas", "node": "n1",
                      "service": {"id": "web1", "modify_index": svc_index}})
    assert out.errors is None and ("n1", "web1") not in store.services


def test_restore_is_one_write_at_its_own_index(store: StateStore, rec: Recorder) -> None:
    kv(store, "set", "a", value=b"1")
    create(store, "t", ttl="10s", now=1000.0)
    snap = store.snapshot()
    for i in range(5):
        kv(store, "set", "b", value=str(i).encode())
    # Restore an older snapshot, then a newer one from "another cluster" far ahead.
    res = store.apply((MessageType.SNAPSHOT_RESTORE, {"snapshot": snap, "now": 2000.0}))
    assert res.error is None and store.index == res.index
    assert "b" not in store.kv and store.kv["a"].modify_index == res.index
    assert store.kv_get("a")[0] == res.index and "*" in rec.calls[-1][1]
    assert store.session_expires["t"] == 2020.0
    far = dict(snap, index=10**6)
    res2 = store.apply((MessageType.SNAPSHOT_RESTORE, {"snapshot": far, "now": 2000.0}))
    assert store.index == res2.index == res.index + 1
    assert max(e.modify_index for e in store.kv.values()) == store.index
    nxt = kv(store, "set", "c", value=b"x")
    assert nxt.index == store.index and store.kv["c"].modify_index > store.kv["a"].modify_index


def test_session_lock_index_matches_kv_under_random_commands(store: StateStore) -> None:
    """session_keys is derived from kv; random locks, writes, deletes, failed and committed txns and
    session deaths must never make the two disagree."""
    import random

    rng = random.Random(11)
    keys = [f"r/{i}" for i in range(6)]
    live = []
    for n in range(600):
        roll = rng.random()
        key = rng.choice(keys)
        if roll < 0.1 or not live:
            sid = f"s{n}"
            create(store, sid, lock_delay_ns=0, behavior=rng.choice(["release", "delete"]))
            live.append(sid)
        elif roll < 0.35:
            kv(store, "lock", key, session=rng.choice(live), now=1.0)
        elif roll < 0.45:
            kv(store, "unlock", key, session=rng.choice(live))
        elif roll < 0.55:
            kv(store, "set", key, value=b"v")
        elif roll < 0.62:
            kv(store, "delete-tree" if rng.random() < 0.3 else "delete", "r/" if rng.random() < 0.3 else key)
        elif roll < 0.85:
            ops = [kvop("lock", rng.choice(keys), session=rng.choice(live)),
                   kvop("delete", rng.choice(keys)),
                   kvop(rng.choice(["check-not-exists", "get", "set"]), rng.choice(keys))]
            txn(store, *ops)
        else:
            sid = live.pop(rng.randrange(len(live)))
            store.apply((MessageType.SESSION, {"op": "destroy", "id": sid, "now": 2.0}))
        derived: dict[str, set[str]] = {}
        for k, e in store.kv.items():
            if e.session:
                derived.setdefault(e.session, set()).add(k)
        assert store.session_keys == derived, n
        assert all(e.session in store.sessions for e in store.kv.values() if e.session)
