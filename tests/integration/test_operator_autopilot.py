"""The autopilot configuration API on a real agent: py-consul and the `beacon operator autopilot` CLI,
the agent's `autopilot` block as the starting configuration, check-and-set, and its ACLs
(operator:read to read, operator:write to change). Replication and the reconciler's use of it are
in tests/cluster/test_gossip_membership.py."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import consul
import pytest

from tests.conftest import beacon_cmd, beacon_env, launch

pytestmark = pytest.mark.integration

MGMT = "5d0f4a77-3a8e-4a55-9b3c-2d6f0f1e8a10"
PATH = "/v1/operator/autopilot/configuration"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("autopilot")
    (d / "acl.json").write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                                    "tokens": {"initial_management": MGMT}}}))
    (d / "autopilot.json").write_text(json.dumps({"autopilot": {"min_quorum": 3, "last_contact_threshold": "1s"}}))
    a = launch("-config-file", str(d / "acl.json"), "-config-file", str(d / "autopilot.json"))
    yield a
    a.stop()


def call(agent, method: str, path: str, body: dict | bytes | None = None, token: str | None = None
         ) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(agent.http + path, data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _token(agent, rules: str) -> str:
    status, body = call(agent, "PUT", "/v1/acl/policy", {"Name": f"p-{abs(hash(rules))}", "Rules": rules}, MGMT)
    assert status == 200, body
    status, body = call(agent, "PUT", "/v1/acl/token", {"Policies": [{"ID": json.loads(body)["ID"]}]}, MGMT)
    assert status == 200, body
    return json.loads(body)["SecretID"]


def test_py_consul_reads_the_agent_block_then_replaces_it_with_check_and_set(agent) -> None:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port, token=MGMT)
    conf = c.operator.autopilot_configuration()
    # Nothing written yet: the agent's block over Consul's defaults, indexes 0.
    assert {k: conf[k] for k in ("CleanupDeadServers", "LastContactThreshold", "MaxTrailingLogs", "MinQuorum",
                                 "ServerStabilizationTime", "CreateIndex", "ModifyIndex")} == {
        "CleanupDeadServers": True, "LastContactThreshold": "1s", "MaxTrailingLogs": 250, "MinQuorum": 3,
        "ServerStabilizationTime": "10s", "CreateIndex": 0, "ModifyIndex": 0}
    # Consul's PUT takes the whole configuration: what py-consul leaves out becomes zero.
    assert c.operator.update_autopilot_configuration(cleanup_dead_servers=True, min_quorum=5,
                                                     server_stabilization_time="30s") is True
    conf = c.operator.autopilot_configuration()
    assert (conf["MinQuorum"], conf["ServerStabilizationTime"], conf["LastContactThreshold"],
            conf["MaxTrailingLogs"]) == (5, "30s", "0s", 0)
    assert conf["CreateIndex"] == conf["ModifyIndex"] > 0
    assert c.operator.update_autopilot_configuration(min_quorum=1, cas=conf["ModifyIndex"] - 1) is False
    assert c.operator.autopilot_configuration()["MinQuorum"] == 5
    assert c.operator.update_autopilot_configuration(cleanup_dead_servers=True, min_quorum=1,
                                                     cas=conf["ModifyIndex"]) is True
    after = c.operator.autopilot_configuration()
    assert after["MinQuorum"] == 1 and after["ModifyIndex"] > conf["ModifyIndex"]
    assert after["CreateIndex"] == conf["CreateIndex"]
    with pytest.raises(consul.ConsulException, match="MaxTrailingLogs: must be an unsigned integer"):
        c.operator.update_autopilot_configuration(max_trailing_logs=-1)
    for query, body, message in (("?cas=x", b"{}", b"Error parsing cas value"),
                                 ("", b"[1]", b"must be a JSON object"),
                                 ("", b'{"LastContactThreshold": "soon"}', b"LastContactThreshold: invalid duration")):
        status, text = call(agent, "PUT", PATH + query, body, MGMT)
        assert status == 400 and message in text, (query, status, text)
    assert c.operator.autopilot_configuration() == after  # none of them wrote anything


def test_reading_needs_operator_read_and_writing_operator_write(agent) -> None:
    reader = _token(agent, 'operator = "read"')
    writer = _token(agent, 'operator = "write"')
    status, body = call(agent, "GET", PATH)
    assert status == 403, body
    status, body = call(agent, "GET", PATH, token=reader)
    assert status == 200 and "CleanupDeadServers" in json.loads(body)
    before = json.loads(body)
    status, body = call(agent, "PUT", PATH, {"CleanupDeadServers": False}, reader)
    assert status == 403, body
    status, body = call(agent, "GET", PATH, token=reader)
    assert json.loads(body) == before
    status, body = call(agent, "PUT", PATH, {"CleanupDeadServers": False, "MinQuorum": 2}, writer)
    assert status == 200 and body.strip() == b"true"
    status, body = call(agent, "GET", PATH, token=reader)
    assert (json.loads(body)["CleanupDeadServers"], json.loads(body)["MinQuorum"]) == (False, 2)


def test_the_cli_prints_the_configuration_and_changes_only_the_flags_given(agent) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(beacon_cmd("operator", "autopilot", *args, "-http-addr", agent.http_addr,
                                         "-token", MGMT),
                              capture_output=True, text=True, env=beacon_env(), timeout=30)

    status, body = call(agent, "PUT", PATH, {"CleanupDeadServers": True, "LastContactThreshold": "200ms",
                                             "MaxTrailingLogs": 250, "MinQuorum": 3, "ServerStabilizationTime": "10s"},
                        MGMT)
    assert status == 200, body
    r = cli("get-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["CleanupDeadServers = true", "LastContactThreshold = 200ms",
                                     "MaxTrailingLogs = 250", "MinQuorum = 3", "ServerStabilizationTime = 10s",
                                     'RedundancyZoneTag = ""', "DisableUpgradeMigration = false",
                                     'UpgradeVersionTag = ""']
    r = cli("set-config", "-cleanup-dead-servers=false", "-last-contact-threshold", "1500ms")
    assert (r.returncode, r.stdout.strip()) == (0, "Configuration updated!"), r.stderr
    r = cli("get-config")
    assert r.stdout.splitlines()[:5] == ["CleanupDeadServers = false", "LastContactThreshold = 1.5s",
                                         "MaxTrailingLogs = 250", "MinQuorum = 3", "ServerStabilizationTime = 10s"]
    r = cli("set-config", "-min-quorum", "three")
    assert r.returncode != 0 and "min-quorum" in r.stderr
