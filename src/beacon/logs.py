"""Logging for the agent: levels (with trace), text or JSON lines, and the broadcaster behind
``/v1/agent/monitor``.

Every line carries a level and a *component*: the logger name without the ``beacon.`` prefix
(``agent``, ``agent.http``, ``server``...). Text lines look like Consul's (hclog)::

    2026-11-23T19:51:37.123Z [INFO]  agent: synced node info

and ``-log-json`` lines like ``{"@timestamp": ..., "@level": "info", "@module": "agent", "@message": ...}``.

The :data:`BROADCASTER` handler keeps the last lines in a ring buffer and fans each new one out to
monitor subscribers. A subscriber may ask for a lower level than the agent logs at (a ``debug``
monitor on an ``info`` agent): while it is attached the root logger's level is lowered to match, and
the console handler keeps filtering at the configured level, so nothing changes on stderr and no
debug record is even created once the last such monitor has gone.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

__all__ = [
    "BROADCASTER",
    "LEVELS",
    "TRACE",
    "Line",
    "LogBroadcaster",
    "Subscription",
    "format_json",
    "format_text",
    "parse_level",
    "setup_logging",
]

TRACE = 5
LEVELS: dict[str, int] = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
                          "warn": logging.WARNING, "error": logging.ERROR}
_ALIASES = {"warning": "warn", "err": "error"}
_NAMES = {TRACE: "trace", logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
          logging.ERROR: "error", logging.CRITICAL: "error"}

logging.addLevelName(TRACE, "TRACE")


def parse_level(name: str) -> int:
    """``info`` -> 20. Raises ValueError for an unknown name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in LEVELS:
        raise ValueError(name)
    return LEVELS[key]


def level_name(levelno: int) -> str:
    if levelno in _NAMES:
        return _NAMES[levelno]
    for n in sorted(_NAMES, reverse=True):
        if levelno >= n:
            return _NAMES[n]
    return "trace"


def component(logger_name: str) -> str:
    if logger_name == "beacon" or logger_name == "root":
        return "agent"
    if logger_name.startswith("beacon."):
        return logger_name[len("beacon."):]
    return logger_name


@dataclass(frozen=True, slots=True)
class Line:
    """One log line, kept unformatted so each monitor can render it as text or JSON."""

    levelno: int
    created: float
    component: str
    message: str

    @classmethod
    def from_record(cls, record: logging.LogRecord) -> Line:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        return cls(record.levelno, record.created, component(record.name), message)


def _timestamp(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def format_text(line: Line) -> str:
    level = "[" + level_name(line.levelno).upper() + "]"
    return f"{_timestamp(line.created)} {level:<7} {line.component}: {line.message}"


def format_json(line: Line) -> str:
    return json.dumps({"@timestamp": _timestamp(line.created), "@level": level_name(line.levelno),
                       "@module": line.component, "@message": line.message}, ensure_ascii=False)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._render = format_json if as_json else format_text

    def format(self, record: logging.LogRecord) -> str:
        return self._render(Line.from_record(record))


class Subscription:
    """One monitor's queue. Lines arrive on the subscriber's loop; when the queue is full, lines are
    dropped and counted rather than slowing the code that logs."""

    def __init__(self, owner: LogBroadcaster, levelno: int, loop: asyncio.AbstractEventLoop,
                 maxsize: int) -> None:
        self.owner = owner
        self.levelno = levelno
        self.loop = loop
        self.queue: asyncio.Queue[Line | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def push(self, line: Line | None) -> None:
        if line is None:
            self.closed = True
            # Make room for the end marker: a closing stream must not be blocked by a full queue.
            while self.queue.full():
                self.queue.get_nowait()
                self.dropped += 1
            self.queue.put_nowait(None)
            return
        if self.closed:
            return
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> Line | None:
        return await self.queue.get()

    def end(self) -> None:
        """Ask the stream to finish (agent shutdown); safe from any thread."""
        self.loop.call_soon_threadsafe(self.push, None)

    def close(self) -> None:
        self.owner.unsubscribe(self)


class LogBroadcaster(logging.Handler):
    def __init__(self, backlog: int = 512) -> None:
        super().__init__(logging.NOTSET)
        self._ring: collections.deque[Line] = collections.deque(maxlen=backlog)
        self._subs: list[Subscription] = []
        self._guard = threading.Lock()
        self.configured_level = logging.INFO

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Line.from_record(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._ring.append(line)
            subs = list(self._subs)
        for sub in subs:
            if line.levelno < sub.levelno:
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub.loop:
                sub.push(line)
            elif not sub.loop.is_closed():
                sub.loop.call_soon_threadsafe(sub.push, line)

    def subscribe(self, levelno: int, replay: bool = True, maxsize: int = 1024) -> Subscription:
        """A queue of lines at `levelno` or above, starting with the buffered ones when `replay`."""
        sub = Subscription(self, levelno, asyncio.get_running_loop(), maxsize)
        with self._guard:
            if replay:
                for line in list(self._ring)[-maxsize:]:
                    if line.levelno >= levelno:
                        sub.queue.put_nowait(line)
            self._subs.append(sub)
        self._refresh_root_level()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._guard:
            if sub in self._subs:
                self._subs.remove(sub)
        self._refresh_root_level()

    def subscribers(self) -> list[Subscription]:
        with self._guard:
            return list(self._subs)

    def _refresh_root_level(self) -> None:
        with self._guard:
            wanted = min([self.configured_level] + [s.levelno for s in self._subs])
        root = logging.getLogger()
        if root.level != wanted:
            root.setLevel(wanted)


BROADCASTER = LogBroadcaster()


def setup_logging(level: str = "info", as_json: bool = False, stream: IO[str] | None = None) -> None:
    """(Re)configure the process's logging: one console handler at `level`, plus the broadcaster.

    Safe to call twice (the CLI calls it once before reading the config, so that config warnings are
    already formatted, and again with the configured level)."""
    levelno = parse_level(level)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(stream or sys.stderr)
    console.setLevel(levelno)
    console.setFormatter(_Formatter(as_json))
    root.addHandler(console)
    root.addHandler(BROADCASTER)
    BROADCASTER.configured_level = levelno
    BROADCASTER._refresh_root_level()
    for noisy in ("aiohttp.access", "asyncio", "aiohttp.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def ensure_broadcasting() -> None:
    """Attach the broadcaster when logging was set up elsewhere (an Agent embedded in a program)."""
    root = logging.getLogger()
    if BROADCASTER not in root.handlers:
        root.addHandler(BROADCASTER)
        BROADCASTER.configured_level = root.level or logging.WARNING
