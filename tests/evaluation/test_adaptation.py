"""Door templates measured (kiosk.evaluation.adaptation, `kiosk-admin evaluate-adaptation`): enroll from one
session, adapt on a second, judge on a third, with the stolen-code run.

CI has no camera sessions (the recipes' Replay-Attack and NUAA parts are not in the shared data), so the runs
here take real photos as sessions: 60 people of the shared LFW development photos, photo 1 enrolled, photos 2-3
to adapt on, photo 4 judged; and the docs' command on the shared ORL subjects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.docs import docs_snippet
from harness.faces import described
from kiosk.config import MatchSettings
from kiosk.evaluation.adaptation import Plan, measure
from kiosk.evaluation.sessions import Person, photo_parts

pytestmark = pytest.mark.slow

PLAN = Plan("a", "b", ("c",), enroll_frames=1, visit_frames=1, folds=2)


@pytest.fixture(scope="module")
def people(test_data, tmp_path_factory):
    src = test_data / "faces/lfw_dev"
    chosen = [d.name for d in sorted(src.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) == 4][:60]
    found = described(src, chosen, tmp_path_factory.mktemp("adaptation") / "descriptors.sqlite")
    return [Person(k, {"a": v[:1], "b": v[1:3], "c": v[3:]}) for k, v in found.items()]


def test_door_templates_turn_fewer_residents_away_and_the_point_reads_the_larger_gallery(people):
    rep = measure(people, PLAN, match=MatchSettings())
    without, with_door = rep["without"], rep["with"]
    assert without["mated"] == with_door["mated"] > 0 and without["non_mated"] == with_door["non_mated"] > 0
    assert with_door["fnir"] < without["fnir"], (without, with_door)
    for f in rep["folds"]:
        assert f["door_templates"] > 0 and f["door_templates"] <= 3 * f["residents"]
        assert f["effective"] >= f["residents"] and f["threshold_with"] <= f["threshold"]
        assert f["proposed"] >= f["door_templates"]
    # The folds add up to the report.
    for key in ("without", "with"):
        assert sum(f[key]["misses"] for f in rep["folds"]) == rep[key]["misses"]
        assert sum(f[key]["false_accepts"] for f in rep["folds"]) == rep[key]["false_accepts"]
    # Residents' visits by judging session: here one session, so all of them.
    assert {k: (v["without"]["misses"], v["with"]["mated"]) for k, v in rep["by_session"].items()} == {
        "c": (without["misses"], with_door["mated"])}
    p = rep["poisoning"]
    assert p["tries"] > 0 and p["farthest_from_enrolled"] <= p["anchor_max"]


def test_no_door_template_is_admitted_past_the_anchor_and_none_at_all_when_none_may_be(people):
    none = measure(people, PLAN, match=MatchSettings(), max_door_templates=0, with_poisoning=False)
    assert all(f["door_templates"] == 0 for f in none["folds"])
    assert none["with"]["misses"] >= none["without"]["misses"]  # nothing added, and the point is no looser
    tight = measure(people, PLAN, match=MatchSettings(), anchor=0.2, with_poisoning=False)
    loose = measure(people, PLAN, match=MatchSettings(), anchor=0.45, with_poisoning=False)
    count = lambda rep: sum(f["door_templates"] for f in rep["folds"])  # noqa: E731
    assert count(tight) < count(loose)
    assert sum(f["refused"].get("not_anchored", 0) for f in tight["folds"]) > 0


def test_a_person_without_every_session_is_a_stranger_only(people):
    short = [Person("short-" + p.identity, {"c": p.sessions["c"]}) for p in people[:5]]
    rep = measure(people[5:] + short, PLAN, match=MatchSettings(), with_poisoning=False)
    assert rep["people"] == len(people) - 5 and rep["strangers_only"] == 5
    base = measure(people[5:], PLAN, match=MatchSettings(), with_poisoning=False)
    assert rep["without"]["non_mated"] == base["without"]["non_mated"] + 5 * PLAN.folds


def test_photo_sets_are_cut_into_consecutive_sessions(test_data):
    people = photo_parts(test_data / "faces/att_orl")
    assert len(people) == 40
    s1 = people[0].sessions
    assert [len(s1[k]) for k in ("p1", "p2", "p3")] == [4, 3, 3]
    assert [x.path.name for x in s1["p1"]] == ["1.pgm", "2.pgm", "3.pgm", "4.pgm"]


def test_the_adaptation_command_of_the_docs(test_data, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "KIND": "photos", "SESSIONS": str(test_data / "faces/att_orl")}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("enrollment-adaptation")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("with door templates") == 2 and "stolen codes" in r.stdout
    assert "anchor 0.45" in r.stdout
    r = subprocess.run(["kiosk-admin", "evaluate-adaptation", "photos", str(test_data / "faces/att_orl"), "--json",
                        "--no-poisoning"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    rep = json.loads(r.stdout)
    assert rep["people"] >= 35 and "poisoning" not in rep
    assert rep["with"]["mated"] == rep["without"]["mated"] > 0


def test_the_open_set_check_reads_the_point_for_the_effective_size(test_data, tmp_path):
    """On the shared ORL subjects (10 photos each): the same residents with 3 and with 6 templates, and the point
    read for twice the gallery with 6; through the docs' command (pointed at ORL) and its JSON."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "LFW_DEV": str(test_data / "faces/att_orl")}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("enrollment-adaptation-open-set")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "more templates, effective point" in r.stdout
    r = subprocess.run(["kiosk-admin", "evaluate-adaptation", "photos", str(test_data / "faces/att_orl"), "--open-set",
                        "--sizes", "10,all", "--seeds", "0", "--json"], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=900)
    rows = json.loads(r.stdout)
    by = {(x["templates"], x["residents"]): x for x in rows}
    sizes = sorted({x["residents"] for x in rows})
    assert sizes[0] == 10 and len(sizes) == 2
    for n in sizes:
        plain, more, eff = (by[(k, n)] for k in ("enrolled", "more templates, same point",
                                                 "more templates, effective point"))
        assert (plain["per_resident"], more["per_resident"]) == (3, 6)
        assert eff["effective"] == 2 * n and plain["effective"] == n
        assert plain["visit"]["mated"] == more["visit"]["mated"] == eff["visit"]["mated"] > 0, "the same probes"
        assert more["visit"]["misses"] <= plain["visit"]["misses"], "more templates of the same people miss no more"
        assert more["visit"]["false_accepts"] >= plain["visit"]["false_accepts"]


RA_REAL = "devel__real__real__client{c:03d}_session01_webcam_authenticate_{light}_{take}"


@pytest.fixture(scope="module")
def orl_as_replay_attack(test_data, tmp_path_factory):
    """16 ORL subjects laid out as Replay-Attack's genuine clips (devel/<clip>/frame_NNNNN.pgm): photos 1-3 the
    office's light, take 1; 4-6 take 2; 7-8 and 9-10 the adverse light's (links to the shared photos)."""
    root = tmp_path_factory.mktemp("ra-sessions")
    takes = {("controlled", 1): (1, 2, 3), ("controlled", 2): (4, 5, 6), ("adverse", 1): (7, 8), ("adverse", 2): (9, 10)}
    for c in range(1, 17):
        src = test_data / f"faces/att_orl/s{c}"
        for (light, take), photos in takes.items():
            clip = root / "devel" / RA_REAL.format(c=c, light=light, take=take)
            clip.mkdir(parents=True)
            for j, photo in enumerate(photos):
                (clip / f"frame_{20 * j:05d}.pgm").symlink_to(src / f"{photo}.pgm")
    return root


def test_the_door_visit_parts_of_a_session_set_are_the_door_visit_benchmarks(orl_as_replay_attack, tmp_path):
    """--part takes the people the door-visit benchmark's split puts in that part (its ids are set/client, read by
    the benchmark's own reader), through the docs' command; the two parts together are the whole set."""
    from kiosk.evaluation.livesets import read_set
    from kiosk.evaluation.visitsets import part_of

    clients = {c.subject for c in read_set("replay-attack", orl_as_replay_attack, split="devel")}
    dev = {c for c in clients if part_of(f"replay-attack/{c}") == "dev"}
    assert len(clients) == 16 and 0 < len(dev) < 16
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "SESSIONS": str(orl_as_replay_attack)}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("enrollment-adaptation-door-visits")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"replay-attack (dev part of the door visits): {len(dev)} people with every session" in r.stdout
    assert "with door templates" in r.stdout and "stolen codes" in r.stdout

    def people(part: str) -> int:
        r = subprocess.run(["kiosk-admin", "evaluate-adaptation", "replay-attack", str(orl_as_replay_attack),
                            "--frames", "0", "--part", part, "--json", "--no-poisoning"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)["people"]

    assert people("held-out") == 16 - len(dev) and people("all") == 16
    r = subprocess.run(["kiosk-admin", "evaluate-adaptation", "photos", str(orl_as_replay_attack), "--part", "dev"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode != 0 and "--part splits the door-visit benchmark's people" in r.stderr
