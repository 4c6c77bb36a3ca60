"""Every HTTP route the agent serves is named in the ACL route table, so none falls back to
"management only" by accident when a handler is added; the few that need management say so."""

from __future__ import annotations

import importlib
import re

import pytest

from beacon.agent.http.acl_enforce import covered

MODULES = ("agent_api", "catalog", "health", "kv", "status", "operator", "session", "txn", "snapshot", "query",
           "config", "event", "coordinate", "ui", "keyring", "acl", "connect")
# Consul needs a management token (or operator/keyring rules the table names) for these.
MANAGEMENT_ONLY: set[tuple[str, str]] = set()


def _routes() -> list[tuple[str, str]]:
    out = []
    for name in MODULES:
        mod = importlib.import_module(f"beacon.agent.http.{name}")
        for router in (getattr(mod, "router", None), getattr(mod, "agent_router", None)):
            if router is None:
                continue
            for path, methods in router.routes.items():
                sample = re.sub(r"\{[^}]+\}", "x", path)
                out += [(method, sample) for method in methods]
    return out


@pytest.mark.parametrize(("method", "path"), _routes())
def test_route_is_in_the_acl_table(method: str, path: str) -> None:
    assert covered(method, path) or (method, path) in MANAGEMENT_ONLY, f"{method} {path} has no ACL rule"
