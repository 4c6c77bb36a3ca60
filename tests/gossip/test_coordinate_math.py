"""Round-trip estimates and sorting from network coordinates, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from beacon.gossip.coordinate import Coordinate, datacenter_rtt, rtt, sort_by_rtt, sort_datacenters


def c(*vec: float, height: float = 0.0, adjustment: float = 0.0) -> Coordinate:
    return Coordinate(vec=tuple(vec), error=1.5, adjustment=adjustment, height=height)


def test_rtt_is_distance_plus_heights_plus_adjustments() -> None:
    a, b = c(0.0, 0.0, height=0.001), c(0.003, 0.004, height=0.002)
    assert rtt(a, b) == pytest.approx(0.005 + 0.003)
    assert rtt(a, b) == rtt(b, a)
    # Adjustments apply only while the result stays positive (serf's DistanceTo).
    assert rtt(c(0.0, 0.0, adjustment=-0.002), c(0.003, 0.004)) == pytest.approx(0.003)
    assert rtt(c(0.0, 0.0, adjustment=-0.01), c(0.003, 0.004)) == pytest.approx(0.005)
    # Truncated to whole nanoseconds, as time.Duration holds it.
    assert rtt(c(0.0), c(1.23456789012)) == 1.234567890


def test_unknown_or_incompatible_coordinates_are_infinitely_far() -> None:
    assert math.isinf(rtt(None, c(0.0)))
    assert math.isinf(rtt(c(0.0, 0.0), c(0.0)))


def test_coordinate_json_round_trip_and_bad_input() -> None:
    raw = {"Vec": [0.1] * 8, "Error": 0.5, "Adjustment": -0.0001, "Height": 1e-05}
    assert Coordinate.from_json(raw).to_json() == raw
    with pytest.raises(ValueError, match="not a network coordinate"):
        Coordinate.from_json({"Vec": [0.1]})
    assert not Coordinate(vec=(math.nan,), error=1, adjustment=0, height=0).is_valid()


def test_near_sort_puts_unknown_coordinates_last_and_keeps_order_on_ties() -> None:
    origin = c(0.0, 0.0)
    nodes = {"far": c(0.3, 0.4), "none": None, "near": c(0.03, 0.04), "tie-a": c(0.0, 0.5), "tie-b": c(0.5, 0.0)}
    order = sort_by_rtt(origin, ["none", "far", "tie-b", "near", "tie-a"], nodes.__getitem__)
    assert order == ["near", "far", "tie-b", "tie-a", "none"]


def test_datacenters_sort_by_median_server_rtt() -> None:
    me = c(0.0, 0.0)
    servers = [("dc3", c(0.010, 0.0)), ("dc3", c(0.020, 0.0)), ("dc3", c(0.500, 0.0)),  # median 20 ms
               ("dc2", c(0.030, 0.0)), ("dc2", None),                                   # 30 ms
               ("dc4", None), ("dc1", c(9.0, 0.0))]                                     # unknown; own dc
    assert datacenter_rtt(me, [s for d, s in servers if d == "dc3"]) == pytest.approx(0.020)
    assert sort_datacenters("dc1", me, servers) == ["dc1", "dc3", "dc2", "dc4"]
    assert sort_datacenters("dc1", None, servers) == ["dc1", "dc2", "dc3", "dc4"]
