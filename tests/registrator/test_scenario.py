"""The issue's scenario: an agent runs; `docker run -d -e SERVICE_NAME=files -p PORT:80 ...` through the real
docker CLI; within a second the catalog and DNS SRV show it; `docker stop` removes it from both.

On the embedded engine the registrator is the agent's own (-dev with -engine-socket); on dockerd it is
`beacon registrator` pointed at the same kind of agent: one code path, two engines."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import dig, launch
from tests.registrator.conftest import (
    IS_ROOT,
    Docker,
    dockerd_host,
    free_port,
    start_registrator,
    wait_for,
)


def _port_8000_or_free() -> int:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", 8000))
            return 8000
        except OSError:
            return free_port()


@pytest.fixture(params=["embedded", "dockerd"])
def setup(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "embedded":
        if not IS_ROOT:
            pytest.skip("needs root for netns isolation")
        sock = str(tmp_path / "engine.sock")
        agent = launch("-engine-socket", sock, "-data-dir", str(tmp_path / "data"))
        d = Docker("embedded", f"unix://{sock}")
        reg = None
        hostname = agent.json("GET", "/v1/agent/self")["Config"]["NodeName"]  # type: ignore[index]
    else:
        host, reason = dockerd_host()
        if host is None:
            pytest.skip(reason)
        agent = launch()
        d = Docker("dockerd", host)
        reg = start_registrator(host, f"consul://{agent.http_addr}")
        hostname = reg.hostname
    yield agent, d, hostname
    d.cleanup()
    if reg is not None:
        reg.stop()
    agent.stop()


def test_docker_run_shows_in_catalog_and_dns_within_a_second(setup):
    agent, d, hostname = setup
    port = _port_8000_or_free()
    name = d.name("files")
    d.run(name, "-e", "SERVICE_NAME=files", "-p", f"{port}:80", cmd=d.http_cmd())
    ran = time.monotonic()
    sid = f"{hostname}:{name}:80"

    def in_catalog():
        rows = agent.json("GET", "/v1/catalog/service/files")
        return [r for r in rows if r["ServiceID"] == sid]  # type: ignore[union-attr]

    rows = wait_for(in_catalog, 1.0, "files in the catalog within a second")
    assert rows[0]["ServicePort"] == port
    srv = wait_for(lambda: f" {port} " in dig(agent.dns_port, "files.service.consul", "SRV", "+short") and
                   dig(agent.dns_port, "files.service.consul", "SRV", "+short"), 1.0 - (time.monotonic() - ran) + 0.5,
                   "SRV answer")
    assert srv.split()[2] == str(port)
    d.cli("stop", "-t", "1", name)
    wait_for(lambda: not in_catalog(), 5, "files gone from the catalog")
    wait_for(lambda: dig(agent.dns_port, "files.service.consul", "SRV", "+short").strip() == "", 5, "files gone from DNS")


def test_agent_dev_registrator_is_off_with_no_registrator(tmp_path: Path):
    if not IS_ROOT:
        pytest.skip("needs root for netns isolation")
    sock = str(tmp_path / "engine.sock")
    agent = launch("-engine-socket", sock, "-no-registrator", "-data-dir", str(tmp_path / "data"))
    try:
        d = Docker("embedded", f"unix://{sock}")
        name = d.name("quiet")
        try:
            d.run(name, "-e", "SERVICE_NAME=quiet", "-p", "127.0.0.1::80")
            time.sleep(0.5)
            assert agent.json("GET", "/v1/catalog/service/quiet") == []
            assert not any("Registrator:" in line for line in agent.lines)
        finally:
            d.cleanup()
    finally:
        agent.stop()



def test_agent_config_block_sets_the_registrators_options(tmp_path: Path):
    if not IS_ROOT:
        pytest.skip("needs root for netns isolation")
    conf = tmp_path / "reg.json"
    conf.write_text('{"registrator": {"deregister": "maintenance", "tags": "from-config", "hostname": "cfghost"}}')
    sock = str(tmp_path / "engine.sock")
    agent = launch("-engine-socket", sock, "-config-file", str(conf), "-data-dir", str(tmp_path / "data"))
    d = Docker("embedded", f"unix://{sock}")
    try:
        name = d.name("cfg")
        d.run(name, "-p", "127.0.0.1::80")
        sid = f"cfghost:{name}:80"
        svc = wait_for(lambda: agent.json("GET", "/v1/agent/services").get(sid), 5, sid)  # type: ignore[union-attr]
        assert "from-config" in svc["Tags"]
        d.cli("kill", name)
        wait_for(lambda: f"_service_maintenance:{sid}" in agent.json("GET", "/v1/agent/checks"), 5,  # type: ignore[operator]
                 "maintenance mode from the config file")
    finally:
        d.cleanup()
        agent.stop()


def test_agent_refuses_a_bad_registrator_mode(tmp_path: Path):
    conf = tmp_path / "bad.json"
    conf.write_text('{"registrator": {"deregister": "sometimes"}}')
    with pytest.raises(RuntimeError, match="registrator.deregister' must be one of always"):
        launch("-config-file", str(conf), timeout=10)
