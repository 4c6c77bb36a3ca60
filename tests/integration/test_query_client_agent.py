"""Prepared queries and config entries through a client agent: a single server and one client on
their own loopback addresses. `Near: "_agent"` means the node of the agent that was asked, also when
a client forwards the execution to the server."""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.conftest import launch, wait_until


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    srv_addr, cli_addr = f"{block}.10", f"{block}.20"
    tmp = tmp_path_factory.mktemp("pair")
    # -retry-join (to itself) makes it a clustered server that client agents can join.
    server = launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                    "-retry-join", srv_addr,
                    "-data-dir", os.path.join(tmp, "srv"), dev=False)
    client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", os.path.join(tmp, "cli"),
                    "-retry-join", srv_addr, dev=False)
    try:
        for agent, sid in ((server, "web-srv"), (client, "web-cli")):
            status, _, data = agent.request("PUT", "/v1/agent/service/register",
                                            {"Name": "web", "ID": sid, "Port": 80})
            assert status == 200, data

        def both_visible() -> bool:
            status, _, data = server.request("GET", "/v1/health/service/web")
            return status == 200 and len(json.loads(data)) == 2
        wait_until(both_visible, timeout=30, interval=0.2)
        yield server, client
    finally:
        client.stop()
        server.stop()


def _nodes(agent, path: str) -> list[str]:
    status, _, data = agent.request("GET", path)
    assert status == 200, data
    return [n["Node"]["Node"] for n in json.loads(data)["Nodes"]]


def test_near_agent_is_the_asking_agents_node_through_a_client(pair) -> None:
    server, client = pair
    status, _, data = client.request("POST", "/v1/query", {"Name": "near-web",
                                                           "Service": {"Service": "web", "Near": "_agent"}})
    assert status == 200, data
    for _ in range(5):
        assert _nodes(client, "/v1/query/near-web/execute") == ["cli", "srv"]
        assert _nodes(server, "/v1/query/near-web/execute") == ["srv", "cli"]


def test_config_entries_and_chain_through_a_client(pair) -> None:
    server, client = pair
    status, _, data = client.request("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web",
                                                           "Protocol": "http"})
    assert status == 200 and data == b"true"
    status, _, data = server.request("GET", "/v1/config/service-defaults/web")
    assert status == 200 and json.loads(data)["Protocol"] == "http"
    status, _, data = client.request("GET", "/v1/discovery-chain/web")
    assert status == 200 and json.loads(data)["Chain"]["Protocol"] == "http"


def test_queries_and_config_entries_survive_a_server_restart(tmp_path) -> None:
    data_dir = os.path.join(tmp_path, "srv")
    flags = ("-server", "-bootstrap-expect", "1", "-node", "solo", "-data-dir", data_dir)
    server = launch(*flags, dev=False)
    try:
        status, _, data = server.request("POST", "/v1/query", {"Name": "kept", "Service": {"Service": "web"},
                                                               "DNS": {"TTL": "5s"}})
        assert status == 200, data
        qid = json.loads(data)["ID"]
        status, _, data = server.request("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web",
                                                               "Protocol": "http"})
        assert status == 200 and data == b"true"
        _, headers, _ = server.request("GET", "/v1/config/service-defaults/web")
        index = int(headers["X-Consul-Index"])
    finally:
        server.stop()
    server = launch(*flags, dev=False)
    try:
        status, _, data = server.request("GET", f"/v1/query/{qid}")
        assert status == 200 and json.loads(data)[0]["DNS"] == {"TTL": "5s"}
        status, headers, data = server.request("GET", "/v1/config/service-defaults/web")
        assert status == 200 and json.loads(data)["Protocol"] == "http"
        assert int(headers["X-Consul-Index"]) == index
    finally:
        server.stop()


def test_snapshot_save_and_restore_carry_queries_and_config_entries() -> None:
    agent = launch()
    try:
        status, _, data = agent.request("POST", "/v1/query", {"Name": "snap", "Service": {"Service": "web"}})
        assert status == 200, data
        assert agent.request("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "snap",
                                                   "Protocol": "http"})[0] == 200
        status, _, archive = agent.request("GET", "/v1/snapshot")
        assert status == 200 and archive
        assert agent.request("DELETE", "/v1/query/snap")[0] == 200
        assert agent.request("DELETE", "/v1/config/service-defaults/snap")[0] == 200
        assert agent.request("GET", "/v1/query/snap")[0] == 404
        status, _, data = agent.request("PUT", "/v1/snapshot", archive)
        assert status == 200, data
        status, _, data = agent.request("GET", "/v1/query/snap")
        assert status == 200 and json.loads(data)[0]["Name"] == "snap"
        status, _, data = agent.request("GET", "/v1/config/service-defaults/snap")
        assert status == 200 and json.loads(data)["Protocol"] == "http"
    finally:
        agent.stop()
