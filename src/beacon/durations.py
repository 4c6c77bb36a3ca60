"""Go-style durations: the form Consul uses for every duration field in its JSON.

``parse_duration`` accepts what a Consul agent accepts in a request body:

* a Go duration string (``"10s"``, ``"1m30s"``, ``"500ms"``, ``"1.5h"``, ``"-2s"``, ``"0"``), units
  ``ns us µs ms s m h``;
* a JSON number, meaning **nanoseconds** (``30000000000`` is 30 s);

either within a Go ``time.Duration`` (int64 nanoseconds, about 292 years), as Go refuses the rest.

A bare numeric string such as ``"30"`` has no unit and is rejected, as Go's ``time.ParseDuration``
rejects it (``"0"`` is the one exception). Results are float seconds.

``format_duration`` renders seconds the way Go's ``Duration.String`` does (``"10s"``, ``"1m30s"``,
``"1h0m0s"``, ``"500ms"``, ``"0s"``), which is what ``/v1/agent/checks`` shows in ``Interval`` and
``Timeout``.
"""

from __future__ import annotations

import re

__all__ = ["DurationError", "format_duration", "parse_duration"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NS_LIMIT = 2**63  # a Go time.Duration is int64 nanoseconds (about 292 years); Go refuses the rest
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)")


class DurationError(ValueError):
    """A value that is not a valid Go duration."""


def parse_duration(value: object) -> float:
    """Return ``value`` as float seconds; raise :class:`DurationError` if it is not a duration."""
    if isinstance(value, bool):  # bool is an int subclass; true/false are not durations
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        ns: float = value
    elif isinstance(value, str):
        ns = _parse_go_string(value)
    else:
        raise DurationError(f"invalid duration {value!r}")
    if not -_NS_LIMIT <= ns < _NS_LIMIT:  # NaN and infinities too
        raise DurationError(f"invalid duration {value!r}: out of range")
    return ns / 1e9


def _parse_go_string(text: str) -> int:
    """Parse a Go duration string to integer nanoseconds (rounded like Go for fractions)."""
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f'invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _COMPONENT.match(s, pos)
        if m is None:
            if re.fullmatch(r"[\d.]+", s[pos:]):
                raise DurationError(f'missing unit in duration "{text}"')
            raise DurationError(f'invalid duration "{text}"')
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            # "s" or ".s": a unit without a number
            raise DurationError(f'invalid duration "{text}"')
        if unit not in _NS_PER_UNIT:
            raise DurationError(f'unknown unit "{unit}" in duration "{text}"')
        scale = _NS_PER_UNIT[unit]
        whole, frac = whole.lstrip("0"), (frac or "")[:20]  # further digits are below a nanosecond
        if len(whole) > 20:  # past any Duration (and past what int() takes from a string)
            raise DurationError(f'invalid duration "{text[:40]}": out of range')
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // (10 ** len(frac))
        pos = m.end()
    return sign * total


def _fraction(value: int, digits: int) -> str:
    """Render ``value`` (an integer count of 10**-digits units) as '.ddd' with trailing zeros cut."""
    if value == 0:
        return ""
    return "." + f"{value:0{digits}d}".rstrip("0")


def format_duration(seconds: float) -> str:
    """Render float seconds as Go's ``time.Duration.String()`` does."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{ns // 1_000}{_fraction(ns % 1_000, 3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{ns // 1_000_000}{_fraction(ns % 1_000_000, 6)}ms"
    whole_s, frac_ns = divmod(ns, 1_000_000_000)
    hours, rem = divmod(whole_s, 3600)
    minutes, secs = divmod(rem, 60)
    out = f"{secs}{_fraction(frac_ns, 9)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{out}"
    if minutes:
        return f"{sign}{minutes}m{out}"
    return f"{sign}{out}"
