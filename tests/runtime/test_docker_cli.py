"""The real docker CLI against the engine, in both isolation modes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from .helpers import (
    DOCKER,
    HAVE_DOCKER,
    EngineProc,
    http_get,
    process_mode_port,
    start_engine,
    stop_engine,
    until,
)

pytestmark = pytest.mark.skipif(not HAVE_DOCKER, reason=f"docker CLI not found at {DOCKER}")


def http_server(engine: EngineProc) -> tuple[str, list[str]]:
    """(container port, argv) of a web server: port 80 on all addresses of its own netns, or, sharing
    the host network in process mode, an uncommon port on loopback."""
    if engine.isolation == "process":
        port = process_mode_port()
        return port, [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1"]
    return "80", [sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0"]


def test_run_publish_inspect_logs_exec_stop_rm(engine: EngineProc, tmp_path) -> None:
    port, server = http_server(engine)
    cid = engine.docker("run", "-d", "-p", f"127.0.0.1::{port}", "-e", "X=1", "-l", "team=web", "--name", "web",
                        "-w", str(tmp_path), "busybox", *server).stdout.strip()
    assert len(cid) == 64 and int(cid, 16) >= 0
    (tmp_path / "hello.txt").write_text("hi from the host filesystem")

    host_port = engine.host_port("web", f"{port}/tcp")
    status, body = http_get(host_port, "/hello.txt")
    assert (status, body) == (200, b"hi from the host filesystem")

    info = engine.inspect("web")
    assert info["Id"] == cid and info["Name"] == "/web"
    assert info["State"]["Status"] == "running" and info["State"]["Running"] and info["State"]["Pid"] > 0
    assert "X=1" in info["Config"]["Env"]
    assert info["Config"]["Labels"] == {"team": "web"}
    assert info["Config"]["Image"] == "busybox"
    assert info["NetworkSettings"]["Ports"][f"{port}/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]

    ps = engine.docker("ps", "--format", "{{.Names}} {{.Status}} {{.Ports}}").stdout
    assert "web Up" in ps and f"127.0.0.1:{host_port}->{port}/tcp" in ps

    logs = engine.docker("logs", "web")
    assert "GET /hello.txt HTTP/1.1" in logs.stderr

    exec_ = engine.docker("exec", "-e", "Y=2", "web", "sh", "-c", 'echo "$X$Y $(pwd)"; exit 3', check=False)
    assert exec_.returncode == 3
    assert exec_.stdout.strip() == f"12 {tmp_path}"

    engine.docker("stop", "-t", "5", "web")
    state = engine.inspect("web")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 143 and not state["Running"]
    assert "Exited (143)" in engine.docker("ps", "-a", "--format", "{{.Status}}").stdout
    assert engine.docker("ps", "-q").stdout.strip() == ""

    engine.docker("rm", "web")
    gone = engine.docker("inspect", "web", check=False)
    assert gone.returncode != 0 and "No such" in gone.stderr


def test_events_come_in_dockerd_order(engine: EngineProc) -> None:
    since = str(time.time() - 1)
    engine.docker("run", "-d", "--name", "ev", "img:1", "sleep", "30")
    engine.docker("stop", "-t", "5", "ev")
    engine.docker("rm", "ev")
    until_ = str(time.time() + 0.5)
    out = engine.docker("events", "--since", since, "--until", until_, "--filter", "container=ev",
                        "--format", "{{json .}}").stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["Action"] for e in events] == ["create", "start", "kill", "die", "stop", "destroy"]
    for e in events:
        assert e["Type"] == "container" and e["status"] == e["Action"] and e["from"] == "img:1"
        assert e["Actor"]["Attributes"]["name"] == "ev" and e["Actor"]["Attributes"]["image"] == "img:1"
        assert e["timeNano"] // 1_000_000_000 == e["time"] and len(e["id"]) == 64
    assert events[2]["Actor"]["Attributes"]["signal"] == "15"
    assert events[3]["Actor"]["Attributes"]["exitCode"] == "143"


def test_run_attached_prints_output_and_exits_with_status(engine: EngineProc) -> None:
    res = engine.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert res.returncode == 4
    assert res.stdout == "out\n" and res.stderr == "err\n"
    assert engine.docker("ps", "-aq").stdout.strip() == ""  # --rm removed it


def test_port_conflict_then_explicit_host_port(engine: EngineProc) -> None:
    port, server = http_server(engine)
    engine.docker("run", "-d", "-p", f"127.0.0.1::{port}", "--name", "a", "img", *server)
    taken = engine.host_port("a", f"{port}/tcp")
    engine.docker("create", "-p", f"127.0.0.1:{taken}:{port}", "--name", "b", "img", *server)
    clash = engine.docker("start", "b", check=False)
    assert clash.returncode != 0 and "port is already allocated" in clash.stderr
    engine.docker("rm", "-f", "a")
    engine.docker("start", "b")  # the explicit host port is free now
    assert engine.host_port("b", f"{port}/tcp") == taken
    assert http_get(taken)[0] == 200


def test_two_containers_bind_port_80_in_netns_mode(netns_engine: EngineProc) -> None:
    e = netns_engine
    for name in ("one", "two"):
        e.docker("run", "-d", "-p", "127.0.0.1::80", "--name", name, "img",
                 "python3", "-c", _HOSTNAME_SERVER)
    ports = {name: e.host_port(name) for name in ("one", "two")}
    assert ports["one"] != ports["two"]
    bodies = {name: http_get(port)[1].decode() for name, port in ports.items()}
    assert bodies == {"one": e.inspect("one")["Config"]["Hostname"], "two": e.inspect("two")["Config"]["Hostname"]}
    assert "Isolation: netns" in e.docker("info").stdout


# Answers every request with the container's hostname (its UTS namespace's).
_HOSTNAME_SERVER = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 80), H).serve_forever()
"""


def test_process_mode_is_reported_with_a_warning(tmp_path) -> None:
    e = start_engine(tmp_path, "process")
    try:
        info = e.docker("info", "--format", "{{json .}}").stdout
        data = json.loads(info)
        assert data["Isolation"] == "process"
        assert ["Isolation", "process"] in data["DriverStatus"]
    finally:
        stop_engine(e.proc)


def test_health_cmd_reports_healthy_then_unhealthy(engine: EngineProc, tmp_path) -> None:
    flag = tmp_path / "ok"
    flag.write_text("")
    engine.docker("run", "-d", "--name", "h", "--health-cmd", f"test -f {flag}", "--health-interval", "100ms",
                  "--health-retries", "2", "img", "sleep", "30")
    until(lambda: engine.inspect("h")["State"]["Health"]["Status"] == "healthy", what="healthy")
    flag.unlink()
    until(lambda: engine.inspect("h")["State"]["Health"]["Status"] == "unhealthy", what="unhealthy")
    out = engine.docker("events", "--since", "0", "--until", str(time.time() + 0.2), "--filter", "container=h",
                        "--filter", "event=health_status", "--format", "{{.Action}}").stdout.split("\n")
    assert [a for a in out if a] == ["health_status: healthy", "health_status: unhealthy"]
    assert "(unhealthy)" in engine.docker("ps", "--format", "{{.Status}}").stdout


def test_restart_on_failure_counts_retries(engine: EngineProc) -> None:
    engine.docker("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "img", "sh", "-c", "exit 3")

    def settled() -> dict | None:
        s = engine.inspect("flaky")
        assert s["RestartCount"] <= 2, s["RestartCount"]
        return s if s["RestartCount"] == 2 and s["State"]["Status"] == "exited" else None

    state = until(settled, timeout=30, what="two restarts then exited")
    assert state["State"]["ExitCode"] == 3
    assert state["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    dies = engine.docker("events", "--since", "0", "--until", str(time.time()), "--filter", "container=flaky",
                         "--filter", "event=die", "--format", "{{.Action}}").stdout.split()
    assert dies == ["die"] * 3


def test_stop_kills_with_sigkill_after_timeout(engine: EngineProc) -> None:
    engine.docker("run", "-d", "--name", "stubborn", "img", "sh", "-c",
                  "trap '' TERM; echo trapped; while :; do sleep 0.05; done")
    until(lambda: "trapped" in engine.docker("logs", "stubborn").stdout, what="TERM ignored")
    started = time.monotonic()
    engine.docker("stop", "-t", "1", "stubborn")
    assert 0.9 < time.monotonic() - started < 8
    assert engine.inspect("stubborn")["State"]["ExitCode"] == 137


def test_stop_signal_and_timeout_from_create(engine: EngineProc) -> None:
    engine.docker("run", "-d", "--name", "graceful", "--stop-signal", "SIGUSR1", "--stop-timeout", "3", "img", "sh",
                  "-c", "trap 'exit 7' USR1; echo armed; while :; do sleep 0.05; done")
    until(lambda: "armed" in engine.docker("logs", "graceful").stdout, what="trap installed")
    config = engine.inspect("graceful")["Config"]
    assert (config["StopSignal"], config["StopTimeout"]) == ("SIGUSR1", 3)
    engine.docker("stop", "graceful")
    assert engine.inspect("graceful")["State"]["ExitCode"] == 7
    bad = engine.docker("run", "-d", "--stop-signal", "SIGNOPE", "img", "true", check=False)
    assert bad.returncode != 0 and "Invalid signal" in bad.stderr


def test_state_survives_engine_restart(tmp_path) -> None:
    e = start_engine(tmp_path, "process")
    try:
        e.docker("run", "-d", "--name", "keep", "-l", "a=b", "img", "sleep", "60")
        e.docker("run", "--name", "done", "img", "sh", "-c", "echo bye; exit 2", check=False)
    finally:
        stop_engine(e.proc)
    e = start_engine(tmp_path, "process")
    try:
        rows = e.docker("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
        assert sorted(r for r in rows if r) == ["done exited", "keep exited"]
        assert e.inspect("keep")["Config"]["Labels"] == {"a": "b"}
        assert e.inspect("done")["State"]["ExitCode"] == 2
        assert e.docker("logs", "done").stdout == "bye\n"
        e.docker("start", "keep")
        assert e.inspect("keep")["State"]["Running"]
    finally:
        stop_engine(e.proc)


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, state) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            out.append((int(entry), int(fields[1]), int(fields[2]), fields[0].decode()))
    return out


def test_children_are_reaped_no_zombies(engine: EngineProc, tmp_path) -> None:
    marker = tmp_path / "started"
    engine.docker("run", "-d", "--name", "forker", "img", "sh", "-c",
                  f"sleep 100 & sh -c 'sleep 100 &'; touch {marker}; exec sleep 100")
    until(marker.exists, what="children started")
    group = engine.inspect("forker")["State"]["Pid"]  # the supervisor leads the container's process group
    assert len([p for p in _processes() if p[2] == group]) >= 3
    engine.docker("stop", "-t", "2", "forker")
    left = [p for p in _processes() if p[2] == group or (p[1] == engine.proc.pid and p[3] == "Z")]
    assert left == []


@pytest.mark.skipif(shutil.which("ip") is None, reason="the private bridge is built with iproute2's ip")
def test_containers_reach_each_other_on_the_private_bridge(netns_engine: EngineProc) -> None:
    e = netns_engine
    e.docker("run", "-d", "--name", "srv", "img", "python3", "-c", _HOSTNAME_SERVER)
    e.docker("run", "-d", "--name", "cli", "img", "sleep", "30")
    ips = {n: e.inspect(n)["NetworkSettings"]["IPAddress"] for n in ("srv", "cli")}
    assert len(set(ips.values())) == 2 and all(ip.startswith("10.213.") for ip in ips.values())
    net = e.inspect("srv")["NetworkSettings"]["Networks"]["bridge"]
    assert net["IPAddress"] == ips["srv"] and net["IPPrefixLen"] == 16
    # Only talk to the address once the route is shown to stay on the container's own veth.
    route = e.docker("exec", "cli", "ip", "route", "get", ips["srv"]).stdout
    assert route.startswith(f"{ips['srv']} dev eth0 ")
    fetch = ("import sys, time, urllib.request\n"
             "for _ in range(200):\n"
             "    try:\n"
             f"        print(urllib.request.urlopen('http://{ips['srv']}/', timeout=2).read().decode()); sys.exit()\n"
             "    except OSError: time.sleep(0.05)\n"
             "sys.exit(1)\n")
    assert e.docker("exec", "cli", "python3", "-c", fetch).stdout.strip() == e.inspect("srv")["Config"]["Hostname"]
    assert subprocess.run(["ip", "link", "show", "beacon0"], capture_output=True).returncode != 0  # not on the host
    e.docker("stop", "-t", "2", "srv")
    assert e.inspect("srv")["NetworkSettings"]["IPAddress"] == ""


def test_publish_all_follow_logs_and_restart(engine: EngineProc) -> None:
    port, server = http_server(engine)
    engine.docker("run", "-d", "-P", "--expose", port, "--name", "pa", "img", *server)
    binding = engine.inspect("pa")["NetworkSettings"]["Ports"][f"{port}/tcp"][0]
    assert binding["HostIp"] == "0.0.0.0" and int(binding["HostPort"]) > 0
    assert http_get(int(binding["HostPort"]))[0] == 200  # sent to loopback only

    engine.docker("run", "-d", "--name", "talker", "img", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done")
    follow = engine.docker("logs", "-f", "talker", timeout=20)  # returns once the container stops
    assert follow.stdout == "line1\nline2\nline3\n"

    since = f"{time.time():.9f}"
    engine.docker("restart", "-t", "5", "pa")
    assert engine.inspect("pa")["State"]["Running"]
    out = engine.docker("events", "--since", since, "--until", str(time.time() + 0.3), "--filter", "container=pa",
                        "--format", "{{.Action}}").stdout.split()
    assert out == ["kill", "die", "stop", "start", "restart"]


def test_container_prune_removes_only_stopped_ones(engine: EngineProc) -> None:
    engine.docker("run", "-d", "--name", "alive", "img", "sleep", "30")
    engine.docker("run", "--name", "done1", "img", "true")
    engine.docker("create", "--name", "never", "-l", "keep=yes", "img", "true")
    out = engine.docker("container", "prune", "-f", "--filter", "label=keep=yes")
    assert "Deleted Containers" in out.stdout
    names = sorted(engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert names == ["alive", "done1"]
    engine.docker("container", "prune", "-f")
    assert engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["alive"]
