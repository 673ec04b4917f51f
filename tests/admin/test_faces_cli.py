"""`kiosk-admin faces` and `compare` on the face_recognition test photos."""

from __future__ import annotations

import json

from kiosk.admin import main as admin_main
from kiosk.config import KioskConfig

IMAGES = "faces/face_recognition/tests/test_images"


def test_faces_finds_exactly_one_face_in_obama(test_data, capsys):
    assert admin_main(["faces", str(test_data / IMAGES / "obama.jpg")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    face = json.loads(lines[0])
    # Box in original pixels, face_recognition's order; the face is in the upper middle of the photo.
    assert face["top"] < face["bottom"] and face["left"] < face["right"]
    assert 200 < face["width"] < 350
    assert face["ok"] is True and face["reasons"] == []
    assert face["sharpness"] > 0


def test_faces_prints_one_line_per_face(test_data, capsys):
    admin_main(["faces", str(test_data / "faces/face_recognition/examples/two_people.jpg")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert {json.loads(x)["face"] for x in lines} == {0, 1}


def _distance(test_data, capsys, a, b) -> dict:
    assert admin_main(["compare", "--json", str(test_data / IMAGES / a), str(test_data / IMAGES / b)]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_same_person_under_threshold_other_over(test_data, capsys):
    threshold = KioskConfig().match.threshold
    for other in ("obama2.jpg", "obama3.jpg"):
        r = _distance(test_data, capsys, "obama.jpg", other)
        assert r["distance"] < threshold and r["match"] is True
    r = _distance(test_data, capsys, "obama.jpg", "biden.jpg")
    assert r["distance"] > threshold and r["match"] is False


def test_missing_or_unreadable_images_are_clear_errors(tmp_path, capsys):
    assert admin_main(["compare", str(tmp_path / "missing.jpg"), str(tmp_path / "b.jpg")]) == 1
    assert "missing.jpg: No such file or directory" in capsys.readouterr().err
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert admin_main(["faces", str(junk)]) == 1
    assert "not an image OpenCV can read" in capsys.readouterr().out
