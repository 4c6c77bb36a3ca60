"""/v1/agent/metrics against a real agent: Prometheus text read by prometheus-client's own parser, and
Consul's JSON shape."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import AgentProcess, wait_until

parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus-client")


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = agent.request("GET", "/v1/agent/metrics?format=prometheus")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in parser.text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_counter_moves_by_route_pattern_and_status(dev_agent: AgentProcess) -> None:
    before = scrape(dev_agent)
    for i in range(3):
        assert dev_agent.request("PUT", f"/v1/kv/metrics/k{i}", b"x")[0] == 200
    assert dev_agent.request("GET", "/v1/kv/metrics/absent")[0] == 404
    after = scrape(dev_agent)
    key = dict(method="PUT", endpoint="/v1/kv/{key}", status="200")
    assert value(after, "beacon_http_requests_total", **key) - value(before, "beacon_http_requests_total", **key) == 3
    miss = dict(method="GET", endpoint="/v1/kv/{key}", status="404")
    assert value(after, "beacon_http_requests_total", **miss) - value(before, "beacon_http_requests_total", **miss) == 1
    lat = dict(method="PUT", endpoint="/v1/kv/{key}")
    assert (value(after, "beacon_http_request_duration_seconds_count", **lat)
            - value(before, "beacon_http_request_duration_seconds_count", **lat)) == 3
    # The raw path never becomes a label value: one series per route, whatever the keys.
    assert not any("metrics/k" in v for (_, labels) in after for _, v in labels)


def test_catalog_sizes_and_command_latency_follow_writes(dev_agent: AgentProcess) -> None:
    before = scrape(dev_agent)
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "metered", "ID": "metered-1",
                                                         "Check": {"TTL": "30s", "CheckID": "metered-ttl"}})
    assert dev_agent.request("PUT", "/v1/kv/metrics/size", b"1")[0] == 200
    after = scrape(dev_agent)
    assert value(after, "beacon_catalog_services") == value(before, "beacon_catalog_services") + 1
    assert value(after, "beacon_catalog_checks", status="critical") == value(
        before, "beacon_catalog_checks", status="critical") + 1
    assert value(after, "beacon_kv_entries") >= 1
    assert value(after, "beacon_raft_apply_seconds_count", type="kvs") > value(
        before, "beacon_raft_apply_seconds_count", type="kvs")
    assert value(after, "beacon_raft_leader_changes_total") == 1


def test_blocking_queries_in_flight_are_counted(dev_agent: AgentProcess) -> None:
    _, headers, _ = dev_agent.request("GET", "/v1/kv/metrics/block")
    index = headers["X-Consul-Index"]
    result: dict[str, int] = {}

    def blocked() -> None:
        status, _, _ = dev_agent.request("GET", f"/v1/kv/metrics/block?index={index}&wait=20s", timeout=25)
        result["status"] = status

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    wait_until(lambda: value(scrape(dev_agent), "beacon_http_blocking_queries") >= 1, timeout=10)
    assert dev_agent.request("PUT", "/v1/kv/metrics/block", b"wake")[0] == 200
    t.join(10)
    assert result.get("status") == 200
    wait_until(lambda: value(scrape(dev_agent), "beacon_http_blocking_queries") == 0, timeout=10)


def test_json_has_consuls_shape(dev_agent: AgentProcess) -> None:
    dev_agent.request("GET", "/v1/status/leader")
    body = dev_agent.json("GET", "/v1/agent/metrics")
    assert set(body) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert body["Timestamp"].endswith("+0000 UTC")
    leader = [c for c in body["Counters"] if c["Name"] == "beacon.http.requests"
              and c["Labels"].get("endpoint") == "/v1/status/leader"]
    assert leader and leader[0]["Count"] >= 1 and leader[0]["Labels"]["status"] == "200"
    samples = [s for s in body["Samples"] if s["Name"] == "beacon.http.request.duration.seconds"]
    assert samples and all(s["Count"] >= 1 and s["Mean"] >= 0 for s in samples)
    assert any(g["Name"] == "beacon.catalog.nodes" and g["Value"] == 1 for g in body["Gauges"])


def test_openmetrics_accept_header_and_wrong_method(dev_agent: AgentProcess) -> None:
    import urllib.request

    req = urllib.request.Request(dev_agent.http + "/v1/agent/metrics",
                                 headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().rstrip().endswith(b"# EOF")
    status, headers, _ = dev_agent.request("PUT", "/v1/agent/metrics", b"")
    assert status == 405 and "GET" in headers["Allow"]
    assert json.loads(dev_agent.request("GET", "/v1/agent/metrics")[2])  # still serving


def test_unmatched_paths_share_one_label(dev_agent: AgentProcess) -> None:
    before = scrape(dev_agent)
    for path in ("/v1/nope/a", "/v1/nope/b", "/nothing"):
        assert dev_agent.request("GET", path)[0] == 404
    after = scrape(dev_agent)
    key = dict(method="GET", endpoint="unmatched", status="404")
    assert value(after, "beacon_http_requests_total", **key) - value(before, "beacon_http_requests_total", **key) == 3


def test_dns_queries_are_counted_by_type_and_rcode(start_agent) -> None:
    """Cache hits are folded in once a second; misses are counted at once."""
    import shutil
    import time

    import pytest
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import dig

    if shutil.which("dig") is None:
        pytest.skip("dig is not installed")
    agent = start_agent()
    agent.json("PUT", "/v1/agent/service/register", {"Name": "m", "Port": 1})
    for _ in range(3):
        dig(agent.dns_port, "m.service.consul", "SRV")
    dig(agent.dns_port, "nope.service.consul", "A")

    def count(qtype: str, rcode: str) -> float:
        _, _, body = agent.request("GET", "/v1/agent/metrics?format=prometheus")
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                if "dns" in s.name and s.name.endswith("_total") and s.labels.get("qtype") == qtype \
                        and s.labels.get("rcode") == rcode:
                    return s.value
        return 0.0

    deadline = time.monotonic() + 5
    while count("SRV", "NOERROR") < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count("SRV", "NOERROR") == 3
    assert count("A", "NXDOMAIN") == 1
