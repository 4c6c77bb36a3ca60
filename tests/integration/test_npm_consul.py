"""The npm `consul` package (v2, a real Node.js Consul client) against a real `beacon agent -dev`:
prepared queries through its query API; config entries, the discovery chain, ?peer and ?cached
through its request layer (the package has no API of its own for those); events by name.

Needs node and the package installed under tests/npm (``npm install`` there; ``.ci/run`` does it).
Skips, with the reason, when node or the package is missing and npm cannot install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import launch, wait_until

NPM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "npm")


def _ensure_package() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if os.path.isdir(os.path.join(NPM_DIR, "node_modules", "consul")):
        return
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so the `consul` package cannot be installed")
    out = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NPM_DIR, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        pytest.skip(f"npm could not install the `consul` package: {out.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def results():
    _ensure_package()
    agent = launch("-node", "npm-node")
    try:
        status, _, data = agent.request("PUT", "/v1/agent/service/register", {
            "Name": "redis", "ID": "redis-1", "Port": 6379, "Tags": ["primary"], "Address": "127.0.0.31"})
        assert status == 200, data
        wait_until(lambda: json.loads(agent.request("GET", "/v1/health/service/redis")[2]), timeout=20)
        out = subprocess.run(["node", os.path.join(NPM_DIR, "clients.js"), str(agent.http_port)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        yield json.loads(out.stdout)
    finally:
        agent.stop()


def test_npm_query_create_get_list_update(results) -> None:
    qid = results["created"]["ID"]
    got = results["get"]
    assert got["ID"] == qid and got["Name"] == "npm-redis"
    assert got["Service"]["Service"] == "redis" and got["Service"]["Tags"] == ["primary"]
    assert got["Service"]["OnlyPassing"] is True
    assert got["Service"]["Failover"] == {"NearestN": 2, "Datacenters": ["dc2"]}
    assert got["DNS"] == {"TTL": "11s"}
    assert qid in [q["ID"] for q in results["list"]]
    after = results["afterUpdate"]
    assert after["DNS"] == {"TTL": "12s"} and after["Service"]["OnlyPassing"] is False
    assert after["ModifyIndex"] > got["ModifyIndex"] and after["CreateIndex"] == got["CreateIndex"]


def test_npm_query_execute_and_explain(results) -> None:
    ex = results["execute"]
    assert ex["Service"] == "redis" and ex["Datacenter"] == "dc1" and ex["Failovers"] == 0
    assert ex["DNS"] == {"TTL": "12s"}
    assert [(n["Node"]["Node"], n["Service"]["ID"], n["Service"]["Address"]) for n in ex["Nodes"]] == [
        ("npm-node", "redis-1", "127.0.0.31")]
    assert int(results["executeIndex"]) >= 1
    assert results["executeByID"]["Service"] == "redis"
    assert results["explain"]["Query"]["Service"]["Service"] == "redis"
    assert results["explain"]["Query"]["ID"] == results["template"]["ID"]
    assert [n["Service"]["ID"] for n in results["templateExecute"]["Nodes"]] == ["redis-1"]
    assert results["getDeleted"] in (404, "not found")
    assert results["executeMissing"] == 404


def test_npm_config_entries_and_chain(results) -> None:
    assert results["configPut"] is True
    entry = results["configGet"]
    assert entry["Kind"] == "service-defaults" and entry["Name"] == "npm-web" and entry["Protocol"] == "http"
    assert results["configCas"] is False  # cas=1 is not the entry's ModifyIndex
    assert [e["Name"] for e in results["configList"]] == ["npm-web"]
    chain = results["chain"]["Chain"]
    assert chain["ServiceName"] == "npm-web" and chain["Protocol"] == "http"
    assert chain["StartNode"] == "resolver:npm-web.default.default.dc1"
    assert list(chain["Targets"]) == ["npm-web.default.default.dc1"]
    status, message = results["configBadKind"]
    assert status == 400 and "invalid config entry kind: nonsense" in message
    assert results["configDelete"] == {}


def test_npm_events_peer_and_cached(results) -> None:
    assert results["events"] == ["npm-deploy"]
    assert results["peer"] == []
    assert results["cached"][:2] == ["MISS", "HIT"] and int(results["cached"][2]) >= 0
