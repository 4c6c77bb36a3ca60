"""Integers read from untrusted text, and the ranges of Go's integer types Consul decodes into."""

from __future__ import annotations

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def ascii_int(text: str, max_digits: int = 19, signed: bool = False) -> int | None:
    """The integer ``text`` spells in at most ``max_digits`` ASCII digits (after one leading "-"
    when ``signed``), or None.

    Not ``str.isdigit()`` and ``int()`` alone: ``isdigit()`` is true of "¹" and other characters
    ``int()`` refuses, and ``int()`` refuses strings of over 4,300 digits; both used to raise past
    handlers that expected a clean answer."""
    digits = text[1:] if signed and text[:1] == "-" else text
    if not (0 < len(digits) <= max_digits and digits.isascii() and digits.isdigit()):
        return None
    return int(text)
