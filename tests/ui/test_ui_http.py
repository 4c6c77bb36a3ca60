"""The UI's HTTP side: redirects, static files with their headers, and the /v1/internal/ui summaries."""

from __future__ import annotations

import json
import threading

from tests.conftest import AgentProcess


def register_ttl(agent: AgentProcess, name: str, sid: str, check_id: str, tags: list[str] | None = None) -> None:
    agent.json("PUT", "/v1/agent/service/register", {"Name": name, "ID": sid, "Port": 8080, "Tags": tags or [],
                                                     "Check": {"TTL": "60s", "CheckID": check_id}})


def test_root_redirects_to_the_ui(dev_agent: AgentProcess) -> None:
    import http.client

    for path, code in (("/", 302), ("/ui", 301)):
        conn = http.client.HTTPConnection("127.0.0.1", dev_agent.http_port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert (resp.status, resp.headers["Location"]) == (code, "/ui/")
        conn.close()


def test_deep_links_serve_the_page_and_assets_are_typed(dev_agent: AgentProcess) -> None:
    for path in ("/ui/", "/ui/services/web", "/ui/kv/a/b/"):
        status, headers, body = dev_agent.request("GET", path)
        assert status == 200 and body.startswith(b"<!doctype html>")
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = dev_agent.request("GET", "/ui/assets/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"import" in body
    assert dev_agent.request("GET", "/ui/assets/style.css")[1]["Content-Type"].startswith("text/css")
    for bad in ("/ui/assets/nope.js", "/ui/assets/..%2Fapi.py", "/ui/assets/.hidden"):
        assert dev_agent.request("GET", bad)[0] == 404, bad


def test_ui_can_be_turned_off(start_agent, tmp_path) -> None:
    cfg = tmp_path / "ui.json"
    cfg.write_text(json.dumps({"ui_config": {"enabled": False}}))
    agent = start_agent("-config-file", str(cfg))
    assert agent.request("GET", "/")[2] == b"Consul Agent"
    assert agent.request("GET", "/ui/")[0] == 404


def test_service_summary_counts_health_and_blocks_until_a_change(start_agent) -> None:
    agent = start_agent()
    register_ttl(agent, "web", "web-1", "web-1-ttl", ["v1"])
    register_ttl(agent, "web", "web-2", "web-2-ttl", ["v2"])
    agent.request("PUT", "/v1/agent/check/pass/web-1-ttl")
    status, headers, body = agent.request("GET", "/v1/internal/ui/services")
    assert status == 200
    web = next(s for s in json.loads(body) if s["Name"] == "web")
    assert web["InstanceCount"] == 2 and sorted(web["Tags"]) == ["v1", "v2"]
    # web-1: its TTL passes; web-2: still critical; each instance also carries the node's serfHealth.
    assert (web["ChecksPassing"], web["ChecksWarning"], web["ChecksCritical"]) == (3, 0, 1)
    index = int(headers["X-Consul-Index"])
    got: dict = {}

    def wait() -> None:
        got["reply"] = agent.request("GET", f"/v1/internal/ui/services?index={index}&wait=20s", timeout=25)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "returned before anything changed"
    agent.request("PUT", "/v1/agent/check/pass/web-2-ttl")
    t.join(10)
    status, headers, body = got["reply"]
    assert int(headers["X-Consul-Index"]) > index
    web = next(s for s in json.loads(body) if s["Name"] == "web")
    assert web["ChecksCritical"] == 0 and web["ChecksPassing"] == 4


def test_node_summaries(dev_agent: AgentProcess) -> None:
    node = dev_agent.json("GET", "/v1/agent/self")["Config"]["NodeName"]
    nodes = dev_agent.json("GET", "/v1/internal/ui/nodes")
    assert [n["Node"] for n in nodes] == [node]
    assert any(c["CheckID"] == "serfHealth" for c in nodes[0]["Checks"])
    one = dev_agent.json("GET", f"/v1/internal/ui/node/{node}")
    assert one["Node"] == node and any(s["Service"] == "consul" for s in one["Services"])
    status, headers, _ = dev_agent.request("GET", "/v1/internal/ui/node/no-such-node")
    assert status == 404 and "X-Consul-Index" in headers
