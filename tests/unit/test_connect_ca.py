"""The built-in Connect CA in the state machine: the first root wins, replicas refuse a malformed one,
snapshots carry it, and leaves chain to it. Pure: no processes."""

from __future__ import annotations

from cryptography import x509

from beacon.server import commands as cmd
from beacon.server import connect_ca, sessions
from beacon.server.fsm import MessageType, StateStore


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def test_the_first_root_wins_and_snapshots_carry_it() -> None:
    store = _store()
    assert connect_ca.roots_view(store)[1] == {"ActiveRootID": "", "TrustDomain": "", "Roots": []}
    first, key = connect_ca.new_root("dc1")
    second, key2 = connect_ca.new_root("dc1")
    assert first["ID"] != second["ID"]
    domain = "1234.consul"
    assert store.apply(cmd.CAInit(root=first, key=key, trust_domain=domain), 7).value is True
    assert store.apply(cmd.CAInit(root=second, key=key2, trust_domain=domain), 8).value is False
    index, view = connect_ca.roots_view(store)
    assert index == 7 and view["ActiveRootID"] == first["ID"] and view["TrustDomain"] == domain
    assert [(r["ID"], r["Active"], r["CreateIndex"]) for r in view["Roots"]] == [(first["ID"], True, 7)]
    assert "PRIVATE KEY" not in str(view) and key not in str(view)
    other = _store()
    other.restore(store.snapshot())
    assert connect_ca.roots_view(other) == (index, view)
    leaf = connect_ca.sign_leaf(other, "dc1", "api", 9)
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(first["RootCert"].encode()))
    assert leaf["ServiceURI"] == "spiffe://1234.consul/ns/default/dc/dc1/svc/api"
    assert connect_ca.configuration(other)["CreateIndex"] == 7


def test_a_malformed_root_is_an_error_on_every_replica() -> None:
    store = _store()
    bad = store.apply((MessageType.CONNECT_CA, {"op": "init", "root": {"ID": "x", "RootCert": "not a pem"},
                                                "key": "k", "trust_domain": "d"}), 3)
    assert bad.error is not None and connect_ca.state(store) is None
    assert connect_ca.active_root(store) is None
