"""POST /v1/operator/raft/transfer-leader: leader duties move to the named server, or to another one,
whichever server takes the request (py-consul's operator.raft_transfer_leader)."""

from __future__ import annotations

import json
import re
import time
import urllib.request

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


def _etcd_client_url(agent) -> str:
    for line in agent.lines:
        m = re.search(r"etcd member \S+ started \(pid \d+, peer \S+, client (http\S+)\)", line)
        if m:
            return m.group(1)
    raise AssertionError("no etcd member start line in the agent's log")


def _etcd(url: str, path: str, body: dict) -> dict:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v3/{path}", json.dumps(body).encode()),
                                timeout=5) as resp:
        return json.loads(resp.read())


def test_leader_duties_leave_a_server_as_soon_as_its_member_becomes_the_etcd_leader(tmp_path) -> None:
    """A crash of the server holding both the etcd leadership and Beacon's leader key costs an etcd
    election plus the lease TTL (~5 s) instead of one of them (~2.5 s): Beacon's leader hands its key
    over at its next round once etcd leadership moves onto its member, even a leader of one second
    (the window right after a rolling restart, which the fault suite's 5 s failover case hits)."""
    c = start_cluster(tmp_path, clients=0)
    try:
        old = c.leader()
        # A fresh leader through a hand-over, so that it has held the key for under a second.
        assert c.servers[old].request("POST", "/v1/operator/raft/transfer-leader")[0] == 200
        fresh = wait_until(lambda: (n := leader_name(c)) not in (None, old) and n, timeout=15)
        urls = {n: _etcd_client_url(c.servers[n]) for n in ("s1", "s2", "s3")}
        ids = {m["name"]: m["ID"] for m in _etcd(urls["s1"], "cluster/member/list", {})["members"]}
        status = _etcd(urls["s1"], "maintenance/status", {})
        etcd_leader = next(n for n, i in ids.items() if i == status["leader"])
        if etcd_leader != fresh:  # move etcd leadership onto the fresh Beacon leader's member
            _etcd(urls[etcd_leader], "maintenance/transfer-leadership", {"targetID": ids[fresh]})
        moved = time.monotonic()
        assert _etcd(urls[fresh], "maintenance/status", {})["leader"] == ids[fresh]
        # armed: the fresh leader's member is the etcd leader now; the duties leave it
        wait_until(lambda: any("hands leadership over: its etcd member is the etcd leader" in line
                               for line in c.servers[fresh].lines), timeout=15, interval=0.05)
        handed = time.monotonic() - moved
        assert handed < 3.0, f"the co-located leader kept its duties for {handed:.1f}s"
        assert wait_until(lambda: (n := leader_name(c)) not in (None, fresh) and n, timeout=15)
        assert c.servers[fresh].request("PUT", "/v1/kv/after-handover", b"1")[0] == 200
    finally:
        c.stop_all()
