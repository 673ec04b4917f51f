"""What a position is: the service location, a fix, the distance between them, a provider."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8


class LocationState(str, enum.Enum):
    VERIFIED = "VERIFIED"
    UNVERIFIED = "UNVERIFIED"
    OUT_OF_RANGE = "OUT_OF_RANGE"


@dataclass(frozen=True)
class ServiceLocation:
    """Where the kiosk serves, and the clock-in radius around it."""

    latitude: float
    longitude: float
    radius_m: float

    @property
    def known(self) -> bool:
        return not (self.latitude == 0.0 and self.longitude == 0.0)


@dataclass(frozen=True)
class Fix:
    """A position report: ``accuracy_m`` is the horizontal error (None: not reported),
    ``at`` the monotonic time it arrived, ``seq`` counts fixes from one provider."""

    latitude: float
    longitude: float
    accuracy_m: float | None
    at: float
    seq: int
    source: str


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine; well within a metre at these ranges)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class LocationProvider(Protocol):
    name: str
    #: Seconds between the provider's own refreshes (a fix may be this old without being stale).
    refresh_s: float

    def start(self) -> None: ...

    def current(self) -> Fix | None: ...

    def close(self) -> None: ...
