"""Captured container output: a json-lines file per container (like dockerd's json-file driver)
plus live followers for ``logs --follow`` and ``attach``."""

from __future__ import annotations

import asyncio
import calendar
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_LINE = 16 * 1024  # dockerd splits longer lines into partial records of this size
STREAMS = {1: "stdout", 2: "stderr"}
STREAM_IDS = {"stdout": 1, "stderr": 2}


@dataclass(frozen=True)
class LogRecord:
    seq: int
    stream: int
    time_ns: int
    data: bytes

    def frame(self, timestamps: bool = False) -> bytes:
        """Docker's multiplexed-stream framing: [stream, 0, 0, 0, size (big endian)] + payload. A
        record may hold several lines (see ``LogStore.feed``); with timestamps each line gets one."""
        if timestamps:
            stamp = (rfc3339(self.time_ns) + " ").encode()
            return b"".join(_frame(self.stream, stamp + line) for line in self.data.splitlines(keepends=True))
        return _frame(self.stream, self.data)

    def lines(self) -> list[LogRecord]:
        return [LogRecord(self.seq, self.stream, self.time_ns, line) for line in self.data.splitlines(keepends=True)]


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def rfc3339(time_ns: int) -> str:
    secs, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


class LogStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = -1  # records in the file, counted on first use
        self.partial: dict[int, bytes] = {1: b"", 2: b""}
        self.followers: set[asyncio.Queue[LogRecord | None]] = set()
        self.file: IO[str] | None = None

    def _ensure_count(self) -> None:
        if self.count < 0:
            try:
                with open(self.path, "rb") as f:
                    self.count = sum(1 for _ in f)
            except FileNotFoundError:
                self.count = 0

    def open(self) -> None:
        self._ensure_count()
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")

    def feed(self, stream: int, chunk: bytes) -> None:
        """Add raw output; complete lines (or MAX_LINE pieces) become records. The complete lines of
        one chunk make one record (unless one of them is longer than MAX_LINE): a record per line
        costs a JSON entry and a queue item each, which made line-heavy output ~6x slower than
        dockerd. Readers that need lines (``--tail``, ``--timestamps``) split records again."""
        buf = self.partial[stream] + chunk
        last = buf.rfind(b"\n")
        if last >= 0:
            block = buf[: last + 1]
            if max(map(len, block.split(b"\n"))) < MAX_LINE:
                self._append(stream, block)
                buf = buf[last + 1:]
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) >= MAX_LINE:
                    self._append(stream, buf[:MAX_LINE])
                    buf = buf[MAX_LINE:]
                    continue
                break
            self._append(stream, buf[: nl + 1])
            buf = buf[nl + 1:]
        self.partial[stream] = buf

    def feed_raw(self, stream: int, chunk: bytes) -> None:
        """A TTY's output: passed on as it comes (a prompt has no newline), in MAX_LINE pieces."""
        for i in range(0, len(chunk), MAX_LINE):
            self._append(stream, chunk[i: i + MAX_LINE])

    def flush(self, stream: int) -> None:
        if self.partial[stream]:
            self._append(stream, self.partial[stream])
            self.partial[stream] = b""

    def _append(self, stream: int, data: bytes) -> None:
        self._ensure_count()
        record = LogRecord(self.count, stream, time.time_ns(), data)
        self.count += 1
        if self.file is not None:
            entry = {"log": data.decode("utf-8", errors="replace"), "stream": STREAMS[stream],
                     "time": rfc3339(record.time_ns)}
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
        for queue in self.followers:
            queue.put_nowait(record)

    def close(self) -> None:
        """The container stopped: flush partial lines and end every follower."""
        for stream in (1, 2):
            self.flush(stream)
        if self.file is not None:
            self.file.close()
            self.file = None
        for queue in self.followers:
            queue.put_nowait(None)

    def history(self) -> list[LogRecord]:
        records: list[LogRecord] = []
        try:
            with open(self.path, encoding="utf-8") as f:
                for seq, line in enumerate(f):
                    try:
                        entry = json.loads(line)
                        secs = _parse_time(entry["time"])
                        records.append(LogRecord(seq, STREAM_IDS.get(entry["stream"], 1), secs,
                                                 entry["log"].encode()))
                    except (ValueError, KeyError, TypeError):
                        continue
        except FileNotFoundError:
            pass
        return records

    def subscribe(self) -> asyncio.Queue[LogRecord | None]:
        """A queue that receives every new record, then None when the container stops."""
        queue: asyncio.Queue[LogRecord | None] = asyncio.Queue()
        self.followers.add(queue)
        return queue

    async def read(self, *, follow: bool, tail: int | None, since: float | None, until: float | None,
                   streams: set[int], running: bool, history: bool = True,
                   queue: asyncio.Queue[LogRecord | None] | None = None) -> AsyncIterator[LogRecord]:
        """Records from the file, then (when following a running container) live ones until it stops."""
        if queue is None:
            queue = self.subscribe() if follow and running else asyncio.Queue()
        try:
            seen = -1
            if history:
                records = [r for r in self.history() if r.stream in streams
                           and (since is None or r.time_ns >= since * 1e9)
                           and (until is None or r.time_ns <= until * 1e9)]
                if tail is not None:
                    records = [line for r in records for line in r.lines()]
                    records = records[-tail:] if tail > 0 else []
                for record in records:
                    seen = record.seq
                    yield record
            else:
                self._ensure_count()
                seen = self.count - 1
            if not (follow and running):
                return
            while True:
                record = await queue.get()
                if record is None:
                    return
                if record.seq > seen and record.stream in streams:
                    if until is not None and record.time_ns > until * 1e9:
                        return
                    yield record
        finally:
            self.followers.discard(queue)


def _parse_time(text: str) -> int:
    main, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
