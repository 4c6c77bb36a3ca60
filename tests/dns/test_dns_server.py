"""The server on real loopback sockets, asked by the real `dig` and by raw UDP/TCP clients."""

from __future__ import annotations

import asyncio
import socket
import struct

from dnshelpers import (
    STEP,
    dig,
    dig_answers,
    dig_section,
    free_udp_port,
    needs_dig,
    query,
    register,
    tcp_exchange,
    udp_exchange,
    web_store,
)
from dnslib import QTYPE, RCODE, DNSRecord

from beacon.dns import DNSConfig, DNSServer
from beacon.server.fsm import MessageType, StateStore


def status(out: str) -> str:
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    raise AssertionError("no status in dig output:\n" + out)


def flags(out: str) -> set[str]:
    for line in out.splitlines():
        if line.startswith(";; flags:"):
            return set(line.split(";")[2].split(":")[1].split())
    raise AssertionError("no flags in dig output:\n" + out)


# ---------------------------------------------------------------------- dig
@needs_dig
async def test_dig_srv_with_glue(served) -> None:
    store = web_store(2)
    register(store, "node1", "10.0.0.1", {"service": "db", "port": 5432})
    _, port = await served(store)
    out = await dig(port, "web.service.consul", "SRV")
    assert status(out) == "NOERROR" and {"qr", "aa"} <= flags(out) and "ra" not in flags(out)
    srv = sorted(r[4:] for r in dig_answers(out))
    assert srv == [["1", "1", "8080", "0a010001.addr.dc1.consul."], ["1", "1", "8080", "0a010002.addr.dc1.consul."]]
    glue = {r[0]: r[4] for r in dig_section(out, "ADDITIONAL") if r[3] == "A"}
    assert glue == {"0a010001.addr.dc1.consul.": "10.1.0.1", "0a010002.addr.dc1.consul.": "10.1.0.2"}

    out = await dig(port, "_db._tcp.service.consul", "SRV")
    assert [r[4:] for r in dig_answers(out)] == [["1", "1", "5432", "node1.node.dc1.consul."]]
    assert ["node1.node.dc1.consul.", "0", "IN", "A", "10.0.0.1"] in dig_section(out, "ADDITIONAL")


@needs_dig
async def test_dig_a_aaaa_any_txt_tags_and_nodes(served) -> None:
    store = web_store(3)
    register(store, "host6", "2001:db8::5", {"service": "v6", "port": 80}, node_meta={"env": "prod"})
    _, port = await served(store)
    out = await dig(port, "web.service.consul")
    assert sorted(r[4] for r in dig_answers(out)) == ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    assert {r[1] for r in dig_answers(out)} == {"0"}
    assert [r[4] for r in dig_answers(await dig(port, "v2.web.service.consul"))] == ["10.1.0.2"]
    assert [r[4] for r in dig_answers(await dig(port, "v6.service.consul", "AAAA"))] == ["2001:db8::5"]
    assert len(dig_answers(await dig(port, "web.service.consul", "ANY"))) == 3
    assert len(dig_answers(await dig(port, "web.service.consul", "TXT"))) == 3
    out = await dig(port, "host6.node.consul", "ANY")
    assert sorted(r[3] for r in dig_answers(out)) == ["AAAA", "TXT"]
    out = await dig(port, "host6.node.consul", "TXT")
    assert dig_answers(out)[0][4] == '"env=prod"'
    out = await dig(port, "NODE1.node.dc1.consul", "A")
    assert dig_answers(out) == [["NODE1.node.dc1.consul.", "0", "IN", "A", "10.0.0.1"]]


@needs_dig
async def test_dig_negative_answers_and_soa(served) -> None:
    _, port = await served(web_store(1))
    out = await dig(port, "nosuch.service.consul")
    assert status(out) == "NXDOMAIN" and "aa" in flags(out)
    (soa,) = dig_section(out, "AUTHORITY")
    assert soa[0] == "consul." and soa[3] == "SOA" and soa[4:6] == ["ns.consul.", "hostmaster.consul."]
    assert soa[7:] == ["3600", "600", "86400", "0"]
    out = await dig(port, "web.service.consul", "AAAA")
    assert status(out) == "NOERROR" and dig_answers(out) == []
    assert dig_section(out, "AUTHORITY")[0][3] == "SOA"
    out = await dig(port, "consul", "SOA")
    assert dig_answers(out)[0][3] == "SOA"
    assert status(await dig(port, "nobody.node.consul")) == "NXDOMAIN"
    out = await dig(port, "node1.node.consul", "SRV")
    assert status(out) == "NOERROR" and dig_answers(out) == [] and dig_section(out, "AUTHORITY") == []


@needs_dig
async def test_dig_reverse_lookup(served) -> None:
    _, port = await served(web_store(2))
    out = await dig(port, "-x", "10.0.0.2")
    assert dig_answers(out)[0][3:] == ["PTR", "node2.node.dc1.consul."]
    out = await dig(port, "-x", "10.1.0.1")
    assert dig_answers(out)[0][3:] == ["PTR", "web.service.dc1.consul."]
    assert status(await dig(port, "-x", "192.0.2.99")) == "NXDOMAIN"


@needs_dig
async def test_health_filtering(served) -> None:
    store = StateStore()
    register(store, "ok", "10.0.0.1", {"service": "api", "port": 1},
             checks=[{"check_id": "c", "status": "passing", "service_id": "api"}])
    register(store, "warn", "10.0.0.2", {"service": "api", "port": 1},
             checks=[{"check_id": "c", "status": "warning", "service_id": "api"}])
    register(store, "bad", "10.0.0.3", {"service": "api", "port": 1},
             checks=[{"check_id": "c", "status": "critical", "service_id": "api"}])
    register(store, "deadnode", "10.0.0.4", {"service": "api", "port": 1},
             checks=[{"check_id": "serfHealth", "status": "critical"}])
    register(store, "down", "10.0.0.5", {"service": "gone", "port": 1},
             checks=[{"check_id": "c", "status": "critical", "service_id": "gone"}])
    _, port = await served(store)
    assert sorted(r[4] for r in dig_answers(await dig(port, "api.service.consul"))) == ["10.0.0.1", "10.0.0.2"]
    assert status(await dig(port, "gone.service.consul")) == "NXDOMAIN"

    _, strict_port = await served(store, DNSConfig(only_passing=True))
    assert [r[4] for r in dig_answers(await dig(strict_port, "api.service.consul"))] == ["10.0.0.1"]


@needs_dig
async def test_truncation_over_udp_and_full_answers_over_tcp(served) -> None:
    store = web_store(20)
    _, port = await served(store)
    out = await dig(port, "web.service.consul", "+noedns")
    assert len(dig_answers(out)) == 3 and "tc" not in flags(out)
    out = await dig(port, "web.service.consul", "+tcp")
    assert len(dig_answers(out)) == 20
    out = await dig(port, "web.service.consul", "SRV", "+tcp")
    assert len(dig_answers(out)) == 20

    _, tc_port = await served(store, DNSConfig(enable_truncate=True))
    out = await dig(tc_port, "web.service.consul", "+noedns", "+ignore")
    assert "tc" in flags(out) and len(dig_answers(out)) == 3
    out = await dig(tc_port, "web.service.consul", "+noedns")  # dig retries over TCP on TC
    assert len(dig_answers(out)) == 20


@needs_dig
async def test_edns(served) -> None:
    _, port = await served(web_store(20))
    out = await dig(port, "web.service.consul", "+bufsize=4096")
    assert len(dig_answers(out)) == 20
    assert "; EDNS: version: 0" in out and "udp: 4096" in out
    out = await dig(port, "web.service.consul", "+subnet=192.0.2.0/24")
    assert "CLIENT-SUBNET: 192.0.2.0/24/0" in out


@needs_dig
async def test_answers_are_shuffled(served) -> None:
    _, port = await served(web_store(5))
    firsts = set()
    for _ in range(12):
        firsts.add(dig_answers(await dig(port, "web.service.consul", "+noedns", "+nocookie"))[0][4])
    assert len(firsts) > 1


# ---------------------------------------------------------------------- recursion
@needs_dig
async def test_forwarding_to_a_recursor(served, upstream) -> None:
    up = await upstream({"example.com.": "example.com. 60 IN A 192.0.2.7"})
    _, port = await served(web_store(1), DNSConfig(recursors=(f"127.0.0.1:{up.port}",)))
    out = await dig(port, "example.com")
    assert status(out) == "NOERROR" and "ra" in flags(out)
    assert dig_answers(out) == [["example.com.", "60", "IN", "A", "192.0.2.7"]]
    out = await dig(port, "nosuch.example.com")
    assert status(out) == "NXDOMAIN"
    await dig(port, "example.com", "+tcp")
    assert ("example.com.", "A", True) in up.queries  # same transport as the client
    # Local names are still answered locally, with RA set.
    out = await dig(port, "web.service.consul")
    assert "ra" in flags(out) and "aa" in flags(out)
    assert all(q[0] != "web.service.consul." for q in up.queries)
    # A PTR nobody in the catalog owns goes to the recursor too.
    await dig(port, "-x", "192.0.2.1")
    assert ("1.2.0.192.in-addr.arpa.", "PTR", False) in up.queries


@needs_dig
async def test_no_recursors_means_refused(served) -> None:
    _, port = await served(web_store(1))
    out = await dig(port, "example.com")
    assert status(out) == "REFUSED" and "ra" not in flags(out)


@needs_dig
async def test_failing_recursors_fall_through_then_servfail(served, upstream) -> None:
    broken = await upstream(rcode=2)  # answers SERVFAIL: try the next one
    good = await upstream({"example.com.": "example.com. 5 IN A 192.0.2.8"})
    dead = free_udp_port()
    cfg = DNSConfig(recursors=(f"127.0.0.1:{dead}", f"127.0.0.1:{broken.port}", f"127.0.0.1:{good.port}"),
                    recursor_timeout=0.5)
    _, port = await served(web_store(1), cfg)
    out = await dig(port, "example.com")
    assert dig_answers(out) == [["example.com.", "5", "IN", "A", "192.0.2.8"]]
    assert broken.queries and good.queries

    _, bad_port = await served(web_store(1), DNSConfig(recursors=(f"127.0.0.1:{broken.port}",
                                                                  f"127.0.0.1:{dead}"), recursor_timeout=0.5))
    out = await dig(bad_port, "example.com")
    assert status(out) == "SERVFAIL" and "ra" in flags(out)


async def test_recursor_is_an_injectable_interface(served) -> None:
    class Fake:
        def __init__(self) -> None:
            self.seen: list[tuple[bytes, bool]] = []

        async def resolve(self, q: bytes, tcp: bool) -> bytes | None:
            self.seen.append((q, tcp))
            reply = DNSRecord.parse(q).reply()
            reply.add_answer(*__import__("dnslib").RR.fromZone("elsewhere.test. 1 IN A 192.0.2.1"))
            return reply.pack()

    fake = Fake()
    _, port = await served(web_store(1), DNSConfig(recursors=("127.0.0.1:1",)), recursor=fake)
    msg = DNSRecord.parse(await udp_exchange(port, query("elsewhere.test")))
    assert str(msg.rr[0].rdata) == "192.0.2.1" and fake.seen[0][1] is False


# ---------------------------------------------------------------------- robustness
async def test_garbage_then_a_normal_query_is_answered(served) -> None:
    _, port = await served(web_store(2))
    good = query("web.service.consul", ident=0x1234)
    for junk in (b"", b"\x00", b"\xff" * 5, b"\x12\x34" + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6 + b"\x05ab",
                 good[:20], bytes(range(256)), good[:2] + b"\x81\x80" + good[4:]):
        await udp_exchange(port, junk, timeout=0.05)
    reply = await udp_exchange(port, struct.pack("!6H", 9, 0x0100, 0, 0, 0, 0))
    assert reply is not None and RCODE[DNSRecord.parse(reply).header.rcode] == "FORMERR"
    reply = await udp_exchange(port, good)
    assert reply is not None
    msg = DNSRecord.parse(reply)
    assert msg.header.id == 0x1234 and len(msg.rr) == 2

    # TCP: a junk frame gets FORMERR on the same connection, then a good one is answered.
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        junk = struct.pack("!6H", 5, 0x0100, 1, 0, 0, 0) + b"\x07broken"
        writer.write(struct.pack("!H", len(junk)) + junk + struct.pack("!H", len(good)) + good)
        await writer.drain()
        replies = []
        for _ in range(2):
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            replies.append(DNSRecord.parse(await reader.readexactly(size)))
        writer.close()
    assert RCODE[replies[0].header.rcode] == "FORMERR" and replies[0].header.id == 5
    assert replies[1].header.id == 0x1234 and len(replies[1].rr) == 2


async def test_cache_sees_catalog_changes(served) -> None:
    store = web_store(2)
    server, port = await served(store)
    q = query("web.service.consul", "A", edns=1232)
    for _ in range(4):  # warm every answer order into the cache
        await udp_exchange(port, q)
    assert q[2:] in server.udp_cache.entries
    register(store, "node9", "10.0.0.9", {"service": "web", "port": 8080, "address": "10.1.0.9"})
    msg = DNSRecord.parse(await udp_exchange(port, q))
    assert "10.1.0.9" in {str(rr.rdata) for rr in msg.rr}
    store.apply((MessageType.DEREGISTER, {"node": "node9", "service_id": "web"}))
    for _ in range(3):
        msg = DNSRecord.parse(await udp_exchange(port, q))
        assert "10.1.0.9" not in {str(rr.rdata) for rr in msg.rr}
    # A check turning critical drops the instance from the next answer too.
    store.apply((MessageType.CHECK_STATUS, {"node": "node2", "check_id": "serfHealth", "status": "critical"}))
    msg = DNSRecord.parse(await tcp_exchange(port, q))
    assert {str(rr.rdata) for rr in msg.rr} == {"10.1.0.1"}


async def test_cached_answers_keep_the_request_id_and_rotate(served) -> None:
    server, port = await served(web_store(3))
    orders = set()
    for i in range(20):
        msg = DNSRecord.parse(await udp_exchange(port, query("web.service.consul", ident=i)))
        assert msg.header.id == i
        orders.add(tuple(str(rr.rdata) for rr in msg.rr))
    assert len(orders) == 6  # every order of 3 instances, in turn
    assert len(server.udp_cache.entries) == 1


async def test_start_on_ephemeral_port_and_stop() -> None:
    server = DNSServer(web_store(1), DNSConfig())
    async with asyncio.timeout(STEP):
        udp_port, tcp_port = await server.start("127.0.0.1", 0)
    assert udp_port == tcp_port > 0
    async with asyncio.timeout(STEP):
        await server.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp_port))  # released


async def test_ipv6_loopback(served) -> None:
    if not socket.has_ipv6:
        return
    server = DNSServer(web_store(1), DNSConfig())
    try:
        async with asyncio.timeout(STEP):
            port, _ = await server.start("::1", 0)
    except OSError:
        return  # no IPv6 loopback in this environment
    try:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, d: bytes, addr: object) -> None:
                got.done() or got.set_result(d)

        transport, _ = await loop.create_datagram_endpoint(P, remote_addr=("::1", port))
        transport.sendto(query("web.service.consul"))
        async with asyncio.timeout(STEP):
            msg = DNSRecord.parse(await got)
        transport.close()
        assert QTYPE[msg.rr[0].rtype] == "A"
    finally:
        async with asyncio.timeout(STEP):
            await server.stop()


async def test_reload_swaps_config_and_drops_cached_answers(served, upstream) -> None:
    up = await upstream({"example.com.": "example.com. 60 IN A 192.0.2.7"})
    server, port = await served(web_store(1))
    refused = DNSRecord.parse(await udp_exchange(port, query("example.com")))
    assert RCODE[refused.header.rcode] == "REFUSED"
    before = DNSRecord.parse(await udp_exchange(port, query("web.service.consul")))
    assert before.rr[0].ttl == 0 and before.header.ra == 0
    server.reload(DNSConfig(recursors=(f"127.0.0.1:{up.port}",), service_ttl={"*": 9}))
    forwarded = DNSRecord.parse(await udp_exchange(port, query("example.com")))
    assert str(forwarded.rr[0].rdata) == "192.0.2.7"
    after = DNSRecord.parse(await udp_exchange(port, query("web.service.consul")))
    assert after.rr[0].ttl == 9 and after.header.ra == 1


@needs_dig
async def test_a_cname_target_outside_the_domain_is_resolved_through_the_recursors(served, upstream) -> None:
    up = await upstream({"db.example.net.": "db.example.net. 30 IN A 192.0.2.40",
                         "lb.example.net.": "lb.example.net. 30 IN CNAME db.example.net.\n"
                                            "db.example.net. 30 IN A 192.0.2.40"})
    store = web_store(1)
    register(store, "ext", "10.9.9.9", {"service": "db", "port": 5432, "address": "db.example.net"})
    register(store, "ext2", "10.9.9.8", {"service": "lb", "port": 443, "address": "lb.example.net"})
    _, port = await served(store, DNSConfig(recursors=(f"127.0.0.1:{up.port}",)))
    out = await dig(port, "db.service.consul")
    assert status(out) == "NOERROR"
    assert dig_answers(out) == [["db.service.consul.", "0", "IN", "CNAME", "db.example.net."],
                                ["db.example.net.", "30", "IN", "A", "192.0.2.40"]]
    assert ("db.example.net.", "A", False) in up.queries
    # A chain of CNAMEs outside the domain comes back whole.
    out = await dig(port, "lb.service.consul")
    assert [a[3] for a in dig_answers(out)] == ["CNAME", "CNAME", "A"]
    # SRV: the target is the external name, its address rides along as glue.
    out = await dig(port, "db.service.consul", "SRV")
    assert dig_answers(out) == [["db.service.consul.", "0", "IN", "SRV", "1", "1", "5432", "db.example.net."]]
    assert ["db.example.net.", "30", "IN", "A", "192.0.2.40"] in dig_section(out, "ADDITIONAL")
    # An unresolvable target leaves the CNAME alone, still NOERROR.
    register(store, "ext3", "10.9.9.7", {"service": "gone", "port": 1, "address": "nosuch.example.net"})
    out = await dig(port, "gone.service.consul")
    assert status(out) == "NOERROR"
    assert dig_answers(out) == [["gone.service.consul.", "0", "IN", "CNAME", "nosuch.example.net."]]


@needs_dig
async def test_without_recursors_an_external_cname_target_is_left_to_the_client(served) -> None:
    store = web_store(1)
    register(store, "ext", "10.9.9.9", {"service": "db", "port": 5432, "address": "db.example.net"})
    _, port = await served(store)
    out = await dig(port, "db.service.consul")
    assert dig_answers(out) == [["db.service.consul.", "0", "IN", "CNAME", "db.example.net."]]
