"""A server's DNS engines for client agents' tokens (beacon.agent.dnsrpc.TokenEngines), in process:
answers never cross tokens (each token has its own caches), the number of engines is bounded, and
an ACL change drops them all."""

from __future__ import annotations

import asyncio
import datetime
import uuid

from dnslib import QTYPE, RCODE, DNSRecord

from beacon.acl import state as acl_state
from beacon.acl.dns_view import ACLStore
from beacon.acl.resolver import ACLConfig, Resolver
from beacon.agent import dnsrpc
from beacon.agent.dnsrpc import TokenEngines
from beacon.dns import DNSConfig, DNSServer
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore
from tests.dns.dnshelpers import query, register


def _store_with_tokens() -> tuple[StateStore, dict[str, str]]:
    store = StateStore()
    acl_state.install(store)
    register(store, "n-web", "10.1.1.1", {"service": "web", "port": 80})
    register(store, "n-db", "10.1.1.2", {"service": "db", "port": 80})
    secrets = {}
    for name in ("web", "db"):
        pid = str(uuid.uuid4())
        assert store.apply(cmd.encode(cmd.ACLPolicySet(policy={
            "ID": pid, "Name": f"read-{name}",
            "Rules": f'service "{name}" {{ policy = "read" }}\nnode_prefix "" {{ policy = "read" }}'}))).error is None
        secrets[name] = str(uuid.uuid4())
        assert store.apply(cmd.encode(cmd.ACLTokenSet(token={
            "AccessorID": str(uuid.uuid4()), "SecretID": secrets[name],
            "Policies": [{"ID": pid, "Name": f"read-{name}"}]}))).error is None
    return store, secrets


def _engines(store: StateStore, acl: bool = True) -> TokenEngines:
    resolver = Resolver(ACLConfig(enabled=True, default_policy="deny"), "srv", store=store) if acl else None
    main = DNSServer(ACLStore(store, resolver) if resolver is not None else store,
                     DNSConfig.from_consul_json({}, domain="consul", datacenter="dc1", node_name="srv"))
    return TokenEngines(main, store, resolver)


def _addrs(wire: bytes | None) -> tuple[str, set[str]]:
    assert wire is not None
    reply = DNSRecord.parse(wire)
    return RCODE[reply.header.rcode], {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


def test_answers_never_cross_tokens_even_from_the_caches() -> None:
    store, secrets = _store_with_tokens()
    engines = _engines(store)

    async def run() -> None:
        for _ in range(3):  # the second and third rounds answer from each token's cache
            for tcp in (False, True):
                assert _addrs(await engines.answer(query("web.service.consul"), tcp, secrets["web"])) == \
                    ("NOERROR", {"10.1.1.1"})
                assert _addrs(await engines.answer(query("web.service.consul"), tcp, secrets["db"]))[1] == set()
                assert _addrs(await engines.answer(query("db.service.consul"), tcp, secrets["db"])) == \
                    ("NOERROR", {"10.1.1.2"})
                assert _addrs(await engines.answer(query("db.service.consul"), tcp, ""))[0] == "NXDOMAIN"
                unknown = str(uuid.uuid4())  # names no token: grants nothing
                assert _addrs(await engines.answer(query("web.service.consul"), tcp, unknown))[1] == set()

    asyncio.run(run())


def test_engines_are_bounded_and_dropped_on_acl_changes() -> None:
    store, secrets = _store_with_tokens()
    engines = _engines(store)

    async def run() -> None:
        for _ in range(dnsrpc.MAX_VIEWS + 40):
            await engines.answer(query("web.service.consul"), False, str(uuid.uuid4()))
        assert len(engines) == dnsrpc.MAX_VIEWS
        # The least recently used go first: a token in use keeps its engine.
        web = engines.engine(secrets["web"])
        for _ in range(dnsrpc.MAX_VIEWS - 1):
            engines.engine(str(uuid.uuid4()))
        assert engines.engine(secrets["web"]) is web
        # Any ACL write drops every engine; the token's rights are read afresh.
        pid = str(uuid.uuid4())
        assert store.apply(cmd.encode(cmd.ACLPolicySet(policy={
            "ID": pid, "Name": "unrelated", "Rules": 'key_prefix "" { policy = "read" }'}))).error is None
        assert engines.engine(secrets["web"]) is not web
        assert len(engines) == 1

    asyncio.run(run())


def test_dropped_messages_get_no_answer_and_acls_off_uses_the_main_engine() -> None:
    store, secrets = _store_with_tokens()

    async def run() -> None:
        engines = _engines(store)
        response = bytes(DNSRecord.question("web.service.consul").reply().pack())
        assert await engines.answer(response, False, secrets["web"]) is None  # a response: dropped
        off = _engines(store, acl=False)
        assert off.engine(secrets["db"]) is off.main
        assert _addrs(await off.answer(query("web.service.consul"), False, secrets["db"])) == \
            ("NOERROR", {"10.1.1.1"})

    asyncio.run(run())


def test_an_expiring_token_stops_reading_at_its_expiration_time_even_from_the_cache() -> None:
    store, _ = _store_with_tokens()
    now = [1_800_000_000.0]
    secret = str(uuid.uuid4())
    pol = next(p for p in acl_state.policies(store).values() if p["Name"] == "read-web")
    assert store.apply(cmd.encode(cmd.ACLTokenSet(token={
        "AccessorID": str(uuid.uuid4()), "SecretID": secret, "Policies": [{"ID": pol["ID"], "Name": "read-web"}],
        "ExpirationTime": datetime.datetime.fromtimestamp(now[0] + 60, datetime.UTC).isoformat()}))).error is None
    resolver = Resolver(ACLConfig(enabled=True, default_policy="deny"), "srv", store=store, clock=lambda: now[0])
    main = DNSServer(ACLStore(store, resolver), DNSConfig.from_consul_json({}, domain="consul", datacenter="dc1",
                                                                           node_name="srv"))
    engines = TokenEngines(main, store, resolver)

    async def run() -> None:
        for _ in range(2):  # the second from the cache
            assert _addrs(await engines.answer(query("web.service.consul"), False, secret))[1] == {"10.1.1.1"}
        now[0] += 61  # no write at all: only the clock moved
        assert _addrs(await engines.answer(query("web.service.consul"), False, secret))[1] == set()

    asyncio.run(run())
