"""-etcd-endpoints: servers use an etcd cluster the operator runs and start no member of their own;
and a server without an etcd binary says so and exits."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess

import pytest

from tests.conftest import beacon_cmd, beacon_env, launch, wait_until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[str]:
    """The names of a process's children (its Serf agents are expected; an etcd is not)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            pids = f.read().split()
    except OSError:
        return []
    names = []
    for child in pids:
        try:
            with open(f"/proc/{child}/comm", encoding="ascii") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return names


def test_servers_share_an_external_etcd_and_start_no_member(tmp_path) -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    cport, pport = _free_port(), _free_port()
    etcd = subprocess.Popen(
        ["etcd", "--name", "ext", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{cport}", "--advertise-client-urls", f"http://127.0.0.1:{cport}",
         "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"ext=http://127.0.0.1:{pport}", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents = []
    try:
        block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
        for i, name in enumerate(("e1", "e2"), 1):
            agents.append(launch("-server", "-node", name, "-data-dir", str(tmp_path / name),
                                 "-bind", f"{block}.{i}", "-client", f"{block}.{i}",
                                 "-etcd-endpoints", f"http://127.0.0.1:{cport}", dev=False))
        a, b = agents
        wait_until(lambda: a.request("PUT", "/v1/kv/shared", "yes", timeout=10)[2] == b"true", timeout=30)
        status, _, body = b.request("GET", "/v1/kv/shared?raw&consistent", timeout=10)
        assert status == 200 and body == b"yes"
        assert all("etcd" not in _children(x.proc.pid) for x in agents)  # no etcd member of their own
        assert not os.path.exists(tmp_path / "e1" / "etcd")
    finally:
        for x in agents:
            x.stop()
        etcd.kill()
        etcd.wait(10)


def test_a_server_without_etcd_says_so_and_exits(tmp_path) -> None:
    # An address of its own: the default ports on 127.0.0.1 may be held by other agents on this host.
    bind = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(2, 250)}"
    r = subprocess.run(beacon_cmd("agent", "-server", "-bootstrap-expect", "3", "-retry-join", "127.0.0.2",
                                  "-bind", bind,
                                  "-data-dir", str(tmp_path), "-etcd-bin", str(tmp_path / "no-etcd"),
                                  "-http-port", "0", "-dns-port", "-1"),
                       capture_output=True, text=True, env=beacon_env(), timeout=60)
    assert r.returncode != 0
    assert "etcd not found at" in r.stdout + r.stderr
