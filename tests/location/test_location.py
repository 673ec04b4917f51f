"""The location guard on fixes it is handed: distance, radius plus error, staleness, hysteresis, policy.

A fake provider is driven (``report``) and a fake clock advanced; the real
gpsd tests are in test_location_gpsd.py.
"""

from __future__ import annotations

import json

import pytest

from gpsd import north_of
from kiosk.config import LocationSettings, parse_config
from kiosk.errors import ConfigError
from kiosk.location import (
    Fix,
    FixedProvider,
    LocationGuard,
    LocationState,
    ServiceLocation,
    WifiProvider,
    distance_m,
    open_guard,
    parse_iw_scan,
    similarity,
    take_fingerprint,
)

V, U, O = LocationState.VERIFIED, LocationState.UNVERIFIED, LocationState.OUT_OF_RANGE
HOME = ServiceLocation(31.2304, 121.4737, 100.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DrivenProvider:
    """A provider the test moves: ``report(metres_north, accuracy)``, or ``lose()`` the fix."""

    name = "driven"
    refresh_s = 0.0

    def __init__(self, clock: Clock):
        self.clock = clock
        self.fix: Fix | None = None
        self.seq = 0
        self.closed = 0

    def report(self, metres: float, accuracy: float | None = 10.0) -> None:
        self.seq += 1
        lat, lon = north_of(HOME.latitude, HOME.longitude, metres)
        self.fix = Fix(lat, lon, accuracy, self.clock(), self.seq, self.name)

    def lose(self) -> None:
        self.fix = None

    def start(self):
        pass

    def current(self):
        return self.fix

    def close(self):
        self.closed += 1


def guard(**settings):
    clock = Clock()
    provider = DrivenProvider(clock)
    return LocationGuard(LocationSettings(**settings), HOME, provider, clock=clock), provider, clock


def states(g) -> list[LocationState]:
    return [c.new for c in g.changes]


def test_great_circle_distance():
    # Shanghai People's Square to the Bund, and Paris to London (published great-circle distances).
    assert distance_m(31.2304, 121.4737, 31.2400, 121.4900) == pytest.approx(1900, rel=0.02)
    assert distance_m(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343_500, rel=0.005)
    assert distance_m(*north_of(10.0, 20.0, 2000.0), 10.0, 20.0) == pytest.approx(2000.0, abs=0.01)
    assert distance_m(1.0, 179.9995, 1.0, -179.9995) == pytest.approx(111.2, abs=0.5)  # across the date line


def test_inside_the_radius_is_verified_and_accepted():
    g, p, _ = guard()
    p.report(40.0, accuracy=10.0)
    change = g.update()
    assert change.old is U and change.new is V
    assert g.distance_m == pytest.approx(40.0, abs=0.1) and g.policy() == "accept"
    assert g.claims() == {"location_state": "VERIFIED", "location_distance_m": 40.0, "location_accuracy_m": 10.0,
                          "location_flagged": False}


def test_error_counts_in_the_devices_favour_only_up_to_max_accuracy():
    g, p, _ = guard(max_accuracy_m=200.0)
    p.report(180.0, accuracy=90.0)  # 180 - 100 - 90 < 0: could be inside
    g.update()
    assert g.state is V
    g2, p2, _ = guard(max_accuracy_m=200.0)
    p2.report(150.0, accuracy=250.0)  # too vague to tell anything
    g2.update()
    assert g2.state is U and g2.reason == "fix too vague"
    g3, p3, _ = guard()
    p3.report(30.0, accuracy=None)
    g3.update()
    assert g3.state is U and "error estimate" in g3.reason


def test_two_km_away_is_out_of_range_and_refused_by_default():
    g, p, _ = guard()
    p.report(2000.0)
    assert g.update().new is O
    assert g.policy() == "refuse"
    assert g.claims()["location_distance_m"] == pytest.approx(2000.0, abs=0.1)
    g2, p2, _ = guard(when_out_of_range="flag")
    p2.report(2000.0)
    g2.update()
    assert g2.policy() == "flag" and g2.claims()["location_flagged"] is True


def test_no_fix_and_stale_fix_are_unverified():
    g, p, clock = guard(stale_after_s=30.0)
    assert g.update() is None and g.state is U and g.reason == "no fix"
    assert g.policy() == "flag" and g.claims()["location_flagged"] is True
    p.report(10.0)
    g.update()
    assert g.state is V
    clock.now += 29
    assert g.update() is None and g.state is V
    clock.now += 2
    change = g.update()
    assert change.new is U and change.reason.startswith("stale fix")
    assert g.claims()["location_distance_m"] is None
    p.report(10.0)  # a fresh fix decides at once
    assert g.update().new is V
    p.lose()
    assert g.update().new is U and g.reason == "no fix"


def test_unknown_service_location_is_unverified():
    g = LocationGuard(LocationSettings(), ServiceLocation(0.0, 0.0, 100.0), FixedProvider(ServiceLocation(0, 0, 100)))
    assert g.update() is None
    assert g.state is U and "no service location" in g.reason


def test_policy_per_state_is_configured():
    g, _, _ = guard(when_unverified="refuse", when_out_of_range="accept")
    assert g.policy(U) == "refuse" and g.policy(O) == "accept" and g.policy(V) == "accept"


# The boundary is radius + error = 110 m; jitter of ±15 m around it.
JITTER = [95, 125, 98, 122, 105, 118, 92, 126, 100, 121, 97, 124, 103, 119, 96, 123]


def test_jitter_across_the_boundary_does_not_flap():
    g, p, _ = guard(hysteresis_m=25.0, confirm_fixes=3)
    p.report(50.0)
    g.update()
    for d in JITTER:
        p.report(float(d))
        g.update()
    assert states(g) == [V]


def test_without_hysteresis_the_same_jitter_flaps():
    # The control: the jitter above really crosses the plain boundary.
    g, p, _ = guard(hysteresis_m=0.0, confirm_fixes=1)
    p.report(50.0)
    g.update()
    for d in JITTER:
        p.report(float(d))
        g.update()
    assert len(states(g)) > 10


def test_leaving_takes_confirmed_fixes_beyond_the_margin_and_coming_back_too():
    g, p, _ = guard(hysteresis_m=25.0, confirm_fixes=3)
    p.report(0.0)
    g.update()
    for d in (140, 140):  # 30 m beyond the boundary, but only twice
        p.report(float(d))
        assert g.update() is None
    p.report(100.0)  # the streak is broken
    g.update()
    for _ in range(2):
        p.report(140.0)
        assert g.update() is None
    p.report(140.0)
    assert g.update().new is O
    # The same fix read again is not a new fix.
    assert g.update() is None
    for d in (90, 90):  # back inside, but not 25 m inside the boundary
        p.report(float(d))
        assert g.update() is None
    for _ in range(2):
        p.report(80.0)
        assert g.update() is None
    p.report(80.0)
    assert g.update().new is V
    assert states(g) == [V, O, V]


def test_fixed_provider_is_the_service_location():
    clock = Clock()
    g = LocationGuard(LocationSettings(), HOME, FixedProvider(HOME, clock), clock=clock)
    assert g.update().new is V
    clock.now += 10_000  # never stale: confirmed by the installer
    assert g.update() is None and g.state is V and g.distance_m == 0.0


IW_DUMP = """\
BSS 3c:84:6a:11:22:33(on wlan0)
\tTSF: 123 usec
\tfreq: 2437
\tsignal: -48.00 dBm
\tSSID: block7-lobby
BSS 3C:84:6A:44:55:66(on wlan0) -- associated
\tsignal: -71.00 dBm
\tSSID: block7-guard
BSS f0:9f:c2:00:00:01(on wlan0)
\tSSID: neighbour
"""


def test_iw_scan_output_is_parsed():
    assert parse_iw_scan(IW_DUMP) == {"3c:84:6a:11:22:33": -48.0, "3c:84:6a:44:55:66": -71.0, "f0:9f:c2:00:00:01": -100.0}


def test_wifi_fingerprint_taken_then_matched_and_mismatched(tmp_path):
    seen = parse_iw_scan(IW_DUMP)
    fp = take_fingerprint(lambda: seen, tmp_path / "wifi.json", scans=2)
    assert json.loads((tmp_path / "wifi.json").read_text())["access_points"] == fp["access_points"]
    assert similarity(fp["access_points"], seen) == 1.0
    now = {"scan": dict(seen)}
    clock = Clock()
    provider = WifiProvider(HOME, fp["access_points"], lambda: now["scan"], min_similarity=0.6, accuracy_m=50.0,
                            interval_s=60.0, clock=clock)
    g = LocationGuard(LocationSettings(stale_after_s=30.0), HOME, provider, clock=clock)
    provider.scan_once()
    assert g.update().new is V and g.accuracy_m == 50.0
    clock.now += 100  # between scans a minute apart, the fix is not stale
    assert g.update() is None and g.state is V
    now["scan"] = {"3c:84:6a:11:22:33": -50.0, "aa:bb:cc:dd:ee:ff": -40.0}  # one of three: moved
    provider.scan_once()
    assert provider.last_similarity == pytest.approx(1 / 3)
    assert g.update().new is U


def test_open_guard_follows_the_config(tmp_path, state_dir):
    cfg = parse_config(f'[device]\nstate_dir = "{state_dir}"\n[location]\nprovider = "none"\n')
    assert open_guard(cfg) is None
    cfg = parse_config(f'[device]\nstate_dir = "{state_dir}"\n[location]\nprovider = "gpsd"\ngpsd_port = 29999\n')
    g = open_guard(cfg)
    assert g.provider.name == "gpsd" and g.provider.port == 29999
    cfg = parse_config(f'[device]\nstate_dir = "{state_dir}"\n[location]\nprovider = "wifi"\n')
    with pytest.raises(ConfigError, match="wifi_fingerprint"):
        open_guard(cfg)
    with pytest.raises(ConfigError, match="when_out_of_range"):
        parse_config('[location]\nwhen_out_of_range = "ignore"\n')
