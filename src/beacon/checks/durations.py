"""Go durations for check definitions: the project's one implementation lives in :mod:`beacon.durations`."""

from beacon.durations import DurationError, format_duration, parse_duration

__all__ = ["DurationError", "format_duration", "parse_duration"]
