"""Operator writes (Consul's ``Operator.AutopilotSetConfiguration``)."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.errors import Invalid
from beacon.server import autopilot
from beacon.server import commands as cmd


async def set_autopilot(submit: Submit, body: Any, cas: int | None = None) -> bool:
    """Replace the autopilot configuration with ``body`` (Consul's PUT: fields left out take their
    zero values); with ``cas``, only if its ModifyIndex still matches."""
    try:
        config = autopilot.decode(body)
    except autopilot.AutopilotConfigError as exc:
        raise Invalid(f"Error parsing autopilot config: {exc}") from None
    return bool(await apply(submit, cmd.AutopilotSet(config=config, cas=cas)))
