"""``kiosk-admin evaluate-open-set`` on a slice of the LFW development photos: rates, DET plot, cache, calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from harness.docs import REPO, docs_snippet
from kiosk.admin import main as admin_main

pytestmark = pytest.mark.slow

PEOPLE_WITH_FOUR = 24
PEOPLE_WITH_ONE = 40


@pytest.fixture(scope="session")
def lfw_slice(tmp_path_factory, test_data):
    """24 people with 4 photos and 40 with one (136 photos), and a descriptor cache filled once."""
    src = test_data / "faces/lfw_dev"
    root = tmp_path_factory.mktemp("lfw-slice") / "lfw"
    four = one = 0
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        n = len(list(d.glob("*.jpg")))
        if n == 4 and four < PEOPLE_WITH_FOUR:
            four += 1
        elif n == 1 and one < PEOPLE_WITH_ONE:
            one += 1
        else:
            continue
        (root / d.name).mkdir(parents=True)
        for photo in d.glob("*.jpg"):
            os.symlink(photo, root / d.name / photo.name)
    # Where default_cache_path() points with XDG_CACHE_HOME set to root.parent: the docs' commands share it.
    cache = root.parent / "kiosk-data" / "descriptors.sqlite"
    return root, cache


def usable_photos(root, cache) -> dict[str, int]:
    from kiosk.config import DetectSettings
    from kiosk.evaluation.descriptors import DescriptorCache, describe_samples
    from kiosk.evaluation.openset import people_of
    from kiosk.evaluation.pairs import Describer, labelled_images

    samples = labelled_images(root)
    db = DescriptorCache(cache)
    try:
        assert describe_samples(samples, Describer(DetectSettings(), face="central"), db, progress=False) == 0
    finally:
        db.close()
    return {k: len(v) for k, v in people_of(samples, 20).items()}


def run(capsys, root, cache, *args) -> dict:
    capsys.readouterr()
    assert admin_main(["evaluate-open-set", str(root), "--descriptor-cache", str(cache), "--folds", "3", "--json",
                       *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_open_set_rates_per_size_single_and_visits(lfw_slice, capsys, tmp_path):
    root, cache = lfw_slice
    png = tmp_path / "det.png"
    r = run(capsys, root, cache, "--enroll-photos", "1", "--visit-photos", "2", "--sizes", "10,all",
            "--threshold", "0.45", "--no-mean-template", "--plot", str(png))
    d = r["data"]
    assert d["identities"] == PEOPLE_WITH_FOUR + PEOPLE_WITH_ONE and d["images"] == 4 * PEOPLE_WITH_FOUR + PEOPLE_WITH_ONE
    used = d["used"]
    sizes = {s["size"]: s for s in r["sizes"]}
    assert set(sizes) == {"10", "all"} and sizes["10"]["residents"] == 10
    everyone = sizes["all"]
    # Each person is a stranger in one fold (all their photos) and enrolled from one photo in the others.
    assert everyone["single"]["non_mated"] == used
    assert everyone["single"]["mated"] == 2 * (used - d["identities"])
    assert everyone["visit"]["mated"] > 0 and everyone["visit"]["non_mated"] > 0
    for s in sizes.values():
        for kind in ("single", "visit"):
            x = s[kind]
            assert 0 <= x["fpir"] <= x["fpir_upper95"] <= 1 and 0 <= x["wrong"] <= x["fnir"] <= 1
            assert x["false_accepts"] == round(x["fpir"] * x["non_mated"])
        assert s["point"] == {"threshold": 0.45, "margin": 0.06, "visit_threshold": 0.42, "cohort_weight": 0.0,
                              "source": "config"}
    # LFW is harder than a door, but most residents' photos are still recognised and few strangers pass.
    assert everyone["single"]["fnir"] < 0.7 and everyone["single"]["fpir"] < 0.05
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A looser threshold lets more strangers in and turns fewer residents away.
    loose = {s["size"]: s for s in run(capsys, root, cache, "--enroll-photos", "1", "--sizes", "all",
                                        "--threshold", "0.6", "--no-mean-template")["sizes"]}["all"]
    assert loose["single"]["fnir"] < everyone["single"]["fnir"] and loose["single"]["fpir"] > everyone["single"]["fpir"]


def test_descriptors_come_from_the_cache(lfw_slice, capsys, monkeypatch):
    from kiosk.evaluation.pairs import Describer

    root, cache = lfw_slice
    run(capsys, root, cache, "--sizes", "all", "--threshold", "0.45")  # fills the cache if no test did

    def no_more(self, image):
        raise AssertionError("a cached descriptor was computed again")

    monkeypatch.setattr(Describer, "describe", no_more)
    r = run(capsys, root, cache, "--sizes", "all", "--threshold", "0.45")
    assert r["data"]["used"] > 100


def test_only_people_with_enough_photos_are_enrolled(lfw_slice, capsys):
    root, cache = lfw_slice
    r = run(capsys, root, cache, "--enroll-photos", "3", "--sizes", "all", "--threshold", "0.45", "--mean-template")
    everyone = r["sizes"][0]
    photos = usable_photos(root, cache)  # per person, those with a face
    residents = [n for n in photos.values() if n >= 3]
    others = [n for n in photos.values() if n < 3]
    # Residents are the people with 3 usable photos or more (enrolled from 3, probed with the rest), each
    # enrolled in 2 of the 3 folds and a stranger in the third; the others are strangers in every fold.
    assert len(residents) >= PEOPLE_WITH_FOUR - 3
    assert everyone["single"]["mated"] == 2 * sum(n - 3 for n in residents)
    assert everyone["single"]["non_mated"] == 3 * sum(others) + sum(residents)
    assert r["protocol"]["mean_template"] and r["protocol"]["enroll_photos"] == 3
    mixed = run(capsys, root, cache, "--enroll-photos", "3", "--sizes", "all", "--threshold", "0.45", "--mixed")
    assert mixed["sizes"][0]["single"]["non_mated"] == sum(photos.values())


def test_calibration_measured_on_the_slice_loads(lfw_slice, capsys, tmp_path):
    from kiosk.config import MatchSettings
    from kiosk.match.calibration import Calibration, operating_point

    root, cache = lfw_slice
    out = tmp_path / "calibration.json"
    r = run(capsys, root, cache, "--enroll-photos", "1", "--sizes", "10,30", "--fpir-target", "0",
            "--write-calibration", str(out))
    cal = Calibration.from_json(json.loads(out.read_text()))
    assert cal.sizes == [10, 30] and r["calibration"]["rule"]["margin"] == cal.margin
    assert all(p.visit_threshold <= p.threshold for p in cal.points)
    for p in json.loads(out.read_text())["points"]:  # resolvable: the target allows a false accept at all
        assert p["resolvable"] == (p["fpir_target"] * p["non_mated"] / p["repeats"] >= 1
                                   and p["fpir_target"] * p["non_mated_single"] / p["repeats"] >= 1)
    assert any(p.resolvable for p in cal.points) and not all(p.resolvable for p in cal.points)
    point = operating_point(MatchSettings(fpir_target=0.05), 20, cal)
    assert point.source == "calibration" and point.calibrated_size == 30


def run_docs(snippet: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    """A shell snippet of docs/recognition.md, verbatim, in ``cwd`` (where ``lfw-dev`` is the slice)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(cache.parent.parent)}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture
def docs_folder(lfw_slice, tmp_path):
    root, cache = lfw_slice
    (tmp_path / "lfw-dev").symlink_to(root)
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    (tmp_path / "kiosk/match").mkdir(parents=True)  # where scripts/calibrate writes, relative to it
    return tmp_path, cache


def test_the_open_set_command_of_the_docs(docs_folder):
    d, cache = docs_folder
    r = run_docs(docs_snippet("recognition-open-set"), d, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "visit" in r.stdout and "single" in r.stdout and "only" in r.stdout  # the slice has fewer than 100
    assert (d / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SETS = ("essex-faces94-dev", "orl-dev", "extyaleb-dev")


def test_the_calibration_command_of_the_docs_fits_on_every_set_and_judges_each(docs_folder, test_data):
    from kiosk.match.calibration import Calibration

    d, cache = docs_folder
    # Stand-ins under the names the command reads (the real halves come from data/recipes/): three disjoint
    # groups of six AT&T/ORL subjects, four photos each.
    for k, name in enumerate(SETS):
        for i in range(6 * k + 1, 6 * k + 7):
            (d / name / f"s{i}").mkdir(parents=True)
            for j in range(1, 5):
                (d / name / f"s{i}" / f"{j}.pgm").symlink_to(test_data / f"faces/att_orl/s{i}/{j}.pgm")
    r = run_docs(docs_snippet("recognition-calibrate"), d, cache)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    written = json.loads((d / "kiosk/match/calibration.json").read_text())
    cal = Calibration.from_json(written)
    assert cal.sizes[0] == 10 and 0 < cal.margin <= 0.08 and written["protocol"]["seeds"] == [0, 1, 2]
    # Every cell lists every set that can form its gallery (or a smaller one); the report judges each set
    # fitted with it and without it; the quality study and the LFW check at 1,000 follow.
    assert {name for p in written["points"] for name in p["sets"]} == {"lfw-dev", *SETS}
    assert all(f"{name:<20} without" in r.stdout and f"{name:<20} all" in r.stdout for name in ("lfw-dev", *SETS))
    assert "  width " in r.stdout and "  yaw " in r.stdout and "galleries of 1,000" in r.stdout


def test_the_quality_stress_commands_of_the_docs(tmp_path, test_data):
    """The synthetic small and soft faces, on a stand-in for lfw-dev: 8 AT&T/ORL subjects with 10 photos each."""
    for i in range(1, 9):
        (tmp_path / "lfw-dev" / f"s{i}").mkdir(parents=True)
        for j in range(1, 11):
            (tmp_path / "lfw-dev" / f"s{i}" / f"{j}.pgm").symlink_to(test_data / f"faces/att_orl/s{i}/{j}.pgm")
    cache = tmp_path / "xdg/kiosk-data/descriptors.sqlite"
    r = run_docs(docs_snippet("recognition-quality-stress"), tmp_path, cache)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "lfw-dev-synthetic-small: 48 photos" in r.stdout and "lfw-dev-synthetic-control: 48 photos" in r.stdout
    small = next(tmp_path.glob("lfw-dev-synthetic-small/s1/*.png"))
    assert cv2.imread(str(small)).shape[:2] == (50, 41)  # 112 x 92 at 0.45
    soft = next(tmp_path.glob("lfw-dev-synthetic-soft/s1/*.png"))
    assert cv2.imread(str(soft)).shape[:2] == (112, 92)
    for name in ("control", "small", "soft"):
        assert f"lfw-dev-synthetic-{name}, " in r.stdout
    assert "  sharpness " in r.stdout


def test_the_evidence_command_of_the_docs(docs_folder):
    d, cache = docs_folder
    r = run_docs(docs_snippet("recognition-evidence"), d, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "variant" not in ln]
    assert len(rows) == 6 and rows[0].startswith("| one photo per resident (today) |")
