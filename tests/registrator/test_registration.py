"""Registrator behaviour against a real engine (embedded and dockerd, same tests), a real agent
and the real docker CLI. Each test uses its own registrator hostname, so IDs never collide."""

from __future__ import annotations

import time
import uuid

from tests.registrator.conftest import agent_services, free_port, host_port, wait_for


def test_published_port_becomes_service_and_stop_removes_it(docker, agent, registrator):
    reg = registrator()
    name = docker.name("db")
    port = free_port()
    docker.run(name, "-p", f"{port}:80", "-e", "SERVICE_NAME=db", "-e", "SERVICE_TAGS=master,backups",
               "-e", "SERVICE_REGION=us2", "-l", "SERVICE_TAGS=primary,\\,odd")
    sid = f"{reg.hostname}:{name}:80"
    svc = wait_for(lambda: agent_services(agent, reg.hostname).get(sid), 5, sid)
    assert svc["Service"] == "db"
    assert svc["Port"] == port
    assert sorted(svc["Tags"]) == [",odd", "primary"]  # the label beats the env var
    assert svc["Meta"]["region"] == "us2"
    assert svc["Address"] == "127.0.0.1"
    docker.cli("stop", "-t", "1", name)
    wait_for(lambda: sid not in agent_services(agent, reg.hostname), 5, f"{sid} deregistered")


def test_several_ports_get_port_suffixes_and_udp_ids(docker, agent, registrator):
    reg = registrator("-tags", "blue,green")
    name = docker.name("multi")
    docker.run(name, "-p", "127.0.0.1::80", "-p", "127.0.0.1::443", "-p", "127.0.0.1::53/udp",
               "-e", "SERVICE_443_NAME=https", "-e", "SERVICE_443_PROTO=h2")
    want = {f"{reg.hostname}:{name}:80", f"{reg.hostname}:{name}:443", f"{reg.hostname}:{name}:53:udp"}
    services = wait_for(lambda: (s := agent_services(agent, reg.hostname)) and want <= set(s) and s, 5, "3 services")
    s80, s443, s53 = (services[f"{reg.hostname}:{name}:{k}"] for k in ("80", "443", "53:udp"))
    assert s80["Service"] == "busybox-80"
    assert s443["Service"] == "https"            # port-specific name: no suffix
    assert s443["Meta"]["proto"] == "h2" and "proto" not in s80["Meta"]
    assert s53["Service"] == "busybox-53" and "udp" in s53["Tags"]
    assert s80["Port"] == host_port(docker, name, "80/tcp")
    assert {"blue", "green"} <= set(s80["Tags"])


def test_ignore_explicit_and_unpublished(docker, agent, registrator):
    reg = registrator("-explicit")
    plain, named, ignored = docker.name("plain"), docker.name("named"), docker.name("ign")
    docker.run(plain, "-p", "127.0.0.1::80")
    docker.run(ignored, "-p", "127.0.0.1::80", "-e", "SERVICE_NAME=x", "-l", "SERVICE_IGNORE=yes")
    docker.run(named, "-p", "127.0.0.1::80", "-p", "127.0.0.1::81", "--expose", "82",
               "-e", "SERVICE_NAME=named", "-e", "SERVICE_81_IGNORE=1")
    wait_for(lambda: f"{reg.hostname}:{named}:80" in agent_services(agent, reg.hostname), 5, "named service")
    # A full sync has passed since the start, so the others had every chance to appear.
    assert set(agent_services(agent, reg.hostname)) == {f"{reg.hostname}:{named}:80"}


def test_checks_from_env_several_per_service(docker, agent, registrator):
    reg = registrator()
    name = docker.name("web")
    docker.run(name, "-p", "127.0.0.1::80", "-e", "SERVICE_CHECK_HTTP=/", "-e", "SERVICE_CHECK_TCP=true",
               "-e", "SERVICE_CHECK_INTERVAL=1s", "-e", "SERVICE_CHECK_TIMEOUT=2s", cmd=docker.http_cmd())
    sid = f"{reg.hostname}:{name}:80"
    port = host_port(docker, name)

    def checks():
        found = {c["CheckID"]: c for c in agent.json("GET", "/v1/agent/checks").values()  # type: ignore[union-attr]
                 if c["ServiceID"] == sid}
        return found if len(found) == 2 and all(c["Status"] == "passing" for c in found.values()) else None

    found = wait_for(checks, 15, "HTTP and TCP checks passing")
    assert set(found) == {f"service:{sid}:http", f"service:{sid}:tcp"}
    status, _, _ = agent.request("GET", f"/v1/agent/health/service/id/{sid}")
    assert status == 200
    assert port > 0


def test_docker_healthcheck_drives_a_ttl_check(docker, agent, registrator):
    reg = registrator()
    name = docker.name("hc")
    flag = f"/tmp/reg-health-{uuid.uuid4().hex[:8]}"
    docker.run(name, "-p", "127.0.0.1::80", "--health-cmd", f"test -f {flag}", "--health-interval", "1s",
               "--health-retries", "1", "--health-timeout", "2s",
               cmd=["sh", "-c", f"touch {flag}; exec sleep 300"])
    sid = f"{reg.hostname}:{name}:80"
    cid = f"service:{sid}:docker-health"

    def status():
        c = agent.json("GET", "/v1/agent/checks").get(cid)  # type: ignore[union-attr]
        return c and c["Status"]

    wait_for(lambda: status() == "passing", 15, "docker health passing")
    docker.cli("exec", name, "rm", "-f", flag)
    wait_for(lambda: status() == "critical", 15, "docker health critical")
    docker.cli("exec", name, "touch", flag)
    wait_for(lambda: status() == "passing", 15, "docker health passing again")


def test_container_without_published_port_uses_service_port(docker, agent, registrator):
    reg = registrator()
    name = docker.name("worker")
    docker.run(name, "-e", "SERVICE_PORT=9999", "-e", "SERVICE_NAME=worker")
    svc = wait_for(lambda: agent_services(agent, reg.hostname).get(f"{reg.hostname}:{name}:9999"), 5, "worker")
    assert svc["Port"] == 9999 and svc["Service"] == "worker"


def test_malformed_values_are_logged_and_do_not_stop_the_registrator(docker, agent, registrator):
    reg = registrator()
    bad, good = docker.name("bad"), docker.name("good")
    docker.run(bad, "-p", "127.0.0.1::80", "-e", "SERVICE_CHECK_INTERVAL=banana", "-e", "SERVICE_CHECK_TCP=1",
               "-e", "SERVICE_CHECK_FROB=1", "-e", "SERVICE_CHECK_INITIAL_STATUS=great",
               "-e", "SERVICE_bad.key=x", "-e", "SERVICE_CHECK_TTL=soon")
    docker.run(good + "-np", "-e", "SERVICE_PORT=notaport")
    sid = f"{reg.hostname}:{bad}:80"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, "bad container still registered")
    checks = {c["CheckID"]: c for c in agent.json("GET", "/v1/agent/checks").values()  # type: ignore[union-attr]
              if c["ServiceID"] == sid}
    assert list(checks) == [f"service:{sid}"] and checks[f"service:{sid}"]["Interval"] == "10s"
    needles = ("SERVICE_CHECK_INTERVAL='banana' is not a duration", "SERVICE_CHECK_FROB: unknown check",
               "SERVICE_CHECK_INITIAL_STATUS='great'", "SERVICE_BAD.KEY: not a valid Consul meta key",
               "SERVICE_PORT='notaport' is not a port number", "SERVICE_CHECK_TTL='soon'")
    # The second container's event may be handled after the first one's registration shows up.
    wait_for(lambda: all(n in reg.log() for n in needles), 10, "every malformed value logged")
    docker.run(good, "-p", "127.0.0.1::80")
    wait_for(lambda: f"{reg.hostname}:{good}:80" in agent_services(agent, reg.hostname), 5, "registrator alive")
    assert reg.proc.poll() is None


def test_deregister_maintenance_keeps_stopped_services_in_maintenance(docker, agent, registrator):
    reg = registrator("-deregister", "maintenance")
    name = docker.name("maint")
    docker.run(name, "-p", "127.0.0.1::80")
    sid = f"{reg.hostname}:{name}:80"
    maint = f"_service_maintenance:{sid}"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
    docker.cli("kill", name)
    wait_for(lambda: maint in agent.json("GET", "/v1/agent/checks"), 5, "maintenance on")  # type: ignore[operator]
    assert sid in agent_services(agent, reg.hostname)
    docker.cli("start", name)
    wait_for(lambda: maint not in agent.json("GET", "/v1/agent/checks"), 5, "maintenance off")  # type: ignore[operator]
    docker.cli("rm", "-f", name)
    wait_for(lambda: sid not in agent_services(agent, reg.hostname), 5, "removed container deregistered")


def test_deregister_on_success_keeps_failed_containers(docker, agent, registrator):
    reg = registrator("-deregister", "on-success")
    failed, clean = docker.name("fail"), docker.name("ok")
    docker.run(failed, "-p", "127.0.0.1::80", cmd=["sh", "-c", "sleep 1; exit 3"])
    docker.run(clean, "-p", "127.0.0.1::80", cmd=["sh", "-c", "sleep 1; exit 0"])
    sids = {f"{reg.hostname}:{n}:80" for n in (failed, clean)}
    wait_for(lambda: sids <= set(agent_services(agent, reg.hostname)), 5, "both registered")
    wait_for(lambda: docker.inspect(clean)["State"]["Status"] == "exited" and
             docker.inspect(failed)["State"]["Status"] == "exited", 10, "both exited")
    wait_for(lambda: f"{reg.hostname}:{clean}:80" not in agent_services(agent, reg.hostname), 5, "exit 0 removed")
    assert f"{reg.hostname}:{failed}:80" in agent_services(agent, reg.hostname)


def test_cleanup_removes_stale_services_after_registrator_was_down(docker, agent, registrator):
    reg = registrator("-resync", "1")
    name = docker.name("stale")
    docker.run(name, "-p", "127.0.0.1::80")
    sid = f"{reg.hostname}:{name}:80"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
    foreign = f"otherhost:{name}:80"
    custom = f"custom-{uuid.uuid4().hex[:6]}"
    for other in (foreign, custom):
        assert agent.request("PUT", "/v1/agent/service/register", {"ID": other, "Name": "x", "Port": 1})[0] == 200
    reg.stop()
    docker.cli("rm", "-f", name)
    assert sid in agent_services(agent, reg.hostname)  # nobody was watching
    reg2 = registrator("-resync", "1", hostname=reg.hostname)
    wait_for(lambda: sid not in agent_services(agent, reg2.hostname), 3, "stale service gone within one resync")
    services = agent.json("GET", "/v1/agent/services")
    assert foreign in services and custom in services  # type: ignore[operator]
    for other in (foreign, custom):
        agent.request("PUT", f"/v1/agent/service/deregister/{other}")


def test_resync_repairs_a_registration_lost_by_the_agent(docker, agent, registrator):
    reg = registrator("-resync", "1")
    name = docker.name("lost")
    docker.run(name, "-p", "127.0.0.1::80")
    sid = f"{reg.hostname}:{name}:80"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
    agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
    assert sid not in agent_services(agent, reg.hostname)
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 4, "re-registered by the resync")


def test_an_idle_resync_writes_nothing(docker, agent, registrator):
    # Registrator re-registers everything at every resync and floods watchers; Beacon compares first.
    reg = registrator("-resync", "0.5")
    name = docker.name("idle")
    docker.run(name, "-p", "127.0.0.1::80", "-e", "SERVICE_CHECK_TCP=1", "-e", "SERVICE_CHECK_HTTP=/",
               "-e", "SERVICE_TAGS=b,a", "-e", "SERVICE_ZONE=z1")
    sid = f"{reg.hostname}:{name}:80"
    wait_for(lambda: sid in agent_services(agent, reg.hostname), 5, sid)
    time.sleep(2.5)  # several full syncs
    assert reg.log().count(f"registered {sid}") == 1, reg.log()
    assert sid in agent_services(agent, reg.hostname)
