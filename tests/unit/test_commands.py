"""Typed commands: one table, one log encoding, and the dict form earlier versions wrote still applies."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from beacon.errors import Failed, Invalid, NotFound, from_wire
from beacon.server import commands as cmd
from beacon.server import sessions
from beacon.server.consensus import SingleServer
from beacon.server.durable import CommandLog, decode, encode
from beacon.server.fsm import MessageType, StateStore


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def _sample(cls: type[cmd.Record]) -> cmd.Record:
    """A record with every field set to a non-default value of its type."""
    hints = typing.get_type_hints(cls)
    values: dict[str, typing.Any] = {}
    for f in dataclasses.fields(cls):
        hint = str(hints[f.name])
        if "bytes" in hint:
            values[f.name] = b"\x00v"
        elif "float" in hint:
            values[f.name] = 12.5
        elif "bool" in hint:
            values[f.name] = True
        elif hint.startswith(("int", "typing.Optional[int]")) or "int |" in hint:
            values[f.name] = 7
        elif "list" in hint:
            values[f.name] = [{"a": 1}] if "dict" in hint else ["x"]
        elif "dict" in hint:
            values[f.name] = {"k": "v"}
        else:
            values[f.name] = f"{f.name}-value"
    return cls(**values)


@pytest.mark.parametrize("cls", sorted(set(cmd.records().values()), key=lambda c: c.__name__))
def test_every_record_survives_the_log_encoding(cls: type[cmd.Record]) -> None:
    record = _sample(cls)
    mtype, payload = cmd.encode(record)
    assert mtype == cls.TYPE
    # Through the same bytes the command log and the server RPC carry.
    assert cmd.decode(*decode(encode([mtype, payload]))) == record


def test_the_table_has_one_record_per_type_and_op() -> None:
    table = cmd.records()
    assert len(set(table.values())) == len(table)
    with pytest.raises(RuntimeError, match="duplicate"):
        cmd.command(MessageType.KVS, "set")(cmd.KVSet)


# Exactly what the previous version's handlers proposed (dict payloads, some keys left out).
LEGACY = [
    (MessageType.REGISTER, {"node": "n1", "address": "10.0.0.1", "id": "nid", "datacenter": "dc1",
                            "node_meta": {"m": "1"},
                            "service": {"id": "web1", "service": "web", "port": 80},
                            "checks": [{"check_id": "c1", "name": "c1", "status": "passing", "service_id": "web1"}]}),
    (MessageType.KVS, {"op": "set", "key": "a", "value": b"1", "flags": 3}),
    (MessageType.KVS, {"op": "cas", "key": "b", "value": b"2", "flags": 0, "index": 0}),
    (MessageType.SESSION, {"op": "create", "now": 1000.0,
                           "session": {"id": "11111111-2222-3333-4444-555555555555", "node": "n1",
                                       "node_checks": []}}),
    (MessageType.KVS, {"op": "lock", "key": "l", "value": None, "flags": 0,
                       "session": "11111111-2222-3333-4444-555555555555", "now": 1000.0}),
    (MessageType.CHECK_STATUS, {"node": "n1", "check_id": "c1", "status": "warning"}),
    (MessageType.TXN, {"ops": [{"type": "kv", "verb": "set", "key": "t", "value": b"3"}], "now": 1.0}),
    (MessageType.KVS, {"op": "delete", "key": "a"}),
    (MessageType.DEREGISTER, {"node": "n1", "check_id": "gone"}),
]


def test_legacy_dict_commands_decode_to_records() -> None:
    assert cmd.decode(*LEGACY[1]) == cmd.KVSet(key="a", value=b"1", flags=3)
    assert cmd.decode(*LEGACY[5]) == cmd.CheckStatus(node="n1", check_id="c1", status="warning")
    # A key this version does not know is ignored, as the dict readers before it did.
    assert cmd.decode(MessageType.KVS, {"op": "delete", "key": "a", "later": 1}) == cmd.KVDelete(key="a")


def test_legacy_and_typed_commands_reach_the_same_state() -> None:
    legacy, typed = _store(), _store()
    for mtype, payload in LEGACY:
        assert legacy.apply((mtype, payload)).error is None
        assert typed.apply(cmd.decode(mtype, payload)).error is None
    assert legacy.snapshot() == typed.snapshot()
    assert legacy.kv["t"].value == b"3" and legacy.kv["l"].session
    chk = legacy.checks[("n1", "c1")]
    assert chk.status == "warning" and chk.service_name == "web"


async def test_a_data_dir_written_by_the_previous_version_restores(tmp_path) -> None:
    """The previous version's command log: records of (index, type, dict payload)."""
    log = CommandLog(str(tmp_path / "server"))
    log.append([(i + 1, int(mtype), payload) for i, (mtype, payload) in enumerate(LEGACY)])
    log.close()
    store = _store()
    server = SingleServer(store, "127.0.0.1:8300", "id", "n1", str(tmp_path))
    await server.start()
    try:
        assert store.index == len(LEGACY)
        assert store.kv["t"].value == b"3" and "a" not in store.kv
        # And new typed writes append after it.
        result = await server.submit(cmd.encode(cmd.KVSet(key="new", value=b"4")))
        assert result.error is None and result.index == len(LEGACY) + 1
    finally:
        await server.stop()
    again = _store()
    server = SingleServer(again, "127.0.0.1:8300", "id", "n1", str(tmp_path))
    await server.start()
    await server.stop()
    assert again.snapshot() == store.snapshot()


def test_bad_commands_are_error_results_with_the_familys_message() -> None:
    store = _store()
    before = store.index
    res = store.apply((MessageType.KVS, {"op": "frobnicate", "key": "a"}))
    assert isinstance(res.error, Invalid) and res.error.message == 'Invalid KV operation "frobnicate"'
    res = store.apply((MessageType.SESSION, {"op": "renew"}))  # missing fields
    assert isinstance(res.error, Invalid) and res.error.message.startswith("invalid command")
    res = store.apply(cmd.CheckStatus(node="n1", check_id="nope", status="passing"))
    assert isinstance(res.error, NotFound)
    assert store.index == before + 3  # each still took its log position, on every replica alike
    with pytest.raises(RuntimeError, match="refusing to diverge"):
        store.apply((99, {}))
    assert store.apply((99 | cmd.IGNORE_UNKNOWN_FLAG, {})).error is None


def test_an_unchanged_write_is_a_no_op_by_record_equality() -> None:
    store = _store()
    store.apply(cmd.KVSet(key="k", value=b"v"))
    first = store.kv["k"].modify_index
    store.apply(cmd.KVSet(key="k", value=b"v"))
    assert store.kv["k"].modify_index == first
    store.apply(cmd.KVSet(key="k", value=b"v", flags=1))
    assert store.kv["k"].modify_index > first


def test_errors_cross_the_wire_by_kind_and_from_older_servers_by_status() -> None:
    back = from_wire(NotFound("Unknown check").to_wire())
    assert isinstance(back, NotFound) and back.message == "Unknown check"
    assert isinstance(from_wire({"message": "x", "status": 400}), Invalid)
    assert isinstance(from_wire({"message": "x", "status": 500}), Failed)
    assert isinstance(from_wire({"message": "x", "kind": "from-the-future"}), Failed)
