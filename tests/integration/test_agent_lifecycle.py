"""Agent start-up, config files, persistence across kill -9, clean shutdown on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import yaml

from tests.conftest import beacon_cmd, beacon_env


def test_sigterm_and_sigint_shut_down_cleanly(start_agent) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        agent = start_agent()
        assert agent.stop(sig) == 0
        assert "==> Beacon agent stopped" in agent.lines[-1] or any("stopped" in line for line in agent.lines)


def test_pid_file_written_and_removed(start_agent, tmp_path) -> None:
    pid_file = tmp_path / "agent.pid"
    agent = start_agent("-pid-file", str(pid_file))
    assert int(pid_file.read_text()) == agent.proc.pid
    agent.stop()
    assert not pid_file.exists()


def test_flag_forms_are_equivalent(start_agent) -> None:
    agent = start_agent("-node=alpha", "--datacenter", "DC7", "-domain", "example.")
    me = agent.json("GET", "/v1/agent/self")
    assert me["Config"]["NodeName"] == "alpha" and me["Config"]["Datacenter"] == "dc7"


def test_acknowledged_writes_survive_kill_9(start_agent, tmp_path) -> None:
    data_dir = str(tmp_path / "data")
    agent = start_agent("-data-dir", data_dir, "-node", "persist")
    for i in range(30):
        assert agent.json("PUT", f"/v1/kv/p/{i}", f"value-{i}") is True
    agent.json("PUT", "/v1/agent/service/register", {"Name": "keepme", "Port": 1234, "Check": {"TTL": "1h"}})
    agent.json("PUT", "/v1/agent/maintenance?enable=true&reason=r")
    agent.stop(signal.SIGKILL)
    agent2 = start_agent("-data-dir", data_dir, "-node", "persist")
    entries = agent2.json("GET", "/v1/kv/p/?recurse")
    assert len(entries) == 30
    assert agent2.json("GET", "/v1/agent/service/keepme")["Port"] == 1234
    checks = agent2.json("GET", "/v1/agent/checks")
    assert "service:keepme" in checks and "_node_maintenance" in checks
    catalog = agent2.json("GET", "/v1/catalog/service/keepme")
    assert len(catalog) == 1


def test_node_id_is_stable_across_restarts(start_agent, tmp_path) -> None:
    data_dir = str(tmp_path / "d")
    a = start_agent("-data-dir", data_dir)
    first = a.json("GET", "/v1/agent/self")["Config"]["NodeID"]
    a.stop()
    b = start_agent("-data-dir", data_dir)
    assert b.json("GET", "/v1/agent/self")["Config"]["NodeID"] == first


def test_without_data_dir_dev_state_is_in_memory(start_agent) -> None:
    a = start_agent()
    a.json("PUT", "/v1/kv/ephemeral", "x")
    a.stop()
    b = start_agent()
    assert b.request("GET", "/v1/kv/ephemeral")[0] == 404


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_config_file_services_and_ports(start_agent, tmp_path, fmt: str) -> None:
    conf = {"datacenter": "east", "node_name": "cfgnode", "ports": {"dns": -1},
            "service": {"name": "fromfile", "port": 8080, "tags": ["cfg"],
                        "check": {"ttl": "30s", "status": "passing"}},
            "services": [{"name": "second", "port": 9090}],
            "node_meta": {"rack": "r9"}}
    path = tmp_path / f"agent.{fmt}"
    path.write_text(json.dumps(conf) if fmt == "json" else yaml.safe_dump(conf))
    agent = start_agent("-config-file", str(path), "-dns-port", "-1")
    assert agent.dns_port is None
    me = agent.json("GET", "/v1/agent/self")
    assert (me["Config"]["Datacenter"], me["Config"]["NodeName"]) == ("east", "cfgnode")
    services = agent.json("GET", "/v1/agent/services")
    assert services["fromfile"]["Tags"] == ["cfg"] and services["second"]["Port"] == 9090
    assert agent.json("GET", "/v1/health/service/fromfile?passing")[0]["Service"]["ID"] == "fromfile"
    assert agent.json("GET", "/v1/catalog/node/cfgnode")["Node"]["Meta"] == {"rack": "r9"}


def test_config_dir_is_read_in_order(start_agent, tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"node_name": "first", "service": {"name": "s1"}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"node_name": "second", "service": {"name": "s2"}}))
    (tmp_path / "ignored.txt").write_text("not config")
    agent = start_agent("-config-dir", str(tmp_path))
    assert agent.json("GET", "/v1/agent/self")["Config"]["NodeName"] == "second"
    assert sorted(agent.json("GET", "/v1/agent/services")) == ["s1", "s2"]


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(beacon_cmd("agent", "-dev", "-http-port", "0", "-dns-port", "0", "-no-engine", *args),
                          capture_output=True, text=True, env=beacon_env(), timeout=30)


@pytest.mark.parametrize("conf,needle", [
    ({"ports": {"http": "eighty"}}, "'ports.http' must be an integer"),
    ({"ports": {"dns": 70000}}, "'ports.dns' must be a port number"),
    ({"enable_script_checks": "yes"}, "'enable_script_checks' must be a boolean"),
    ({"check_update_interval": "30"}, "'check_update_interval'"),
    ({"log_level": "loud"}, "'log_level'"),
])
def test_invalid_config_values_fail_at_start_naming_the_key(tmp_path, conf, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(conf))
    r = run_agent("-config-file", str(path))
    assert r.returncode == 1
    assert needle in r.stderr, r.stderr


def test_unknown_config_keys_warn_but_start(start_agent, tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"frobnicate": 1, "ports": {"warp": 3}}))
    agent = start_agent("-config-file", str(path))
    assert any("unknown key 'frobnicate'" in line for line in agent.lines)
    assert any("unknown key 'ports.warp'" in line for line in agent.lines)


def test_broken_config_file_and_bad_flags_fail(tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{nope")
    r = run_agent("-config-file", str(path))
    assert r.returncode == 1 and "is not valid JSON" in r.stderr
    r = run_agent("-config-file", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "cannot read config file" in r.stderr
    r = run_agent("-http-port", "99999")
    assert r.returncode == 1 and "-http-port" in r.stderr
    r = subprocess.run(beacon_cmd("agent"), capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1 and "data_dir is required" in r.stderr


def test_dev_agent_starts_the_container_engine_and_prints_its_socket(start_agent, tmp_path) -> None:
    import shutil

    sock = str(tmp_path / "engine.sock")
    agent = start_agent("-data-dir", str(tmp_path / "d"), "-engine-socket", sock, "-engine-isolation", "process")
    assert any(f"Container engine: unix://{sock}" in line for line in agent.lines)
    assert os.stat(sock).st_mode & 0o777 == 0o600
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    r = subprocess.run(["docker", "-H", f"unix://{sock}", "version", "--format", "{{.Server.Version}}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_reload_and_sighup_apply_config_file_services(start_agent, tmp_path) -> None:
    import time

    from tests.conftest import wait_until

    path = tmp_path / "svc.json"
    path.write_text(json.dumps({"services": [{"name": "alpha", "port": 1}, {"name": "beta", "port": 2}]}))
    agent = start_agent("-config-file", str(path))
    agent.json("PUT", "/v1/agent/service/register", {"Name": "from-api", "Port": 3})
    assert sorted(agent.json("GET", "/v1/agent/services")) == ["alpha", "beta", "from-api"]
    path.write_text(json.dumps({"services": [{"name": "beta", "port": 22, "check": {"ttl": "1m"}},
                                             {"name": "gamma", "port": 4}]}))
    r = subprocess.run(beacon_cmd("reload", "-http-addr", agent.http_addr), capture_output=True, text=True,
                       env=beacon_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    services = agent.json("GET", "/v1/agent/services")
    assert sorted(services) == ["beta", "from-api", "gamma"]  # alpha gone, API service kept
    assert services["beta"]["Port"] == 22 and "service:beta" in agent.json("GET", "/v1/agent/checks")
    assert agent.json("GET", "/v1/catalog/service/alpha") == []
    path.write_text(json.dumps({"service": {"name": "delta"}}))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: sorted(agent.json("GET", "/v1/agent/services")) == ["delta", "from-api"], timeout=10)
    path.write_text("{broken")
    status, _, body = agent.request("PUT", "/v1/agent/reload")
    assert status == 500 and b"Failed reloading" in body and b"not valid JSON" in body
    time.sleep(0.2)
    assert sorted(agent.json("GET", "/v1/agent/services")) == ["delta", "from-api"]  # nothing lost
