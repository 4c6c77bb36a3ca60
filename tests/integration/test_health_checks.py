"""Health checks in a real agent against real targets: an HTTP server, a TCP listener, a UDP socket,
a script that flips its exit code; DNS and ?passing follow the checks."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import dig, wait_until


def write_config(tmp_path, **extra) -> str:
    conf = {"check_reap_interval": "200ms", "deregister_critical_service_after_min": "1s",
            "check_update_interval": "0s", **extra}
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(conf))
    return str(path)


class Target:
    """An HTTP server whose answer the test sets, and which it can stop and start."""

    def __init__(self) -> None:
        self.code = 200
        self.body = b"ok"
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(target.code)
                self.send_header("Content-Length", str(len(target.body)))
                self.end_headers()
                self.wfile.write(target.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def status_of(agent, check_id: str) -> tuple[str, str]:
    checks = agent.json("GET", "/v1/agent/checks")
    c = checks[check_id]
    return c["Status"], c["Output"]


def wait_status(agent, check_id: str, want: str, timeout: float = 10) -> str:
    def ok():
        st, out = status_of(agent, check_id)
        return out if st == want else None
    return wait_until(ok, timeout=timeout)


def test_http_check_passing_warning_critical_and_dns(start_agent, tmp_path) -> None:
    target = Target()
    agent = start_agent("-config-file", write_config(tmp_path), "-node", "hc")
    try:
        agent.json("PUT", "/v1/agent/service/register", {
            "Name": "web", "Port": target.port,
            "Check": {"HTTP": f"http://127.0.0.1:{target.port}/health", "Interval": "1s", "Timeout": "1s"}})
        out = wait_status(agent, "service:web", "passing")
        assert out.startswith(f"HTTP GET http://127.0.0.1:{target.port}/health: 200 OK Output: ok")
        assert dig(agent.dns_port, "web.service.consul", "+short").strip() == "127.0.0.1"
        target.code, target.body = 429, b"slow down"
        wait_status(agent, "service:web", "warning")
        assert dig(agent.dns_port, "web.service.consul", "+short").strip() == "127.0.0.1"  # warning stays
        assert agent.json("GET", "/v1/health/service/web?passing") == []
        target.code, target.body = 500, b"boom"
        out = wait_status(agent, "service:web", "critical")
        assert "500" in out and "boom" in out
        wait_until(lambda: dig(agent.dns_port, "web.service.consul", "+short").strip() == "", timeout=5)
        target.code, target.body = 200, b"fine"
        wait_status(agent, "service:web", "passing")
        wait_until(lambda: dig(agent.dns_port, "web.service.consul", "SRV", "+short").strip()
                   == f"1 1 {target.port} hc.node.dc1.consul.", timeout=5)
        target.stop()  # connection refused
        out = wait_status(agent, "service:web", "critical")
        assert "refused" in out.lower()
    finally:
        try:
            target.stop()
        except OSError:
            pass


def test_tcp_and_udp_checks(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    agent.json("PUT", "/v1/agent/check/register", {"Name": "tcp", "TCP": f"127.0.0.1:{port}", "Interval": "1s"})
    agent.json("PUT", "/v1/agent/check/register",
               {"Name": "udp", "UDP": f"127.0.0.1:{udp.getsockname()[1]}", "Interval": "1s", "Timeout": "500ms"})
    out = wait_status(agent, "tcp", "passing")
    assert out == f"TCP connect 127.0.0.1:{port}: Success"
    wait_status(agent, "udp", "passing")
    listener.close()
    udp.close()
    wait_status(agent, "tcp", "critical")
    wait_status(agent, "udp", "critical")


def flip_script(tmp_path) -> tuple[str, str]:
    """A script whose exit code is the content of a file."""
    code_file = tmp_path / "code"
    code_file.write_text("0")
    script = tmp_path / "check"
    script.write_text(f'#!/bin/sh\necho "checking $1"\nexit $(cat {code_file})\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), str(code_file)


def test_script_checks_refused_by_default_and_accepted_with_the_flag(start_agent, tmp_path) -> None:
    script, _ = flip_script(tmp_path)
    agent = start_agent("-config-file", write_config(tmp_path))
    status, _, body = agent.request("PUT", "/v1/agent/check/register",
                                    {"Name": "s", "Args": [script, "x"], "Interval": "1s"})
    assert status == 500 and b"Scripts are disabled on this agent from remote calls" in body
    agent2 = start_agent("-config-file", write_config(tmp_path), "-enable-script-checks")
    assert agent2.request("PUT", "/v1/agent/check/register",
                          {"Name": "s", "Args": [script, "x"], "Interval": "1s"})[0] == 200
    assert wait_status(agent2, "s", "passing") == "checking x\n"


def test_local_script_checks_only_from_config_files(start_agent, tmp_path) -> None:
    script, _ = flip_script(tmp_path)
    conf = write_config(tmp_path, enable_local_script_checks=True,
                        check={"name": "fromfile", "args": [script, "cfg"], "interval": "1s"})
    agent = start_agent("-config-file", conf)
    assert wait_status(agent, "fromfile", "passing") == "checking cfg\n"
    status, _, _ = agent.request("PUT", "/v1/agent/check/register", {"Name": "s", "Args": [script], "Interval": "1s"})
    assert status == 500


def test_seed_scenario_files_service_with_a_failing_script_check(start_agent, tmp_path) -> None:
    """Service `files` with a script check `/check files` every 10s (the project's seed scenario)."""
    script, code_file = flip_script(tmp_path)
    agent = start_agent("-config-file", write_config(tmp_path), "-enable-script-checks", "-node", "seed")
    open(code_file, "w").write("2")
    agent.json("PUT", "/v1/agent/service/register", {
        "Name": "files", "Port": 8000, "Check": {"Args": [script, "files"], "Interval": "10s"}})
    # critical from the start (Consul's default initial status) and after the first run
    assert dig(agent.dns_port, "files.service.consul", "SRV", "+short").strip() == ""
    wait_until(lambda: status_of(agent, "service:files")[1] == "checking files\n", timeout=15)
    [entry] = agent.json("GET", "/v1/health/service/files")
    [check] = [c for c in entry["Checks"] if c["CheckID"] == "service:files"]
    assert (check["Status"], check["Output"]) == ("critical", "checking files\n")
    assert dig(agent.dns_port, "files.service.consul", "SRV", "+short").strip() == ""
    open(code_file, "w").write("0")
    wait_status(agent, "service:files", "passing", timeout=15)
    assert dig(agent.dns_port, "files.service.consul", "SRV", "+short").strip() == "1 1 8000 seed.node.dc1.consul."


def test_script_exit_codes_and_timeout_kills_the_process_group(start_agent, tmp_path) -> None:
    script, code_file = flip_script(tmp_path)
    agent = start_agent("-config-file", write_config(tmp_path), "-enable-script-checks")
    agent.json("PUT", "/v1/agent/check/register", {"Name": "flip", "Args": [script, "f"], "Interval": "1s"})
    wait_status(agent, "flip", "passing")
    open(code_file, "w").write("1")
    wait_status(agent, "flip", "warning")
    open(code_file, "w").write("3")
    wait_status(agent, "flip", "critical")
    marker = tmp_path / "slept"
    slow = tmp_path / "slow"
    slow.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {marker}\nwait\n")
    slow.chmod(0o755)
    agent.json("PUT", "/v1/agent/check/register",
               {"Name": "slow", "Args": [str(slow)], "Interval": "2s", "Timeout": "500ms", "Status": "passing"})
    out = wait_status(agent, "slow", "critical", timeout=10)
    assert "timed out" in out.lower() or "timeout" in out.lower()
    child = int(marker.read_text())
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or
               open(f"/proc/{child}/stat").read().split()[2] == "Z", timeout=5)


def test_thresholds_hold_the_previous_status(start_agent, tmp_path) -> None:
    script, code_file = flip_script(tmp_path)
    agent = start_agent("-config-file", write_config(tmp_path), "-enable-script-checks")
    agent.json("PUT", "/v1/agent/check/register", {
        "Name": "th", "Args": [script, "t"], "Interval": "1s", "Status": "passing",
        "FailuresBeforeCritical": 3, "SuccessBeforePassing": 2})
    # The first result is reported at once (Consul starts the counters at their thresholds).
    wait_until(lambda: status_of(agent, "th") == ("passing", "checking t\n"), timeout=10)
    open(code_file, "w").write("2")
    import time

    t0 = time.monotonic()
    wait_status(agent, "th", "critical", timeout=15)
    assert time.monotonic() - t0 >= 1.5  # needed 3 consecutive failures at 1 s intervals
    open(code_file, "w").write("0")
    t0 = time.monotonic()
    wait_status(agent, "th", "passing", timeout=15)
    assert time.monotonic() - t0 >= 0.5


def test_ttl_expiry_and_recovery(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path))
    agent.json("PUT", "/v1/agent/service/register", {"Name": "ttlsvc", "Check": {"TTL": "1s"}})
    agent.json("PUT", "/v1/agent/check/pass/service:ttlsvc?note=alive")
    assert status_of(agent, "service:ttlsvc") == ("passing", "alive")
    out = wait_status(agent, "service:ttlsvc", "critical", timeout=5)
    assert out == "TTL expired (last output before timeout follows): alive"
    agent.json("PUT", "/v1/agent/check/warn/service:ttlsvc?note=meh")
    assert status_of(agent, "service:ttlsvc") == ("warning", "meh")


def test_deregister_critical_service_after_reaps_the_service(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path))
    agent.json("PUT", "/v1/agent/service/register", {
        "Name": "doomed", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}})
    agent.json("PUT", "/v1/agent/service/register", {
        "Name": "kept", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1s", "Status": "passing"}})
    wait_until(lambda: "doomed" not in agent.json("GET", "/v1/agent/services"), timeout=10)
    assert agent.json("GET", "/v1/catalog/service/doomed") == []
    assert "kept" in agent.json("GET", "/v1/agent/services")


def test_alias_check_mirrors_another_service(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path))
    agent.json("PUT", "/v1/agent/service/register", {"Name": "backend", "Check": {"TTL": "30s"}})
    agent.json("PUT", "/v1/agent/service/register", {"Name": "front", "Check": {"AliasService": "backend"}})
    wait_status(agent, "service:front", "critical")
    agent.json("PUT", "/v1/agent/check/pass/service:backend")
    wait_status(agent, "service:front", "passing")


def test_check_state_survives_a_restart_with_a_data_dir(start_agent, tmp_path) -> None:
    data = str(tmp_path / "data")
    agent = start_agent("-config-file", write_config(tmp_path), "-data-dir", data)
    agent.json("PUT", "/v1/agent/service/register", {"Name": "persist", "Check": {"TTL": "1h"}})
    agent.json("PUT", "/v1/agent/check/pass/service:persist?note=before-restart")
    agent.stop()
    agent2 = start_agent("-config-file", write_config(tmp_path), "-data-dir", data)
    assert status_of(agent2, "service:persist") == ("passing", "before-restart")


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh")
def test_invalid_check_definitions_get_consul_messages(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path))
    status, _, body = agent.request("PUT", "/v1/agent/check/register", {"Name": "x", "HTTP": "http://127.0.0.1:1"})
    assert status == 400 and b"Interval must be > 0" in body
    status, _, body = agent.request("PUT", "/v1/agent/check/register",
                                    {"Name": "x", "AliasService": "a", "Interval": "1s"})
    assert (status, body) == (400, b"Invalid check: Interval cannot be set for Alias checks")
    status, _, body = agent.request("PUT", "/v1/agent/check/register", {"Name": "x", "TTL": "10s",
                                                                       "FailuresBeforeWarning": 3,
                                                                       "FailuresBeforeCritical": 1})
    assert status == 400 and b"FailuresBeforeWarning can't be higher" in body
    assert subprocess.run(["true"]).returncode == 0


def test_output_only_changes_reach_the_catalog_at_most_every_check_update_interval(start_agent, tmp_path) -> None:
    import time

    agent = start_agent("-config-file", write_config(tmp_path, check_update_interval="2s"))
    agent.json("PUT", "/v1/agent/service/register", {"Name": "thr", "Check": {"TTL": "1h"}})

    def catalog() -> tuple[str, str]:
        [c] = agent.json("GET", "/v1/health/checks/thr")
        return c["Status"], c["Output"]

    agent.json("PUT", "/v1/agent/check/pass/service:thr?note=first")
    assert catalog() == ("passing", "first")  # a status change syncs at once
    agent.json("PUT", "/v1/agent/check/pass/service:thr?note=second")
    t0 = time.monotonic()
    assert status_of(agent, "service:thr") == ("passing", "second")  # the agent knows at once
    assert catalog() == ("passing", "first")  # the catalog waits
    wait_until(lambda: catalog() == ("passing", "second"), timeout=5)
    assert time.monotonic() - t0 >= 0.9  # deferred by 0.5x..1.5x the interval
    agent.json("PUT", "/v1/agent/check/fail/service:thr?note=down")
    assert catalog() == ("critical", "down")  # a status change never waits
