"""The DNS answer cache under churn: an answer is rebuilt only when what it read changed, and a
cached answer always says what a fresh build would say.

The second test drives random catalog commands (the same strategies as the view property test)
and, after each, asks a long-lived server (whose cache has seen every earlier state) and a server
with an empty cache the same questions; records, rcodes and additional records must agree.
"""

from __future__ import annotations

from typing import Any

from dnslib import EDNS0, QTYPE, DNSRecord
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.dns import DNSConfig, DNSServer
from beacon.server.fsm import MessageType, StateStore
from tests.unit.test_views import deregister_cmd, register_cmd, status_cmd

QUESTIONS = [("web.service.consul", "A"), ("web.service.consul", "SRV"), ("db.service.consul", "A"),
             ("cache.service.consul", "SRV"), ("absent.service.consul", "A"), ("n1.node.consul", "A"),
             ("n3.node.consul", "A"), ("1.0.0.10.in-addr.arpa", "PTR"), ("consul", "NS")]


def ask(server: DNSServer, name: str, qtype: str, ident: int = 7, edns: bool = False) -> bytes:
    got: list[bytes] = []
    query = DNSRecord.question(name, qtype)
    query.header.id = ident
    if edns:  # a 4096-byte buffer lifts udp_answer_limit, which answers a random subset of the instances
        query.add_ar(EDNS0(udp_len=4096))
    server.handle(bytes(query.pack()), False, got.append)
    assert len(got) == 1
    return got[0]


def summary(wire: bytes) -> tuple[Any, ...]:
    """What a client reads, order aside (several instances rotate) and SOA serials aside."""
    rec = DNSRecord.parse(wire)
    return (rec.header.id, rec.header.rcode, sorted(str(rr) for rr in rec.rr),
            sorted(str(rr) for rr in rec.ar if rr.rtype != QTYPE.OPT),
            sorted(rr.rtype for rr in rec.auth))


def register(store: StateStore, node: str, service: str, port: int, status: str = "passing") -> None:
    store.apply((MessageType.REGISTER, {
        "node": node, "address": "10.0.0.1", "service": {"id": service, "service": service, "port": port},
        "checks": [{"check_id": f"{service}-check", "name": "c", "status": status, "service_id": service}]}))


def test_churn_of_one_service_leaves_other_answers_cached() -> None:
    store = StateStore()
    server = DNSServer(store, DNSConfig(node_name="n1"))
    register(store, "n1", "web", 80)
    register(store, "n1", "churn", 1000)
    first = ask(server, "web.service.consul", "A")
    key = bytes(DNSRecord.question("web.service.consul", "A").pack())[2:]
    tail = server.udp_cache.entries[key][1]
    for port in range(1001, 1051):  # another service re-registered 50 times
        register(store, "n1", "churn", port)
        assert summary(ask(server, "web.service.consul", "A")) == summary(first)
    assert server.udp_cache.entries[key][1] is tail  # served from the same cached entry throughout
    assert server.udp_cache.entries[key][0] == store.catalog_version
    # A change to web itself is seen at once: its only instance goes critical.
    register(store, "n1", "web", 80, status="critical")
    rcode = DNSRecord.parse(ask(server, "web.service.consul", "A")).header.rcode
    assert rcode == 3  # NXDOMAIN: no healthy instance
    assert server.udp_cache.entries[key][1] is not tail


def test_a_several_instance_answer_goes_live_under_churn_elsewhere() -> None:
    """Its orders are collected across catalog versions, so it is cached although the catalog moves
    between every two queries (before, each new version restarted the collection: never cached)."""
    store = StateStore()
    server = DNSServer(store, DNSConfig(node_name="n1"))
    for n in range(6):
        store.apply((MessageType.REGISTER, {"node": f"n{n}", "address": f"10.0.0.{n + 1}",
                                            "service": {"id": "web", "service": "web", "port": 80}}))
    register(store, "n1", "churn", 1000)
    key = bytes(DNSRecord.question("web.service.consul", "A").pack())[2:]
    answers = set()
    for port in range(1001, 1101):  # the other service changes before every query
        register(store, "n1", "churn", port)
        wire = ask(server, "web.service.consul", "A")
        answers.add(tuple(str(rr) for rr in DNSRecord.parse(wire).rr))
        if key in server.udp_cache.entries:
            break
    assert key in server.udp_cache.entries, "the answer never went live"
    assert len(answers) > 1  # the collected orders differ: shuffling is kept
    tail = server.udp_cache.entries[key][1]
    register(store, "n1", "churn", 2000)
    ask(server, "web.service.consul", "A")
    assert server.udp_cache.entries[key][1] is tail  # a hit after re-validation, not a rebuild
    assert server.udp_cache.entries[key][0] == store.catalog_version


@settings(max_examples=80, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow])
@given(st.lists(st.one_of(register_cmd, register_cmd, deregister_cmd, status_cmd, st.just(("restore", {}))),
                min_size=1, max_size=30))
def test_cached_answers_match_fresh_ones(commands: list[tuple[Any, dict[str, Any]]]) -> None:
    store = StateStore()
    cached = DNSServer(store, DNSConfig(node_name="n1"))
    for n, cmd in enumerate(commands):
        if cmd[0] == "restore":
            store.restore(store.snapshot())
        else:
            store.apply(cmd)
        fresh = DNSServer(store, DNSConfig(node_name="n1"))
        for name, qtype in QUESTIONS:
            for _ in range(2):  # the second question of a pair is a cache hit (or a re-check)
                assert summary(ask(cached, name, qtype, n, edns=True)) == summary(
                    ask(fresh, name, qtype, n, edns=True)), (name, qtype)
