"""/v1/agent/version, /v1/agent/host and /v1/agent/metrics/stream on real agents, with their ACLs."""

from __future__ import annotations

import http.client
import json
import os

import pytest

from beacon import CONSUL_COMPAT_VERSION
from tests.conftest import launch_acl_deny

pytestmark = pytest.mark.integration

MGMT = "0b7e3c55-41f4-4c0e-8f38-6f0d3c1c9a21"


@pytest.fixture(scope="module")
def deny_agent(tmp_path_factory):
    agent = launch_acl_deny(tmp_path_factory.mktemp("acl"), MGMT)
    yield agent
    agent.stop()


def test_version_names_the_consul_api_version(dev_agent) -> None:
    status, _, body = dev_agent.request("GET", "/v1/agent/version")
    assert status == 200
    info = json.loads(body)
    assert info["HumanVersion"] == CONSUL_COMPAT_VERSION
    assert set(info) >= {"SHA", "BuildDate", "HumanVersion", "FIPS"}


def test_host_reports_this_machine(dev_agent) -> None:
    status, _, body = dev_agent.request("GET", "/v1/agent/host")
    assert status == 200
    info = json.loads(body)
    assert info["Errors"] is None
    assert info["Host"]["hostname"] == os.uname().nodename
    assert info["Host"]["kernelVersion"] == os.uname().release
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    assert info["Memory"]["total"] == total_kib * 1024
    assert 0 < info["Memory"]["available"] <= info["Memory"]["total"]
    assert len(info["CPU"]) == os.cpu_count()
    st = os.statvfs("/")
    assert info["Disk"]["path"] == "/" and info["Disk"]["total"] == st.f_blocks * st.f_frsize
    assert info["Disk"]["fstype"]
    assert isinstance(info["CollectionTime"], int) and info["CollectionTime"] > 1_700_000_000 * 10**9


def _read_document(resp: http.client.HTTPResponse) -> dict:
    """One pretty-printed JSON document from the stream: lines until they parse."""
    buf = b""
    while True:
        line = resp.readline()
        assert line, "the stream ended before a whole document"
        buf += line
        try:
            return json.loads(buf)
        except ValueError:
            continue


def test_metrics_stream_sends_a_summary_now_and_one_per_interval(dev_agent) -> None:
    conn = http.client.HTTPConnection(dev_agent.host, dev_agent.http_port, timeout=20)
    try:
        conn.request("GET", "/v1/agent/metrics/stream")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        first = _read_document(resp)
        assert {"Timestamp", "Gauges", "Counters", "Samples"} <= set(first)
        assert any(c["Name"].startswith("beacon.http") for c in first["Counters"] + first["Samples"])
        dev_agent.request("GET", "/v1/kv/stream-tick")  # something to count before the next summary
        second = _read_document(resp)  # Consul's interval is 10 s; the read timeout is 20 s
        assert set(second) == set(first)
    finally:
        conn.close()


def test_acls_version_is_open_host_needs_operator_read_stream_needs_agent_read(deny_agent) -> None:
    status, _, body = deny_agent.request("GET", "/v1/agent/version")
    assert status == 200 and json.loads(body)["HumanVersion"] == CONSUL_COMPAT_VERSION
    assert deny_agent.request("GET", "/v1/agent/host")[0] == 403
    assert deny_agent.request("GET", f"/v1/agent/host?token={MGMT}")[0] == 200

    def token_with(rules: str, name: str) -> str:
        status, _, body = deny_agent.request("PUT", f"/v1/acl/policy?token={MGMT}", {"Name": name, "Rules": rules})
        assert status == 200, body
        status, _, body = deny_agent.request("PUT", f"/v1/acl/token?token={MGMT}", {"Policies": [{"Name": name}]})
        assert status == 200, body
        return json.loads(body)["SecretID"]

    operator = token_with('operator = "read"', "op-read")
    agent_reader = token_with('agent_prefix "" { policy = "read" }', "agent-read")
    assert deny_agent.request("GET", f"/v1/agent/host?token={operator}")[0] == 200
    assert deny_agent.request("GET", f"/v1/agent/host?token={agent_reader}")[0] == 403

    def stream_status(token: str | None) -> int:
        conn = http.client.HTTPConnection(deny_agent.host, deny_agent.http_port, timeout=10)
        try:
            conn.request("GET", "/v1/agent/metrics/stream", headers={"X-Consul-Token": token} if token else {})
            resp = conn.getresponse()
            if resp.status == 200:
                _read_document(resp)
            return resp.status
        finally:
            conn.close()

    assert stream_status(None) == 403
    assert stream_status(operator) == 403
    assert stream_status(agent_reader) == 200
