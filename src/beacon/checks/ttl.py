"""TTL checks: the application reports its own status; silence for one TTL turns it critical."""

from __future__ import annotations

import logging

from beacon.checks.clock import Clock, TimerHandle
from beacon.checks.definition import CheckDefinition
from beacon.checks.errors import InvalidStatusError
from beacon.checks.output import truncate_head
from beacon.checks.status import CRITICAL, CheckNotifier
from beacon.model import HEALTH_STATUSES

__all__ = ["TTLRunner", "ttl_expired_output"]

log = logging.getLogger("beacon.checks")


def ttl_expired_output(last_output: str) -> str:
    if not last_output:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last_output}"


class TTLRunner:
    """One timer per TTL check. :meth:`update` reports a status and re-arms the timer; when the
    timer fires the check is reported critical once (it stays so until the next update)."""

    def __init__(self, defn: CheckDefinition, notifier: CheckNotifier, clock: Clock) -> None:
        self.defn = defn
        self.notifier = notifier
        self.clock = clock
        self.last_output = ""
        self.expires_at: float | None = None
        self._timer: TimerHandle | None = None

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.expires_at = None

    def update(self, status: str, output: str) -> str:
        """Report ``status``/``output`` and restart the TTL; return the output as stored (capped)."""
        if status not in HEALTH_STATUSES:
            raise InvalidStatusError(status)
        output = truncate_head(output, self.defn.output_max_size)
        self.last_output = output
        self._arm()
        self.notifier.update_check(self.defn.check_id, status, output)
        return output

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.expires_at = self.clock.time() + self.defn.ttl
        self._timer = self.clock.call_at(self.expires_at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.expires_at = None
        log.warning("check %s missed its TTL, now critical", self.defn.check_id)
        try:
            self.notifier.update_check(self.defn.check_id, CRITICAL, ttl_expired_output(self.last_output))
        except Exception:
            log.exception("check %s: notifier failed", self.defn.check_id)
