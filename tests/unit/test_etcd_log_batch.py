"""Group commit's batch size: an etcd log entry holds at most MAX_OPS operations (a txn counts its ops)."""

from __future__ import annotations

from typing import Any

from beacon.server import commands as cmd
from beacon.server.etcd_log import MAX_OPS, _batch_len


def kv(n: int) -> list[dict[str, Any]]:
    return [{"i": f"k{j}", "x": 0.0, "c": [int(cmd.MessageType.KVS), {"op": "set"}]} for j in range(n)]


def txn(n: int, ops: int = 64) -> list[dict[str, Any]]:
    return [{"i": f"t{j}", "x": 0.0, "c": [int(cmd.MessageType.TXN), {"ops": [{}] * ops}]} for j in range(n)]


def test_small_batches_go_whole() -> None:
    assert _batch_len(kv(7)) == 7
    assert _batch_len(txn(1) + kv(3)) == 1  # the txn fills the cap alone
    assert _batch_len(txn(2, ops=MAX_OPS // 2)) == 2  # exactly the cap


def test_ops_cap_cuts_txn_bursts() -> None:
    assert _batch_len(txn(9)) == 1
    assert _batch_len(txn(1, ops=10) + kv(100)) == 1 + MAX_OPS - 10
    assert _batch_len(kv(1000)) == MAX_OPS


def test_one_command_always_goes() -> None:
    # A command over the cap on its own still leaves (never an empty batch).
    assert _batch_len(txn(3, ops=MAX_OPS + 10)) == 1
    assert _batch_len(kv(1) + txn(1, ops=MAX_OPS)) == 1
