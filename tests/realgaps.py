"""Real strangers' gaps: open-set trials on a slice of the shared LFW development photos, judged as a door would.

Each visit's two photos are real descriptors searched in a real gallery; its gap (how far it fell short of the
operating point) is computed by the door's own :meth:`kiosk.match.decide.VoteBox.gap`. The site tests build
event streams from these gaps; the near-miss tests check them against the calibration's profile.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kiosk.config import DetectSettings, MatchSettings
from kiosk.evaluation.calibration import Rule
from kiosk.evaluation.openset import Protocol, Trials, run_trials
from kiosk.match.calibration import shipped
from kiosk.match.decide import OperatingPoint, Vote, VoteBox

#: The slice: people with 4 photos (enrolled from 2, one visit of 2) and people with one photo.
WITH_FOUR, WITH_ONE = 100, 40
#: Visits of two photos: both must name the resident (K = 2 of M = 2), or their mean must.
VISIT = MatchSettings(votes_k=2, votes_m=2, max_votes=2)


def data_dir() -> Path:
    return Path(os.environ.get("KIOSK_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@functools.cache
def trials() -> Trials:
    """Open-set trials at 10 residents on the slice (descriptors computed once per test session)."""
    from kiosk.evaluation.descriptors import DescriptorCache, describe_samples
    from kiosk.evaluation.pairs import Describer, labelled_images

    src = data_dir() / "faces/lfw_dev"
    work = Path(tempfile.mkdtemp(prefix="realgaps-"))
    atexit.register(shutil.rmtree, work, True)
    root = work / "lfw"
    four = one = 0
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        n = len(list(d.glob("*.jpg")))
        if n == 4 and four < WITH_FOUR:
            four += 1
        elif n == 1 and one < WITH_ONE:
            one += 1
        else:
            continue
        (root / d.name).mkdir(parents=True)
        for photo in d.glob("*.jpg"):
            os.symlink(photo, root / d.name / photo.name)
    samples = labelled_images(root)
    cache = DescriptorCache(root.parent / "descriptors.sqlite")
    try:
        describe_samples(samples, Describer(DetectSettings(), face="central"), cache, progress=False)
    finally:
        cache.close()
    protocol = Protocol(enroll_photos=2, visit_photos=2, folds=5, sizes=(10,), mean_template=True)
    return run_trials(samples, protocol)[10]


def point(target: float = 0.001) -> OperatingPoint:
    """The shipped calibration's rule and thresholds for 10 residents at ``target``."""
    cal = shipped()
    p = next(p for p in cal.points if p.residents == 10 and p.fpir_target == target)
    return Rule(cal.margin, cal.cohort_weight, cal.cohort_anchor).point(p.threshold, p.visit_threshold)


def _vote(best, distance, margin, cohort) -> Vote:
    return Vote(None if best < 0 else str(int(best)), float(distance), float(margin), 0.0, cohort=float(cohort))


def gaps(p: OperatingPoint, mated: bool = False) -> list[float | None]:
    """Each stranger's (or resident's) visit's gap under ``p``, as the door computes it."""
    t = trials()
    out = []
    for i in np.flatnonzero((t.v_truth >= 0) == mated):
        box = VoteBox(VISIT, p)
        for j in range(t.votes_best.shape[1]):
            box.add(_vote(t.votes_best[i, j], t.votes_distance[i, j], t.votes_margin[i, j], t.votes_cohort[i, j]))
        box.set_visit(_vote(t.v_best[i], t.v_distance[i], t.v_margin[i], t.v_cohort[i]))
        g = box.gap()
        out.append(None if g is None or math.isinf(g) else g)
    return out


#: How much less alike a look-alike is than the resident's own visits. Chosen for the shipped point at 10
#: residents and the default target (0.10 under the LFW-only calibration; the four-set fit's stricter point turns
#: more of them away): 300 look-alikes among 20,000 strangers then get 5 to 10 times the target in
#: (0.60-0.70% for seeds 1-3), while the band before the threshold holds fewer near misses than calibrated.
SHIFT = 0.08


def lookalikes(strangers: int, alike: int, seed: int, shift: float = SHIFT) -> list[float | None]:
    """A site's stranger visits: real strangers' gaps and a few look-alikes, drawn with ``seed``.

    A look-alike is as near a resident as the resident's own visits, less ``shift``: a real resident's gap moved
    up by it (rounded to 0.001, as the events carry it). Many of them pass the threshold; those that do not fall
    just short of it, not spread over the band the way strangers are.
    """
    rng = random.Random(seed)
    pool, residents = gaps(point()), [g for g in gaps(point(), mated=True) if g is not None]
    alikes = [round(rng.choice(residents) + shift, 3) for _ in range(alike)]
    return [rng.choice(pool) for _ in range(strangers)] + alikes
