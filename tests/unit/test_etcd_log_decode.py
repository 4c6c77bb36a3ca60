"""The log's own envelope decoder reads every envelope the encoder writes as durable.decode does
(bytes anywhere in a command payload, at any depth)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.server.durable import decode, encode
from beacon.server.etcd_envelope import decode_envelope as _decode_envelope

leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=12)
entries = st.fixed_dictionaries({"i": st.text(max_size=8), "x": st.floats(0, 1e10),
                                 "c": st.tuples(st.integers(0, 40), st.dictionaries(st.text(max_size=6), values, max_size=4))})
envelopes = st.fixed_dictionaries({"t": st.floats(0, 1e10), "b": st.lists(entries, max_size=3)})


@settings(max_examples=100, deadline=None)
@given(envelopes)
def test_envelopes_decode_as_durable_decode_reads_them(env: dict) -> None:
    data = encode(env)
    assert _decode_envelope(data) == decode(data)


def test_a_tick_and_a_large_envelope_decode_too() -> None:
    tick = encode({"t": 5.0})
    assert _decode_envelope(tick) == {"t": 5.0}
    big = {"t": 1.0, "b": [{"i": str(n), "x": 2.0, "c": [3, {"op": "set", "key": f"k{n}", "value": b"\x00" * 200}]}
                           for n in range(400)]}
    assert _decode_envelope(encode(big)) == decode(encode(big))
    assert _decode_envelope(encode(big))["b"][7]["c"][1]["value"] == b"\x00" * 200
