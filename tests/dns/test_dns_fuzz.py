"""Generated DNS messages against a real agent: every query is answered consistently, junk never
stops the listener.

Hypothesis builds queries around the names the agent serves (services, tags, RFC 2782 names,
nodes, ``.addr``, reverse names, prepared queries, upper case, long labels, other domains) with
random types, classes, opcodes, flags and EDNS, and byte-level mutations of them. Properties:

* a query that parses gets one answer with its ID and the question echoed, over UDP and TCP;
* asking again (the cached answer, over UDP) and over TCP gives the same rcode and the same records
  (order aside: answers rotate);
* after any of it, including truncated and corrupted messages, the agent still answers.

The agent has no recursors, so names outside its domain are refused and nothing leaves loopback.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from dnslib import EDNS0, QTYPE, RR, DNSHeader, DNSQuestion, DNSRecord, EDNSOption
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.conftest import launch

pytestmark = pytest.mark.integration

LABELS = ["web", "WEB", "Web", "db", "primary", "secondary", "_web", "_tcp", "_udp", "_primary", "service",
          "SERVICE", "node", "n1", "n2", "consul", "CONSUL", "query", "addr", "7f000001", "7f000002",
          "in-addr", "arpa", "1", "0", "127", "dc1", "dc2", "connect", "virtual", "ingress", "x" * 63,
          "example", "com", "a-b", "_", "*", "nope"]
TAILS = ["", ".consul", ".service.consul", ".node.consul", ".query.consul", ".in-addr.arpa",
         ".service.dc1.consul", ".addr.dc1.consul"]
TYPES = ["A", "AAAA", "SRV", "ANY", "TXT", "PTR", "SOA", "NS", "CNAME", "MX"]


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=0, max_size=5))
    name = ".".join(labels) + draw(st.sampled_from(TAILS))
    name = name.lstrip(".") or "."
    assume(len(name) <= 253)  # longer names cannot be written in a message
    qtype = draw(st.one_of(st.sampled_from(TYPES).map(lambda t: getattr(QTYPE, t)),
                           st.integers(min_value=0, max_value=65535)))
    qclass = draw(st.sampled_from([1, 1, 1, 3, 255, 254, 42]))  # IN, CH, ANY, NONE, unassigned
    header = DNSHeader(id=draw(st.integers(0, 65535)), rd=draw(st.booleans()), ad=draw(st.booleans()),
                       cd=draw(st.booleans()), opcode=draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4, 5, 15])))
    msg = DNSRecord(header, q=DNSQuestion(name, qtype, qclass))
    edns = draw(st.sampled_from([None, 512, 1232, 4096, 65535]))
    if edns is not None:
        opts = [EDNSOption(10, b"\x01" * 8)] if draw(st.booleans()) else []  # a client cookie
        msg.add_ar(EDNS0(udp_len=edns, flags="do" if draw(st.booleans()) else "", opts=opts))
    return msg.pack()


def _udp(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _tcp(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", _exactly(s, 2))[0]
        return _exactly(s, size)


def _exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the agent closed the TCP connection mid-answer"
        buf += chunk
    return buf


def _records(rrs: list[RR]) -> list[tuple[str, int, int, str]]:
    return sorted((str(r.rname).lower(), r.rtype, r.rclass, _rdata(r)) for r in rrs if r.rtype != QTYPE.OPT)


def _rdata(r: RR) -> str:
    """An SOA serial is the current Unix second (as in Consul), so two answers may differ by a tick
    there; check it is that clock and compare the rest."""
    if r.rtype != QTYPE.SOA:
        return str(r.rdata)
    assert abs(r.rdata.times[0] - time.time()) < 30, r
    return f"{r.rdata.mname} {r.rdata.rname} {list(r.rdata.times[1:])}"


def _summary(msg: DNSRecord) -> tuple:
    """What must not differ between two answers to one query: rcode, flags, every section (sorted)."""
    h = msg.header
    return (h.rcode, h.aa, h.tc, h.ra, _records(msg.rr), _records(msg.auth))


@pytest.fixture(scope="module")
def agent():
    a = launch()
    try:
        for i, (node, tags) in enumerate((("n1", ["primary"]), ("n2", ["secondary"]))):
            a.json("PUT", "/v1/catalog/register", {
                "Node": node, "Address": f"127.0.0.{i + 1}",
                "Service": {"ID": "web", "Service": "web", "Port": 8080 + i, "Tags": tags}})
        a.json("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "127.0.0.1",
                                               "Service": {"ID": "db", "Service": "db", "Port": 5432}})
        a.json("POST", "/v1/query", {"Name": "webq", "Service": {"Service": "web"}})
        assert _udp(a.dns_port, DNSRecord.question("web.service.consul").pack()) is not None  # armed
        yield a
    finally:
        a.stop()


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(q=queries())
def test_a_query_gets_the_same_answer_again_and_over_tcp(agent, q) -> None:
    asked = DNSRecord.parse(q)
    first = _udp(agent.dns_port, q)
    assert first is not None, asked
    a1 = DNSRecord.parse(first)
    assert a1.header.id == asked.header.id and a1.header.qr == 1, (asked, a1)
    if a1.questions:  # FORMERR/NOTIMP answers may leave the question out
        assert [str(x.qname).lower() for x in a1.questions] == [str(x.qname).lower() for x in asked.questions]
    again = DNSRecord.parse(_udp(agent.dns_port, q) or b"")
    assert _summary(again) == _summary(a1), (asked, a1, again)
    over_tcp = DNSRecord.parse(_tcp(agent.dns_port, q))
    assert over_tcp.header.id == asked.header.id
    if not a1.header.tc:
        assert _summary(over_tcp)[:1] + _summary(over_tcp)[4:] == _summary(a1)[:1] + _summary(a1)[4:], \
            (asked, a1, over_tcp)


@SETTINGS
@given(q=queries(), cut=st.integers(0, 600), flips=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 255)),
                                                           max_size=3))
def test_cut_and_corrupted_messages_never_stop_the_listener(agent, q, cut, flips) -> None:
    data = bytearray(q[:cut] if cut < len(q) else q)
    for pos, mask in flips:
        if pos < len(data):
            data[pos] ^= mask
    reply = _udp(agent.dns_port, bytes(data), timeout=0.1)  # loopback answers take well under 1 ms
    if reply is not None:
        assert len(data) >= 2 and reply[:2] == bytes(data[:2])  # an answer only ever to this message's ID
        DNSRecord.parse(reply)  # and one that parses
    with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(data)) + bytes(data))
    ok = DNSRecord.parse(_udp(agent.dns_port, DNSRecord.question("db.service.consul").pack()) or b"")
    assert [str(r.rdata) for r in ok.rr] == ["127.0.0.1"]
