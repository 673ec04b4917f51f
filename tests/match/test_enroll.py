"""Enrollment from real photos: refusals with reasons, sealed templates, no photo kept."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from kiosk.admin import main as admin_main
from kiosk.errors import EnrollmentRefused
from kiosk.match.detect import BLURRED, NO_FACE, PARTLY_OUTSIDE, SEVERAL_FACES, TOO_SMALL
from kiosk.match.enroll import Enroller

FR = "faces/face_recognition"


@pytest.fixture(scope="module")
def enroller():
    from kiosk.config import KioskConfig

    return Enroller(KioskConfig().detect)


@pytest.mark.parametrize(
    "photo, reason",
    [
        ("faces/dlib_examples/dogs.jpg", NO_FACE),
        (f"{FR}/examples/two_people.jpg", SEVERAL_FACES),
        (f"{FR}/examples/knn_examples/test/obama_and_biden.jpg", SEVERAL_FACES),
        (f"{FR}/examples/obama-240p.jpg", TOO_SMALL),
        (f"{FR}/tests/test_images/obama_partial_face.jpg", PARTLY_OUTSIDE),
    ],
)
def test_refusals_name_the_reason(enroller, test_data, photo, reason):
    with pytest.raises(EnrollmentRefused) as e:
        enroller.from_file(test_data / photo)
    assert e.value.reason == reason
    assert str(test_data / photo) in str(e.value)


def test_blurred_face_is_refused(enroller, test_data, tmp_path):
    import cv2

    img = cv2.imread(str(test_data / f"{FR}/tests/test_images/obama.jpg"))
    blurred = cv2.GaussianBlur(img, (0, 0), 9)
    path = tmp_path / "blurred.png"
    cv2.imwrite(str(path), blurred)
    with pytest.raises(EnrollmentRefused) as e:
        enroller.from_file(path)
    assert e.value.reason in (BLURRED, NO_FACE)  # heavy blur may hide the face entirely
    assert e.value.reason == BLURRED, "a moderately blurred face should be found and refused as blurred"


def test_good_photo_gives_one_template(enroller, test_data):
    (t,) = enroller.from_file(test_data / f"{FR}/tests/test_images/obama.jpg")
    assert t.vector.shape == (128,) and t.vector.dtype == np.float32
    assert len(t.source_sha256) == 64


def test_webp_named_jpg_is_read_by_content(enroller, test_data):
    (t,) = enroller.from_file(test_data / "faces/deepface_unit/img47.jpg")
    assert np.isfinite(t.vector).all()


def test_enroll_cli_enrolls_the_rest_and_keeps_no_photo(test_data, tmp_path, capsys):
    state = tmp_path / "state"
    good = test_data / f"{FR}/tests/test_images/obama.jpg"
    bad = test_data / f"{FR}/examples/two_people.jpg"
    rc = admin_main(["enroll", "--state-dir", str(state), "--id", "R-1", "--name", "Barack", str(good), str(bad)])
    out = capsys.readouterr()
    assert rc == 0
    assert "refused" in out.err and "more than one face" in out.err
    assert "R-1: 1 template(s) enrolled, 1 photo(s) refused" in out.out
    # Enrolling the same photo again adds nothing.
    admin_main(["enroll", "--state-dir", str(state), "--id", "R-1", "--name", "Barack", str(good)])
    assert "0 template(s) enrolled" in capsys.readouterr().out
    db = sqlite3.connect(state / "kiosk.db")
    (count,) = db.execute("SELECT count(*) FROM templates").fetchone()
    assert count == 1
    # The photo's bytes are nowhere in the database (a JPEG chunk from its middle).
    raw = good.read_bytes()
    chunk = raw[len(raw) // 2 : len(raw) // 2 + 64]
    db.close()
    assert chunk not in (state / "kiosk.db").read_bytes()
    assert ((state / "template.key").stat().st_mode & 0o777) == 0o600


def test_enroll_dir_uses_folder_names_as_ids(test_data, tmp_path, capsys):
    src = tmp_path / "people"
    for who in ("biden", "obama"):
        shutil.copytree(test_data / f"{FR}/examples/knn_examples/train/{who}", src / who)
    (src / "nobody").mkdir()
    shutil.copy(test_data / "faces/dlib_examples/dogs.jpg", src / "nobody" / "dogs.jpg")
    rc = admin_main(["enroll-dir", "--state-dir", str(tmp_path / "s"), str(src)])
    out = capsys.readouterr()
    assert rc == 0
    assert "2 resident(s) enrolled with 4 template(s); 1 photo(s) refused" in out.out
    assert "no face found" in out.err
    ids = [r[0] for r in sqlite3.connect(tmp_path / "s" / "kiosk.db").execute("SELECT id FROM residents ORDER BY id")]
    assert ids == ["biden", "obama"]


def test_bad_resident_id_is_refused(test_data, tmp_path):
    with pytest.raises(SystemExit, match="resident id"):
        admin_main(["enroll", "--state-dir", str(tmp_path), "--id", "../../etc", "--name", "x",
                    str(test_data / f"{FR}/tests/test_images/obama.jpg")])
