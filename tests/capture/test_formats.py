"""One list of picture and video suffixes, and every reader of files honours it."""

from __future__ import annotations

import cv2
import pytest

from kiosk.capture.folder import FolderSource, list_images
from kiosk.capture.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from kiosk.errors import SourceExhausted
from kiosk.evaluation.pairs import labelled_images
from kiosk.match.enroll import read_image, video_frames

OBAMA = "faces/face_recognition/examples/obama.jpg"
WALKING_GIF = "video/intel_sample_videos_previews/face-demographics-walking-and-pause.gif"


@pytest.fixture(scope="module")
def every_image_format(tmp_path_factory, test_data):
    """The same real photo written once in every image format the kiosk reads."""
    img = cv2.imread(str(test_data / OBAMA))
    img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2))
    d = tmp_path_factory.mktemp("formats") / "obama"
    d.mkdir()
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    for suffix in sorted(IMAGE_SUFFIXES):
        ok, data = cv2.imencode(suffix, grey if suffix in (".pgm", ".pbm") else img)  # one channel by definition
        assert ok, suffix
        (d / f"photo{suffix.upper() if suffix == '.jpg' else suffix}").write_bytes(data.tobytes())
    return d, img.shape


def test_the_lists_do_not_overlap():
    assert not IMAGE_SUFFIXES & VIDEO_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def test_every_image_format_is_decoded_by_enrollment(every_image_format):
    d, shape = every_image_format
    files = sorted(d.iterdir())
    assert len(files) == len(IMAGE_SUFFIXES)
    for f in files:
        assert read_image(f).shape[:2] == shape[:2], f.name


def test_a_folder_source_plays_every_image_format(every_image_format):
    d, shape = every_image_format
    assert len(list_images(d)) == len(IMAGE_SUFFIXES)  # .JPG too: suffixes are case-insensitive
    with FolderSource(d) as src:
        frames = []
        while True:
            try:
                frames.append(src.read())
            except SourceExhausted:
                break
    assert len(frames) == len(IMAGE_SUFFIXES)
    assert all(f.image.shape[:2] == shape[:2] for f in frames)


def test_evaluation_reads_every_image_format(every_image_format):
    d, _ = every_image_format
    samples = labelled_images(d.parent)
    assert {s.path.suffix.lower() for s in samples} == IMAGE_SUFFIXES
    assert {s.identity for s in samples} == {"obama"}


def test_a_gif_is_read_as_a_video(test_data, tmp_path):
    gif = test_data / WALKING_GIF
    assert gif.suffix in VIDEO_SUFFIXES
    frames = video_frames(gif, count=5)
    assert len(frames) == 5 and frames[0].shape[:2] == (270, 480)
    (tmp_path / "clip.gif").write_bytes(gif.read_bytes())
    assert list_images(tmp_path) == []  # a folder of stills skips it
