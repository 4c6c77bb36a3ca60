"""Prepared query writes (Consul's PreparedQuery.Apply)."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd
from beacon.server import queries


async def set_query(submit: Submit, query: dict[str, Any]) -> str:
    """Create or replace ``query`` (decoded, ID picked); answer its ID."""
    queries.validate(query)
    return str(await apply(submit, cmd.QuerySet(query=query)))


async def delete(submit: Submit, query_id: str) -> None:
    await apply(submit, cmd.QueryDelete(id=query_id))
