import pytest

from beacon.checks import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("value", "seconds"), [
    ("10s", 10.0),
    ("1m30s", 90.0),
    ("500ms", 0.5),
    ("1h", 3600.0),
    ("1.5s", 1.5),
    (".5s", 0.5),
    ("1h2m3.25s", 3723.25),
    ("250us", 0.00025),
    ("250\u00b5s", 0.00025),
    ("100ns", 1e-7),
    ("0", 0.0),
    ("-2s", -2.0),
    ("+3s", 3.0),
    (30_000_000_000, 30.0),  # JSON numbers are nanoseconds
    (1_500_000_000.0, 1.5),
    (0, 0.0),
])
def test_parse_duration_accepts_go_strings_and_nanoseconds(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["30", "1m30", "", "s", "10 s", "1x", "ten seconds", "1..5s", True, None, [], {}])
def test_parse_duration_rejects_values_without_a_valid_unit(value):
    with pytest.raises(DurationError):
        parse_duration(value)


def test_bare_number_string_error_names_the_missing_unit():
    with pytest.raises(DurationError, match='missing unit in duration "30"'):
        parse_duration("30")


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10s"),
    (90, "1m30s"),
    (3600, "1h0m0s"),
    (3723.5, "1h2m3.5s"),
    (0.5, "500ms"),
    (1.5, "1.5s"),
    (0.0015, "1.5ms"),
    (0.000002, "2\u00b5s"),
    (0, "0s"),
    (-2, "-2s"),
])
def test_format_duration_matches_go_duration_string(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["10s", "1m30s", "1h0m0s", "500ms", "2h45m12.5s"])
def test_format_and_parse_round_trip(text):
    assert format_duration(parse_duration(text)) == text
