"""What a stolen QR credential buys a stranger where it is the second factor (``evaluate-open-set --stolen-code``),
on a slice of the LFW development photos, against the kiosk's own VoteBox."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiosk.admin import main as admin_main
from kiosk.config import MatchSettings
from kiosk.evaluation.openset import Protocol, _groups, fold_of, people_of
from kiosk.evaluation.stolen_code import stolen_code
from kiosk.match.decide import OperatingPoint, Outcome, Vote, VoteBox
from kiosk.gallery.store import Gallery, Resident
from test_openset import lfw_slice  # noqa: F401 (the slice, and where its descriptor cache is kept)

pytestmark = pytest.mark.slow


def described(root, cache):
    from kiosk.config import DetectSettings
    from kiosk.evaluation.descriptors import DescriptorCache, describe_samples
    from kiosk.evaluation.pairs import Describer, labelled_images

    samples = labelled_images(root)
    db = DescriptorCache(cache)
    try:
        describe_samples(samples,  # computed once per session, then from the cache
                         Describer(DetectSettings(), face="central"), db, progress=False)
    finally:
        db.close()
    return samples


def by_voteboxes(samples, protocol: Protocol, match: MatchSettings) -> tuple[int, int, int]:
    """(stranger visits, narrowed, resident-visit pairs accepted), each visit judged by a door's VoteBox."""
    people = people_of(samples, protocol.max_photos)
    enrollable = {u for u, v in people.items() if len(v) >= protocol.enroll_photos}
    settings = match.model_copy(update={"votes_k": min(match.votes_k, protocol.visit_photos),
                                        "votes_m": protocol.visit_photos, "max_votes": protocol.visit_photos})
    point = OperatingPoint(0.0, 1.0, 0.01, second_factor=True, face_alone=False)  # the face never opens alone
    visits = narrowed = accepted = 0
    for fold in range(protocol.folds):
        enrolled = [u for u in people if fold_of(u, protocol.folds, protocol.seed) != fold and u in enrollable]
        gallery = Gallery({u: Resident(u, u) for u in enrolled},
                          [u for u in enrolled for _ in people[u][: protocol.enroll_photos]],
                          np.vstack([people[u][: protocol.enroll_photos] for u in enrolled]))
        for u in (u for u in people if u not in enrolled):
            for g in _groups(len(people[u]), protocol.visit_photos, protocol.max_visits):
                box = VoteBox(settings, point)
                for i, desc in enumerate(people[u][g]):
                    m = gallery.search(desc, now=0.0, means=protocol.mean_template)
                    box.add(Vote(m.resident_id, m.distance, m.margin, float(i), runner_up_id=m.runner_up_id), desc)
                m = gallery.search(box.mean(), now=0.0, means=protocol.mean_template)
                box.set_visit(Vote(m.resident_id, m.distance, m.margin, 9.0, runner_up_id=m.runner_up_id))
                visits += 1
                if box.verdict(final=True)[0] is Outcome.SHOW_QR:
                    narrowed += 1
                    accepted += len(box.candidates())
    return visits, narrowed, accepted


@pytest.mark.parametrize("threshold", [0.45, 0.62])
def test_the_stolen_code_rate_is_the_voteboxs(lfw_slice, threshold):
    root, cache = lfw_slice
    samples = described(root, cache)
    protocol = Protocol(enroll_photos=2, visit_photos=2, folds=3, mean_template=True)
    match = MatchSettings(threshold=threshold)
    got = stolen_code(samples, protocol, match)
    assert (got.visits, got.narrowed, got.accepted) == by_voteboxes(samples, protocol, match)
    assert got.visits > 0 and got.pairs > got.visits
    if threshold > 0.6:  # looser than any door: strangers narrowed, with runner-ups
        assert got.accepted > 0 and got.runner_up <= got.accepted and 0 < got.worst_resident <= 1


def test_evaluate_open_set_reports_the_stolen_code_rate(lfw_slice, capsys):
    root, cache = lfw_slice
    described(root, cache)
    capsys.readouterr()
    assert admin_main(["evaluate-open-set", str(root), "--descriptor-cache", str(cache), "--folds", "3",
                       "--enroll-photos", "2", "--sizes", "all", "--stolen-code", "--seed", "0,1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["stolen_code"]
    assert s["pairs"] >= s["visits"] > 0 and s["accepted"] <= s["pairs"]
    assert s["per_code"] == pytest.approx(s["accepted"] / s["pairs"], abs=1e-6)
    assert s["per_code_upper95"] >= s["per_code"]
    assert admin_main(["evaluate-open-set", str(root), "--descriptor-cache", str(cache), "--folds", "3",
                       "--enroll-photos", "2", "--sizes", "all", "--stolen-code"]) == 0
    assert "one resident's code with a stranger's face: accepted" in capsys.readouterr().out


def test_the_stolen_code_command_of_the_docs(lfw_slice, tmp_path, monkeypatch):
    from harness.docs import docs_snippet
    from test_openset import run_docs

    root, cache = lfw_slice
    described(root, cache)
    (tmp_path / "data/faces").mkdir(parents=True)
    (tmp_path / "data/faces/lfw_dev").symlink_to(root)  # the slice stands in for the shared photos
    monkeypatch.setenv("KIOSK_TEST_DATA", str(tmp_path / "data"))
    r = run_docs(docs_snippet("recognition-stolen-code"), tmp_path, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "one resident's code with a stranger's face: accepted" in r.stdout
