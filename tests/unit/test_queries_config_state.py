"""Prepared queries and config entries in the state machine: commands, validation, snapshot/restore,
templates and the discovery-chain compiler (pure, no processes)."""

from __future__ import annotations

import uuid

import pytest

from beacon.errors import BeaconError as CommandError
from beacon.server import config_entries as ce
from beacon.server import queries, sessions
from beacon.server.discovery_chain import ChainError, compile_chain
from beacon.server.fsm import MessageType, StateStore


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def _query(name: str, service: str, **extra: object) -> dict:
    q = {"ID": str(uuid.uuid4()), "Name": name, "Session": "", "Token": "",
         "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
         "Service": {"Service": service, "Failover": {"NearestN": 0, "Datacenters": None},
                     "IgnoreCheckIDs": None, "OnlyPassing": False, "Near": "", "Tags": None,
                     "NodeMeta": None, "ServiceMeta": None, "Connect": {"Enabled": False},
                     "Peer": "", "SamenessGroup": ""},
         "DNS": {"TTL": ""}}
    q.update(extra)  # type: ignore[arg-type]
    return q


def _register(store: StateStore, node: str, sid: str, service: str, tags: list[str], status: str = "passing") -> None:
    store.apply((MessageType.REGISTER, {
        "node": node, "address": "10.0.0.1",
        "service": {"id": sid, "service": service, "tags": tags, "port": 80},
        "checks": [{"check_id": f"c-{sid}", "name": "c", "status": status, "service_id": sid}]}))


def test_query_names_cannot_alias_and_templates_match_by_longest_prefix() -> None:
    store = _store()
    a = _query("web", "web")
    assert store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": a})).value == a["ID"]
    dup = _query("web", "other")
    res = store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": dup}))
    assert res.error is not None and "aliases an existing query name" in res.error.message
    tmpl = _query("geo-", "${match(1)}", Template={"Type": "name_prefix_match", "Regexp": r"^geo-(\w+)-(\w+)$",
                                                    "RemoveEmptyTags": True})
    tmpl["Service"]["Tags"] = ["${match(2)}", "${match(9)}", "${name.suffix}"]
    queries.validate(tmpl)
    store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": tmpl}))
    catch_all = _query("", "${name.full}", Template={"Type": "name_prefix_match", "Regexp": "", "RemoveEmptyTags": False})
    store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": catch_all}))
    second = _query("", "x", Template={"Type": "name_prefix_match", "Regexp": "", "RemoveEmptyTags": False})
    res = store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": second}))
    assert res.error is not None and "empty name already exists" in res.error.message

    rendered = queries.resolve(store, "geo-db-primary")
    assert rendered is not None
    assert rendered["Service"]["Service"] == "db"
    assert rendered["Service"]["Tags"] == ["primary", "db-primary"]  # empty ${match(9)} removed
    assert queries.resolve(store, "web")["ID"] == a["ID"]  # exact name beats the catch-all
    assert queries.resolve(store, "anything")["Service"]["Service"] == "anything"


def test_template_validation_uses_consuls_messages() -> None:
    bad = _query("x", "${nope}", Template={"Type": "name_prefix_match", "Regexp": "", "RemoveEmptyTags": False})
    with pytest.raises(CommandError, match="unknown variable"):
        queries.validate(bad)
    with pytest.raises(CommandError, match="Bad Template.Type 'prefix'"):
        queries.validate(_query("x", "s", Template={"Type": "prefix", "Regexp": "", "RemoveEmptyTags": False}))
    with pytest.raises(CommandError, match="Bad Regexp"):
        queries.validate(_query("x", "s", Template={"Type": "name_prefix_match", "Regexp": "(",
                                                     "RemoveEmptyTags": False}))
    with pytest.raises(CommandError, match="Must provide a Service name to query"):
        queries.validate(_query("x", ""))
    with pytest.raises(CommandError, match="Bad DNS TTL"):
        queries.validate(_query("x", "s", DNS={"TTL": "ten"}))


def test_execute_filters_tags_health_and_puts_near_first() -> None:
    store = _store()
    _register(store, "a", "web1", "web", ["v1"])
    _register(store, "b", "web2", "web", ["v1", "canary"])
    _register(store, "c", "web3", "web", ["v1"], status="critical")
    _register(store, "d", "web4", "web", ["v1"], status="warning")
    q = _query("w", "web")
    q["Service"]["Tags"] = ["v1", "!canary"]
    _, out = queries.execute(store, q, "d", "dc1")
    assert sorted(n[1].id for n in out["Nodes"]) == ["web1", "web4"]
    q["Service"]["OnlyPassing"] = True
    _, out = queries.execute(store, q, "d", "dc1")
    assert [n[1].id for n in out["Nodes"]] == ["web1"]
    q = _query("w", "web")
    q["Service"]["Near"] = "_agent"
    for _ in range(5):
        _, out = queries.execute(store, q, "d", "dc1")
        assert [n[0].node for n in out["Nodes"]] == ["d", "a", "b"]
    assert out["Failovers"] == 0 and out["Datacenter"] == "dc1"


def test_query_and_config_tables_survive_snapshot_restore() -> None:
    store = _store()
    q = _query("web", "web")
    store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": q}))
    entry = ce.decode({"kind": "service-defaults", "name": "web", "protocol": "http"})
    assert store.apply((MessageType.CONFIG_ENTRY, {"op": "set", "entry": entry, "cas": None})).value is True
    snap = store.snapshot()
    other = _store()
    other.restore(snap)
    assert queries.lookup(other, "web")["ID"] == q["ID"]
    assert ce.get(other, "service-defaults", "web")["Protocol"] == "http"
    assert other.tables[ce.TABLE] == store.tables[ce.TABLE]


def test_config_cas_and_graph_rule() -> None:
    store = _store()
    splitter = ce.decode({"Kind": "service-splitter", "Name": "web",
                          "Splits": [{"Weight": 50, "Service": "a"}, {"Weight": 50, "Service": "b"}]})
    ce.validate(splitter)
    res = store.apply((MessageType.CONFIG_ENTRY, {"op": "set", "entry": dict(splitter), "cas": None}))
    assert res.error is not None and 'uses a protocol "tcp"' in res.error.message
    defaults = ce.decode({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
    assert store.apply((MessageType.CONFIG_ENTRY, {"op": "set", "entry": defaults, "cas": 0})).value is True
    again = ce.decode({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"})
    assert store.apply((MessageType.CONFIG_ENTRY, {"op": "set", "entry": dict(again), "cas": 0})).value is False
    assert store.apply((MessageType.CONFIG_ENTRY, {"op": "set", "entry": dict(splitter), "cas": None})).value is True
    # Removing the protocol would strand the splitter: refused, like Consul.
    res = store.apply((MessageType.CONFIG_ENTRY, {"op": "delete", "kind": "service-defaults", "name": "web",
                                                  "cas": None}))
    assert res.error is not None


@pytest.mark.parametrize(("body", "message"), [
    ({"Name": "web"}, "Payload does not contain a kind/Kind key"),
    ({"Kind": "nope", "Name": "web"}, "invalid config entry kind: nope"),
    ({"Kind": "service-defaults"}, "Name is required"),
    ({"Kind": "proxy-defaults", "Name": "web"}, 'only "global" is supported'),
    ({"Kind": "service-splitter", "Name": "w", "Splits": [{"Weight": 70}, {"Weight": 10, "Service": "x"}]},
     "the sum of all split weights must be 100, not 80.000000"),
    ({"Kind": "service-resolver", "Name": "w", "DefaultSubset": "v9"}, 'DefaultSubset "v9" is not a valid subset'),
    ({"Kind": "service-resolver", "Name": "w", "Redirect": {"Service": "x"}, "Failover": {"*": {"Service": "y"}}},
     "Redirect and Failover cannot both be set"),
])
def test_config_validation_messages(body: dict, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ce.validate(ce.decode(body))


def test_chain_compiles_resolver_subsets_splitter_and_router() -> None:
    table = {}
    for body in (
        {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
        {"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1", "ConnectTimeout": "15s",
         "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}},
         "Failover": {"v1": {"Datacenters": ["dc2"]}}},
        {"Kind": "service-splitter", "Name": "web",
         "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]},
    ):
        entry = ce.decode(body)
        ce.validate(entry)
        table[f"{entry['Kind']}/{entry['Name']}"] = entry
    chain = compile_chain(table, "web", "dc1")
    assert chain["StartNode"] == "splitter:web.default.default"
    assert chain["Protocol"] == "http" and chain["Default"] is False
    splits = chain["Nodes"]["splitter:web.default.default"]["Splits"]
    assert splits == [{"Weight": 90, "NextNode": "resolver:v1.web.default.default.dc1"},
                      {"Weight": 10, "NextNode": "resolver:v2.web.default.default.dc1"}]
    v1 = chain["Nodes"]["resolver:v1.web.default.default.dc1"]["Resolver"]
    assert v1["ConnectTimeout"] == "15s" and v1["Failover"] == {"Targets": ["v1.web.default.default.dc2"]}
    assert chain["Targets"]["v2.web.default.default.dc1"]["Subset"] == {"Filter": "Service.Meta.version == v2"}
    # A router in front: its routes plus the catch-all to the service's splitter.
    router = ce.decode({"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "admin"}}]})
    table["service-router/web"] = router
    # Routed-to services must speak the chain's protocol too (Consul's rule).
    table["service-defaults/admin"] = ce.decode({"Kind": "service-defaults", "Name": "admin", "Protocol": "http"})
    chain = compile_chain(table, "web", "dc1")
    assert chain["StartNode"] == "router:web.default.default"
    routes = chain["Nodes"]["router:web.default.default"]["Routes"]
    assert [r["NextNode"] for r in routes] == ["resolver:admin.default.default.dc1", "splitter:web.default.default"]
    assert chain["Nodes"]["resolver:admin.default.default.dc1"]["Resolver"]["Default"] is True
    # No entries at all: one default resolver, tcp.
    plain = compile_chain({}, "db", "dc1")
    assert plain["StartNode"] == "resolver:db.default.default.dc1" and plain["Protocol"] == "tcp"
    assert plain["Default"] is True and list(plain["Targets"]) == ["db.default.default.dc1"]


def test_a_query_bound_to_a_session_goes_with_it() -> None:
    store = _store()
    store.apply((MessageType.REGISTER, {"node": "n1", "address": "10.0.0.1"}))
    sid = str(uuid.uuid4())
    res = store.apply((MessageType.SESSION, {"op": "create", "now": 0.0, "session": {
        "id": sid, "node": "n1", "node_checks": [], "behavior": "release"}}))
    assert res.error is None, res.error
    q = _query("bound", "web", Session=sid)
    assert store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": q})).error is None
    missing = _query("other", "web", Session=str(uuid.uuid4()))
    res = store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": missing}))
    assert res.error is not None and res.error.message.startswith("invalid session")
    assert queries.lookup(store, "bound") is not None
    store.apply((MessageType.SESSION, {"op": "destroy", "id": sid, "now": 1.0}))
    assert queries.lookup(store, "bound") is None
    assert queries.live(store) == []
    again = _query("bound", "web")  # the name is free again
    assert store.apply((MessageType.PREPARED_QUERY, {"op": "set", "query": again})).error is None


def test_chain_refuses_inconsistent_protocols_like_consul() -> None:
    table = {}
    for body in ({"Kind": "service-defaults", "Name": "main", "Protocol": "http"},
                 {"Kind": "service-defaults", "Name": "other", "Protocol": "tcp"},
                 {"Kind": "service-splitter", "Name": "main",
                  "Splits": [{"Weight": 90}, {"Weight": 10, "Service": "other"}]}):
        entry = ce.decode(body)
        table[f"{entry['Kind']}/{entry['Name']}"] = entry
    with pytest.raises(ChainError, match='discovery chain "main" uses inconsistent protocols; service "other" '
                                         'has "tcp" which is not "http"'):
        compile_chain(table, "main", "dc1")
    table["service-defaults/other"] = ce.decode({"Kind": "service-defaults", "Name": "other", "Protocol": "http"})
    assert compile_chain(table, "main", "dc1")["StartNode"] == "splitter:main.default.default"
    # OverrideProtocol compiles as if every service spoke it: a tcp override drops the splitter.
    assert compile_chain(table, "main", "dc1", override_protocol="tcp")["StartNode"] == \
        "resolver:main.default.default.dc1"
