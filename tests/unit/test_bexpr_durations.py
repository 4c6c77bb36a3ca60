from __future__ import annotations

import pytest

from beacon.agent.http.bexpr import FilterError, compile_filter
from beacon.durations import DurationError, format_duration, parse_duration

SVC = {"ID": "web1", "Service": "web", "Tags": ["primary", "v1"], "Port": 80,
       "Meta": {"env": "prod", "key-with-dash": "x"}, "Address": "",
       "Checks": [{"CheckID": "a", "Status": "passing"}, {"CheckID": "b", "Status": "critical"}]}


@pytest.mark.parametrize("expr,expected", [
    ('Service == "web"', True),
    ('Service != "web"', False),
    ("Service == web", True),
    ('"primary" in Tags', True),
    ('"secondary" in Tags', False),
    ('"secondary" not in Tags', True),
    ('Tags contains "v1"', True),
    ('Tags not contains "v1"', False),
    ('Meta.env == "prod"', True),
    ('Meta["key-with-dash"] == "x"', True),
    ('Meta.missing == "x"', False),
    ('Service matches "^w.b$"', True),
    ('Service not matches "^db"', True),
    ("Address is empty", True),
    ("Tags is not empty", True),
    ('Service == "web" and Port == 80', True),
    ('Service == "db" or Port == 80', True),
    ('not (Service == "db" or Port == 81)', True),
    ('Checks.Status == "critical"', True),
    ('"critical" in Checks.Status', True),
    ("Service == `web`", True),
])
def test_filter_expressions(expr: str, expected: bool) -> None:
    assert compile_filter(expr)(SVC) is expected


@pytest.mark.parametrize("bad", ["", "Service ==", 'Service = "x"', "(Service == x", "Service matches \"(\"", "Service ~ x"])
def test_bad_filters_raise_with_consul_prefix(bad: str) -> None:
    with pytest.raises(FilterError, match="^Failed to create boolean expression evaluator"):
        compile_filter(bad)


@pytest.mark.parametrize("text,seconds", [
    ("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("0", 0), ("1.5s", 1.5), ("-2s", -2),
    (10_000_000_000, 10), (2.5e9, 2.5),
])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["30", "", "s", "10x", "1m30", True, None, [1]])
def test_parse_duration_rejects(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["2562048h", "9999999999h", 2**63, -(2**63) - 1024, 2.0**70, float("nan"),
                                 float("inf"), "1" * 5000 + "s"])
def test_parse_duration_refuses_what_a_go_duration_cannot_hold(bad) -> None:
    """Found by generated requests: such a value was stored, and a read that encodes it failed."""
    with pytest.raises(DurationError, match="out of range"):
        parse_duration(bad)


def test_parse_duration_at_the_edges_of_a_go_duration() -> None:
    assert parse_duration("2562047h") == 2562047 * 3600
    assert parse_duration(-(2**63)) == pytest.approx(-(2**63) / 1e9)
    assert parse_duration("0." + "1" * 5000 + "s") == pytest.approx(0.111111111)
    assert parse_duration("00010s") == 10


@pytest.mark.parametrize("seconds,text", [(10, "10s"), (90, "1m30s"), (0.5, "500ms"), (3600, "1h0m0s"), (0, "0s")])
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text
