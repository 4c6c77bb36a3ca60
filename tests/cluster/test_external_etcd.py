"""-etcd-endpoints: servers use an etcd cluster the operator runs and start no member of their own;
and a server without an etcd binary says so and exits."""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from tests.cluster.conftest import external_etcd_servers
from tests.conftest import beacon_cmd, beacon_env, wait_until

pytestmark = pytest.mark.integration


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
    with external_etcd_servers(tmp_path, ("e1", "e2")) as agents:
        a, b = agents
        wait_until(lambda: a.request("PUT", "/v1/kv/shared", "yes", timeout=10)[2] == b"true", timeout=30)
        status, _, body = b.request("GET", "/v1/kv/shared?raw&consistent", timeout=10)
        assert status == 200 and body == b"yes"
        assert all("etcd" not in _children(x.proc.pid) for x in agents)  # no etcd member of their own
        assert not os.path.exists(tmp_path / "e1" / "etcd")


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
