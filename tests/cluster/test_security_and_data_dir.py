"""Cluster key, bind refusal, and damaged data dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.cluster.conftest import start_cluster
from tests.conftest import beacon_cmd, beacon_env, launch, wait_until


def keygen() -> str:
    r = subprocess.run(beacon_cmd("keygen"), capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 0
    return r.stdout.strip()


@pytest.mark.parametrize("flags", [("-bind", "10.99.0.1"), ("-bind", "127.0.0.1", "-advertise", "10.99.0.1")])
def test_non_loopback_bind_or_advertise_without_tls_material_is_refused_with_the_reason(tmp_path, flags) -> None:
    r = subprocess.run(beacon_cmd("agent", "-server", "-data-dir", str(tmp_path), *flags),
                       capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1
    assert "10.99.0.1 is not a loopback address" in r.stderr and "no TLS material" in r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "etcd"))  # refused before starting anything


def test_bad_keys_are_rejected(tmp_path) -> None:
    r = subprocess.run(beacon_cmd("agent", "-server", "-data-dir", str(tmp_path), "-encrypt", "not base64!"),
                       capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1 and "-encrypt" in r.stderr


def test_encrypted_cluster_works_and_refuses_unauthenticated_rpc(tmp_path) -> None:
    key = keygen()
    assert len(key) == 44
    c = start_cluster(tmp_path, clients=1, extra=("-encrypt", key))
    try:
        c1 = c.clients["c1"]
        assert c1.request("PUT", "/v1/kv/secret", "v")[0] == 200
        s2 = c.servers["s2"]
        wait_until(lambda: s2.request("GET", "/v1/kv/secret?stale")[0] == 200, timeout=10)
        # an RPC without the key: refused, and the listener keeps serving
        rpc = f"http://{c.addr('s1')}:8301/rpc/apply"
        body = json.dumps({"command": json.dumps([3, {"op": "set", "key": "evil", "value": None}])}).encode()
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(rpc, data=body, method="POST"), timeout=5)
        assert exc.value.code == 403
        assert c.servers["s1"].request("GET", "/v1/kv/evil?stale")[0] == 404
        # a server with another key is refused by every agent and never joins
        other = keygen()
        flags = [other if f == key else f for f in c.server_flags("s4")]
        intruder = launch(*flags, dev=False)
        try:
            import time

            time.sleep(4)
            peers = json.loads(c.servers["s1"].request("GET", "/v1/status/peers")[2])
            assert len(peers) == 3 and f"{c.addr('s4')}:8300" not in peers
            members = json.loads(c.servers["s1"].request("GET", "/v1/agent/members")[2])
            assert "s4" not in {m["Name"] for m in members}
        finally:
            intruder.stop(signal.SIGKILL)
    finally:
        c.stop_all()


def test_unauthenticated_rpc_on_an_unencrypted_loopback_cluster_is_still_validated(tmp_path) -> None:
    c = start_cluster(tmp_path, clients=0)
    try:
        rpc = f"http://{c.addr('s1')}:8301/rpc/nosuch"
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(rpc, data=b"{}", method="POST"), timeout=5)
        assert exc.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(f"http://{c.addr('s1')}:8301/rpc/apply",
                                                          data=b"garbage", method="POST"), timeout=5)
        assert exc.value.code in (403, 500)
        assert c.servers["s1"].request("GET", "/v1/status/leader")[0] == 200
    finally:
        c.stop_all()


def test_single_server_data_dir_corruption_is_reported(tmp_path) -> None:
    d = str(tmp_path / "d")
    a = launch("-data-dir", d)
    a.request("PUT", "/v1/kv/x", "1")
    a.stop(signal.SIGKILL)
    log = os.path.join(d, "server", "commands.log")
    data = bytearray(open(log, "rb").read())
    data[12] ^= 0xFF
    for _ in range(3):
        data += data[: len(data) // 2]  # valid-looking records after the damage
    open(log, "wb").write(bytes(data))
    r = subprocess.run(beacon_cmd("agent", "-dev", "-data-dir", d, "-http-port", "0", "-dns-port", "-1",
                                  "-no-engine"), capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1 and "corrupt" in r.stderr
