"""The agent's metrics: one prometheus-client registry and the metric objects every part updates.

Everything lives in :data:`REGISTRY` (not the library's global default registry, so importing
Beacon never adds metrics to someone else's process). ``/v1/agent/metrics`` renders it as Consul's
JSON or, with ``?format=prometheus``, as Prometheus text.

What each part calls (all cheap, thread-safe, never log):

* HTTP: :func:`beacon.agent.http.metrics.metrics_middleware` observes :data:`HTTP_REQUESTS` and
  :data:`HTTP_LATENCY` labelled by the *route pattern* (``/v1/kv/{key}``), never the raw path.
* Blocking queries in flight are read at scrape time from the watch hub that ``blocking_query``
  waits on (:func:`bind_hub`): no counting code on the request path.
* State machine writes: ``Agent.submit`` calls :func:`raft_apply` with the command type and the time
  from proposal to applied result (on a single server that is the group-commit fsync; under Raft the
  commit round trip).
* Raft: the Raft adapter calls :func:`leader_changed` whenever the leader it knows changes
  (the single-server mode calls it once, when it becomes leader at start).
* DNS: the DNS server calls :func:`dns_query` once per answered question with the query type name
  (``A``, ``SRV``, ...) and the response code name (``NOERROR``, ``NXDOMAIN``, ...).
* Checks: each check runner calls :func:`check_run` after every run with its type (``http``,
  ``tcp``, ``script``, ``ttl``, ...), the resulting status and how long the run took.
* Catalog sizes are not pushed: :func:`bind_store` hands the state store to a collector that counts
  nodes, services, instances, checks by status, KV entries and sessions when the registry is read.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "CHECK_DURATION",
    "CHECK_RESULTS",
    "CHECK_RUNS",
    "DNS_LATENCY",
    "DNS_QUERIES",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "RAFT_APPLY",
    "RAFT_LEADER_CHANGES",
    "REGISTRY",
    "bind_hub",
    "bind_store",
    "check_run",
    "dns_query",
    "leader_changed",
    "snapshot_taken",
    "raft_apply",
    "timed_apply",
]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Blocking queries and the monitor stream stay open for minutes: the top buckets cover Consul's
# 10-minute cap so that they do not all land in +Inf.
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                 60.0, 300.0, 600.0)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0)

HTTP_REQUESTS = Counter("beacon_http_requests", "HTTP requests served, by route pattern, method and status.",
                        ["method", "endpoint", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("beacon_http_request_duration_seconds",
                         "Time to serve an HTTP request (blocking queries include their wait).",
                         ["method", "endpoint"], buckets=_HTTP_BUCKETS, registry=REGISTRY)
DNS_QUERIES = Counter("beacon_dns_queries", "DNS questions answered, by query type and response code.",
                      ["qtype", "rcode"], registry=REGISTRY)
DNS_LATENCY = Histogram("beacon_dns_query_duration_seconds", "Time to answer a DNS question.",
                        buckets=_FAST_BUCKETS, registry=REGISTRY)
CHECK_RUNS = Counter("beacon_check_runs", "Health check runs, by check type.", ["type"], registry=REGISTRY)
CHECK_RESULTS = Counter("beacon_check_results", "Health check results, by check type and status.",
                        ["type", "status"], registry=REGISTRY)
CHECK_DURATION = Histogram("beacon_check_duration_seconds", "Time one health check run took, by type.",
                           ["type"], buckets=_FAST_BUCKETS + (10.0, 30.0), registry=REGISTRY)
RAFT_APPLY = Histogram("beacon_raft_apply_seconds",
                       "Time from proposing a command to its applied result, by command type.",
                       ["type"], buckets=_FAST_BUCKETS, registry=REGISTRY)
RAFT_LEADER_CHANGES = Counter("beacon_raft_leader_changes", "Times the known Raft leader changed.",
                              registry=REGISTRY)

RAFT_SNAPSHOT_BYTES = Gauge("beacon_raft_snapshot_bytes", "Size of the newest state machine snapshot written.",
                            registry=REGISTRY)
RAFT_SNAPSHOT_SECONDS = Gauge("beacon_raft_snapshot_seconds", "Time the newest snapshot took (write + compaction).",
                              registry=REGISTRY)

_COMMAND_NAMES: dict[int, str] = {}


def _command_name(mtype: int) -> str:
    name = _COMMAND_NAMES.get(mtype)
    if name is None:
        from beacon.server.fsm import MessageType  # local: telemetry must import without the server

        try:
            name = MessageType(mtype & 0x7F).name.lower()
        except ValueError:
            name = "unknown"
        _COMMAND_NAMES[mtype] = name
    return name


def raft_apply(mtype: int, seconds: float) -> None:
    """One command went through consensus and was applied (or failed) after `seconds`."""
    RAFT_APPLY.labels(_command_name(int(mtype))).observe(seconds)


_leader_lock = threading.Lock()
_last_leader: str | None = None


def leader_changed(leader: str) -> None:
    """Report the leader this node knows now (``""`` for none). Counts changes, not calls."""
    global _last_leader
    with _leader_lock:
        if leader == _last_leader:
            return
        _last_leader = leader
    if leader:
        RAFT_LEADER_CHANGES.inc()


def snapshot_taken(size: int, seconds: float) -> None:
    RAFT_SNAPSHOT_BYTES.set(size)
    RAFT_SNAPSHOT_SECONDS.set(seconds)


def dns_query(qtype: str, rcode: str, seconds: float | None = None, count: int = 1) -> None:
    DNS_QUERIES.labels(qtype.upper(), rcode.upper()).inc(count)
    if seconds is not None:
        DNS_LATENCY.observe(seconds)


def check_run(check_type: str, status: str, seconds: float | None = None) -> None:
    kind = check_type or "unknown"
    CHECK_RUNS.labels(kind).inc()
    CHECK_RESULTS.labels(kind, status).inc()
    if seconds is not None:
        CHECK_DURATION.labels(kind).observe(seconds)


@contextlib.contextmanager
def timed_apply(mtype: int) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        raft_apply(mtype, time.perf_counter() - t0)


class _StateCollector(Collector):
    """Catalog sizes and waiting blocking queries, read at scrape time (nothing to keep in step on
    writes, nothing added to the request path)."""

    def __init__(self) -> None:
        self.store: weakref.ReferenceType[Any] | None = None
        self.hub: weakref.ReferenceType[Any] | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        hub = self.hub() if self.hub is not None else None
        if hub is not None:
            yield GaugeMetricFamily("beacon_http_blocking_queries",
                                    "Blocking queries currently waiting for a change.", value=hub.waiting)
        store = self.store() if self.store is not None else None
        if store is None:
            return
        with store.lock:
            nodes = len(store.nodes)
            services = len(store.services_by_name)
            instances = len(store.services)
            statuses: dict[str, int] = {"passing": 0, "warning": 0, "critical": 0}
            for chk in store.checks.values():
                statuses[chk.status] = statuses.get(chk.status, 0) + 1
            kv = len(store.kv)
            sessions = len(store.sessions)
            index = store.index
        yield GaugeMetricFamily("beacon_catalog_nodes", "Nodes in the catalog.", value=nodes)
        yield GaugeMetricFamily("beacon_catalog_services", "Distinct service names in the catalog.",
                                value=services)
        yield GaugeMetricFamily("beacon_catalog_service_instances", "Service instances in the catalog.",
                                value=instances)
        checks = GaugeMetricFamily("beacon_catalog_checks", "Health checks in the catalog, by status.",
                                   labels=["status"])
        for status, count in sorted(statuses.items()):
            checks.add_metric([status], count)
        yield checks
        yield GaugeMetricFamily("beacon_kv_entries", "Keys in the KV store.", value=kv)
        yield GaugeMetricFamily("beacon_sessions", "Sessions in the state store.", value=sessions)
        yield GaugeMetricFamily("beacon_state_index", "Index of the last command applied to the state store.",
                                value=index)


_state = _StateCollector()
REGISTRY.register(_state)


def bind_store(store: Any) -> None:
    """Point the catalog-size gauges at this process's state store."""
    _state.store = weakref.ref(store)


def bind_hub(hub: Any) -> None:
    """Point the blocking-queries gauge at the watch hub (its ``waiting`` count)."""
    _state.hub = weakref.ref(hub)
