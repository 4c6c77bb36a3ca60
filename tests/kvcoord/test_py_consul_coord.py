"""Sessions, locks, transactions, events and snapshots through py-consul against a real agent.

The agent runs with ``session_ttl_min = 1s`` so TTL expiry takes seconds, not the 20 s that Consul's
10 s minimum (times the 2x multiplier) would. py-consul refuses TTLs under 10 s itself, so TTL
sessions are created through its own HTTP layer.
"""

from __future__ import annotations

import json
import random
import threading
import time

import consul
import pytest
from consul.callback import CB

from tests.conftest import launch, wait_until


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("kvcoord") / "fast-ttl.json"
    cfg.write_text(json.dumps({"session_ttl_min": "1s"}))
    proc = launch("-config-file", str(cfg))
    yield proc
    proc.stop()


@pytest.fixture
def client(agent) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port, connections_timeout=15)


def create_session(client: consul.Consul, **body) -> str:
    return client.http.put(CB.json(is_id=True), "/v1/session/create", data=json.dumps(body))


def holder(client: consul.Consul, key: str) -> str | None:
    _, item = client.kv.get(key)
    return None if item is None else item.get("Session")


def test_unrenewed_ttl_session_expires_and_releases_its_lock(client) -> None:
    lapsing = create_session(client, Name="lapsing", TTL="1s", LockDelay="0s")
    renewed = create_session(client, Name="renewed", TTL="1s", LockDelay="0s")
    assert client.kv.put("ttl/a", "x", acquire=lapsing) is True
    assert client.kv.put("ttl/b", "y", acquire=renewed) is True
    t0 = time.monotonic()
    while holder(client, "ttl/a") is not None:
        assert time.monotonic() - t0 < 6, "TTL session was not expired within 2xTTL plus slack"
        client.session.renew(renewed)
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9, "expired before its TTL"
    _, info = client.session.info(lapsing)
    assert info is None
    # The renewed session lives on and still holds its lock.
    assert holder(client, "ttl/b") == renewed
    _, info = client.session.info(renewed)
    assert info["TTL"] == "1s"
    # The released key is free for another session at once (LockDelay 0).
    other = client.session.create(name="other", lock_delay=0)
    assert client.kv.put("ttl/a", "z", acquire=other) is True
    client.session.destroy(renewed)
    client.session.destroy(other)


def test_ttl_below_the_configured_minimum_is_refused(client) -> None:
    with pytest.raises(consul.ConsulException, match="Invalid Session TTL"):
        create_session(client, TTL="500ms")


def test_session_tied_to_a_check_is_invalidated_when_the_check_goes_critical(client) -> None:
    client.agent.service.register("locker", service_id="locker1", check=consul.Check.ttl("60s"))
    client.agent.check.ttl_pass("service:locker1")
    sid = client.session.create(name="tied", checks=["serfHealth", "service:locker1"], lock_delay=0)
    untied = client.session.create(name="untied", lock_delay=0)
    assert client.kv.put("tied/leader", "me", acquire=sid) is True
    client.agent.check.ttl_warn("service:locker1")
    assert holder(client, "tied/leader") == sid  # warning is not critical
    client.agent.check.ttl_fail("service:locker1")
    wait_until(lambda: holder(client, "tied/leader") is None, timeout=5)
    _, info = client.session.info(sid)
    assert info is None
    _, info = client.session.info(untied)
    assert info is not None
    # A session cannot be created on a critical check.
    with pytest.raises(consul.ConsulException, match="critical state"):
        client.session.create(checks=["service:locker1"])
    client.session.destroy(untied)
    client.agent.service.deregister("locker1")


def test_two_contending_clients_never_both_hold_the_lock(client, agent) -> None:
    key = "contend/lock"
    inside = 0
    max_inside = 0
    acquired = {0: 0, 1: 0}
    guard = threading.Lock()
    stop = time.monotonic() + 2.5
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        nonlocal inside, max_inside
        try:
            c = consul.Consul(host="127.0.0.1", port=agent.http_port, connections_timeout=15)
            rng = random.Random(n)
            sid = c.session.create(name=f"w{n}", lock_delay=0)
            while time.monotonic() < stop:
                if not c.kv.put(key, str(n), acquire=sid):
                    index, _ = c.kv.get(key)
                    c.kv.get(key, index=index, wait="1s")  # wait for a change, as clients do
                    continue
                with guard:
                    inside += 1
                    max_inside = max(max_inside, inside)
                    acquired[n] += 1
                _, item = c.kv.get(key)
                assert item["Session"] == sid
                time.sleep(0.005)
                with guard:
                    inside -= 1
                assert c.kv.put(key, str(n), release=sid) is True
                time.sleep(rng.random() * 0.005)  # "other work", so neither client starves the other
            c.session.destroy(sid)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert max_inside == 1
    assert acquired[0] > 0 and acquired[1] > 0


def test_lock_delay_blocks_reacquire_after_invalidation(client) -> None:
    a = client.session.create(name="a", lock_delay=1)
    b = client.session.create(name="b", lock_delay=0)
    assert client.kv.put("delay/k", "v", acquire=a) is True
    client.session.destroy(a)
    assert client.kv.put("delay/k", "v", acquire=b) is False
    wait_until(lambda: client.kv.put("delay/k", "v", acquire=b), timeout=4, interval=0.1)
    client.session.destroy(b)


def test_txn_with_failing_check_index_changes_nothing(client) -> None:
    client.kv.put("txn/a", "1")
    client.kv.put("txn/b", "2")
    index, item = client.kv.get("txn/a")
    ops = [
        {"KV": {"Verb": "set", "Key": "txn/a", "Value": "Y2hhbmdlZA=="}},
        {"KV": {"Verb": "delete", "Key": "txn/b"}},
        {"KV": {"Verb": "set", "Key": "txn/new", "Value": "bmV3"}},
        {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": item["ModifyIndex"] + 100}},
    ]
    with pytest.raises(consul.ConsulException) as exc:
        client.txn.put(ops)
    assert "409" in str(exc.value) and "OpIndex" in str(exc.value)
    assert client.kv.get("txn/a")[1]["Value"] == b"1"
    assert client.kv.get("txn/b")[1]["Value"] == b"2"
    assert client.kv.get("txn/new")[1] is None
    # The same txn with the right index commits, atomically.
    ops[3]["KV"]["Index"] = item["ModifyIndex"]
    ops[3], ops[0] = ops[0], ops[3]
    result = client.txn.put(ops)
    assert result["Errors"] is None and len(result["Results"]) == 3
    assert client.kv.get("txn/a")[1]["Value"] == b"changed"
    assert client.kv.get("txn/b")[1] is None


def test_txn_too_many_ops_is_413(agent) -> None:
    ops = [{"KV": {"Verb": "get", "Key": f"k{i}"}} for i in range(65)]
    status, _, body = agent.request("PUT", "/v1/txn", ops)
    assert status == 413 and b"too many operations" in body


def test_blocking_reads_wake_on_lock_release_and_session_destroy(client) -> None:
    sid = client.session.create(name="blocker", lock_delay=0)
    client.kv.put("wake/k", "v", acquire=sid)
    client.kv.put("wake/other", "v")
    kv_index, _ = client.kv.get("wake/k")
    s_index, _ = client.session.info(sid)
    got: dict = {}

    def watch_kv() -> None:
        got["kv"] = client.kv.get("wake/k", index=kv_index, wait="10s")

    def watch_session() -> None:
        got["session"] = client.session.info(sid, index=s_index, wait="10s")

    threads = [threading.Thread(target=watch_kv), threading.Thread(target=watch_session)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    client.kv.put("wake/other", "unrelated")
    time.sleep(0.3)
    assert all(t.is_alive() for t in threads), "woke on an unrelated write"
    client.session.destroy(sid)
    for t in threads:
        t.join(5)
    assert "Session" not in got["kv"][1] and int(got["kv"][0]) > int(kv_index)
    assert got["session"][1] is None


def test_session_list_node_and_renew_of_unknown(client) -> None:
    sid = client.session.create(name="listed", behavior="delete", lock_delay=0)
    _, sessions = client.session.list()
    assert sid in [s["ID"] for s in sessions]
    node = client.agent.self()["Config"]["NodeName"]
    _, on_node = client.session.node(node)
    assert sid in [s["ID"] for s in on_node]
    entry = next(s for s in on_node if s["ID"] == sid)
    assert entry["Behavior"] == "delete" and entry["LockDelay"] == 0
    client.session.destroy(sid)
    with pytest.raises(consul.NotFound):
        client.session.renew(sid)
    assert client.session.destroy(sid) is True  # idempotent


def test_user_events_fire_list_and_blocking_list(client) -> None:
    index, _ = client.event.list(name="deploy")
    got: dict = {}

    def waiter() -> None:
        got["r"] = client.event.list(name="deploy", index=index, wait="10s")

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    assert client.event.fire("deploy", "v42")
    t.join(5)
    new_index, events = got["r"]
    assert new_index != index and events[-1]["Name"] == "deploy"
    assert events[-1]["Payload"] == b"v42"


def test_snapshot_save_and_restore_roundtrip(agent, client) -> None:
    client.kv.put("snap/keep", "before")
    status, headers, archive = agent.request("GET", "/v1/snapshot")
    assert status == 200 and int(headers["X-Consul-Index"]) > 0
    client.kv.put("snap/keep", "after")
    client.kv.put("snap/extra", "x")
    index, _ = client.kv.get("snap/extra")
    assert agent.request("PUT", "/v1/snapshot", archive)[0] == 200
    assert client.kv.get("snap/keep")[1]["Value"] == b"before"
    assert client.kv.get("snap/extra")[1] is None
    # Writes after a restore get indexes above everything seen before it.
    client.kv.put("snap/later", "y")
    assert int(client.kv.get("snap/later")[0]) > int(index)
    corrupt = archive[:-20] + bytes(20)
    status, _, body = agent.request("PUT", "/v1/snapshot", corrupt)
    assert status == 400 and b"Invalid snapshot" in body


def test_rolled_back_txn_does_not_wake_a_watcher_of_its_keys(client) -> None:
    client.kv.put("quiet/k", "v")
    index, _ = client.kv.get("quiet/k")
    got: dict = {}

    def waiter() -> None:
        got["r"] = client.kv.get("quiet/k", index=index, wait="2s")

    t = threading.Thread(target=waiter)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.2)
    with pytest.raises(consul.ConsulException):
        client.txn.put([{"KV": {"Verb": "set", "Key": "quiet/k", "Value": "bm8="}},
                        {"KV": {"Verb": "check-not-exists", "Key": "quiet/k"}}])
    t.join(5)
    assert time.monotonic() - t0 >= 1.9, "a rolled-back txn woke the watcher"
    assert got["r"][0] == index and got["r"][1]["Value"] == b"v"


def test_snapshot_restore_survives_an_agent_restart(start_agent, tmp_path) -> None:
    data_dir = str(tmp_path / "data")
    first = start_agent("-data-dir", data_dir)
    first.request("PUT", "/v1/kv/durable/k", "before")
    status, _, archive = first.request("GET", "/v1/snapshot")
    assert status == 200
    first.request("PUT", "/v1/kv/durable/k", "after")
    assert first.request("PUT", "/v1/snapshot", archive)[0] == 200
    assert first.stop() == 0
    second = start_agent("-data-dir", data_dir)
    status, _, body = second.request("GET", "/v1/kv/durable/k?raw")
    assert status == 200 and body == b"before"


def test_txn_catalog_ops_and_read_only_txn(client, agent) -> None:
    result = client.txn.put([
        {"Node": {"Verb": "set", "Node": {"Node": "txn-node", "Address": "10.9.9.9"}}},
        {"Service": {"Verb": "set", "Node": "txn-node", "Service": {"ID": "tdb1", "Service": "tdb", "Port": 5432}}},
        {"Check": {"Verb": "set", "Check": {"Node": "txn-node", "CheckID": "tdb-alive", "Status": "passing",
                                            "ServiceID": "tdb1"}}},
        {"KV": {"Verb": "set", "Key": "txn/cat", "Value": "eA=="}},
    ])
    assert [next(iter(r)) for r in result["Results"]] == ["Node", "Service", "Check", "KV"]
    assert result["Results"][1]["Service"]["Port"] == 5432
    _, nodes = client.health.service("tdb")
    assert [n["Node"]["Node"] for n in nodes] == ["txn-node"]
    index_before = agent.request("GET", "/v1/kv/txn/cat")[1]["X-Consul-Index"]
    status, headers, body = agent.request("PUT", "/v1/txn", [
        {"KV": {"Verb": "get", "Key": "txn/cat"}}, {"Node": {"Verb": "get", "Node": {"Node": "txn-node"}}}])
    assert status == 200 and headers["X-Consul-KnownLeader"] == "true"
    got = json.loads(body)["Results"]
    assert got[0]["KV"]["Value"] == "eA==" and got[1]["Node"]["Address"] == "10.9.9.9"
    assert agent.request("GET", "/v1/kv/txn/cat")[1]["X-Consul-Index"] == index_before
    status, _, body = agent.request("PUT", "/v1/txn", [{"KV": {"Verb": "explode", "Key": "x"}}])
    assert status == 400
    client.txn.put([{"Node": {"Verb": "delete", "Node": {"Node": "txn-node"}}}])
    _, nodes = client.health.service("tdb")
    assert nodes == []


def test_sessions_locks_and_txn_replay_after_restart(start_agent, tmp_path) -> None:
    data_dir = str(tmp_path / "data")
    first = start_agent("-data-dir", data_dir)
    c1 = consul.Consul(host="127.0.0.1", port=first.http_port, connections_timeout=15)
    sid = c1.session.create(name="durable", lock_delay=0)
    result = c1.txn.put([{"KV": {"Verb": "lock", "Key": "dur/lock", "Session": sid, "Value": "AAH/"}},
                         {"KV": {"Verb": "set", "Key": "dur/plain", "Value": "cA=="}}])
    assert result["Errors"] is None
    gone = c1.session.create(name="gone")
    c1.session.destroy(gone)
    assert first.stop() == 0
    second = start_agent("-data-dir", data_dir)
    c2 = consul.Consul(host="127.0.0.1", port=second.http_port, connections_timeout=15)
    _, entry = c2.kv.get("dur/lock")
    assert entry["Session"] == sid and entry["Value"] == b"\x00\x01\xff" and entry["LockIndex"] == 1
    _, sessions = c2.session.list()
    assert [s["ID"] for s in sessions] == [sid]
