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
"""

from __future__ import annotations

import enum
import json
import logging
import math
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import KioskConfig, LocationSettings
from .errors import ConfigError

log = logging.getLogger(__name__)

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


# -- fixed ------------------------------------------------------------------------


class FixedProvider:
    """The service location, confirmed by the installer: always a fresh, exact fix."""

    name = "fixed"
    refresh_s = 0.0

    def __init__(self, service: ServiceLocation, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self._clock = clock

    def start(self) -> None:
        pass

    def current(self) -> Fix | None:
        if not self.service.known:
            return None
        return Fix(self.service.latitude, self.service.longitude, 0.0, self._clock(), 1, self.name)

    def close(self) -> None:
        pass


# -- gpsd -------------------------------------------------------------------------


class GpsdProvider:
    """Fixes from gpsd's JSON protocol (``?WATCH``), read on a thread named "gpsd".

    A lost connection is retried with back-off; meanwhile the last fix ages
    and the guard calls it stale. Reports without a 2D/3D fix (``mode`` < 2)
    are counted, not used.
    """

    name = "gpsd"
    refresh_s = 0.0

    def __init__(self, host: str, port: int, *, clock: Callable[[], float] = time.monotonic,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, connect_timeout: float = 5.0):
        self.host, self.port = host, port
        self._clock = clock
        self._backoff = (backoff_initial, backoff_max)
        self._connect_timeout = connect_timeout
        self._fix: Fix | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # What happened, for status and tests.
        self.connects = 0
        self.reports = 0  # TPV reports read
        self.no_fix_reports = 0
        self.fixes = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpsd", daemon=True)
            self._thread.start()

    def current(self) -> Fix | None:
        return self._fix

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        """Stop reading; safe to call twice."""
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(self._connect_timeout + 2)

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                self._session()
                delay = self._backoff[0]  # it worked for a while: start the back-off afresh
            except OSError as e:
                if self._stop.is_set():
                    break
                if self.last_error != str(e):
                    log.warning("gpsd at %s:%d: %s; retrying", self.host, self.port, e)
                self.last_error = str(e)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._backoff[1])

    def _session(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        with self._lock:
            self._sock = sock
        try:
            sock.settimeout(None)
            sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
            self.connects += 1
            self.last_error = None
            log.info("gpsd at %s:%d: connected", self.host, self.port)
            buf = b""
            while not self._stop.is_set():
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("gpsd closed the connection")
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line)
                if len(buf) > 65536:  # no newline in 64 KiB: not gpsd
                    raise ConnectionError("garbage from gpsd")
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def _line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("class") != "TPV":
            return
        self.reports += 1
        lat, lon, mode = msg.get("lat"), msg.get("lon"), msg.get("mode", 0)
        if not isinstance(mode, int) or mode < 2 or not _finite(lat) or not _finite(lon):
            self.no_fix_reports += 1
            return
        acc = msg.get("eph")
        if not _finite(acc):
            epx, epy = msg.get("epx"), msg.get("epy")
            acc = max(epx, epy) if _finite(epx) and _finite(epy) else None
        self.fixes += 1
        self._fix = Fix(float(lat), float(lon), None if acc is None else float(acc), self._clock(), self.fixes, self.name)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# -- Wi-Fi fingerprint ------------------------------------------------------------


def iw_scan(interface: str, *, timeout: float = 20.0) -> dict[str, float]:
    """Access points seen (BSSID -> signal dBm) by ``iw``; a fresh scan when allowed, else the cached one."""
    for args in (["iw", "dev", interface, "scan"], ["iw", "dev", interface, "scan", "dump"]):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"cannot run {' '.join(args)}: {e}") from e
        if out.returncode == 0:
            return parse_iw_scan(out.stdout)
    raise RuntimeError(f"iw could not scan on {interface}: {out.stderr.strip()}")


def parse_iw_scan(text: str) -> dict[str, float]:
    seen: dict[str, float] = {}
    bssid = None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("BSS "):
            bssid = s[4:21].lower()
            seen[bssid] = -100.0
        elif bssid and s.startswith("signal:"):
            try:
                seen[bssid] = float(s.split()[1])
            except (IndexError, ValueError):
                pass
    return seen


def take_fingerprint(scan: Callable[[], dict[str, float]], path: Path, *, scans: int = 3) -> dict[str, Any]:
    """Scan a few times and keep the access points seen (written 0644 as JSON)."""
    seen: dict[str, list[float]] = {}
    for _ in range(scans):
        for bssid, rssi in scan().items():
            seen.setdefault(bssid, []).append(rssi)
    if not seen:
        raise RuntimeError("no access points seen: a Wi-Fi fingerprint needs some")
    fp = {"v": 1, "taken_at": int(time.time()),
          "access_points": {b: round(sum(r) / len(r), 1) for b, r in sorted(seen.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(fp, indent=2) + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)
    return fp


def similarity(fingerprint: dict[str, float], seen: dict[str, float]) -> float:
    """Share of the fingerprint's access points seen now (0..1)."""
    return len(set(fingerprint) & set(seen)) / len(fingerprint) if fingerprint else 0.0


class WifiProvider:
    """The service location while enough of the installation's access points are seen."""

    name = "wifi"

    def __init__(self, service: ServiceLocation, fingerprint: dict[str, float], scan: Callable[[], dict[str, float]],
                 *, min_similarity: float, accuracy_m: float, interval_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if not fingerprint:
            raise ConfigError("location.wifi_fingerprint lists no access points")
        self.service, self.fingerprint, self._scan = service, fingerprint, scan
        self.min_similarity, self.accuracy_m, self.refresh_s = min_similarity, accuracy_m, interval_s
        self._clock = clock
        self._fix: Fix | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0
        self.last_similarity: float | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wifi", daemon=True)
            self._thread.start()

    def scan_once(self) -> None:
        try:
            seen = self._scan()
        except RuntimeError as e:
            log.warning("wifi scan failed: %s", e)
            self._fix = None
            return
        self.scans += 1
        self.last_similarity = similarity(self.fingerprint, seen)
        if self.last_similarity >= self.min_similarity and self.service.known:
            s = self.service
            self._fix = Fix(s.latitude, s.longitude, self.accuracy_m, self._clock(), self.scans, self.name)
        else:
            self._fix = None

    def current(self) -> Fix | None:
        return self._fix

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan_once()
            self._stop.wait(self.refresh_s)


# -- the guard --------------------------------------------------------------------


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
