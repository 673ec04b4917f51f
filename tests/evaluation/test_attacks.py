"""Attack-clip synthesis and `kiosk-admin make-attacks`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from kiosk.admin import main as admin_main
from kiosk.evaluation.attacks import (
    ATTACK_TYPES, ClipEntry, Pose, hand_path, plane_homography, read_manifest, render_attack, write_clip, write_manifest,
)


def textured_photo(seed=0, size=(200, 160)):
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    return img


def test_plane_facing_the_camera_is_an_axis_aligned_centred_rectangle():
    H = plane_homography(200, 100, Pose(0, 0, 0, 0, 0, 1.0), (640, 480), fill=0.5)
    corners = cv2.perspectiveTransform(np.array([[[0, 0], [200, 100]]], np.float32), H)[0]
    assert corners[0] == pytest.approx([320 - 240, 240 - 120], abs=0.5)
    assert corners[1] == pytest.approx([320 + 240, 240 + 120], abs=0.5)


def test_tilted_plane_is_a_true_perspective_not_an_affine_map():
    H = plane_homography(200, 200, Pose(25, 0, 0, 0, 0, 1.0))
    assert abs(H[2, 0]) > 1e-5  # yaw foreshortens one side: a projective term
    near, far = cv2.perspectiveTransform(np.array([[[0, 0], [0, 200]], [[200, 0], [200, 200]]], np.float32).reshape(1, 4, 2), H)[0].reshape(2, 2, 2)
    assert abs(np.linalg.norm(near[0] - near[1]) - np.linalg.norm(far[0] - far[1])) > 5


def test_hand_path_is_smooth_and_a_still_hand_moves_less():
    rng = np.random.default_rng(1)
    moving = np.array([[p.yaw, p.pitch] for p in hand_path(40, rng)])
    still = np.array([[p.yaw, p.pitch] for p in hand_path(40, np.random.default_rng(1), still=True)])
    assert np.abs(np.diff(moving, axis=0)).max() < 6  # degrees per frame: a hand, not a jump
    assert np.ptp(still[:, 0]) < np.ptp(moving[:, 0])


@pytest.mark.parametrize("kind", ATTACK_TYPES)
def test_render_attack_frames(kind):
    frames = render_attack(textured_photo(), kind, 6, np.random.default_rng(2))
    assert len(frames) == 6
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[5])  # the picture moves


def test_screen_has_periodic_detail_a_print_lacks():
    photo = cv2.GaussianBlur(textured_photo(3, (300, 300)), (0, 0), 3)  # smooth content: detail comes from the medium

    def detail(kind):
        f = render_attack(photo, kind, 1, np.random.default_rng(4))[0].astype(np.float32).mean(2)
        centre = f[200:280, 280:360]
        return float(np.abs(centre - cv2.GaussianBlur(centre, (0, 0), 1.5)).mean())

    assert detail("screen") > 2 * detail("print")


def test_unknown_attack_type_is_refused():
    with pytest.raises(ValueError, match="unknown attack type"):
        render_attack(textured_photo(), "mask", 2, np.random.default_rng(0))


def test_manifest_round_trip_and_bad_manifest(tmp_path):
    write_clip(render_attack(textured_photo(), "print", 2, np.random.default_rng(0)), tmp_path / "print/000")
    e = ClipEntry("print/000", "attack", "print", "x.jpg", 2, 15.0)
    write_manifest(tmp_path, [e])
    assert read_manifest(tmp_path) == [e]
    assert sorted(p.name for p in (tmp_path / "print/000").iterdir()) == ["000.jpg", "001.jpg"]
    (tmp_path / "manifest.json").write_text(json.dumps({"clips": [{"path": 1}]}))
    with pytest.raises(ValueError, match="not a clip manifest"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="make-attacks"):
        read_manifest(tmp_path / "nowhere")


def test_make_attacks_refuses_bad_input(tmp_path, test_data, capsys):
    with pytest.raises(SystemExit, match="--data"):
        admin_main(["make-attacks", str(tmp_path / "out"), "--data", str(tmp_path)])
    with pytest.raises(SystemExit, match="bad --types"):
        admin_main(["make-attacks", str(tmp_path / "out"), "--data", str(test_data), "--types", "mask"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        admin_main(["make-attacks", str(tmp_path / "full"), "--data", str(test_data)])
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_make_attacks_writes_clips_and_manifest(tmp_path, test_data, capsys):
    out = tmp_path / "set"
    assert admin_main(["make-attacks", str(out), "--data", str(test_data), "--per-type", "1", "--frames", "4",
                       "--genuine-seconds", "2"]) == 0
    clips = read_manifest(out)
    attacks = [c for c in clips if c.label == "attack"]
    genuine = [c for c in clips if c.label == "genuine"]
    assert sorted(c.attack_type for c in attacks) == sorted(ATTACK_TYPES)
    assert len(genuine) >= 15 and all(c.attack_type is None for c in genuine)
    for c in clips:
        assert len(list((out / c.path).glob("*.jpg"))) == c.frames
        assert not c.source.startswith("/")  # data-set paths, relative
    assert "attack clips" in capsys.readouterr().out
