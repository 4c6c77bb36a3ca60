"""ACLs across federated datacenters: a server of a secondary datacenter (``primary_datacenter`` names
another) resolves the tokens made there from its own tables, asks the primary's servers over the WAN
pool for every other token, caches the answer for ``token_ttl`` and falls back on ``down_policy`` when
no primary server answers (Consul's remote token resolution without token replication)."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import dig, launch, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MGMT = "1f0e0d0c-0b0a-4909-8807-060504030201"


def _config(tmp_path, name: str, **acl: object) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"primary_datacenter": "dc1",
                                "acl": {"enabled": True, "default_policy": "deny", "token_ttl": "2s", **acl}}))
    return str(path)


def _get(agent, path: str):
    status, _, body = agent.request("GET", path, timeout=10)
    return status, body


def test_a_secondary_datacenter_resolves_the_primarys_tokens_remotely(tmp_path) -> None:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    west_addr, east_addr, client_addr = f"{block}.41", f"{block}.42", f"{block}.43"
    agents = []
    try:
        east = launch("-server", "-bootstrap", "-datacenter", "dc2", "-node", "east", "-bind", east_addr,
                      "-client", east_addr, "-data-dir", str(tmp_path / "east"),
                      "-config-file", _config(tmp_path, "east"), dev=False)
        agents.append(east)
        west = launch("-server", "-bootstrap", "-node", "west", "-bind", west_addr, "-client", west_addr,
                      "-data-dir", str(tmp_path / "west"), "-join-wan", east_addr,
                      "-config-file", _config(tmp_path, "west", tokens={"initial_management": MGMT}), dev=False)
        agents.append(west)
        wait_until(lambda: _get(west, f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=30, interval=0.3)

        # A token made in the primary datacenter.
        rules = ('service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
                 'agent_prefix "" { policy = "read" }\nkey_prefix "app/" { policy = "write" }')
        status, _, body = west.request("PUT", f"/v1/acl/policy?token={MGMT}", {"Name": "readers", "Rules": rules})
        assert status == 200, body
        status, _, body = west.request("PUT", f"/v1/acl/token?token={MGMT}", {"Policies": [{"Name": "readers"}]})
        assert status == 200, body
        token = json.loads(body)
        secret = token["SecretID"]

        # The primary's management token works in dc2: the WAN pool has the primary's server.
        def registered() -> bool:
            status, _, _ = east.request("PUT", f"/v1/agent/service/register?token={MGMT}", {"Name": "web", "Port": 80})
            return status == 200
        wait_until(registered, timeout=30, interval=0.3)

        # The primary's reader token in dc2: its rules, as the primary's policy says, through the
        # aiohttp path and the fast KV path alike.
        status, body = _get(east, f"/v1/catalog/service/web?token={secret}")
        assert status == 200 and [s["Node"] for s in json.loads(body)] == ["east"], body
        assert east.request("PUT", f"/v1/kv/app/x?token={secret}", b"1")[2] == b"true"
        status, _, body = east.request("PUT", f"/v1/kv/other/x?token={secret}", b"1")
        assert status == 403 and b"Permission denied" in body
        for _ in range(3):
            assert _get(east, f"/v1/kv/app/x?raw&token={secret}") == (200, b"1")
        # token/self in dc2 reads the token's record from the primary (tools check a token with it)
        status, body = _get(east, f"/v1/acl/token/self?token={secret}")
        assert status == 200, body
        me = json.loads(body)
        assert (me["AccessorID"], me["SecretID"], [p["Name"] for p in me["Policies"]]) == (
            token["AccessorID"], secret, ["readers"])
        # Anonymous (default deny) sees nothing; a token no datacenter holds is "ACL not found".
        status, body = _get(east, "/v1/catalog/service/web")
        assert status == 200 and json.loads(body) == []
        assert _get(east, "/v1/catalog/service/web?token=00000000-0000-4000-8000-000000000000") == (
            403, b"ACL not found")
        # A request the primary forwards with ?dc= is authorized in dc2 with the same token.
        status, body = _get(west, f"/v1/catalog/service/web?dc=dc2&token={secret}")
        assert status == 200 and [s["Datacenter"] for s in json.loads(body)] == ["dc2"]

        # A client agent of dc2 asks its server, which asks the primary.
        client = launch("-node", "east-client", "-datacenter", "dc2", "-bind", client_addr, "-client", client_addr,
                        "-data-dir", str(tmp_path / "client"), "-join", east_addr,
                        "-config-file", _config(tmp_path, "client"), dev=False)
        agents.append(client)
        wait_until(lambda: _get(client, f"/v1/agent/self?token={secret}")[0] == 200, timeout=30, interval=0.3)
        assert _get(client, "/v1/agent/self")[0] == 403

        # A token made in dc2 resolves there from its own tables.
        status, _, body = east.request("PUT", f"/v1/acl/token?token={MGMT}", {"Policies": [{"Name": "global-management"}],
                                                                              "Local": True})
        assert status == 200, body
        local_secret = json.loads(body)["SecretID"]
        assert _get(east, f"/v1/acl/token/self?token={local_secret}")[0] == 200
        assert _get(west, f"/v1/acl/token/self?token={local_secret}") == (403, b"ACL not found")

        # DNS in dc2 under a token of the primary: the server's own listener (its dns token) and the
        # client's, whose queries the server answers under the client's dns token.
        assert dig(east.dns_port, "web.service.consul", "+short", server=east.host).strip() == ""  # anonymous: deny
        assert dig(client.dns_port, "web.service.consul", "+short", server=client.host).strip() == ""
        for agent in (east, client):
            status, _, body = agent.request("PUT", f"/v1/agent/token/dns?token={MGMT}", {"Token": secret})
            assert status == 200, body
            wait_until(lambda a=agent: dig(a.dns_port, "web.service.consul", "+short", server=a.host).strip()
                       == east_addr, timeout=15, interval=0.2)

        # Deleted in the primary: dc2 stops honouring it once its cached answer is older than token_ttl.
        status, _, _ = west.request("DELETE", f"/v1/acl/token/{token['AccessorID']}?token={MGMT}")
        assert status == 200
        wait_until(lambda: _get(east, f"/v1/kv/app/x?token={secret}") == (403, b"ACL not found"), timeout=20,
                   interval=0.2)
        for agent in (east, client):  # and DNS under it answers nothing again
            wait_until(lambda a=agent: dig(a.dns_port, "web.service.consul", "+short", server=a.host).strip() == "",
                       timeout=20, interval=0.2)

        # Without the primary: dc2's own tokens still resolve; an unknown one is an error, not a grant.
        west.stop()
        agents.remove(west)
        assert _get(east, f"/v1/acl/token/self?token={local_secret}")[0] == 200
        status, body = _get(east, "/v1/kv/app/x?token=2f0e0d0c-0b0a-4909-8807-060504030201")
        assert status == 500 and body.startswith(b"ACL resolution failed"), body
    finally:
        for agent in agents:
            agent.stop()
