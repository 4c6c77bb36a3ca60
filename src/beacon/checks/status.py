"""Where check results go: the :class:`CheckNotifier` sink and the threshold decorator.

Every runner reports through one method, ``update_check(check_id, status, output)``, always called
from the event loop. Interval checks (script, docker, HTTP, TCP, UDP) report through a
:class:`StatusHandler` that applies SuccessBeforePassing / FailuresBeforeWarning /
FailuresBeforeCritical; TTL and alias checks report straight to the notifier, as in Consul.

The notifier is called on **every** result that passes the thresholds, not only on changes: the
agent's local state compares with what it holds, syncs status changes at once and defers output-only
changes by ``check_update_interval``. That keeps the throttling policy in one place (the agent).
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["CRITICAL", "PASSING", "WARNING", "CheckNotifier", "StatusHandler"]

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"

log = logging.getLogger("beacon.checks")


class CheckNotifier(Protocol):
    """The agent's sink for check results (Consul's ``CheckNotifier``). Called in the event loop."""

    def update_check(self, check_id: str, status: str, output: str) -> None: ...


class StatusHandler:
    """Wraps a notifier and holds the previous status until enough consecutive results agree.

    Passing and warning results count as successes, critical ones as failures (Consul's rule):

    * a success is reported once ``success_before_passing`` successes in a row have been seen;
    * a failure is reported as critical once ``failures_before_critical`` failures in a row have
      been seen, and as *warning* once ``failures_before_warning`` (default: the critical threshold)
      have been seen;
    * otherwise nothing is reported and the check keeps its previous status and output.

    Both counters start at their thresholds, so the first result after registration is reported at
    once: thresholds damp flapping between results, they do not delay the first verdict.
    """

    __slots__ = ("_failures", "_successes", "check_id", "failures_before_critical",
                 "failures_before_warning", "inner", "success_before_passing")

    def __init__(self, inner: CheckNotifier, check_id: str, *, success_before_passing: int = 0,
                 failures_before_warning: int = 0, failures_before_critical: int = 0) -> None:
        self.inner = inner
        self.check_id = check_id
        self.success_before_passing = success_before_passing
        self.failures_before_critical = failures_before_critical
        self.failures_before_warning = failures_before_warning or failures_before_critical
        self._successes = success_before_passing
        self._failures = failures_before_critical

    def update(self, status: str, output: str) -> bool:
        """Feed one result; return True if it was passed on to the notifier."""
        if status in (PASSING, WARNING):
            self._successes += 1
            self._failures = 0
            if self._successes >= self.success_before_passing:
                self.inner.update_check(self.check_id, status, output)
                return True
            log.debug("check %s: %s but below success threshold (%d/%d)", self.check_id, status,
                      self._successes, self.success_before_passing)
            return False
        self._failures += 1
        self._successes = 0
        if self._failures >= self.failures_before_critical:
            self.inner.update_check(self.check_id, status, output)
            return True
        if self._failures >= self.failures_before_warning:
            self.inner.update_check(self.check_id, WARNING, output)
            return True
        log.debug("check %s: %s but below failure threshold (%d/%d)", self.check_id, status,
                  self._failures, self.failures_before_critical)
        return False
