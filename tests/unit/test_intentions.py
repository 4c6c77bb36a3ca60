"""Intentions as views over service-intentions config entries: precedence, evaluation order, match,
check, exact upserts and deletes, the entry checks, and intention rights in ACL rules. Pure."""

from __future__ import annotations

import pytest

from beacon.acl.authorizer import Authorizer
from beacon.acl.resolver import rules_document
from beacon.acl.rules import RuleError, from_document, parse, service_identity
from beacon.errors import Invalid
from beacon.server import config_entries as ce
from beacon.server import intentions as ix


def _table(*entries: dict) -> dict[str, dict]:
    table = {}
    for n, body in enumerate(entries, start=1):
        entry = ce.decode({"Kind": "service-intentions", **body})
        ce.validate(entry)
        table[f"service-intentions/{entry['Name']}"] = {**entry, "CreateIndex": n, "ModifyIndex": n}
    return table


def test_precedence_and_evaluation_order_follow_consul() -> None:
    assert [ix.precedence(s, d) for s, d in (("web", "db"), ("*", "db"), ("web", "*"), ("*", "*"))] == [9, 8, 6, 5]
    table = _table({"Name": "db", "Sources": [{"Name": "*", "Action": "deny"}, {"Name": "web", "Action": "allow"}]},
                   {"Name": "*", "Sources": [{"Name": "*", "Action": "allow"}, {"Name": "api", "Action": "deny"}]})
    order = [(i["SourceName"], i["DestinationName"], i["Precedence"]) for i in ix.all_intentions(table)]
    assert order == [("web", "db", 9), ("*", "db", 8), ("api", "*", 6), ("*", "*", 5)]
    # The entry write filled in what Consul fills in.
    assert table["service-intentions/db"]["Sources"][0] == {"Name": "*", "Action": "deny", "Type": "consul",
                                                            "Precedence": 8}
    # The first matching intention decides; a more specific deny beats a broader allow and back.
    assert ix.decide(table, "web", "db", default_allow=False)[0] is True
    assert ix.decide(table, "other", "db", default_allow=True)[0] is False
    assert ix.decide(table, "api", "cache", default_allow=True)[0] is False
    allowed, ixn = ix.decide(table, "web", "cache", default_allow=False)
    assert allowed is True and (ixn["SourceName"], ixn["DestinationName"]) == ("*", "*")
    assert ix.decide({}, "a", "b", default_allow=False) == (False, None)
    assert ix.decide({}, "a", "b", default_allow=True) == (True, None)
    # Match by destination takes the destination's and the wildcard's; by source, the same for sources.
    assert [(i["SourceName"], i["DestinationName"]) for i in ix.match(table, "destination", "db")] == \
        [("web", "db"), ("*", "db"), ("api", "*"), ("*", "*")]
    assert [(i["SourceName"], i["DestinationName"]) for i in ix.match(table, "source", "api")] == \
        [("*", "db"), ("api", "*"), ("*", "*")]
    assert ix.exact(table, "web", "db")["Action"] == "allow" and ix.exact(table, "web", "cache") is None


def test_l7_intentions_deny_an_l4_decision_and_peer_sources_match_nothing_here() -> None:
    table = _table({"Name": "db", "Sources": [
        {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]},
        {"Name": "api", "Peer": "other-cluster", "Action": "allow"}]})
    allowed, ixn = ix.decide(table, "web", "db", default_allow=True)
    assert allowed is False and ixn["Permissions"] and ixn["Action"] == ""
    assert ix.decide(table, "api", "db", default_allow=False) == (False, None)
    listed = ix.all_intentions(table)
    assert {i["SourceName"]: i.get("SourcePeer") for i in listed} == {"web": None, "api": "other-cluster"}


def test_exact_upsert_and_delete_build_the_entry_consul_would_store() -> None:
    src = ix.source_from_body({"Action": "ALLOW", "Description": "front to db", "SourceType": "consul"}, "web")
    assert src == {"Name": "web", "Type": "consul", "Action": "allow", "Description": "front to db"}
    entry = ix.upserted(None, "db", src)
    assert entry == {"Kind": "service-intentions", "Name": "db", "Sources": [{**src, "Precedence": 9}]}
    entry = ix.upserted({**entry, "CreateIndex": 3, "ModifyIndex": 3, "Meta": {"team": "x"}}, "db",
                        ix.source_from_body({"Action": "deny"}, "*"))
    assert "ModifyIndex" not in entry and entry["Meta"] == {"team": "x"}
    entry = ix.upserted(entry, "db", ix.source_from_body({"Action": "deny"}, "web"))  # replaces web's
    assert [(s["Name"], s["Action"]) for s in entry["Sources"]] == [("*", "deny"), ("web", "deny")]
    assert [s["Name"] for s in ix.without(entry, "web")["Sources"]] == ["*"]
    assert ix.without(ix.without(entry, "web"), "*") is None
    for body, message in (({"Meta": {"a": "b"}, "Action": "allow"}, "Meta must be omitted"),
                          ({"Action": "allow", "SourceType": "external"}, "SourceType must be set to 'consul'"),
                          ({}, "Action must be set to 'allow' or 'deny'"),
                          ({"Action": "permit"}, "Action must be set to 'allow' or 'deny'"),
                          ({"Action": "allow", "Permissions": [{"Action": "deny"}]}, "Action must be omitted"),
                          ([], "must be a JSON object")):
        with pytest.raises(Invalid, match=message):
            ix.source_from_body(body, "web")


def test_service_intentions_entries_are_checked_as_consul_checks_them() -> None:
    for body, message in (
            ({"Name": "d*", "Sources": []}, "Name: wildcard character '\\*' cannot be used with partial values"),
            ({"Name": "db", "Sources": [{"Name": "w*b", "Action": "allow"}]}, "Sources\\[0\\].Name: wildcard"),
            ({"Name": "db", "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]},
             'Sources\\[1\\] defines "web" more than once'),
            ({"Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Permissions": [{"Action": "deny"}]}]},
             "Sources\\[0\\].Action must be omitted if Permissions are specified"),
            ({"Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Type": "external"}]},
             "Sources\\[0\\].Type must be set to 'consul'"),
            ({"Name": "db", "Sources": "web"}, "Sources must be a list")):
        with pytest.raises(Invalid, match=message):
            _table(body)
    # The same name from another peer is another source.
    _table({"Name": "db", "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Peer": "p", "Action": "deny"}]})


def test_acl_intention_rights_come_from_service_rules() -> None:
    rules = parse('service "web" { policy = "read" }\n'
                  'service "db" { policy = "write"\n intentions = "write" }\n'
                  'service "secret" { policy = "deny" }\n'
                  'service_prefix "" { policy = "read"\n intentions = "deny" }')
    a = Authorizer(rules, default_allow=False)
    # read or write on the service means intentions read unless the rule says otherwise
    assert (a.intention_read("web"), a.intention_write("web")) == (True, False)
    assert (a.intention_read("db"), a.intention_write("db")) == (True, True)
    assert a.intention_read("secret") is False and a.intention_read("other") is False
    # The rule document a server sends a client agent carries them.
    again = Authorizer(from_document(rules_document(rules)), default_allow=False)
    assert [again.intention_read(n) for n in ("web", "db", "secret", "other")] == [True, True, False, False]
    assert again.intention_write("db") and not again.intention_write("web")
    # Merging: deny wins, then write over read (Consul's takesPrecedenceOver).
    merged = parse('service "web" { policy = "read" }')
    merged.merge(parse('service "web" { policy = "read"\n intentions = "write" }'))
    assert Authorizer(merged, default_allow=False).intention_write("web")
    merged.merge(parse('service "web" { policy = "read"\n intentions = "deny" }'))
    assert not Authorizer(merged, default_allow=False).intention_read("web")
    # Merging keeps each policy's own intentions (a deny service rule with intentions write stays so).
    odd = parse('service "x" { policy = "deny"\n intentions = "write" }')
    fresh = parse("")
    fresh.merge(odd)
    assert fresh == odd and Authorizer(fresh, default_allow=False).intention_write("x")
    # A service identity reads its own intentions; no rule outside a service rule names them.
    assert Authorizer(service_identity("api"), default_allow=False).intention_read("api")
    for text in ('intention "x" { policy = "read" }', 'service "x" { policy = "read"\n intentions = "list" }'):
        with pytest.raises(RuleError):
            parse(text)
