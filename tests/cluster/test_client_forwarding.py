"""What a client agent adds when it forwards to the servers: intentions and connect authorize are the
servers', sessions are its own node's, and a blocking query that has to move to another server keeps
its original deadline."""

from __future__ import annotations

import json
import signal
import threading
import time

from tests.cluster.conftest import Cluster
from tests.conftest import wait_until


def jget(agent, path: str):
    status, headers, body = agent.request("GET", path, timeout=15)
    return status, headers, (json.loads(body) if body.strip() else None)


def test_intentions_and_authorize_through_a_client_are_answered_by_the_servers(cluster: Cluster) -> None:
    c2, s1 = cluster.clients["c2"], cluster.servers["s1"]
    status, _, body = c2.request("PUT", "/v1/connect/intentions/exact?source=web&destination=db", {"Action": "deny"})
    assert (status, body.strip()) == (200, b"true")
    assert jget(s1, "/v1/connect/intentions/exact?source=web&destination=db")[2]["Action"] == "deny"
    assert jget(c2, "/v1/connect/intentions/check?source=web&destination=db")[2] == {"Allowed": False}
    status, _, body = c2.request("POST", "/v1/agent/connect/authorize",
                                 {"Target": "db", "ClientCertURI": "spiffe://t.consul/ns/default/dc/dc1/svc/web"})
    assert status == 200 and json.loads(body)["Authorized"] is False, body
    # The CA's roots and a leaf through the client: the servers' one root signs it.
    roots = jget(c2, "/v1/agent/connect/ca/roots")[2]
    assert roots == jget(s1, "/v1/connect/ca/roots")[2] and len(roots["Roots"]) == 1
    leaf = jget(c2, "/v1/agent/connect/ca/leaf/web")[2]
    assert leaf["ServiceURI"] == f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"


def test_a_session_made_through_a_client_is_the_clients_and_dies_with_it(cluster: Cluster) -> None:
    c1, s1 = cluster.clients["c1"], cluster.servers["s1"]
    # The leader registers a joined node's serfHealth from gossip; a session needs it (as in Consul).
    wait_until(lambda: any(c["CheckID"] == "serfHealth" and c["Status"] == "passing"
                           for c in jget(s1, "/v1/health/node/c1")[2] or []), timeout=20)
    status, _, body = c1.request("PUT", "/v1/session/create", {"Name": "worker", "LockDelay": "0s"})
    assert status == 200, body
    sid = json.loads(body)["ID"]
    info = jget(s1, f"/v1/session/info/{sid}")[2]
    assert info[0]["Node"] == "c1"
    assert info[0]["NodeChecks"] == ["serfHealth"]
    status, _, body = c1.request("PUT", f"/v1/kv/locks/job?acquire={sid}", b"c1 holds it")
    assert (status, body.strip()) == (200, b"true")
    assert jget(s1, "/v1/kv/locks/job")[2][0]["Session"] == sid

    c1.stop(signal.SIGKILL)  # its serfHealth goes critical, which invalidates its sessions

    def released() -> bool:
        entry = jget(s1, "/v1/kv/locks/job")[2]
        return bool(entry) and "Session" not in entry[0]
    wait_until(released, timeout=20)
    assert jget(s1, f"/v1/session/info/{sid}")[2] in ([], None)


def test_a_forwarded_blocking_query_moved_to_another_server_keeps_its_deadline(cluster: Cluster) -> None:
    c2 = cluster.clients["c2"]
    status, headers, _ = c2.request("PUT", "/v1/kv/blocked", b"v")
    assert status == 200
    status, headers, _ = c2.request("GET", "/v1/kv/blocked")
    index = headers["X-Consul-Index"]
    leader = cluster.leader()
    result: dict[str, object] = {}

    def block() -> None:
        t0 = time.monotonic()
        result["status"] = c2.request("GET", f"/v1/kv/blocked?stale&index={index}&wait=4s", timeout=30)[0]
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=block)
    t.start()
    time.sleep(1.5)  # let the query settle on the leader; then take the leader away
    cluster.servers[leader].stop(signal.SIGKILL)
    t.join(30)
    assert result["status"] == 200
    # Moved to a follower with what was left of the 4 s (plus Consul's wait/16 jitter), not 4 s again.
    assert result["elapsed"] < 4 + 4 / 16 + 0.9, result
