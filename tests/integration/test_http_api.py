"""The HTTP API's contract: shapes, headers, status codes, bad input, blocking, filters."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(dev_agent) -> None:
    status, _, _ = dev_agent.request("GET", "/v1/nope")
    assert status == 404
    status, headers, _ = dev_agent.request("DELETE", "/v1/catalog/services")
    assert status == 405
    assert headers["Allow"] == "OPTIONS, GET"
    status, headers, body = dev_agent.request("OPTIONS", "/v1/kv/x")
    assert status == 200 and body == b""
    assert headers["Allow"] == "OPTIONS, DELETE, GET, PUT"


def test_malformed_json_is_400_with_a_message(dev_agent) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", b"{not json")
    assert status == 400 and body.startswith(b"Request decode failed")
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", b"")
    assert (status, body) == (400, b"Request decode failed: EOF")
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", b"[1,2]")
    assert status == 400
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", {"Port": 1})
    assert (status, body) == (400, b"Missing service name")
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", {"Name": "x", "Port": "eighty"})
    assert status == 400
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register", {"Name": "x", "Address": "0.0.0.0"})
    assert (status, body) == (400, b"Invalid service address")
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/register",
                                        {"Name": "x", "Meta": {"consul-x": "1"}})
    assert status == 400 and body.startswith(b"Invalid Service Meta")
    assert dev_agent.request("GET", "/v1/status/leader")[0] == 200  # still serving


def test_oversized_kv_value_is_413_and_nothing_is_written(dev_agent) -> None:
    big = b"x" * (512 * 1024 + 1)
    status, _, body = dev_agent.request("PUT", "/v1/kv/big", big)
    assert status == 413 and b"too large" in body
    assert dev_agent.request("GET", "/v1/kv/big")[0] == 404
    assert dev_agent.request("PUT", "/v1/kv/big", b"x" * (512 * 1024))[0] == 200


@pytest.mark.parametrize("path,expected", [
    ("/v1/kv/k?index=abc", b"Invalid index"),
    ("/v1/kv/k?wait=30", b"Invalid wait time"),
    ("/v1/kv/k?stale&consistent", b"Cannot specify ?stale with ?consistent, conflicting semantics."),
    ("/v1/catalog/services?filter=Service%20%3D%3D", b"Failed to create boolean expression evaluator"),
    ("/v1/kv/", b"Missing key name"),
    ("/v1/health/service/x?passing=maybe", b"Invalid value for ?passing"),
    ("/v1/health/state/bogus", b"Invalid check state"),
    ("/v1/kv/k?ns=team", b"Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature"),
])
def test_bad_query_parameters_are_400(dev_agent, path: str, expected: bytes) -> None:
    status, _, body = dev_agent.request("GET", path)
    assert status == 400 and body.startswith(expected), body


def test_kv_put_conflicting_flags_and_bad_flags(dev_agent) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/kv/k?cas=0&acquire=x", b"v")
    assert status == 400 and body.startswith(b"Conflicting flags")
    status, _, _ = dev_agent.request("PUT", "/v1/kv/k?flags=-1", b"v")
    assert status == 400


def test_kv_404_carries_index_headers(dev_agent) -> None:
    status, headers, body = dev_agent.request("GET", "/v1/kv/definitely/missing")
    assert status == 404 and body == b""
    assert int(headers["X-Consul-Index"]) >= 1
    assert headers["X-Consul-KnownLeader"] == "true"
    assert "X-Consul-LastContact" in headers


def test_kv_raw_and_empty_values(dev_agent) -> None:
    dev_agent.request("PUT", "/v1/kv/raw/k", b"<b>hi</b>")
    status, headers, body = dev_agent.request("GET", "/v1/kv/raw/k?raw")
    assert (status, body) == (200, b"<b>hi</b>")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff"
    dev_agent.request("PUT", "/v1/kv/raw/empty", b"")
    [entry] = dev_agent.json("GET", "/v1/kv/raw/empty")
    assert entry["Value"] is None


def test_x_consul_index_never_goes_backwards_across_writes(dev_agent) -> None:
    seen = []
    for i in range(5):
        dev_agent.request("PUT", f"/v1/kv/mono/{i}", b"v")
        dev_agent.request("DELETE", f"/v1/kv/mono/{i}")
        _, headers, _ = dev_agent.request("GET", "/v1/kv/mono/?recurse")
        seen.append(int(headers["X-Consul-Index"]))
    assert seen == sorted(seen) and len(set(seen)) == 5


def test_blocking_health_query_wakes_on_that_service_only(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "blk", "Port": 1})
    _, headers, _ = dev_agent.request("GET", "/v1/health/service/blk")
    index = int(headers["X-Consul-Index"])
    out: dict = {}

    def wait() -> None:
        t0 = time.monotonic()
        status, h, body = dev_agent.request("GET", f"/v1/health/service/blk?index={index}&wait=15s", timeout=30)
        out.update(status=status, index=int(h["X-Consul-Index"]), body=json.loads(body),
                   elapsed=time.monotonic() - t0)

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.3)
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "unrelated", "Port": 2})
    dev_agent.request("PUT", "/v1/kv/unrelated", b"x")
    time.sleep(0.5)
    assert th.is_alive()
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "blk", "ID": "blk2", "Port": 3})
    th.join(5)
    assert out["index"] > index and len(out["body"]) == 2


def test_filter_on_agent_services_and_health(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register",
                   {"name": "flt", "id": "flt1", "port": 1, "tags": ["blue"], "meta": {"env": "prod"}})
    dev_agent.json("PUT", "/v1/agent/service/register",
                   {"name": "flt", "id": "flt2", "port": 2, "tags": ["green"], "meta": {"env": "dev"}})
    from urllib.parse import quote

    body = dev_agent.json("GET", "/v1/agent/services?filter=" + quote('Meta.env == "prod" and Service == "flt"'))
    assert list(body) == ["flt1"]
    body = dev_agent.json("GET", "/v1/health/service/flt?filter=" + quote('"green" in Service.Tags'))
    assert [e["Service"]["ID"] for e in body] == ["flt2"]
    body = dev_agent.json("GET", "/v1/catalog/service/flt?tag=blue")
    assert [e["ServiceID"] for e in body] == ["flt1"]


def test_snake_case_and_lowercase_bodies_are_accepted(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register",
                   {"name": "snake", "id": "snake1", "port": 9, "enable_tag_override": True,
                    "tagged_addresses": {"lan": {"address": "10.0.0.9", "port": 9}},
                    "check": {"ttl": "30s", "deregister_critical_service_after": "90m"}})
    svc = dev_agent.json("GET", "/v1/agent/service/snake1")
    assert svc["EnableTagOverride"] is True
    assert svc["TaggedAddresses"]["lan"] == {"Address": "10.0.0.9", "Port": 9}
    checks = dev_agent.json("GET", "/v1/agent/checks")
    chk = checks["service:snake1"]
    assert chk["Type"] == "ttl" and chk["Definition"]["DeregisterCriticalServiceAfter"] == "1h30m0s"


def test_multiple_embedded_checks_get_numbered_ids(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register",
                   {"Name": "multi", "Checks": [{"TTL": "10s"}, {"TTL": "20s", "Status": "passing"}]})
    checks = dev_agent.json("GET", "/v1/agent/checks")
    assert checks["service:multi:1"]["Status"] == "critical"
    assert checks["service:multi:2"]["Status"] == "passing"
    assert checks["service:multi:1"]["Name"] == "Service 'multi' check"


def test_replace_existing_checks(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "rep", "Checks": [{"TTL": "10s"}, {"TTL": "10s"}]})
    dev_agent.json("PUT", "/v1/agent/service/register?replace-existing-checks",
                   {"Name": "rep", "Check": {"TTL": "10s"}})
    checks = dev_agent.json("GET", "/v1/agent/checks")
    assert sorted(c for c in checks if "rep" in c) == ["service:rep"]
    health = dev_agent.json("GET", "/v1/health/checks/rep")
    assert [c["CheckID"] for c in health] == ["service:rep"]


def test_unknown_ids_are_404_with_consul_messages(dev_agent) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/deregister/nope")
    assert status == 404 and body.startswith(b'Unknown service ID "nope"')
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/pass/nope")
    assert status == 404 and body.startswith(b'Unknown check ID "nope"')
    status, _, body = dev_agent.request("GET", "/v1/agent/service/nope")
    assert status == 404


def test_script_checks_over_http_are_refused_by_default(dev_agent) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/register",
                                        {"Name": "s", "Args": ["true"], "Interval": "10s"})
    assert status == 500 and b"Scripts are disabled on this agent from remote calls" in body


def test_check_validation_messages(dev_agent) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/register", {"Name": "c", "TTL": "10s",
                                                                           "Interval": "10s"})
    assert (status, body) == (400, b"Invalid check: Interval and TTL cannot both be specified")
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/register", {"Name": "c", "Status": "ok",
                                                                           "TTL": "10s"})
    assert status == 400 and body.startswith(b"Status for checks must")
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/register", {"TTL": "10s"})
    assert (status, body) == (400, b"Missing check name")
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/register",
                                        {"Name": "c", "TTL": "10s", "ServiceID": "ghost"})
    assert status == 404


def test_maintenance_modes(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "mnt", "Port": 5})
    assert len(dev_agent.json("GET", "/v1/health/service/mnt?passing")) == 1
    dev_agent.json("PUT", "/v1/agent/service/maintenance/mnt?enable=true&reason=upgrading")
    checks = dev_agent.json("GET", "/v1/agent/checks")
    maint = checks["_service_maintenance:mnt"]
    assert (maint["Status"], maint["Notes"], maint["Name"]) == ("critical", "upgrading", "Service Maintenance Mode")
    assert dev_agent.json("GET", "/v1/health/service/mnt?passing") == []
    dev_agent.json("PUT", "/v1/agent/service/maintenance/mnt?enable=false")
    assert len(dev_agent.json("GET", "/v1/health/service/mnt?passing")) == 1
    status, _, body = dev_agent.request("PUT", "/v1/agent/service/maintenance/mnt")
    assert (status, body) == (400, b"Missing value for enable")
    dev_agent.json("PUT", "/v1/agent/maintenance?enable=true")
    assert dev_agent.json("GET", "/v1/health/service/mnt?passing") == []
    dev_agent.json("PUT", "/v1/agent/maintenance?enable=false")
    assert len(dev_agent.json("GET", "/v1/health/service/mnt?passing")) == 1


def test_check_update_and_agent_health_endpoints(dev_agent) -> None:
    dev_agent.json("PUT", "/v1/agent/service/register", {"Name": "upd", "Check": {"TTL": "1m"}})
    status, _, _ = dev_agent.request("GET", "/v1/agent/health/service/id/upd")
    assert status == 503
    dev_agent.json("PUT", "/v1/agent/check/update/service:upd", {"Status": "warning", "Output": "slow"})
    status, _, body = dev_agent.request("GET", "/v1/agent/health/service/id/upd?format=text")
    assert (status, body) == (429, b"warning")
    dev_agent.json("PUT", "/v1/agent/check/update/service:upd", {"Status": "passing"})
    status, _, body = dev_agent.request("GET", "/v1/agent/health/service/name/upd")
    assert status == 200 and json.loads(body)[0]["AggregatedStatus"] == "passing"
    status, _, body = dev_agent.request("PUT", "/v1/agent/check/update/service:upd", {"Status": "bogus"})
    assert (status, body) == (400, b"Invalid check status: 'bogus'")


def test_catalog_register_and_deregister_external_node(dev_agent) -> None:
    ok = dev_agent.json("PUT", "/v1/catalog/register", {
        "Node": "ext1", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
        "Service": {"Service": "extsvc", "Port": 80},
        "Check": {"Name": "ext check", "Status": "warning", "ServiceID": "extsvc"}})
    assert ok is True
    node = dev_agent.json("GET", "/v1/catalog/node/ext1")
    assert node["Node"]["Meta"] == {"rack": "r1"} and "extsvc" in node["Services"]
    assert dev_agent.json("GET", "/v1/catalog/nodes?node-meta=rack:r1")[0]["Node"] == "ext1"
    health = dev_agent.json("GET", "/v1/health/service/extsvc")
    assert health[0]["Checks"][0]["Status"] == "warning"
    assert dev_agent.json("GET", "/v1/health/state/warning")[0]["Node"] == "ext1"
    assert dev_agent.json("PUT", "/v1/catalog/deregister", {"Node": "ext1"}) is True
    status, _, body = dev_agent.request("GET", "/v1/catalog/node/ext1")
    assert (status, body.strip()) == (200, b"null")
    status, _, body = dev_agent.request("PUT", "/v1/catalog/register", {"Node": "x"})
    assert status == 500 and b"address" in body


def test_garbage_on_the_http_socket_does_not_kill_the_listener(dev_agent) -> None:
    for payload in (b"\x00\x01\x02garbage\r\n\r\n", b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"):
        with socket.create_connection(("127.0.0.1", dev_agent.http_port), timeout=3) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert dev_agent.request("GET", "/v1/status/leader")[0] == 200


def test_datacenters_peers_and_raft_configuration(dev_agent) -> None:
    assert dev_agent.json("GET", "/v1/catalog/datacenters") == ["dc1"]
    peers = dev_agent.json("GET", "/v1/status/peers")
    assert peers == [dev_agent.json("GET", "/v1/status/leader")]
    conf = dev_agent.json("GET", "/v1/operator/raft/configuration")
    assert conf["Servers"][0]["Leader"] is True
    status, _, body = dev_agent.request("GET", "/v1/catalog/services?dc=dc9")
    assert (status, body) == (500, b"No path to datacenter")
