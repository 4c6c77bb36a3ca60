"""Generated containers: the registrator either builds a registration the agent accepts or says why not.

Hypothesis builds ``docker inspect`` objects whose ``SERVICE_*`` env vars and labels (Registrator's
keys, port-specific ones, unknown ones) carry values from well-formed to hostile, with published
ports whose host side may be garbage. For each, :func:`container_services` must not raise, and
every registration it returns must pass the agent's own decoding and check validation (what
``PUT /v1/agent/service/register`` applies before it stores anything): a container label must never
give the registrator a service that the agent then refuses on every resync. Nothing here starts a
check or touches the network.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.agent.http.decode import decode_service
from beacon.checks.definition import CheckDefinition
from beacon.registrator import MappingOptions, container_services

OPTS = MappingOptions(hostname="host1", host_ip="127.0.0.1")
KEYS = ["NAME", "TAGS", "ID", "IP", "PORT", "IGNORE", "CHECK_HTTP", "CHECK_HTTPS", "CHECK_TCP", "CHECK_TTL",
        "CHECK_GRPC", "CHECK_SCRIPT", "CHECK_CMD", "CHECK_INTERVAL", "CHECK_TIMEOUT", "CHECK_INITIAL_STATUS",
        "CHECK_DEREGISTER_AFTER", "CHECK_HTTP_METHOD", "CHECK_HTTPS_METHOD", "CHECK_GRPC_USE_TLS",
        "CHECK_TLS_SKIP_VERIFY", "CHECK_DOCKER_HEALTH", "CHECK_BOGUS", "VERSION", "weird.key", "consul-x"]
# JSON text as Docker hands it over: any Unicode scalar value (lone surrogates cannot be in its JSON)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
VALUES = st.one_of(
    TEXT,
    st.sampled_from(["", "10s", "1m", "-1s", "0s", "0", "1", "false", "soon", "1e309s", "9999999999h",
                     "/health", "health?x=1", "passing", "warning", "critical", "GET", "BREW", "a b",
                     "127.0.0.1", "::1", "127.0.0.1/24", "[::1]", "web", "web,db", "w\\,x", "x" * 600,
                     "$SERVICE_IP:$SERVICE_PORT", "host1:redis.0:80", "/", "a/b", "\t", "7000", "70000"]),
)
PORTS = st.sampled_from(["80/tcp", "443/tcp", "53/udp", "8080/tcp", "99999/tcp", "x/tcp", "0/udp"])


@st.composite
def containers(draw: st.DrawFn) -> dict[str, Any]:
    keys = st.one_of(st.sampled_from(KEYS),
                     st.builds(lambda p, k: f"{p.split('/')[0]}_{k}", PORTS, st.sampled_from(KEYS[:8])))
    env = [f"SERVICE_{k}={v}" for k, v in draw(st.lists(st.tuples(keys, VALUES), max_size=6))]
    labels = {f"SERVICE_{k}": v for k, v in draw(st.dictionaries(keys, VALUES, max_size=6)).items()}
    published = draw(st.dictionaries(PORTS, st.one_of(
        st.integers(1, 65535).map(str), st.sampled_from(["", "0", "notanumber", "65536", "-1"])), max_size=3))
    ports = {p: [{"HostIp": draw(st.sampled_from(["0.0.0.0", "127.0.0.1", "::", ""])), "HostPort": hp}]
             for p, hp in published.items()}
    for p in draw(st.lists(PORTS, max_size=2)):  # exposed, not published
        ports.setdefault(p, None)
    config: dict[str, Any] = {"Image": draw(st.sampled_from(["progrium/redis", "nginx:1.25", "", "reg:5000/a/b"])),
                              "Env": env, "Labels": labels, "ExposedPorts": {k: {} for k in ports}}
    if draw(st.booleans()):
        config["Healthcheck"] = {"Test": ["CMD", "true"]}
    return {"Id": "c0ffee" * 10, "Name": "/redis.0", "Config": config, "HostConfig": {"NetworkMode": "bridge"},
            "State": {"Running": True},
            "NetworkSettings": {"Ports": ports, "IPAddress": "127.0.0.5", "Networks": {}}}


def agent_accepts(registration: dict[str, Any]) -> None:
    """What the agent's register endpoint checks before it stores a service (raises if it refuses)."""
    body = json.loads(json.dumps(registration))  # as the request body arrives
    svc, checks = decode_service(body)
    for i, obj in enumerate(checks):
        default_id = f"service:{svc.id}" if len(checks) == 1 else f"service:{svc.id}:{i + 1}"
        CheckDefinition.from_json(obj, service_id=svc.id, check_id=default_id).validate()


@settings(max_examples=1000, deadline=None)
@given(obj=containers(), internal=st.booleans())
def test_every_registration_built_is_one_the_agent_accepts(obj: dict[str, Any], internal: bool) -> None:
    opts = MappingOptions(hostname=OPTS.hostname, host_ip=OPTS.host_ip, internal=internal)
    services, problems = container_services(obj, opts)
    assert all(isinstance(p, str) and p.startswith("container redis.0: ") for p in problems), problems
    for spec in services:
        reg = spec.registration(health_status="passing", owner="host1")
        try:
            agent_accepts(reg)
        except Exception as exc:  # noqa: BLE001 - any refusal is the failure being looked for
            raise AssertionError(f"the agent refuses {reg!r}: {exc}\nproblems: {problems}") from None


def test_the_generator_reaches_checks_and_refused_values() -> None:
    """Armed: well-formed keys give a service with checks, and bad values are reported, not passed on."""
    obj = {"Id": "c0ffee" * 10, "Name": "/redis.0", "HostConfig": {"NetworkMode": "bridge"},
           "Config": {"Image": "progrium/redis", "Env": ["SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=soon"],
                      "Labels": {}, "ExposedPorts": {"80/tcp": {}}},
           "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
                               "IPAddress": "127.0.0.5", "Networks": {}}}
    [spec], problems = container_services(obj, OPTS)
    reg = spec.registration(owner="host1")
    agent_accepts(reg)
    assert reg["Checks"][0]["HTTP"] == "http://127.0.0.1:8080/health" and reg["Checks"][0]["Interval"] == "10s"
    assert any("is not a duration" in p for p in problems)
