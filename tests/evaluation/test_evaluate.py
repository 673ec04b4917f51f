"""``kiosk-admin evaluate``: pairs, rates, visits, and the report on real photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kiosk.admin import main as admin_main
from kiosk.evaluation.pairs import Sample, pair_distances, visit_distances


def sample(identity, vector, sha=None):
    return Sample(path=None, identity=identity, sha256=sha or f"{identity}-{vector}", vector=np.asarray(vector, float))


def test_byte_identical_photos_are_not_paired():
    a1, a2 = sample("a", [0.0, 0.0], "same"), sample("a", [0.0, 0.0], "same")
    b = sample("b", [1.0, 0.0])
    ev = pair_distances([a1, a2, b])
    assert ev.identical_pairs_skipped == 1
    assert len(ev.genuine) == 0 and sorted(ev.impostor) == [1.0, 1.0]


def test_visit_pairs_average_k_photos_against_each_template():
    # Person a: four photos scattered round a centre; b: one photo far away.
    a = [sample("a", v) for v in ([0.2, 0.0], [-0.2, 0.0], [0.0, 0.2], [0.0, -0.2])]
    b = [sample("b", [3.0, 0.0])]
    ev = visit_distances(a + b, k=3)
    # Each of a's photos is a template once; the other three are the visit. Their mean
    # lies a third of the way from the centre towards the opposite side of the template.
    assert len(ev.genuine) == 4
    assert ev.genuine == pytest.approx([0.2 + 0.2 / 3] * 4)
    assert len(ev.impostor) == 4  # each visit of a against b's one photo (b has too few photos to visit)
    singles = pair_distances(a + b)
    assert np.median(ev.genuine) < np.median(singles.genuine)


def test_visit_needs_more_photos_than_k():
    ev = visit_distances([sample("a", [0.0, 0.0]), sample("a", [0.1, 0.0]), sample("b", [1.0, 0.0])], k=2)
    assert len(ev.genuine) == 0


@pytest.mark.slow
def test_evaluate_on_orl_faces_reports_rates_visits_and_a_plot(test_data, tmp_path, capsys):
    src = test_data / "faces/att_orl"
    people = sorted(p for p in src.iterdir() if p.is_dir())[:4]
    root = tmp_path / "orl"
    for p in people:
        shutil.copytree(p, root / p.name)
    png = tmp_path / "roc.png"
    assert admin_main(["evaluate", str(root), "--visit", "5", "--json", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["identities"] == 4 and r["images"] == 40
    assert r["genuine_pairs"] + r["impostor_pairs"] > 0
    assert r["genuine_distance"]["median"] < r["impostor_distance"]["median"]
    assert 0 <= r["far"] <= r["baseline_far"] <= 1 and 0 <= r["tar"] <= r["baseline_tar"] <= 1
    assert r["visit"]["photos"] == 5 and r["visit"]["threshold"] == 0.42
    assert r["visit"]["genuine_distance"]["median"] < r["genuine_distance"]["median"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
