"""PUT /v1/snapshot on a 3-server cluster with a state far over etcd's 1.5 MiB request limit: every
server serves the restored state, a kill -9'd server restarts with it, and nothing of the state
before the restore is left (the restore replaced it whole, as one step of the log)."""

from __future__ import annotations

import json
import os
import signal

from beacon.server import commands as cmd
from beacon.server.archive import write_archive
from beacon.server.durable import encode
from beacon.server.fsm import StateStore
from tests.cluster.conftest import start_cluster
from tests.conftest import wait_until

INSTANCES = 20_000
SERVICES = 200
BLOBS = 300  # incompressible KV values: the state takes several 1 MiB chunks in etcd, not one


def _archive() -> bytes:
    store = StateStore()
    for i in range(INSTANCES):
        result = store.apply(cmd.Register(
            node=f"node-{i % 1000}", address=f"10.1.{i % 1000 // 250}.{i % 250}",
            service={"id": f"svc-{i % SERVICES}-{i}", "service": f"svc-{i % SERVICES}", "port": 1000 + i % 5000}))
        assert result.error is None
    for i in range(BLOBS):
        store.apply(cmd.KVSet(key=f"blob/{i:04d}", value=os.urandom(8192)))
    store.apply(cmd.KVSet(key="restored/marker", value=b"yes"))
    snap = store.snapshot()
    assert len(encode(snap)) > 3 * 1024 * 1024  # two etcd requests' worth even before base64
    return write_archive(snap)


def _has_restored_state(agent, mode: str) -> bool:
    try:
        status, _, body = agent.request("GET", f"/v1/kv/restored/marker?raw&{mode}", timeout=10)
        if status != 200 or body != b"yes":
            return False
        status, _, body = agent.request("GET", f"/v1/catalog/services?{mode}", timeout=10)
        services = json.loads(body)
        status2, _, body2 = agent.request("GET", f"/v1/catalog/service/svc-7?{mode}", timeout=10)
        status3, _, body3 = agent.request("GET", f"/v1/kv/before?{mode}", timeout=10)
    except (OSError, ValueError):
        return False
    return (status == 200 and len([s for s in services if s.startswith("svc-")]) == SERVICES
            and status2 == 200 and len(json.loads(body2)) == INSTANCES // SERVICES
            and status3 == 404)  # the state before the restore is gone


def test_restore_larger_than_an_etcd_request_reaches_every_server_and_survives_a_restart(tmp_path) -> None:
    archive = _archive()
    c = start_cluster(tmp_path, clients=0)
    try:
        s1, s2, s3 = (c.servers[n] for n in ("s1", "s2", "s3"))
        assert s2.request("PUT", "/v1/kv/before", "old")[0] == 200
        assert _has_restored_state(s1, "stale") is False  # the check can fail: not restored yet

        status, _, body = s1.request("PUT", "/v1/snapshot", archive, timeout=60)
        assert status == 200, body
        assert _has_restored_state(s2, "consistent")
        for agent in (s1, s2, s3):  # each server's own state, once it has applied the log entry
            wait_until(lambda a=agent: _has_restored_state(a, "stale"), timeout=30)

        # A crashed server replays the log (the restore entry reads its chunks again) on restart.
        c.signal("s3", signal.SIGKILL)
        s3.proc.wait(10)
        s3 = c.start_server("s3")
        wait_until(lambda: _has_restored_state(s3, "stale"), timeout=60)
        assert s3.request("PUT", "/v1/kv/after", "new", timeout=20)[0] == 200  # the log goes on
        assert _has_restored_state(s3, "consistent")
    finally:
        c.stop_all()
