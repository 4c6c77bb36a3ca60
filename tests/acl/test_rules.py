"""Consul's rule language and authorizer semantics, and the ACL tables through the state machine."""

from __future__ import annotations

import pytest

from beacon.acl import state
from beacon.acl.authorizer import Authorizer
from beacon.acl.resolver import ACLConfig, ACLNotFound, Resolver
from beacon.acl.rules import RuleError, Rules, node_identity, parse, service_identity
from beacon.server import sessions
from beacon.server.fsm import MessageType, StateStore

HCL = """
key_prefix "app/" { policy = "write" }
key_prefix "app/ro/" { policy = "read" }
key "app/secret" {
  policy = "deny"
}
key_prefix "" { policy = "list" }
service_prefix "web" { policy = "read" }
service "web-admin" { policy = "deny" }
node_prefix "" { policy = "read" }
operator = "read"
keyring = "write"
"""


def test_hcl_and_json_give_the_same_rules() -> None:
    as_json = parse("""{"key_prefix": {"app/": {"policy": "write"}, "app/ro/": {"policy": "read"},
                                       "": {"policy": "list"}},
                        "key": {"app/secret": {"policy": "deny"}},
                        "service_prefix": {"web": {"policy": "read"}},
                        "service": {"web-admin": {"policy": "deny"}},
                        "node_prefix": {"": {"policy": "read"}},
                        "operator": "read", "keyring": "write"}""")
    assert parse(HCL) == as_json


def test_exact_beats_prefix_and_longest_prefix_wins() -> None:
    a = Authorizer(parse(HCL), default_allow=False)
    assert a.key_write("app/x") and a.key_read("app/x")
    assert a.key_read("app/ro/x") and not a.key_write("app/ro/x")  # longer prefix wins
    assert not a.key_read("app/secret")                                  # exact beats prefix
    assert not a.key_read("other/x") and a.allowed("key", "other/x", "list")
    assert a.service_read("web") and a.service_read("webby") and not a.service_read("web-admin")
    assert not a.service_write("web")
    assert a.scalar("operator", "read") and not a.scalar("operator", "write")
    assert a.scalar("keyring", "write") and not a.scalar("acl", "read")


def test_default_policy_applies_only_where_no_rule_matches() -> None:
    rules = parse('key_prefix "secret/" { policy = "deny" }')
    allow = Authorizer(rules, default_allow=True)
    deny = Authorizer(rules, default_allow=False)
    assert allow.key_write("app/x") and not allow.key_read("secret/x")
    assert not deny.key_read("app/x")
    assert not allow.allow_all and Authorizer(Rules(), True).allow_all


def test_deny_wins_when_two_policies_name_the_same_rule() -> None:
    merged = parse('key_prefix "app/" { policy = "write" }')
    merged.merge(parse('key_prefix "app/" { policy = "deny" }'))
    merged.merge(parse('key_prefix "app/" { policy = "read" }'))
    assert not Authorizer(merged, True).key_read("app/x")
    merged = parse('service "a" { policy = "read" }')
    merged.merge(parse('service "a" { policy = "write" }'))
    assert Authorizer(merged, False).service_write("a")


def test_delete_tree_needs_write_on_everything_under_the_prefix() -> None:
    a = Authorizer(parse(HCL), default_allow=False)
    assert not a.key_write_prefix("app/")  # app/ro/ and app/secret withhold write
    assert a.key_write_prefix("app/rw/")


def test_identities() -> None:
    a = Authorizer(service_identity("api"), False)
    assert a.service_write("api") and a.service_write("api-sidecar-proxy") and not a.service_write("web")
    assert a.service_read("web") and a.node_read("n1") and not a.node_write("n1")
    n = Authorizer(node_identity("n1"), False)
    assert n.node_write("n1") and not n.node_write("n2") and n.service_read("x")


@pytest.mark.parametrize("text", ['key_prefix "x" { policy = "bogus" }', 'service "x" { policy = "list" }',
                                  'nosuch "x" { policy = "read" }', 'key_prefix "x" {', '{"key": 3}',
                                  'operator = "list"'])
def test_bad_rules_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(RuleError, match="Failed to parse ACL rules"):
        parse(text)


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def _apply(store: StateStore, payload: dict) -> object:
    result = store.apply((MessageType.ACL, payload))
    if result.error is not None:
        raise AssertionError(result.error.message)
    return result.value


def test_tokens_resolve_through_policies_and_roles_and_survive_a_snapshot() -> None:
    store = _store()
    _apply(store, {"op": "policy_set", "policy": {"ID": "p1", "Name": "app",
                                                  "Rules": 'key_prefix "app/" { policy = "write" }'}})
    _apply(store, {"op": "role_set", "role": {"ID": "r1", "Name": "ops", "Policies": [{"ID": "p1", "Name": "app"}],
                                              "NodeIdentities": [{"NodeName": "n1"}]}})
    _apply(store, {"op": "token_set", "token": {"AccessorID": "a1", "SecretID": "s1",
                                                "Roles": [{"ID": "r1", "Name": "ops"}]}})
    resolver = Resolver(ACLConfig(enabled=True, default_policy="deny"), "agent1", store=store)
    ident = resolver.resolve_local("s1")
    assert ident.accessor == "a1" and ident.authz.key_write("app/x") and ident.authz.node_write("n1")
    assert not ident.authz.key_read("other")
    snap = store.snapshot()
    fresh = _store()
    fresh.restore(snap)
    again = Resolver(ACLConfig(enabled=True, default_policy="deny"), "agent1", store=fresh).resolve_local("s1")
    assert again.authz.key_write("app/x")
    _apply(store, {"op": "token_delete", "id": "a1"})
    with pytest.raises(ACLNotFound):
        resolver.resolve_local("s1")  # the cache is stamped with the ACL index: a delete is seen at once


def test_bootstrap_once_and_builtins_are_protected() -> None:
    store = _store()
    _apply(store, {"op": "bootstrap", "token": {"AccessorID": "a", "SecretID": "s",
                                                "Policies": [{"ID": state.MANAGEMENT_POLICY_ID}]}})
    second = store.apply((MessageType.ACL, {"op": "bootstrap", "token": {"AccessorID": "b", "SecretID": "t"}}))
    assert second.error is not None and second.error.kind == "permission_denied"
    assert "ACL bootstrap no longer allowed" in second.error.message
    for payload in ({"op": "token_delete", "id": state.ANONYMOUS_ACCESSOR},
                    {"op": "policy_delete", "id": state.MANAGEMENT_POLICY_ID},
                    {"op": "token_set", "token": {"AccessorID": "c", "SecretID": "s"}}):
        assert store.apply((MessageType.ACL, payload)).error is not None
    resolver = Resolver(ACLConfig(enabled=True, default_policy="deny"), "n", store=store)
    assert resolver.resolve_local("s").authz.management
    assert not resolver.resolve_local("anonymous").authz.key_read("x")


def test_an_expired_token_is_not_found() -> None:
    store = _store()
    _apply(store, {"op": "token_set", "token": {"AccessorID": "a", "SecretID": "s",
                                                "ExpirationTime": "2026-01-01T00:00:10Z"}})
    now = [1767225600.0]  # 2026-01-01T00:00:00Z
    resolver = Resolver(ACLConfig(enabled=True), "n", store=store, clock=lambda: now[0])
    resolver.resolve_local("s")
    now[0] += 11
    with pytest.raises(ACLNotFound):
        resolver.resolve_local("s")


def _client_resolver(down_policy: str, answers: list) -> Resolver:
    """A client agent's resolver whose server answers come from `answers` (a doc, or an exception)."""
    calls = []

    async def fetch(secret: str) -> dict:
        calls.append(secret)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    r = Resolver(ACLConfig(enabled=True, default_policy="deny", down_policy=down_policy, token_ttl=0.0),
                 "n", fetch=fetch)
    r.calls = calls  # type: ignore[attr-defined]
    return r


DOC = {"AccessorID": "a", "Rules": {"key_prefix": {"app/": {"policy": "read"}}}}


@pytest.mark.parametrize(("down", "expect"), [("extend-cache", "cached"), ("async-cache", "cached"),
                                              ("deny", "error"), ("allow", "allow")])
async def test_down_policy_when_no_server_answers(down: str, expect: str) -> None:
    from beacon.acl.resolver import ACLUnavailable

    r = _client_resolver(down, [DOC, OSError("connection refused")])
    first = await r.resolve("s")
    assert first.authz.key_read("app/x") and not first.authz.key_read("b")
    if expect == "error":
        with pytest.raises(ACLUnavailable):
            await r.resolve("s")
        return
    again = await r.resolve("s")
    if expect == "cached":
        assert again.authz.key_read("app/x") and not again.authz.key_read("b")
    else:
        assert again.authz.key_read("b")


async def test_a_token_the_server_no_longer_knows_is_dropped_from_the_cache() -> None:
    r = _client_resolver("extend-cache", [DOC, ACLNotFound(), OSError("down")])
    await r.resolve("s")
    with pytest.raises(ACLNotFound):
        await r.resolve("s")
    from beacon.acl.resolver import ACLUnavailable

    with pytest.raises(ACLUnavailable):  # nothing cached any more to extend
        await r.resolve("s")


async def test_a_secondary_datacenter_server_resolves_its_own_tokens_locally_and_asks_the_primary_for_others() -> None:
    store = _store()
    _apply(store, {"op": "token_set", "token": {"AccessorID": "local-a", "SecretID": "local-s",
                                                "Policies": [{"ID": state.MANAGEMENT_POLICY_ID}]}})
    asked: list[str] = []
    answers: dict[str, object] = {"global-s": DOC, "gone-s": ACLNotFound()}

    async def primary(secret: str) -> dict:
        asked.append(secret)
        answer = answers.get(secret, ACLNotFound())
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    r = Resolver(ACLConfig(enabled=True, default_policy="deny", token_ttl=30.0), "n", store=store, primary=primary)
    assert r.waits and r.fetch is None
    assert (await r.resolve("local-s")).authz.management and asked == []  # its own tables, no WAN trip
    with pytest.raises(ACLNotFound):
        r.resolve_here("global-s")  # not fetched yet: the non-waiting path cannot know it
    ident = await r.resolve("global-s")
    assert asked == ["global-s"] and ident.accessor == "a"
    assert ident.authz.key_read("app/x") and not ident.authz.key_read("other")
    assert r.resolve_here("global-s") is ident  # cached for token_ttl: the fast path sees it too
    await r.resolve("global-s")
    assert asked == ["global-s"]
    with pytest.raises(ACLNotFound):
        await r.resolve("gone-s")
    assert asked == ["global-s", "gone-s"]
    # a client agent of this datacenter asking about the primary's token gets the primary's answer
    assert await r.describe_anywhere("global-s") == DOC
    assert (await r.describe_anywhere("local-s"))["Management"] is True
    with pytest.raises(ACLNotFound):
        await r.describe_anywhere("nobody")


async def test_resolve_nowait_fetches_the_primarys_token_in_the_background_and_keeps_the_last_answer() -> None:
    import asyncio

    store = _store()
    answers: list[object] = [DOC]
    asked: list[str] = []

    async def primary(secret: str) -> dict:
        asked.append(secret)
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    r = Resolver(ACLConfig(enabled=True, default_policy="deny", token_ttl=0.05), "n", store=store, primary=primary)
    assert r.remote_stamp("g") == 0.0
    with pytest.raises(ACLNotFound):
        r.resolve_nowait("g")  # nothing cached yet: a fetch starts, the caller does not wait
    with pytest.raises(ACLNotFound):
        r.resolve_nowait("g")  # one fetch in flight, not two
    for _ in range(100):
        await asyncio.sleep(0.01)
        if r.remote_stamp("g"):
            break
    assert asked == ["g"]
    first = r.remote_stamp("g")
    assert r.resolve_nowait("g").authz.key_read("app/x")
    await asyncio.sleep(0.06)  # older than token_ttl: the last answer stands while the next is fetched
    answers[0] = ACLNotFound()
    assert r.resolve_nowait("g").authz.key_read("app/x")
    for _ in range(100):
        await asyncio.sleep(0.01)
        if r.remote_stamp("g") != first:
            break
    assert r.remote_stamp("g") == 0.0  # deleted in the primary: dropped, and the stamp moved
    with pytest.raises(ACLNotFound):
        r.resolve_nowait("g")
    # a token sent by another agent is not this agent's special, and the primary-less resolver never fetches
    r.tokens["agent_recovery"] = "rec"
    assert r.resolve_nowait("rec").accessor == "agent-recovery"
    with pytest.raises(ACLNotFound):
        r.resolve_nowait("rec", specials=False)
    lone = Resolver(ACLConfig(enabled=True), "n", store=store)
    with pytest.raises(ACLNotFound):
        lone.resolve_nowait("g")
