"""Vivaldi network coordinates as Serf reports them, and round-trip estimates as Consul computes them.

A coordinate is Serf's ``{"Vec": [8 floats], "Error", "Adjustment", "Height"}`` (seconds); Consul's
``Coord`` JSON has the same fields. The estimated RTT between two nodes is the Euclidean distance
between their vectors plus both heights, plus both adjustments unless that would make it non-positive
(hashicorp/serf ``coordinate.DistanceTo``), truncated to whole nanoseconds as Go's time.Duration does.
A missing coordinate is infinitely far (Consul's ``lib.ComputeDistance``), so nodes without one sort
last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Coordinate:
    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Coordinate:
        """From Serf's RPC body or Consul's Coord JSON (same field names)."""
        try:
            return cls(vec=tuple(float(x) for x in d["Vec"]), error=float(d["Error"]),
                       adjustment=float(d["Adjustment"]), height=float(d["Height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a network coordinate: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {"Vec": list(self.vec), "Error": self.error, "Adjustment": self.adjustment, "Height": self.height}

    def is_valid(self) -> bool:
        return all(math.isfinite(x) for x in (*self.vec, self.error, self.adjustment, self.height))

    def is_compatible_with(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)


def rtt(a: Coordinate | None, b: Coordinate | None) -> float:
    """Estimated round trip between two coordinates, in seconds; +inf when either is unknown or the
    two are not comparable (different dimensionality)."""
    if a is None or b is None or not a.is_compatible_with(b):
        return math.inf
    dist = math.sqrt(sum((x - y) ** 2 for x, y in zip(a.vec, b.vec, strict=True))) + a.height + b.height
    adjusted = dist + a.adjustment + b.adjustment
    if adjusted > 0.0:
        dist = adjusted
    return int(dist * 1e9) / 1e9


def sort_by_rtt(origin: Coordinate | None, items: Iterable[T], coord_of: Callable[[T], Coordinate | None]
                ) -> list[T]:
    """Consul's ``?near=``: stable sort of `items` by estimated RTT from `origin` (unknown last)."""
    items = list(items)
    if origin is None:
        return items
    return sorted(items, key=lambda it: rtt(origin, coord_of(it)))


def datacenter_rtt(origin: Coordinate | None, coords: Sequence[Coordinate | None]) -> float:
    """Consul's getDatacenterDistance: the median (upper middle) of the RTTs from `origin` to the
    servers of a datacenter that have a coordinate; +inf when none has."""
    dists = sorted(rtt(origin, c) for c in coords if c is not None)
    if not dists:
        return math.inf
    return dists[len(dists) // 2]


def sort_datacenters(own_dc: str, origin: Coordinate | None,
                     servers: Iterable[tuple[str, Coordinate | None]]) -> list[str]:
    """Datacenter names sorted by estimated RTT (own datacenter first at 0, ties and unknowns by
    name), as ``/v1/catalog/datacenters`` lists them. `servers` are (datacenter, WAN coordinate)."""
    by_dc: dict[str, list[Coordinate | None]] = {own_dc: []}
    for dc, coord in servers:
        by_dc.setdefault(dc, []).append(coord)
    dist = {dc: 0.0 if dc == own_dc else datacenter_rtt(origin, coords) for dc, coords in by_dc.items()}
    return sorted(dist, key=lambda dc: (dist[dc], dc))
