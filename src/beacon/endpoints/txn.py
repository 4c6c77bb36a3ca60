"""Transactions (Consul's Txn.Apply): a read-only one is served from the store, without the log."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore
from beacon.server.txn import TxnCommands, TxnOutcome


def read(store: StateStore, ops: list[dict[str, Any]]) -> TxnOutcome:
    return TxnCommands(store).read(ops)


async def write(submit: Submit, ops: list[dict[str, Any]], now: float) -> TxnOutcome:
    outcome: TxnOutcome = await apply(submit, cmd.Txn(ops=ops, now=now))
    return outcome
