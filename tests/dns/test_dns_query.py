"""Prepared queries over DNS, through the router alone (whole request in, whole reply checked)."""

from __future__ import annotations

import random
import uuid
from typing import Any

from dnshelpers import query, register
from dnslib import QTYPE, RCODE, DNSRecord

from beacon.dns import Action, Context, DNSConfig, route
from beacon.server import sessions
from beacon.server.fsm import MessageType, StateStore


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    for i in (1, 2, 3):
        register(store, f"node{i}", f"10.0.0.{i}", {"service": "web", "port": 8080 + i, "tags": ["v1" if i < 3 else "v2"],
                                                    "address": f"10.1.0.{i}"})
    for name, service, extra in (
            ("web-v1", "web", {"Tags": ["v1"], "Near": "_agent"}),
            ("slow", "web", {}),
            ("ghost", "nothing", {})):
        q: dict[str, Any] = {
            "ID": str(uuid.uuid4()), "Name": name, "Session": "", "Token": "",
            "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
            "Service": {"Service": service, "Failover": {"NearestN": 0, "Datacenters": None}, "IgnoreCheckIDs": None,
                        "OnlyPassing": False, "Near": "", "Tags": None, "NodeMeta": None, "ServiceMeta": None,
                        "Connect": {"Enabled": False}, "Peer": "", "SamenessGroup": ""},
            "DNS": {"TTL": "30s" if name == "web-v1" else ""}}
        q["Service"].update(extra)
        assert store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": q})).error is None
    return store


STORE = _store()


def ask(name: str, qtype: str = "A", cfg: DNSConfig | None = None) -> tuple[DNSRecord, Any]:
    ctx = Context(STORE, cfg or DNSConfig(node_name="node2"), now=lambda: 1_700_000_000.0, rng=random.Random(1))
    reply = route(query(name, qtype), ctx)
    assert reply.action is Action.ANSWER
    return DNSRecord.parse(reply.wire), reply


def test_query_a_records_in_near_order_with_the_query_ttl() -> None:
    msg, reply = ask("web-v1.query.consul")
    assert RCODE[msg.header.rcode] == "NOERROR"
    assert [(str(rr.rdata), rr.ttl) for rr in msg.rr] == [("10.1.0.2", 30), ("10.1.0.1", 30)]
    assert reply.cacheable is False  # depends on the queries table, not only the catalog


def test_query_srv_in_rfc2782_form_with_glue() -> None:
    msg, _ = ask("_web-v1._tcp.query.dc1.consul", "SRV")
    assert sorted(str(rr.rdata) for rr in msg.rr) == ["1 1 8081 0a010001.addr.dc1.consul.",
                                                      "1 1 8082 0a010002.addr.dc1.consul."]
    assert sorted(str(rr.rdata) for rr in msg.ar) == ["10.1.0.1", "10.1.0.2"]


def test_query_ttl_falls_back_to_the_service_ttl() -> None:
    cfg = DNSConfig.from_consul_json({"service_ttl": {"web": "7s"}}, node_name="node2")
    msg, _ = ask("slow.query.consul", cfg=cfg)
    assert {rr.ttl for rr in msg.rr} == {7} and len(msg.rr) == 3


def test_unknown_query_empty_result_wrong_dc_and_nodata() -> None:
    for name in ("nope.query.consul", "ghost.query.consul", "web-v1.query.dc9.consul"):
        msg, _ = ask(name)
        assert RCODE[msg.header.rcode] == "NXDOMAIN", name
        assert QTYPE[msg.auth[0].rtype] == "SOA"
    msg, _ = ask("web-v1.query.consul", "AAAA")
    assert RCODE[msg.header.rcode] == "NOERROR" and not msg.rr and QTYPE[msg.auth[0].rtype] == "SOA"
