"""The event stream: a bounded history plus live subscribers, in dockerd's JSON shape."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

HISTORY = 1024


@dataclass(frozen=True)
class EventFilter:
    """``filters`` of ``GET /events``: every given key must match (values of one key are OR-ed)."""

    filters: dict[str, list[str]]

    def match(self, event: dict[str, Any]) -> bool:
        actor = event["Actor"]
        attrs = actor.get("Attributes", {})
        for key, wanted in self.filters.items():
            if not wanted:
                continue
            if key == "type":
                ok = event["Type"] in wanted
            elif key == "event":
                action = event["Action"]
                ok = action in wanted or action.split(":", 1)[0] in wanted
            elif key == "container":
                ok = any(w == actor["ID"] or actor["ID"].startswith(w) or w.lstrip("/") == attrs.get("name")
                         for w in wanted)
            elif key == "image":
                ok = attrs.get("image") in wanted
            elif key == "label":
                ok = any(_label_match(attrs, w) for w in wanted)
            else:
                ok = True  # filters dockerd supports that beacon has nothing to match on
            if not ok:
                return False
        return True


def _label_match(attrs: dict[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in attrs and (not sep or attrs[key] == value)


class EventBus:
    """Publishes events to subscribers; each subscriber has its own unbounded queue."""

    def __init__(self) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def emit(self, type_: str, action: str, actor_id: str, attributes: dict[str, str],
             from_: str | None = None) -> dict[str, Any]:
        now = time.time_ns()
        event: dict[str, Any] = {}
        if type_ == "container":  # the deprecated top-level fields dockerd still sends for containers
            event.update({"status": action, "id": actor_id, "from": from_ or attributes.get("image", "")})
        event.update({"Type": type_, "Action": action,
                      "Actor": {"ID": actor_id, "Attributes": dict(attributes)},
                      "scope": "local", "time": now // 1_000_000_000, "timeNano": now})
        self.history.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)
        return event

    async def stream(self, since_ns: int | None, until_ns: int | None,
                     flt: EventFilter) -> AsyncIterator[dict[str, Any]]:
        """Past events from ``since_ns``, then live ones until ``until_ns`` (forever when None)."""
        until = None if until_ns is None else until_ns / 1e9
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subscribers.add(queue)
        try:
            now = time.time()
            if since_ns is not None:
                limit = until_ns if until_ns is not None else time.time_ns()
                for event in list(self.history):
                    if since_ns <= event["timeNano"] <= limit and flt.match(event):
                        yield event
            if until is not None and until <= now:
                return
            while True:
                if until is None:
                    event = await queue.get()
                else:
                    remaining = until - time.time()
                    if remaining <= 0:
                        return
                    try:
                        async with asyncio.timeout(remaining):
                            event = await queue.get()
                    except TimeoutError:
                        return
                if until_ns is not None and event["timeNano"] > until_ns:
                    return
                if since_ns is not None and event["timeNano"] < since_ns:
                    continue
                if flt.match(event):
                    yield event
        finally:
            self.subscribers.discard(queue)
