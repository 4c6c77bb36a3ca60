"""The docker SDK (docker-py) against the engine."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import EngineProc, busybox_tar, http_get, process_mode_port, until

docker = pytest.importorskip("docker")


@pytest.fixture
def client(engine: EngineProc) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=engine.url, version="auto", timeout=30)
    yield c
    c.close()


def _server(engine: EngineProc) -> tuple[int, list[str]]:
    if engine.isolation == "process":
        port = process_mode_port()
        return int(port), [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1"]
    return 80, [sys.executable, "-m", "http.server", "80"]


def test_sdk_lifecycle(engine: EngineProc, client: docker.DockerClient) -> None:
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.47"
    port, cmd = _server(engine)
    c = client.containers.run("python:3", cmd, detach=True, name="sdkweb", environment={"A": "b"},
                              labels={"svc": "web"}, ports={f"{port}/tcp": ("127.0.0.1", None)})
    c.reload()
    assert c.status == "running" and c.name == "sdkweb" and c.labels == {"svc": "web"}
    host_port = int(c.ports[f"{port}/tcp"][0]["HostPort"])
    assert http_get(host_port)[0] == 200

    code, out = c.exec_run(["sh", "-c", "echo $A; echo oops >&2"], demux=True)
    assert code == 0 and out == (b"b\n", b"oops\n")

    assert [x.name for x in client.containers.list(filters={"label": "svc=web"})] == ["sdkweb"]
    assert client.containers.list(filters={"label": "svc=db"}) == []
    assert [x.name for x in client.containers.list(filters={"name": "sdkw"})] == ["sdkweb"]

    c.stop(timeout=5)
    assert c.wait(timeout=10)["StatusCode"] == 143
    assert [x.name for x in client.containers.list(all=True, filters={"status": "exited"})] == ["sdkweb"]
    assert b"GET / HTTP/1.1" in c.logs()
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("sdkweb")


def test_sdk_run_without_detach_returns_output(client: docker.DockerClient) -> None:
    assert client.containers.run("alpine", ["echo", "hello"], remove=True) == b"hello\n"
    with pytest.raises(docker.errors.ContainerError) as err:
        client.containers.run("alpine", ["sh", "-c", "echo bad >&2; exit 2"], remove=True)
    assert err.value.exit_status == 2


def test_sdk_event_stream_is_live_and_filtered(client: docker.DockerClient) -> None:
    seen: list[str] = []
    got_destroy = threading.Event()
    stream = client.events(decode=True, filters={"label": "stream=yes"})

    def consume() -> None:
        for event in stream:
            seen.append(event["Action"])
            if event["Action"] == "destroy":
                got_destroy.set()
                return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    client.containers.run("x", ["true"], labels={"stream": "no"}, remove=True)  # filtered out
    c = client.containers.run("x", ["sleep", "30"], labels={"stream": "yes"}, detach=True)
    c.kill()
    c.remove()
    assert got_destroy.wait(10)
    stream.close()
    reader.join(5)
    assert seen == ["create", "start", "kill", "die", "destroy"]


def test_wait_flushes_headers_before_the_container_starts(engine: EngineProc,
                                                         client: docker.DockerClient) -> None:
    c = client.containers.create("x", ["sh", "-c", "exit 6"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(engine.socket)
        sock.sendall(f"POST /v1.47/containers/{c.id}/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        f = sock.makefile("rb")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 200"), status  # before start: the CLI relies on this
        headers = {}
        while (line := f.readline()) != b"\r\n":
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        assert headers["content-type"] == "application/json" and headers["api-version"] == "1.47"
        c.start()
        size_line = f.readline()
        body = f.read(int(size_line, 16))
        assert json.loads(body) == {"Error": None, "StatusCode": 6}, (size_line, body, c.logs())
        f.close()
    c.remove()


def test_sdk_images_and_pull_error(client: docker.DockerClient, tmp_path: Path) -> None:
    if shutil.which("busybox") is None:
        pytest.skip("needs busybox-static")
    client.api.import_image(src=str(busybox_tar(tmp_path)), repository="busybox", tag="1.36")
    tags = [t for img in client.images.list() for t in img.tags]
    assert tags == ["busybox:1.36"]
    with pytest.raises(docker.errors.APIError) as err:
        client.images.pull("busybox", tag="latest")  # never Docker Hub: no traffic leaves the host
    assert "no default registry" in str(err.value)
    until(lambda: client.ping(), what="engine still answering")
