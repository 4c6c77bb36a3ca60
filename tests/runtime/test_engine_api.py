"""The in-process interface the agent uses: Engine(...).start()/stop() in the caller's loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from beacon.runtime import Conflict, Engine, NotFound

from .helpers import NETNS, NETNS_REASON, REPO, start_engine, stop_engine


async def http_json(sock: str, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    reader, writer = await asyncio.open_unix_connection(sock)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
                 f"Content-Type: application/json\r\n\r\n".encode() + data)
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(payload) if payload.strip() else None


@pytest.mark.parametrize("isolation", [
    pytest.param("netns", marks=pytest.mark.skipif(not NETNS, reason=NETNS_REASON)), "process"])
async def test_engine_starts_in_the_callers_loop_and_keeps_state(tmp_path, isolation: str) -> None:
    engine = Engine(data_dir=tmp_path / "d", socket_path=str(tmp_path / "s.sock"), isolation=isolation)
    async with asyncio.timeout(30):
        await engine.start()
        try:
            assert engine.isolation == isolation
            assert engine.socket_path == str(tmp_path / "s.sock")
            status, created = await http_json(engine.socket_path, "POST", "/v1.47/containers/create?name=bg",
                                              {"Image": "x", "Cmd": ["sleep", "30"], "Labels": {"k": "v"}})
            assert status == 201
            cid = created["Id"]
            assert (await http_json(engine.socket_path, "POST", f"/containers/{cid}/start"))[0] == 204
            assert engine.get("bg").state.status == "running"
            with pytest.raises(Conflict):
                await engine.remove("bg")
            with pytest.raises(NotFound):
                engine.get("missing")
        finally:
            await engine.stop()
        assert not os.path.exists(tmp_path / "s.sock")
        again = Engine(data_dir=tmp_path / "d", isolation="process")
        await again.start()
        try:
            c = again.get("bg")
            assert c.id == cid and c.state.status == "exited" and c.labels == {"k": "v"}
            assert c.state.exit_code == 143
            assert again.socket_path == str(tmp_path / "d" / "engine.sock")
            status, rows = await http_json(again.socket_path, "GET", "/containers/json?all=1")
            assert [r["Names"] for r in rows] == [["/bg"]] and rows[0]["State"] == "exited"
        finally:
            await again.stop()


async def test_always_restarts_after_a_crash_but_not_after_a_stop(tmp_path) -> None:
    engine = Engine(data_dir=tmp_path, isolation="process")
    async with asyncio.timeout(30):
        await engine.start()
        try:
            cid, _ = await engine.create({"Image": "x", "Cmd": ["sleep", "30"],
                                          "HostConfig": {"RestartPolicy": {"Name": "always"}}}, "svc")
            await engine.start_container(cid)
            first_pid = engine.get(cid).state.pid
            os.killpg(first_pid, signal.SIGKILL)  # a crash, not a stop
            while (st := engine.get(cid).state).restart_count < 1 or st.status != "running":
                await asyncio.sleep(0.02)
            assert st.pid != first_pid
            await engine.stop_container(cid, timeout=2)
            await asyncio.sleep(0.3)  # long enough for a (wrong) policy restart to happen
            assert engine.get(cid).state.status == "exited"
        finally:
            await engine.stop()


def test_beacon_cli_commands(tmp_path) -> None:
    e = start_engine(tmp_path, "process")
    try:
        run = e.beacon("run", "-d", "--name", "cli", "-l", "a=b", "-e", "GREETING=hi", "img", "sh", "-c",
                       'echo "$GREETING"; sleep 30')
        assert run.returncode == 0 and len(run.stdout.strip()) == 64
        ps = e.beacon("ps")
        assert "cli" in ps.stdout and "Up" in ps.stdout
        assert e.beacon("ps", "-q", "--filter", "label=a=b").stdout.strip() == run.stdout.strip()[:12]
        assert e.beacon("exec", "cli", "sh", "-c", "echo $GREETING-exec; exit 5").stdout == "hi-exec\n"
        assert e.beacon("exec", "cli", "sh", "-c", "exit 5").returncode == 5
        logs = e.beacon("logs", "cli")
        assert logs.stdout == "hi\n"
        assert e.beacon("stop", "-t", "2", "cli").returncode == 0
        assert "Exited" in e.beacon("ps", "-a").stdout
        assert e.beacon("rm", "cli").returncode == 0
        attached = e.beacon("run", "--rm", "img", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (attached.returncode, attached.stdout, attached.stderr) == (3, "out\n", "err\n")
        bad = e.beacon("run", "-p", "nope", "img", "true")
        assert bad.returncode == 125 and "invalid port specification" in bad.stderr
        missing = e.beacon("rm", "ghost")
        assert missing.returncode == 1 and "No such container: ghost" in missing.stderr
        assert e.beacon("ps", "-a", "-q").stdout == ""
    finally:
        stop_engine(e.proc)
    absent = e.beacon("ps", "-engine-socket", str(tmp_path / "none.sock"))
    assert absent.returncode == 1 and "Cannot connect" in absent.stderr
    assert sys.executable and REPO.exists()


async def test_second_engine_on_same_data_dir_or_socket_is_refused(tmp_path) -> None:
    from beacon.runtime import EngineError

    first = Engine(data_dir=tmp_path / "a", isolation="process")
    async with asyncio.timeout(30):
        await first.start()
        try:
            with pytest.raises(EngineError, match="another engine is using"):
                await Engine(data_dir=tmp_path / "a", isolation="process").start()
            other = Engine(data_dir=tmp_path / "b", socket_path=first.socket_path, isolation="process")
            with pytest.raises(EngineError, match="already serving"):
                await other.start()
            await other.stop()
            assert (await http_json(first.socket_path, "GET", "/info"))[1]["Isolation"] == "process"
        finally:
            await first.stop()
        assert not os.path.exists(first.socket_path)  # removed on stop


async def test_finished_execs_are_forgotten_after_a_while(tmp_path, monkeypatch) -> None:
    from beacon.runtime import _exec

    monkeypatch.setattr(_exec, "EXEC_KEEP", 0.2)
    engine = Engine(data_dir=tmp_path, isolation="process")
    async with asyncio.timeout(30):
        await engine.start()
        try:
            cid, _ = await engine.create({"Image": "x", "Cmd": ["sleep", "30"]}, "ex")
            await engine.start_container(cid)
            exec_id = engine.exec.create(cid, {"Cmd": ["sh", "-c", "echo hi; exit 4"]})
            output = [chunk async for chunk in engine.exec.start(exec_id)]
            assert output == [(1, b"hi\n")]
            assert engine.exec.inspect(exec_id)["ExitCode"] == 4  # readable right after the stream ends
            while exec_id in engine.exec.instances:
                await asyncio.sleep(0.05)
            with pytest.raises(NotFound):
                engine.exec.inspect(exec_id)
        finally:
            await engine.stop()


async def test_always_containers_come_back_after_an_engine_restart(tmp_path) -> None:
    async with asyncio.timeout(30):
        engine = Engine(data_dir=tmp_path, isolation="process")
        await engine.start()
        try:
            for name, policy in (("keeper", "always"), ("plain", "no"), ("stopped", "always")):
                cid, _ = await engine.create({"Image": "x", "Cmd": ["sleep", "30"],
                                              "HostConfig": {"RestartPolicy": {"Name": policy}}}, name)
                await engine.start_container(cid)
            await engine.stop_container("stopped", timeout=2)  # stopped by hand: stays down
        finally:
            await engine.stop()
        again = Engine(data_dir=tmp_path, isolation="process")
        await again.start()
        try:
            while again.get("keeper").state.status != "running":
                await asyncio.sleep(0.02)
            assert again.get("plain").state.status == "exited"
            assert again.get("stopped").state.status == "exited"
        finally:
            await again.stop()
