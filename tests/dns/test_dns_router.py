"""The router on its own: whole request in, whole reply checked. No sockets."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnshelpers import query, register, web_store
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord, EDNSOption

from beacon.dns import Action, Context, DNSConfig, route
from beacon.dns.router import MAX_VARIANTS, servfail_for

NOW = 1_700_000_000.0


def catalog() -> Any:
    store = web_store(3)
    register(store, "node1", "10.0.0.1", {"service": "db", "port": 5432})
    register(store, "node2", "10.0.0.2", {"service": "v6", "port": 80, "address": "2001:db8::1"})
    register(store, "node3", "10.0.0.3", {"service": "warn", "port": 81, "weights": {"Passing": 10, "Warning": 2}},
             checks=[{"check_id": "w", "status": "warning", "service_id": "warn"}])
    register(store, "node3", "10.0.0.3", {"service": "pass", "port": 82, "weights": {"Passing": 10, "Warning": 2}})
    register(store, "node1", "10.0.0.1", {"service": "crit", "port": 83},
             checks=[{"check_id": "c", "status": "critical", "service_id": "crit"}])
    register(store, "node2", "10.0.0.2", {"service": "ext", "port": 84, "address": "example.org"})
    register(store, "node2", "10.0.0.2", {"service": "alias", "port": 85, "address": "web.service.consul"})
    register(store, "host6", "2001:db8::99", node_meta={"a=b": "c", "rfc1035-raw": "v=1"})
    register(store, "consul-server", "10.0.0.9", {"service": "consul", "port": 8300})
    return store


STORE = catalog()


def ask(name: str, qtype: str = "A", cfg: DNSConfig | None = None, tcp: bool = False,
        edns: int | None = None, store: Any = None, variant: int = 0) -> tuple[DNSRecord, Any]:
    ctx = Context(store or STORE, cfg or DNSConfig(), tcp=tcp, variant=variant, now=lambda: NOW,
                  rng=random.Random(variant))
    reply = route(query(name, qtype, edns=edns), ctx)
    assert reply.action is Action.ANSWER
    return DNSRecord.parse(reply.wire), reply


def rows(section: list[Any]) -> list[str]:
    return sorted(f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}".rstrip() for rr in section)


@dataclass
class Case:
    name: str
    qtype: str
    rcode: str = "NOERROR"
    answer: list[str] | None = None
    authority: list[str] = field(default_factory=list)
    additional: list[str] | None = None
    cfg: dict[str, Any] = field(default_factory=dict)


SOA = "consul. SOA ns.consul. hostmaster.consul. 1700000000 3600 600 86400 0"
WEB_A = [f"web.service.consul. A 10.1.0.{i}" for i in (1, 2, 3)]

CASES = {
    "service A uses the service address": Case("web.service.consul", "A", answer=WEB_A),
    "names are case-insensitive and the owner echoes the question": Case(
        "WeB.SeRvIcE.CoNsUl", "A", answer=[f"WeB.SeRvIcE.CoNsUl. A 10.1.0.{i}" for i in (1, 2, 3)]),
    "explicit datacenter": Case("web.service.dc1.consul", "A", answer=[r.replace("consul.", "dc1.consul.") for r in WEB_A]),
    "explicit .dc form": Case("web.service.dc1.dc.consul", "A",
                              answer=[r.replace("consul.", "dc1.dc.consul.") for r in WEB_A]),
    "unknown datacenter is NXDOMAIN": Case("web.service.dc9.consul", "A", "NXDOMAIN", [], [SOA]),
    "tag filter": Case("v2.web.service.consul", "A", answer=["v2.web.service.consul. A 10.1.0.2"]),
    "tag filter is case-insensitive": Case("V1.web.service.consul", "A",
                                           answer=["V1.web.service.consul. A 10.1.0.1", "V1.web.service.consul. A 10.1.0.3"]),
    "unknown tag is NXDOMAIN": Case("v9.web.service.consul", "A", "NXDOMAIN", [], [SOA]),
    "SRV with IP service address targets .addr": Case(
        "web.service.consul", "SRV",
        answer=[f"web.service.consul. SRV 1 1 8080 0a01000{i}.addr.dc1.consul." for i in (1, 2, 3)],
        additional=sorted([f"0a01000{i}.addr.dc1.consul. A 10.1.0.{i}" for i in (1, 2, 3)]
                          + [f'node{i}.node.dc1.consul. TXT "rack=r{i}"' for i in (1, 2, 3)])),
    "SRV without service address targets the node": Case(
        "db.service.consul", "SRV", answer=["db.service.consul. SRV 1 1 5432 node1.node.dc1.consul."],
        additional=["node1.node.dc1.consul. A 10.0.0.1", 'node1.node.dc1.consul. TXT "rack=r1"']),
    "SRV without node meta TXT when disabled": Case(
        "db.service.consul", "SRV", answer=["db.service.consul. SRV 1 1 5432 node1.node.dc1.consul."],
        additional=["node1.node.dc1.consul. A 10.0.0.1"], cfg={"enable_additional_node_meta_txt": False}),
    "RFC 2782 _tcp means no tag": Case(
        "_db._tcp.service.consul", "SRV", answer=["_db._tcp.service.consul. SRV 1 1 5432 node1.node.dc1.consul."]),
    "RFC 2782 without .service": Case(
        "_db._tcp.consul", "SRV", answer=["_db._tcp.consul. SRV 1 1 5432 node1.node.dc1.consul."]),
    "RFC 2782 tag": Case("_web._v2.service.consul", "SRV",
                         answer=["_web._v2.service.consul. SRV 1 1 8080 0a010002.addr.dc1.consul."]),
    "SRV weight follows a warning check": Case(
        "warn.service.consul", "SRV", answer=["warn.service.consul. SRV 1 2 81 node3.node.dc1.consul."]),
    "SRV weight when passing": Case(
        "pass.service.consul", "SRV", answer=["pass.service.consul. SRV 1 10 82 node3.node.dc1.consul."]),
    "warning instance kept by default": Case("warn.service.consul", "A", answer=["warn.service.consul. A 10.0.0.3"]),
    "only_passing drops warning instances": Case("warn.service.consul", "A", "NXDOMAIN", [], [SOA],
                                                 cfg={"only_passing": True}),
    "critical instance excluded: NXDOMAIN": Case("crit.service.consul", "A", "NXDOMAIN", [], [SOA]),
    "unknown service: NXDOMAIN + SOA": Case("nosuch.service.consul", "A", "NXDOMAIN", [], [SOA]),
    "AAAA for an IPv4 service: NODATA + SOA": Case("web.service.consul", "AAAA", "NOERROR", [], [SOA]),
    "AAAA service": Case("v6.service.consul", "AAAA", answer=["v6.service.consul. AAAA 2001:db8::1"]),
    # Consul falls back to the node's IPv4 address when the service address is IPv6 only.
    "A for an IPv6 service falls back to the node address": Case("v6.service.consul", "A",
                                                                 answer=["v6.service.consul. A 10.0.0.2"]),
    "SRV to an IPv6 service address": Case(
        "v6.service.consul", "SRV", answer=["v6.service.consul. SRV 1 1 80 20010db8000000000000000000000001.addr.dc1.consul."]),
    "ANY returns addresses": Case("web.service.consul", "ANY", answer=[r.replace(" A ", " A ") for r in
                                                                        [f"web.service.consul. A 10.1.0.{i}" for i in (1, 2, 3)]]),
    "TXT on a service returns its addresses": Case("web.service.consul", "TXT",
                                                   answer=[f"web.service.consul. A 10.1.0.{i}" for i in (1, 2, 3)]),
    "MX on a service: NODATA": Case("web.service.consul", "MX", "NOERROR", [], [SOA]),
    "hostname service address: CNAME": Case("ext.service.consul", "A", answer=["ext.service.consul. CNAME example.org."]),
    "CNAME into the domain is resolved": Case(
        "alias.service.consul", "A",
        answer=["alias.service.consul. CNAME web.service.consul."] + [f"web.service.consul. A 10.1.0.{i}" for i in (1, 2, 3)],
        cfg={"udp_answer_limit": 8}),
    "SRV to a hostname": Case("ext.service.consul", "SRV", answer=["ext.service.consul. SRV 1 1 84 example.org."]),
    "a_record_limit": Case("web.service.consul", "A", cfg={"a_record_limit": 1}),
    "node A": Case("node1.node.consul", "A", answer=["node1.node.consul. A 10.0.0.1"],
                   additional=['node1.node.consul. TXT "rack=r1"']),
    "node A with dc": Case("node1.node.dc1.consul", "A", answer=["node1.node.dc1.consul. A 10.0.0.1"]),
    "node AAAA": Case("host6.node.consul", "AAAA", answer=["host6.node.consul. AAAA 2001:db8::99"]),
    "node TXT is RFC 1464": Case("host6.node.consul", "TXT",
                                 answer=['host6.node.consul. TXT "a`=b=c"', 'host6.node.consul. TXT "v=1"']),
    "node ANY: address + meta": Case("node2.node.consul", "ANY",
                                     answer=["node2.node.consul. A 10.0.0.2", 'node2.node.consul. TXT "rack=r2"']),
    "unknown node: NXDOMAIN": Case("nobody.node.consul", "A", "NXDOMAIN", [], [SOA]),
    "node SRV: empty NOERROR without SOA": Case("node1.node.consul", "SRV", "NOERROR", [], []),
    "addr A": Case("c000020a.addr.dc1.consul", "A", answer=["c000020a.addr.dc1.consul. A 192.0.2.10"]),
    "addr AAAA": Case("20010db8000000000000000000000001.addr.consul", "AAAA",
                      answer=["20010db8000000000000000000000001.addr.consul. AAAA 2001:db8::1"]),
    "addr with other type goes to Additional": Case("c000020a.addr.consul", "TXT", answer=[],
                                                    additional=["c000020a.addr.consul. A 192.0.2.10"]),
    "addr bad hex: NXDOMAIN": Case("zz00020a.addr.consul", "A", "NXDOMAIN", [], [SOA]),
    "extra label: NXDOMAIN": Case("web.service.dc1.extra.consul", "A", "NXDOMAIN", [], [SOA]),
    "no keyword: NXDOMAIN": Case("foo.consul", "A", "NXDOMAIN", [], [SOA]),
    "bare domain A: NXDOMAIN": Case("consul", "A", "NXDOMAIN", [], [SOA]),
    "prepared query unknown: NXDOMAIN": Case("q.query.consul", "A", "NXDOMAIN", [], [SOA]),
    "SOA on the domain": Case("consul", "SOA", answer=[SOA], authority=["consul. NS consul-server.node.dc1.consul."],
                              additional=["consul-server.node.dc1.consul. A 10.0.0.9"]),
    "SOA on any name in the domain": Case("web.service.consul", "SOA", answer=[SOA],
                                          authority=["consul. NS consul-server.node.dc1.consul."]),
    "NS on the domain": Case("consul", "NS", answer=["consul. NS consul-server.node.dc1.consul."],
                             additional=["consul-server.node.dc1.consul. A 10.0.0.9"]),
    "AXFR: NOTIMP": Case("consul", "AXFR", "NOTIMP", []),
    "PTR for a node address": Case("1.0.0.10.in-addr.arpa", "PTR", answer=["1.0.0.10.in-addr.arpa. PTR node1.node.dc1.consul."]),
    "PTR for an IPv6 node": Case(
        "9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR",
        answer=["9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR host6.node.dc1.consul."]),
    "PTR for a service address": Case("2.0.1.10.in-addr.arpa", "PTR",
                                      answer=["2.0.1.10.in-addr.arpa. PTR web.service.dc1.consul."]),
    "PTR unknown without recursors: NXDOMAIN": Case("9.9.9.9.in-addr.arpa", "PTR", "NXDOMAIN", [], [SOA]),
    "outside the domain without recursors: REFUSED": Case("example.com", "A", "REFUSED", []),
    "alt domain answers in its own domain": Case(
        "db.service.alt.test", "SRV", answer=["db.service.alt.test. SRV 1 1 5432 node1.node.dc1.alt.test."],
        cfg={"alt_domain": "alt.test."}),
    "custom domain": Case("web.service.beacon", "SRV",
                          answer=[f"web.service.beacon. SRV 1 1 8080 0a01000{i}.addr.dc1.beacon." for i in (1, 2, 3)],
                          cfg={"domain": "beacon"}),
    "service TTL with a wildcard": Case("web.service.consul", "A", cfg={"service_ttl": {"w*": 30, "*": 5}}),
    "node TTL": Case("node1.node.consul", "A", cfg={"node_ttl": 12}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_router_table(case: Case) -> None:
    msg, reply = ask(case.name, case.qtype, DNSConfig(**case.cfg))
    assert RCODE[msg.header.rcode] == case.rcode
    assert msg.header.id == 4242 and msg.header.qr == 1
    assert msg.header.aa == (case.rcode != "REFUSED")
    assert msg.header.ra == 0
    assert str(msg.q.qname) == case.name + "." and QTYPE[msg.q.qtype] == case.qtype
    if case.answer is not None:
        assert rows(msg.rr) == sorted(case.answer)
    assert rows(msg.auth)[:len(case.authority)] == sorted(case.authority)[:len(msg.auth)] or not case.authority
    if case.authority:
        assert [QTYPE[a.rtype] for a in msg.auth] == [a.split()[1] for a in case.authority]
    else:
        assert msg.auth == [] or case.qtype == "SOA"
    if case.additional is not None:
        assert rows(msg.ar) == sorted(case.additional)
    if "a_record_limit" in case.cfg:
        assert len(msg.rr) == case.cfg["a_record_limit"]
    if "service_ttl" in case.cfg:
        assert {rr.ttl for rr in msg.rr} == {30}
    if "node_ttl" in case.cfg:
        assert {rr.ttl for rr in msg.rr} == {12}
    if not case.cfg and case.rcode == "NOERROR" and case.answer:
        assert {rr.ttl for rr in msg.rr} == {0}


def test_answers_rotate_through_every_order() -> None:
    orders = set()
    for variant in range(MAX_VARIANTS):
        msg, reply = ask("web.service.consul", "A", variant=variant)
        assert reply.variants == 6  # 3! orders
        orders.add(tuple(str(rr.rdata) for rr in msg.rr))
    assert len(orders) == 6


def test_many_instances_are_shuffled() -> None:
    store = web_store(10)
    firsts = {str(ask("web.service.consul", "A", store=store, edns=4096, variant=v)[0].rr[0].rdata)
              for v in range(30)}
    assert len(firsts) > 1
    assert ask("web.service.consul", "A", store=store)[1].variants == MAX_VARIANTS


# ---------------------------------------------------------------------- size limits
def test_udp_without_edns_is_cut_to_udp_answer_limit_without_tc() -> None:
    store = web_store(20)
    msg, _ = ask("web.service.consul", "A", store=store)
    assert len(msg.rr) == 3 and msg.header.tc == 0
    msg, _ = ask("web.service.consul", "SRV", store=store)
    assert len(msg.rr) == 3
    # Additional is rebuilt to match the remaining targets.
    assert sorted(str(rr.rname) for rr in msg.ar) == sorted(str(rr.rdata.target) for rr in msg.rr)


def test_enable_truncate_sets_tc_on_trimmed_udp_answers() -> None:
    store = web_store(20)
    msg, _ = ask("web.service.consul", "A", DNSConfig(enable_truncate=True), store=store)
    assert len(msg.rr) == 3 and msg.header.tc == 1
    msg, _ = ask("web.service.consul", "A", DNSConfig(enable_truncate=True), store=web_store(3))
    assert msg.header.tc == 0


def test_udp_answer_limit_is_capped_at_8() -> None:
    msg, _ = ask("web.service.consul", "A", DNSConfig(udp_answer_limit=50), store=web_store(20))
    assert len(msg.rr) == 8


def test_tcp_gets_every_answer() -> None:
    store = web_store(20)
    msg, _ = ask("web.service.consul", "A", tcp=True, store=store)
    assert len(msg.rr) == 20
    msg, _ = ask("web.service.consul", "SRV", tcp=True, store=store)
    assert len(msg.rr) == 20 and len([rr for rr in msg.ar if QTYPE[rr.rtype] == "A"]) == 20


def test_edns_lifts_the_count_cap_and_bounds_the_size() -> None:
    store = web_store(60)
    msg, _ = ask("web.service.consul", "A", edns=4096, store=store)
    assert len(msg.rr) == 60
    opt = [rr for rr in msg.ar if rr.rtype == 41]
    assert len(opt) == 1 and opt[0].rclass == 4096
    _, reply = ask("web.service.consul", "SRV", edns=1232, store=store)
    assert len(reply.wire) <= 1232
    msg = DNSRecord.parse(reply.wire)
    assert 1 < len(msg.rr) < 60


def test_responses_without_edns_fit_512_bytes() -> None:
    store = StateStore_with_long_names()
    _, reply = ask("a-rather-long-service-name-for-testing.service.consul", "SRV", store=store,
                   cfg=DNSConfig(udp_answer_limit=8))
    assert len(reply.wire) <= 512


def StateStore_with_long_names() -> Any:
    from beacon.server.fsm import StateStore
    store = StateStore()
    for i in range(20):
        register(store, f"a-very-long-node-name-number-{i:03d}-in-the-datacenter", f"10.9.0.{i + 1}",
                 {"service": "a-rather-long-service-name-for-testing", "port": 1000 + i})
    return store


def test_edns_client_subnet_is_echoed_with_scope_zero() -> None:
    q = DNSRecord.question("web.service.consul", "A")
    ecs = struct.pack("!HBB", 1, 24, 0) + bytes([192, 0, 2])
    q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(8, ecs)]))
    reply = route(q.pack(), Context(STORE, DNSConfig()))
    msg = DNSRecord.parse(reply.wire)
    (opt,) = [rr for rr in msg.ar if rr.rtype == 41]
    (option,) = opt.rdata
    assert option.code == 8 and option.data == struct.pack("!HBB", 1, 24, 0) + bytes([192, 0, 2])


def test_disable_compression_sends_plain_names() -> None:
    _, plain = ask("web.service.consul", "SRV", DNSConfig(disable_compression=True))
    _, packed = ask("web.service.consul", "SRV")
    assert len(plain.wire) > len(packed.wire)
    assert DNSRecord.parse(plain.wire).rr


# ---------------------------------------------------------------------- recursion and malformed input
def test_recursors_set_ra_and_forward_outside_names() -> None:
    cfg = DNSConfig(recursors=("127.0.0.1:5353",))
    reply = route(query("example.com"), Context(STORE, cfg))
    assert reply.action is Action.RECURSE and not reply.cacheable
    fail = DNSRecord.parse(reply.wire)  # what to send if every recursor fails
    assert RCODE[fail.header.rcode] == "SERVFAIL" and fail.header.ra == 1
    msg, _ = ask("web.service.consul", "A", cfg)
    assert msg.header.ra == 1 and msg.header.aa == 1
    reply = route(query("9.9.9.9.in-addr.arpa", "PTR"), Context(STORE, cfg))
    assert reply.action is Action.RECURSE


def header(data: bytes) -> tuple[int, int, int]:
    ident, flags, qd = struct.unpack("!3H", data[:6])
    return ident, flags, qd


@pytest.mark.parametrize("data,rcode", [
    (struct.pack("!6H", 7, 0x0100, 0, 0, 0, 0), "FORMERR"),                       # no question
    (struct.pack("!6H", 7, 0x0100, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2, "FORMERR"),  # two questions
    (struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + b"\x03web\x07serv", "FORMERR"),  # truncated question
    (struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", "FORMERR"),  # pointer loop
    (struct.pack("!6H", 7, 0x0100, 1, 0, 0, 5) + query("a.consul")[12:], "FORMERR"),  # ARCOUNT > 2
    (struct.pack("!6H", 7, 0x2900, 1, 0, 0, 0) + query("a.consul")[12:], "NOTIMP"),  # UPDATE opcode
])
def test_malformed_requests_get_an_error_reply(data: bytes, rcode: str) -> None:
    reply = route(data, Context(STORE, DNSConfig()))
    assert reply.action is Action.ANSWER
    msg = DNSRecord.parse(reply.wire)
    assert msg.header.id == 7 and msg.header.qr == 1 and RCODE[msg.header.rcode] == rcode
    assert msg.header.rd == 1


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x00" * 11, query("web.service.consul")[:2] + b"\x81\x80" +
                                  query("web.service.consul")[4:]])
def test_unanswerable_packets_are_dropped(data: bytes) -> None:
    """Shorter than a header, or a response (answering one could loop): miekg/dns drops these too."""
    assert route(data, Context(STORE, DNSConfig())).action is Action.DROP


def test_servfail_for_a_bad_request_still_carries_its_id() -> None:
    data = struct.pack("!6H", 99, 0x0100, 1, 0, 0, 0) + b"\xff"
    assert header(servfail_for(data, Context(STORE, DNSConfig())))[0] == 99


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1)
    ctx = Context(STORE, DNSConfig())
    base = query("web.service.consul", "SRV", edns=1232)
    for _ in range(2000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            data = bytearray(base)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[:rng.randrange(len(data) + 1)])
        reply = route(data, ctx)
        if reply.action is Action.ANSWER:
            assert reply.wire[:2] == data[:2]


def test_udp_reply_never_exceeds_the_client_limit() -> None:
    from beacon.server.fsm import StateStore
    store = StateStore()
    register(store, "meta", "10.0.0.1", node_meta={f"key{i:02d}": "v" * 40 for i in range(30)})
    _, reply = ask("meta.node.consul", "A", store=store)
    msg = DNSRecord.parse(reply.wire)
    assert len(reply.wire) <= 512 and msg.header.tc == 0
    assert rows(msg.rr) == ["meta.node.consul. A 10.0.0.1"] and 0 < len(msg.ar) < 30
    msg, _ = ask("meta.node.consul", "TXT", store=store)
    assert len(msg.rr) == 3  # Consul's answer cap applies to TXT answers too
    register(store, "big", "10.0.0.2", node_meta={"blob": "x" * 700})
    _, reply = ask("big.node.consul", "TXT", store=store)
    msg = DNSRecord.parse(reply.wire)
    assert len(reply.wire) <= 512 and msg.header.tc == 1 and msg.rr == []
    msg, _ = ask("big.node.consul", "TXT", store=store, tcp=True)
    assert len(msg.rr) == 1 and msg.header.tc == 0
    _, reply = ask("big.node.consul", "TXT", store=store, edns=4096)
    assert len(DNSRecord.parse(reply.wire).rr) == 1
