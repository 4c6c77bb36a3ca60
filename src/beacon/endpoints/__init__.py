"""The endpoint layer, between the HTTP handlers and the state machine (Consul's
``agent/consul/*_endpoint.go``).

One module per API area. An endpoint takes typed arguments and the narrow collaborators it uses (a
``submit`` function, the store) — never the agent or a request — builds the typed command
(:mod:`beacon.server.commands`), submits it and returns the typed result, or raises a domain error
(:mod:`beacon.errors`) that only the HTTP layer turns into a status code. Handlers in
``beacon.agent.http`` parse the request and render what the endpoint returns; they build no command.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from beacon.server.commands import Record
from beacon.server.fsm import ApplyResult

# Proposes a command through consensus and answers once it is applied (Agent.submit).
Submit = Callable[[Record], Awaitable[ApplyResult]]


async def applied(submit: Submit, record: Record) -> ApplyResult:
    """Submit; a command the state machine refused raises its domain error."""
    result = await submit(record)
    if result.error is not None:
        raise result.error
    return result


async def apply(submit: Submit, record: Record) -> Any:
    """Submit; return the command's value (or raise its domain error)."""
    return (await applied(submit, record)).value
