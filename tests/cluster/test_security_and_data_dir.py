"""Cluster key, bind refusal, and damaged data dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
        rpc = f"http://{c.addr('s1')}:8303/rpc/apply"
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
        rpc = f"http://{c.addr('s1')}:8303/rpc/nosuch"
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(rpc, data=b"{}", method="POST"), timeout=5)
        assert exc.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(f"http://{c.addr('s1')}:8303/rpc/apply",
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


class _Pwn:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _listening_ports(pids: set[int]) -> set[tuple[str, int]]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10).stdout
    found = set()
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found.add((host.strip("[]"), int(port)))
    return found


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def test_a_pickle_payload_sent_to_every_tcp_port_of_a_server_executes_nothing(tmp_path) -> None:
    import pickle
    import socket

    c = start_cluster(tmp_path, clients=0)
    try:
        s1 = c.servers["s1"]
        pids = {s1.proc.pid} | _children(s1.proc.pid)
        ports = _listening_ports(pids)
        # HTTP, DNS over TCP, the cluster RPC port, etcd's peer port and its private client port
        assert len(ports) >= 5, ports
        marker = str(tmp_path / "pwned")
        payload = pickle.dumps(_Pwn(marker))
        for host, port in sorted(ports):
            for data in (payload, b"POST /rpc/apply HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
                         + payload, b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(payload) + payload):
                try:
                    with socket.create_connection((host, port), timeout=3) as sock:
                        sock.sendall(data)
                        sock.settimeout(2)
                        try:
                            sock.recv(4096)
                        except OSError:
                            pass
                except OSError:
                    pass
        assert not os.path.exists(marker)
        assert s1.proc.poll() is None
        assert s1.request("PUT", "/v1/kv/still", "alive", timeout=10)[2] == b"true"
        assert not os.path.exists(marker)
    finally:
        c.stop_all()


def test_the_cluster_rpc_port_refuses_callers_without_the_key_or_of_another_user(tmp_path) -> None:
    c = start_cluster(tmp_path, clients=0)
    try:
        wait_until(lambda: len(json.loads(c.servers["s1"].request("GET", "/v1/status/peers")[2])) == 3, timeout=10)
        peers_before = sorted(json.loads(c.servers["s1"].request("GET", "/v1/status/peers")[2]))
        victim = f"{c.addr('s2')}:8300"
        script = ("import urllib.request,urllib.error,sys\n"
                  f"req=urllib.request.Request('http://{c.addr('s1')}:8303/rpc/raft_remove',"
                  f"data=b'{{\"raft_addr\": \"{victim}\"}}',method='POST')\n"
                  "try:\n urllib.request.urlopen(req,timeout=5); print(200)\n"
                  "except urllib.error.HTTPError as e: print(e.code)\n")
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                            script], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "403", (r.stdout, r.stderr)
        assert sorted(json.loads(c.servers["s1"].request("GET", "/v1/status/peers")[2])) == peers_before
        # the same call from this agent's own user is accepted (the check is armed, not a blanket refusal)
        r = subprocess.run([sys.executable, "-c", script.replace("raft_remove", "nosuch")],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "404", (r.stdout, r.stderr)
    finally:
        c.stop_all()
