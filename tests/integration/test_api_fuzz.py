"""Generated request bodies for the write endpoints: a clear answer, never an internal error or a dead agent.

Each case starts from a body the endpoint accepts (a service, a catalog registration, a check, a
txn, a session, a prepared query, a config entry, an intention, a coordinate update) and hypothesis replaces,
removes or adds fields anywhere in it with JSON of the wrong kind (null, booleans, huge and negative
numbers, floats, long and odd strings, lists, objects). Whatever the body, the agent must answer
with Consul's validation message (400, or 500 where Consul's RPC layer answers 500) or 200 where
the value is acceptable, never with an unexpected exception, and keep serving.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import launch, launch_acl_deny

pytestmark = pytest.mark.integration

SERVICE = {"ID": "web1", "Name": "web", "Tags": ["a"], "Port": 80, "Address": "127.0.0.5",
           "Meta": {"k": "v"}, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
           "TaggedAddresses": {"lan": {"Address": "127.0.0.5", "Port": 80}},
           "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1m"},
           "Checks": [{"Name": "t", "TTL": "10s"}]}
CATALOG = {"Node": "fz", "Address": "127.0.0.6", "Datacenter": "dc1", "NodeMeta": {"r": "1"},
           "TaggedAddresses": {"wan": "127.0.0.7"},
           "Service": {"ID": "s1", "Service": "s", "Port": 1, "Tags": ["x"]},
           "Check": {"CheckID": "c1", "Name": "c", "Status": "passing", "ServiceID": "s1"},
           "Checks": [{"CheckID": "c2", "Name": "c2", "Status": "warning"}], "SkipNodeUpdate": False}
CHECK = {"Name": "chk", "ID": "chk1", "TTL": "15s", "Notes": "n", "Status": "passing",
         "DeregisterCriticalServiceAfter": "90m"}
TXN = [{"KV": {"Verb": "set", "Key": "fz/a", "Value": "YQ==", "Flags": 1}},
       {"KV": {"Verb": "cas", "Key": "fz/b", "Value": "Yg==", "Index": 0}},
       {"KV": {"Verb": "get-tree", "Key": "fz/"}},
       {"Node": {"Verb": "set", "Node": {"Node": "fzn", "Address": "127.0.0.8"}}},
       {"Service": {"Verb": "set", "Node": "fzn", "Service": {"ID": "s", "Service": "s", "Port": 2}}},
       {"Check": {"Verb": "set", "Check": {"Node": "fzn", "CheckID": "k", "Name": "k", "Status": "critical"}}}]
SESSION = {"Name": "s", "TTL": "30s", "Behavior": "release", "LockDelay": "1s", "Checks": [],
           "NodeChecks": [], "ServiceChecks": []}
QUERY = {"Name": "fzq", "Service": {"Service": "web", "Failover": {"NearestN": 2, "Datacenters": ["dc2"]},
                                    "OnlyPassing": True, "Tags": ["a", "!b"], "NodeMeta": {"r": "1"}},
         "DNS": {"TTL": "10s"}, "Template": {"Type": "name_prefix_match", "Regexp": "^fz-(.*)$"}}
CONFIG = {"Kind": "service-defaults", "Name": "web", "Protocol": "http",
          "Meta": {"owner": "fz"}, "MaxInboundConnections": 10}
COORD = {"Node": "fz", "Segment": "", "Coord": {"Vec": [0.1] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5}}

INTENTION = "/v1/connect/intentions/exact?source=web&destination=db"
INTENTION_READS = ("/v1/connect/intentions", "/v1/connect/intentions/match?by=destination&name=db",
                   "/v1/connect/intentions/check?source=web&destination=db", INTENTION)

ENDPOINTS = [("PUT", "/v1/agent/service/register", SERVICE), ("PUT", "/v1/catalog/register", CATALOG),
             ("PUT", "/v1/agent/check/register", CHECK), ("PUT", "/v1/txn", TXN),
             ("PUT", "/v1/session/create", SESSION), ("POST", "/v1/query", QUERY),
             ("PUT", "/v1/config", CONFIG), ("PUT", "/v1/coordinate/update", COORD),
             ("PUT", "/v1/catalog/deregister", {"Node": "fz", "ServiceID": "s1", "CheckID": "c1"}),
             ("PUT", "/v1/agent/check/update/chk1", {"Status": "warning", "Output": "slow"}),
             ("POST", "/v1/discovery-chain/web", {"OverrideProtocol": "http", "OverrideConnectTimeout": "5s",
                                                  "OverrideMeshGateway": {"Mode": "local"}}),
             ("PUT", "/v1/config", {"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
                                    "Subsets": {"v1": {"Filter": "Service.Meta.version == 1"}},
                                    "ConnectTimeout": "3s", "Failover": {"*": {"Datacenters": ["dc2"]}}}),
             ("PUT", "/v1/config", {"Kind": "service-splitter", "Name": "web",
                                    "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10}]}),
             ("PUT", "/v1/config", {"Kind": "service-intentions", "Name": "db",
                                    "Sources": [{"Name": "web", "Action": "allow", "Description": "d"},
                                                {"Name": "*", "Permissions": [{"Action": "deny",
                                                                              "HTTP": {"PathPrefix": "/a"}}]}]}),
             ("PUT", INTENTION, {"SourceType": "consul", "Action": "allow", "Description": "d"}),
             ("POST", "/v1/agent/connect/authorize",
              {"Target": "db", "ClientCertURI": "spiffe://t.consul/ns/default/dc/dc1/svc/web", "ClientCertSerial": ""})]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(["", "x", "10s", "-1s", "1h2m", "passing", "critical", "\u00e9\u4e2d",
                                     "a" * 3000, "../..", "\x00", "127.0.0.1", "::1", "not-a-uuid"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(["ID", "Name", "x", "Port",
                                                                                        "Verb", "Node", ""]),
                                                                       inner, max_size=3)),
                      max_leaves=6)


def _paths(doc, prefix=()):
    """Every place in the document a value sits: dict keys and list positions."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    if not path:
        return value
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def _delete(doc, path):
    if not path:
        return doc
    target = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return doc


@st.composite
def bodies(draw: st.DrawFn, endpoints=ENDPOINTS):
    method, path, base = draw(st.sampled_from(endpoints))
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(doc))
        where = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            doc = _set(doc, where, draw(values))
        elif action == "delete":
            doc = _delete(doc, where)
        else:
            parent = doc
            for step in where:
                parent = parent[step]
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(["Extra", "ID", "Kind", "Tags", "Port", "TTL"]))] = draw(values)
            elif isinstance(parent, list):
                parent.append(draw(values))
    return method, path, doc


MGMT = "5f0e6a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
PUBKEY = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8xOUetsCa8EfOlDEBAfREhJqspDo\n"
          "yEh6Szz2in47Tv5n52m9dLYyPCbqZkOB5nTSqtscpkQD/HpykCggvx09iQ==\n-----END PUBLIC KEY-----\n")
ACL_ENDPOINTS = [
    ("PUT", "/v1/acl/policy", {"Name": "fzp", "Description": "d", "Rules": 'key_prefix "fz/" { policy = "read" }',
                               "Datacenters": ["dc1"]}),
    ("PUT", "/v1/acl/role", {"Name": "fzr", "Policies": [{"Name": "global-management"}],
                             "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1"]}],
                             "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}]}),
    ("PUT", "/v1/acl/token", {"Description": "t", "Policies": [{"Name": "global-management"}],
                              "Roles": [], "ServiceIdentities": [{"ServiceName": "db"}], "Local": False,
                              "ExpirationTTL": "1h"}),
    ("PUT", "/v1/acl/auth-method", {"Name": "fzm", "Type": "jwt", "MaxTokenTTL": "10m",
                                    "Config": {"JWTValidationPubKeys": [PUBKEY], "BoundIssuer": "fz",
                                               "ClaimMappings": {"sub": "user"}, "ListClaimMappings": {},
                                               "ClockSkewLeeway": 1}}),
    ("PUT", "/v1/acl/binding-rule", {"AuthMethod": "fzm", "BindType": "service", "BindName": "svc-${value.user}",
                                     "Selector": "value.user == alice"}),
    ("POST", "/v1/acl/login", {"AuthMethod": "fzm", "BearerToken": "a.b.c", "Meta": {"k": "v"}}),
]


CONFIG_KINDS = ("service-defaults", "proxy-defaults", "service-resolver", "service-splitter", "service-router",
                "service-intentions")
READ_BACK = {
    "/v1/agent/service/register": ("/v1/agent/services", "/v1/catalog/services", "/v1/health/state/any"),
    "/v1/catalog/register": ("/v1/catalog/nodes", "/v1/catalog/services", "/v1/health/state/any"),
    "/v1/agent/check/register": ("/v1/agent/checks", "/v1/health/state/any"),
    "/v1/agent/check/update/chk1": ("/v1/agent/checks",),
    "/v1/txn": ("/v1/kv/?recurse", "/v1/catalog/nodes", "/v1/session/list"),
    "/v1/session/create": ("/v1/session/list",),
    "/v1/query": ("/v1/query",),
    "/v1/config": tuple(f"/v1/config/{k}" for k in CONFIG_KINDS) + INTENTION_READS,
    INTENTION: INTENTION_READS,
    "/v1/coordinate/update": ("/v1/coordinate/nodes",),
    "/v1/catalog/deregister": ("/v1/catalog/nodes",),
}
ACL_READ_BACK = ("/v1/acl/policies", "/v1/acl/roles", "/v1/acl/tokens", "/v1/acl/auth-methods",
                 "/v1/acl/binding-rules")


def _reads_still_answer(agent, reads, case) -> None:
    for target in reads:  # 404 is an empty KV tree's answer
        status, _, body = agent.request("GET", target, timeout=20)
        assert status in (200, 404) and not body.startswith(b"Internal error"), (case, target, status, body[:300])


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory):
    a = launch_acl_deny(tmp_path_factory.mktemp("acl-fuzz"), MGMT)
    yield a
    a.stop()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=bodies(ACL_ENDPOINTS))
def test_generated_acl_bodies_get_a_clear_answer(acl_agent, case) -> None:
    method, path, doc = case
    status, _, body = acl_agent.request(method, f"{path}?token={MGMT}", json.dumps(doc))
    assert not body.startswith(b"Internal error"), (method, path, doc, status, body[:300])
    assert status in (200, 400, 403, 404, 409, 413, 500), (method, path, doc, status, body[:300])
    if status == 200:
        _reads_still_answer(acl_agent, [f"{r}?token={MGMT}" for r in ACL_READ_BACK], (method, path, doc))


@pytest.fixture(scope="module")
def agent():
    a = launch()
    yield a
    a.stop()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=bodies())
def test_generated_bodies_get_a_clear_answer(agent, case) -> None:
    method, path, doc = case
    status, _, body = agent.request(method, path, json.dumps(doc))
    # Consul answers some validation errors of its RPC layer with 500 and their message ("Must provide
    # node"); Beacon does too, on purpose. An unexpected exception reads "Internal error: ...": a bug.
    assert not body.startswith(b"Internal error"), (method, path, doc, status, body[:300])
    assert status in (200, 400, 403, 404, 405, 409, 413, 500), (method, path, doc, status, body[:300])
    if status == 200:  # what was accepted must not break the reads that show it (found: LockDelay -1e22)
        _reads_still_answer(agent, READ_BACK.get(path, ()), (method, path, doc))


def test_the_agent_still_serves_after_the_bodies(agent) -> None:
    assert agent.request("GET", "/v1/agent/self")[0] == 200
    assert agent.json("PUT", "/v1/kv/fz/alive", "1") is True


def test_checks_that_is_not_a_list_is_a_decode_error(agent) -> None:
    """Found by the generator: ``"Checks": true`` in a catalog registration was an internal error."""
    doc = dict(CATALOG, Checks=True)
    status, _, body = agent.request("PUT", "/v1/catalog/register", json.dumps(doc))
    assert (status, body) == (400, b"Request decode failed: Checks must be a list")
    status, _, _ = agent.request("PUT", "/v1/catalog/register", json.dumps(CATALOG))
    assert status == 200  # and the same body with a list is taken


# ------------------------------------------------------------------------------ read parameters
FILTER_TOKENS = ["Service", "ServiceName", "Node", "Node.Node", "Service.Tags", "Tags", "Meta", "Meta.k",
                 "Checks.Status", "Address", "Port", "ServiceMeta[\"k\"]", "NodeMeta.r", "Weights.Passing",
                 "==", "!=", "in", "not in", "contains", "not contains", "matches", "not matches", "is empty",
                 "is not empty", "and", "or", "not", "(", ")", '"web"', '"a"', "`x`", "80", "-1", "1.5", "true",
                 '"[a-"', '"\\\\"', '"', "[", "]", ".", "\u00e9", ""]
READ_PATHS = ["/v1/agent/services", "/v1/agent/checks", "/v1/catalog/service/web", "/v1/catalog/nodes",
              "/v1/health/service/web", "/v1/health/state/any", "/v1/catalog/services", "/v1/kv/fz/?recurse",
              "/v1/health/checks/web", "/v1/catalog/node-services/fz", "/v1/query/fzq/execute",
              "/v1/internal/ui/services", "/v1/event/list", "/v1/session/list", "/v1/coordinate/nodes"]
READ_PARAMS = ["filter", "index", "wait", "near", "node-meta", "tag", "dc", "stale", "consistent", "cached",
               "passing", "separator", "keys", "limit", "max-age", "stale-if-error", "peer", "ns", "name"]
READ_VALUES = ["", "0", "1", "-5", "2s", "1ms", "9999999999999999999999", "abc", "_agent", "fz", "r:1", "r",
               "a", "dc1", "dc9", "%", "%ZZ", "%22", "\u00e9", "10m5s", "1h"]


@st.composite
def reads(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(READ_PATHS))
    parts = []
    for name in draw(st.lists(st.sampled_from(READ_PARAMS), max_size=3)):
        if name == "filter":
            expr = " ".join(draw(st.lists(st.sampled_from(FILTER_TOKENS), min_size=1, max_size=7)))
            value = quote(expr, safe="")
        else:
            value = quote(draw(st.sampled_from(READ_VALUES)), safe="%")
        if name == "index" and value not in ("", "-5", "abc", "%", "%ZZ"):
            value = "0"  # a real index could be past an endpoint's current one: that request would block
        parts.append(f"{name}={value}")
    sep = "&" if "?" in path else "?"
    return path + (sep + "&".join(parts) if parts else "")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(target=reads())
def test_generated_read_parameters_get_a_clear_answer(agent, target) -> None:
    status, _, body = agent.request("GET", target, timeout=20)
    assert not body.startswith(b"Internal error"), (target, status, body[:300])
    assert status in (200, 400, 403, 404, 405, 500), (target, status, body[:300])


def test_integers_beyond_64_bits_are_refused_and_cannot_poison_a_list(agent) -> None:
    """Found by the generator: ``"LockDelay": -1e22`` was stored, and every later session list was an
    internal error (the number does not encode); so was a check's ``OutputMaxSize`` of 2**70 for the
    agent's and the catalog's check lists. Consul refuses such a body; a negative lock delay that
    does fit delays nothing."""
    status, _, body = agent.request("PUT", "/v1/session/create", json.dumps({"LockDelay": -(10**22)}))
    assert status == 400 and b"LockDelay" in body, (status, body)
    status, _, body = agent.request("PUT", "/v1/session/create", json.dumps({"LockDelay": -5}))
    assert status == 200, body
    sid = json.loads(body)["ID"]
    [info] = agent.json("GET", f"/v1/session/info/{sid}")
    assert info["LockDelay"] == 0
    status, _, body = agent.request("PUT", "/v1/agent/service/register", json.dumps({
        "Name": "big", "Port": 80, "Weights": {"Passing": 2**70}}))
    assert status == 400 and b"must be an integer" in body, (status, body)
    for field in ("OutputMaxSize", "SuccessBeforePassing", "Interval", "Timeout", "DeregisterCriticalServiceAfter"):
        doc = {"Name": f"big-{field}", "HTTP": "http://127.0.0.1:1/", "Interval": "10s", field: 2**70}
        status, _, body = agent.request("PUT", "/v1/agent/check/register", json.dumps(doc))
        assert status == 400 and field.encode() in body, (field, status, body)
    doc = {"Name": "digits", "TTL": "10s", "SuccessBeforePassing": "1" * 5000}  # past int()'s 4,300 digits
    status, _, body = agent.request("PUT", "/v1/agent/check/register", json.dumps(doc))
    assert status == 400 and b"SuccessBeforePassing" in body, (status, body[:200])
    for target in ("/v1/session/list", "/v1/catalog/services", "/v1/agent/checks", "/v1/health/state/any"):
        assert agent.request("GET", target)[0] == 200, target
