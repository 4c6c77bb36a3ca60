"""Containers reach the agent: `beacon agent -dev` with its engine; from inside a runc container,
`nslookup web.service.consul` and an HTTP GET of the catalog through the bridge gateway succeed.

All traffic stays inside namespaces the engine made (the container's and the hub's) and host loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import launch

from .helpers import DOCKER, RUNC, RUNC_REASON, beacon_env, ensure_busybox

pytestmark = pytest.mark.skipif(not RUNC, reason=RUNC_REASON)


def test_container_resolves_and_calls_the_agent_through_the_gateway(tmp_path: Path) -> None:
    sock = str(tmp_path / "engine.sock")
    agent = launch("-engine-socket", sock, "-data-dir", str(tmp_path / "data"), "-no-registrator")
    host = f"unix://{sock}"

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True, timeout=60,
                              env=beacon_env())

    try:
        ensure_busybox(host, tmp_path)
        agent.json("PUT", "/v1/agent/service/register", {"Name": "web", "Address": "10.9.8.7", "Port": 8000})
        gateway = "10.213.0.1"
        resolv = docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf")
        assert f"nameserver {gateway}" in resolv.stdout, resolv
        # The route to the gateway goes through the container's own veth (network rule).
        route = docker("run", "--rm", "busybox", "ip", "route", "get", gateway)
        assert "dev eth0" in route.stdout, route
        looked = docker("run", "--rm", "busybox", "nslookup", "web.service.consul")
        assert looked.returncode == 0 and "10.9.8.7" in looked.stdout, looked
        got = docker("run", "--rm", "busybox", "wget", "-qO-", f"http://{gateway}:8500/v1/catalog/services")
        assert got.returncode == 0 and '"web"' in got.stdout, got
        none = docker("run", "--rm", "--network", "none", "busybox", "wget", "-qO-",
                      f"http://{gateway}:8500/v1/catalog/services")
        assert none.returncode == 1 and "unreachable" in none.stderr, none  # no way out without the bridge
    finally:
        agent.stop()
