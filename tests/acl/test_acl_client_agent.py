"""ACLs across a server and a client agent: the client resolves tokens through the server and caches
them for token_ttl; a deleted token stops working on the client within that TTL."""

from __future__ import annotations

import json
import random
import time

import pytest

from tests.conftest import launch, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MGMT = "0f0e0d0c-0b0a-4909-8807-060504030201"


def test_deleted_token_stops_working_on_a_client_within_the_ttl(tmp_path) -> None:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    srv_addr, cli_addr = f"{block}.10", f"{block}.20"
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny", "token_ttl": "3s",
                                       "tokens": {"initial_management": MGMT}}}))
    server = launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                    "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"), "-config-file", str(cfg), dev=False)
    client = None
    try:
        client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", str(tmp_path / "cli"),
                        "-retry-join", srv_addr, "-config-file", str(cfg), dev=False)
        wait_until(lambda: client.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=60,
                   interval=0.5)
        status, _, body = client.request("PUT", f"/v1/acl/policy?token={MGMT}", {
            "Name": "agents", "Rules": 'agent_prefix "" { policy = "read" }\nkey_prefix "app/" { policy = "write" }'})
        assert status == 200, body
        status, _, body = client.request("PUT", f"/v1/acl/token?token={MGMT}", {"Policies": [{"Name": "agents"}]})
        assert status == 200, body
        tok = json.loads(body)
        secret = tok["SecretID"]
        # Agent-local (resolved by the client through its cache) and forwarded (enforced by the server).
        assert client.request("GET", f"/v1/agent/self?token={secret}")[0] == 200
        assert client.request("PUT", f"/v1/kv/app/x?token={secret}", b"1")[2] == b"true"
        assert client.request("PUT", f"/v1/kv/other/x?token={secret}", b"1")[0] == 403
        assert client.request("GET", "/v1/agent/self")[0] == 403  # anonymous, through the same cache
        status, _, _ = server.request("DELETE", f"/v1/acl/token/{tok['AccessorID']}?token={MGMT}")
        assert status == 200
        deleted_at = time.monotonic()
        assert server.request("GET", f"/v1/kv/app/x?token={secret}")[0] == 403  # the server: at once
        wait_until(lambda: client.request("GET", f"/v1/agent/self?token={secret}")[0] == 403, timeout=30,
                   interval=0.2)
        # token_ttl is 3 s; allow for load, but far less than "never".
        assert time.monotonic() - deleted_at < 15
        status, _, body = client.request("GET", f"/v1/agent/self?token={secret}")
        assert body == b"ACL not found"
    finally:
        if client is not None:
            client.stop()
        server.stop()


def test_agent_tokens_persist_across_a_restart_with_enable_token_persistence(tmp_path) -> None:
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": True,
                                       "tokens": {"initial_management": MGMT}}}))
    flags = ("-server", "-bootstrap-expect", "1", "-node", "solo", "-data-dir", str(tmp_path / "data"),
             "-config-file", str(cfg))
    agent = launch(*flags, dev=False)
    try:
        wait_until(lambda: agent.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=30)
        assert agent.request("GET", "/v1/kv/missing")[0] == 403  # armed: anonymous is denied
        status, _, _ = agent.request("PUT", f"/v1/agent/token/default?token={MGMT}", {"Token": MGMT})
        assert status == 200
        assert agent.request("GET", "/v1/kv/missing")[0] == 404  # now the default token reads
    finally:
        agent.stop()
    agent = launch(*flags, dev=False)
    try:
        wait_until(lambda: agent.request("GET", "/v1/kv/missing")[0] == 404, timeout=30)
    finally:
        agent.stop()
