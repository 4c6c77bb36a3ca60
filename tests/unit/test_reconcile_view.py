"""The leader's reconcile reads only the nodes its rules can act on: members and serfHealth nodes."""

from __future__ import annotations

from beacon.agent.reconcile import catalog_view
from beacon.model import SERF_CHECK_ID
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore


def _serf(node: str, status: str = "passing") -> cmd.Register:
    return cmd.Register(node=node, address="10.0.0.1", checks=[{"check_id": SERF_CHECK_ID, "name": "Serf Health Status",
                                                               "status": status}])


def test_the_view_holds_members_and_serf_nodes_but_not_api_registered_nodes() -> None:
    store = StateStore()
    for i in range(200):  # registered through the catalog API: no serfHealth, no member
        store.apply(cmd.Register(node=f"api-{i}", address="10.1.0.1", service={"id": "web", "service": "web"}))
    store.apply(_serf("Agent-A"))
    store.apply(_serf("agent-b", "critical"))
    view = catalog_view(store, ["api-7", "not-in-catalog"])
    assert set(view) == {"Agent-A", "agent-b", "api-7"}
    assert view["agent-b"].serf_health == "critical" and view["api-7"].serf_health is None
    # Its serfHealth deregistered: the node drops out of the view (and of the store's hint set).
    store.apply(cmd.Deregister(node="agent-b", check_id=SERF_CHECK_ID))
    assert set(catalog_view(store)) == {"Agent-A"}
    assert store.serf_nodes == {"agent-a"}
    # A restore rebuilds the hint from the checks.
    other = StateStore()
    other.restore(store.snapshot())
    assert set(catalog_view(other)) == {"Agent-A"}
