"""Bounded capture of check output (Consul keeps 4 KB by default).

Script and docker checks keep the *tail* of what the command printed (errors usually come last)
and say how much was dropped; HTTP checks keep the tail of the body; TTL updates keep the head.
"""

from __future__ import annotations

__all__ = ["TailBuffer", "truncate_head"]


class TailBuffer:
    """Keeps the last ``size`` bytes written and counts everything written."""

    __slots__ = ("_buf", "size", "total")

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.total = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > self.size:
            del self._buf[: len(self._buf) - self.size]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._buf)

    def text(self) -> str:
        return bytes(self._buf).decode("utf-8", errors="replace")

    def render(self) -> str:
        """The kept text, prefixed with a note when bytes were dropped (Consul's wording)."""
        out = self.text()
        if self.truncated:
            return f"Captured {len(self._buf)} of {self.total} bytes\n...\n{out}"
        return out


def truncate_head(output: str, size: int) -> str:
    """Keep the first ``size`` bytes of ``output``, noting how much was captured."""
    data = output.encode("utf-8", errors="replace")
    if len(data) <= size:
        return output
    head = data[:size].decode("utf-8", errors="ignore")
    return f"{head} ... (captured {size} of {len(data)} bytes)"
