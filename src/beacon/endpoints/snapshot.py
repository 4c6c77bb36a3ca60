"""Snapshot restore (Consul's Snapshot endpoint): the whole state, replaced through the log."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd


async def restore(submit: Submit, snapshot: dict[str, Any], now: float) -> None:
    await apply(submit, cmd.SnapshotRestore(snapshot=snapshot, now=now))
