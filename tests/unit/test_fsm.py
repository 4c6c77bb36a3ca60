"""The state machine with no network: indexes, watch keys, catalog views, KV, snapshots."""

from __future__ import annotations

import pytest

from beacon.server.fsm import IGNORE_UNKNOWN_FLAG, MessageType, StateStore


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, set[str]]] = []

    def __call__(self, index: int, keys: set[str]) -> None:
        self.calls.append((index, set(keys)))

    @property
    def last(self) -> set[str]:
        return self.calls[-1][1]


def register(store: StateStore, node: str = "n1", address: str = "10.0.0.1", service: dict | None = None,
             checks: list[dict] | None = None, **extra):
    payload = {"node": node, "address": address, **extra}
    if service is not None:
        payload["service"] = service
    if checks is not None:
        payload["checks"] = checks
    return store.apply((MessageType.REGISTER, payload))


def kv(store: StateStore, op: str, key: str, **kw):
    return store.apply((MessageType.KVS, {"op": op, "key": key, **kw}))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def store(rec: Recorder) -> StateStore:
    return StateStore(on_change=rec)


def test_every_command_advances_the_index(store: StateStore) -> None:
    assert store.index == 0
    register(store)
    kv(store, "set", "a", value=b"1")
    assert store.index == 2


def test_identical_reregistration_keeps_modify_index_and_wakes_nobody(store: StateStore, rec: Recorder) -> None:
    svc = {"id": "web1", "service": "web", "port": 80, "tags": ["a"]}
    register(store, service=svc)
    _, rows = store.service_nodes("web")
    first = rows[0][1].modify_index
    calls = len(rec.calls)
    register(store, service=dict(svc))
    _, rows = store.service_nodes("web")
    assert rows[0][1].modify_index == first
    assert len(rec.calls) == calls  # nothing changed, nobody woken


def test_service_change_touches_only_that_service(store: StateStore, rec: Recorder) -> None:
    register(store, service={"id": "web1", "service": "web", "port": 80})
    register(store, service={"id": "db1", "service": "db", "port": 5432})
    register(store, skip_node_update=True, service={"id": "web1", "service": "web", "port": 81})
    assert "svc:web" in rec.last
    assert "svc:db" not in rec.last
    idx_web, _ = store.service_nodes("web")
    idx_db, _ = store.service_nodes("db")
    assert idx_web > idx_db


def test_node_check_affects_every_service_on_the_node(store: StateStore, rec: Recorder) -> None:
    register(store, service={"id": "web1", "service": "web"})
    register(store, skip_node_update=True, service={"id": "db1", "service": "db"})
    register(store, skip_node_update=True, checks=[{"check_id": "serfHealth", "status": "critical"}])
    assert {"svc:web", "svc:db", "checks"} <= rec.last
    _, rows = store.health_service("web")
    node, svc, checks = rows[0]
    assert [c.check_id for c in checks] == ["serfHealth"]


def test_health_service_includes_own_and_node_checks_only(store: StateStore) -> None:
    register(store, service={"id": "web1", "service": "web"},
             checks=[{"check_id": "service:web1", "service_id": "web1", "status": "passing"}])
    register(store, skip_node_update=True, service={"id": "db1", "service": "db"},
             checks=[{"check_id": "service:db1", "service_id": "db1", "status": "critical"},
                     {"check_id": "node-ok", "status": "passing"}])
    _, rows = store.health_service("web")
    assert sorted(c.check_id for c in rows[0][2]) == ["node-ok", "service:web1"]
    assert rows[0][2][1].service_name == "web"


def test_check_for_unknown_service_is_an_error_result_not_a_crash(store: StateStore) -> None:
    result = register(store, checks=[{"check_id": "c", "service_id": "nope"}])
    assert result.error is not None and "nope" in result.error.message
    assert store.index == 1


def test_invalid_check_status_is_rejected(store: StateStore) -> None:
    result = register(store, checks=[{"check_id": "c", "status": "bogus"}])
    assert result.error is not None


def test_deregister_service_removes_its_checks(store: StateStore) -> None:
    register(store, service={"id": "web1", "service": "web"},
             checks=[{"check_id": "service:web1", "service_id": "web1"}, {"check_id": "node"}])
    store.apply((MessageType.DEREGISTER, {"node": "n1", "service_id": "web1"}))
    _, checks = store.node_checks("n1")
    assert [c.check_id for c in checks] == ["node"]
    _, rows = store.service_nodes("web")
    assert rows == []
    idx, services = store.list_services()
    assert "web" not in services


def test_deregister_node_removes_everything(store: StateStore) -> None:
    register(store, service={"id": "web1", "service": "web"}, checks=[{"check_id": "c"}])
    store.apply((MessageType.DEREGISTER, {"node": "N1"}))  # node names are case-insensitive
    assert store.nodes == {} and store.services == {} and store.checks == {}
    _, node, _ = store.node_services("n1")
    assert node is None


def test_service_index_does_not_go_backwards_after_delete(store: StateStore) -> None:
    register(store, service={"id": "web1", "service": "web"})
    idx1, _ = store.service_nodes("web")
    store.apply((MessageType.DEREGISTER, {"node": "n1", "service_id": "web1"}))
    idx2, rows = store.service_nodes("web")
    assert rows == [] and idx2 > idx1


def test_register_without_address_fails(store: StateStore) -> None:
    result = store.apply((MessageType.REGISTER, {"node": "x"}))
    assert result.error is not None and "address" in result.error.message


def test_check_status_command_updates_only_status_and_output(store: StateStore, rec: Recorder) -> None:
    register(store, service={"id": "web1", "service": "web"},
             checks=[{"check_id": "service:web1", "service_id": "web1", "name": "hc", "status": "passing"}])
    store.apply((MessageType.CHECK_STATUS, {"node": "n1", "check_id": "service:web1", "status": "critical",
                                            "output": "down"}))
    _, checks = store.service_checks("web")
    assert (checks[0].status, checks[0].output, checks[0].name) == ("critical", "down", "hc")
    assert "svc:web" in rec.last


# ---------------------------------------------------------------------- KV

def test_kv_set_get_and_indexes(store: StateStore) -> None:
    kv(store, "set", "a/b", value=b"x", flags=42)
    idx, entry = store.kv_get("a/b")
    assert entry is not None and entry.value == b"x" and entry.flags == 42
    assert idx == entry.modify_index == entry.create_index == 1
    kv(store, "set", "a/b", value=b"y")
    idx, entry = store.kv_get("a/b")
    assert (entry.create_index, entry.modify_index, idx) == (1, 2, 2)


def test_kv_noop_write_keeps_index(store: StateStore, rec: Recorder) -> None:
    kv(store, "set", "k", value=b"v")
    n = len(rec.calls)
    kv(store, "set", "k", value=b"v")
    assert store.kv_get("k")[1].modify_index == 1
    assert len(rec.calls) == n


def test_kv_cas(store: StateStore) -> None:
    assert kv(store, "cas", "k", value=b"1", index=0).value is True
    assert kv(store, "cas", "k", value=b"2", index=0).value is False  # create-only
    mi = store.kv_get("k")[1].modify_index
    assert kv(store, "cas", "k", value=b"3", index=mi + 100).value is False
    assert kv(store, "cas", "k", value=b"3", index=mi).value is True
    assert store.kv_get("k")[1].value == b"3"


def test_kv_delete_cas(store: StateStore) -> None:
    kv(store, "set", "k", value=b"1")
    assert kv(store, "delete-cas", "k", index=999).value is False
    assert kv(store, "delete-cas", "k", index=1).value is True
    assert store.kv_get("k")[1] is None


def test_kv_prefix_index_includes_tombstones(store: StateStore) -> None:
    kv(store, "set", "app/a", value=b"1")
    kv(store, "set", "app/b", value=b"2")
    idx_before, _ = store.kv_list("app/")
    kv(store, "delete", "app/b")
    idx_after, entries = store.kv_list("app/")
    assert [e.key for e in entries] == ["app/a"]
    assert idx_after > idx_before  # deletion is visible to prefix watchers


def test_kv_missing_key_index_is_its_tombstone(store: StateStore) -> None:
    kv(store, "set", "gone", value=b"1")
    kv(store, "delete", "gone")
    kv(store, "set", "other", value=b"1")
    idx, entry = store.kv_get("gone")
    assert entry is None and idx == 2


def test_kv_delete_tree_and_prefix_boundaries(store: StateStore) -> None:
    for k in ("a/1", "a/2", "a/sub/3", "ab", "b"):
        kv(store, "set", k, value=b"v")
    kv(store, "delete-tree", "a/")
    assert [e.key for e in store.kv_list("")[1]] == ["ab", "b"]


def test_kv_keys_with_separator(store: StateStore) -> None:
    for k in ("web/bar", "web/foo", "web/subdir/x", "web/subdir/y", "other"):
        kv(store, "set", k, value=b"v")
    _, keys = store.kv_list_keys("web/", "/")
    assert keys == ["web/bar", "web/foo", "web/subdir/"]


def test_kv_watch_keys_are_per_key(store: StateStore, rec: Recorder) -> None:
    kv(store, "set", "a", value=b"1")
    assert rec.last == {"kvs", "kv:a"}


def test_kv_lock_needs_a_session(store: StateStore) -> None:
    result = kv(store, "lock", "k", value=b"v", session="nope")
    assert result.error is not None and 'Invalid session "nope"' in result.error.message


def test_unknown_command_refuses_unless_ignorable(store: StateStore) -> None:
    with pytest.raises(RuntimeError):
        store.apply((99, {}))
    store.apply((99 | IGNORE_UNKNOWN_FLAG, {}))
    assert store.index == 1


# ---------------------------------------------------------------------- snapshot

def test_snapshot_restore_round_trip(store: StateStore, rec: Recorder) -> None:
    register(store, service={"id": "web1", "service": "web", "tags": ["t"], "port": 80},
             checks=[{"check_id": "service:web1", "service_id": "web1", "status": "passing"}])
    kv(store, "set", "k", value=b"\x00\xffbinary")
    kv(store, "set", "gone", value=b"1")
    kv(store, "delete", "gone")
    snap = store.snapshot()
    import json

    snap = json.loads(json.dumps(snap))  # must survive JSON
    other_rec = Recorder()
    other = StateStore(on_change=other_rec)
    other.restore(snap)
    assert other.index == store.index
    assert other.snapshot() == snap
    assert other.kv_get("k")[1].value == b"\x00\xffbinary"
    assert other.kv_get("gone")[0] == store.kv_get("gone")[0]
    assert other_rec.last == {"*"}
    _, rows = other.health_service("web")
    assert rows[0][1].tags == ["t"] and rows[0][2][0].status == "passing"
    # both replicas keep applying identically
    for s in (store, other):
        kv(s, "set", "next", value=b"n")
    assert other.snapshot() == store.snapshot()


def test_reaped_tombstones_are_gone_and_list_indexes_never_go_backwards() -> None:
    s = StateStore()
    s.apply((MessageType.KVS, {"op": "set", "key": "a/1", "value": b"x"}))
    s.apply((MessageType.KVS, {"op": "delete", "key": "a/1"}))
    idx_before, entries = s.kv_list("a/")
    assert entries == [] and s.tombstones == {"a/1": idx_before}
    s.apply((MessageType.KVS, {"op": "set", "key": "b/1", "value": b"y"}))
    s.apply((MessageType.TOMBSTONE_REAP, {"index": idx_before}))
    assert s.tombstones == {}
    assert s.kv_list("a/")[0] >= idx_before
    assert s.kv_get("a/1")[0] >= idx_before
    restored = StateStore()
    restored.restore(s.snapshot())
    assert restored.kv_list("a/")[0] >= idx_before


async def test_the_leader_reaps_tombstones_older_than_the_ttl_only() -> None:
    from beacon.server.fsm import MessageType
    from beacon.server.tombstones import TombstoneReaper

    s = StateStore()
    now = [100.0]

    async def submit(cmd):
        return s.apply(cmd)

    reaper = TombstoneReaper(s, submit, lambda: True, ttl=60, clock=lambda: now[0])
    s.apply((MessageType.KVS, {"op": "set", "key": "k", "value": b"x"}))
    s.apply((MessageType.KVS, {"op": "delete", "key": "k"}))
    assert await reaper.step() == 0  # checkpoint taken, nothing old enough yet
    now[0] += 30
    assert await reaper.step() == 0 and "k" in s.tombstones
    now[0] += 31
    assert await reaper.step() > 0 and s.tombstones == {}
    follower = TombstoneReaper(s, submit, lambda: False, ttl=60, clock=lambda: now[0])
    assert await follower.step() == 0 and not follower.checkpoints
