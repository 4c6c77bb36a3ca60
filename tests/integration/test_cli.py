"""The `beacon` CLI against a real agent: output, messages and exit codes."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import beacon_cmd, beacon_env


def cli(agent, *args: str, stdin: str | None = None, env_addr: bool = False) -> subprocess.CompletedProcess[str]:
    extra = {"CONSUL_HTTP_ADDR": agent.http_addr} if env_addr else {}
    argv = list(args)
    if not env_addr:
        argv[2:2] = ["-http-addr", agent.http_addr] if len(argv) >= 2 and argv[0] in ("kv", "catalog", "services") \
            else []
        if argv[0] == "members":
            argv[1:1] = ["-http-addr", agent.http_addr]
    return subprocess.run(beacon_cmd(*argv), capture_output=True, text=True, input=stdin,
                          env=beacon_env(**extra), timeout=30)


def test_kv_put_get_delete_round_trip(dev_agent) -> None:
    r = cli(dev_agent, "kv", "put", "cli/app/config", '{"debug": true}')
    assert (r.returncode, r.stdout.strip()) == (0, "Success! Data written to: cli/app/config")
    r = cli(dev_agent, "kv", "get", "cli/app/config")
    assert (r.returncode, r.stdout.strip()) == (0, '{"debug": true}')
    cli(dev_agent, "kv", "put", "-flags=42", "cli/app/other", "x")
    r = cli(dev_agent, "kv", "get", "-recurse", "cli/app/")
    assert r.stdout.splitlines() == ['cli/app/config:{"debug": true}', "cli/app/other:x"]
    r = cli(dev_agent, "kv", "get", "--keys", "cli/")
    assert r.stdout.splitlines() == ["cli/app/"]
    r = cli(dev_agent, "kv", "get", "-detailed", "cli/app/other")
    assert "Flags           42" in r.stdout
    r = cli(dev_agent, "kv", "delete", "-recurse", "cli/")
    assert r.stdout.strip() == "Success! Deleted keys with prefix: cli/"
    r = cli(dev_agent, "kv", "get", "cli/app/config")
    assert r.returncode == 1 and r.stderr.strip() == "Error! No key exists at: cli/app/config"


def test_kv_cas_failure_is_an_error(dev_agent) -> None:
    cli(dev_agent, "kv", "put", "cli-cas", "1")
    r = cli(dev_agent, "kv", "put", "-cas", "-modify-index", "99999", "cli-cas", "2")
    assert r.returncode == 1 and "CAS failed" in r.stderr
    r = cli(dev_agent, "kv", "put", "-cas", "cli-cas", "2")
    assert r.returncode == 1 and "-modify-index" in r.stderr


def test_kv_put_from_stdin_and_export_import(dev_agent) -> None:
    r = cli(dev_agent, "kv", "put", "exp/a", "-", stdin="from stdin")
    assert r.returncode == 0
    r = cli(dev_agent, "kv", "export", "exp/")
    exported = json.loads(r.stdout)
    assert exported == [{"key": "exp/a", "flags": 0, "value": "ZnJvbSBzdGRpbg=="}]
    r = cli(dev_agent, "kv", "import", "-prefix", "copy/", json.dumps(exported))
    assert r.returncode == 0
    assert cli(dev_agent, "kv", "get", "copy/exp/a").stdout.strip() == "from stdin"


def test_address_from_environment(dev_agent) -> None:
    r = cli(dev_agent, "kv", "put", "envaddr", "v", env_addr=True)
    assert r.returncode == 0


def test_unreachable_agent_is_one_clear_line_and_exit_1() -> None:
    r = subprocess.run(beacon_cmd("kv", "get", "-http-addr", "127.0.0.1:1", "x"), capture_output=True,
                       text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "127.0.0.1:1" in r.stderr


def test_members_and_catalog(dev_agent) -> None:
    r = cli(dev_agent, "members")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["Node", "Address", "Status", "Type"]
    assert "alive" in lines[1] and "server" in lines[1]
    r = cli(dev_agent, "catalog", "services")
    assert "consul" in r.stdout.split()
    r = cli(dev_agent, "catalog", "nodes")
    assert r.stdout.splitlines()[1].split()[2] == "127.0.0.1"


def test_services_register_with_flags_and_file(dev_agent, tmp_path) -> None:
    r = cli(dev_agent, "services", "register", "-name", "clisvc", "-port", "7000", "-tag", "a", "-meta", "k=v")
    assert r.returncode == 0, r.stderr
    svc = dev_agent.json("GET", "/v1/agent/service/clisvc")
    assert (svc["Port"], svc["Tags"], svc["Meta"]) == (7000, ["a"], {"k": "v"})
    path = tmp_path / "svc.json"
    path.write_text(json.dumps({"service": {"name": "filesvc", "id": "filesvc1", "port": 7001}}))
    r = cli(dev_agent, "services", "register", str(path))
    assert r.returncode == 0, r.stderr
    assert dev_agent.json("GET", "/v1/agent/service/filesvc1")["Port"] == 7001
    r = cli(dev_agent, "services", "deregister", "-id", "filesvc1")
    assert r.returncode == 0
    assert dev_agent.request("GET", "/v1/agent/service/filesvc1")[0] == 404
    r = cli(dev_agent, "services", "register")
    assert r.returncode == 1 and r.stderr.startswith("Error:")


def test_unknown_command_and_bad_flag() -> None:
    r = subprocess.run(beacon_cmd("frobnicate"), capture_output=True, text=True, env=beacon_env())
    assert r.returncode == 1 and "Unknown command" in r.stderr
    r = subprocess.run(beacon_cmd("kv", "get", "-nosuchflag", "x"), capture_output=True, text=True, env=beacon_env())
    assert r.returncode == 1 and r.stderr.startswith("Error:")


def test_a_mistyped_command_gets_the_nearest_suggestion() -> None:
    r = subprocess.run(beacon_cmd("memebrs"), capture_output=True, text=True, env=beacon_env())
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["Unknown command: 'memebrs'", "Did you mean 'beacon members'?"]


def test_a_service_of_the_wrong_type_in_a_config_file_is_one_line_naming_file_and_key(tmp_path) -> None:
    path = tmp_path / "svc.json"
    path.write_text(json.dumps({"services": [{"name": "web", "port": "eighty"}]}))
    r = subprocess.run(beacon_cmd("agent", "-dev", "-no-engine", "-http-port", "0", "-dns-port", "0",
                                  "-config-file", str(path)), capture_output=True, text=True, env=beacon_env(),
                       timeout=30)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.strip() == f"==> Error: {path}: service 'web': Port must be an integer"


def test_an_address_in_use_names_the_listener_address_and_port() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(beacon_cmd("agent", "-dev", "-no-engine", "-http-port", str(port), "-dns-port", "0"),
                           capture_output=True, text=True, env=beacon_env(), timeout=30)
    assert r.returncode == 1
    assert (f"==> Error starting agent: cannot listen on 127.0.0.1:{port}/tcp for the HTTP API: "
            "address already in use") in r.stderr
