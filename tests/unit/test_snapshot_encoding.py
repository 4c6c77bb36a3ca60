"""A snapshot of the stored records themselves encodes exactly as the dict snapshot, in slices, and
stays as it was while the store keeps changing (the store replaces records, never mutates them)."""

from __future__ import annotations

import orjson

from beacon.server import commands as cmd
from beacon.server import durable, sessions
from beacon.server.fsm import StateStore


def catalog(n: int) -> StateStore:
    store = StateStore()
    sessions.install(store)
    for i in range(n):
        store.apply(cmd.Register(
            node=f"node-{i % 7}", address=f"10.0.0.{i % 7}", node_meta={"rack": str(i % 3)},
            tagged_addresses={"lan": "10.1.0.1"},
            service={"id": f"i-{i}", "service": f"svc-{i % 5}", "port": 1000 + i, "tags": ["v1", f"t{i % 2}"],
                     "meta": {"m": "x"}, "tagged_addresses": {"lan": {"address": "10.2.0.1", "port": 80}}},
            checks=[{"check_id": f"c-{i}", "name": "probe", "service_id": f"i-{i}", "status": "passing",
                     "definition": {"HTTP": "http://127.0.0.1/", "Interval": "10s"}}]))
    store.apply(cmd.KVSet(key="k", value=b"\x00\xffv"))
    return store


def test_records_encode_byte_for_byte_as_dicts_and_in_slices(monkeypatch) -> None:
    store = catalog(60)
    expected = orjson.dumps(store.snapshot(), option=orjson.OPT_NON_STR_KEYS)
    monkeypatch.setattr(durable, "SLICE", 7)  # several slices per table, one shorter at the end
    assert durable.encode_large(store.snapshot(records=True)) == expected
    assert durable.encode_large({"state": store.snapshot(), "rev": 3}) == orjson.dumps({"state": store.snapshot(), "rev": 3})
    assert durable.decode(durable.encode_large(store.snapshot(records=True))) == store.snapshot()


def test_a_record_snapshot_does_not_see_later_changes() -> None:
    store = catalog(10)
    taken = store.snapshot(records=True)
    expected = durable.encode_large(taken)
    # A health change, a service update that rewrites its checks' service name/tags, a node update.
    store.apply(cmd.CheckStatus(node="node-1", check_id="c-1", status="critical", output="down"))
    store.apply(cmd.Register(node="node-2", address="10.0.0.99", service={
        "id": "i-2", "service": "svc-2", "port": 1, "tags": ["v2"]}))
    assert store.snapshot()["checks"] != orjson.loads(expected)["checks"]  # the store did change
    assert durable.encode_large(taken) == expected


def test_a_decoded_state_restores_as_the_dict_form_does() -> None:
    store = catalog(40)
    data = durable.encode_large(store.snapshot())
    typed = durable.decode_state(data)
    assert set(typed) == set(store.snapshot())  # every key of the snapshot survives the typed decode
    assert type(typed["services"]) is durable.DecodedRows
    assert [s.to_dict() for s in typed["services"]] == store.snapshot()["services"]
    via_records, via_dicts = StateStore(), StateStore()
    via_records.restore(typed)
    via_dicts.restore(durable.decode(data))
    assert via_records.snapshot() == via_dicts.snapshot() == store.snapshot()
    assert via_records.service_tags == store.service_tags
    wrapped = durable.decode_state(durable.encode_large({"state": store.snapshot(), "log_clock": 1.5, "rev": 9,
                                                          "recent": {"a": 2.0}}), wrapped=True)
    assert wrapped["log_clock"] == 1.5 and wrapped["rev"] == 9 and wrapped["recent"] == {"a": 2.0}
    assert [c.to_dict() for c in wrapped["state"]["checks"]] == store.snapshot()["checks"]


def test_rows_the_typed_decoder_refuses_decode_as_dicts() -> None:
    store = catalog(5)
    snap = store.snapshot()
    snap["nodes"][0]["meta"] = {"rack": 3}  # not the model's dict[str, str]
    got = durable.decode_state(durable.encode(snap))
    assert type(got["nodes"]) is list and got["nodes"][0]["meta"] == {"rack": 3}
    restored = StateStore()
    restored.restore(got)
    assert restored.snapshot()["nodes"] == snap["nodes"]


def test_restoring_another_stores_records_copies_them() -> None:
    store = catalog(5)
    other = StateStore()
    sessions.install(other)
    other.apply((cmd.MessageType.SNAPSHOT_RESTORE, {"snapshot": store.snapshot(records=True), "now": 1.0}))
    # The restore stamps every row with its own index: on copies, not on the first store's records.
    assert {c.modify_index for c in other.checks.values()} == {other.index}
    assert {c.modify_index for c in store.checks.values()} != {other.index}


def test_an_archived_state_is_staged_with_the_archives_own_encoding() -> None:
    import zlib

    from beacon.server import etcd_restore
    from beacon.server.archive import read_archive, write_archive

    store = catalog(20)
    _, state = read_archive(write_archive(store.snapshot(records=True)))
    assert state.encoded and zlib.decompress(etcd_restore._compress(state)) == state.encoded
    restored = StateStore()
    restored.restore(etcd_restore._decompress(etcd_restore._compress(state)))
    assert restored.snapshot() == store.snapshot()
