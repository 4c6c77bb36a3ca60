"""Lifecycle: the registry going away and coming back, the command line, and its failures."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.conftest import beacon_cmd, beacon_env, launch
from tests.registrator.conftest import agent_services, free_port, start_registrator, wait_for


def test_no_zombies_after_the_agent_was_down_while_a_container_died(docker, tmp_path: Path):
    port = free_port()
    flags = ("-http-port", str(port), "-data-dir", str(tmp_path / "data"))
    agent = launch(*flags)
    reg = start_registrator(docker.host, f"consul://127.0.0.1:{port}", "-retry-interval", "200", "-resync", "60")
    try:
        doomed, newcomer = docker.name("doomed"), docker.name("new")
        docker.run(doomed, "-p", "127.0.0.1::80")
        sid = f"{reg.hostname}:{doomed}:80"
        wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
        agent.stop()
        docker.cli("rm", "-f", doomed)
        docker.run(newcomer, "-p", "127.0.0.1::80")
        wait_for(lambda: "failed (will retry)" in reg.log(), 5, "registrator noticing the agent is down")
        agent = launch(*flags)  # restores its persisted services, the dead container's included
        new_sid = f"{reg.hostname}:{newcomer}:80"
        wait_for(lambda: (s := agent_services(agent, reg.hostname)) and new_sid in s and sid not in s, 5,
                 "zombie gone and newcomer registered after the agent came back")
        assert reg.proc.poll() is None
    finally:
        reg.stop()
        agent.stop()


def test_flags_after_the_registry_uri_still_apply(docker, agent):
    # Registrator silently ignored options placed after the URI (its #143); Beacon reads them anywhere.
    r = subprocess.Popen(beacon_cmd("registrator", f"consul://{agent.http_addr}", "-docker-host", docker.host,
                                    "-hostname", "afterflags", "-ip", "10.1.2.3"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=beacon_env())
    try:
        name = docker.name("ip")
        docker.run(name, "-p", "127.0.0.1::80")
        svc = wait_for(lambda: agent_services(agent, "afterflags").get(f"afterflags:{name}:80"), 8, "service")
        assert svc["Address"] == "10.1.2.3"
    finally:
        r.send_signal(signal.SIGTERM)
        r.communicate(timeout=10)
        agent.request("PUT", f"/v1/agent/service/deregister/afterflags:{name}:80")


def _run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(beacon_cmd("registrator", *args), capture_output=True, text=True, timeout=timeout,
                          env=beacon_env())


def test_bad_deregister_mode_is_refused():
    res = _run("-deregister", "sometimes", "consul://127.0.0.1:1")
    assert res.returncode == 1 and "sometimes" in res.stderr and "on-success" in res.stderr


def test_unsupported_registry_is_refused():
    res = _run("-docker-host", "unix:///nonexistent.sock", "etcd://127.0.0.1:2379/skydns")
    assert res.returncode == 1 and "unsupported registry 'etcd'" in res.stderr


def test_unreachable_registry_exits_after_the_retries():
    port = free_port()  # nothing listens there
    res = _run("-retry-attempts", "2", "-retry-interval", "50", f"consul://127.0.0.1:{port}")
    assert res.returncode == 1
    assert "registry unreachable" in res.stderr
    assert res.stdout.count("retrying in") == 2 or (res.stdout + res.stderr).count("retrying in") == 2


def test_unreachable_docker_exits_with_a_clear_error(agent):
    res = _run("-docker-host", "unix:///nonexistent/docker.sock", f"consul://{agent.http_addr}")
    assert res.returncode == 1 and "docker unreachable" in res.stderr and "/nonexistent/docker.sock" in res.stderr


def test_restarted_registrator_puts_a_container_stopped_meanwhile_in_maintenance(docker, agent, registrator):
    reg = registrator("-deregister", "maintenance", "-resync", "1")
    name = docker.name("adopt")
    docker.run(name, "-p", "127.0.0.1::80")
    sid = f"{reg.hostname}:{name}:80"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
    reg.stop()
    docker.cli("kill", name)  # stopped, not removed, while nobody watched
    reg2 = registrator("-deregister", "maintenance", "-resync", "1", hostname=reg.hostname)
    wait_for(lambda: f"_service_maintenance:{sid}" in agent.json("GET", "/v1/agent/checks"), 5,  # type: ignore[operator]
             "maintenance on for the stopped container's service")
    assert sid in agent_services(agent, reg2.hostname)
    docker.cli("rm", "-f", name)
    wait_for(lambda: sid not in agent_services(agent, reg2.hostname), 4, "removed at the next resync")


def test_public_names_are_complete_and_sorted():
    import beacon.registrator as pkg

    assert pkg.__all__ == sorted(pkg.__all__)
    assert all(hasattr(pkg, name) for name in pkg.__all__)


def test_cleanup_flag_spellings(docker, agent):
    # Go-style `-cleanup=false` turns cleanup off; a bare `-cleanup` before the URI keeps the URI.
    stale = f"keepme:{docker.name('x')}:80"
    assert agent.request("PUT", "/v1/agent/service/register", {"ID": stale, "Name": "k", "Port": 1})[0] == 200
    try:
        for flags, survives in ((["-cleanup=false"], True), (["-cleanup"], False)):
            reg = start_registrator(docker.host, f"consul://{agent.http_addr}", *flags, "-resync", "0",
                                    hostname="keepme")
            reg.stop()
            assert (stale in agent.json("GET", "/v1/agent/services")) is survives, flags  # type: ignore[operator]
    finally:
        agent.request("PUT", f"/v1/agent/service/deregister/{stale}")
