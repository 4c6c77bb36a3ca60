"""Records' ``to_dict`` (compiled per class for snapshot speed) returns what ``dataclasses.asdict``
returns, key order included, and shares no mutable container with the record."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from beacon.model import HealthCheck, KVEntry, Node, Service, Session

text = st.text(max_size=8)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=8)


@given(st.builds(Service, id=text, service=text, tags=st.lists(text, max_size=3), port=st.integers(0, 65535),
                 meta=st.dictionaries(text, text, max_size=3),
                 tagged_addresses=st.dictionaries(text, st.dictionaries(text, json_values, max_size=2), max_size=2)),
       st.builds(HealthCheck, node=text, check_id=text, service_tags=st.lists(text, max_size=3),
                 definition=st.dictionaries(text, json_values, max_size=3)),
       st.builds(Node, node=text, address=text, meta=st.dictionaries(text, text, max_size=3)))
def test_to_dict_is_asdict(svc: Service, chk: HealthCheck, node: Node) -> None:
    for row in (svc, chk, node):
        got = row.to_dict()
        assert got == dataclasses.asdict(row)
        assert list(got) == [f.name for f in dataclasses.fields(row)]
    d = svc.to_dict()
    d["tags"].append("changed")
    d["meta"]["changed"] = "x"
    for inner in d["tagged_addresses"].values():
        inner["changed"] = 1
    assert "changed" not in svc.tags and "changed" not in svc.meta
    assert all("changed" not in v for v in svc.tagged_addresses.values())
    c = chk.to_dict()
    c["definition"]["changed"] = 1
    assert "changed" not in chk.definition


def test_other_records() -> None:
    kv = KVEntry(key="a", value=b"\x00\x01", flags=3)
    assert kv.to_dict()["value"] == "0001" and KVEntry.from_dict(kv.to_dict()) == kv
    sess = Session(id="s", node="n", service_checks=[{"ID": "web"}])
    d = sess.to_dict()
    assert d == dataclasses.asdict(sess)
    d["service_checks"][0]["ID"] = "changed"
    assert sess.service_checks == [{"ID": "web"}]
