"""Intentions on a real agent: py-consul's connect.intentions (upsert, read, list, match, check,
delete) over service-intentions config entries, /v1/agent/connect/authorize, bad requests, and the
ACLs (intentions read or write from a service rule's `intentions`, check with service:read, leaf
certificates with service:write, public CA roots)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import consul
import pytest

from tests.conftest import beacon_cmd, beacon_env, launch, launch_acl_deny

pytestmark = pytest.mark.integration

MGMT = "8f5a3c1e-2b7d-4e9a-9c6f-1a2b3c4d5e6f"


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


@pytest.fixture(scope="module")
def agent():
    a = launch()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory):
    a = launch_acl_deny(tmp_path_factory.mktemp("ixn-acl"), MGMT)
    yield a
    a.stop()


def _authorize(agent, target: str, source: str, token: str | None = None) -> tuple[int, dict]:
    status, body = call(agent, "POST", "/v1/agent/connect/authorize",
                        {"Target": target, "ClientCertURI": f"spiffe://11111111-2222.consul/ns/default/dc/dc1/svc/{source}"},
                        token)
    return status, json.loads(body) if status == 200 else body


def test_py_consul_manages_intentions_and_they_decide_in_precedence_order(agent) -> None:
    ci = consul.Consul(host="127.0.0.1", port=agent.http_port).connect.intentions
    assert ci.upsert("web", "db", action="allow", description="front end") is True
    assert ci.upsert("*", "db", action="deny") is True
    assert ci.upsert("batch", "*", action="allow") is True
    listed = [(i["SourceName"], i["DestinationName"], i["Action"], i["Precedence"]) for i in ci.list()]
    assert listed == [("web", "db", "allow", 9), ("*", "db", "deny", 8), ("batch", "*", "allow", 6)]
    got = ci.read("web", "db")
    assert (got["Description"], got["SourceType"], got["SourceNS"], got["DestinationNS"]) == \
        ("front end", "consul", "default", "default")
    # The intentions are the service-intentions config entry of the destination.
    entry = consul.Consul(host="127.0.0.1", port=agent.http_port).config.get("service-intentions", "db")
    assert [(s["Name"], s["Action"], s["Precedence"]) for s in entry["Sources"]] == [("web", "allow", 9), ("*", "deny", 8)]
    assert got["ModifyIndex"] == entry["ModifyIndex"]
    assert (ci.check("web", "db"), ci.check("cache", "db"), ci.check("batch", "queue"), ci.check("x", "queue")) == \
        (True, False, True, True)  # ACLs disabled: allowed when nothing matches
    assert [(i["SourceName"], i["DestinationName"]) for i in ci.match("source", "batch")["batch"]] == \
        [("*", "db"), ("batch", "*")]
    # Upserting the same pair replaces it; deleting the last source of an entry deletes the entry.
    assert ci.upsert("web", "db", action="deny") is True
    assert ci.check("web", "db") is False
    assert ci.delete("web", "db") is True and ci.delete("*", "db") is True
    status, _ = call(agent, "GET", "/v1/config/service-intentions/db")
    assert status == 404
    status, body = call(agent, "GET", "/v1/connect/intentions/exact?source=web&destination=db")
    assert (status, body.strip()) == (404, b"Intention not found")
    assert ci.check("web", "db") is True


def test_authorize_answers_for_a_spiffe_service_identity(agent) -> None:
    ci = consul.Consul(host="127.0.0.1", port=agent.http_port).connect.intentions
    assert ci.upsert("api", "billing", action="deny") is True
    status, out = _authorize(agent, "billing", "api")
    assert status == 200 and out == {"Authorized": False,
                                     "Reason": "Matched intention: DENY api => billing (ID: , Precedence: 9)"}
    status, out = _authorize(agent, "ledger", "api")
    assert out == {"Authorized": True, "Reason": "ACLs disabled, access is allowed by default"}
    for body, message in (({"ClientCertURI": "spiffe://t/ns/default/dc/dc1/svc/a"}, b"Target service must be specified"),
                          ({"Target": "x"}, b"ClientCertURI must be specified"),
                          ({"Target": "x", "ClientCertURI": "https://x"}, b"not a valid Connect identifier"),
                          ({"Target": "x", "ClientCertURI": "spiffe://t/agent/client/dc/dc1/id/n"},
                           b"must be a valid Service identifier")):
        status, text = call(agent, "POST", "/v1/agent/connect/authorize", body)
        assert status == 400 and message in text, (body, status, text)


def test_bad_intention_requests_are_400s_that_write_nothing(agent) -> None:
    before = call(agent, "GET", "/v1/connect/intentions")[1]
    for method, path, body, message in (
            ("PUT", "/v1/connect/intentions/exact?destination=db", {"Action": "allow"},
             b"required query parameter 'source' not set"),
            ("PUT", "/v1/connect/intentions/exact?source=w*&destination=db", {"Action": "allow"},
             b"SourceName: wildcard character '*' cannot be used with partial values"),
            ("PUT", "/v1/connect/intentions/exact?source=web&destination=db", {"Action": "maybe"},
             b"Action must be set to 'allow' or 'deny'"),
            ("PUT", "/v1/connect/intentions/exact?source=web&destination=db", {"Action": "allow", "Meta": {"a": "b"}},
             b"Meta must be omitted for config entry based intentions"),
            ("PUT", "/v1/connect/intentions/exact?source=web&destination=db", b"[1,", b"Request decode failed"),
            ("GET", "/v1/connect/intentions/match?by=sideways&name=db", None,
             b"'by' parameter must be one of 'source' or 'destination'"),
            ("GET", "/v1/connect/intentions/match?by=source", None, b"required query parameter 'name' not set"),
            ("GET", "/v1/connect/intentions/check?source=web", None, b"required query parameter 'destination' not set"),
            ("PUT", "/v1/config", {"Kind": "service-intentions", "Name": "db",
                                   "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]},
             b'Sources[1] defines "web" more than once')):
        status, text = call(agent, method, path, body)
        assert status == 400 and message in text, (method, path, status, text)
    assert call(agent, "GET", "/v1/connect/intentions")[1] == before


def test_intention_acls(acl_agent) -> None:
    admin = consul.Consul(host="127.0.0.1", port=acl_agent.http_port, token=MGMT)

    def token(rules: str) -> str:
        pid = admin.acl.policy.create(name=f"p{abs(hash(rules))}", rules=rules)["ID"]
        return admin.acl.token.create(policies_id=[pid])["SecretID"]

    reader = token('service "db" { policy = "read" }')  # intentions read implied
    writer = token('service "db" { policy = "read"\n intentions = "write" }')
    other = token('service "web" { policy = "read" }')
    mgmt_ci = admin.connect.intentions
    assert mgmt_ci.upsert("web", "db", action="allow") and mgmt_ci.upsert("api", "cache", action="allow")

    path = "/v1/connect/intentions/exact?source=batch&destination=db"
    assert call(acl_agent, "PUT", path, {"Action": "allow"}, reader)[0] == 403
    status, body = call(acl_agent, "PUT", path, {"Action": "allow"}, writer)
    assert (status, body.strip()) == (200, b"true")
    assert call(acl_agent, "PUT", "/v1/connect/intentions/exact?source=db&destination=web", {"Action": "allow"},
                writer)[0] == 403  # write is on the destination
    # Reading one needs intentions read on its source or its destination.
    assert call(acl_agent, "GET", path, token=reader)[0] == 200
    assert call(acl_agent, "GET", "/v1/connect/intentions/exact?source=web&destination=db", token=other)[0] == 200
    assert call(acl_agent, "GET", path, token=other)[0] == 403
    # The list shows what the token may read, and says it filtered.
    req = urllib.request.Request(acl_agent.http + "/v1/connect/intentions", headers={"X-Consul-Token": reader})
    with urllib.request.urlopen(req, timeout=10) as resp:
        listed = json.loads(resp.read())
        assert resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert sorted((i["SourceName"], i["DestinationName"]) for i in listed) == [("batch", "db"), ("web", "db")]
    assert call(acl_agent, "GET", "/v1/connect/intentions/match?by=destination&name=cache", token=reader)[0] == 403
    assert call(acl_agent, "GET", "/v1/connect/intentions/match?by=destination&name=db", token=reader)[0] == 200
    # Check needs only service:read on the destination; with default deny, no match means denied.
    status, body = call(acl_agent, "GET", "/v1/connect/intentions/check?source=web&destination=db", token=other)
    assert status == 403
    status, body = call(acl_agent, "GET", "/v1/connect/intentions/check?source=web&destination=db", token=reader)
    assert status == 200 and json.loads(body) == {"Allowed": True}
    status, body = call(acl_agent, "GET", "/v1/connect/intentions/check?source=mail&destination=db", token=reader)
    assert json.loads(body) == {"Allowed": False}
    # Authorize needs service:write on the target.
    assert _authorize(acl_agent, "db", "web", reader)[0] == 403
    status, out = _authorize(acl_agent, "db", "mail", MGMT)
    assert out == {"Authorized": False, "Reason": "Default behavior configured by ACLs"}
    # CA roots are public; a leaf needs service:write on its service.
    status, body = call(acl_agent, "GET", "/v1/agent/connect/ca/roots")
    assert status == 200 and json.loads(body)["Roots"]
    assert call(acl_agent, "GET", "/v1/agent/connect/ca/leaf/db", token=reader)[0] == 403
    owner = token('service "db" { policy = "write" }')
    status, body = call(acl_agent, "GET", "/v1/agent/connect/ca/leaf/db", token=owner)
    assert status == 200 and json.loads(body)["Service"] == "db"
    assert call(acl_agent, "GET", "/v1/connect/ca/configuration", token=owner)[0] == 403  # operator:read


def test_the_intention_cli(agent) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(beacon_cmd("intention", *args, "-http-addr", agent.http_addr), capture_output=True,
                              text=True, env=beacon_env(), timeout=30)

    r = cli("create", "-deny", "cli-a", "cli-b")
    assert (r.returncode, r.stdout.strip()) == (0, "Created: cli-a => cli-b (deny)"), r.stderr
    r = cli("create", "cli-a", "cli-b")
    assert r.returncode == 1 and 'source "cli-a" and destination "cli-b" already exists' in r.stderr
    r = cli("check", "cli-a", "cli-b")
    assert (r.returncode, r.stdout.strip()) == (2, "Denied")
    r = cli("create", "-replace", "-allow", "-description", "now allowed", "cli-a", "cli-b")
    assert (r.returncode, r.stdout.strip()) == (0, "Created: cli-a => cli-b (allow)")
    r = cli("check", "cli-a", "cli-b")
    assert (r.returncode, r.stdout.strip()) == (0, "Allowed")
    r = cli("get", "cli-a", "cli-b")
    assert r.returncode == 0 and "Description:  now allowed" in r.stdout and "Precedence:   9" in r.stdout
    r = cli("list", "-filter", 'SourceName == "cli-a"')
    assert r.stdout.splitlines()[0].split() == ["ID", "Source", "Action", "Destination", "Precedence"]
    assert r.stdout.splitlines()[1].split() == ["cli-a", "allow", "cli-b", "9"]
    r = cli("match", "-source", "cli-a")
    assert r.stdout.strip() == "cli-a => cli-b (allow)"
    r = cli("delete", "cli-a", "cli-b")
    assert (r.returncode, r.stdout.strip()) == (0, "Intention deleted.")
    r = cli("get", "cli-a", "cli-b")
    assert r.returncode == 1 and "Intention not found" in r.stderr
