"""Leader duty: delete ACL tokens past their ExpirationTime (Consul's expired-token reaping).

An expired token already stops resolving at its expiry (the resolver checks); reaping keeps the
table from growing, which matters once logins make a token per CI job. The leader lists expired
tokens and proposes ``token_reap`` with its clock; apply deletes only those that expired by that
time, so a replica never judges time itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from beacon.acl import state
from beacon.acl.resolver import parse_time
from beacon.server.commands import ACLTokenReap, Record
from beacon.server.fsm import ApplyResult, StateStore

log = logging.getLogger("beacon.acl.reaper")
INTERVAL = 30.0
BATCH = 256  # tokens per command: keeps one log entry small


def expired(store: StateStore, now: float) -> list[str]:
    with store.lock:
        return [a for a, t in state.table(store, state.TOKENS).items()
                if (at := parse_time(t.get("ExpirationTime") or "")) is not None and at <= now]


async def step(store: StateStore, submit: Callable[[Record], Awaitable[ApplyResult]],
               clock: Callable[[], float] = time.time) -> int:
    """One round (the caller leads): propose the reaping of what expired; returns how many."""
    now = clock()
    ids = expired(store, now)
    for i in range(0, len(ids), BATCH):
        await submit(ACLTokenReap(ids=ids[i:i + BATCH], now=now))
    return len(ids)


async def run(store: StateStore, submit: Callable[[Record], Awaitable[ApplyResult]],
              is_leader: Callable[[], bool], interval: float = INTERVAL) -> None:
    while True:
        await asyncio.sleep(interval)
        if not is_leader():
            continue
        try:
            await step(store, submit)
        except Exception as exc:  # no quorum right now, say: the next round tries again
            log.debug("expired token reaping: %s", exc)
