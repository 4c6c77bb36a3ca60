"""Prepared queries, config entries, the discovery chain and the small read-side options, driven by
py-consul (a real Consul client) against a real `beacon agent -dev` process; DNS answers checked with
`dig`."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import consul
import pytest

from tests.conftest import beacon_cmd, beacon_env, dig, launch, wait_until

AGENT_NODE = "zulu"      # sorts after OTHER_NODE, so "agent first" is not the catalog's own order
OTHER_NODE = "alpha"


@pytest.fixture(scope="module")
def agent():
    proc = launch("-node", AGENT_NODE)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(agent):
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    # One instance on the agent's node (with a passing TTL check) and one on another node.
    c.agent.service.register("redis", service_id="redis-local", port=6379, address="127.0.0.21",
                             tags=["primary", "v1"], meta={"env": "prod"})
    c.catalog.register(OTHER_NODE, "127.0.0.22", service={"Service": "redis", "ID": "redis-other",
                                                          "Port": 6380, "Tags": ["v1", "old"],
                                                          "Meta": {"env": "dev"}})
    wait_until(lambda: len(c.health.service("redis")[1]) == 2, timeout=20)
    return c


def _instances(result: dict) -> list[tuple[str, str]]:
    return [(n["Node"]["Node"], n["Service"]["ID"]) for n in result["Nodes"]]


def test_query_create_read_list_update_delete(client) -> None:
    created = client.query.create("redis", name="crud-redis", tags=["v1"], ttl="7s")
    qid = created["ID"]
    got = client.query.get(qid)
    assert isinstance(got, list) and got[0]["ID"] == qid and got[0]["Name"] == "crud-redis"
    assert got[0]["Service"]["Service"] == "redis" and got[0]["Service"]["Tags"] == ["v1"]
    assert got[0]["DNS"] == {"TTL": "7s"} and got[0]["CreateIndex"] == got[0]["ModifyIndex"] > 0
    assert qid in [q["ID"] for q in client.query.list()]
    assert client.query.update(qid, "redis", name="crud-redis", tags=["primary"]) is True
    after = client.query.get(qid)[0]
    assert after["Service"]["Tags"] == ["primary"] and after["ModifyIndex"] > got[0]["ModifyIndex"]
    assert after["CreateIndex"] == got[0]["CreateIndex"]
    assert client.query.delete(qid) is True
    assert client.query.get(qid) is None  # 404 -> None in py-consul
    assert qid not in [q["ID"] for q in client.query.list()]


def test_query_execute_shape_filters_and_index(agent, client) -> None:
    qid = client.query.create("redis", name="exec-redis", tags=["v1", "!old"], onlypassing=True, ttl="9s")["ID"]
    result = client.query.execute("exec-redis")
    assert set(result) >= {"Service", "Nodes", "DNS", "Datacenter", "Failovers"}
    assert result["Service"] == "redis" and result["Datacenter"] == "dc1" and result["Failovers"] == 0
    assert result["DNS"] == {"TTL": "9s"}
    # Consul's reply embeds its QueryMeta struct, so these fields are part of the body too.
    assert result["KnownLeader"] is True and result["Index"] >= 1 and result["ConsistencyLevel"] == "leader"
    assert result["PeerName"] == ""
    assert _instances(result) == [(AGENT_NODE, "redis-local")]  # "!old" dropped the other instance
    entry = result["Nodes"][0]
    assert entry["Service"]["Port"] == 6379 and entry["Node"]["Node"] == AGENT_NODE
    assert {c["CheckID"] for c in entry["Checks"]} >= {"serfHealth"}
    # py-consul always sends Template.Type "name_prefix_match", so its queries are templates, and
    # Consul refuses to run a template by ID.
    with pytest.raises(consul.ConsulException, match="templates can only be resolved up by name"):
        client.query.execute(qid)
    status, _, data = agent.request("POST", "/v1/query", {"Name": "exec-plain", "Service": {"Service": "redis"}})
    plain_id = json.loads(data)["ID"]
    assert client.query.execute(plain_id)["Service"] == "redis"  # a plain query runs by ID
    status, headers, _ = agent.request("GET", "/v1/query/exec-redis/execute")
    assert status == 200 and int(headers["X-Consul-Index"]) >= 1
    assert client.query.execute("no-such-query") is None  # 404 "Query not found"
    status, _, body = agent.request("GET", "/v1/query/no-such-query/execute")
    assert status == 404 and body == b"Query not found"


def test_near_agent_puts_the_agents_node_first(client) -> None:
    client.query.create("redis", name="near-redis")
    qid = client.query.list()[-1]["ID"]
    body = {"Name": "near-redis", "Service": {"Service": "redis", "Near": "_agent"}}
    assert client.http.put(consul.callback.CB.boolean(), f"/v1/query/{qid}", data=json.dumps(body))
    orders = {tuple(_instances(client.query.execute("near-redis"))) for _ in range(12)}
    assert orders == {((AGENT_NODE, "redis-local"), (OTHER_NODE, "redis-other"))}
    # ?near= on the request names another node: that one goes first instead.
    assert _instances(client.query.execute("near-redis", near=OTHER_NODE))[0][0] == OTHER_NODE
    # Without Near the order is shuffled (Consul's rule), so both orders show up.
    client.query.create("redis", name="shuffled-redis")
    plain = "shuffled-redis"
    seen = set()
    for _ in range(60):
        seen.add(tuple(_instances(client.query.execute(plain))))
        if len(seen) == 2:
            break
    assert len(seen) == 2
    assert len(client.query.execute(plain, limit=1)["Nodes"]) == 1


def test_template_query_with_regexp_and_catch_all(agent, client) -> None:
    body = {"Name": "geo-", "Template": {"Type": "name_prefix_match", "Regexp": r"^geo-(\w+)-(\w+)$"},
            "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}"]}}
    status, _, data = agent.request("POST", "/v1/query", body)
    assert status == 200, data
    result = client.query.execute("geo-redis-primary")
    assert result["Service"] == "redis" and _instances(result) == [(AGENT_NODE, "redis-local")]
    explained = client.query.explain("geo-redis-old")
    assert explained["Query"]["Service"]["Service"] == "redis"
    assert explained["Query"]["Service"]["Tags"] == ["old"]
    assert _instances(client.query.execute("geo-redis-old")) == [(OTHER_NODE, "redis-other")]
    status, _, data = agent.request("POST", "/v1/query", {
        "Name": "", "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${name.full}"}})
    assert status == 200, data
    assert len(client.query.execute("redis")["Nodes"]) == 2  # the catch-all renders "redis"
    assert client.query.execute("geo-redis-primary")["Nodes"][0]["Service"]["ID"] == "redis-local"
    status, _, data = agent.request("POST", "/v1/query", {
        "Name": "bad-", "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${nope}"}})
    assert status == 500 and b"unknown variable" in data


def test_prepared_query_dns_answers(agent, client) -> None:
    client.query.create("redis", name="dns-redis", tags=["primary"], ttl="13s")
    answer = dig(agent.dns_port, "dns-redis.query.consul", "A", "+noall", "+answer")
    assert "dns-redis.query.consul.\t13\tIN\tA\t127.0.0.21" in answer.replace(" ", "\t")
    answer = dig(agent.dns_port, "dns-redis.query.dc1.consul", "A", "+noall", "+answer")
    assert "127.0.0.21" in answer
    srv = dig(agent.dns_port, "_dns-redis._tcp.query.consul", "SRV", "+noall", "+answer", "+additional")
    assert "1 1 6379 7f000015.addr.dc1.consul." in srv and "127.0.0.21" in srv
    # A template (geo-, created above) renders the DNS name too.
    assert "127.0.0.22" in dig(agent.dns_port, "geo-redis-old.query.consul", "A", "+noall", "+answer")
    missing = dig(agent.dns_port, "no-such-query.query.consul", "A")
    assert "status: NXDOMAIN" in missing
    assert "status: NXDOMAIN" in dig(agent.dns_port, "dns-redis.query.dc9.consul", "A")
    # A query created after a miss is answered at once (query answers are never cached).
    assert "status: NXDOMAIN" in dig(agent.dns_port, "late-redis.query.consul", "A")
    client.query.create("redis", name="late-redis", tags=["old"])
    assert "127.0.0.22" in dig(agent.dns_port, "late-redis.query.consul", "A", "+noall", "+answer")


def test_config_entries_crud_cas_and_errors(agent, client) -> None:
    assert client.config.set("service-defaults", "api", {"Protocol": "http"}) is True
    entry = client.config.get("service-defaults", "api")
    assert entry["Kind"] == "service-defaults" and entry["Name"] == "api" and entry["Protocol"] == "http"
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
    assert client.config.set("service-defaults", "api", {"Protocol": "grpc"}, cas=entry["ModifyIndex"] + 99) is False
    assert client.config.set("service-defaults", "api", {"Protocol": "grpc"}, cas=entry["ModifyIndex"]) is True
    assert client.config.set("service-defaults", "api", {"Protocol": "tcp"}, cas=0) is False  # exists
    assert [e["Name"] for e in client.config.list("service-defaults")] == ["api"]
    # snake_case / lowercase keys are accepted and written back in Consul's spelling.
    status, _, data = agent.request("PUT", "/v1/config", {"kind": "proxy-defaults", "name": "global",
                                                           "config": {"protocol": "http"}})
    assert status == 200 and data == b"true"
    assert client.config.get("proxy-defaults", "global")["Config"] == {"protocol": "http"}
    for body, message in (
            ({"Kind": "bogus", "Name": "x"}, b"invalid config entry kind: bogus"),
            ({"Name": "x"}, b"Payload does not contain a kind/Kind key"),
            ({"Kind": "service-defaults"}, b"Name is required"),
            ({"Kind": "proxy-defaults", "Name": "x"}, b'only "global" is supported'),
            ({"Kind": "service-splitter", "Name": "api", "Splits": [{"Weight": 70}]},
             b"the sum of all split weights must be 100, not 70.000000")):
        status, _, data = agent.request("PUT", "/v1/config", body)
        assert status == 400 and message in data, (body, status, data)
    status, _, data = agent.request("GET", "/v1/config/service-defaults/nope")
    assert status == 404 and b'Config entry not found for "service-defaults" / "nope"' in data
    current = client.config.get("service-defaults", "api")["ModifyIndex"]
    assert client.config.delete("service-defaults", "api", cas=current + 1) is False
    assert client.config.delete("service-defaults", "api", cas=current) is True
    assert client.config.get("service-defaults", "api") is None
    status, _, data = agent.request("DELETE", "/v1/config/service-defaults/api")
    assert status == 200 and json.loads(data) == {}
    assert client.config.delete("proxy-defaults", "global") is True


def test_config_read_blocks_until_the_entry_changes(agent, client) -> None:
    client.config.set("service-defaults", "blocky", {"Protocol": "tcp"})
    status, headers, _ = agent.request("GET", "/v1/config/service-defaults/blocky")
    index = int(headers["X-Consul-Index"])
    result: dict = {}

    def waiter() -> None:
        t0 = time.monotonic()
        status, headers, data = agent.request("GET", f"/v1/config/service-defaults/blocky?index={index}&wait=30s",
                                              timeout=40)
        result.update(status=status, index=int(headers["X-Consul-Index"]), body=json.loads(data),
                      elapsed=time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    # Armed: an unrelated write (another entry) must not answer the blocked read.
    client.config.set("service-defaults", "unrelated", {"Protocol": "tcp"})
    t.join(0.5)
    assert t.is_alive()
    client.config.set("service-defaults", "blocky", {"Protocol": "http"})
    t.join(30)
    assert result["status"] == 200 and result["index"] > index and result["body"]["Protocol"] == "http"


def test_discovery_chain_with_resolver_subsets_and_splitter(agent, client) -> None:
    assert client.config.set("service-defaults", "web", {"Protocol": "http"})
    assert client.config.set("service-resolver", "web", {
        "DefaultSubset": "v1", "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                                           "v2": {"Filter": "Service.Meta.version == v2"}}})
    assert client.config.set("service-splitter", "web", {
        "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]})
    chain = client.discovery_chain.get("web")["Chain"]
    assert {k: chain[k] for k in ("ServiceName", "Namespace", "Datacenter", "Protocol", "StartNode")} == {
        "ServiceName": "web", "Namespace": "default", "Datacenter": "dc1", "Protocol": "http",
        "StartNode": "splitter:web.default.default"}
    splitter = chain["Nodes"]["splitter:web.default.default"]
    assert splitter["Type"] == "splitter"
    assert splitter["Splits"] == [{"Weight": 90, "NextNode": "resolver:v1.web.default.default.dc1"},
                                  {"Weight": 10, "NextNode": "resolver:v2.web.default.default.dc1"}]
    resolver = chain["Nodes"]["resolver:v1.web.default.default.dc1"]
    assert resolver["Type"] == "resolver" and resolver["Name"] == "v1.web.default.default.dc1"
    assert resolver["Resolver"]["Target"] == "v1.web.default.default.dc1"
    target = chain["Targets"]["v1.web.default.default.dc1"]
    assert target["Service"] == "web" and target["ServiceSubset"] == "v1" and target["Datacenter"] == "dc1"
    assert target["Subset"] == {"Filter": "Service.Meta.version == v1"}
    assert target["SNI"].startswith("v1.web.default.dc1.internal.")
    # The splitter depends on the http protocol: Consul refuses to strand it.
    status, _, data = agent.request("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web",
                                                          "Protocol": "tcp"})
    assert status == 500 and b"does not permit advanced routing or splitting" in data
    # Every service the chain can end at must speak its protocol.
    status, _, data = agent.request("PUT", "/v1/config", {"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "Service": "redis"}]})
    assert status == 500 and b'uses inconsistent protocols; service "redis" has "tcp" which is not "http"' in data
    # Deleting what the chain depends on is refused too (the splitter would be stranded on tcp).
    status, _, data = agent.request("DELETE", "/v1/config/service-defaults/web")
    assert status == 500 and b"does not permit advanced routing or splitting" in data
    # POST with an override compiles as asked without writing anything.
    over = client.discovery_chain.get("web", override_connect_timeout="22s")["Chain"]
    assert over["Nodes"]["resolver:v2.web.default.default.dc1"]["Resolver"]["ConnectTimeout"] == "22s"
    assert client.discovery_chain.get("unconfigured")["Chain"]["StartNode"] == \
        "resolver:unconfigured.default.default.dc1"


def test_cached_reads_report_x_cache_and_age(agent, client) -> None:
    client.query.create("redis", name="cache-redis")
    for path in ("/v1/health/service/redis?cached", "/v1/catalog/services?cached",
                 "/v1/catalog/service/redis?cached", "/v1/query/cache-redis/execute?cached",
                 "/v1/discovery-chain/redis?cached"):
        _, first, _ = agent.request("GET", path)
        _, second, _ = agent.request("GET", path)
        assert first["X-Cache"] == "MISS" and "Age" not in first, path
        assert second["X-Cache"] == "HIT" and int(second["Age"]) >= 0, path
    _, plain, _ = agent.request("GET", "/v1/health/service/redis")
    assert "X-Cache" not in plain
    # A change of the data is a miss again.
    client.agent.service.register("redis", service_id="redis-extra", port=6390)
    wait_until(lambda: agent.request("GET", "/v1/health/service/redis?cached")[1]["X-Cache"] == "MISS", timeout=10)
    client.agent.service.deregister("redis-extra")


def test_peer_parameter_answers_empty_results(agent, client) -> None:
    assert client.health.service("redis")[1]  # there is data without ?peer
    for path, empty in (("/v1/health/service/redis?peer=other", []), ("/v1/catalog/services?peer=other", {}),
                        ("/v1/catalog/service/redis?peer=other", []), ("/v1/catalog/nodes?peer=other", []),
                        ("/v1/health/checks/redis?peer=other", []), ("/v1/health/state/any?peer=other", []),
                        (f"/v1/catalog/node/{AGENT_NODE}?peer=other", None)):
        status, headers, data = agent.request("GET", path)
        assert status == 200 and json.loads(data) == empty and headers["X-Consul-Index"] == "1", path


def test_event_list_filters_by_name(agent, client) -> None:
    client.event.fire("deploy", "v1")
    client.event.fire("restart", "now")
    client.event.fire("deploy", "v2")
    _, deploys = client.event.list(name="deploy")
    assert [e["Name"] for e in deploys] == ["deploy", "deploy"]
    _, everything = client.event.list()
    assert {e["Name"] for e in everything} >= {"deploy", "restart"}
    _, none = client.event.list(name="nothing-by-this-name")
    assert none == []


def test_config_cli_write_read_list_delete(agent, tmp_path) -> None:
    env = beacon_env(CONSUL_HTTP_ADDR=agent.http_addr)

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(beacon_cmd("config", *args), capture_output=True, text=True, env=env, timeout=30,
                              input=stdin)

    path = os.path.join(tmp_path, "entry.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"Kind": "service-defaults", "Name": "cli-svc", "Protocol": "http"}, f)
    out = cli("write", path)
    assert out.returncode == 0 and out.stdout.strip() == "Config entry written: service-defaults/cli-svc"
    out = cli("read", "-kind", "service-defaults", "-name", "cli-svc")
    assert out.returncode == 0 and json.loads(out.stdout)["Protocol"] == "http"
    assert "cli-svc" in cli("list", "-kind", "service-defaults").stdout.split()
    out = cli("write", "-cas", "-modify-index", "1", "-", stdin=json.dumps(
        {"kind": "service-defaults", "name": "cli-svc", "protocol": "grpc"}))
    assert out.returncode == 1 and "Config entry not updated: service-defaults/cli-svc" in out.stderr
    out = cli("write", "-", stdin='Kind = "service-defaults"')
    assert out.returncode == 1 and "JSON entries only" in out.stderr
    out = cli("write", "-", stdin=json.dumps({"Kind": "service-splitter", "Name": "x", "Splits": [{"Weight": 5}]}))
    assert out.returncode == 1 and "the sum of all split weights must be 100" in out.stderr
    assert "Must specify the -kind parameter" in cli("read", "-name", "x").stderr
    out = cli("delete", "-kind", "service-defaults", "-name", "cli-svc")
    assert out.returncode == 0 and out.stdout.strip() == "Config entry deleted: service-defaults/cli-svc"
    assert cli("read", "-kind", "service-defaults", "-name", "cli-svc").returncode == 1


def test_malformed_bodies_are_400s_and_the_agent_keeps_serving(agent) -> None:
    # "x" speaks http, so routers and splitters for it are compiled (and their shapes checked).
    assert agent.request("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "x", "Protocol": "http"})[0] == 200
    bodies: list[object] = [
        [], "[1", "7", {"Kind": 5, "Name": "x"}, {"Kind": "service-defaults", "Name": ["x"]},
        {"Kind": "service-splitter", "Name": "x", "Splits": "all"},
        {"Kind": "service-splitter", "Name": "x", "Splits": [{"Weight": "50"}]},
        {"Kind": "service-resolver", "Name": "x", "Subsets": ["v1"]},
        {"Kind": "service-resolver", "Name": "x", "Subsets": {"v1": "yes"}},
        {"Kind": "service-resolver", "Name": "x", "Failover": {"*": "dc2"}},
        {"Kind": "service-resolver", "Name": "x", "Redirect": "other"},
        {"Kind": "service-router", "Name": "x", "Routes": [{"Match": ["nope"]}]},
        {"Kind": "service-router", "Name": "x", "Routes": [{"Destination": "web"}]},
        {"Kind": "ingress-gateway", "Name": "x", "Listeners": ["80"]},
        {"Kind": "terminating-gateway", "Name": "x", "Services": "web"},
        {"Kind": "service-intentions", "Name": "x", "Sources": ["web"]},
        {"Kind": "service-defaults", "Name": "x", "Meta": {"k": 1}},
        {"Kind": "service-splitter", "Name": "x", "Splits": [{"Weight": 100, "Service": ["y"]}]},
    ]
    for body in bodies:
        status, _, data = agent.request("PUT", "/v1/config", body)
        assert status == 400, (body, status, data)
    for body in ([], {"Service": "web"}, {"Service": {"Service": 5}}, {"Template": "x", "Service": {"Service": "w"}},
                 {"Service": {"Service": "w", "Tags": "a"}}, {"Service": {"Service": "w"}, "DNS": {"TTL": 5}}):
        status, _, data = agent.request("POST", "/v1/query", body)
        assert status in (400, 500) and data, (body, status, data)
        assert not data.startswith(b"Internal error"), (body, data)
    # A redirect loop is refused when the second half is written.
    assert agent.request("PUT", "/v1/config", {"Kind": "service-resolver", "Name": "loop-a",
                                               "Redirect": {"Service": "loop-b"}})[0] == 200
    status, _, data = agent.request("PUT", "/v1/config", {"Kind": "service-resolver", "Name": "loop-b",
                                                          "Redirect": {"Service": "loop-a"}})
    assert status == 500 and b"circular resolver redirect" in data
    status, _, _ = agent.request("GET", "/v1/config/service-defaults")
    assert status == 200
