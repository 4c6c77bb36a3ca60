"""ACLs through py-consul's `acl` API, raw HTTP and the CLI, against real dev agents."""

from __future__ import annotations

import json
import os
import subprocess

import consul
import pytest
from consul.exceptions import BadRequest

from tests.conftest import beacon_cmd, beacon_env, launch, launch_acl_deny, wait_until

pytestmark = pytest.mark.integration

MGMT = "6d1ae1a6-5d2f-4f3f-9c43-0d3a2b9b1e11"


@pytest.fixture(scope="module")
def deny_agent(tmp_path_factory):
    agent = launch_acl_deny(tmp_path_factory.mktemp("acl"), MGMT)
    yield agent
    agent.stop()


def _c(agent, token: str | None = None) -> consul.Consul:
    return consul.Consul(host=agent.host, port=agent.http_port, token=token)


def test_acl_endpoints_answer_401_when_acls_are_disabled(dev_agent) -> None:
    for path in ("/v1/acl/tokens", "/v1/acl/bootstrap", "/v1/agent/token/default"):
        status, _, body = dev_agent.request("PUT" if "bootstrap" in path or "agent" in path else "GET", path, b"{}")
        assert (status, body) == (401, b"ACL support disabled")
    with pytest.raises(consul.ACLDisabled):
        _c(dev_agent).acl.token.list()


def test_bootstrap_once(tmp_path) -> None:
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny"}}))
    agent = launch("-config-file", str(cfg))
    try:
        tok = _c(agent).acl.bootstrap()
        assert tok["Policies"] == [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}]
        assert _c(agent, tok["SecretID"]).acl.token.read_self()["AccessorID"] == tok["AccessorID"]
        with pytest.raises(consul.ACLPermissionDenied, match="ACL bootstrap no longer allowed"):
            _c(agent).acl.bootstrap()
    finally:
        agent.stop()


def test_default_deny_anonymous_reads_and_writes_nothing(deny_agent) -> None:
    mgmt, anon = _c(deny_agent, MGMT), _c(deny_agent)
    assert mgmt.kv.put("anon/x", "1") is True  # armed: the key exists and management sees it
    assert mgmt.kv.get("anon/x")[1]["Value"] == b"1"
    with pytest.raises(consul.ACLPermissionDenied, match="anonymous token lacks permission 'key:read'"):
        anon.kv.get("anon/x")
    assert anon.kv.get("anon/", recurse=True)[1] is None  # everything filtered: Consul's 404
    with pytest.raises(consul.ACLPermissionDenied):
        anon.kv.put("anon/y", "1")
    with pytest.raises(consul.ACLPermissionDenied):
        anon.agent.service.register("sneaky")
    assert "sneaky" not in mgmt.agent.services()
    with pytest.raises(consul.ACLPermissionDenied):
        anon.acl.token.list()


def test_key_prefix_token_writes_and_sees_only_its_prefix(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    pol = mgmt.acl.policy.create("app-writer", rules='key_prefix "app/" { policy = "write" }')
    tok = mgmt.acl.token.create(policies_id=[pol["ID"]], description="app")
    mgmt.kv.put("other/x", "secret")
    app = _c(deny_agent, tok["SecretID"])
    assert app.kv.put("app/x", "1") is True
    with pytest.raises(consul.ACLPermissionDenied, match="lacks permission 'key:write' on \"other/x\""):
        app.kv.put("other/x", "2")
    assert mgmt.kv.get("other/x")[1]["Value"] == b"secret"
    _, entries = app.kv.get("", recurse=True)
    assert [e["Key"] for e in entries] == ["app/x"]
    assert app.kv.get("", keys=True)[1] == ["app/x"]
    status, headers, _ = deny_agent.request("GET", f"/v1/kv/?recurse&token={tok['SecretID']}")
    assert status == 200 and headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    # The same listing as management is not filtered and holds more.
    status, headers, body = deny_agent.request("GET", f"/v1/kv/?recurse&token={MGMT}")
    assert "X-Consul-Results-Filtered-By-ACLs" not in headers and len(json.loads(body)) > 1
    assert app.acl.token.read_self()["Description"] == "app"
    with pytest.raises(consul.ACLPermissionDenied):
        app.acl.policy.list()


def test_deleted_token_stops_working(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    tok = mgmt.acl.token.create(service_identities=[{"ServiceName": "api"}])
    user = _c(deny_agent, tok["SecretID"])
    assert user.agent.service.register("api", service_id="api-1") is True
    with pytest.raises(consul.ACLPermissionDenied):
        user.agent.service.register("web", service_id="web-1")
    assert mgmt.acl.token.delete(tok["AccessorID"]) is True
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        user.agent.services()


def test_tokens_policies_roles_crud(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    pol = mgmt.acl.policy.create("svc-read", rules={"service_prefix": {"": {"policy": "read"}}},
                                 description="read services")
    assert mgmt.acl.policy.read(pol["ID"])["Description"] == "read services"
    by_name = deny_agent.json("GET", f"/v1/acl/policy/name/svc-read?token={MGMT}")
    assert by_name["ID"] == pol["ID"]
    role = mgmt.acl.role.create("reader", policies_name=["svc-read"])
    assert mgmt.acl.role.read_by_name("reader")["Policies"] == [{"ID": pol["ID"], "Name": "svc-read"}]
    tok = mgmt.acl.token.create(roles_name=["reader"])
    clone = mgmt.acl.token.clone(tok["AccessorID"], description="copy")
    assert clone["Roles"] == tok["Roles"] and clone["SecretID"] != tok["SecretID"]
    listed = {t["AccessorID"]: t for t in mgmt.acl.token.list()}
    assert tok["AccessorID"] in listed and clone["AccessorID"] in listed
    mgmt.agent.service.register("db", service_id="db-1")
    reader = _c(deny_agent, clone["SecretID"])
    assert "db" in reader.catalog.services()[1]
    with pytest.raises(consul.ACLPermissionDenied):
        reader.kv.put("x", "1")
    assert mgmt.acl.role.delete(role["ID"]) is True
    assert reader.catalog.services()[1] == {}  # its only role is gone: nothing readable, filtered


def test_tokens_from_bearer_and_query_and_agent_token_endpoint(deny_agent) -> None:
    import urllib.request

    # The leader writes the initial_management token soon after it starts leading.
    wait_until(lambda: deny_agent.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=30)
    req = urllib.request.Request(f"{deny_agent.http}/v1/acl/token/self",
                                 headers={"Authorization": f"Bearer {MGMT}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["Description"] == "Initial Management Token"
    # The leader stored the configured initial_management token, which ends bootstrap (as Consul).
    with pytest.raises(consul.ACLPermissionDenied, match="ACL bootstrap no longer allowed"):
        _c(deny_agent).acl.bootstrap()
    status, _, _ = deny_agent.request("PUT", "/v1/agent/token/default", {"Token": MGMT})
    assert status == 403
    status, _, _ = deny_agent.request("PUT", f"/v1/agent/token/default?token={MGMT}", {"Token": "nope"})
    assert status == 200
    # The default token now stands in for anonymous: it names no token, so a tokenless call fails.
    status, _, body = deny_agent.request("GET", "/v1/kv/anon/x")
    assert status == 403 and body == b"ACL not found"
    status, _, _ = deny_agent.request("PUT", f"/v1/agent/token/default?token={MGMT}", {"Token": ""})
    assert status == 200
    assert deny_agent.request("GET", "/v1/kv/anon/x")[0] == 403


def _cli(agent, *args: str, token: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = beacon_env(CONSUL_HTTP_ADDR=agent.http_addr)
    if token:
        env["CONSUL_HTTP_TOKEN"] = token
    else:
        env.pop("CONSUL_HTTP_TOKEN", None)
    return subprocess.run(beacon_cmd(*args), env=env, capture_output=True, text=True, timeout=30, input=stdin)


def test_cli_policy_and_token(deny_agent, tmp_path) -> None:
    rules = tmp_path / "rules.hcl"
    rules.write_text('key_prefix "cli/" { policy = "write" }\n')
    out = _cli(deny_agent, "acl", "policy", "create", "-name", "cli-writer", "-rules", f"@{rules}", token=MGMT)
    assert out.returncode == 0, out.stderr
    assert "Name:" in out.stdout and "cli-writer" in out.stdout
    denied = _cli(deny_agent, "acl", "policy", "list")
    assert denied.returncode == 1 and "403" in denied.stderr
    token_file = tmp_path / "mgmt.token"
    token_file.write_text(MGMT + "\n")
    out = _cli(deny_agent, "acl", "token", "create", "-policy-name", "cli-writer", "-format", "json",
               "-token-file", str(token_file))
    assert out.returncode == 0, out.stderr
    secret = json.loads(out.stdout)["SecretID"]
    assert _cli(deny_agent, "kv", "put", "cli/a", "1", token=secret).returncode == 0
    bad = _cli(deny_agent, "kv", "put", "nope/a", "1", "-token", secret)
    assert bad.returncode == 1 and "Permission denied" in bad.stderr
    listed = _cli(deny_agent, "acl", "policy", "list", token=MGMT)
    assert "cli-writer:" in listed.stdout and "global-management:" in listed.stdout
    read = _cli(deny_agent, "acl", "policy", "read", "-name", "cli-writer", token=MGMT)
    assert 'key_prefix "cli/"' in read.stdout
    assert os.path.exists(rules)


def test_service_and_node_rules_gate_registration_and_discovery(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    node = deny_agent.json("GET", f"/v1/agent/self?token={MGMT}")["Config"]["NodeName"]
    for name in ("web", "db"):
        assert mgmt.catalog.register("ext-node", "10.9.9.9", service={"Service": name, "ID": f"{name}-1"})
    pol = mgmt.acl.policy.create("web-only", rules='service "web" { policy = "write" }\n'
                                                   f'node "{node}" {{ policy = "read" }}\n')
    web = _c(deny_agent, mgmt.acl.token.create(policies_id=[pol["ID"]])["SecretID"])
    # Discovery: only what the token may read, flagged as filtered.
    assert set(web.catalog.services()[1]) == {"web"}
    status, headers, body = deny_agent.request("GET", f"/v1/catalog/services?token={MGMT}")
    assert {"web", "db"} <= set(json.loads(body))  # armed: both exist
    token = web.token
    status, headers, body = deny_agent.request("GET", f"/v1/catalog/service/db?token={token}")
    assert (status, json.loads(body)) == (200, []) and headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    # web is on ext-node, which the token may not read: the instance is filtered out too.
    assert web.catalog.service("web")[1] == []
    assert [n["Node"] for n in web.catalog.nodes()[1]] == [node]
    assert web.health.service("db")[1] == []
    # Registration: the service it may write, not another, and not on a node it may not write.
    assert web.agent.service.register("web", service_id="web-local") is True
    with pytest.raises(consul.ACLPermissionDenied, match="service:write"):
        web.agent.service.register("db", service_id="db-local")
    with pytest.raises(consul.ACLPermissionDenied, match="node:write"):
        web.catalog.register("other-node", "10.9.9.8", service={"Service": "web"})
    with pytest.raises(consul.ACLPermissionDenied):
        web.catalog.deregister("ext-node")
    with pytest.raises(consul.ACLPermissionDenied, match="operator:read"):
        web.operator.raft_config()
    status, _, _ = deny_agent.request("GET", f"/v1/snapshot?token={token}")
    assert status == 403


def test_prepared_queries_follow_query_and_service_rules(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    mgmt.catalog.register("q-node", "10.9.9.7", service={"Service": "qsvc", "ID": "qsvc-1"})
    # (py-consul's query.create sends its token in the body, not as a header: raw HTTP here.)
    qid = deny_agent.json("POST", f"/v1/query?token={MGMT}", {"Name": "q-all", "Service": {"Service": "qsvc"}})["ID"]
    pol = mgmt.acl.policy.create("q-reader", rules='query_prefix "q-" { policy = "read" }\n'
                                                   'service "qsvc" { policy = "read" }\n')
    reader = mgmt.acl.token.create(policies_id=[pol["ID"]])["SecretID"]
    assert [q["Name"] for q in _c(deny_agent, reader).query.list()] == ["q-all"]
    # The instance's node is not readable by this token: execute drops it (management sees it).
    status, _, body = deny_agent.request("GET", f"/v1/query/{qid}/execute?token={MGMT}")
    assert [n["Node"]["Node"] for n in json.loads(body)["Nodes"]] == ["q-node"]
    status, headers, body = deny_agent.request("GET", f"/v1/query/{qid}/execute?token={reader}")
    assert status == 200 and json.loads(body)["Nodes"] == [] and headers[
        "X-Consul-Results-Filtered-By-ACLs"] == "true"
    status, _, _ = deny_agent.request("DELETE", f"/v1/query/{qid}?token={reader}")
    assert status == 403
    assert [q["ID"] for q in mgmt.query.list()] == [qid]


def test_txn_checks_every_operation(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    pol = mgmt.acl.policy.create("txn-app", rules='key_prefix "txn/" { policy = "write" }')
    token = mgmt.acl.token.create(policies_id=[pol["ID"]])["SecretID"]
    import base64

    def op(key: str) -> dict:
        return {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(b"v").decode()}}
    status, _, body = deny_agent.request("PUT", f"/v1/txn?token={token}", [op("txn/a"), op("elsewhere/b")])
    assert status == 409
    assert json.loads(body)["Errors"] == [{"OpIndex": 1, "What": "Permission denied"}]
    assert mgmt.kv.get("txn/a")[1] is None  # nothing applied
    status, _, body = deny_agent.request("PUT", f"/v1/txn?token={token}", [op("txn/a"), op("txn/b")])
    assert status == 200, body
    assert mgmt.kv.get("txn/b")[1]["Value"] == b"v"


def test_token_expiration_bounds(deny_agent) -> None:
    mgmt = _c(deny_agent, MGMT)
    with pytest.raises(BadRequest, match="1m0s and 24h0m0s"):
        mgmt.acl.token.create(expiration_ttl="30s")
    tok = mgmt.acl.token.create(expiration_ttl="10m")
    assert tok["ExpirationTime"].endswith("Z")
    assert _c(deny_agent, tok["SecretID"]).acl.token.read_self()["AccessorID"] == tok["AccessorID"]


def test_config_entries_need_the_rights_consul_asks_per_kind(deny_agent) -> None:
    """service-* kinds: service rights on the entry's name; service-intentions: intentions rights;
    proxy-defaults and gateways: mesh:write (operator:write when no mesh rule), proxy-defaults
    readable by any token."""
    mgmt = _c(deny_agent, MGMT)

    def token(rules: str) -> str:
        pid = mgmt.acl.policy.create(name=f"cfg{abs(hash(rules))}", rules=rules)["ID"]
        return mgmt.acl.token.create(policies_id=[pid])["SecretID"]

    def put(tok: str, entry: dict) -> tuple[int, bytes]:
        status, _, body = deny_agent.request("PUT", f"/v1/config?token={tok}", entry)
        return status, body

    web = token('service "web" { policy = "write" }')
    assert put(web, {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}) == (200, b"true")
    status, body = put(web, {"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
    assert status == 403 and b"lacks permission 'service:write' on \"db\"" in body
    status, body = put(web, {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}})
    assert status == 403 and b"lacks permission 'mesh:write'" in body
    status, body = put(web, {"Kind": "service-intentions", "Name": "web", "Sources": [{"Name": "a", "Action": "allow"}]})
    assert status == 403 and b"'intentions:write' on \"web\"" in body  # service write alone: intentions read
    assert put(MGMT, {"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"})[0] == 200
    assert put(MGMT, {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}})[0] == 200
    # Reads: the named service's read right; a list keeps what the token may read.
    assert deny_agent.request("GET", f"/v1/config/service-defaults/web?token={web}")[0] == 200
    assert deny_agent.request("GET", f"/v1/config/service-defaults/db?token={web}")[0] == 403
    status, headers, body = deny_agent.request("GET", f"/v1/config/service-defaults?token={web}")
    assert [e["Name"] for e in json.loads(body)] == ["web"] and headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert deny_agent.request("GET", f"/v1/config/proxy-defaults/global?token={web}")[0] == 200
    assert deny_agent.request("DELETE", f"/v1/config/service-defaults/db?token={web}")[0] == 403
    # Intentions rights write service-intentions entries of their service only.
    ixn = token('service "web" { policy = "read"\n intentions = "write" }')
    assert put(ixn, {"Kind": "service-intentions", "Name": "web", "Sources": [{"Name": "a", "Action": "allow"}]})[0] == 200
    assert put(ixn, {"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "a", "Action": "allow"}]})[0] == 403
    # mesh:write, or operator:write when the token has no mesh rule; a mesh rule wins over operator.
    for rules, expect in (('mesh = "write"', 200), ('operator = "write"', 200),
                          ('operator = "write"\nmesh = "read"', 403)):
        status, body = put(token(rules), {"Kind": "ingress-gateway", "Name": "edge",
                                          "Listeners": [{"Port": 8080, "Protocol": "tcp",
                                                         "Services": [{"Name": "db"}]}]})
        assert status == expect, (rules, status, body)
