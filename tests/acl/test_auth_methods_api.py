"""Auth methods, binding rules, login and logout against real ACL-enabled agents (default deny), with
JWTs signed here and a JWKS served by a local aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import threading
import time

import consul
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import launch, wait_until

pytestmark = pytest.mark.integration

MGMT = "3c1f8a52-7d3e-4b8e-9d0b-5a2f0c6e1b77"
ISSUER = "https://ci.example"


def _key() -> tuple[RSAKey, str]:
    priv = rsa.generate_private_key(65537, 2048)
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return RSAKey.import_key(pem), pub


KEY, PUB = _key()


def jwt(key: RSAKey = KEY, kid: str | None = None, **claims) -> str:
    now = time.time()
    body = {"iss": ISSUER, "aud": "beacon", "sub": "job-1", "iat": now, "nbf": now, "exp": now + 300}
    body.update(claims)
    header = {"alg": "RS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    return jws.serialize_compact(header, json.dumps(body).encode(), key, algorithms=["RS256"])


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("auth") / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    proc = launch("-config-file", str(cfg))
    wait_until(lambda: proc.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=30)
    yield proc
    proc.stop()


class JWKSServer:
    """An aiohttp app serving one JWKS on 127.0.0.1, in its own thread and loop; it binds port 0 itself
    and reports readiness with an event."""

    def __init__(self, keyset: KeySet, tls: ssl.SSLContext | None = None) -> None:
        self.keyset = keyset
        self.tls = tls
        self.hits = 0
        self.ready = threading.Event()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.stopped: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.keyset.as_dict())

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.base, "jwks_uri": self.url})

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock, ssl_context=self.tls).start()
        self.stopped = asyncio.Event()
        self.ready.set()
        await self.stopped.wait()
        await runner.cleanup()

    def __enter__(self) -> JWKSServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stopped is not None
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(10)

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/jwks"


def _put(agent, path: str, body: object, token: str = MGMT) -> tuple[int, object]:
    status, _, data = agent.request("PUT", f"{path}?token={token}" if token else path, body)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def _login(agent, method: str, bearer: str, meta: dict | None = None) -> tuple[int, object]:
    body: dict = {"AuthMethod": method, "BearerToken": bearer}
    if meta is not None:
        body["Meta"] = meta
    status, _, data = agent.request("POST", "/v1/acl/login", body)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def _method(name: str, **config) -> dict:
    cfg = {"JWTValidationPubKeys": [PUB], "BoundIssuer": ISSUER, "BoundAudiences": ["beacon"],
           "ClaimMappings": {"service": "service", "sub": "subject"}, "ListClaimMappings": {"groups": "groups"}}
    cfg.update(config)
    return {"Name": name, "Type": "jwt", "Description": "CI jobs", "MaxTokenTTL": "10m", "Config": cfg}


def test_login_use_logout(agent) -> None:
    status, method = _put(agent, "/v1/acl/auth-method", _method("ci"))
    assert status == 200, method
    assert method["MaxTokenTTL"] == "10m0s" and method["Config"]["BoundIssuer"] == ISSUER
    status, rule = _put(agent, "/v1/acl/binding-rule", {
        "AuthMethod": "ci", "BindType": "service", "BindName": "${value.service}",
        "Selector": '"deploy" in list.groups', "Description": "deployers"})
    assert status == 200, rule
    assert rule["ID"] and rule["CreateIndex"] == rule["ModifyIndex"]

    status, tok = _login(agent, "ci", jwt(service="web", groups=["deploy"]), {"job": "build-7", "ci": "x"})
    assert status == 200, tok
    assert tok["AuthMethod"] == "ci" and tok["Local"] is True
    assert tok["ServiceIdentities"] == [{"ServiceName": "web"}]
    assert tok["Description"] == 'token created via login: {"ci":"x","job":"build-7"}'
    assert "ExpirationTime" in tok
    user = consul.Consul(host=agent.host, port=agent.http_port, token=tok["SecretID"])
    assert user.acl.token.read_self()["AccessorID"] == tok["AccessorID"]
    assert user.agent.service.register("web", service_id="web-1") is True
    with pytest.raises(consul.ACLPermissionDenied, match="service:write"):
        user.agent.service.register("db", service_id="db-1")
    # Only a login-made token can log out; the management token cannot.
    status, _, body = agent.request("POST", f"/v1/acl/logout?token={MGMT}")
    assert status == 403 and b"Permission denied" in body
    assert agent.request("POST", "/v1/acl/logout")[0] == 401  # no token at all
    assert user.acl.logout(tok["SecretID"]) is True
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        user.acl.token.read_self()
    status, _, body = agent.request("GET", f"/v1/agent/services?token={tok['SecretID']}")
    assert (status, body) == (403, b"ACL not found")


def test_login_refusals(agent) -> None:
    assert _put(agent, "/v1/acl/auth-method", _method("refuse"))[0] == 200
    assert _put(agent, "/v1/acl/binding-rule", {"AuthMethod": "refuse", "BindType": "service",
                                                 "BindName": "api", "Selector": 'value.subject == "job-1"'})[0] == 200
    other, _ = _key()
    for bearer, why in [(jwt(other), "verify signature"), (jwt(iss="https://evil"), "issuer"),
                        (jwt(aud="else"), "audience"), (jwt(exp=time.time() - 3600), "expired"),
                        ("garbage", "malformed")]:
        status, body = _login(agent, "refuse", bearer)
        assert status == 403 and "Permission denied" in body and why in body, (why, body)
    status, body = _login(agent, "refuse", jwt(sub="job-2"))  # valid token, no rule matches
    assert (status, body) == (403, "Permission denied")
    status, body = _login(agent, "nope", jwt())
    assert status == 403 and "ACL not found" in body
    assert _login(agent, "refuse", "")[0] == 400


@pytest.mark.parametrize("path, body, why", [
    ("/v1/acl/auth-method", {"Name": "k8s", "Type": "kubernetes", "Config": {}}, "not supported by this build"),
    ("/v1/acl/auth-method", {"Name": "x", "Type": "saml", "Config": {}}, "unknown Type"),
    ("/v1/acl/auth-method", {"Name": "x y", "Type": "jwt", "Config": {"JWKSURL": "http://a"}}, "invalid Name"),
    ("/v1/acl/auth-method", {"Name": "x", "Type": "jwt", "Config": {}}, "exactly one of"),
    ("/v1/acl/auth-method", {"Name": "x", "Type": "jwt", "MaxTokenTTL": "48h", "Config": {"JWKSURL": "http://a"}},
     "MaxTokenTTL"),
    ("/v1/acl/binding-rule", {"AuthMethod": "missing", "BindType": "service", "BindName": "a"},
     "unknown AuthMethod"),
    ("/v1/acl/binding-rule", {"AuthMethod": "validate", "BindType": "user", "BindName": "a"}, "unknown BindType"),
    ("/v1/acl/binding-rule", {"AuthMethod": "validate", "BindType": "service", "BindName": "a",
                              "Selector": "value.service =="}, "Selector is invalid"),
    ("/v1/acl/binding-rule", {"AuthMethod": "validate", "BindType": "service", "BindName": "a",
                              "Selector": 'value.team == "x"'}, "'value.team' is not a variable"),
    ("/v1/acl/binding-rule", {"AuthMethod": "validate", "BindType": "service", "BindName": "${value.nope}"},
     "invalid BindName"),
])
def test_bad_writes_are_400_with_a_reason(agent, path: str, body: dict, why: str) -> None:
    _put(agent, "/v1/acl/auth-method", _method("validate"))
    status, answer = _put(agent, path, body)
    assert status == 400 and why in answer, answer


def test_crud_rights_listing_and_delete_cascade(agent) -> None:
    assert _put(agent, "/v1/acl/auth-method", _method("crud"), token="")[0] == 403  # anonymous: no acl:write
    assert _put(agent, "/v1/acl/auth-method", _method("crud"))[0] == 200
    status, updated = _put(agent, "/v1/acl/auth-method/crud", dict(_method("crud"), DisplayName="CI",
                                                                     TokenLocality="global"))
    assert status == 200 and updated["DisplayName"] == "CI" and updated["CreateIndex"] < updated["ModifyIndex"]
    listed = agent.json("GET", f"/v1/acl/auth-methods?token={MGMT}")
    mine = next(m for m in listed if m["Name"] == "crud")
    assert "Config" not in mine and mine["Type"] == "jwt"
    _, rule = _put(agent, "/v1/acl/binding-rule", {"AuthMethod": "crud", "BindType": "node",
                                                    "BindName": "ci-${value.service}"})
    status, changed = _put(agent, f"/v1/acl/binding-rule/{rule['ID']}", {"BindType": "service",
                                                                         "BindName": "${value.service}"})
    assert status == 200 and changed["AuthMethod"] == "crud" and changed["BindType"] == "service"
    assert [r["ID"] for r in agent.json("GET", f"/v1/acl/binding-rules?authmethod=crud&token={MGMT}")] == \
        [rule["ID"]]
    status, tok = _login(agent, "crud", jwt(service="api"))
    assert status == 200 and tok["Local"] is False  # TokenLocality global
    assert agent.request("GET", f"/v1/acl/token/self?token={tok['SecretID']}")[0] == 200
    listed = agent.json("GET", f"/v1/acl/tokens?authmethod=crud&token={MGMT}")
    assert [t["AccessorID"] for t in listed] == [tok["AccessorID"]] and listed[0]["AuthMethod"] == "crud"
    status, _, body = agent.request("PUT", f"/v1/acl/token/{tok['AccessorID']}/clone?token={MGMT}", {})
    assert status == 400 and b"auth method" in body
    status, kept = _put(agent, f"/v1/acl/token/{tok['AccessorID']}", {"Description": "renamed",
                                                                       "ServiceIdentities": [{"ServiceName": "api"}]})
    assert status == 200 and kept["AuthMethod"] == "crud"  # still a login token after an update
    assert agent.request("DELETE", f"/v1/acl/auth-method/crud?token={MGMT}")[0] == 200
    # The method's rules and the tokens it issued went with it.
    assert agent.request("GET", f"/v1/acl/binding-rule/{rule['ID']}?token={MGMT}")[0] == 404
    assert agent.request("GET", f"/v1/acl/auth-method/crud?token={MGMT}")[0] == 404
    assert agent.request("GET", f"/v1/acl/token/self?token={tok['SecretID']}")[0] == 403


def test_jwks_url_and_role_binding(agent) -> None:
    keyset = KeySet([RSAKey.import_key(PUB, parameters={"kid": "k1"})])
    status, pol = _put(agent, "/v1/acl/policy", {"Name": "kv-ci", "Rules": 'key_prefix "ci/" { policy = "write" }'})
    assert status == 200, pol
    assert _put(agent, "/v1/acl/role", {"Name": "team-ci", "Policies": [{"Name": "kv-ci"}]})[0] == 200
    with JWKSServer(keyset) as idp:
        assert _put(agent, "/v1/acl/auth-method", _method("jwks", JWTValidationPubKeys=None, JWKSURL=idp.url))[0] \
            == 200
        for bind_type, name in (("role", "team-${value.subject}"), ("role", "no-such-role")):
            assert _put(agent, "/v1/acl/binding-rule", {"AuthMethod": "jwks", "BindType": bind_type,
                                                         "BindName": name})[0] == 200
        status, tok = _login(agent, "jwks", jwt(kid="k1", sub="ci"))
        assert status == 200, tok
        assert [r["Name"] for r in tok["Roles"]] == ["team-ci"]  # the rule naming no role is ignored
        assert _login(agent, "jwks", jwt(kid="k1", sub="ci"))[0] == 200
        assert idp.hits == 1  # the key set was cached
    secret = tok["SecretID"]
    assert agent.request("PUT", f"/v1/kv/ci/x?token={secret}", b"1")[2] == b"true"
    assert agent.request("PUT", f"/v1/kv/other/x?token={secret}", b"1")[0] == 403


@pytest.mark.slow
def test_login_through_a_client_agent(tmp_path) -> None:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    srv_addr, cli_addr = f"{block}.10", f"{block}.20"
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    server = launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                    "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"), "-config-file", str(cfg), dev=False)
    client = None
    try:
        client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", str(tmp_path / "cli"),
                        "-retry-join", srv_addr, "-config-file", str(cfg), dev=False)
        wait_until(lambda: client.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=60,
                   interval=0.5)
        assert _put(client, "/v1/acl/auth-method", _method("ci"))[0] == 200
        assert _put(client, "/v1/acl/binding-rule", {"AuthMethod": "ci", "BindType": "service",
                                                      "BindName": "${value.service}"})[0] == 200
        status, tok = _login(client, "ci", jwt(service="web"))
        assert status == 200, tok
        secret = tok["SecretID"]
        assert client.request("PUT", f"/v1/agent/service/register?token={secret}", {"Name": "web"})[0] == 200
        assert client.request("PUT", f"/v1/agent/service/register?token={secret}", {"Name": "db"})[0] == 403
        assert _logout(client, secret) == 200  # forwarded with the token header
        assert server.request("GET", f"/v1/acl/token/self?token={secret}")[0] == 403
    finally:
        if client is not None:
            client.stop()
        server.stop()


def _logout(agent, secret: str) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{agent.http}/v1/acl/logout", data=b"", method="POST",
                                 headers={"X-Consul-Token": secret})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_cli_login_and_logout(agent, tmp_path) -> None:
    import stat
    import subprocess

    from tests.conftest import beacon_cmd, beacon_env

    assert _put(agent, "/v1/acl/auth-method", _method("cli"))[0] == 200
    assert _put(agent, "/v1/acl/binding-rule", {"AuthMethod": "cli", "BindType": "service",
                                                 "BindName": "${value.service}"})[0] == 200
    bearer, sink = tmp_path / "jwt", tmp_path / "token"
    bearer.write_text(jwt(service="cli-web") + "\n")
    env = beacon_env(CONSUL_HTTP_ADDR=agent.http_addr, CONSUL_HTTP_TOKEN=MGMT)  # not sent by login
    out = subprocess.run(beacon_cmd("login", "-method", "cli", "-bearer-token-file", str(bearer),
                                    "-token-sink-file", str(sink), "-meta", "host=ci-1"),
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    secret = sink.read_text()
    assert stat.S_IMODE(sink.stat().st_mode) == 0o600
    me = agent.json("GET", f"/v1/acl/token/self?token={secret}")
    assert me["ServiceIdentities"] == [{"ServiceName": "cli-web"}]
    assert me["Description"] == 'token created via login: {"host":"ci-1"}'
    out = subprocess.run(beacon_cmd("login", "-method", "cli", "-token-sink-file", str(sink)),
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "Missing required '-bearer-token-file' flag" in out.stderr
    bearer.write_text(jwt(service="cli-web", iss="https://evil"))
    out = subprocess.run(beacon_cmd("login", "-method", "cli", "-bearer-token-file", str(bearer),
                                    "-token-sink-file", str(tmp_path / "other")),
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "403" in out.stderr and "issuer" in out.stderr
    out = subprocess.run(beacon_cmd("logout", "-token-file", str(sink)), capture_output=True, text=True,
                         env=beacon_env(CONSUL_HTTP_ADDR=agent.http_addr), timeout=60)
    assert out.returncode == 0, out.stderr
    assert agent.request("GET", f"/v1/acl/token/self?token={secret}")[0] == 403
    out = subprocess.run(beacon_cmd("logout", "-token", MGMT), capture_output=True, text=True,
                         env=beacon_env(CONSUL_HTTP_ADDR=agent.http_addr), timeout=60)
    assert out.returncode == 1 and "Permission denied" in out.stderr


def test_py_consul_client(agent) -> None:
    mgmt = consul.Consul(host=agent.host, port=agent.http_port, token=MGMT)
    cfg = _method("pyc")["Config"]
    made = mgmt.acl.auth_method.create("pyc", "jwt", display_name="Py", config=cfg, max_token_ttl="5m",
                                       token_locality="local")
    assert (made["Name"], made["MaxTokenTTL"], made["TokenLocality"]) == ("pyc", "5m0s", "local")
    assert mgmt.acl.auth_method.read("pyc")["Config"]["BoundAudiences"] == ["beacon"]
    assert "pyc" in [m["Name"] for m in mgmt.acl.auth_method.list()]
    assert mgmt.acl.auth_method.update("pyc", "jwt", description="edited", config=cfg)["Description"] == "edited"
    rule = mgmt.acl.binding_rule.create("pyc", "service", "${value.service}", selector='value.subject == "job-1"')
    assert mgmt.acl.binding_rule.read(rule["ID"])["BindName"] == "${value.service}"
    assert [r["ID"] for r in mgmt.acl.binding_rule.list(auth_method="pyc")] == [rule["ID"]]
    # An update replaces the rule, as in Consul: a Selector left out is gone.
    updated = mgmt.acl.binding_rule.update(rule["ID"], "pyc", "node", "n-${value.service}",
                                           selector='value.subject == "job-1"')
    assert updated["BindType"] == "node" and updated["ModifyIndex"] > rule["ModifyIndex"]
    tok = consul.Consul(host=agent.host, port=agent.http_port).acl.login("pyc", jwt(service="web"), meta={"a": "b"})
    assert tok["NodeIdentities"] == [{"NodeName": "n-web", "Datacenter": "dc1"}]
    assert mgmt.acl.logout(tok["SecretID"]) is True
    with pytest.raises(consul.ACLPermissionDenied):
        mgmt.acl.login("pyc", jwt(service="web", sub="job-2"))  # no rule matches
    with pytest.raises(consul.ConsulException):
        mgmt.acl.auth_method.create("k8s", "kubernetes", config={})
    assert mgmt.acl.binding_rule.delete(rule["ID"]) is True
    assert mgmt.acl.auth_method.delete("pyc") is True
    assert mgmt.acl.auth_method.read("pyc") is None  # a 404, which py-consul answers with None


def test_jwks_over_https_with_a_private_ca(agent, tmp_path) -> None:
    from beacon.tls.certs import CertRequest, create_ca, create_cert

    ca_file, ca_key = create_ca(str(tmp_path))
    cert, key = create_cert(CertRequest("server", ip_addresses=("127.0.0.1",)), ca_file, ca_key, str(tmp_path))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    ca_pem = open(ca_file, encoding="utf-8").read()
    with JWKSServer(KeySet([RSAKey.import_key(PUB)]), tls) as idp:
        for name, extra in (("tls-ca", {"JWKSCACert": ca_pem}), ("tls-system", {})):
            assert _put(agent, "/v1/acl/auth-method",
                        _method(name, JWTValidationPubKeys=None, JWKSURL=idp.url, **extra))[0] == 200
            assert _put(agent, "/v1/acl/binding-rule", {"AuthMethod": name, "BindType": "service",
                                                         "BindName": "${value.service}"})[0] == 200
        status, tok = _login(agent, "tls-ca", jwt(service="web"))
        assert status == 200, tok
        status, body = _login(agent, "tls-system", jwt(service="web"))  # the private CA is not trusted
        assert status == 403 and "fetching JWKS" in body and "certificate" in body.lower(), body
        assert idp.hits == 1


def test_cli_auth_method_and_binding_rule_commands(agent, tmp_path) -> None:
    import subprocess

    from tests.conftest import beacon_cmd, beacon_env

    env = beacon_env(CONSUL_HTTP_ADDR=agent.http_addr, CONSUL_HTTP_TOKEN=MGMT)

    def acl(*args: str) -> str:
        out = subprocess.run(beacon_cmd("acl", *args), capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(_method("x")["Config"]))
    made = json.loads(acl("auth-method", "create", "-type", "jwt", "-name", "cli-m", "-max-token-ttl", "2m",
                          "-config", f"@{cfg}", "-format", "json"))
    assert made["MaxTokenTTL"] == "2m0s" and made["Config"]["BoundIssuer"] == ISSUER
    assert "Type:" in acl("auth-method", "read", "-name", "cli-m")
    updated = json.loads(acl("auth-method", "update", "-name", "cli-m", "-description", "edited", "-format", "json"))
    assert updated["Description"] == "edited" and updated["MaxTokenTTL"] == "2m0s"  # merged
    assert "cli-m:" in acl("auth-method", "list")
    rule = json.loads(acl("binding-rule", "create", "-method", "cli-m", "-bind-name", "${value.service}",
                          "-selector", '"deploy" in list.groups', "-format", "json"))
    assert rule["BindType"] == "service"
    changed = json.loads(acl("binding-rule", "update", "-id", rule["ID"], "-bind-type", "node", "-format", "json"))
    assert changed["BindType"] == "node" and changed["Selector"] == '"deploy" in list.groups'
    assert rule["ID"] in acl("binding-rule", "list", "-method", "cli-m")
    assert "deleted successfully" in acl("binding-rule", "delete", "-id", rule["ID"])
    assert "deleted successfully" in acl("auth-method", "delete", "-name", "cli-m")
    out = subprocess.run(beacon_cmd("acl", "auth-method", "create", "-type", "kubernetes", "-name", "k",
                                    "-config", "{}"), capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "not supported by this build" in out.stderr


def test_login_with_acls_disabled_is_401(dev_agent) -> None:
    for path in ("/v1/acl/login", "/v1/acl/logout", "/v1/acl/auth-methods", "/v1/acl/binding-rule"):
        status, _, body = dev_agent.request("PUT", path, {"AuthMethod": "x", "BearerToken": "y"})
        assert (status, body) == (401, b"ACL support disabled"), path


def test_oidc_discovery_url(agent) -> None:
    with JWKSServer(KeySet([RSAKey.import_key(PUB)])) as idp:
        method = _method("oidc-disc", JWTValidationPubKeys=None, BoundIssuer=None, OIDCDiscoveryURL=idp.base)
        assert _put(agent, "/v1/acl/auth-method", method)[0] == 200
        assert _put(agent, "/v1/acl/binding-rule", {"AuthMethod": "oidc-disc", "BindType": "service",
                                                     "BindName": "${value.service}"})[0] == 200
        status, tok = _login(agent, "oidc-disc", jwt(service="web", iss=idp.base))
        assert status == 200 and tok["ServiceIdentities"] == [{"ServiceName": "web"}], tok
        status, body = _login(agent, "oidc-disc", jwt(service="web"))  # iss is not the discovered issuer
        assert status == 403 and "the OIDC issuer is" in body, body
