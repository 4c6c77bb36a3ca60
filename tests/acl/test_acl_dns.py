"""DNS under ACLs answers with the agent's default token (else anonymous), as Consul's does."""

from __future__ import annotations

import json

import pytest

from tests.conftest import dig, launch, wait_until

pytestmark = pytest.mark.integration
MGMT = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706"


def test_dns_sees_only_what_the_default_token_may_read(tmp_path) -> None:
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    agent = launch("-config-file", str(cfg))
    try:
        for name, addr in (("web", "10.1.1.1"), ("db", "10.1.1.2")):
            status, _, body = agent.request("PUT", f"/v1/catalog/register?token={MGMT}", {
                "Node": f"n-{name}", "Address": addr, "Service": {"Service": name}})
            assert status == 200, body
        # Anonymous (no default token) may read nothing: no records, though the services exist.
        assert "10.1.1.1" not in dig(agent.dns_port, "web.service.consul", "A")
        status, _, body = agent.request("PUT", f"/v1/acl/policy?token={MGMT}", {
            "Name": "dns", "Rules": 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }'})
        assert status == 200, body
        status, _, body = agent.request("PUT", f"/v1/acl/token?token={MGMT}", {"Policies": [{"Name": "dns"}]})
        secret = json.loads(body)["SecretID"]
        status, _, _ = agent.request("PUT", f"/v1/agent/token/default?token={MGMT}", {"Token": secret})
        assert status == 200
        # The cached "nothing" answer is not served again: the default token changed.
        wait_until(lambda: "10.1.1.1" in dig(agent.dns_port, "web.service.consul", "A"), timeout=15, interval=0.3)
        assert "10.1.1.2" not in dig(agent.dns_port, "db.service.consul", "A")
        # A policy change reaches DNS too: drop web from the policy.
        pol = json.loads(agent.request("GET", f"/v1/acl/policy/name/dns?token={MGMT}")[2])
        status, _, _ = agent.request("PUT", f"/v1/acl/policy/{pol['ID']}?token={MGMT}", {
            "Name": "dns", "Rules": 'service "db" { policy = "read" }\nnode_prefix "" { policy = "read" }'})
        assert status == 200
        wait_until(lambda: "10.1.1.2" in dig(agent.dns_port, "db.service.consul", "A"), timeout=15, interval=0.3)
        assert "10.1.1.1" not in dig(agent.dns_port, "web.service.consul", "A")
    finally:
        agent.stop()
