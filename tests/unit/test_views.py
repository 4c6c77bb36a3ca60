"""Cached read views (beacon.agent.http.views) against a fresh computation after every command.

Hypothesis drives random command sequences (registrations with node, service and check changes,
renames, node-level checks, status flips, deregistrations, KV writes and deletes, failing
transactions, snapshot restores) through the state machine. After each command, every view a client
could read is compared, value, index and encoded bytes, with the same answer computed from scratch.
The views are read between commands too, so a stale cache entry would be served if a stamp missed a
change.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.agent.http.encode import kv_json, node_json
from beacon.agent.http.views import Views, health_entry, ui_node_summary, ui_service_summaries
from beacon.server.commands import Txn
from beacon.server.fsm import MessageType, StateStore
from beacon.server.txn import TxnCommands

NODES = ["n1", "n2", "N3"]
NAMES = ["web", "db", "Web", "cache"]
SERVICE_IDS = ["s1", "s2", "web"]
TAGS = ["a", "b", "c"]
STATUSES = ["passing", "warning", "critical"]
KEYS = ["a", "a/b", "a/c", "b/x", "ab"]
PREFIXES = ["", "a", "a/", "b", "zz"]

register_cmd = st.builds(
    lambda node, address, meta, svc, checks: (MessageType.REGISTER, {
        "node": node, "address": address, "node_meta": meta,
        **({"service": svc} if svc else {}), **({"checks": checks} if checks else {})}),
    st.sampled_from(NODES), st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    st.dictionaries(st.sampled_from(["rack", "zone"]), st.sampled_from(["1", "2"]), max_size=2),
    st.none() | st.builds(lambda sid, name, tags, port: {"id": sid, "service": name, "tags": tags, "port": port},
                          st.sampled_from(SERVICE_IDS), st.sampled_from(NAMES),
                          st.lists(st.sampled_from(TAGS), max_size=3), st.sampled_from([80, 81])),
    st.lists(st.builds(lambda cid, status, sid: {"check_id": cid, "name": cid, "status": status,
                                                 "service_id": sid},
                       st.sampled_from(["c1", "c2", "serfHealth"]), st.sampled_from(STATUSES),
                       st.sampled_from(["", *SERVICE_IDS])), max_size=2),
)
deregister_cmd = st.builds(
    lambda node, what, ident: (MessageType.DEREGISTER, {"node": node, what: ident} if what else {"node": node}),
    st.sampled_from(NODES), st.sampled_from(["service_id", "check_id", ""]),
    st.sampled_from([*SERVICE_IDS, "c1", "c2", "serfHealth"]))
status_cmd = st.builds(
    lambda node, cid, status: (MessageType.CHECK_STATUS, {"node": node, "check_id": cid, "status": status,
                                                          "output": status}),
    st.sampled_from(NODES), st.sampled_from(["c1", "c2", "serfHealth"]), st.sampled_from(STATUSES))
kv_cmd = st.builds(
    lambda op, key, value: (MessageType.KVS, {"op": op, "key": key, "value": value}),
    st.sampled_from(["set", "set", "delete", "delete-tree"]), st.sampled_from(KEYS),
    st.sampled_from([b"1", b"2", None]))
# A transaction whose last op fails: everything it did is rolled back.
failing_txn = st.builds(
    lambda node, sid: (MessageType.TXN, {"ops": [
        {"type": "service", "verb": "set", "node": node, "service": {"id": sid, "service": "rolled", "port": 1}},
        {"type": "kv", "verb": "cas", "key": "a", "value": b"x", "index": 10**9}]}),
    st.sampled_from(NODES), st.sampled_from(SERVICE_IDS))
command = st.one_of(register_cmd, register_cmd, deregister_cmd, status_cmd, kv_cmd, failing_txn,
                    st.just(("restore", {})))


def fresh_services(store: StateStore) -> dict[str, list[str]]:
    """Walk every instance (the computation the cached view replaces)."""
    out: dict[str, list[str]] = {}
    for key in sorted(store.services):
        svc = store.services[key]
        tags = out.setdefault(svc.service, [])
        for t in svc.tags:
            if t not in tags:
                tags.append(t)
    return dict(sorted(out.items()))


def check_view(view: tuple[int, Any], index: int, value: Any) -> None:
    got_index, encoded = view
    assert got_index == index
    assert encoded.value == value
    # The bytes a client gets (made now or earlier) say the same thing, in the same order.
    assert orjson.loads(encoded.compact()) == orjson.loads(orjson.dumps(value))
    assert list(orjson.loads(encoded.pretty())) == list(orjson.loads(orjson.dumps(value)))


def check_all(store: StateStore, views: Views) -> None:
    services = fresh_services(store)
    check_view(views.catalog_services(), store.tables["services"], services)
    assert list(views.catalog_services()[1].value) == list(services)  # name order, not just equality
    nodes = sorted(store.nodes.values(), key=lambda n: n.node)
    check_view(views.catalog_nodes(), store.tables["nodes"], [node_json(n) for n in nodes])
    for name in [*NAMES, "absent"]:
        idx, rows = store.health_service(name)
        for passing in (False, True):
            want = [health_entry(n, s, c) for n, s, c in rows
                    if not passing or all(x.status == "passing" for x in c)]
            check_view(views.health_service(name, passing), idx, want)
    check_view(views.ui_services(), store.catalog_index, ui_service_summaries(store, "dc1"))
    check_view(views.ui_nodes(), store.catalog_index, [ui_node_summary(store, n) for n in nodes])
    for prefix in PREFIXES:
        idx, entries = store.kv_list(prefix)
        check_view(views.kv_recurse(prefix), idx, [kv_json(e) for e in entries])
    for key in KEYS:
        idx, entry = store.kv_get(key)
        got_idx, body = views.kv_entry(key)
        assert got_idx == idx
        assert (body is None) == (entry is None)
        if entry is not None:
            assert body is not None and orjson.loads(body.compact()) == [kv_json(entry)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow])
@given(st.lists(command, min_size=1, max_size=40))
def test_every_cached_view_matches_a_fresh_computation(commands: list[tuple[Any, dict[str, Any]]]) -> None:
    store = StateStore()
    store.register_handlers({Txn: TxnCommands(store).apply})
    views = Views(store, "dc1")
    check_all(store, views)
    for cmd in commands:
        if cmd[0] == "restore":
            store.restore(store.snapshot())
        else:
            store.apply(cmd)
        check_all(store, views)


def test_an_unchanged_view_is_built_once_and_shared() -> None:
    """Readers of an unchanged view share one object (and one encoding); a write to another service
    leaves a service's health view alone, a write to it rebuilds it."""
    store = StateStore()
    views = Views(store, "dc1")
    for node in ("n1", "n2"):
        store.apply((MessageType.REGISTER, {"node": node, "address": "10.0.0.1",
                                            "service": {"id": "web", "service": "web", "port": 80}}))
    first = views.health_service("web", True)[1]
    assert views.health_service("web", True)[1] is first
    builds = views.builds
    store.apply((MessageType.REGISTER, {"node": "n1", "address": "10.0.0.1",
                                        "service": {"id": "db", "service": "db", "port": 5432}}))
    assert views.health_service("web", True)[1] is first and views.builds == builds
    store.apply((MessageType.REGISTER, {"node": "n2", "address": "10.0.0.1",
                                        "service": {"id": "web", "service": "web", "port": 81}}))
    assert views.health_service("web", True)[1] is not first
    assert views.builds == builds + 1
