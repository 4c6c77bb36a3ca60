from beacon.checks import StatusHandler


class Sink:
    def __init__(self):
        self.calls = []

    def update_check(self, check_id, status, output):
        self.calls.append((status, output))


def feed(handler, statuses):
    for i, status in enumerate(statuses):
        handler.update(status, f"run{i}")


def test_without_thresholds_every_result_is_reported():
    sink = Sink()
    feed(StatusHandler(sink, "c"), ["passing", "critical", "warning", "critical"])
    assert [s for s, _ in sink.calls] == ["passing", "critical", "warning", "critical"]


def test_first_result_is_reported_at_once_even_with_thresholds():
    sink = Sink()
    feed(StatusHandler(sink, "c", success_before_passing=3, failures_before_critical=3), ["passing"])
    assert sink.calls == [("passing", "run0")]
    sink2 = Sink()
    feed(StatusHandler(sink2, "c", success_before_passing=3, failures_before_critical=3), ["critical"])
    assert sink2.calls == [("critical", "run0")]


def test_failures_are_held_until_failures_before_critical_in_a_row():
    sink = Sink()
    h = StatusHandler(sink, "c", failures_before_critical=3)
    feed(h, ["passing", "critical", "critical", "passing", "critical", "critical", "critical"])
    # the passing at run3 resets the failure count, so only run6 completes three in a row
    assert sink.calls == [("passing", "run0"), ("passing", "run3"), ("critical", "run6")]


def test_successes_are_held_until_success_before_passing_in_a_row():
    sink = Sink()
    h = StatusHandler(sink, "c", success_before_passing=2)
    feed(h, ["critical", "passing", "critical", "passing", "passing", "warning"])
    assert sink.calls == [("critical", "run0"), ("critical", "run2"), ("passing", "run4"),
                          ("warning", "run5")]


def test_failures_before_warning_reports_warning_first_then_critical():
    sink = Sink()
    h = StatusHandler(sink, "c", failures_before_warning=1, failures_before_critical=3)
    feed(h, ["passing", "critical", "critical", "critical", "critical"])
    assert sink.calls == [("passing", "run0"), ("warning", "run1"), ("warning", "run2"),
                          ("critical", "run3"), ("critical", "run4")]


def test_failures_before_warning_defaults_to_failures_before_critical():
    sink = Sink()
    h = StatusHandler(sink, "c", failures_before_critical=2)
    feed(h, ["passing", "critical", "critical"])
    assert sink.calls == [("passing", "run0"), ("critical", "run2")]
