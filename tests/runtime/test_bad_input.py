"""Bad input gets Docker's status codes and messages, and the engine keeps serving."""

from __future__ import annotations

import json
import socket

import pytest

from .helpers import EngineProc, start_engine, stop_engine


def raw(engine: EngineProc, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(engine.socket)
        sock.sendall(data)
        f = sock.makefile("rb")
        status = f.readline().split(b" ")
        headers: dict[str, str] = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0")))
        f.close()
    return int(status[1]), headers, body


def call(engine: EngineProc, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    body = body or b""
    req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
           "Content-Type: application/json\r\n\r\n").encode() + body
    return raw(engine, req)


def assert_error(resp: tuple[int, dict, bytes], status: int, fragment: str) -> None:
    code, headers, body = resp
    assert code == status, body
    assert headers["content-type"] == "application/json"
    assert fragment in json.loads(body)["message"]


def assert_alive(engine: EngineProc) -> None:
    code, headers, body = call(engine, "GET", "/_ping")
    assert (code, body) == (200, b"OK") and headers["api-version"] == "1.47"


@pytest.fixture(scope="module")
def process_engine(tmp_path_factory):
    e = start_engine(tmp_path_factory.mktemp("bad"), "process")
    yield e
    stop_engine(e.proc)


CASES = [
    ("GET", "/v1.47/containers/nope/json", None, 404, "No such container: nope"),
    ("POST", "/v1.47/containers/nope/start", None, 404, "No such container: nope"),
    ("DELETE", "/containers/nope", None, 404, "No such container: nope"),
    ("POST", "/containers/create", b"{not json", 400, "invalid JSON"),
    ("POST", "/containers/create", b"[1, 2]", 400, "invalid JSON"),
    ("POST", "/containers/create", b'{"Image": "x"}', 400, "No command specified"),
    ("POST", "/containers/create?name=bad%20name", b'{"Image": "x", "Cmd": ["true"]}', 400, "Invalid container name"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["true"], "HostConfig": {"PortBindings": '
     b'{"http/tcp": [{"HostPort": "80"}]}}}', 400, "invalid port specification"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["true"], "HostConfig": {"PortBindings": '
     b'{"80/tcp": [{"HostPort": "99999"}]}}}', 400, "invalid port specification"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["true"], "ExposedPorts": {"80/sctp": {}}}', 400,
     "invalid proto"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["true"], "HostConfig": {"RestartPolicy": '
     b'{"Name": "sometimes"}}}', 400, "invalid restart policy"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": "true", "Env": "A=1"}', 400, "Env must be a list"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["true"], "Tty": true}', 400, "need runc isolation"),
    ("POST", "/containers/create", b'{"Image": "x", "Cmd": ["cat"], "OpenStdin": true}', 400, "need runc isolation"),
    ("GET", "/v1.99/version", None, 400, "is too new"),
    ("GET", "/v1.12/version", None, 400, "is too old"),
    ("GET", "/no/such/endpoint", None, 404, "page not found"),
    ("PUT", "/containers/json", None, 405, "not allowed"),
    ("GET", "/containers/json?filters=%7Bbad", None, 400, "invalid filter"),
    ("GET", "/containers/json?filters=%7B%22color%22%3A%5B%22red%22%5D%7D", None, 400, "invalid filter 'color'"),
    ("POST", "/images/create?fromImage=busybox&tag=latest", None, 501, "no default registry"),
    ("POST", "/images/create", None, 400, "fromImage or fromSrc is required"),
    ("GET", "/exec/nope/json", None, 404, "No such exec instance"),
    # found by tests/runtime/test_engine_fuzz.py: these were internal errors
    ("POST", "/networks/create", b'{"Name": "n", "Labels": [null]}', 400, "Labels must be an object of strings"),
    ("POST", "/volumes/create", b'{"Name": ["v"]}', 400, "Name must be a string"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), CASES,
                         ids=[f"{c[0]} {c[1][:40]} {c[3]}" for c in CASES])
def test_bad_requests_get_docker_errors(process_engine: EngineProc, method, path, body, status, fragment) -> None:
    assert_error(call(process_engine, method, path, body), status, fragment)
    assert_alive(process_engine)


def test_lifecycle_conflicts(process_engine: EngineProc) -> None:
    e = process_engine
    code, _, body = call(e, "POST", "/containers/create?name=c1", b'{"Image": "x", "Cmd": ["sleep", "30"]}')
    assert code == 201
    cid = json.loads(body)["Id"]
    assert_error(call(e, "POST", "/containers/create?name=c1", b'{"Image": "x", "Cmd": ["true"]}'), 409,
                 'The container name "/c1" is already in use')
    assert_error(call(e, "POST", "/containers/c1/kill"), 409, "is not running")
    assert call(e, "POST", "/containers/c1/stop")[0] == 304
    assert call(e, "POST", "/containers/c1/start")[0] == 204
    assert call(e, "POST", "/containers/c1/start")[0] == 304
    assert_error(call(e, "DELETE", "/containers/c1"), 409, "You cannot remove a running container")
    assert_error(call(e, "POST", "/containers/c1/kill?signal=SIGNOPE"), 400, "Invalid signal")
    assert_error(call(e, "POST", "/containers/c1/exec", b'{"Cmd": []}'), 400, "No exec command")
    assert_error(call(e, "GET", "/containers/c1/logs"), 400, "choose at least one stream")
    assert call(e, "DELETE", "/containers/c1?force=1")[0] == 204
    assert_error(call(e, "GET", f"/containers/{cid[:12]}/json"), 404, "No such container")
    assert_alive(e)


def test_command_that_does_not_exist(process_engine: EngineProc) -> None:
    e = process_engine
    assert call(e, "POST", "/containers/create?name=nx", b'{"Image": "x", "Cmd": ["no-such-binary-xyz"]}')[0] == 201
    assert_error(call(e, "POST", "/containers/nx/start"), 400, "executable file not found in $PATH")
    state = json.loads(call(e, "GET", "/containers/nx/json")[2])["State"]
    assert state["ExitCode"] == 127 and not state["Running"]
    res = e.docker("run", "img", "no-such-binary-xyz", check=False)
    assert res.returncode == 127 and "executable file not found" in res.stderr
    assert_alive(e)


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /_ping SPDY/3\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nno-colon-here\r\n\r\n",
    b"POST /containers/create HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /containers/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
])
def test_garbage_on_the_socket_gets_400(process_engine: EngineProc, garbage: bytes) -> None:
    code, headers, body = raw(process_engine, garbage)
    assert code == 400 and headers["content-type"] == "application/json" and json.loads(body)["message"]
    assert_alive(process_engine)


def test_socket_is_private(process_engine: EngineProc) -> None:
    import os
    import stat

    assert stat.S_IMODE(os.stat(process_engine.socket).st_mode) == 0o600
