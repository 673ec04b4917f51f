"""The guard: from the provider's fixes to a location state, with hysteresis; and the one the config asks for."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import KioskConfig, LocationSettings
from ..errors import ConfigError
from .base import LocationProvider, LocationState, ServiceLocation, distance_m
from .fixed import FixedProvider
from .gpsd import GpsdProvider
from .wifi import WifiProvider, iw_scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateChange:
    old: LocationState
    new: LocationState
    reason: str
    distance_m: float | None
    accuracy_m: float | None


class LocationGuard:
    """Decides the location state from the provider's fixes.

    :meth:`update` is called regularly (the daemon: about once a second) and
    returns a :class:`StateChange` when the state changed. Between VERIFIED
    and OUT_OF_RANGE the state moves only after ``confirm_fixes`` new fixes
    in a row lie ``hysteresis_m`` beyond the boundary (radius plus the
    fix's error); the first fix after UNVERIFIED decides at once.
    """

    def __init__(self, settings: LocationSettings, service: ServiceLocation, provider: LocationProvider,
                 *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.service = service
        self.provider = provider
        self._clock = clock
        self.state = LocationState.UNVERIFIED
        self.reason = "starting"
        self.distance_m: float | None = None
        self.accuracy_m: float | None = None
        self.fix_age_s: float | None = None
        self._last_seq: int | None = None
        self._streak = 0
        self.changes: deque[StateChange] = deque(maxlen=100)

    def policy(self, state: LocationState | None = None) -> str:
        """What a check-in gets in ``state`` (default: now): "accept", "flag" or "refuse"."""
        state = state or self.state
        if state is LocationState.VERIFIED:
            return "accept"
        if state is LocationState.OUT_OF_RANGE:
            return self.settings.when_out_of_range
        return self.settings.when_unverified

    def update(self) -> StateChange | None:
        s = self.settings
        fix = self.provider.current()
        now = self._clock()
        self.fix_age_s = None if fix is None else max(0.0, now - fix.at)
        stale_after = max(s.stale_after_s, 2 * getattr(self.provider, "refresh_s", 0.0))
        if not self.service.known:
            return self._unverified("no service location (not provisioned)")
        if fix is None:
            return self._unverified("no fix")
        if self.fix_age_s > stale_after:
            return self._unverified(f"stale fix ({self.fix_age_s:.0f} s old)")
        if fix.accuracy_m is None or fix.accuracy_m > s.max_accuracy_m:
            return self._unverified("fix too vague" if fix.accuracy_m is not None else "fix without error estimate")
        if fix.seq == self._last_seq and self.state is not LocationState.UNVERIFIED:
            return None  # nothing new
        self._last_seq = fix.seq
        d = distance_m(self.service.latitude, self.service.longitude, fix.latitude, fix.longitude)
        self.distance_m, self.accuracy_m = d, fix.accuracy_m
        excess = d - self.service.radius_m - fix.accuracy_m  # > 0: outside even allowing for the error
        if self.state is LocationState.UNVERIFIED:
            self._streak = 0
            new = LocationState.VERIFIED if excess <= 0 else LocationState.OUT_OF_RANGE
            return self._move(new, f"{d:.0f} m from the service location (error {fix.accuracy_m:.0f} m)")
        if self.state is LocationState.VERIFIED:
            crossing = excess > s.hysteresis_m
            target = LocationState.OUT_OF_RANGE
        else:
            crossing = excess < -s.hysteresis_m
            target = LocationState.VERIFIED
        self._streak = self._streak + 1 if crossing else 0
        if self._streak >= s.confirm_fixes:
            self._streak = 0
            return self._move(target, f"{d:.0f} m from the service location (error {fix.accuracy_m:.0f} m), "
                                      f"{s.confirm_fixes} fixes in a row")
        return None

    def _unverified(self, reason: str) -> StateChange | None:
        self.distance_m = self.accuracy_m = None
        self._streak = 0
        return self._move(LocationState.UNVERIFIED, reason)

    def _move(self, new: LocationState, reason: str) -> StateChange | None:
        old = self.state
        self.reason = reason
        if new is old:
            return None
        self.state = new
        change = StateChange(old, new, reason, _r(self.distance_m), _r(self.accuracy_m))
        self.changes.append(change)
        level = logging.INFO if new is LocationState.VERIFIED else logging.WARNING
        log.log(level, "location %s -> %s: %s", old.value, new.value, reason)
        return change

    def claims(self) -> dict[str, Any]:
        """What every event says about the location."""
        return {
            "location_state": self.state.value,
            "location_distance_m": _r(self.distance_m),
            "location_accuracy_m": _r(self.accuracy_m),
            "location_flagged": self.policy() == "flag",
        }

    def status(self) -> dict[str, Any]:
        """The location part of the device status."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "provider": self.provider.name,
            "distance_m": _r(self.distance_m),
            "accuracy_m": _r(self.accuracy_m),
            "fix_age_s": _r(self.fix_age_s),
            "radius_m": self.service.radius_m,
            "policy": self.policy(),
        }

    def close(self) -> None:
        self.provider.close()


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def open_guard(config: KioskConfig, *, clock: Callable[[], float] = time.monotonic,
               scan: Callable[[], dict[str, float]] | None = None) -> LocationGuard | None:
    """The guard the config asks for (not started), or None for provider "none"."""
    s = config.location
    if s.provider == "none":
        return None
    service = ServiceLocation(s.latitude, s.longitude, s.radius_m)
    if s.provider == "fixed":
        provider: LocationProvider = FixedProvider(service, clock)
    elif s.provider == "gpsd":
        provider = GpsdProvider(s.gpsd_host, s.gpsd_port, clock=clock)
    else:
        path = config.state_path(s.wifi_fingerprint)
        try:
            fp = json.loads(path.read_text())["access_points"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"location.wifi_fingerprint {path}: unreadable ({e}); take one with "
                              "`kiosk provision --wifi-fingerprint`") from None
        provider = WifiProvider(service, fp, scan or (lambda: iw_scan(s.wifi_interface)),
                                min_similarity=s.wifi_min_similarity, accuracy_m=s.wifi_accuracy_m,
                                interval_s=s.wifi_scan_interval_s, clock=clock)
    return LocationGuard(s, service, provider, clock=clock)
