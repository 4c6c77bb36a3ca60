"""py-consul (a real Consul client library) against a real `beacon agent -dev` process."""

from __future__ import annotations

import threading
import time

import consul
import pytest


@pytest.fixture
def client(dev_agent):
    return consul.Consul(host="127.0.0.1", port=dev_agent.http_port)


def test_status_leader_handshake(client) -> None:
    assert client.status.leader() != ""
    assert client.agent.self()["Config"]["Version"]


def test_agent_self_has_the_stats_and_sections_clients_read(client, dev_agent) -> None:
    me = client.agent.self()
    leader = client.status.leader()
    assert me["Stats"]["consul"]["leader_addr"] == leader and me["Stats"]["consul"]["server"] == "true"
    assert me["Stats"]["consul"]["leader"] == "true" and me["Stats"]["consul"]["acl"] == "disabled"
    assert me["Stats"]["raft"]["state"] == "Leader"
    assert int(me["Stats"]["raft"]["applied_index"]) >= 1
    assert me["Stats"]["serf_lan"]["members"] == "1"
    assert set(me["Stats"]) >= {"agent", "build", "consul", "raft", "runtime", "serf_lan"}
    assert all(isinstance(v, str) for section in me["Stats"].values() for v in section.values())
    assert me["DebugConfig"]["NodeName"] == me["Config"]["NodeName"]
    assert me["DebugConfig"]["HTTPPort"] == dev_agent.http_port
    assert me["xDS"] == {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}}


def test_kv_put_get_delete_recurse(client) -> None:
    assert client.kv.put("pyc/a", "1") is True
    assert client.kv.put("pyc/b", b"\x00bin", flags=7) is True
    assert client.kv.put("pyc/sub/c", "3") is True
    _, item = client.kv.get("pyc/b")
    assert item["Value"] == b"\x00bin" and item["Flags"] == 7
    _, items = client.kv.get("pyc/", recurse=True)
    assert [i["Key"] for i in items] == ["pyc/a", "pyc/b", "pyc/sub/c"]
    _, keys = client.kv.get("pyc/", keys=True, separator="/")
    assert keys == ["pyc/a", "pyc/b", "pyc/sub/"]
    assert client.kv.delete("pyc/sub/", recurse=True) is True
    _, items = client.kv.get("pyc/", recurse=True)
    assert [i["Key"] for i in items] == ["pyc/a", "pyc/b"]
    _, missing = client.kv.get("pyc/none")
    assert missing is None


def test_kv_cas(client) -> None:
    assert client.kv.put("cas/k", "v1", cas=0) is True
    assert client.kv.put("cas/k", "v2", cas=0) is False
    _, item = client.kv.get("cas/k")
    assert client.kv.put("cas/k", "v3", cas=item["ModifyIndex"] + 1000) is False
    assert client.kv.put("cas/k", "v3", cas=item["ModifyIndex"]) is True
    _, item = client.kv.get("cas/k")
    assert item["Value"] == b"v3"
    assert client.kv.delete("cas/k", cas=item["ModifyIndex"] - 1) is False
    assert client.kv.delete("cas/k", cas=item["ModifyIndex"]) is True


def test_blocking_get_returns_when_the_key_changes_and_not_before(client) -> None:
    client.kv.put("block/k", "v1")
    index, _ = client.kv.get("block/k")
    result: dict = {}

    def waiter() -> None:
        t0 = time.monotonic()
        idx, item = client.kv.get("block/k", index=index, wait="20s")
        result.update(idx=idx, value=item["Value"], elapsed=time.monotonic() - t0)

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.5)
    client.kv.put("block/other", "unrelated")   # must not wake the waiter
    client.kv.put("block/k2", "prefix sibling")  # nor this
    time.sleep(0.5)
    assert th.is_alive(), "blocking query returned on an unrelated write"
    client.kv.put("block/k", "v2")
    th.join(5)
    assert not th.is_alive()
    assert result["value"] == b"v2" and int(result["idx"]) > int(index)
    assert result["elapsed"] >= 0.9


def test_blocking_get_times_out_with_the_same_index(client) -> None:
    client.kv.put("block2/k", "v")
    index, _ = client.kv.get("block2/k")
    t0 = time.monotonic()
    idx, _ = client.kv.get("block2/k", index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert idx == index
    assert 1.0 <= elapsed < 3.0


def test_service_register_catalog_health_deregister(client) -> None:
    client.agent.service.register("pyweb", service_id="pyweb1", port=8080, tags=["v1", "primary"],
                                  meta={"env": "test"})
    client.agent.service.register("pyweb", service_id="pyweb2", port=8081, tags=["v1"],
                                  check=consul.Check.ttl("10s"))
    services = client.agent.services()
    assert services["pyweb1"]["Port"] == 8080 and services["pyweb1"]["Meta"] == {"env": "test"}
    _, catalog_services = client.catalog.services()
    assert sorted(catalog_services["pyweb"]) == ["primary", "v1"]
    _, nodes = client.catalog.service("pyweb")
    assert sorted(n["ServiceID"] for n in nodes) == ["pyweb1", "pyweb2"]
    _, tagged = client.catalog.service("pyweb", tag="primary")
    assert [n["ServiceID"] for n in tagged] == ["pyweb1"]
    _, all_instances = client.health.service("pyweb")
    assert len(all_instances) == 2
    _, passing = client.health.service("pyweb", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["pyweb1"]  # TTL check starts critical
    client.agent.check.ttl_pass("service:pyweb2", "ok")
    _, passing = client.health.service("pyweb", passing=True)
    assert sorted(e["Service"]["ID"] for e in passing) == ["pyweb1", "pyweb2"]
    _, checks = client.health.checks("pyweb")
    assert [(c["CheckID"], c["Status"], c["Output"]) for c in checks] == [("service:pyweb2", "passing", "ok")]
    client.agent.service.deregister("pyweb1")
    client.agent.service.deregister("pyweb2")
    _, nodes = client.catalog.service("pyweb")
    assert nodes == []
    _, catalog_services = client.catalog.services()
    assert "pyweb" not in catalog_services


def test_catalog_nodes_and_node(client, dev_agent) -> None:
    _, nodes = client.catalog.nodes()
    names = [n["Node"] for n in nodes]
    assert len(names) == 1
    _, node = client.catalog.node(names[0])
    assert node["Node"]["Address"] == "127.0.0.1"
    assert "consul" in node["Services"]
    _, checks = client.health.node(names[0])
    assert any(c["CheckID"] == "serfHealth" and c["Status"] == "passing" for c in checks)


def test_operator_usage_counts_services_instances_and_nodes(client, dev_agent) -> None:
    for i in range(3):
        client.agent.service.register("usage-web", service_id=f"usage-web-{i}", port=8000 + i)
    client.agent.service.register("usage-db", port=5432)
    client.catalog.register("usage-remote", "10.1.2.3", service={"Service": "usage-web", "ID": "r1", "Port": 1})
    status, headers, _ = dev_agent.request("GET", "/v1/operator/usage")
    assert status == 200 and int(headers["X-Consul-Index"]) > 0
    usage = client.operator.usage()["Usage"]["dc1"]
    names = set(client.catalog.services()[1])
    instances = sum(len(client.catalog.service(n)[1]) for n in names)
    consul_itself = len(client.catalog.service("consul")[1])  # never billed, as in Consul
    assert usage["Services"] == len(names)
    assert usage["ServiceInstances"] == instances
    assert usage["BillableServiceInstances"] == instances - consul_itself
    assert usage["Nodes"] == len(client.catalog.nodes()[1]) == 2
    assert set(usage["ConnectServiceInstances"]) >= {"connect-proxy", "mesh-gateway"}
