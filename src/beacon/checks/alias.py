"""Alias checks: mirror the aggregated health of another service (or node).

The agent supplies an :class:`AliasSource`. The alias runner reads the aliased checks from it and
re-evaluates whenever the source calls the ``wake`` callback it registered; there is no polling.
For a service or node on this agent the source can wake on local-state changes; for another node
it can run a blocking query loop against the catalog and wake when the answer changes.

The verdict follows Consul's rule (:func:`alias_result`): node-level checks of the node plus the
checks of the aliased service count; the worst status wins; a critical one ends the search.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from beacon.checks.definition import CheckDefinition
from beacon.checks.status import CRITICAL, PASSING, WARNING, CheckNotifier
from beacon.model import HealthCheck

__all__ = ["AliasRunner", "AliasSource", "alias_result"]

log = logging.getLogger("beacon.checks")


class AliasSource(Protocol):
    """What the agent provides so alias checks can see other checks. All calls are in the loop.

    ``node`` is the ``AliasNode`` of the check, or ``None`` for this agent's own node;
    ``service_id`` is the ``AliasService``, or ``None`` to alias the node's own health.
    """

    def alias_checks(self, node: str | None, service_id: str | None) -> Sequence[HealthCheck] | None:
        """The checks of ``node`` that concern the alias: its node-level checks and the checks of
        ``service_id`` (others are ignored if included). ``None`` if the service (or, with no
        service, the node) is unknown."""
        ...

    def alias_watch(self, node: str | None, service_id: str | None,
                    wake: Callable[[], None]) -> Callable[[], None]:
        """Arrange for ``wake()`` to be called whenever ``alias_checks(node, service_id)`` may have
        changed (spurious calls are fine). Return a function that cancels the arrangement."""
        ...


def alias_result(checks: Sequence[HealthCheck] | None, *, node: str | None, service_id: str | None,
                 own_check_id: str = "") -> tuple[str, str]:
    """Consul's alias verdict for a set of checks: ``(status, output)``."""
    if checks is None:
        where = node or "this node"
        if service_id:
            return CRITICAL, f"Service {service_id} could not be found on node {where}"
        return CRITICAL, f"Node {where} could not be found"
    status, output = PASSING, "No checks found."
    for chk in checks:
        if chk.check_id == own_check_id and (node is None or not chk.node or chk.node == node):
            continue  # never feed an alias its own status
        if node and chk.node and chk.node.lower() != node.lower():
            continue
        if chk.service_id and chk.service_id != (service_id or ""):
            continue
        if chk.status in (CRITICAL, WARNING):
            status = chk.status
            output = f'Aliased check "{chk.name}" failing: {chk.output}'
            if chk.status == CRITICAL:
                break
        elif status == PASSING:
            output = "All checks passing."
    return status, output


class AliasRunner:
    """Evaluates on start and on every wake; reports to the notifier when the verdict changes."""

    def __init__(self, defn: CheckDefinition, source: AliasSource, notifier: CheckNotifier) -> None:
        self.defn = defn
        self.source = source
        self.notifier = notifier
        self.node = defn.alias_node or None
        self.service_id = defn.alias_service or None
        self.task: asyncio.Task[None] | None = None

    def start(self, after: asyncio.Task[None] | None = None) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(
            self._run(after), name=f"beacon-check-alias:{self.defn.check_id}")
        return self.task

    async def _run(self, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.wait([after])
        wake = asyncio.Event()
        unsubscribe = self.source.alias_watch(self.node, self.service_id, wake.set)
        try:
            last: tuple[str, str] | None = None
            while True:
                wake.clear()
                result = alias_result(self.source.alias_checks(self.node, self.service_id),
                                      node=self.node, service_id=self.service_id,
                                      own_check_id=self.defn.check_id)
                if result != last:
                    last = result
                    try:
                        self.notifier.update_check(self.defn.check_id, *result)
                    except Exception:
                        log.exception("check %s: notifier failed", self.defn.check_id)
                await wake.wait()
        finally:
            unsubscribe()
