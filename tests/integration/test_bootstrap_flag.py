"""Consul's `-bootstrap -server` starts a single server (tools start Consul that way)."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import beacon_cmd, beacon_env, wait_until


def test_bootstrap_server_starts_a_single_server(start_agent, tmp_path) -> None:
    agent = start_agent("-server", "-bootstrap", "-node", "boot1", "-data-dir", str(tmp_path / "d"), dev=False)

    def leader() -> str:
        status, _, body = agent.request("GET", "/v1/status/leader")
        return json.loads(body) if status == 200 else ""

    assert wait_until(leader, timeout=20)
    self_cfg = agent.json("GET", "/v1/agent/self")["Config"]
    assert self_cfg["Server"] is True and self_cfg["NodeName"] == "boot1"
    status, _, _ = agent.request("PUT", "/v1/kv/booted", b"yes")
    assert status == 200


def test_bootstrap_flag_is_checked_like_consul(tmp_path) -> None:
    for flags, message in ((["-bootstrap"], "bootstrap requires server mode"),
                           (["-server", "-bootstrap", "-bootstrap-expect", "3"], "mutually exclusive")):
        out = subprocess.run(beacon_cmd("agent", *flags, "-data-dir", str(tmp_path), "-http-port", "0",
                                        "-dns-port", "-1"), env=beacon_env(), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode != 0
        assert message in out.stdout + out.stderr
