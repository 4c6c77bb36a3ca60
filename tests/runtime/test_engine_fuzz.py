"""Generated Docker Engine API bodies: Docker's status and message, never an internal error.

Hypothesis starts from bodies the engine accepts (a container create with ports, restart policy,
environment, labels, mounts and a healthcheck; a network; a volume; an exec) and replaces, removes or
adds fields with JSON of the wrong kind. Every answer must be a status with Docker's JSON
``message`` that is not the engine's "internal error" (a handler that raised), and the engine keeps
serving. Containers are created, never started, and removed again.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.integration.test_api_fuzz import bodies

from .helpers import start_engine, stop_engine
from .test_bad_input import assert_alive, call

CREATE = {"Image": "x", "Cmd": ["sleep", "30"], "Entrypoint": None, "Env": ["A=1", "B=two"],
          "Labels": {"app": "web", "SERVICE_NAME": "web"}, "WorkingDir": "/", "User": "",
          "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "StopSignal": "SIGTERM", "StopTimeout": 5,
          "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000, "Timeout": 500000000, "Retries": 3},
          "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "0"}]},
                         "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                         "Binds": [], "AutoRemove": False, "PublishAllPorts": False, "Memory": 0,
                         "NetworkMode": "default", "Dns": ["127.0.0.1"], "ExtraHosts": ["h:127.0.0.2"]},
          "NetworkingConfig": {"EndpointsConfig": {}}}
NETWORK = {"Name": "fzn", "Driver": "bridge", "CheckDuplicate": True, "Internal": False,
           "Labels": {"a": "b"}, "IPAM": {"Driver": "default", "Config": []}, "Options": {}}
VOLUME = {"Name": "fzv", "Driver": "local", "DriverOpts": {}, "Labels": {"a": "b"}}

ENDPOINTS = [("POST", "/v1.47/containers/create", CREATE), ("POST", "/v1.47/containers/create", CREATE),
             ("POST", "/v1.47/networks/create", NETWORK), ("POST", "/v1.47/volumes/create", VOLUME)]


@pytest.fixture(scope="module")
def process_engine(tmp_path_factory):
    e = start_engine(tmp_path_factory.mktemp("fuzz"), "process")
    yield e
    stop_engine(e.proc)


READ_BACK = {"/containers/create": ("/containers/{}/json", "/containers/json?all=1"),
             "/networks/create": ("/networks/{}", "/networks"), "/volumes/create": ("/volumes/{}", "/volumes")}


def _reads_still_answer(engine, path: str, reply: dict) -> None:
    """What was accepted must not break the reads that show it (inspect and the list)."""
    ref = reply.get("Id") or reply.get("Name") or ""
    for kind, reads in READ_BACK.items():
        if path.endswith(kind):
            for target in reads:
                status, _, body = call(engine, "GET", "/v1.47" + target.format(ref))
                assert status == 200, (path, target, status, body[:300])


def _cleanup(engine, path: str, reply: dict) -> None:
    if path.endswith("/containers/create") and "Id" in reply:
        assert call(engine, "DELETE", f"/containers/{reply['Id']}?force=1")[0] == 204
    elif path.endswith("/networks/create") and "Id" in reply:
        assert call(engine, "DELETE", f"/networks/{reply['Id']}")[0] == 204
    elif path.endswith("/volumes/create") and "Name" in reply:
        assert call(engine, "DELETE", f"/volumes/{reply['Name']}?force=1")[0] == 204


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=bodies(ENDPOINTS))
def test_generated_bodies_get_docker_answers(process_engine, case) -> None:
    method, path, doc = case
    status, headers, body = call(process_engine, method, path, json.dumps(doc).encode())
    assert headers.get("content-type") == "application/json", (path, doc, status, body[:300])
    reply = json.loads(body)
    message = reply.get("message", "") if isinstance(reply, dict) else ""
    assert not message.startswith("internal error"), (path, doc, status, message)
    assert status in (200, 201, 400, 404, 409, 501), (path, doc, status, body[:300])
    if status in (200, 201):
        _reads_still_answer(process_engine, path, reply)
        _cleanup(process_engine, path, reply)


def test_the_engine_still_serves_and_holds_nothing_created(process_engine) -> None:
    for path, body in (("/v1.47/containers/create", CREATE), ("/v1.47/networks/create", NETWORK),
                       ("/v1.47/volumes/create", VOLUME)):  # armed: the base bodies are accepted
        status, _, reply = call(process_engine, "POST", path, json.dumps(body).encode())
        assert status == 201, (path, reply)
        _cleanup(process_engine, path, json.loads(reply))
    assert json.loads(call(process_engine, "GET", "/containers/json?all=1")[2]) == []
    assert_alive(process_engine)


def test_names_longer_than_a_file_name_get_docker_answers(process_engine) -> None:
    """A volume is a directory named after it: a 300-character name is a 400 on create and a 404
    on inspect and remove, not the filesystem's ENAMETOOLONG as an internal error (found by the
    generated bodies above). Containers and networks with such names answer as Docker does."""
    long = "v" * 300
    status, _, body = call(process_engine, "POST", "/v1.47/volumes/create", json.dumps({"Name": long}).encode())
    assert status == 400 and b"too long" in body, (status, body[:200])
    assert call(process_engine, "GET", f"/v1.47/volumes/{long}")[0] == 404
    assert call(process_engine, "DELETE", f"/v1.47/volumes/{long}")[0] == 404
    assert call(process_engine, "DELETE", f"/v1.47/volumes/{long}?force=1")[0] == 204
    for path, doc in (("/v1.47/containers/create?name=" + "c" * 300, CREATE),
                      ("/v1.47/containers/create", {**CREATE, "HostConfig": {"Binds": [f"{long}:/data"]}}),
                      ("/v1.47/networks/create", {**NETWORK, "Name": "n" * 300})):
        status, _, body = call(process_engine, "POST", path, json.dumps(doc).encode())
        reply = json.loads(body)
        assert status in (201, 400), (path, status, body[:200])
        assert not reply.get("message", "").startswith("internal error"), (path, reply)
        if status == 201:
            _cleanup(process_engine, path, reply)
    assert_alive(process_engine)


def test_digits_int_refuses_get_docker_answers(process_engine) -> None:
    """``str.isdigit()`` is true of "\u00b9" (superscript one) and of 5,000 digits, and ``int()``
    refuses both: ports, restart counts, users, signals and query numbers are a 400, not an
    internal error."""
    sup, many = "\u00b9", "1" * 5000
    bodies = [{**CREATE, "ExposedPorts": {f"{sup}/tcp": {}}},
              {**CREATE, "ExposedPorts": {f"{many}/tcp": {}}},
              {**CREATE, "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": sup}]}}},
              {**CREATE, "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": sup}}},
              {**CREATE, "User": many}, {**CREATE, "StopSignal": sup}]
    for doc in bodies:
        status, _, body = call(process_engine, "POST", "/v1.47/containers/create", json.dumps(doc).encode())
        reply = json.loads(body)
        assert status in (201, 400), (doc, status, body[:200])
        assert not reply.get("message", "").startswith("internal error"), (doc, reply)
        if status == 201:
            _cleanup(process_engine, "/containers/create", reply)
    for target in (f"/v1.47/containers/json?limit={many}", f"/v1.47/events?since={many}&until=1",
                   f"/v1.47/containers/json?limit={sup}"):
        status, _, body = call(process_engine, "GET", target)
        assert not body.startswith(b'{"message":"internal error'), (target, status, body[:200])
    assert_alive(process_engine)
