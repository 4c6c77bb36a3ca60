"""Docker checks against a fake Docker Engine exec API served on a unix socket.

The fake implements the three exec calls the way dockerd answers them (201 + Id, a multiplexed
stdout/stderr stream, ExitCode from inspect); the real engine is tested elsewhere.
"""

import asyncio
import contextlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from beacon.checks import CheckDefinition, CheckScheduler
from beacon.checks.docker import DockerExecClient
from beacon.checks.output import TailBuffer


@dataclass
class FakeDocker:
    socket_path: str
    exit_code: int = 0
    running: set[str] = field(default_factory=lambda: {"web1"})
    paused: set[str] = field(default_factory=set)
    execs: dict[str, dict] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    start_delay: float = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def serve_exec_api(path: str, create, start, inspect) -> web.AppRunner:
    """Serve the three exec endpoints on a unix socket; listening once this returns."""
    app = web.Application()
    app.router.add_post("/containers/{id}/exec", create)
    app.router.add_post("/exec/{id}/start", start)
    app.router.add_get("/exec/{id}/json", inspect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    return runner


@pytest.fixture
async def fake_docker():
    short_dir = tempfile.mkdtemp(prefix="bdk", dir="/tmp")  # unix socket paths are limited to ~107 bytes
    fake = FakeDocker(os.path.join(short_dir, "docker.sock"))

    async def create(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        fake.calls.append(f"create {cid}")
        if cid not in fake.running:
            return web.json_response({"message": f"No such container: {cid}"}, status=404)
        if cid in fake.paused:
            return web.json_response({"message": f"Container {cid} is paused"}, status=409)
        body = await request.json()
        assert body["AttachStdout"] and body["AttachStderr"] and body["Tty"] is False
        exec_id = f"exec{len(fake.execs) + 1}"
        fake.execs[exec_id] = {"container": cid, "cmd": body["Cmd"], "exit": None}
        return web.json_response({"Id": exec_id}, status=201)

    async def start(request: web.Request) -> web.StreamResponse:
        exec_id = request.match_info["id"]
        fake.calls.append(f"start {exec_id}")
        if exec_id not in fake.execs:
            return web.json_response({"message": "No such exec instance"}, status=404)
        body = await request.json()
        assert body == {"Detach": False, "Tty": False}
        ex = fake.execs[exec_id]
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.multiplexed-stream"})
        await resp.prepare(request)
        await resp.write(frame(1, ("ran " + " ".join(ex["cmd"]) + "\n").encode()))
        if fake.start_delay:
            # hang like a slow command; teardown releases it so the server can stop at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fake.release.wait(), fake.start_delay)
        await resp.write(frame(2, b"warning on stderr\n"))
        ex["exit"] = fake.exit_code
        await resp.write_eof()
        return resp

    async def inspect(request: web.Request) -> web.Response:
        exec_id = request.match_info["id"]
        fake.calls.append(f"inspect {exec_id}")
        ex = fake.execs.get(exec_id)
        if ex is None:
            return web.json_response({"message": "No such exec instance"}, status=404)
        return web.json_response({"ID": exec_id, "Running": False, "ExitCode": ex["exit"]})

    runner = await serve_exec_api(fake.socket_path, create, start, inspect)
    yield fake
    fake.release.set()
    async with asyncio.timeout(5):
        await runner.cleanup()
    shutil.rmtree(short_dir, ignore_errors=True)


@pytest.fixture
async def docker_scheduler(recorder, fake_docker):
    sched = CheckScheduler(recorder, docker_host=fake_docker.host, min_interval=0.01)
    yield sched
    async with asyncio.timeout(10):
        await sched.stop()


def docker_check(container="web1", **extra):
    body = {"ID": "dock", "Name": "dock", "DockerContainerID": container,
            "Args": ["/bin/check", "--quick"], "Interval": "30ms", **extra}
    return CheckDefinition.from_json(body)


async def test_docker_check_follows_the_exec_exit_code(docker_scheduler, recorder, fake_docker):
    docker_scheduler.add(docker_check())
    got = await recorder.wait_status("dock", "passing")
    assert got.output == "ran /bin/check --quick\nwarning on stderr\n"
    for code, status in ((1, "warning"), (3, "critical"), (0, "passing")):
        fake_docker.exit_code = code
        n = len(recorder.of("dock"))
        await recorder.wait_status("dock", status, after=n)
    # each run is create -> start -> inspect on the same exec
    assert fake_docker.calls[:3] == ["create web1", "start exec1", "inspect exec1"]


async def test_docker_legacy_script_runs_through_the_given_shell(docker_scheduler, recorder, fake_docker):
    docker_scheduler.add(CheckDefinition.from_json({
        "ID": "dock", "Name": "dock", "DockerContainerID": "web1", "Shell": "/bin/bash",
        "Script": "curl -f localhost", "Interval": "30ms"}))
    got = await recorder.wait_status("dock", "passing")
    assert got.output.startswith("ran /bin/bash -c curl -f localhost\n")


async def test_docker_check_on_unknown_or_paused_container_is_critical(docker_scheduler, recorder, fake_docker):
    docker_scheduler.add(docker_check(container="ghost"))
    got = await recorder.wait_status("dock", "critical")
    assert got.output == "create exec failed for unknown container ghost"
    fake_docker.paused.add("web1")
    docker_scheduler.add(docker_check(ID="p"))
    got = await recorder.wait_status("p", "critical")
    assert got.output == "create exec failed since container web1 is paused or stopped"


async def test_docker_output_is_capped_to_the_tail(docker_scheduler, recorder):
    docker_scheduler.add(docker_check(OutputMaxSize=10))
    got = await recorder.wait_status("dock", "passing")
    assert got.output == "Captured 10 of 41 bytes\n...\non stderr\n"


async def test_docker_check_times_out(docker_scheduler, recorder, fake_docker):
    fake_docker.start_delay = 5
    docker_scheduler.add(docker_check(Timeout="200ms"))
    got = await recorder.wait_status("dock", "critical", timeout=3)
    assert got.output == "Timed out (200ms) running check\n\nran /bin/check --quick\n"


async def test_unreachable_docker_engine_is_critical(recorder, tmp_path):
    sched = CheckScheduler(recorder, docker_host=f"unix://{tmp_path}/absent.sock", min_interval=0.01)
    try:
        sched.add(docker_check())
        got = await recorder.wait_status("dock", "critical")
        assert got.output.startswith(f"Docker API request to unix://{tmp_path}/absent.sock failed")
    finally:
        async with asyncio.timeout(5):
            await sched.stop()


async def test_raw_stream_from_a_tty_style_engine_is_kept_as_is(tmp_path):
    short_dir = tempfile.mkdtemp(prefix="bdk", dir="/tmp")
    path = os.path.join(short_dir, "raw.sock")

    async def create(request):
        return web.json_response({"Id": "e1"}, status=201)

    async def start(request):
        return web.Response(body=b"plain output\n", content_type="application/vnd.docker.raw-stream")

    async def inspect(request):
        return web.Response(text=json.dumps({"ExitCode": 1}), content_type="application/json")

    runner = await serve_exec_api(path, create, start, inspect)
    client = DockerExecClient(f"unix://{path}")
    try:
        buf = TailBuffer(4096)
        async with asyncio.timeout(5):
            code = await client.run("c", ["true"], buf)
        assert (code, buf.text()) == (1, "plain output\n")
    finally:
        await client.close()
        await runner.cleanup()
        shutil.rmtree(short_dir, ignore_errors=True)


def test_docker_host_must_be_unix_or_tcp():
    with pytest.raises(ValueError, match="unsupported docker host"):
        DockerExecClient("ssh://somewhere")
    assert DockerExecClient("tcp://127.0.0.1:2375")._base == "http://127.0.0.1:2375"
