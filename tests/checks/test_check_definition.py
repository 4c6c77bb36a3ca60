import pytest

from beacon.checks import (
    CheckDefinition,
    CheckDefinitionError,
    service_check_id,
)


def test_pascal_case_http_check_decodes_every_field():
    d = CheckDefinition.from_json({
        "ID": "web-http", "Name": "Web", "ServiceID": "web", "Notes": "n", "Status": "passing",
        "HTTP": "https://127.0.0.1:8443/health", "Method": "POST",
        "Header": {"X-A": ["1", "2"], "Host": "example.test"}, "Body": "{}",
        "TLSSkipVerify": True, "TLSServerName": "example.test", "DisableRedirects": False,
        "Interval": "10s", "Timeout": "1500ms", "DeregisterCriticalServiceAfter": "1m30s",
        "SuccessBeforePassing": 2, "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 3,
        "OutputMaxSize": 512, "Token": "ignored", "SomethingNew": 1,
    })
    assert d.check_id == "web-http" and d.name == "Web" and d.service_id == "web"
    assert d.status == "passing" and d.notes == "n"
    assert d.http == "https://127.0.0.1:8443/health" and d.method == "POST" and d.body == "{}"
    assert d.header == {"X-A": ["1", "2"], "Host": ["example.test"]}
    assert d.tls_skip_verify is True and d.tls_server_name == "example.test"
    assert d.disable_redirects is False
    assert (d.interval, d.timeout, d.deregister_critical_service_after) == (10.0, 1.5, 90.0)
    assert (d.success_before_passing, d.failures_before_warning, d.failures_before_critical) == (2, 1, 3)
    assert d.output_max_size == 512
    assert d.kind == "http" and not d.is_script
    d.validate()


def test_snake_case_and_lowercase_keys_are_aliases():
    d = CheckDefinition.from_json({
        "name": "script", "check_id": "s1", "service_id": "db", "script_args": ["/bin/true"],
        "interval": "5s", "timeout": 2_000_000_000, "success_before_passing": 1,
        "failures_before_critical": 2, "output_max_size": 100,
    })
    assert (d.check_id, d.service_id, d.args) == ("s1", "db", ["/bin/true"])
    assert (d.interval, d.timeout) == (5.0, 2.0)
    assert d.kind == "script" and d.is_script
    lower = CheckDefinition.from_json({"name": "x", "args": ["a"], "interval": "1s", "dockercontainerid": "c1"})
    assert lower.docker_container_id == "c1" and lower.kind == "docker" and lower.is_script
    go_client = CheckDefinition.from_json({"Name": "x", "ScriptArgs": ["a"], "Interval": "1s",
                                          "DockerContainerID": "c1", "Shell": "/bin/bash"})
    assert go_client.args == ["a"] and go_client.shell == "/bin/bash"
    snake = CheckDefinition.from_json({"name": "x", "tcp": "127.0.0.1:1", "interval": "1s",
                                       "tls_skip_verify": True, "docker_container_id": "c9",
                                       "deregister_critical_service_after": "2m"})
    assert snake.tls_skip_verify and snake.docker_container_id == "c9"
    assert snake.deregister_critical_service_after == 120.0


def test_check_id_defaults_to_given_id_then_name_and_service_id_is_filled_in():
    assert CheckDefinition.from_json({"CheckID": "c", "Name": "n", "TTL": "1s"}).check_id == "c"
    assert CheckDefinition.from_json({"Name": "n", "TTL": "1s"}).check_id == "n"
    embedded = CheckDefinition.from_json({"TTL": "1s"}, service_id="web", check_id=service_check_id("web"))
    assert (embedded.check_id, embedded.service_id) == ("service:web", "web")
    own = CheckDefinition.from_json({"TTL": "1s", "ServiceID": "other"}, service_id="web")
    assert own.service_id == "other"


def test_service_check_ids_are_numbered_only_when_several():
    assert service_check_id("web") == "service:web"
    assert [service_check_id("web", i, 2) for i in range(2)] == ["service:web:1", "service:web:2"]


def test_defaults_match_consul():
    d = CheckDefinition.from_json({"Name": "t", "TTL": "30s"})
    assert d.status == "critical" and d.output_max_size == 4096 and d.kind == "ttl"
    assert CheckDefinition.from_json({"Name": "h", "HTTP": "http://x", "Interval": "1s"}).effective_timeout == 10.0
    assert CheckDefinition.from_json({"Name": "s", "Args": ["x"], "Interval": "1s"}).effective_timeout == 30.0
    assert CheckDefinition.from_json({"Name": "s", "Args": ["x"], "Interval": "1s",
                                      "Timeout": "3s"}).effective_timeout == 3.0
    empty_status = CheckDefinition.from_json({"Name": "t", "TTL": "1s", "Status": ""})
    assert empty_status.status == "critical"


@pytest.mark.parametrize(("body", "message"), [
    ({"Interval": "10", "TTL": "1s"}, 'missing unit in duration "10"'),
    ({"Interval": True, "TCP": "a:1"}, "invalid duration"),
    ({"Args": "not-a-list", "Interval": "1s"}, "Args must be a list of strings"),
    ({"Header": {"A": [1]}, "HTTP": "http://x", "Interval": "1s"}, "values of header"),
    ({"FailuresBeforeCritical": "many", "TTL": "1s"}, "must be an integer"),
    ({"TLSSkipVerify": "maybe", "HTTP": "http://x", "Interval": "1s"}, "must be a boolean"),
    ({"OSService": "winsvc", "Interval": "1s"}, "OSService checks are not supported"),
])
def test_undecodable_bodies_raise_clear_errors(body, message):
    with pytest.raises(CheckDefinitionError, match=message):
        CheckDefinition.from_json({"Name": "x", **body})


def test_from_json_rejects_non_objects():
    with pytest.raises(CheckDefinitionError):
        CheckDefinition.from_json(["Name"])  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "message"), [
    ({"TTL": "10s", "Interval": "10s", "HTTP": "http://x"}, "Interval and TTL cannot both be specified"),
    ({"HTTP": "http://x"}, "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
    ({"H2PING": "x:1"}, "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
    ({"GRPC": "127.0.0.1:9000"}, "Interval must be > 0 for a GRPC check"),
    ({"TCP": "127.0.0.1:1"}, "Interval must be > 0 for Script, HTTP"),
    ({"UDP": "127.0.0.1:1"}, "Interval must be > 0 for Script, HTTP"),
    ({"Args": ["true"]}, "Interval must be > 0 for Script, HTTP"),
    ({"Args": ["true"], "DockerContainerID": "c"}, "Interval must be > 0 for Script, HTTP"),
    ({"TTL": "-1s"}, "TTL must be > 0 for TTL checks"),
    ({"AliasService": "web", "Interval": "10s"}, "Interval cannot be set for Alias checks"),
    ({"AliasService": "web", "TTL": "10s"}, "TTL must be not be set for Alias checks"),
    ({"TTL": "1s", "FailuresBeforeWarning": 3, "FailuresBeforeCritical": 2},
     "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"),
    ({"TTL": "1s", "Status": "ok"}, "Status for checks must 'passing', 'warning', 'critical'"),
    ({"Notes": "nothing to run"}, "Check type is not valid"),
    ({"DockerContainerID": "c", "Interval": "1s"}, "Docker checks need Args"),
])
def test_validation_messages_are_consuls(body, message):
    d = CheckDefinition.from_json({"Name": "x", **body})
    with pytest.raises(CheckDefinitionError) as info:
        d.validate()
    assert message in info.value.message


def test_valid_checks_of_each_kind_pass_validation():
    bodies = {
        "script": {"Args": ["true"], "Interval": "1s"},
        "http": {"HTTP": "http://127.0.0.1/", "Interval": "1s"},
        "tcp": {"TCP": "127.0.0.1:1", "Interval": "1s"},
        "udp": {"UDP": "127.0.0.1:1", "Interval": "1s"},
        "ttl": {"TTL": "1s"},
        "docker": {"DockerContainerID": "c", "Args": ["true"], "Interval": "1s"},
        "alias": {"AliasService": "web"},
    }
    for kind, body in bodies.items():
        d = CheckDefinition.from_json({"Name": kind, **body})
        d.validate()
        assert d.kind == kind == d.type


def test_legacy_script_runs_through_the_shell():
    d = CheckDefinition.from_json({"Name": "x", "Script": "echo hi", "Interval": "1s"})
    assert d.kind == "script" and d.command == ["/bin/sh", "-c", "echo hi"]
    docker = CheckDefinition.from_json({"Name": "x", "Script": "echo hi", "Shell": "/bin/bash",
                                        "DockerContainerID": "c", "Interval": "1s"})
    assert docker.command == ["/bin/bash", "-c", "echo hi"]


def test_normalized_raises_short_intervals_to_one_second():
    d = CheckDefinition.from_json({"Name": "x", "TCP": "127.0.0.1:1", "Interval": "100ms"})
    assert d.normalized().interval == 1.0
    assert d.interval == 0.1  # the original is untouched
    assert d.normalized(min_interval=0.05).interval == 0.1


def test_definition_json_has_consul_shape():
    d = CheckDefinition.from_json({
        "Name": "web", "HTTP": "http://127.0.0.1:8080/h", "Header": {"X": ["1"]}, "Method": "HEAD",
        "Interval": "10s", "Timeout": "1s", "DeregisterCriticalServiceAfter": "90m",
    })
    assert d.definition_json() == {
        "HTTP": "http://127.0.0.1:8080/h", "Header": {"X": ["1"]}, "Method": "HEAD",
        "Interval": "10s", "OutputMaxSize": 4096, "Timeout": "1s",
        "DeregisterCriticalServiceAfter": "1h30m0s",
    }
    assert (d.type, d.interval_str, d.timeout_str) == ("http", "10s", "1s")
    ttl = CheckDefinition.from_json({"Name": "t", "TTL": "30s", "ServiceID": "web"})
    assert ttl.definition_json() == {"OutputMaxSize": 4096, "TTL": "30s"}
    assert ttl.interval_str == ""
    hc = ttl.to_health_check("node1", service_name="web", service_tags=["a"])
    assert (hc.node, hc.check_id, hc.status, hc.type, hc.service_name, hc.service_tags) == (
        "node1", "t", "critical", "ttl", "web", ["a"])
    assert hc.definition == {"OutputMaxSize": 4096, "TTL": "30s"}


@pytest.mark.parametrize("body", [
    {"HTTP": "http://127.0.0.1/h", "Method": "POST", "Header": {"A": ["1"]}, "Body": "x", "TLSSkipVerify": True,
     "TLSServerName": "s", "DisableRedirects": False, "Interval": "15s", "Timeout": "2s"},
    {"DockerContainerID": "c", "Args": ["a", "b"], "Shell": "/bin/bash", "Interval": "1m"},
    {"TTL": "45s", "DeregisterCriticalServiceAfter": "10m", "OutputMaxSize": 100},
    {"AliasService": "web", "AliasNode": "n2"},
    {"HTTP": "http://127.0.0.1/h", "DisableRedirects": True, "Interval": "5s"},
    {"GRPC": "127.0.0.1:9000/svc", "GRPCUseTLS": True, "TLSSkipVerify": True, "Interval": "5s"},
    {"H2PING": "127.0.0.1:9000", "H2PingUseTLS": False, "Interval": "5s"},
])
def test_definition_json_decodes_back_to_the_same_check(body):
    d = CheckDefinition.from_json({"ID": "c1", "Name": "n", **body})
    again = CheckDefinition.from_json({"ID": "c1", "Name": "n", **d.definition_json()})
    assert again == d
