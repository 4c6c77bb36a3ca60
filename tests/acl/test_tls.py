"""TLS with a CA and certificates made by `beacon tls`: the HTTPS API (curl --cacert, verify_incoming),
the CLI over HTTPS, and a client agent forwarding to its server over TLS only."""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import urllib.request

import pytest
from cryptography import x509

from tests.conftest import beacon_cmd, beacon_env, launch, wait_until

pytestmark = pytest.mark.integration


def _tls(cwd, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(beacon_cmd("tls", *args), cwd=cwd, env=beacon_env(), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _tls(d, "ca", "create")
    _tls(d, "cert", "create", "-server", "-additional-dnsname", "beacon.test")
    _tls(d, "cert", "create", "-client")
    _tls(d, "cert", "create", "-cli")
    return d


def test_files_and_names_are_consuls(pki) -> None:
    names = sorted(os.listdir(pki))
    assert names == sorted(["consul-agent-ca.pem", "consul-agent-ca-key.pem", "dc1-server-consul-0.pem",
                            "dc1-server-consul-0-key.pem", "dc1-client-consul-0.pem", "dc1-client-consul-0-key.pem",
                            "dc1-cli-consul-0.pem", "dc1-cli-consul-0-key.pem"])
    assert oct(os.stat(pki / "consul-agent-ca-key.pem").st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate((pki / "dc1-server-consul-0.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"server.dc1.consul", "localhost", "beacon.test"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # A second server certificate gets the next number; the CA is never overwritten.
    _tls(pki, "cert", "create", "-server")
    assert (pki / "dc1-server-consul-1.pem").exists()
    again = subprocess.run(beacon_cmd("tls", "ca", "create"), cwd=pki, env=beacon_env(), capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 1 and "already exists" in again.stderr


def _https_agent(pki, tmp_path, verify_incoming: bool):
    cfg = tmp_path / "tls.json"
    cfg.write_text(json.dumps({"tls": {"defaults": {
        "ca_file": str(pki / "consul-agent-ca.pem"), "cert_file": str(pki / "dc1-server-consul-0.pem"),
        "key_file": str(pki / "dc1-server-consul-0-key.pem"), "verify_incoming": verify_incoming}}}))
    agent = launch("-config-file", str(cfg), "-https-port", "0")
    port = next(int(line.rsplit("https_port=", 1)[1]) for line in agent.lines if "https_port=" in line)
    return agent, port


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def test_https_api_with_curl_cacert(pki, tmp_path) -> None:
    agent, port = _https_agent(pki, tmp_path, verify_incoming=False)
    try:
        ok = _curl("--cacert", str(pki / "consul-agent-ca.pem"), "-X", "PUT", "-d", "tls-value",
                   f"https://127.0.0.1:{port}/v1/kv/tls/key")
        assert ok.returncode == 0 and ok.stdout == "true", ok.stderr
        ok = _curl("--cacert", str(pki / "consul-agent-ca.pem"), f"https://localhost:{port}/v1/kv/tls/key?raw")
        assert ok.stdout == "tls-value", ok.stderr
        # Without the CA the server is not trusted; plain HTTP on the HTTP port still works.
        assert _curl(f"https://127.0.0.1:{port}/v1/status/leader").returncode != 0
        assert agent.request("GET", "/v1/kv/tls/key?raw")[2] == b"tls-value"
        # The CLI: an https:// address (and CONSUL_HTTP_SSL with a bare address) with CONSUL_CACERT.
        env = beacon_env(CONSUL_CACERT=str(pki / "consul-agent-ca.pem"))
        got = subprocess.run(beacon_cmd("kv", "get", "-http-addr", f"https://127.0.0.1:{port}", "tls/key"),
                             env=env, capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() == "tls-value", got.stderr
        # -tls-server-name: the name checked instead of the address (good name works, wrong one not).
        for name, ok_expected in (("server.dc1.consul", True), ("wrong.example", False)):
            got = subprocess.run(beacon_cmd("kv", "get", "-http-addr", f"https://127.0.0.1:{port}",
                                            "-tls-server-name", name, "tls/key"),
                                 env=env, capture_output=True, text=True, timeout=30)
            assert (got.stdout.strip() == "tls-value") is ok_expected, (name, got.stderr)
        env.update(CONSUL_HTTP_SSL="true", CONSUL_HTTP_ADDR=f"127.0.0.1:{port}")
        got = subprocess.run(beacon_cmd("kv", "get", "tls/key"), env=env, capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() == "tls-value", got.stderr
    finally:
        agent.stop()


def test_verify_incoming_refuses_a_client_without_a_certificate(pki, tmp_path) -> None:
    agent, port = _https_agent(pki, tmp_path, verify_incoming=True)
    try:
        ca = str(pki / "consul-agent-ca.pem")
        refused = _curl("--cacert", ca, f"https://127.0.0.1:{port}/v1/status/leader")
        assert refused.returncode != 0 and refused.stdout == ""
        ok = _curl("--cacert", ca, "--cert", str(pki / "dc1-cli-consul-0.pem"), "--key",
                   str(pki / "dc1-cli-consul-0-key.pem"), f"https://127.0.0.1:{port}/v1/status/leader")
        assert ok.returncode == 0 and ok.stdout.startswith('"'), ok.stderr
        got = subprocess.run(beacon_cmd("kv", "put", "-http-addr", f"https://127.0.0.1:{port}", "-ca-file", ca,
                                        "-client-cert", str(pki / "dc1-cli-consul-0.pem"),
                                        "-client-key", str(pki / "dc1-cli-consul-0-key.pem"), "k", "v"),
                             env=beacon_env(), capture_output=True, text=True, timeout=30)
        assert got.returncode == 0, got.stderr
        # The listener survived the refused handshakes and still serves.
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(str(pki / "dc1-client-consul-0.pem"), str(pki / "dc1-client-consul-0-key.pem"))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/kv/k?raw", context=ctx, timeout=10) as resp:
            assert resp.read() == b"v"
    finally:
        agent.stop()


def test_client_agent_reaches_its_server_over_tls_only(pki, tmp_path) -> None:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    srv_addr, cli_addr = f"{block}.10", f"{block}.20"
    ca = str(pki / "consul-agent-ca.pem")

    def config(name: str, kind: str) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"tls": {
            "defaults": {"ca_file": ca, "cert_file": str(pki / f"dc1-{kind}-consul-0.pem"),
                         "key_file": str(pki / f"dc1-{kind}-consul-0-key.pem"), "verify_incoming": True,
                         "verify_outgoing": True},
            "internal_rpc": {"verify_server_hostname": True}}}))
        return str(path)

    # The server has no plain HTTP API at all: the client's forwarding can only work over TLS, and
    # only with a certificate the server accepts (verify_incoming) for server.dc1.consul.
    server = launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                    "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"), "-http-port", "-1",
                    "-https-port", "0", "-config-file", config("srv", "server"), dev=False)
    client = None
    try:
        client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", str(tmp_path / "cli"),
                        "-retry-join", srv_addr, "-config-file", config("cli", "client"), dev=False)

        def put() -> bool:
            status, _, body = client.request("PUT", "/v1/kv/over/tls", b"yes")
            return status == 200 and body == b"true"
        wait_until(put, timeout=60, interval=0.5)
        status, _, body = client.request("GET", "/v1/kv/over/tls?raw")
        assert (status, body) == (200, b"yes")
    finally:
        if client is not None:
            client.stop()
        server.stop()
