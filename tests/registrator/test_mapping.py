"""The container -> services mapping as a pure function: Registrator's documented examples and
rules, plus Beacon's additions and its handling of bad input."""

from __future__ import annotations

from typing import Any

import pytest

from beacon.registrator import MappingOptions, container_services, split_tags
from beacon.registrator._mapping import image_basename

OPTS = MappingOptions(hostname="host1", host_ip="192.168.1.102")


def inspect(name: str = "redis.0", image: str = "progrium/redis", ports: dict[str, Any] | None = None,
            env: list[str] | None = None, labels: dict[str, str] | None = None, exposed: list[str] | None = None,
            mode: str = "bridge", ip: str = "172.17.0.5", health: list[str] | None = None) -> dict[str, Any]:
    ports = ports if ports is not None else {"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "10000"}]}
    exposed = exposed if exposed is not None else list(ports)
    config: dict[str, Any] = {"Image": image, "Env": env or [], "Labels": labels or {},
                              "ExposedPorts": {k: {} for k in exposed}}
    if health:
        config["Healthcheck"] = {"Test": health}
    return {"Id": "c0ffee" * 10, "Name": "/" + name, "Config": config, "HostConfig": {"NetworkMode": mode},
            "State": {"Running": True}, "NetworkSettings": {"Ports": ports, "IPAddress": ip, "Networks": {}}}


def one(obj: dict[str, Any], opts: MappingOptions = OPTS):  # type: ignore[no-untyped-def]
    services, problems = container_services(obj, opts)
    assert len(services) == 1, (services, problems)
    return services[0], problems


@pytest.mark.parametrize("value,expected", [
    ("", []), ("foobar", ["foobar"]), ("foo,bar", ["foo", "bar"]), ("foo\\,bar", ["foo,bar"]),
    ("foo,bar\\,baz", ["foo", "bar,baz"]), ("\\,foobar\\,", [",foobar,"]), (",,,,foo,,,bar,,,", ["foo", "bar"]),
    (",,,,", []), (",,\\,,", [","]),
])
def test_split_tags_matches_registrators_table(value: str, expected: list[str]) -> None:
    assert sorted(split_tags(value)) == sorted(expected)


@pytest.mark.parametrize("image,base", [("gliderlabs/foobar:1.2", "foobar"), ("redis", "redis"),
                                        ("reg.example:5000/team/app:3", "app"), ("nginx@sha256:abc", "nginx")])
def test_image_basename(image: str, base: str) -> None:
    assert image_basename(image) == base


def test_redis_example_from_the_docs() -> None:
    svc, problems = one(inspect())
    assert (svc.id, svc.name, svc.port, svc.address, svc.tags, svc.meta) == \
        ("host1:redis.0:6379", "redis", 10000, "192.168.1.102", (), ())
    assert problems == []
    body = svc.registration()
    assert body["ID"] == "host1:redis.0:6379" and "Checks" not in body


def test_env_name_tags_and_meta() -> None:
    svc, _ = one(inspect(env=["SERVICE_NAME=db", "SERVICE_TAGS=master,backups", "SERVICE_REGION=us2"]))
    assert svc.name == "db" and set(svc.tags) == {"master", "backups"} and dict(svc.meta) == {"region": "us2"}


def test_labels_give_the_same_result_and_win_over_env() -> None:
    by_env, _ = one(inspect(env=["SERVICE_NAME=db", "SERVICE_REGION=us2"]))
    by_label, _ = one(inspect(labels={"SERVICE_NAME": "db", "SERVICE_REGION": "us2"}))
    assert by_env == by_label
    both, _ = one(inspect(env=["SERVICE_NAME=env"], labels={"SERVICE_NAME": "label"}))
    assert both.name == "label"


def test_nginx_two_ports_with_port_specific_keys() -> None:
    obj = inspect(name="nginx.0", image="progrium/nginx",
                  ports={"443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "4443"}],
                         "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8000"}]},
                  env=["SERVICE_443_NAME=https", "SERVICE_443_ID=https.12345", "SERVICE_443_SNI=enabled",
                       "SERVICE_80_NAME=http", "SERVICE_TAGS=www"])
    services, _ = container_services(obj, OPTS)
    by_port = {s.port: s for s in services}
    assert (by_port[4443].id, by_port[4443].name, dict(by_port[4443].meta), by_port[4443].tags) == \
        ("https.12345", "https", {"sni": "enabled"}, ("www",))
    assert (by_port[8000].id, by_port[8000].name, dict(by_port[8000].meta)) == ("host1:nginx.0:80", "http", {})


def test_group_suffix_applies_to_generic_name_only() -> None:
    ports = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "443/tcp": [{"HostIp": "", "HostPort": "8443"}]}
    services, _ = container_services(inspect(ports=ports, env=["SERVICE_NAME=web"]), OPTS)
    assert sorted(s.name for s in services) == ["web-443", "web-80"]


def test_unpublished_ports_skipped_unless_internal() -> None:
    obj = inspect(ports={"80/tcp": None}, exposed=["80/tcp"])
    assert container_services(obj, OPTS)[0] == []
    svc, _ = one(obj, MappingOptions(hostname="h", internal=True))
    assert (svc.address, svc.port) == ("172.17.0.5", 80)


def test_host_network_registers_exposed_ports() -> None:
    svc, _ = one(inspect(ports={}, exposed=["8080/tcp"], mode="host"))
    assert svc.port == 8080 and svc.address == "192.168.1.102"


def test_forced_ip_and_specific_binding_ip() -> None:
    svc, _ = one(inspect(ports={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1"}]}))
    assert svc.address == "127.0.0.1"
    svc, _ = one(inspect(), MappingOptions(hostname="h", host_ip="10.0.0.1", forced_ip="10.9.9.9"))
    assert svc.address == "10.9.9.9"


def test_ip_from_label_strips_the_prefix_length() -> None:
    svc, _ = one(inspect(labels={"ip": "10.1.2.3/24"}), MappingOptions(hostname="h", ip_from_label="ip"))
    assert svc.address == "10.1.2.3"


def test_udp_port_id_and_tag() -> None:
    svc, _ = one(inspect(ports={"53/udp": [{"HostIp": "", "HostPort": "5353"}]}))
    assert svc.id == "host1:redis.0:53:udp" and "udp" in svc.tags


def test_every_check_kind_given_is_registered() -> None:
    svc, problems = one(inspect(env=["SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_TCP=1", "SERVICE_CHECK_TTL=30s",
                                     "SERVICE_CHECK_INTERVAL=5s", "SERVICE_CHECK_TIMEOUT=1s",
                                     "SERVICE_CHECK_INITIAL_STATUS=passing",
                                     "SERVICE_CHECK_DEREGISTER_AFTER=10m", "SERVICE_CHECK_HTTP_METHOD=HEAD"]))
    checks = {c["CheckID"]: c for c in svc.registration()["Checks"]}
    assert problems == []
    http = checks["service:host1:redis.0:6379:http"]
    assert (http["HTTP"], http["Interval"], http["Timeout"], http["Method"], http["Status"],
            http["DeregisterCriticalServiceAfter"]) == \
        ("http://192.168.1.102:10000/health", "5s", "1s", "HEAD", "passing", "10m")
    assert checks["service:host1:redis.0:6379:tcp"]["TCP"] == "192.168.1.102:10000"
    ttl = checks["service:host1:redis.0:6379:ttl"]
    assert ttl["TTL"] == "30s" and "Interval" not in ttl
    assert dict(svc.meta)["check_http"] == "/health"  # Registrator also copies check keys into Meta


def test_script_check_runs_through_a_shell_with_substitution() -> None:
    svc, _ = one(inspect(env=["SERVICE_CHECK_SCRIPT=nc -z $SERVICE_IP $SERVICE_PORT"]))
    (check,) = svc.registration()["Checks"]
    assert check["Args"] == ["/bin/sh", "-c", "nc -z 192.168.1.102 10000"] and check["Interval"] == "10s"


def test_docker_healthcheck_becomes_a_ttl_check_with_the_current_status() -> None:
    svc, _ = one(inspect(health=["CMD-SHELL", "true"]))
    assert svc.health_check
    (check,) = svc.registration("passing")["Checks"]
    assert check["CheckID"] == "service:host1:redis.0:6379:docker-health" and check["Status"] == "passing"
    assert "TTL" in check
    off, _ = one(inspect(health=["CMD-SHELL", "true"], env=["SERVICE_CHECK_DOCKER_HEALTH=false"]))
    assert not off.health_check and not off.checks
    none, _ = one(inspect(health=["NONE"]))
    assert not none.health_check


def test_service_port_registers_a_container_without_ports() -> None:
    svc, _ = one(inspect(ports={}, exposed=[], env=["SERVICE_PORT=7000", "SERVICE_NAME=w"]))
    assert (svc.id, svc.name, svc.port) == ("host1:redis.0:7000", "w", 7000)
    assert "port" not in dict(svc.meta)


@pytest.mark.parametrize("env,needle", [
    (["SERVICE_PORT=x"], "SERVICE_PORT='x' is not a port number"),
    (["SERVICE_PORT=70000"], "is not a port number"),
])
def test_bad_service_port_is_reported(env: list[str], needle: str) -> None:
    services, problems = container_services(inspect(ports={}, exposed=[], env=env), OPTS)
    assert services == [] and any(needle in p for p in problems)


@pytest.mark.parametrize("env,needle", [
    (["SERVICE_CHECK_HTTP=/", "SERVICE_CHECK_INTERVAL=soon"], "is not a duration"),
    (["SERVICE_CHECK_HTTP=/", "SERVICE_CHECK_TIMEOUT=-1s"], "must be positive"),
    (["SERVICE_CHECK_TTL=forever"], "SERVICE_CHECK_TTL='forever' is not a duration"),
    (["SERVICE_CHECK_BOGUS=1"], "SERVICE_CHECK_BOGUS: unknown check setting"),
    (["SERVICE_CHECK_CMD=/bin/true"], "SERVICE_CHECK_CMD needs"),
    (["SERVICE_CHECK_HTTP=/", "SERVICE_CHECK_INITIAL_STATUS=ok"], "must be passing, warning or critical"),
    (["SERVICE_WEIRD.KEY=1"], "not a valid Consul meta key"),
    (["SERVICE_CONSUL-X=1"], "not a valid Consul meta key"),
    (["SERVICE_BIG=" + "x" * 600], "longer than 512"),
])
def test_bad_values_are_reported_and_the_service_still_registers(env: list[str], needle: str) -> None:
    svc, problems = one(inspect(env=env))
    assert any(needle in p for p in problems), problems
    assert all(p.startswith("container redis.0: ") for p in problems)
    for check in svc.registration().get("Checks", []):
        assert check.get("Interval", "10s") == "10s" and "Timeout" not in check and "Status" not in check


def test_too_many_meta_keys_are_capped() -> None:
    svc, problems = one(inspect(env=[f"SERVICE_K{i}=v" for i in range(70)]))
    assert len(svc.meta) == 63 and len(svc.registration(owner="h")["Meta"]) == 64
    assert len(problems) == 7


def test_ignore_and_explicit() -> None:
    assert container_services(inspect(env=["SERVICE_IGNORE=1"]), OPTS)[0] == []
    assert container_services(inspect(env=["SERVICE_6379_IGNORE=1"]), OPTS)[0] == []
    explicit = MappingOptions(hostname="h", explicit=True)
    assert container_services(inspect(), explicit)[0] == []
    assert len(container_services(inspect(env=["SERVICE_6379_NAME=r"]), explicit)[0]) == 1


def test_garbage_inspect_objects_do_not_raise() -> None:
    for obj in ({}, {"Config": None, "NetworkSettings": None}, {"Config": {"Env": ["NOEQUALS", "SERVICE_="]}},
                inspect(ports={"80/tcp": [{"HostIp": "", "HostPort": "notanumber"}]}),
                # str.isdigit() is true of these, int() refuses them: found by the generated containers
                inspect(ports={}, exposed=[], env=["SERVICE_PORT=\u00b9"]), inspect(ports={}, exposed=["\u00b9/tcp"]),
                inspect(ports={}, exposed=[], env=["SERVICE_PORT=" + "1" * 5000]),
                inspect(ports={"80/tcp": [{"HostIp": "", "HostPort": "1" * 5000}]})):
        services, problems = container_services(obj, OPTS)
        assert isinstance(services, list) and isinstance(problems, list)
