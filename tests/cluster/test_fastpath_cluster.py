"""The fast read path on servers of a cluster: a default-mode read waits for the log's linearizable
read first (one barrier per burst of requests), so a write acknowledged by one server is seen by a
fast read on another; answers equal aiohttp's path byte for byte (but Date)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.cluster.conftest import external_etcd_servers
from tests.conftest import wait_until
from tests.integration.test_fastpath import Conn, both, fast_answers, request, without_date

pytestmark = pytest.mark.integration


def test_fast_reads_on_a_cluster_server_see_every_acknowledged_write(tmp_path) -> None:
    with external_etcd_servers(tmp_path, ("f1", "f2")) as agents:
        a, b = agents
        wait_until(lambda: a.request("PUT", "/v1/kv/lin", "0", timeout=10)[2] == b"true", timeout=30)
        wait_until(lambda: b.request("GET", "/v1/kv/lin?raw", timeout=10)[2] == b"0", timeout=30)
        before, writes_before = fast_answers(b), fast_answers(a)
        conn, writer = Conn(b), Conn(a)
        for i in range(1, 21):  # written through a's fast write path, read at once through b's: never stale
            writer.send("/v1/kv/lin", method="PUT", body=str(i).encode())
            assert writer.read()[2] == b"true"
            status, _, body = conn.call("/v1/kv/lin")
            assert status == b"HTTP/1.1 200 OK" and base64.b64decode(json.loads(body)[0]["Value"]) == str(i).encode()
        assert fast_answers(a) - writes_before == 20
        writer.close()
        # A burst shares barriers and still answers in order.
        conn.sock.sendall(b"".join(request("/v1/kv/lin" if n % 2 else "/v1/kv/nope") for n in range(20)))
        burst = [conn.read() for _ in range(20)]
        assert [s for s, _, _ in burst] == [b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"] * 10
        assert fast_answers(b) - before == 40
        # Each target is read twice (fast, then aiohttp): the catalog must hold still in between, so
        # first the leader's reconcile has registered it as "consul" (it may run late on a busy
        # machine; the two servers share etcd but not a gossip pool, so the leader is the only one).
        wait_until(lambda: len(json.loads(b.request("GET", "/v1/health/service/consul?passing")[2])) == 1,
                   timeout=30)
        for target in ("/v1/kv/lin", "/v1/kv/nope", "/v1/kv/lin?stale", "/v1/kv/lin?consistent",
                       "/v1/catalog/services", "/v1/health/service/consul"):
            both(b, target)
        # A blocking read parked on b's fast path wakes on a write through a.
        index = dict(conn.call("/v1/kv/lin")[1])[b"X-Consul-Index"].decode()
        conn.send(f"/v1/kv/lin?index={index}&wait=30s")
        wait_until(lambda: b.request("GET", "/v1/agent/metrics?format=prometheus")[2].find(
            b"\nbeacon_http_blocking_queries 1.0") >= 0, timeout=20)
        assert a.request("PUT", "/v1/kv/lin", "woken", timeout=10)[2] == b"true"
        woken = conn.read()
        assert base64.b64decode(json.loads(woken[2])[0]["Value"]) == b"woken"
        assert without_date(woken)[0] == b"HTTP/1.1 200 OK"
        conn.close()
