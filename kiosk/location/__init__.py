"""Is the kiosk at its service location? Position providers, and the guard that decides.

Providers report the latest :class:`Fix` (position, horizontal error, when
it came):

- ``fixed``: the service location itself. The installer confirmed the
  position by provisioning on site; the device trusts it.
- ``gpsd``: a GPS receiver through gpsd, spoken to in gpsd's JSON protocol
  over TCP on a thread named "gpsd" (no gps library needed).
- ``wifi``: the access points seen now against a fingerprint taken at
  installation; a match reports the service location with a set error.

The :class:`LocationGuard` turns fixes into one of three states, with
hysteresis so that GPS jitter at the boundary does not flap:

- VERIFIED: within the clock-in radius, allowing for the fix's error;
- OUT_OF_RANGE: beyond it, even allowing for the error;
- UNVERIFIED: no fix, a stale fix, a fix too vague to tell, or no service
  location known.

A policy per state (accept, flag, refuse) says what happens to check-ins.

Modules: :mod:`.base` (the types), one per provider (:mod:`.fixed`,
:mod:`.gpsd`, :mod:`.wifi`) and :mod:`.guard`.
"""

from .base import EARTH_RADIUS_M, Fix, LocationProvider, LocationState, ServiceLocation, distance_m
from .fixed import FixedProvider
from .gpsd import GpsdProvider
from .guard import LocationGuard, StateChange, open_guard
from .wifi import WifiProvider, iw_scan, parse_iw_scan, similarity, take_fingerprint

__all__ = [
    "EARTH_RADIUS_M", "Fix", "FixedProvider", "GpsdProvider", "LocationGuard", "LocationProvider",
    "LocationState", "ServiceLocation", "StateChange", "WifiProvider", "distance_m", "iw_scan",
    "open_guard", "parse_iw_scan", "similarity", "take_fingerprint",
]
