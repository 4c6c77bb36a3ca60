"""The functions other parts call (DNS, checks, Raft) move the metrics they should, in this process."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client", reason="pip install prometheus-client")

from beacon import telemetry  # noqa: E402
from beacon.agent.http.metrics import metrics_json  # noqa: E402
from beacon.server.fsm import MessageType, StateStore  # noqa: E402


def sample(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


def test_dns_queries_count_by_type_and_rcode() -> None:
    before = sample("beacon_dns_queries_total", qtype="SRV", rcode="NXDOMAIN")
    telemetry.dns_query("srv", "nxdomain", 0.0004)
    telemetry.dns_query("SRV", "NXDOMAIN")
    assert sample("beacon_dns_queries_total", qtype="SRV", rcode="NXDOMAIN") == before + 2
    assert sample("beacon_dns_query_duration_seconds_count") >= 1


def test_check_runs_and_results_by_type() -> None:
    runs = sample("beacon_check_runs_total", type="http")
    crit = sample("beacon_check_results_total", type="http", status="critical")
    telemetry.check_run("http", "critical", 0.02)
    telemetry.check_run("http", "passing", 0.01)
    assert sample("beacon_check_runs_total", type="http") == runs + 2
    assert sample("beacon_check_results_total", type="http", status="critical") == crit + 1
    assert sample("beacon_check_duration_seconds_count", type="http") >= 2


def test_leader_changes_count_changes_not_reports() -> None:
    telemetry.leader_changed("")  # no leader known: not a change to count
    before = sample("beacon_raft_leader_changes_total")
    for leader in ("10.0.0.1:8300", "10.0.0.1:8300", "", "10.0.0.2:8300", "10.0.0.2:8300"):
        telemetry.leader_changed(leader)
    assert sample("beacon_raft_leader_changes_total") == before + 2


def test_raft_apply_is_labelled_by_command_type() -> None:
    before = sample("beacon_raft_apply_seconds_count", type="kvs")
    with telemetry.timed_apply(MessageType.KVS):
        pass
    telemetry.raft_apply(MessageType.KVS | 128, 0.001)  # the ignore-unknown flag does not change the name
    assert sample("beacon_raft_apply_seconds_count", type="kvs") == before + 2


def test_catalog_sizes_come_from_the_bound_store() -> None:
    store = StateStore()
    store.apply((MessageType.REGISTER, {"node": "n1", "address": "10.0.0.1",
                                         "service": {"service": "web", "id": "web-1"},
                                         "checks": [{"node": "n1", "check_id": "c1", "name": "c1",
                                                     "status": "warning"}]}))
    store.apply((MessageType.KVS, {"op": "set", "key": "a", "value": b"1", "flags": 0}))
    telemetry.bind_store(store)
    assert sample("beacon_catalog_nodes") == 1
    assert sample("beacon_catalog_service_instances") == 1
    assert sample("beacon_catalog_checks", status="warning") == 1
    assert sample("beacon_kv_entries") == 1
    gauges = {g["Name"]: g["Value"] for g in metrics_json()["Gauges"] if not g["Labels"]}
    assert gauges["beacon.catalog.services"] == 1 and gauges["beacon.state.index"] == 2
