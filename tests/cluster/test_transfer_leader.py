"""POST /v1/operator/raft/transfer-leader: leader duties move to the named server, or to another one,
whichever server takes the request (py-consul's operator.raft_transfer_leader)."""

from __future__ import annotations

import json

import consul

from tests.cluster.conftest import start_cluster
from tests.conftest import wait_until


def leader_name(cluster) -> str | None:
    for agent in cluster.running().values():
        status, _, body = agent.request("GET", "/v1/operator/raft/configuration", timeout=5)
        if status == 200:
            doc = json.loads(body)
            assert isinstance(doc["Index"], int) and doc["Index"] > 0  # Consul's shape carries the index
            servers = doc["Servers"]
            leaders = [s["Node"] for s in servers if s["Leader"]]
            return leaders[0] if leaders else None
    return None


def test_transfer_leader_to_a_named_server_and_to_any(tmp_path) -> None:
    c = start_cluster(tmp_path, clients=0)
    try:
        old = c.leader()
        target = next(n for n in ("s1", "s2", "s3") if n != old)
        # Sent to a follower that is not the target: it passes the request on to the leader.
        via = next(n for n in ("s1", "s2", "s3") if n not in (old, target))
        client = consul.Consul(host=c.servers[via].host, port=c.servers[via].http_port)
        assert client.operator.raft_transfer_leader(peer_id=target) is True
        wait_until(lambda: leader_name(c) == target, timeout=15)
        assert c.leader() == target
        # The cluster still takes writes under its new leader.
        assert c.servers[via].request("PUT", "/v1/kv/after-transfer", b"1")[0] == 200

        # No id: any other server takes over.
        status, _, body = c.servers[target].request("POST", "/v1/operator/raft/transfer-leader")
        assert (status, json.loads(body)) == (200, {"Success": True})
        wait_until(lambda: leader_name(c) not in (None, target), timeout=15)

        status, _, body = c.servers[via].request("POST", "/v1/operator/raft/transfer-leader?id=nosuch")
        assert status == 400 and b"cannot find server" in body
    finally:
        c.stop_all()
